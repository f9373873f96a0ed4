"""Weights & Biases backend in offline mode: what was logged is read back from the run file.

The ``.wandb`` file of an offline run is a LevelDB-style log (32 KiB blocks of chunks with a
7-byte header: CRC32, length, type) of ``wandb_internal_pb2.Record`` protobufs, after a 7-byte
file header ``:W&B`` + magic + version. :func:`read_records` decodes it with wandb's own protos.
``run.finish()`` returns once W&B's service has the exit record; the service writes the file
moments later, so :func:`run_files` waits until every file ends with that record.
"""

from __future__ import annotations

import json
import math
import struct
import sys
import time
from pathlib import Path

import pytest

wandb = pytest.importorskip("wandb")

from worldflux.core.errors import ConfigError  # noqa: E402
from worldflux.training.logger import Logger, WandbBackend  # noqa: E402

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list:
    """Every ``Record`` protobuf of an offline ``run-<id>.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B run file (header {data[:7]!r})"
    records, chunks, pos = [], [], HEADER
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # the rest of a block too small for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 or pos + HEADER + length > len(data):  # end, or a chunk still being written
            break
        chunks.append(data[pos + HEADER:pos + HEADER + length])
        pos += HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            records.append(record)
            chunks = []
    return records


def history_rows(path: Path) -> list[dict]:
    rows = []
    for record in read_records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append({(item.key or "/".join(item.nested_key)): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def run_record(path: Path):
    (record,) = [r.run for r in read_records(path) if r.WhichOneof("record_type") == "run"]
    return record


def _finished(path: Path) -> bool:
    records = read_records(path)
    return bool(records) and records[-1].WhichOneof("record_type") == "exit"


def run_files(run_dir: Path, timeout: float = 15.0) -> list[Path]:
    """The offline run files under ``RUN_DIR/wandb``, once each holds its exit record."""
    deadline = time.monotonic() + timeout
    while True:
        files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
        if (files and all(_finished(f) for f in files)) or time.monotonic() > deadline:
            return files
        time.sleep(0.05)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    return tmp_path / "run"


def test_scalars_reach_the_offline_run_file(offline):
    run_dir = offline
    config = {"agent": "pets", "train": {"env": "Pendulum-v1", "steps": 400}}
    with Logger.for_run(run_dir, tensorboard=False, wandb=True, wandb_project="wf-test",
                        config=config) as log:
        log.log({"episode/return": -1200.5, "episode/length": 200}, step=200)
        log.log({"train/loss": 0.25, "bad": float("nan")}, step=200)
        log.log({"episode/return": -950.0, "episode/length": 200}, step=400)

    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    (path,) = run_files(run_dir)
    assert path.name == f"run-{run_id}.wandb"
    run = run_record(path)
    assert run.run_id == run_id and run.project == "wf-test"
    saved_config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert saved_config["agent"] == "pets" and saved_config["train"]["steps"] == 400

    rows = history_rows(path)
    assert [row["step"] for row in rows] == [200, 200, 400]
    assert rows[0]["episode/return"] == -1200.5 and rows[0]["episode/length"] == 200
    assert rows[1]["train/loss"] == 0.25 and math.isnan(rows[1]["bad"])
    assert rows[2]["episode/return"] == -950.0
    # The metrics.jsonl backend still gets the same values.
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [200, 200, 400]


def test_every_metric_is_plotted_against_the_agent_step(offline):
    log = Logger.for_run(offline, tensorboard=False, wandb=True)
    log.log({"x": 1.0}, step=5)
    log.close()
    log.close()  # idempotent
    (path,) = run_files(offline)
    assert run_record(path).project == "worldflux"  # the default project
    metrics = [r.metric for r in read_records(path) if r.WhichOneof("record_type") == "metric"]
    assert any(m.glob_name == "*" and m.step_metric == "step" for m in metrics)


def test_a_resumed_run_continues_the_same_wandb_run(offline):
    with Logger.for_run(offline, tensorboard=False, wandb=True) as log:
        log.log({"episode/return": 1.0}, step=100)
    first_id = (offline / "wandb_run_id.txt").read_text().strip()
    with Logger.for_run(offline, tensorboard=False, wandb=True) as log:
        log.log({"episode/return": 2.0}, step=200)
    assert (offline / "wandb_run_id.txt").read_text().strip() == first_id

    files = run_files(offline)  # one offline run folder per session, same W&B run id
    assert len(files) == 2
    assert {run_record(f).run_id for f in files} == {first_id}
    values = [row["episode/return"] for f in files for row in history_rows(f)]
    assert sorted(values) == [1.0, 2.0]


def test_explicit_resume_id_and_mode(offline):
    backend = WandbBackend(offline, "wf-test", {"a": 1}, name="nice-name", mode="offline",
                           resume_id="abc12345")
    backend.write(7, 0.0, 0.0, {"loss": 3.5})
    backend.close()
    assert (offline / "wandb_run_id.txt").read_text().strip() == "abc12345"
    (path,) = run_files(offline)
    assert run_record(path).display_name == "nice-name"
    assert history_rows(path)[0]["loss"] == 3.5


def test_bad_mode_and_project_are_config_errors(offline):
    with pytest.raises(ConfigError, match="wandb mode: got 'offlien'"):
        WandbBackend(offline, "p", mode="offlien")
    with pytest.raises(ConfigError, match="wandb project: got ''"):
        WandbBackend(offline, "")


def test_missing_wandb_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError, match=r"worldflux\[wandb\]"):
        Logger.for_run(tmp_path, tensorboard=False, wandb=True)
    # Nothing half-open is left behind: the JSON lines file was closed again.
    assert (tmp_path / "metrics.jsonl").read_text() == ""
