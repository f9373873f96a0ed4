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
from collections.abc import Callable
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


def serve(handle: Callable[[dict], dict]) -> None:
    """The worker's loop: answer each request line on stdin with ``handle(request)``."""
    for line in sys.stdin:
        print(json.dumps(handle(json.loads(line))), flush=True)
