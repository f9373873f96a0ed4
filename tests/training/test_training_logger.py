"""Logger: JSON lines always, TensorBoard events when asked, closable."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from worldflux.training.logger import Logger


def test_jsonl_lines_hold_step_wall_time_and_metrics(tmp_path):
    with Logger.for_run(tmp_path, tensorboard=False) as log:
        log.log({"episode/return": -12.5, "count": np.int64(3)}, step=200)
        log.log({"loss": torch.tensor(0.5), "bad": float("nan")}, step=400)
        log.log({}, step=500)  # nothing to write
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    assert lines[0]["step"] == 200 and lines[0]["episode/return"] == -12.5 and lines[0]["count"] == 3
    assert lines[0]["wall_time"] > 1e9 and lines[0]["elapsed"] >= 0
    assert lines[1]["loss"] == 0.5 and lines[1]["bad"] is None
    assert not (tmp_path / "tb").exists()
    with pytest.raises(RuntimeError, match="closed"):
        log.log({"x": 1.0}, step=1)


def test_tensorboard_events_are_written(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = Logger.for_run(tmp_path)
    for step in (1, 2, 3):
        log.log({"episode/return": float(step) * 2}, step=step)
    log.close()
    log.close()  # idempotent
    accumulator = EventAccumulator(str(tmp_path / "tb"))
    accumulator.Reload()
    events = accumulator.Scalars("episode/return")
    assert [e.step for e in events] == [1, 2, 3]
    assert [e.value for e in events] == [2.0, 4.0, 6.0]


def test_non_numeric_metric_names_the_key(tmp_path):
    with Logger.for_run(tmp_path, tensorboard=False) as log, pytest.raises(TypeError, match="'note'"):
        log.log({"note": "hello"}, step=1)
