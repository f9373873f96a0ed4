"""Run exported worldflux ONNX files with numpy and onnxruntime.

This module computes with numpy and onnxruntime only (importing the ``worldflux`` package still
imports torch; a deployment without torch can copy this file, which needs nothing else from
worldflux but its two error classes).

Quick use::

    from worldflux.export import OnnxMPCPolicy
    policy = OnnxMPCPolicy("pendulum_policy.onnx", seed=0)
    policy.reset()                      # at every episode start
    action = policy.act(obs)            # obs [D] -> action [A] (float32, within the bounds)

:class:`OnnxMPCPolicy` draws the graph's noise inputs with numpy
(:func:`sample_policy_noise`), carries the warm-start mean (and iCEM's elites) from one call to
the next, and clips the action to the exported bounds. :class:`OnnxDynamics` runs an exported
ensemble one-step model: ``predict(obs [N, D], action [N, A])`` -> dict of arrays. Both read the
description that the exporter stores in the file's metadata (key ``"worldflux"``; the same JSON
is written next to the file as ``FILE.json``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from worldflux.core.errors import CheckpointError, ConfigError

__all__ = ["METADATA_KEY", "OnnxDynamics", "OnnxMPCPolicy", "colored_noise", "read_metadata",
           "require_onnxruntime", "sample_policy_noise"]

METADATA_KEY = "worldflux"
"""Key of the JSON description in the ONNX model's ``metadata_props``."""


def require_onnxruntime():
    """Import onnxruntime or raise an ImportError naming the extra to install."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError("running exported ONNX files needs onnxruntime "
                          f"({exc}); install it with: pip install worldflux[onnx]") from None
    return onnxruntime


def _session(path: Path, threads: int | None):
    ort = require_onnxruntime()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such ONNX file")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise CheckpointError(f"{path}: onnxruntime cannot load it ({exc})") from None


def read_metadata(path: str | os.PathLike, session: Any = None) -> dict[str, Any]:
    """The exporter's description of ``path``: from the model's metadata, else ``FILE.json``."""
    path = Path(path)
    text = None
    if session is not None:
        text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if text is None:
        sidecar = Path(str(path) + ".json")
        if not sidecar.is_file():
            raise CheckpointError(f"{path}: no worldflux metadata in the file and no {sidecar}; "
                                  "was it written by `worldflux export`?")
        text = sidecar.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: worldflux metadata is not valid JSON ({exc})") from None


def colored_noise(beta: float, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Unit-variance noise ``[N, H, A]`` whose spectrum along ``H`` falls as ``1 / f^beta``.

    The numpy twin of :func:`worldflux.planners.noise.colored_noise` (``beta = 0``: white).
    """
    N, H, A = shape
    if beta == 0 or H < 2:
        return rng.standard_normal(shape, dtype=np.float32)
    freqs = np.fft.rfftfreq(H)
    freqs[0] = 1.0 / H
    scale = freqs ** (-beta / 2.0)
    real = rng.standard_normal((N, A, freqs.shape[0]))
    imag = rng.standard_normal((N, A, freqs.shape[0]))
    imag[..., 0] = 0
    if H % 2 == 0:
        imag[..., -1] = 0
    signal = np.fft.irfft((real + 1j * imag) * scale, n=H, axis=-1)
    weights = np.full_like(scale, 4.0)
    weights[0] = 1.0
    if H % 2 == 0:
        weights[-1] = 1.0
    sigma = np.sqrt((weights * scale ** 2).sum()) / H
    return np.ascontiguousarray((signal / sigma).transpose(0, 2, 1), dtype=np.float32)


def sample_policy_noise(layout: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every random input of an exported MPC decision, drawn with ``rng``.

    Args:
        layout: the ``"layout"`` entry of the export metadata
            (:meth:`worldflux.export.pets.PolicyLayout.to_dict`).
    Returns:
        ``sample_noise`` and, as the layout needs them, ``particle_noise``, ``member_noise``
        (uniform in [0, 1)) and ``tail_noise``, all float32.
    """
    It, H, A = layout["iterations"], layout["horizon"], layout["action_dim"]
    E, T = layout["ensemble_size"], layout["target_dim"]
    P, M = max(layout["populations"]), max(layout["columns"])
    beta = float(layout.get("noise_beta", 0.0))
    feeds = {"sample_noise": colored_noise(beta, (It * P, H, A), rng).reshape(It, P, H, A)}
    if layout.get("stochastic", True):
        feeds["particle_noise"] = rng.standard_normal((It, H, E, M, T), dtype=np.float32)
    if layout["propagation"] == "ts1":
        feeds["member_noise"] = rng.random((It, H, E * M), dtype=np.float32)
    if layout["planner"] == "icem":
        feeds["tail_noise"] = rng.standard_normal((layout["keep"], A), dtype=np.float32)
    return feeds


class OnnxMPCPolicy:
    """A controller from an exported PETS policy file alone.

    Args:
        path: the ``.onnx`` file written by ``worldflux export RUN_DIR --onnx FILE``.
        seed: seeds the numpy generator of the planning noise.
        threads: onnxruntime intra-op threads (default: onnxruntime's choice).
    """

    def __init__(self, path: str | os.PathLike, *, seed: int | None = 0,
                 threads: int | None = None) -> None:
        self.path = Path(path)
        self.session = _session(self.path, threads)
        self.metadata = read_metadata(self.path, self.session)
        if self.metadata.get("kind") != "pets-policy":
            raise ConfigError(f"{self.path}: got an export of kind {self.metadata.get('kind')!r}, "
                              "expected 'pets-policy' (export it with --what policy)")
        self.layout = self.metadata["layout"]
        self.warm_start = bool(self.metadata["planner"].get("warm_start", True))
        A, H = self.layout["action_dim"], self.layout["horizon"]
        self.low = np.full(A, self.metadata["action_low"], np.float32)
        self.high = np.full(A, self.metadata["action_high"], np.float32)
        self.rng = np.random.default_rng(seed)
        self._centre = np.broadcast_to((self.low + self.high) / 2, (H, A)).astype(np.float32)
        self._inputs = [i.name for i in self.session.get_inputs()]
        self._outputs = [o.name for o in self.session.get_outputs()]
        self.last_value = float("nan")
        """Predicted return of the best sequence of the last decision."""
        self.reset()

    def reset(self) -> None:
        """Forget the warm start (call at every episode start)."""
        self.mean = self._centre.copy()
        self.elites = np.zeros((self.layout["keep"], self.layout["horizon"],
                                self.layout["action_dim"]), np.float32)
        self.elites_valid = False

    def act(self, obs: np.ndarray) -> np.ndarray:
        """One MPC decision from ``obs [D]``; returns the action ``[A]`` (float32)."""
        obs = np.asarray(obs, dtype=np.float32).reshape(-1)
        if obs.shape != (self.layout["obs_dim"],):
            raise ConfigError(f"obs: got shape {obs.shape}, expected ({self.layout['obs_dim']},)")
        feeds = {"obs": obs, "init_mean": self.mean, **sample_policy_noise(self.layout, self.rng)}
        if self.layout["planner"] == "icem":
            feeds["prev_elites"] = self.elites
            feeds["prev_elites_valid"] = np.asarray(
                1.0 if self.elites_valid and self.warm_start else 0.0, np.float32)
        out = dict(zip(self._outputs, self.session.run(
            self._outputs, {k: feeds[k] for k in self._inputs}), strict=True))
        self.mean = out["next_mean"]
        if "next_elites" in out:
            self.elites, self.elites_valid = out["next_elites"], True
        self.last_value = float(out["plan_value"])
        return np.clip(out["action"], self.low, self.high).astype(np.float32)


class OnnxDynamics:
    """An exported PETS ensemble one-step model.

    ``predict(obs [N, D], action [N, A])`` returns ``{"next_obs_mean": [E, N, D],
    "next_obs_logvar": [E, N, D], "reward": [E, N]}`` (``next_obs_logvar`` for stochastic
    members only, ``reward`` with a learned reward only).
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        self.path = Path(path)
        self.session = _session(self.path, threads)
        self.metadata = read_metadata(self.path, self.session)
        if self.metadata.get("kind") != "pets-dynamics":
            raise ConfigError(f"{self.path}: got an export of kind {self.metadata.get('kind')!r}, "
                              "expected 'pets-dynamics' (export it with --what dynamics)")
        self._outputs = [o.name for o in self.session.get_outputs()]

    def predict(self, obs: np.ndarray, action: np.ndarray) -> dict[str, np.ndarray]:
        obs = np.asarray(obs, dtype=np.float32)
        action = np.asarray(action, dtype=np.float32)
        if obs.ndim != 2 or action.ndim != 2 or obs.shape[0] != action.shape[0]:
            raise ConfigError(f"obs/action: got shapes {obs.shape}/{action.shape}, expected "
                              "[N, D] and [N, A] with the same N")
        values = self.session.run(self._outputs, {"obs": obs, "action": action})
        return dict(zip(self._outputs, values, strict=True))
