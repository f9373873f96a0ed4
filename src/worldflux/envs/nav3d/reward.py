"""``reward_fn``: the Nav3D reward recomputed from state observations, in torch (for planners)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from worldflux.envs.nav3d.config import GOAL_SLICE, OBSTACLE_SLICE, Nav3DConfig
from worldflux.envs.nav3d.layout import CONTACT_TOLERANCE

if TYPE_CHECKING:
    import torch

__all__ = ["make_reward_fn", "reward_fn"]


def reward_fn(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor,
              config: Nav3DConfig | None = None, *, safety_margin: float = 0.0) -> torch.Tensor:
    """Reward of transitions ``obs [..., D] --action [..., 3]--> next_obs [..., D]`` -> ``[...]``
    (``D = config.obs_dim``).

    Matches the env's reward (up to float32 rounding) under the same ``config``:
    progress from the goal offsets, a collision when the next nearest-obstacle offset is
    within ``body_radius`` (plus the 1 mm contact skin), the control cost on the clipped action
    and the success bonus within ``success_radius`` of the goal.

    Args:
        safety_margin: extra distance (m) counted as a collision, for planning with a margin
            (0 reproduces the env's reward).
    """
    cfg = config or Nav3DConfig()
    distance = obs[..., GOAL_SLICE].norm(dim=-1)
    next_distance = next_obs[..., GOAL_SLICE].norm(dim=-1)
    reward = cfg.progress_scale * (distance - next_distance)
    if cfg.num_obstacles > 0 and cfg.collision_penalty > 0:
        # The nearest obstacle's offset, or every obstacle's (obstacle_observation="each").
        offsets = next_obs[..., OBSTACLE_SLICE.start:]
        gap = offsets.unflatten(-1, (-1, 3)).norm(dim=-1).amin(-1)
        contact = gap <= cfg.body_radius + CONTACT_TOLERANCE + safety_margin
        reward = reward - cfg.collision_penalty * contact.to(reward.dtype)
    if cfg.control_cost > 0:
        reward = reward - cfg.control_cost * action.clamp(-1.0, 1.0).pow(2).sum(-1)
    success = next_distance <= cfg.success_radius
    return reward + cfg.success_bonus * success.to(reward.dtype)


def make_reward_fn(config: Nav3DConfig | None = None, *, safety_margin: float = 0.0
                   ) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``reward_fn`` bound to ``config``: pass it to ``PETSAgent.set_reward_function``."""
    return functools.partial(reward_fn, config=config or Nav3DConfig(),
                             safety_margin=float(safety_margin))
