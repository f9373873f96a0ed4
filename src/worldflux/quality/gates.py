"""The four gates of ``worldflux verify``; each returns a :class:`GateResult`.

* ``finite_metrics``: every number in ``metrics.jsonl`` / ``eval.jsonl`` is finite (JSON
  ``null`` is how the logger writes NaN/inf, so it counts as non-finite); every parameter and
  buffer of the model is finite, and so is a forward pass (``encode``, ``decode``, ``rollout``)
  on random contract-valid inputs.
* ``save_load_parity``: ``save_pretrained`` then ``from_pretrained`` gives bit-identical
  outputs on the same inputs and random seed (max abs diff must be 0).
* ``loss_decrease``: a copy of the model trained for a short budget (replay episodes of the run
  when present, else synthetic contract data); the mean loss of the last 10 steps must be below
  that of the first 10 by a relative margin.
* ``seed_success``: the family's :meth:`~worldflux.core.model.WorldModel.smoke_task` over
  several seeds; at least 80% of the seeds must learn.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from worldflux.quality.report import GateResult
from worldflux.quality.smoke import LinearGaussianSystem, learning_rate, relative_decrease

__all__ = [
    "LOSS_MARGIN",
    "SEED_SUCCESS_RATE",
    "finite_metrics",
    "loss_decrease",
    "model_outputs",
    "save_load_parity",
    "scan_jsonl",
    "seed_success",
]

SEED_SUCCESS_RATE = 0.8
"""Share of smoke-task seeds that must learn."""
LOSS_MARGIN = 0.01
"""``loss_decrease`` passes when (first-10 mean - last-10 mean) / |first-10 mean| >= this."""
LOSS_STEPS = {True: 60, False: 300}
"""Training steps of ``loss_decrease``: quick form, full form."""
WINDOW = 10
"""Batches in the ``loss_decrease`` pool, and steps averaged at each end of its loss curve."""


# -- finite_metrics ------------------------------------------------------------------------------
def _walk(value: Any, key: str):
    """Yield ``(key, number_or_None)`` for every number or null inside a JSON value."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{key}[{i}]")


def scan_jsonl(path: Path) -> tuple[int, int, str | None]:
    """Check every number of a JSON-lines file: ``(numbers checked, bad count, first problem)``.

    A number is bad when it is NaN, inf or ``null``; a line that is not a JSON object is bad
    too. The first problem names the file, line, step and key.
    """
    checked, bad, first = 0, 0, None
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                record, problem = None, f"{path.name} line {number}: not valid JSON ({exc.msg})"
            else:
                problem = None if isinstance(record, dict) else (
                    f"{path.name} line {number}: got {type(record).__name__}, expected an object")
            if problem is not None:
                bad += 1
                first = first or problem
                continue
            for key, value in _walk(record, ""):
                checked += 1
                if value is None or not math.isfinite(value):
                    bad += 1
                    if first is None:
                        first = (f"{path.name} line {number} (step {record.get('step', '?')}): "
                                 f"'{key}' is {'null' if value is None else value}")
    return checked, bad, first


def _tensor_problems(named: dict[str, Tensor]) -> list[str]:
    return [name for name, t in named.items()
            if torch.is_floating_point(t) and not bool(torch.isfinite(t).all())]


def finite_metrics(model, run_dir: Path | None, *, seed: int = 0) -> GateResult:
    """Finite numbers in the run's log files (if a run) and in the model and its outputs."""
    bad, checked, problems, parts = 0, 0, [], []
    if run_dir is not None:
        for name, required in (("metrics.jsonl", True), ("eval.jsonl", False)):
            path = run_dir / name
            if not path.is_file():
                if required:
                    bad += 1
                    problems.append(f"{name}: missing (expected one JSON object per log call)")
                continue
            n, b, first = scan_jsonl(path)
            checked, bad = checked + n, bad + b
            parts.append(f"{n} numbers in {name}")
            if first:
                problems.append(first)
    if model is not None:
        tensors = dict(model.named_parameters())
        tensors.update(dict(model.named_buffers()))
        bad_tensors = _tensor_problems(tensors)
        parts.append(f"{len(tensors)} parameter/buffer tensors")
        if bad_tensors:
            problems.append(f"non-finite model tensor(s): {', '.join(bad_tensors[:3])}")
        outputs = model_outputs(model, seed=seed)
        bad_outputs = _tensor_problems(outputs)
        parts.append(f"{len(outputs)} forward outputs")
        if bad_outputs:
            problems.append(f"non-finite forward output(s): {', '.join(bad_outputs[:3])}")
        bad += len(bad_tensors) + len(bad_outputs)
    detail = "checked " + ", ".join(parts) if parts else "nothing to check"
    if problems:
        detail = f"{bad} non-finite; first: {problems[0]} ({detail})"
    return GateResult("finite_metrics", bad == 0, float(bad), 0.0, detail,
                      info={"numbers_checked": checked, "problems": problems[:10]})


# -- save_load_parity ----------------------------------------------------------------------------
def random_inputs(model, batch_size: int = 4, horizon: int = 5,
                  seed: int = 0) -> tuple[Tensor, Tensor]:
    """Contract-valid ``obs [B, *obs_shape]`` and ``actions [B, horizon, A]`` on the model's device."""
    batch = LinearGaussianSystem(model.io_contract(), seed=seed).batch(batch_size, horizon + 1)
    device = model.device
    return batch["obs"][:, 0].to(device), batch["actions"][:, 1:].to(device)


@torch.no_grad()
def model_outputs(model, *, seed: int = 0) -> dict[str, Tensor]:
    """``encode`` -> ``decode`` and ``rollout`` on :func:`random_inputs`, named and flattened.

    The torch RNG is seeded with ``seed`` first (and restored after), so two models with equal
    weights give equal outputs even when the family samples.
    """
    obs, actions = random_inputs(model, seed=seed)
    was_training = model.training
    model.eval()
    devices = [model.device] if model.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            state = model.encode(obs)
            out = {f"encode/{k}": v for k, v in state.tensors.items()}
            out.update({f"decode/{k}": v for k, v in model.decode(state).preds.items()})
            trajectory = model.rollout(state, actions)
    finally:
        model.train(was_training)
    out.update({f"rollout/states/{k}": v for k, v in trajectory.states.tensors.items()})
    out["rollout/rewards"] = trajectory.rewards
    if trajectory.continues is not None:
        out["rollout/continues"] = trajectory.continues
    out.update({f"rollout/preds/{k}": v for k, v in trajectory.preds.items()})
    return out


def _max_abs_diff(a: Tensor, b: Tensor) -> float:
    if a.shape != b.shape or a.dtype != b.dtype:
        return math.inf
    if not torch.is_floating_point(a):
        return float((a.long() - b.long()).abs().max()) if a.numel() else 0.0
    a, b = a.double(), b.double()
    diff = (a - b).abs()
    diff = torch.where(torch.isnan(a) & torch.isnan(b), torch.zeros_like(diff), diff)
    diff = torch.where(torch.isnan(diff) | (torch.isinf(a) & (a != b)),
                       torch.full_like(diff, math.inf), diff)
    return float(diff.max()) if diff.numel() else 0.0


def save_load_parity(model, *, seed: int = 0) -> GateResult:
    """Save, load back, and compare outputs and tensors bit for bit."""
    from worldflux.core.serialization import from_pretrained

    with tempfile.TemporaryDirectory(prefix="worldflux-verify-") as tmp:
        model.save_pretrained(tmp)
        loaded = from_pretrained(tmp, device=str(model.device))
    worst, where = 0.0, None
    expected, got = model_outputs(model, seed=seed), model_outputs(loaded, seed=seed)
    tensors_a = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    tensors_b = {**dict(loaded.named_parameters()), **dict(loaded.named_buffers())}
    pairs = [(f"output {k}", expected[k], got.get(k)) for k in expected]
    pairs += [(f"tensor {k}", tensors_a[k], tensors_b.get(k)) for k in tensors_a]
    missing = sorted(set(got) - set(expected)) + sorted(set(tensors_b) - set(tensors_a))
    for name, a, b in pairs:
        diff = math.inf if b is None else _max_abs_diff(a.detach(), b.detach())
        if diff > worst or (where is None and diff > 0):
            worst, where = diff, name
    if missing:
        worst, where = math.inf, f"extra after loading: {missing[0]}"
    detail = (f"{len(expected)} outputs and {len(tensors_a)} tensors compared after "
              "save_pretrained -> from_pretrained")
    if where is not None:
        detail = f"max abs diff {worst:.3g} at {where}; {detail}"
    else:
        detail = f"bit-identical: {detail}"
    return GateResult("save_load_parity", worst == 0.0, worst, 0.0, detail)


# -- loss_decrease -------------------------------------------------------------------------------
def _replay_batches(model, run_dir: Path | None, seed: int):
    """A batch sampler over ``RUN_DIR/replay`` that fits the contract, or ``(None, why not)``."""
    from worldflux.core.errors import DataError
    from worldflux.data import ReplayBuffer, to_torch

    if run_dir is None:
        return None, "no run directory"
    replay = run_dir / "replay"
    if not replay.is_dir() or not any(replay.glob("*.npz")):
        return None, f"no episode files in {replay}"
    contract = model.io_contract()
    try:
        buffer = ReplayBuffer.from_directory(replay, seed=seed)
    except DataError as exc:
        return None, f"replay unreadable ({exc})"
    if buffer.obs_shape != contract.observation.shape or buffer.action_dim != contract.action.dim:
        return None, (f"replay obs {buffer.obs_shape} / actions {buffer.action_dim} do not match "
                      f"the model's contract")
    extra = sorted(set(contract.batch_keys) - {"obs", "actions", "rewards", "terminated",
                                                 "truncated", "is_first"})
    if extra:
        return None, f"the model needs batch keys {extra} that replay files do not hold"
    seq_len = max(int(contract.min_sequence_length), 10)

    def sample(batch_size: int) -> dict[str, Tensor]:
        return to_torch(buffer.sample(batch_size, seq_len), model.device)

    try:
        sample(1)
    except DataError as exc:
        return None, f"replay episodes too short for T={seq_len} ({exc})"
    return sample, f"{buffer.num_episodes} replay episodes ({len(buffer)} rows) from {replay}"


def loss_decrease(model, run_dir: Path | None = None, *, quick: bool = True, seed: int = 0,
                  batch_size: int = 16, steps: int | None = None,
                  margin: float = LOSS_MARGIN) -> GateResult:
    """Train a copy of ``model`` for a short budget; the loss must fall by ``margin`` (relative).

    The copy cycles through a fixed pool of ``WINDOW`` batches (``steps`` is rounded up to a
    multiple of it), so the first and the last ``WINDOW`` steps see the same batches and their
    mean losses differ by what was learned, not by which batches were drawn.
    """
    steps = int(steps if steps is not None else LOSS_STEPS[quick])
    steps = max(2, -(-steps // WINDOW)) * WINDOW
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        sample, source = _replay_batches(model, run_dir, seed)
        if sample is None:
            system = LinearGaussianSystem(model.io_contract(), seed=seed)
            seq_len = max(int(model.io_contract().min_sequence_length), 10)
            why = source

            def sample(batch_size: int) -> dict[str, Tensor]:
                return {k: v.to(model.device) for k, v in system.batch(batch_size, seq_len).items()}

            source = f"synthetic linear-Gaussian contract data ({why})"
        pool = [sample(batch_size) for _ in range(WINDOW)]
        trainee = copy.deepcopy(model).train()
        optimizer = torch.optim.Adam(trainee.parameters(), lr=learning_rate(model))
        losses: list[float] = []
        for step in range(steps):
            out = trainee.loss(pool[step % WINDOW])
            value = float(out.loss.detach())
            losses.append(value)
            if not math.isfinite(value):
                return GateResult("loss_decrease", False, math.nan, margin,
                                  f"non-finite loss at step {step} ({source})",
                                  info={"losses_head": losses[:WINDOW], "source": source})
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
    first = sum(losses[:WINDOW]) / WINDOW
    last = sum(losses[-WINDOW:]) / WINDOW
    decrease = relative_decrease(first, last)
    passed = math.isfinite(decrease) and decrease >= margin
    detail = (f"{steps} steps on {source}: mean loss of the first {WINDOW} steps {first:.4g}, "
              f"of the last {WINDOW} {last:.4g}; relative decrease must be >= {margin}")
    return GateResult("loss_decrease", bool(passed), decrease, margin, detail,
                      info={"first": first, "last": last, "steps": steps, "source": source})


# -- seed_success --------------------------------------------------------------------------------
def seed_success(family_cls: type, seeds: int, *, quick: bool = True,
                 rate: float = SEED_SUCCESS_RATE) -> GateResult:
    """Run ``family_cls.smoke_task(seed, quick)`` for seeds ``0 .. seeds - 1``."""
    results: list[dict[str, Any]] = []
    for seed in range(int(seeds)):
        try:
            result = family_cls.smoke_task(seed, quick)
            row = {"seed": seed, "passed": bool(result.passed), "metric": float(result.metric),
                   "threshold": float(result.threshold), "description": str(result.description)}
        except Exception as exc:  # a crashing seed did not learn; say why
            row = {"seed": seed, "passed": False, "metric": math.nan, "threshold": math.nan,
                   "description": f"raised {type(exc).__name__}: {exc}"}
        results.append(row)
    passed = sum(r["passed"] for r in results)
    share = passed / len(results) if results else 0.0
    failed = [r for r in results if not r["passed"]]
    detail = f"{passed}/{len(results)} seeds learned (need >= {rate:.0%})"
    example = failed[0] if failed else (results[0] if results else None)
    if example is not None:
        label = "first failure" if failed else "seed 0"
        detail += f"; {label}: {example['description']}"
    return GateResult("seed_success", share >= rate, share, rate, detail,
                      info={"seeds": results})
