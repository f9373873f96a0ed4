"""Model-predictive path integral control (Williams et al. 2017), in the elite-weighted form of
TD-MPC2 (Hansen et al. 2024): scores become weights ``exp(temperature * (score - max))``."""

from __future__ import annotations

import torch
from torch import Tensor

from worldflux.planners.base import Objective, Planner, PlannerRegistry, PlannerResult, score


@PlannerRegistry.register("mppi", tier="reference",
                          description="MPPI with elite weighting, std refit and policy prior")
class MPPIPlanner(Planner):
    """Gaussian sampling around the warm-started mean; the mean (and std, unless
    ``mppi_update_std`` is off) become the softmax-weighted average of the ``elites`` best.

    With ``elites = population`` and ``mppi_update_std = False`` this is classic MPPI.
    """

    def plan(self, objective: Objective, prior: Tensor | None = None) -> PlannerResult:
        out = self.optimise(objective, prior, self.initial_mean(), self.generator)
        solution = out["best"] if self.config.return_best else out["mean"]
        return self._result(solution, float(out["best_value"]), int(out["evaluated"]),
                            effective_samples=float(out["effective_samples"]))

    def optimise(self, objective: Objective, prior: Tensor | None, mean: Tensor,
                 generator: torch.Generator | None) -> dict[str, Tensor]:
        """The MPPI iterations from ``mean [H, A]``, with no host synchronisation (so that a
        decision can be captured as a CUDA graph; ``generator=None`` draws from the default
        generator, the one a graph can replay). Remembers nothing.

        Returns:
            ``mean [H, A]`` and ``std [H, A]`` after the last refit, ``best [H, A]`` and
            ``best_value []``: the best sequence scored, ``effective_samples []`` of the last
            weights, ``evaluated []`` sequences scored.
        """
        cfg = self.config
        H, A = cfg.horizon, self.action_dim
        std = torch.full((H, A), cfg.init_std, device=self.device)
        evaluated = 0
        best_value = torch.full((), -torch.inf, device=self.device)
        best = mean
        weights = torch.ones(1, device=self.device)
        for _ in range(cfg.iterations):
            noise = torch.randn((cfg.population, H, A), generator=generator, device=self.device)
            samples = self.clip(mean + std * noise)
            if prior is not None:
                samples = torch.cat([self.clip(prior), samples], 0)
            values = score(objective, samples)
            evaluated += samples.shape[0]
            elite_values, idx = torch.topk(values, min(cfg.elites, samples.shape[0]))
            elites = samples[idx]
            better = elite_values[0] > best_value
            best_value = torch.where(better, elite_values[0], best_value)
            best = torch.where(better, elites[0], best)
            weights = torch.exp(cfg.temperature * (elite_values - elite_values[0]))
            weights = weights / weights.sum()
            w = weights[:, None, None]
            new_mean = (w * elites).sum(0)
            if cfg.mppi_update_std:
                std = torch.sqrt((w * (elites - new_mean).pow(2)).sum(0)).clamp(cfg.min_std, cfg.max_std)
            mean = new_mean
        return {"mean": mean, "std": std, "best": best, "best_value": best_value,
                "effective_samples": 1.0 / weights.pow(2).sum(),
                "evaluated": torch.tensor(evaluated)}
