"""Shared test settings: one intra-op thread per worker (the suite runs with ``-n 2`` on two
cores) and the path of the example plugin."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
MINIMAL_PLUGIN = REPO_ROOT / "examples" / "plugins" / "minimal_plugin"


@pytest.fixture
def minimal_plugin_path() -> Path:
    """Root of the installable example plugin (``examples/plugins/minimal_plugin``)."""
    return MINIMAL_PLUGIN
