"""Raw-observation dynamics families built on :class:`PETSModel` with other defaults.

* ``mlp``: one deterministic MLP trained by MSE (:class:`MLPDynamicsConfig`).
* ``ensemble-mlp``: a bootstrapped ensemble of 5 deterministic MLPs; the members' disagreement
  is the epistemic uncertainty (:class:`DeterministicEnsembleConfig`).
* ``gaussian``: one Gaussian MLP trained by negative log-likelihood; aleatoric uncertainty only
  (:class:`GaussianMLPConfig`).

``pets`` (alias ``ensemble``) stays the stochastic ensemble, which separates epistemic (variance
of the members' means) from aleatoric (mean of the members' variances) uncertainty.
"""

from __future__ import annotations

import dataclasses

from worldflux.core.registry import WorldModelRegistry
from worldflux.models.pets.config import (
    DeterministicEnsembleConfig,
    GaussianMLPConfig,
    MLPDynamicsConfig,
    PETSConfig,
)
from worldflux.models.pets.model import PETSModel


class _Variant(PETSModel):
    """A :class:`PETSModel` whose smoke task keeps the family's ensemble size and noise model."""

    config_class: type[PETSConfig] = PETSConfig

    @classmethod
    def smoke_config(cls) -> PETSConfig:
        default = cls.config_class()
        return dataclasses.replace(default, ensemble_size=min(default.ensemble_size, 3),
                                   hidden_size=64, num_layers=2)


@WorldModelRegistry.register("mlp", MLPDynamicsConfig, tier="experimental",
                             description="Deterministic MLP dynamics (one network, MSE)")
class MLPDynamicsModel(_Variant):
    """One deterministic MLP over flat observations (state keys as :class:`PETSModel`)."""

    family = "mlp"
    config_class = MLPDynamicsConfig


@WorldModelRegistry.register("ensemble-mlp", DeterministicEnsembleConfig, tier="experimental",
                             description="Bootstrapped ensemble of deterministic MLPs")
class DeterministicEnsembleModel(_Variant):
    """Bootstrapped ensemble of deterministic MLPs (epistemic uncertainty only)."""

    family = "ensemble-mlp"
    config_class = DeterministicEnsembleConfig


@WorldModelRegistry.register("gaussian", GaussianMLPConfig, tier="experimental",
                             description="One Gaussian MLP trained by negative log-likelihood")
class GaussianMLPModel(_Variant):
    """One Gaussian MLP (aleatoric uncertainty only)."""

    family = "gaussian"
    config_class = GaussianMLPConfig
