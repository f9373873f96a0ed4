"""Improved CEM (Pinneri et al. 2020): coloured noise, decaying population, elite carry-over
within a decision and shifted elites across decisions, the mean added in the last iteration."""

from __future__ import annotations

import torch
from torch import Tensor

from worldflux.planners.base import Objective, Planner, PlannerRegistry, PlannerResult, score
from worldflux.planners.noise import colored_noise


@PlannerRegistry.register("icem", tier="reference",
                          description="iCEM: coloured noise, elite reuse, shift-and-reuse (Pinneri 2020)")
class ICEMPlanner(Planner):
    """iCEM returns the best sequence found (the paper executes the best elite), or the refitted
    mean with ``icem_execute="mean"``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._elites: Tensor | None = None  # elites of the previous decision [K', H, A]

    def reset(self) -> None:
        super().reset()
        self._elites = None

    def plan(self, objective: Objective, prior: Tensor | None = None) -> PlannerResult:
        cfg = self.config
        H, A = cfg.horizon, self.action_dim
        mean = self.initial_mean()
        std = torch.full((H, A), cfg.init_std, device=self.device)
        keep = max(1, int(round(cfg.keep_elites_fraction * cfg.elites)))
        best_value, best = -torch.inf, mean.clone()
        evaluated = 0
        carried: Tensor | None = None
        if self._elites is not None and cfg.warm_start:
            # Shift-and-reuse: last decision's elites, advanced one step, with a fresh last action.
            tail = self.clip(mean[-1] + std[-1] * torch.randn(
                (self._elites.shape[0], 1, A), generator=self.generator, device=self.device))
            carried = torch.cat([self._elites[:, 1:], tail], 1)[:keep]
        elites = mean[None]
        elite_values = torch.zeros(1)
        for i in range(cfg.iterations):
            population = max(int(cfg.population * cfg.population_decay ** (-i)), 2 * cfg.elites)
            noise = colored_noise(cfg.noise_beta, (population, H, A), generator=self.generator,
                                  device=self.device)
            samples = self.clip(mean + self.sampling_std(mean, std) * noise)
            extra = [s for s in (carried, prior) if s is not None]
            if i == cfg.iterations - 1:
                extra.append(mean[None])
            if extra:
                samples = torch.cat([samples, *[self.clip(e) for e in extra]], 0)
            values = score(objective, samples)
            evaluated += samples.shape[0]
            elite_values, idx = torch.topk(values, min(cfg.elites, samples.shape[0]))
            elites = samples[idx]
            if elite_values[0] > best_value:
                best_value, best = float(elite_values[0]), elites[0].clone()
            a = cfg.momentum
            mean = a * mean + (1 - a) * elites.mean(0)
            std = (a * std + (1 - a) * elites.std(0, unbiased=False)).clamp(cfg.min_std, cfg.max_std)
            carried = elites[:keep]
        self._elites = elites[:keep].clone()
        solution = best if cfg.icem_execute == "best" else mean
        result = self._result(solution, best_value, evaluated,
                              elite_mean=float(elite_values.mean()))
        # Warm start from the refitted mean, not only the best sequence.
        self.remember(mean)
        return result

    @staticmethod
    def total_samples(population: int, iterations: int, decay: float, elites: int) -> int:
        """Sequences sampled per decision (before carried/prior/mean extras)."""
        return sum(max(int(population * decay ** (-i)), 2 * elites) for i in range(iterations))

    def state_dict(self):
        state = super().state_dict()
        if self._elites is not None:
            state["elites"] = self._elites.cpu()
        return state

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        elites = state.get("elites")
        self._elites = elites.to(self.device) if elites is not None else None


