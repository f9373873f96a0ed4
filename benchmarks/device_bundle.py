"""Pack what a lent GPU machine lacks for dm_control runs into one archive under 64 MiB.

The GPU machines lent to some sessions run Python 3.12 with torch, numpy, scipy, lxml, absl,
protobuf, rich, safetensors and tensorboard installed, but without gymnasium, MuJoCo,
dm_control or shimmy, and they reach no package index. Their wheels are 100+ MB, over what a
device call carries (64 MiB for the whole working tree). This script installs exactly the
versions of this repository's ``.venv`` for CPython 3.12 / manylinux x86-64 into a folder,
drops what our tasks never load (dm_control's locomotion and dog assets, MuJoCo's experimental
and Filament renderers, Windows DLLs, byte code), and writes ``.gpu/site.tar.xz`` (about
25 MB). ``.gpu/`` is listed in ``.git/info/exclude``, so it never enters git.

Usage, here::

    .venv/bin/python benchmarks/device_bundle.py          # writes .gpu/site.tar.xz
    .venv/bin/python benchmarks/device_bundle.py --check  # + imports dm_control under 3.12

then every device call names ``.gpu`` in ``carry`` and starts with::

    mkdir -p /tmp/site && tar -xJf .gpu/site.tar.xz -C /tmp/site &&
    export PYTHONPATH=/tmp/site:$PWD/src MUJOCO_GL=egl &&
    python3 -m benchmarks tdmpc2_dmc --device cuda ...

``benchmarks/device_session.sh`` wraps that prefix (``check``: the CUDA tests and
``tdmpc2_speed``; ``learn SECONDS ARGS``: a benchmark stopped in time, its logs packed into
``$OUT``; ``py SCRIPT``). Results come back through ``$OUT``: run the benchmark with ``--work $OUT/runs`` only if its
files stay under the device tool's limits (8 files), otherwise copy the ``eval.jsonl`` /
``metrics.jsonl`` / ``config.json`` of each seed into ``$OUT`` and rebuild the report here with
``--report --work DIR``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / ".gpu"
# Distributions the device image lacks (``/work/.library/device/KINDS.md`` lists what it has).
PACKAGES = ["gymnasium", "Farama-Notifications", "Shimmy", "dm_control", "dm-env", "dm-tree",
            "labmaze", "mujoco", "glfw", "PyOpenGL"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]
# Never loaded by the dm_control suite tasks we run (cartpole, reacher, walker, cheetah ...).
DROP = ["dm_control/locomotion", "dm_control/suite/dog_assets", "dm_control/blender",
        "dm_control/suite/all_domains.png", "mujoco/experimental", "OpenGL/DLLS"]
DROP_GLOBS = ["mujoco/_render_filament*", "**/__pycache__", "**/*.pyc"]
# What the device image already holds that the bundled packages import (for --check only).
CHECK_DEPS = ["numpy", "scipy", "absl-py", "lxml", "protobuf", "pyparsing", "requests", "tqdm",
              "etils", "typing-extensions", "cloudpickle", "attrs", "wrapt", "setuptools",
              "imageio", "pillow", "packaging"]


def _pins() -> list[str]:
    """``NAME==VERSION`` of every bundled package, as installed in this ``.venv``."""
    pins = []
    for name in PACKAGES:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError as exc:
            raise SystemExit(f"{name} is not installed in {sys.prefix}: run `make venv` first "
                             "(it installs the dmc extra)") from exc
    return pins


def build(site: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
           "--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:"]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run(cmd + _pins(), check=True)
    for rel in DROP:
        path = site / rel
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for pattern in DROP_GLOBS:
        for path in sorted(site.glob(pattern), reverse=True):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()


def pack(site: Path, archive: Path) -> None:
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_suffix(".partial")
    with tarfile.open(partial, "w:xz", preset=6) as tar:
        for path in sorted(site.iterdir()):
            tar.add(path, arcname=path.name)
    partial.replace(archive)


def exclude_from_git() -> None:
    exclude = ROOT / ".git" / "info" / "exclude"
    if (ROOT / ".git").is_dir():
        exclude.parent.mkdir(exist_ok=True)
        lines = exclude.read_text().splitlines() if exclude.exists() else []
        if "/.gpu/" not in lines:
            exclude.write_text("\n".join([*lines, "/.gpu/"]) + "\n")


def check(archive: Path, python: str) -> None:
    """Unpack the archive and step a rendered dm_control cartpole under ``python`` (3.12),
    with the device image's own packages installed beside it in a scratch folder."""
    with tempfile.TemporaryDirectory() as tmp:
        site, deps = Path(tmp) / "site", Path(tmp) / "deps"
        site.mkdir()
        with tarfile.open(archive) as tar:
            tar.extractall(site, filter="data")
        subprocess.run([python, "-m", "pip", "install", "-q", "--target", str(deps), *CHECK_DEPS],
                       check=True)
        code = ("import os; os.environ.setdefault('MUJOCO_GL', 'egl')\n"
                "import gymnasium, shimmy\n"
                "from dm_control import suite\n"
                "env = suite.load('cartpole', 'swingup', task_kwargs={'random': 0})\n"
                "ts = env.reset(); ts = env.step([0.5])\n"
                "frame = env.physics.render(64, 64, camera_id=0)\n"
                "assert frame.shape == (64, 64, 3) and frame.std() > 0, frame.shape\n"
                "print('dm_control', ts.observation['position'].shape, 'frame', frame.shape)\n")
        env = {"PYTHONPATH": f"{site}:{deps}", "PATH": "/usr/bin:/bin"}
        subprocess.run([python, "-c", code], check=True, env=env)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/device_bundle.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(OUT_DIR / "site.tar.xz"))
    parser.add_argument("--check", action="store_true",
                        help="also load and render a dm_control task from the archive")
    parser.add_argument("--python", default="python3.12", help="interpreter for --check")
    args = parser.parse_args(argv)
    archive = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        build(site)
        pack(site, archive)
    exclude_from_git()
    print(f"wrote {archive} ({archive.stat().st_size / 2**20:.1f} MiB)")
    if args.check:
        check(archive, args.python)


if __name__ == "__main__":
    main()
