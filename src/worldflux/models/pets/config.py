"""Configuration of the PETS probabilistic ensemble."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from worldflux.core.errors import ConfigError


@dataclass
class PETSConfig:
    """Probabilistic ensemble of Gaussian MLPs (Chua et al. 2018, "PETS")."""

    ensemble_size: int = 5
    """Number of bootstrapped members (PETS: 5)."""
    hidden_size: int = 200
    """Width of each hidden layer (PETS: 200)."""
    num_layers: int = 3
    """Number of hidden layers (PETS used 3-4 of 200 units; 3 here)."""
    activation: str = "silu"
    """Hidden activation (PETS: swish = SiLU)."""
    learn_reward: bool = True
    """Predict the reward as an extra Gaussian output (else the agent must be given a reward function)."""
    predict_delta: bool = True
    """Predict ``next_obs - obs`` rather than ``next_obs`` (PETS, section 4)."""
    absolute_dims: tuple[int, ...] = ()
    """Observation entries predicted as their next value rather than their change, even with
    ``predict_delta``: entries that are a function of the state rather than integrated over
    time, and may jump (Nav3D's nearest-obstacle offset, entries 9-11, jumps when another
    obstacle becomes the nearest; as changes, every missed jump stays in the rollout)."""
    min_logvar_init: float = -10.0
    """Initial lower soft bound on the log-variance (mbrl-lib GaussianMLP default)."""
    max_logvar_init: float = 0.5
    """Initial upper soft bound on the log-variance (mbrl-lib GaussianMLP default)."""
    logvar_bound_coef: float = 0.01
    """Weight of ``sum(max_logvar) - sum(min_logvar)`` in the loss (PETS appendix A.1)."""
    learning_rate: float = 1e-3
    """Adam learning rate (mbrl-lib PETS examples: 1e-3 .. 7.5e-4)."""
    weight_decay: float = 5e-5
    """Adam weight decay (mbrl-lib PETS pendulum example: 5e-5)."""
    propagation: Literal["ts_inf", "ts1", "expectation"] = "ts_inf"
    """Particle propagation (PETS section 4): TS-inf keeps each particle on one member for the
    whole rollout, TS-1 re-draws the member every step, expectation averages the members."""
    stochastic: bool = True
    """Members predict a Gaussian (mean and log-variance, trained by negative log-likelihood);
    False: members predict the mean only, trained by MSE, with no aleatoric noise in rollouts."""

    def validate(self, obs_spec=None, action_spec=None) -> None:
        if self.ensemble_size < 1:
            raise ConfigError(f"ensemble_size: got {self.ensemble_size}, expected >= 1")
        if self.hidden_size < 1 or self.num_layers < 1:
            raise ConfigError(
                f"hidden_size/num_layers: got {self.hidden_size}/{self.num_layers}, expected >= 1"
            )
        if not self.min_logvar_init < self.max_logvar_init:
            raise ConfigError(
                f"min_logvar_init/max_logvar_init: got {self.min_logvar_init}/"
                f"{self.max_logvar_init}, expected min < max"
            )
        if obs_spec is not None and len(obs_spec.shape) == 1:
            bad = [d for d in self.absolute_dims if not 0 <= d < obs_spec.shape[0]]
            if bad or len(set(self.absolute_dims)) != len(self.absolute_dims):
                raise ConfigError(
                    f"absolute_dims: got {list(self.absolute_dims)}, expected distinct "
                    f"observation indices in [0, {obs_spec.shape[0]})")
        if obs_spec is not None and len(obs_spec.shape) != 1:
            raise ConfigError(
                f"pets: got obs_shape {obs_spec.shape}, expected a flat vector (D,); use a latent "
                "family (or an encoder) for images"
            )


@dataclass
class MLPDynamicsConfig(PETSConfig):
    """Deterministic MLP dynamics (family ``mlp``): one member, mean only, trained by MSE."""

    ensemble_size: int = 1
    """A single network."""
    stochastic: bool = False
    """No log-variance head: predictions and rollouts are deterministic."""


@dataclass
class DeterministicEnsembleConfig(PETSConfig):
    """Bootstrapped ensemble of deterministic MLPs (family ``ensemble-mlp``)."""

    ensemble_size: int = 5
    """Number of bootstrapped members; their disagreement is the epistemic uncertainty."""
    stochastic: bool = False
    """Members predict the mean only (MSE): no aleatoric noise."""


@dataclass
class GaussianMLPConfig(PETSConfig):
    """One Gaussian MLP trained by negative log-likelihood (family ``gaussian``)."""

    ensemble_size: int = 1
    """A single network: aleatoric uncertainty only (no member disagreement)."""
    stochastic: bool = True
    """Predicts a mean and a log-variance per output."""
