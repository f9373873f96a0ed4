"""Random shooting: uniform sequences, keep the best (Nagabandi et al. 2018)."""

from __future__ import annotations

import torch
from torch import Tensor

from worldflux.planners.base import Objective, Planner, PlannerRegistry, PlannerResult, score


@PlannerRegistry.register("random", tier="reference",
                          description="Random shooting: best of uniformly sampled sequences")
class RandomShootingPlanner(Planner):
    """Samples ``population * iterations`` uniform sequences and returns the best one."""

    def plan(self, objective: Objective, prior: Tensor | None = None) -> PlannerResult:
        cfg = self.config
        n = cfg.population * cfg.iterations
        u = torch.rand((n, cfg.horizon, self.action_dim), generator=self.generator, device=self.device)
        samples = self.low + (self.high - self.low) * u
        if prior is not None:
            samples = torch.cat([samples, self.clip(prior)], 0)
        values = score(objective, samples)
        best = int(torch.argmax(values))
        return self._result(samples[best].clone(), float(values[best]), samples.shape[0])
