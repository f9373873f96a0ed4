"""Particle bookkeeping of ensemble rollouts for planning (PETS trajectory sampling).

``N`` sequences x ``K`` particles = ``R`` rows. Row ``r = n * K + k`` stays on member ``r % E``
under TS-inf, so rows are laid out ``[E, M]`` with ``M = ceil(R / E)`` (the last rows padded
with copies). TS-1 re-draws the member of every row at every step by a permutation that is
undone after the step, so each row keeps its sequence identity.
"""

from __future__ import annotations

import torch
from torch import Tensor


def particle_actions(action_sequences: Tensor, num_particles: int,
                     ensemble_size: int) -> Tensor:
    """``[N, H, A]`` sequences -> per-step particle actions ``[H, E, M, A]``."""
    N, H, A = action_sequences.shape
    R = N * num_particles
    M = -(-R // ensemble_size)
    pad = M * ensemble_size - R
    acts = action_sequences.unsqueeze(1).expand(N, num_particles, H, A).reshape(R, H, A)
    if pad:
        acts = torch.cat([acts, acts[:pad]], 0)
    return acts.view(M, ensemble_size, H, A).permute(2, 1, 0, 3).contiguous()


def ts1_shuffle(state: Tensor, action: Tensor,
                generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
    """Send every row of ``state [E, M, S]`` / ``action [E, M, A]`` to a random member."""
    E, M, S = state.shape
    perm = torch.randperm(E * M, generator=generator, device=state.device)
    return (state.reshape(E * M, S)[perm].view(E, M, S),
            action.reshape(E * M, -1)[perm].view(E, M, -1), perm)


def ts1_restore(perm: Tensor, next_state: Tensor, reward: Tensor) -> tuple[Tensor, Tensor]:
    """Undo :func:`ts1_shuffle` on ``next_state [E, M, S]`` and ``reward [E, M]``."""
    E, M, S = next_state.shape
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.numel(), device=perm.device)
    return (next_state.reshape(E * M, S)[inverse].view(E, M, S),
            reward.reshape(E * M)[inverse].view(E, M))


def particle_returns_by_sequence(returns: Tensor, num_sequences: int,
                                 num_particles: int) -> Tensor:
    """``[E, M]`` row returns -> ``[N, K]`` in sequence order (padding rows dropped)."""
    R = num_sequences * num_particles
    return returns.transpose(0, 1).reshape(-1)[:R].view(num_sequences, num_particles)
