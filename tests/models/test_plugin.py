"""The example plugin (examples/plugins/minimal_plugin) installs and registers by entry point.

The package is pip-installed into the current environment when missing or out of date; the
checks then run in fresh interpreters, so the family is found through the entry point alone.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("plugin")

PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "plugins" / "minimal_plugin"
DISTRIBUTION = "worldflux-minimal-plugin"


def _installed_and_current() -> bool:
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return False
    sources = sorted((PLUGIN / "src").rglob("*.py"))
    installed = {str(f): f for f in dist.files or [] if str(f).endswith(".py")}
    for source in sources:
        relative = source.relative_to(PLUGIN / "src").as_posix()
        if relative not in installed:
            return False  # an editable install or a renamed module: reinstall to be sure
        if Path(dist.locate_file(installed[relative])).read_bytes() != source.read_bytes():
            return False
    return True


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory) -> None:
    if not _installed_and_current():
        # Built from a private copy: pip builds in the source tree (build/), and two
        # interpreters building the same tree at once collide there ("File exists").
        source = tmp_path_factory.mktemp("plugin") / PLUGIN.name
        shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps",
                        "--no-build-isolation", "-q", str(source)], check=True)
    assert _installed_and_current()


def run_fresh(code: str, cwd: Path) -> dict:
    """Run ``code`` in a new interpreter (outside the repository) and parse its last JSON line."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_entry_point_is_declared(installed_plugin):
    points = importlib.metadata.entry_points(group="worldflux.models")
    values = {ep.name: ep.value for ep in points}
    assert values.get("linear-gaussian") == "worldflux_minimal_plugin"


def test_family_is_found_by_name_in_a_fresh_process(installed_plugin, tmp_path):
    out = run_fresh(f"""
        import json, sys
        import torch
        import worldflux

        loaded_early = "worldflux_minimal_plugin" in sys.modules
        models = {{m["name"]: m for m in worldflux.list_models()}}
        model = worldflux.create_world_model("linear-gaussian", obs_shape=(3,), action_dim=2,
                                             device="cpu", init_scale=0.1)
        alias = worldflux.create_world_model("linear", obs_shape=(3,), action_dim=2, device="cpu")
        trajectory = model.rollout(model.encode(torch.zeros(4, 3)), torch.zeros(4, 5, 2))
        model.save_pretrained({str(tmp_path / "saved")!r})
        print(json.dumps({{
            "loaded_early": loaded_early,
            "entry": models.get("linear-gaussian"),
            "pets": "pets" in models,
            "class": type(model).__name__,
            "family": model.family,
            "alias_family": alias.family,
            "init_scale": model.config.init_scale,
            "rewards_shape": list(trajectory.rewards.shape),
        }}))
    """, tmp_path)
    assert out["loaded_early"] is False  # discovered lazily, through the entry point
    assert out["entry"] == {"name": "linear-gaussian", "tier": "skeleton",
                            "description": "Linear deterministic dynamics (example plugin)",
                            "aliases": ["linear"], "source": "worldflux_minimal_plugin.model"}
    assert out["pets"] is True
    assert out["class"] == "LinearGaussianModel"
    assert out["family"] == out["alias_family"] == "linear-gaussian"
    assert out["init_scale"] == 0.1
    assert out["rewards_shape"] == [4, 5]

    loaded = run_fresh(f"""
        import json
        import worldflux

        model = worldflux.from_pretrained({str(tmp_path / "saved")!r}, device="cpu")
        print(json.dumps({{"family": model.family, "init_scale": model.config.init_scale}}))
    """, tmp_path)
    assert loaded == {"family": "linear-gaussian", "init_scale": 0.1}


def test_unknown_option_of_the_plugin_family_suggests_the_field(installed_plugin, tmp_path):
    out = run_fresh("""
        import json
        import worldflux
        from worldflux.core import ConfigError

        try:
            worldflux.create_world_model("linear-gaussian", obs_shape=(3,), action_dim=1,
                                         init_scal=1.0)
        except ConfigError as exc:
            print(json.dumps({"error": str(exc)}))
    """, tmp_path)
    assert "init_scal" in out["error"] and "Did you mean: init_scale" in out["error"]
