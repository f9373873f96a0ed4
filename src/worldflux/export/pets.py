"""PETS graphs for export: the ensemble one-step model and the whole MPC decision.

Both are plain :class:`torch.nn.Module` objects computing exactly what the ONNX files compute;
they are what :func:`torch.onnx.export` traces and the reference the exported files are checked
against.

:class:`PETSDynamicsGraph` ``(obs [N, D], action [N, A])`` ->

* ``next_obs_mean [E, N, D]``: each member's predicted mean next observation (raw units);
* ``next_obs_logvar [E, N, D]``: its log-variance (raw units, soft-bounded as in training;
  only for stochastic members, ``model.stochastic``);
* ``reward [E, N]``: each member's predicted mean reward (only when the model learns rewards).

:class:`PETSPolicyGraph` is one MPC decision of a CEM, MPPI or iCEM planner over trajectory
sampling through the ensemble (TS-inf, TS-1 or expectation), unrolled over the planner's fixed
number of iterations, scoring each sequence by the agent's risk measure of its particle
returns (``risk``: mean, mean_std, cvar, var, worst, entropic). Every random draw is an input,
so the graph is a pure function:

* ``obs [D]``: current observation;
* ``init_mean [H, A]``: warm-start mean (the centre of the action bounds at an episode start,
  then the previous decision's ``next_mean``);
* ``sample_noise [I, P, H, A]``: standard normal sampling noise per iteration (iCEM: coloured
  noise; iteration ``i`` uses its first ``P_i`` rows when the population decays);
* ``particle_noise [I, H, E, M, O]``: standard normal noise of the sampled transitions, laid
  out as in :meth:`~worldflux.models.pets.PETSModel.particle_returns` (``O = D + 1`` with a
  learned reward; iteration ``i`` uses its first ``M_i`` columns; absent for deterministic
  members, ``model.stochastic = false``);
* ``member_noise [I, H, E * M]`` (TS-1 only): uniform numbers whose ``argsort`` re-draws the
  member of every particle at every step;
* iCEM only: ``prev_elites [K, H, A]`` (the previous decision's ``next_elites``),
  ``prev_elites_valid []`` (0 at an episode start, else 1) and ``tail_noise [K, A]`` (standard
  normal, the fresh last action of the shifted elites).

Outputs: ``action [A]`` (first action of the plan), ``next_mean [H, A]`` (the warm start of the
next decision), ``plan_value []`` (best predicted return) and, for iCEM, ``next_elites [K, H, A]``.

:func:`policy_layout` gives every shape; :func:`worldflux.export.runtime.sample_policy_noise`
(numpy) draws the noise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from worldflux.core.errors import ConfigError
from worldflux.models.pets import PETSModel
from worldflux.nn import soft_bound_logvar
from worldflux.planners import PlannerConfig, RiskConfig, risk_value

__all__ = ["PETSDynamicsGraph", "PETSPolicyGraph", "PolicyLayout", "policy_layout",
           "EXPORTABLE_PLANNERS"]

EXPORTABLE_PLANNERS = ("cem", "mppi", "icem")
"""Planners that :class:`PETSPolicyGraph` can express."""


class PETSDynamicsGraph(nn.Module):
    """Ensemble one-step prediction of a :class:`PETSModel`, normalisation included.

    ``forward(obs [N, D], action [N, A])`` returns ``next_obs_mean [E, N, D]``, then
    ``next_obs_logvar [E, N, D]`` for stochastic members and ``reward [E, N]`` when the model
    learns rewards.
    """

    def __init__(self, model: PETSModel) -> None:
        super().__init__()
        self.model = model

    @property
    def output_names(self) -> list[str]:
        names = ["next_obs_mean"]
        names += ["next_obs_logvar"] if self.model.config.stochastic else []
        return names + (["reward"] if self.model.config.learn_reward else [])

    def forward(self, obs: Tensor, action: Tensor) -> tuple[Tensor, ...]:
        model = self.model
        D, E = model.obs_dim, model.config.ensemble_size
        x = torch.cat([obs, action], -1).unsqueeze(0).expand(E, -1, -1)
        mean, logvar = model.predict_normalized(x)  # [E, N, O] normalised
        scale = model.target_norm.std + model.target_norm.eps
        raw_mean = mean * scale + model.target_norm.mean
        raw_logvar = logvar + 2.0 * torch.log(scale)
        next_mean = raw_mean[..., :D] + obs * model.delta_mask
        outputs: tuple[Tensor, ...] = (next_mean,)
        if model.config.stochastic:
            outputs = outputs + (raw_logvar[..., :D],)
        if model.config.learn_reward:
            outputs = outputs + (raw_mean[..., D],)
        return outputs


@dataclass(frozen=True)
class PolicyLayout:
    """Static shapes of one exported MPC decision."""

    planner: str
    """``"cem"``, ``"mppi"`` or ``"icem"``."""
    obs_dim: int
    """D."""
    action_dim: int
    """A."""
    horizon: int
    """H."""
    iterations: int
    """I."""
    populations: tuple[int, ...]
    """Sampled sequences per iteration ``P_i`` (constant except for iCEM's decay)."""
    sequences: tuple[int, ...]
    """Sequences scored per iteration ``N_i`` (iCEM adds carried elites and the mean)."""
    num_particles: int
    """K particles per sequence."""
    ensemble_size: int
    """E."""
    columns: tuple[int, ...]
    """Rows per member per iteration ``M_i = ceil(N_i * K / E)``."""
    target_dim: int
    """O: width of one predicted target (D, plus 1 with a learned reward)."""
    propagation: str
    """``"ts_inf"``, ``"ts1"`` or ``"expectation"``."""
    keep: int
    """iCEM: elites carried across iterations and decisions (0 otherwise)."""
    noise_beta: float
    """iCEM: coloured-noise exponent of ``noise`` (0 = white)."""
    stochastic: bool = True
    """Members sample aleatoric noise (``particle_noise`` is an input); False: mean only."""

    @property
    def max_population(self) -> int:
        return max(self.populations)

    @property
    def max_columns(self) -> int:
        return max(self.columns)

    def inputs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Input name -> (shape, dtype), in graph order."""
        It, H, A, E = self.iterations, self.horizon, self.action_dim, self.ensemble_size
        specs: dict[str, tuple[tuple[int, ...], str]] = {
            "obs": ((self.obs_dim,), "float32"),
            "init_mean": ((H, A), "float32"),
            "sample_noise": ((It, self.max_population, H, A), "float32"),
        }
        if self.stochastic:
            specs["particle_noise"] = ((It, H, E, self.max_columns, self.target_dim), "float32")
        if self.propagation == "ts1":
            specs["member_noise"] = ((It, H, E * self.max_columns), "float32")
        if self.planner == "icem":
            specs["prev_elites"] = ((self.keep, H, A), "float32")
            specs["prev_elites_valid"] = ((), "float32")
            specs["tail_noise"] = ((self.keep, A), "float32")
        return specs

    def outputs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Output name -> (shape, dtype), in graph order."""
        H, A = self.horizon, self.action_dim
        specs = {"action": ((A,), "float32"), "next_mean": ((H, A), "float32"),
                 "plan_value": ((), "float32")}
        if self.planner == "icem":
            specs["next_elites"] = ((self.keep, H, A), "float32")
        return specs

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


def policy_layout(model: PETSModel, planner: PlannerConfig, num_particles: int,
                  propagation: str) -> PolicyLayout:
    """The static shapes of :class:`PETSPolicyGraph` for a model and planner settings."""
    if planner.name not in EXPORTABLE_PLANNERS:
        raise ConfigError(f"planner.name: got {planner.name!r}; ONNX export supports "
                          f"{', '.join(EXPORTABLE_PLANNERS)} (train or export with one of them)")
    if propagation not in ("ts_inf", "ts1", "expectation"):
        raise ConfigError(f"propagation: got {propagation!r}, expected ts_inf, ts1 or expectation")
    It, E, K = planner.iterations, model.config.ensemble_size, int(num_particles)
    if planner.name == "icem":
        keep = max(1, int(round(planner.keep_elites_fraction * planner.elites)))
        populations = tuple(max(int(planner.population * planner.population_decay ** (-i)),
                                2 * planner.elites) for i in range(It))
        sequences = tuple(p + keep + (1 if i == It - 1 else 0) for i, p in enumerate(populations))
    else:
        keep = 0
        populations = (planner.population,) * It
        sequences = populations
    columns = tuple(-(-(n * K) // E) for n in sequences)
    return PolicyLayout(planner.name, model.obs_dim, model.action_dim, planner.horizon, It,
                        populations, sequences, K, E, columns, model.target_dim, propagation,
                        keep, float(planner.noise_beta) if planner.name == "icem" else 0.0,
                        bool(model.config.stochastic))


class PETSPolicyGraph(nn.Module):
    """One MPC decision over a PETS ensemble as a pure function of its inputs (see the module).

    It computes what :class:`~worldflux.agents.mpc.PETSAgent` computes with the same planner
    (``agent.planner.plan(agent.objective(obs))``) in float32, given the same random draws.

    Args:
        model: the trained ensemble.
        planner: planner settings (``name`` one of :data:`EXPORTABLE_PLANNERS`).
        num_particles: K particles per candidate sequence.
        propagation: ``"ts_inf"``, ``"ts1"`` or ``"expectation"``.
        discount: discount of predicted rewards inside the horizon.
        low, high: action bounds (scalars).
        risk: how the particle returns of a sequence become its score (the mean by default).
    """

    def __init__(self, model: PETSModel, planner: PlannerConfig, *, num_particles: int,
                 propagation: str, discount: float = 1.0, low: float = -1.0,
                 high: float = 1.0, risk: RiskConfig | None = None) -> None:
        super().__init__()
        if not model.config.learn_reward:
            raise ConfigError("model.learn_reward: got false; the exported policy plans with the "
                              "learned reward head (a Python reward function cannot be exported)")
        planner.validate()
        self.risk = risk or RiskConfig()
        self.risk.validate()
        self.model = model
        self.planner = planner
        self.discount = float(discount)
        self.layout = policy_layout(model, planner, num_particles, propagation)
        A = model.action_dim
        self.register_buffer("low", torch.full((A,), float(low)), persistent=False)
        self.register_buffer("high", torch.full((A,), float(high)), persistent=False)

    @property
    def input_names(self) -> list[str]:
        return list(self.layout.inputs())

    @property
    def output_names(self) -> list[str]:
        return list(self.layout.outputs())

    def centre(self) -> Tensor:
        """The warm-start mean of an episode start ``[H, A]``."""
        return ((self.low + self.high) / 2).expand(self.layout.horizon, -1).clone()

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        names = self.input_names
        if len(inputs) != len(names):
            raise ConfigError(f"PETSPolicyGraph: got {len(inputs)} inputs, expected "
                              f"{len(names)} ({', '.join(names)})")
        x = dict(zip(names, inputs, strict=True))
        if self.layout.planner == "icem":
            return self._icem(x)
        return self._cem_or_mppi(x)

    # -- objective ------------------------------------------------------------------------------
    def values(self, obs: Tensor, sequences: Tensor, particle_noise: Tensor | None,
               member_noise: Tensor | None) -> Tensor:
        """Risk measure of the particle returns of each sequence ``[N, H, A] -> [N]`` (NaN
        scored as -inf).

        ``particle_noise [H, E, M, O]`` and ``member_noise [H, E * M]`` (TS-1) are the draws of
        :meth:`PETSModel.particle_returns`, which this mirrors step by step.
        """
        model, lay = self.model, self.layout
        N, H, A = sequences.shape
        E, D, K = lay.ensemble_size, lay.obs_dim, lay.num_particles
        R = N * K
        M = -(-R // E)
        pad = M * E - R
        in_mean = model.input_norm.mean
        in_std = model.input_norm.std + model.input_norm.eps
        out_mean = model.target_norm.mean
        out_std = model.target_norm.std + model.target_norm.eps
        stochastic = lay.stochastic
        acts = sequences.unsqueeze(1).expand(N, K, H, A).reshape(R, H, A)
        if pad:
            acts = torch.cat([acts, acts[:pad]], 0)
        acts = acts.reshape(M, E, H, A).permute(2, 1, 0, 3)  # [H, E, M, A]
        state = obs.reshape(1, 1, D).expand(E, M, D)
        returns = torch.zeros(E, M, dtype=obs.dtype, device=obs.device)
        scale = 1.0
        rows = torch.arange(E * M, device=obs.device)
        for t in range(H):
            act_t = acts[t]
            if lay.propagation == "ts1":
                assert member_noise is not None
                perm = torch.argsort(member_noise[t, :E * M])
                state = state.reshape(E * M, D)[perm].reshape(E, M, D)
                act_t = act_t.reshape(E * M, A)[perm].reshape(E, M, A)
            inp = (torch.cat([state, act_t], -1) - in_mean) / in_std
            if lay.propagation == "expectation":
                inp = inp.reshape(1, E * M, D + A).expand(E, -1, -1)
            out = model.net(inp)
            if not stochastic:  # deterministic members: the mean, no aleatoric noise
                mean = out.mean(0).reshape(E, M, -1) if lay.propagation == "expectation" else out
                sample = mean * out_std + out_mean
            else:
                assert particle_noise is not None
                mean, logvar = out.chunk(2, -1)
                if lay.propagation == "expectation":
                    mean = mean.mean(0).reshape(E, M, -1)
                    logvar = logvar.mean(0).reshape(E, M, -1)
                logvar = soft_bound_logvar(logvar, model.min_logvar[0], model.max_logvar[0])
                noise = particle_noise[t, :, :M]
                sample = (mean + torch.exp(0.5 * logvar) * noise) * out_std + out_mean
            next_state = state * model.delta_mask + sample[..., :D]
            reward = mean[..., D] * out_std[D] + out_mean[D]
            if lay.propagation == "ts1":
                inverse = torch.zeros_like(perm).scatter(0, perm, rows)
                next_state = next_state.reshape(E * M, D)[inverse].reshape(E, M, D)
                reward = reward.reshape(E * M)[inverse].reshape(E, M)
            returns = returns + scale * reward
            scale *= self.discount
            state = next_state
        flat = returns.transpose(0, 1).reshape(-1)[:R]
        values = risk_value(flat.reshape(N, K), self.risk)
        return torch.where(torch.isnan(values), torch.full_like(values, -torch.inf), values)

    # -- planners -------------------------------------------------------------------------------
    def _clip(self, actions: Tensor) -> Tensor:
        return torch.maximum(torch.minimum(actions, self.high), self.low)

    def _sampling_std(self, mean: Tensor, std: Tensor) -> Tensor:
        """CEM/iCEM: two std inside the bounds when ``bounded_std`` (as ``Planner.sampling_std``)."""
        if not getattr(self.planner, "bounded_std", True):
            return std
        room = torch.minimum(mean - self.low, self.high - mean) / 2
        return torch.minimum(std, room.clamp_min(1e-6))

    def _next_mean(self, solution: Tensor) -> Tensor:
        centre = ((self.low + self.high) / 2).reshape(1, -1)
        if not self.planner.warm_start:
            return centre.expand(self.layout.horizon, -1)
        return torch.cat([solution[1:], centre], 0)

    def _particle_noise(self, x: dict[str, Tensor], i: int) -> Tensor | None:
        return x["particle_noise"][i] if self.layout.stochastic else None

    def _member_noise(self, x: dict[str, Tensor], i: int) -> Tensor | None:
        return x["member_noise"][i] if self.layout.propagation == "ts1" else None

    @staticmethod
    def _better(value: Tensor, candidate: Tensor, best_value: Tensor, best: Tensor):
        better = value > best_value
        return torch.where(better, value, best_value), torch.where(better, candidate, best)

    def _cem_or_mppi(self, x: dict[str, Tensor]) -> tuple[Tensor, ...]:
        cfg, lay = self.planner, self.layout
        obs, mean = x["obs"], x["init_mean"]
        std = torch.full_like(mean, cfg.init_std)
        best_value = torch.full((), -torch.inf, dtype=mean.dtype, device=mean.device)
        best = mean
        a = cfg.momentum
        for i in range(lay.iterations):
            std_i = self._sampling_std(mean, std) if lay.planner == "cem" else std
            samples = self._clip(mean + std_i * x["sample_noise"][i, :lay.populations[i]])
            values = self.values(obs, samples, self._particle_noise(x, i),
                                 self._member_noise(x, i))
            k = min(cfg.elites, samples.shape[0])
            elite_values, idx = torch.topk(values, k)
            elites = samples[idx]
            best_value, best = self._better(elite_values[0], elites[0], best_value, best)
            if lay.planner == "cem":
                mean = a * mean + (1 - a) * elites.mean(0)
                std = (a * std + (1 - a) * elites.std(0, unbiased=False)).clamp(
                    cfg.min_std, cfg.max_std)
            else:
                weights = torch.exp(cfg.temperature * (elite_values - elite_values[0]))
                w = (weights / weights.sum())[:, None, None]
                new_mean = (w * elites).sum(0)
                if cfg.mppi_update_std:
                    std = torch.sqrt((w * (elites - new_mean).pow(2)).sum(0)).clamp(
                        cfg.min_std, cfg.max_std)
                mean = new_mean
        solution = best if cfg.return_best else mean
        return solution[0], self._next_mean(solution), best_value

    def _icem(self, x: dict[str, Tensor]) -> tuple[Tensor, ...]:
        cfg, lay = self.planner, self.layout
        obs, mean = x["obs"], x["init_mean"]
        std = torch.full_like(mean, cfg.init_std)
        keep = lay.keep
        best_value = torch.full((), -torch.inf, dtype=mean.dtype, device=mean.device)
        best = mean
        a = cfg.momentum
        # Shift-and-reuse of the previous decision's elites; invalid ones score -inf.
        tail = self._clip(mean[-1] + std[-1] * x["tail_noise"]).unsqueeze(1)  # [K, 1, A]
        carried = torch.cat([x["prev_elites"][:, 1:], tail], 1)
        valid = x["prev_elites_valid"] > 0.5
        elites = mean.unsqueeze(0)
        for i in range(lay.iterations):
            samples = self._clip(mean + self._sampling_std(mean, std)
                                 * x["sample_noise"][i, :lay.populations[i]])
            parts = [samples, self._clip(carried)]
            if i == lay.iterations - 1:
                parts.append(self._clip(mean).unsqueeze(0))
            samples = torch.cat(parts, 0)
            values = self.values(obs, samples, self._particle_noise(x, i),
                                 self._member_noise(x, i))
            if i == 0:
                P = lay.populations[0]
                masked = torch.where(valid, values[P:P + keep],
                                     torch.full_like(values[P:P + keep], -torch.inf))
                values = torch.cat([values[:P], masked, values[P + keep:]], 0)
            elite_values, idx = torch.topk(values, min(cfg.elites, samples.shape[0]))
            elites = samples[idx]
            best_value, best = self._better(elite_values[0], elites[0], best_value, best)
            mean = a * mean + (1 - a) * elites.mean(0)
            std = (a * std + (1 - a) * elites.std(0, unbiased=False)).clamp(cfg.min_std, cfg.max_std)
            carried = elites[:keep]
        solution = best if cfg.icem_execute == "best" else mean
        return solution[0], self._next_mean(mean), best_value, elites[:keep]
