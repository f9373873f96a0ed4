"""Two code versions timed in one run: the ``src/`` of a git revision (or the working tree under
other settings) against the working tree, each in a worker process of its own.

A speed benchmark runs ``python -m benchmarks.NAME --worker ...`` twice, once with the old
``src/`` first on ``PYTHONPATH``, and sends each worker timing requests, one JSON object a line,
alternating which version goes first, so that the ratio old / new is taken under the same machine
load (``dreamerv3_speed --compare``, ``tdmpc2_speed --compare``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def export_src(rev: str, into: str | Path) -> Path:
    """``src/`` of git revision ``rev`` extracted under ``into`` (``git archive``)."""
    archive = subprocess.run(["git", "archive", rev, "src"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return Path(into) / "src"


class Worker:
    """A worker process ``python -m MODULE --worker ARGS`` running the code under ``src``."""

    def __init__(self, module: str, src: Path, args: list[str]) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), str(ROOT)]))
        self.proc = subprocess.Popen([sys.executable, "-m", module, "--worker", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env, cwd=ROOT)

    def request(self, payload: dict) -> dict:
        """Send one request, wait for its answer."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(payload) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker exited with {self.proc.wait()}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait()


@contextmanager
def old_and_new(module: str, rev: str | None, old_args: list[str],
                new_args: list[str]) -> Iterator[dict[str, Worker]]:
    """Workers ``{"old", "new"}`` of ``module``: the ``src/`` of ``rev`` (None: the working tree,
    for an A/B of settings given in ``old_args``) and the working tree; closed on exit."""
    with tempfile.TemporaryDirectory() as tmp:
        old_src = ROOT / "src" if rev is None else export_src(rev, tmp)
        pair: dict[str, Worker] = {}
        try:
            # One at a time inside the try, so a worker that fails to start still closes the
            # one started before it.
            pair["old"] = Worker(module, old_src, old_args)
            pair["new"] = Worker(module, ROOT / "src", new_args)
            yield pair
        finally:
            for worker in pair.values():
                worker.close()


def interleave(pair: dict[str, Worker], cases: Sequence, rounds: int,
               request: Callable[[object], dict]) -> Iterator[tuple[int, object, str, dict]]:
    """``(round, case, version, answer)`` for ``rounds`` rounds: each round asks both versions
    ``request(case)`` for every case back to back, alternating which goes first."""
    names = list(pair)
    for r in range(rounds):
        for case in cases:
            for name in (names if r % 2 == 0 else names[::-1]):
                yield r, case, name, pair[name].request(request(case))


def serve(handle: Callable[[dict], dict]) -> None:
    """The worker's loop: answer each request line on stdin with ``handle(request)``."""
    for line in sys.stdin:
        print(json.dumps(handle(json.loads(line))), flush=True)
