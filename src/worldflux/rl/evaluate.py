"""Evaluate a policy on a batched env: one episode per env row, all rows stepped together."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from worldflux.rl.env import BatchedEnv

__all__ = ["run_episodes"]


def run_episodes(env: BatchedEnv, act: Callable[[np.ndarray, np.ndarray | None], np.ndarray], *,
                 seed: int | None = None, max_steps: int = 100_000) -> dict[str, np.ndarray]:
    """Run the first episode of every row of ``env`` with ``act(obs, mask) -> actions``.

    Returns ``{"returns": [N], "lengths": [N], "success": [N]}`` (success is False where the env
    reports none). Rows keep stepping after their first episode; those steps are ignored.
    """
    obs, info = env.reset(seed=seed)
    n = env.num_envs
    returns = np.zeros(n)
    lengths = np.zeros(n, dtype=np.int64)
    success = np.zeros(n, dtype=bool)
    finished = np.zeros(n, dtype=bool)
    for _ in range(max_steps):
        obs, reward, terminated, truncated, info = env.step(act(obs, info.get("action_mask")))
        live = ~finished & ~info.get("skip", np.zeros(n, dtype=bool))
        returns += np.where(live, reward, 0.0)
        lengths += live
        done = (terminated | truncated) & live
        if "success" in info:
            success |= done & info["success"]
        finished |= done
        if finished.all():
            break
    return {"returns": returns, "lengths": lengths, "success": success}
