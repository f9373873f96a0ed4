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


PRECISIONS = ("fp32", "bf16", "fp16")


class MixedPrecision:
    """Mixed-precision training as one switch: ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    ``bf16`` runs the forward pass under :func:`torch.autocast` with bfloat16 on CPU and GPU (no
    loss scaling needed: bfloat16 has float32's exponent range). ``fp16`` autocasts to float16 and
    scales the loss with a :class:`torch.amp.GradScaler`; it needs a CUDA device. Parameters and
    optimiser states stay float32 in every mode. Use around one optimiser step::

        with amp.autocast():
            out = model.loss(batch)
        amp.backward(out.loss)
        if amp.step(optimizer, model.named_parameters(), guard, "pets"):
            ...                                    # the step was taken

    Args:
        mode: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        device: where the model lives.
        max_grad_norm: clip the global gradient norm to this value before the step (0 = off).

    Raises:
        ConfigError: an unknown mode, or ``fp16`` on a device other than CUDA.
    """

    def __init__(self, mode: str = "fp32", device: torch.device | str = "cpu",
                 max_grad_norm: float = 0.0) -> None:
        device = torch.device(device if device is not None else "cpu")
        if mode not in PRECISIONS:
            raise ConfigError(f"train.precision: got {mode!r}, expected one of {list(PRECISIONS)}")
        if mode == "fp16" and device.type != "cuda":
            raise ConfigError(
                f"train.precision: got 'fp16' on device '{device}', expected a CUDA device "
                "(float16 needs loss scaling on a GPU); use 'bf16' on the CPU"
            )
        self.mode = mode
        self.device = device
        self.max_grad_norm = float(max_grad_norm)
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]
        self.scaler = torch.amp.GradScaler(device.type, enabled=mode == "fp16")

    @property
    def enabled(self) -> bool:
        return self.mode != "fp32"

    def autocast(self):
        """Context manager for the forward pass (and loss) of one training step."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.enabled)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, named_parameters, guard=None,
             where: str = "") -> bool:
        """Unscale, check (``guard``: a NonFiniteGuard), clip and step; True when a step was taken.

        With ``fp16``, an overflow is the scaler's business (it skips the step and lowers the
        scale) and is not counted by ``guard`` until the scale falls below 1, which only a real
        divergence does.
        """
        named = [(n, p) for n, p in named_parameters if p.grad is not None]
        if self.scaler.is_enabled():
            self.scaler.unscale_(optimizer)
            norm = torch.nn.utils.get_total_norm([p.grad for _, p in named]) if named else None
            finite = norm is None or bool(torch.isfinite(norm))  # one sync, not one per tensor
            if not finite and self.scaler.get_scale() >= 1.0:
                self.scaler.step(optimizer)  # skipped by the scaler, which lowers its scale
                self.scaler.update()
                return False
        if guard is not None and not guard.gradients_ok(named, where):
            if self.scaler.is_enabled():
                self.scaler.update()
            return False
        if self.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_([p for _, p in named], self.max_grad_norm)
        self.scaler.step(optimizer)
        self.scaler.update()
        return True

    def state_dict(self) -> dict:
        """The scaler's state (empty unless ``fp16``), for checkpoints."""
        if not self.scaler.is_enabled():
            return {}
        return {k: float(v) for k, v in self.scaler.state_dict().items()}

    def load_state_dict(self, state: dict) -> None:
        if state and self.scaler.is_enabled():
            self.scaler.load_state_dict({"scale": state["scale"],
                                         "growth_factor": state["growth_factor"],
                                         "backoff_factor": state["backoff_factor"],
                                         "growth_interval": int(state["growth_interval"]),
                                         "_growth_tracker": int(state["_growth_tracker"])})
