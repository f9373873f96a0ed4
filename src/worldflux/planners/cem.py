"""Cross-entropy method (Botev et al. 2013) as used by PETS (Chua et al. 2018)."""

from __future__ import annotations

import torch
from torch import Tensor

from worldflux.planners.base import Objective, Planner, PlannerRegistry, PlannerResult, score


@PlannerRegistry.register("cem", tier="reference",
                          description="Cross-entropy method with momentum and warm start (PETS)")
class CEMPlanner(Planner):
    """Gaussian CEM over ``[H, A]`` sequences: sample, keep elites, refit mean/std with momentum.

    The std is constrained so that two standard deviations stay within the bounds (as in the PETS
    reference implementation; ``bounded_std``), which keeps clipping from distorting the elite
    statistics.
    """

    def plan(self, objective: Objective, prior: Tensor | None = None) -> PlannerResult:
        cfg = self.config
        H, A = cfg.horizon, self.action_dim
        mean = self.initial_mean()
        std = torch.full((H, A), cfg.init_std, device=self.device)
        best_value, best = -torch.inf, mean.clone()
        evaluated = 0
        elite_values = torch.zeros(0)
        for _ in range(cfg.iterations):
            std_i = self.sampling_std(mean, std)
            noise = torch.randn((cfg.population, H, A), generator=self.generator, device=self.device)
            samples = self.clip(mean + std_i * noise)
            if prior is not None:
                samples = torch.cat([samples, self.clip(prior)], 0)
            values = score(objective, samples)
            evaluated += samples.shape[0]
            elite_values, idx = torch.topk(values, cfg.elites)
            elites = samples[idx]
            if elite_values[0] > best_value:
                best_value, best = float(elite_values[0]), elites[0].clone()
            a = cfg.momentum
            mean = a * mean + (1 - a) * elites.mean(0)
            std = (a * std + (1 - a) * elites.std(0, unbiased=False)).clamp(cfg.min_std, cfg.max_std)
        solution = best if cfg.return_best else mean
        return self._result(solution, best_value, evaluated,
                            elite_mean=float(elite_values.mean()), elite_std=float(elite_values.std()))
