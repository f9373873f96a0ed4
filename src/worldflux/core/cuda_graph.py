"""Replaying a step as one CUDA graph instead of hundreds of kernel launches.

Small-batch model-based RL (a TD-MPC2 update, an MPPI decision) is a few hundred tiny kernels
launched one by one from Python; on a GPU the launches, not the arithmetic, set the time.
:class:`CUDAGraphStep` records such a step once and replays it with a single launch, the way
the official TD-MPC2 release does through ``torch.compile(mode="reduce-overhead")``, but by
explicit capture: no compiler, no graph breaks, and every replay does the same work as the
eager function.

What the captured function may do (the usual CUDA-graph rules):

* read its inputs only from the keyword tensors it is called with (they are copied into
  static buffers before each replay) and from module state (parameters, buffers, optimiser
  state) that keeps its storage;
* draw random numbers only from the default CUDA generator (``generator=None``): the graph
  advances its Philox offset at every replay, so each replay draws fresh numbers;
* never synchronise with the host: no ``.item()``, ``float(t)``, ``bool(t)``, ``torch.tensor``
  of host data, data-dependent shapes;
* step optimisers built with ``capturable=True`` (or ``fused=True``).

The first ``warmup`` calls run eagerly on a side stream (lazy state such as optimiser moments
and cuBLAS workspaces is created there), the next call captures and replays, later calls
replay. Every call therefore performs exactly one real step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from worldflux.core.errors import ConfigError

Outputs = dict[str, Tensor]


class CUDAGraphStep:
    """``fn(**inputs) -> {name: tensor}`` replayed as a CUDA graph.

    Args:
        fn: the step; called with the static input tensors as keywords; returns a dict of
            tensors (the outputs the graph writes).
        warmup: eager calls before the capture (PyTorch recommends a few, on a side stream).
        before_capture: called right before the capture, e.g. to set gradients to ``None`` so
            that ``backward`` allocates them from the graph's memory pool.

    The returned tensors are the graph's static outputs: the next call overwrites them, so
    clone what must outlive it.
    """

    def __init__(self, fn: Callable[..., Outputs], *, warmup: int = 3,
                 before_capture: Callable[[], None] | None = None) -> None:
        if warmup < 1:
            raise ConfigError(f"CUDAGraphStep.warmup: got {warmup}, expected >= 1")
        self.fn = fn
        self.warmup = int(warmup)
        self.before_capture = before_capture
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self._inputs: dict[str, Tensor] | None = None
        self._outputs: Outputs | None = None

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def _load(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if self._inputs is None:
            self._inputs = {k: v.detach().clone() for k, v in inputs.items()}
            for key, value in self._inputs.items():
                if value.device.type != "cuda":
                    raise ConfigError(f"CUDAGraphStep input {key!r}: got a tensor on "
                                      f"{value.device}, expected a CUDA tensor")
            return self._inputs
        if inputs.keys() != self._inputs.keys():
            raise ConfigError(f"CUDAGraphStep inputs: got {sorted(inputs)}, expected "
                              f"{sorted(self._inputs)} (the names of the first call)")
        for key, value in inputs.items():
            static = self._inputs[key]
            if value.shape != static.shape or value.dtype != static.dtype:
                raise ConfigError(f"CUDAGraphStep input {key!r}: got {tuple(value.shape)} "
                                  f"{value.dtype}, expected {tuple(static.shape)} {static.dtype} "
                                  "(a captured graph replays fixed shapes)")
            static.copy_(value, non_blocking=True)
        return self._inputs

    def __call__(self, **inputs: Tensor) -> Outputs:
        static = self._load(inputs)
        if self.graph is not None:
            self.graph.replay()
            assert self._outputs is not None
            return self._outputs
        if self.calls < self.warmup:
            self.calls += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.fn(**static)
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self.before_capture is not None:
            self.before_capture()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._outputs = self.fn(**static)
        self.graph = graph
        self.calls += 1
        graph.replay()  # the capture only recorded the step; run it
        return self._outputs


def graphs_available(device: torch.device) -> bool:
    """True when ``device`` is a CUDA device (graphs need one)."""
    return device.type == "cuda" and torch.cuda.is_available()
