"""Planners are pure optimisers over action sequences.

A planner never sees a model. It is handed an ``objective`` that scores action sequences
``[N, H, A] -> [N]`` (higher is better) and optionally ``prior`` sequences ``[K, H, A]`` (e.g.
from a policy) to include in its population. The agent builds the objective from its model.

Every planner keeps a warm start: after :meth:`Planner.plan`, the solution is remembered and the
next call starts from it shifted by one step (receding horizon). :meth:`Planner.reset` forgets it
at episode boundaries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from worldflux.core.errors import ConfigError
from worldflux.core.registry import Registry

Objective = Callable[[Tensor], Tensor]
"""Scores action sequences: ``[N, H, A] -> [N]``, higher is better."""

PlannerRegistry = Registry("planner", None)
"""Registry of planners: ``@PlannerRegistry.register("cem")``."""


@dataclass
class PlannerConfig:
    """Settings of every planner; each planner reads the fields that concern it."""

    name: Literal["random", "cem", "mppi", "icem"] = "cem"
    """Which optimiser: random shooting, CEM, MPPI or iCEM."""
    horizon: int = 15
    """Length H of the planned action sequence (PETS: 15 for cartpole/pendulum-like tasks)."""
    population: int = 500
    """Sequences sampled per iteration (PETS uses 400-500 with CEM)."""
    iterations: int = 5
    """Refinement iterations per decision (PETS: 5)."""
    elites: int = 50
    """Best sequences used to refit the sampling distribution (PETS: 40-50)."""
    momentum: float = 0.1
    """Weight of the previous mean/std when refitting (CEM/iCEM alpha = 0.1, Pinneri et al. 2020)."""
    init_std: float = 0.5
    """Initial std of the sampling distribution, in normalised action units ([-1, 1])."""
    min_std: float = 0.05
    """Floor on the std (TD-MPC2 clamps to [0.05, 2])."""
    max_std: float = 2.0
    """Ceiling on the std."""
    temperature: float = 0.5
    """MPPI: weights are ``exp(temperature * (score - max))`` over elites (TD-MPC2: 0.5)."""
    mppi_update_std: bool = True
    """MPPI: refit the std from weighted elites (TD-MPC2) instead of keeping it fixed (Williams)."""
    noise_beta: float = 2.0
    """iCEM: coloured-noise exponent beta (Pinneri et al. 2020 use 2-4; 0 is white noise)."""
    population_decay: float = 1.25
    """iCEM: population shrinks by this factor every iteration (gamma, Pinneri et al. 2020)."""
    keep_elites_fraction: float = 0.3
    """iCEM: fraction of elites carried to the next iteration and, shifted, to the next step."""
    return_best: bool = False
    """CEM/MPPI: return the best sequence seen instead of the distribution mean."""
    bounded_std: bool = True
    """CEM/iCEM: keep two standard deviations of the sampling distribution inside the action
    bounds (the PETS reference CEM), so few samples are clipped to the bounds."""
    icem_execute: Literal["best", "mean"] = "best"
    """iCEM: execute the best sequence found (Pinneri et al. 2020) or the refitted mean."""
    warm_start: bool = True
    """Shift the previous solution by one step to start the next decision."""

    def validate(self) -> None:
        if self.horizon < 1:
            raise ConfigError(f"planner.horizon: got {self.horizon}, expected >= 1")
        if self.population < 2:
            raise ConfigError(f"planner.population: got {self.population}, expected >= 2")
        if self.iterations < 1:
            raise ConfigError(f"planner.iterations: got {self.iterations}, expected >= 1")
        if not 1 <= self.elites <= self.population:
            raise ConfigError(
                f"planner.elites: got {self.elites}, expected 1 <= elites <= population "
                f"({self.population})"
            )
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"planner.momentum: got {self.momentum}, expected in [0, 1)")
        if not 0 < self.min_std <= self.max_std:
            raise ConfigError(
                f"planner.min_std/max_std: got {self.min_std}/{self.max_std}, expected 0 < min <= max"
            )


@dataclass
class PlannerResult:
    """A planned action sequence ``actions [H, A]`` with its objective ``value`` and extras.

    ``extras["wf.planner.horizon"]`` is always the horizon; ``"wf.planner.evaluated"`` the number
    of sequences scored; planners may add more under ``"wf.planner.*"``.
    """

    actions: Tensor
    value: float
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def first_action(self) -> Tensor:
        return self.actions[0]


class Planner:
    """Base class: bounds, warm start and the shared sampling helpers.

    Args:
        config: :class:`PlannerConfig`.
        action_dim: width ``A`` of one action.
        low, high: action bounds (scalars or ``[A]``), ``[-1, 1]`` by default.
        device: where sequences are sampled.
        generator: seeds sampling (a fresh one seeded 0 if omitted).
    """

    def __init__(self, config: PlannerConfig, action_dim: int, *, low: float | Tensor = -1.0,
                 high: float | Tensor = 1.0, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> None:
        config.validate()
        self.config = config
        self.action_dim = action_dim
        self.device = torch.device(device)
        self.low = torch.as_tensor(low, dtype=torch.float32, device=self.device).expand(action_dim)
        self.high = torch.as_tensor(high, dtype=torch.float32, device=self.device).expand(action_dim)
        self.generator = generator or torch.Generator(device=self.device).manual_seed(0)
        self._previous: Tensor | None = None  # last solution [H, A]

    def reset(self) -> None:
        """Forget the warm start (call at episode start)."""
        self._previous = None

    def initial_mean(self) -> Tensor:
        """Warm start: the previous solution shifted by one step, else the middle of the bounds."""
        if self._previous is None or not self.config.warm_start:
            return self.centre()
        return self.shifted(self._previous)

    def centre(self) -> Tensor:
        """The middle of the bounds as a sequence ``[H, A]``."""
        return ((self.low + self.high) / 2).expand(self.config.horizon, self.action_dim).clone()

    def shifted(self, previous: Tensor) -> Tensor:
        """``previous [H, A]`` moved one step earlier, the middle of the bounds appended."""
        return torch.cat([previous[1:], self.centre()[-1:]], 0)

    def remember(self, solution: Tensor) -> None:
        self._previous = solution.detach().clone()

    def sampling_std(self, mean: Tensor, std: Tensor) -> Tensor:
        """``std`` limited to half the distance from ``mean`` to the nearer bound when
        ``config.bounded_std`` (two standard deviations stay inside the bounds)."""
        if not self.config.bounded_std:
            return std
        room = torch.minimum(mean - self.low, self.high - mean) / 2
        return torch.minimum(std, room.clamp_min(1e-6))

    def clip(self, actions: Tensor) -> Tensor:
        return torch.maximum(torch.minimum(actions, self.high), self.low)

    def plan(self, objective: Objective, prior: Tensor | None = None) -> PlannerResult:
        """Optimise and return the best sequence; ``prior [K, H, A]`` joins every population."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"generator": self.generator.get_state()}
        if self._previous is not None:
            state["previous"] = self._previous.cpu()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        prev = state.get("previous")
        self._previous = prev.to(self.device) if prev is not None else None

    def _result(self, actions: Tensor, value: float, evaluated: int, **extras: Any) -> PlannerResult:
        self.remember(actions)
        out = {"wf.planner.horizon": self.config.horizon, "wf.planner.evaluated": evaluated,
               "wf.planner.name": self.config.name}
        out.update({f"wf.planner.{k}": v for k, v in extras.items()})
        return PlannerResult(actions, value, out)


def score(objective: Objective, sequences: Tensor) -> Tensor:
    """Call ``objective`` and check it returned one finite-or-ranked score per sequence."""
    values = objective(sequences)
    if values.shape != sequences.shape[:1]:
        raise ConfigError(
            f"planner objective: got scores of shape {tuple(values.shape)}, expected "
            f"[{sequences.shape[0]}] (one per sequence)"
        )
    # NaN scores must never be selected as elites.
    return torch.nan_to_num(values.float(), nan=-torch.inf)


def make_planner(config: PlannerConfig, action_dim: int, **kwargs: Any) -> Planner:
    """Build the planner named by ``config.name``."""
    import worldflux.planners.cem  # noqa: F401  (registers built-ins)
    import worldflux.planners.icem  # noqa: F401
    import worldflux.planners.mppi  # noqa: F401
    import worldflux.planners.random_shooting  # noqa: F401

    return PlannerRegistry.get(config.name).cls(config, action_dim, **kwargs)
