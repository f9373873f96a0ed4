"""Data-parallel training across processes with PyTorch's own engine (``torch.distributed``).

Launch any training command under ``torchrun``::

    torchrun --nproc_per_node 2 -m worldflux train pets --env Pendulum-v1 --steps 3000

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_distributed` reads them and joins the process group (NCCL on GPUs, gloo on CPUs).
Without them (a plain ``python`` run) it returns a single-process context and nothing changes.

Division of labour in worldflux's loop: rank 0 collects experience, logs, evaluates and writes
every file (checkpoints are written once); at each training round it sends the round's data to
the other ranks, and every rank then trains its replica wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel` on its own shard of each minibatch, so
gradients are averaged and the replicas stay identical. Before a round, rank 0's model,
optimiser and scheduler state is broadcast, so a resumed run's workers start in step.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from worldflux.core.errors import ConfigError

__all__ = ["DistContext", "init_distributed", "launched_by_torchrun"]


def launched_by_torchrun() -> bool:
    """True when ``WORLD_SIZE`` (set by torchrun) asks for more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class DistContext:
    """Rank and world size of this process; collective helpers that are no-ops on one process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives (all ranks must call them in the same order) -------------------------
    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Rank ``src``'s ``tensor`` on every rank (in place; same shape and dtype everywhere)."""
        if self.enabled:
            moved = tensor.to(self.device)
            dist.broadcast(moved, src)
            if moved is not tensor:
                tensor.copy_(moved)
        return tensor

    def broadcast_arrays(self, tensors: dict[str, torch.Tensor] | None,
                         names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Float32 tensors from rank 0 (``tensors``) to every rank (others pass None).

        Shapes travel first as a small int64 header, so receivers need not know them.
        """
        if not self.enabled:
            assert tensors is not None
            return tensors
        max_dims = 8
        header = torch.zeros(len(names), max_dims + 1, dtype=torch.int64)
        if self.is_main:
            assert tensors is not None
            for i, name in enumerate(names):
                shape = tensors[name].shape
                header[i, 0] = len(shape)
                header[i, 1:1 + len(shape)] = torch.tensor(shape)
        self.broadcast(header)
        out = {}
        for i, name in enumerate(names):
            shape = tuple(int(s) for s in header[i, 1:1 + int(header[i, 0])])
            value = (tensors[name].detach().float().contiguous() if self.is_main
                     else torch.empty(shape, dtype=torch.float32))
            out[name] = self.broadcast(value)
        return out

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """In-place all-reduce with ``op`` in ``sum | mean | min | max``."""
        if not self.enabled:
            return tensor
        ops = {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN,
               "max": dist.ReduceOp.MAX}
        moved = tensor.to(self.device)
        dist.all_reduce(moved, ops[op])
        if op == "mean":
            moved /= self.world_size
        if moved is not tensor:
            tensor.copy_(moved)
        return tensor

    def all_true(self, flag: bool) -> bool:
        """True on every rank iff ``flag`` is true on every rank."""
        if not self.enabled:
            return flag
        return bool(self.all_reduce(torch.tensor([float(flag)]), "min").item() > 0)

    def sync_state(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                   scheduler=None) -> None:
        """Make every rank's module (parameters and buffers), optimiser state and scheduler step
        equal to rank 0's."""
        if not self.enabled:
            return
        for tensor in [*module.parameters(), *module.buffers()]:
            self.broadcast(tensor.data)
        if optimizer is not None:
            has_state = torch.tensor([float(bool(optimizer.state))])
            self.broadcast(has_state)
            if has_state.item() and not optimizer.state:
                _materialise_optimizer_state(optimizer)
            for group in optimizer.param_groups:
                for param in group["params"]:
                    for key in sorted(optimizer.state.get(param, {})):
                        value = optimizer.state[param][key]
                        if torch.is_tensor(value):
                            self.broadcast(value)
        if scheduler is not None:
            step = self.broadcast(torch.tensor([scheduler.last_epoch], dtype=torch.int64))
            if int(step.item()) != scheduler.last_epoch:
                scheduler.last_epoch = int(step.item())
                for group, lr in zip(optimizer.param_groups, scheduler.get_lr(), strict=True):
                    group["lr"] = lr

    def replica_difference(self, module: torch.nn.Module) -> float:
        """Largest absolute difference of any parameter between ranks (0.0 = identical)."""
        if not self.enabled:
            return 0.0
        flat = torch.cat([p.detach().float().reshape(-1) for p in module.parameters()])
        high, low = flat.clone(), flat.clone()
        self.all_reduce(high, "max")
        self.all_reduce(low, "min")
        return float((high - low).abs().max())

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` in :class:`~torch.nn.parallel.DistributedDataParallel` (unchanged on one
        process)."""
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _materialise_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Create the optimiser's state tensors (a zero-gradient step whose parameter changes are
    undone), so they can be overwritten by rank 0's."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    with torch.no_grad():
        for p, value in zip(params, saved, strict=True):
            p.copy_(value)
            p.grad = None


def init_distributed(device: torch.device, timeout_s: float = 1800.0) -> DistContext:
    """Join the process group torchrun describes (or return a one-process context).

    On CUDA each rank uses ``cuda:LOCAL_RANK`` with NCCL; otherwise gloo on the CPU.

    Raises:
        ConfigError: ``WORLD_SIZE`` > 1 but ``RANK`` or ``MASTER_ADDR`` is missing (not
            launched by torchrun), or more ranks per node than GPUs.
    """
    if not launched_by_torchrun():
        return DistContext(device=device)
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(f"distributed: WORLD_SIZE={os.environ['WORLD_SIZE']} but {missing} "
                          "are not set; launch with torchrun --nproc_per_node N -m worldflux ...")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"distributed: LOCAL_RANK {local_rank} but only "
                              f"{torch.cuda.device_count()} GPUs; use --nproc_per_node <= GPUs")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s))
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, backend=backend,
                       device=device)
