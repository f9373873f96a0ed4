"""A separate virtual environment for a peer library, so that its pins never touch ours."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / ".peer-venvs"

# mbrl 0.2.0 pins hydra-core 1.0 / omegaconf 2.0, which fail on Python 3.11; the newer
# releases below work with its code (agent built with _recursive_=False).
PEERS = {
    # Install steps in order: torch first (our local CPU wheel), the peer, then overrides of
    # the peer's own pins (pip reports the conflict and installs them).
    "mbrl": [["torch==2.13.0", "numpy"], ["mbrl==0.2.0"], ["hydra-core==1.3.2", "omegaconf==2.3.0"]],
    # twisterl: Rust environments and collection, PPO / AlphaZero updates in torch.
    "twisterl": [["torch==2.13.0", "numpy"], ["twisterl==0.5.1"]],
}


def peer_python(name: str) -> Path:
    """Path of the peer venv's python, creating and filling the venv on first use."""
    venv = ROOT / name
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        for step in PEERS[name]:
            subprocess.run([str(python), "-m", "pip", "install", "-q", *step], check=True)
        marker.touch()
    return python
