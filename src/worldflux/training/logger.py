"""Metric logging: one :class:`Logger` fanning out to backends (JSON lines, TensorBoard).

``metrics.jsonl`` is always written, one JSON object per ``log`` call::

    {"step": 1000, "wall_time": 1716200000.1, "elapsed": 12.3, "episode/return": -1200.5}

``step`` counts agent steps, ``wall_time`` is Unix time and ``elapsed`` seconds since the logger
was opened. Non-finite values are written as ``null`` (JSON has no NaN).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from worldflux.core.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["JsonlBackend", "LogBackend", "Logger", "TensorBoardBackend"]


class LogBackend(Protocol):
    """Where metrics go. ``write`` receives plain floats keyed by metric name."""

    def write(self, step: int, wall_time: float, elapsed: float,
              metrics: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


class JsonlBackend:
    """Appends one JSON object per call to ``path`` (flushed at once, so a crash loses nothing)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, step: int, wall_time: float, elapsed: float,
              metrics: Mapping[str, float]) -> None:
        record: dict[str, Any] = {"step": int(step), "wall_time": round(wall_time, 3),
                                  "elapsed": round(elapsed, 3)}
        record.update({k: (v if math.isfinite(v) else None) for k, v in metrics.items()})
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class TensorBoardBackend:
    """Scalars into a TensorBoard event file under ``log_dir`` (``RUN_DIR/tb``).

    ``purge_step``: a resumed run passes its first new step, so TensorBoard drops the events
    at or after it that the interrupted run wrote past its checkpoint.
    """

    def __init__(self, log_dir: str | os.PathLike, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # tensorboard is a dependency, but may be stripped out
            raise ConfigError(
                "TensorBoard logging needs the `tensorboard` package (pip install tensorboard); "
                "or turn it off with --set train.tensorboard=false"
            ) from exc
        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def write(self, step: int, wall_time: float, elapsed: float,
              metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self._writer.add_scalar(key, value, global_step=int(step), walltime=wall_time)

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()


class Logger:
    """Sends scalar metrics to every backend; use as a context manager or call :meth:`close`.

    Example::

        with Logger.for_run(run_dir) as log:
            log.log({"episode/return": 12.5}, step=200)
    """

    def __init__(self, backends: list[LogBackend], *, elapsed_offset: float = 0.0) -> None:
        self.backends = list(backends)
        self._start = time.time() - float(elapsed_offset)
        self._closed = False

    @classmethod
    def for_run(cls, run_dir: str | os.PathLike, *, tensorboard: bool = True,
                elapsed_offset: float = 0.0, purge_step: int | None = None) -> Logger:
        """``RUN_DIR/metrics.jsonl`` and, when ``tensorboard``, events in ``RUN_DIR/tb``.

        A resumed run passes ``elapsed_offset`` (seconds the run had already run) so
        ``elapsed`` continues, and ``purge_step`` (see :class:`TensorBoardBackend`).
        """
        run_dir = Path(run_dir)
        backends: list[LogBackend] = [JsonlBackend(run_dir / "metrics.jsonl")]
        if tensorboard:
            backends.append(TensorBoardBackend(run_dir / "tb", purge_step=purge_step))
        return cls(backends, elapsed_offset=elapsed_offset)

    @property
    def elapsed(self) -> float:
        """Seconds since the logger was opened (plus ``elapsed_offset``)."""
        return time.time() - self._start

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Write ``metrics`` (numbers, numpy scalars or 0-d tensors) at agent step ``step``."""
        if self._closed:
            raise RuntimeError("Logger.log: the logger is closed")
        values = {key: _to_float(key, value) for key, value in metrics.items()}
        if not values:
            return
        now = time.time()
        for backend in self.backends:
            backend.write(step, now, now - self._start, values)

    def close(self) -> None:
        """Flush and close every backend (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for backend in self.backends:
            try:
                backend.close()
            except Exception:  # one failing backend must not keep the others open
                logger.exception("closing log backend %s failed", type(backend).__name__)

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _to_float(key: str, value: Any) -> float:
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"metric '{key}': got {type(value).__name__} {value!r}, expected a number"
        ) from exc
