"""Shared helpers for replay tests, given to tests as fixtures."""

from __future__ import annotations

import numpy as np
import pytest

from worldflux.data import ReplayBuffer


def make_episode(episode: int, length: int, obs_shape=(2,), dtype=np.float32, terminal=True):
    """L + 1 rows; obs value = 1000 * episode + t so every row identifies itself."""
    rows = length + 1
    t = np.arange(rows)
    obs = np.broadcast_to(
        (1000 * episode + t).reshape(-1, *[1] * len(obs_shape)), (rows, *obs_shape)
    )
    actions = np.stack([t, np.full(rows, episode)], axis=1).astype(np.float32)
    actions[0] = 0
    rewards = t.astype(np.float32)
    terminated = np.zeros(rows, bool)
    terminated[-1] = terminal
    truncated = np.zeros(rows, bool)
    truncated[-1] = not terminal
    is_first = t == 0
    return dict(
        obs=obs.astype(dtype),
        actions=actions,
        rewards=rewards,
        terminated=terminated,
        truncated=truncated,
        is_first=is_first,
    )


def add_rows(buffer: ReplayBuffer, episode: dict, stream: int = 0) -> None:
    for t in range(len(episode["obs"])):
        buffer.add(
            episode["obs"][t],
            episode["actions"][t],
            episode["rewards"][t],
            episode["terminated"][t],
            episode["truncated"][t],
            episode["is_first"][t],
            stream=stream,
        )


@pytest.fixture(name="make_episode")
def make_episode_fixture():
    return make_episode


@pytest.fixture(name="add_rows")
def add_rows_fixture():
    return add_rows
