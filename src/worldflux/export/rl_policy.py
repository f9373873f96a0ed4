"""Deployment bundle of a fast-RL policy: ONNX graph plus a JSON manifest of its env spec.

::

    from worldflux.export.rl_policy import export_rl_policy, OnnxRLPolicy

    manifest = export_rl_policy(ppo.policy, env.observation_space, env.action_space,
                                "puzzle.onnx", action_mask=True)    # + puzzle.onnx.json
    runner = OnnxRLPolicy("puzzle.onnx")          # onnxruntime + numpy, no torch
    actions = runner.act(obs, mask)               # [N, *obs], [N, A] -> [N] (or [N, A])

Graph inputs: ``obs [N, *obs_shape]`` float32 and, for discrete spaces with masks,
``action_mask [N, A]`` bool. Outputs: ``action`` (``[N]`` int64, the most likely legal action;
or ``[N, A]`` float32, the Gaussian mean clipped to the action bounds), ``action_out``
(masked logits or the mean) and ``value [N]``. The manifest (``FILE.json``) records the
observation and action spaces, whether a mask is expected, the policy class and settings, the
file's SHA-256 and the largest difference from PyTorch measured at export.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from worldflux.core.errors import CheckpointError, ConfigError, WorldFluxError
from worldflux.core.io import atomic_write_bytes, atomic_write_text, sha256_file

__all__ = ["MANIFEST_FORMAT", "OnnxRLPolicy", "RLPolicyGraph", "export_rl_policy",
           "space_to_json"]

MANIFEST_FORMAT = "worldflux-rl-policy/1"
_MASKED = -1e8


class RLPolicyGraph(nn.Module):
    """The deterministic decision of a policy: ``(obs[, mask]) -> (action, action_out, value)``."""

    def __init__(self, policy: nn.Module, action_space: spaces.Space, masked: bool) -> None:
        super().__init__()
        self.policy = policy
        self.discrete = isinstance(action_space, spaces.Discrete)
        self.masked = masked
        if not self.discrete:
            self.register_buffer("low", torch.as_tensor(action_space.low, dtype=torch.float32))
            self.register_buffer("high", torch.as_tensor(action_space.high, dtype=torch.float32))

    def forward(self, obs: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        out, value = self.policy(obs)
        if self.discrete:
            if mask is not None:
                out = torch.where(mask, out, torch.full_like(out, _MASKED))
            return out.argmax(-1), out, value
        return torch.maximum(torch.minimum(out, self.high), self.low), out, value


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """A JSON description of a Box or Discrete space."""
    if isinstance(space, spaces.Discrete):
        return {"type": "discrete", "n": int(space.n)}
    if isinstance(space, spaces.Box):
        def bound(values: np.ndarray) -> Any:
            flat = np.asarray(values, dtype=np.float64)
            if np.all(flat == flat.flat[0]):
                value = float(flat.flat[0])
                return value if np.isfinite(value) else ("inf" if value > 0 else "-inf")
            return [v if np.isfinite(v) else ("inf" if v > 0 else "-inf") for v in flat.ravel().tolist()]
        return {"type": "box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": bound(space.low), "high": bound(space.high)}
    raise ConfigError(f"space: got {space}, expected Box or Discrete")


def export_rl_policy(policy: nn.Module, observation_space: spaces.Box,
                     action_space: spaces.Space, path: str | os.PathLike, *,
                     action_mask: bool = False, extra: dict[str, Any] | None = None,
                     opset: int = 17, check_samples: int = 64, seed: int = 0) -> dict[str, Any]:
    """Write ``path`` (ONNX) and ``path.json`` (manifest); return the manifest.

    The export is run in onnxruntime on ``check_samples`` random observations (and random
    non-empty masks) and its actions compared with PyTorch's; a mismatch raises.
    """
    import onnx

    discrete = isinstance(action_space, spaces.Discrete)
    if action_mask and not discrete:
        raise ConfigError("action_mask: only discrete action spaces have masks")
    path = Path(path)
    # Export a CPU copy: the example inputs are CPU tensors and the live policy stays put.
    graph = RLPolicyGraph(copy.deepcopy(policy).cpu(), action_space, action_mask).eval()
    obs_shape = tuple(observation_space.shape)
    example_obs = torch.zeros((2, *obs_shape))
    args: tuple[Tensor, ...] = (example_obs,)
    inputs = ["obs"]
    dynamic = {"obs": {0: "batch"}, "action": {0: "batch"}, "action_out": {0: "batch"},
               "value": {0: "batch"}}
    if action_mask:
        args = (example_obs, torch.ones((2, int(action_space.n)), dtype=torch.bool))
        inputs.append("action_mask")
        dynamic["action_mask"] = {0: "batch"}
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            # The TorchScript exporter needs only onnx (the dynamo one also needs onnxscript).
            torch.onnx.export(graph, args, buffer, input_names=inputs,
                              output_names=["action", "action_out", "value"],
                              dynamic_axes=dynamic, opset_version=int(opset), dynamo=False)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WorldFluxError(f"torch.onnx.export of {type(policy).__name__} failed: {first}"
                             ) from exc
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "onnx_file": path.name,
        "inputs": inputs,
        "outputs": ["action", "action_out", "value"],
        "observation_space": space_to_json(observation_space),
        "action_space": space_to_json(action_space),
        "action_mask": bool(action_mask),
        "policy": {"class": type(policy).__name__,
                   "config": (dataclasses.asdict(policy.config)
                              if dataclasses.is_dataclass(getattr(policy, "config", None))
                              else None)},
        "opset": int(opset),
        **(extra or {}),
    }
    entry = proto.metadata_props.add()
    entry.key, entry.value = "worldflux", json.dumps(manifest, sort_keys=True)
    atomic_write_bytes(path, proto.SerializeToString())
    manifest["max_abs_diff"] = _check(graph, path, obs_shape, action_space, action_mask,
                                      check_samples, seed)
    manifest["sha256"] = sha256_file(path)
    atomic_write_text(Path(str(path) + ".json"), json.dumps(manifest, indent=2))
    return manifest


def _check(graph: RLPolicyGraph, path: Path, obs_shape: tuple[int, ...],
           action_space: spaces.Space, masked: bool, samples: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((samples, *obs_shape)).astype(np.float32)
    mask = None
    if masked:
        mask = rng.random((samples, int(action_space.n))) < 0.6
        mask[np.arange(samples), rng.integers(0, action_space.n, samples)] = True
    runner = OnnxRLPolicy(path)
    action, action_out, value = runner.run(obs, mask)
    with torch.no_grad():
        ref = graph(torch.as_tensor(obs), None if mask is None else torch.as_tensor(mask))
    diffs = {"action_out": float(np.abs(action_out - ref[1].numpy()).max()),
             "value": float(np.abs(value - ref[2].numpy()).max())}
    if isinstance(action_space, spaces.Discrete):
        mismatched = int((action != ref[0].numpy()).sum())
        diffs["action_mismatches"] = float(mismatched)
        # A near-tie of two logits may flip the argmax by rounding; anything else is a bug.
        gap = np.sort(ref[1].numpy(), axis=1)
        tie = gap[:, -1] - gap[:, -2] < 1e-5
        if (action != ref[0].numpy())[~tie].any():
            raise WorldFluxError(f"{path}: onnxruntime picks other actions than PyTorch on "
                                 f"{mismatched} of {samples} random inputs")
    else:
        diffs["action"] = float(np.abs(action - ref[0].numpy()).max())
    if max(diffs["action_out"], diffs["value"]) > 1e-3:
        raise WorldFluxError(f"{path}: onnxruntime differs from PyTorch by {diffs}")
    return diffs


class OnnxRLPolicy:
    """Runs an exported policy with onnxruntime (numpy in, numpy out)."""

    def __init__(self, path: str | os.PathLike) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError("onnxruntime is needed to run exported policies: "
                              "pip install 'worldflux[onnx]'") from exc
        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), options,
                                            providers=["CPUExecutionProvider"])
        text = self.session.get_modelmeta().custom_metadata_map.get("worldflux")
        if text is None:
            raise CheckpointError(f"{self.path}: no worldflux manifest in the ONNX metadata")
        self.manifest = json.loads(text)
        if self.manifest.get("format") != MANIFEST_FORMAT:
            raise CheckpointError(f"{self.path}: manifest format {self.manifest.get('format')!r}, "
                                  f"expected {MANIFEST_FORMAT!r}")

    def run(self, obs: np.ndarray, mask: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(action, action_out, value)`` for ``obs [N, *obs_shape]``."""
        feeds = {"obs": np.ascontiguousarray(obs, dtype=np.float32)}
        if self.manifest["action_mask"]:
            if mask is None:
                mask = np.ones((len(obs), self.manifest["action_space"]["n"]), dtype=bool)
            feeds["action_mask"] = np.ascontiguousarray(mask, dtype=bool)
        action, action_out, value = self.session.run(None, feeds)
        return action, action_out, value

    def act(self, obs: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """The deterministic action per row."""
        return self.run(obs, mask)[0]
