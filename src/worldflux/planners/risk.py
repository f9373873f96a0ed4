"""Risk measures over the predicted return distribution of each candidate plan.

A model-based planner sees, for every candidate action sequence, the returns of ``K`` sampled
rollouts (particles spread over ensemble members and aleatoric noise). A risk measure turns those
``[N, K]`` samples into one score per sequence ``[N]`` (higher is better):

============  ================================================================================
``mean``      risk-neutral expected return
``mean_std``  ``mean - lam * std`` (``lam = 0`` is risk-neutral; ``lam > 0`` avoids spread)
``cvar``      CVaR_alpha: mean of the worst ``alpha`` fraction of the samples (Rockafellar &
              Uryasev 2000; lower tail, since returns are rewards)
``var``       VaR_alpha: the ``alpha``-quantile of the samples (the k-th worst, ``k = ceil(alpha K)``)
``worst``     the minimum over samples (worst case; CVaR with ``alpha -> 0``)
``entropic``  ``-(1 / beta) * log mean exp(-beta * R)`` (exponential utility, Howard & Matheson
              1972); ``beta -> 0`` gives the mean, large ``beta`` the worst case. ``beta`` is in
              units of 1 / return, so scale it to the task's returns.
============  ================================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from worldflux.core.errors import ConfigError, close_matches

__all__ = ["RISK_MEASURES", "RiskConfig", "risk_value"]

RISK_MEASURES = ("mean", "mean_std", "cvar", "var", "worst", "entropic")


@dataclass
class RiskConfig:
    """How a planner scores a candidate from its sampled returns."""

    measure: Literal["mean", "mean_std", "cvar", "var", "worst", "entropic"] = "mean"
    """One of mean, mean_std, cvar, var, worst, entropic (see the module docstring)."""
    lam: float = 0.0
    """``mean_std``: weight of the standard deviation (0 = risk-neutral)."""
    alpha: float = 0.1
    """``cvar`` / ``var``: tail fraction in (0, 1] (the worst 10% by default)."""
    beta: float = 1.0
    """``entropic``: risk aversion > 0, in units of 1 / return."""

    def validate(self, prefix: str = "risk.") -> None:
        if self.measure not in RISK_MEASURES:
            raise ConfigError(f"{prefix}measure: got {self.measure!r}, expected one of "
                              f"{list(RISK_MEASURES)}.{close_matches(self.measure, RISK_MEASURES)}")
        if not 0.0 < self.alpha <= 1.0:
            raise ConfigError(f"{prefix}alpha: got {self.alpha}, expected in (0, 1]")
        if self.beta <= 0.0:
            raise ConfigError(f"{prefix}beta: got {self.beta}, expected > 0")
        if self.lam < 0.0:
            raise ConfigError(f"{prefix}lam: got {self.lam}, expected >= 0 (0 = risk-neutral)")

    @property
    def neutral(self) -> bool:
        return self.measure == "mean" or (self.measure == "mean_std" and self.lam == 0.0)


def risk_value(returns: Tensor, config: RiskConfig) -> Tensor:
    """Score ``[N]`` of each row of sampled returns ``[N, K]`` under ``config``."""
    if returns.dim() != 2:
        raise ValueError(f"returns: got shape {tuple(returns.shape)}, expected [N, K]")
    returns = returns.float()
    K = returns.shape[1]
    measure = config.measure
    if measure == "mean" or (measure == "mean_std" and config.lam == 0.0):
        return returns.mean(1)
    if measure == "mean_std":
        return returns.mean(1) - config.lam * returns.std(1, unbiased=False)
    if measure == "worst":
        return returns.min(1).values
    if measure in ("cvar", "var"):
        k = max(1, math.ceil(config.alpha * K - 1e-9))
        lowest = torch.topk(returns, k, dim=1, largest=False, sorted=True).values  # [N, k]
        return lowest.mean(1) if measure == "cvar" else lowest[:, -1]
    if measure == "entropic":
        beta = config.beta
        return -(torch.logsumexp(-beta * returns, dim=1) - math.log(K)) / beta
    raise ConfigError(f"risk.measure: got {measure!r}, expected one of {list(RISK_MEASURES)}")
