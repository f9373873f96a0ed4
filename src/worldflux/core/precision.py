"""Choosing a compute dtype for inference-heavy loops (planning)."""

from __future__ import annotations

import functools

import torch

from worldflux.core.errors import ConfigError


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU has AVX-512 BF16 or AMX-BF16 (bfloat16 matmuls run natively)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def inference_dtype(name: str, device: torch.device) -> torch.dtype:
    """``"float32"``, ``"bfloat16"`` or ``"auto"`` (bfloat16 where the hardware runs it natively)."""
    if name == "float32":
        return torch.float32
    if name == "bfloat16":
        return torch.bfloat16
    if name != "auto":
        raise ConfigError(f"planning_dtype: got {name!r}, expected 'auto', 'float32' or 'bfloat16'")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32
