"""Learning-rate schedules: constant, linear warmup, then cosine or linear decay.

A :class:`LRScheduleConfig` sits in an agent's config next to its learning rate; the agent builds
the scheduler with :func:`build_lr_scheduler` and steps it after every optimiser step. The
scheduler's state is part of the agent's checkpoint, so a resumed run continues the schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from worldflux.core.errors import ConfigError

__all__ = ["LRScheduleConfig", "build_lr_scheduler", "lr_factor"]


@dataclass
class LRScheduleConfig:
    """Multiplier of the base learning rate as a function of the optimiser step."""

    name: Literal["constant", "cosine", "linear"] = "constant"
    """``constant``; ``cosine`` decay to ``min_ratio`` over ``total_steps`` (Loshchilov & Hutter
    2017, without restarts); ``linear`` decay to ``min_ratio`` over ``total_steps``."""
    warmup_steps: int = 0
    """Linear warmup from ``lr / warmup_steps`` to ``lr`` over this many optimiser steps
    (any schedule; 0 = none)."""
    total_steps: int = 0
    """Optimiser steps of the whole run, warmup included (needed by cosine and linear); after it
    the factor stays at ``min_ratio``."""
    min_ratio: float = 0.0
    """Final learning rate as a fraction of the base one."""

    def validate(self, prefix: str = "lr_schedule.") -> None:
        if self.name not in ("constant", "cosine", "linear"):
            raise ConfigError(f"{prefix}name: got {self.name!r}, expected 'constant', 'cosine' "
                              "or 'linear'")
        if self.warmup_steps < 0:
            raise ConfigError(f"{prefix}warmup_steps: got {self.warmup_steps}, expected >= 0")
        if self.name != "constant" and self.total_steps <= self.warmup_steps:
            raise ConfigError(
                f"{prefix}total_steps: got {self.total_steps}, expected more than warmup_steps "
                f"({self.warmup_steps}) for the {self.name} schedule"
            )
        if not 0.0 <= self.min_ratio <= 1.0:
            raise ConfigError(f"{prefix}min_ratio: got {self.min_ratio}, expected in [0, 1]")


def lr_factor(config: LRScheduleConfig, step: int) -> float:
    """Multiplier of the base learning rate for optimiser step ``step`` (0-based)."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.name == "constant":
        return 1.0
    span = config.total_steps - config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / span)
    if config.name == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        shape = 1.0 - progress
    return config.min_ratio + (1.0 - config.min_ratio) * shape


def build_lr_scheduler(optimizer: torch.optim.Optimizer,
                       config: LRScheduleConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A :class:`torch.optim.lr_scheduler.LambdaLR` following ``config``; call ``.step()`` after
    every ``optimizer.step()``."""
    config.validate()
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, step))
