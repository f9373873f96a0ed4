"""Move NumPy batches to torch."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

__all__ = ["to_torch"]


def to_torch(
    batch: Mapping[str, np.ndarray], device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Convert a batch of arrays (e.g. from ``ReplayBuffer.sample``) to tensors on ``device``.

    uint8 arrays (images) stay uint8 and bool arrays (flags) stay bool, so they cross to the
    device at their smallest size; every other array becomes float32. Shapes are unchanged:
    ``obs [B, T, *obs_shape]`` in, ``obs [B, T, *obs_shape]`` out. A :class:`Transitions`
    tuple can be passed as ``transitions._asdict()``.
    """
    device = torch.device(device)
    tensors = {}
    for key, value in batch.items():
        array = np.asarray(value)
        if array.dtype != np.uint8 and array.dtype != np.bool_:
            array = array.astype(np.float32, copy=False)
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if device.type == "cuda":
            tensor = tensor.pin_memory().to(device, non_blocking=True)
        else:
            tensor = tensor.to(device)
        tensors[key] = tensor
    return tensors
