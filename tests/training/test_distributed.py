"""Data-parallel training under torchrun: 2 CPU processes with gloo, and the one-process paths."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from worldflux.core.distributed import DistContext, init_distributed

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_two_cpu_processes_keep_identical_replicas_and_learn(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "worldflux", "train", "pets", "--env", "Pendulum-v1", "--steps", "400",
           "--seed", "0", "--out", str(out), "--no-progress",
           "--set", "planner.population=30", "--set", "planner.elites=5",
           "--set", "planner.iterations=2",
           "--set", "train.eval_episodes=1", "--set", "train.tensorboard=false",
           "--set", "train.log_every=200"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 and "terminate called without an active exception" in proc.stderr:
        # Seen once in 6 runs of the suite on a loaded 2-core machine (rank 1 aborted by
        # std::terminate inside the gloo/torch runtime, stderr had no Python traceback): one
        # retry on a fresh port and directory, so that the assertions below still decide.
        out = tmp_path / "run_retry"
        cmd[cmd.index("--master_port") + 1] = str(_free_port())
        cmd[cmd.index("--out") + 1] = str(out)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["distributed"]["world_size"] == 2
    assert summary["distributed"]["rounds"] == 2  # one training round per episode end
    assert summary["distributed"]["replica_max_diff"] == 0.0  # DDP kept the replicas identical
    # One rank collected and wrote: one checkpoint, one line per episode, one summary.
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_00000400"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum("episode/return" in r for r in records) == 2
    rounds = [r for r in records if "train/model/nll_first_epoch" in r]
    assert rounds, "no training round was logged"
    for r in rounds:
        assert r["train/dist/world_size"] == 2
        assert r["train/dist/replica_max_diff"] == 0.0
        # the loss fell within each round (averaged over the rounds between two log points)
        assert r["train/model/nll_last_epoch"] < r["train/model/nll_first_epoch"] - 1.0


def test_one_process_context_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_distributed(torch.device("cpu"))
    assert not ctx.enabled and ctx.is_main and ctx.world_size == 1
    t = torch.arange(3.0)
    assert torch.equal(ctx.all_reduce(t.clone(), "mean"), t)
    assert ctx.all_true(False) is False and ctx.all_true(True) is True
    module = torch.nn.Linear(2, 2)
    assert ctx.wrap(module) is module
    assert ctx.replica_difference(module) == 0.0


def test_world_size_without_torchrun_variables_is_a_clear_error(monkeypatch):
    from worldflux.core.errors import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "2")
    for key in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError, match="torchrun"):
        init_distributed(torch.device("cpu"))


def test_agent_without_distributed_support_refuses_several_ranks():
    from worldflux.agents import build_agent
    from worldflux.core.errors import ConfigError
    from worldflux.core.spec import ActionSpec, ObservationSpec

    agent = build_agent("random", ObservationSpec((3,)), ActionSpec(1), device=torch.device("cpu"))
    with pytest.raises(ConfigError, match="does not support distributed"):
        agent.configure_training(dist=DistContext(rank=0, world_size=2))
