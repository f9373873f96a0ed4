"""Replay storage and episode files.

Row convention (as in Dreamer and TD-MPC2): an episode of ``L`` actions is ``L + 1`` rows.
Row ``t`` holds

* ``obs[t]``: the observation at step ``t``;
* ``actions[t]``: the action that led to ``obs[t]`` (zeros on the first row);
* ``rewards[t]``: the reward received on that transition (0 on the first row);
* ``terminated[t]``: ``obs[t]`` is a terminal state (no bootstrapping past it);
* ``truncated[t]``: the episode was cut at ``obs[t]`` by a time limit (``obs[t]`` is not
  terminal: bootstrap from it);
* ``is_first[t]``: row ``t`` starts an episode.

Termination and truncation are never merged. Sampled batches are dicts of arrays
``[B, T, ...]``: ``obs [B, T, *obs_shape]`` (uint8 images stay uint8), ``actions [B, T, A]``,
``rewards [B, T]`` (float32) and bool ``terminated``, ``truncated``, ``is_first [B, T]``.
"""

from worldflux.data.episodes import (
    EPISODE_KEYS,
    SCHEMA_VERSION,
    load_episode,
    save_episode,
    validate_episode,
)
from worldflux.data.replay import ReplayBuffer, Transitions
from worldflux.data.tensors import to_torch

__all__ = [
    "EPISODE_KEYS",
    "SCHEMA_VERSION",
    "ReplayBuffer",
    "Transitions",
    "load_episode",
    "save_episode",
    "to_torch",
    "validate_episode",
]
