"""Peak memory of a replay buffer holding 1M 64x64x3 uint8 frames: in RAM vs on disk.

Each storage is filled in its own fresh subprocess (so its peak is its own): 1,000,000 rows in
episodes of 1000 rows (obs = a per-episode constant plus the row index, really written),
sampling ``/proc/self/status`` after every episode. Reported per storage: peak RSS (VmHWM),
peak anonymous memory (RssAnon), final RSS, fill time, and the time of 100 samples of a
``[16, 64]`` window batch (on disk: with the page cache as the fill left it, and again with the
files evicted from the page cache, i.e. read from the disk); plus the disk usage (du) of the
disk buffer's directory, which is deleted afterwards.

The in-memory buffer needs about 13 GB; when less than 14 GB is available
(``MemAvailable``), its row count is scaled down and its figures are extrapolated linearly
(the JSON says so).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import RESULTS, plot_path, pyplot, write_result

NAME = "replay_memory"
OBS_SHAPE = (64, 64, 3)
ACTION_DIM = 6
MEMORY_NEEDED = 14e9  # bytes of MemAvailable for the full in-memory case
_STATUS_KEYS = ("VmHWM", "VmRSS", "RssAnon", "RssFile")


def status_mib() -> dict[str, float]:
    """VmHWM, VmRSS, RssAnon, RssFile of this process in MiB."""
    out = {}
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in _STATUS_KEYS:
                out[key] = int(value.split()[0]) / 1024
    return out


def mem_available() -> int:
    with open("/proc/meminfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("MemAvailable missing from /proc/meminfo")


def evict_page_cache(directory: Path) -> None:
    """Ask the kernel to drop the directory's files from the page cache."""
    for path in directory.glob("*.npy"):
        with open(path, "rb") as fh:
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def time_samples(buffer, batches: int, episode_len: int) -> float:
    import numpy as np

    started = time.perf_counter()
    for _ in range(batches):
        batch = buffer.sample(16, 64)
    seconds = time.perf_counter() - started
    # The windows hold what was written: consecutive rows of one episode.
    pixel = batch["obs"][:, :, 0, 0, 0].astype(np.int64)
    assert batch["obs"].dtype == np.uint8 and batch["obs"].shape == (16, 64, *OBS_SHAPE)
    assert ((np.diff(pixel, axis=1) % 256) == 1).all(), "sampled rows are not consecutive"
    return seconds


def child(mode: str, rows: int, episode_len: int, batches: int, directory: Path) -> dict:
    """Fill one buffer in this (fresh) process and measure it."""
    import numpy as np

    from worldflux.data import ReplayBuffer

    baseline = status_mib()
    kwargs = {"storage": "disk", "directory": directory} if mode == "disk" else {}
    buffer = ReplayBuffer(rows, OBS_SHAPE, ACTION_DIM, seed=0, **kwargs)
    obs = np.empty((episode_len, *OBS_SHAPE), dtype=np.uint8)
    ramp = (np.arange(episode_len) % 256).astype(np.uint8)[:, None, None, None]
    episode = {
        "obs": obs,
        "actions": np.zeros((episode_len, ACTION_DIM), np.float32),
        "rewards": np.zeros(episode_len, np.float32),
        "terminated": np.zeros(episode_len, bool),
        "truncated": np.zeros(episode_len, bool),
    }
    episode["truncated"][-1] = True
    peak_anon = peak_rss = 0.0
    add_seconds = 0.0
    started = time.perf_counter()
    for index in range(rows // episode_len):
        np.add(ramp, np.uint8(index % 256), out=obs)  # per-episode constant + row index
        tick = time.perf_counter()
        buffer.add_episode(episode)
        add_seconds += time.perf_counter() - tick
        now = status_mib()
        peak_anon = max(peak_anon, now["RssAnon"])
        peak_rss = max(peak_rss, now["VmRSS"])
    fill_seconds = time.perf_counter() - started
    after_fill = status_mib()
    flush_seconds = None
    if mode == "disk":
        tick = time.perf_counter()
        buffer.flush()
        flush_seconds = time.perf_counter() - tick
    assert len(buffer) == rows
    sample_seconds = time_samples(buffer, batches, episode_len)
    cold_seconds = None
    if mode == "disk":
        evict_page_cache(directory)
        cold_seconds = time_samples(buffer, batches, episode_len)
    final = status_mib()
    buffer.close()
    return {
        "storage": mode,
        "rows": rows,
        "baseline_mib": baseline,
        "peak_rss_mib": final["VmHWM"],
        "peak_rss_during_fill_mib": peak_rss,
        "peak_anon_mib": max(peak_anon, final["RssAnon"]),
        "rss_after_fill_mib": after_fill["VmRSS"],
        "final_rss_mib": final["VmRSS"],
        "final_status_mib": final,
        "fill_s": round(fill_seconds, 2),
        "add_episode_s": round(add_seconds, 2),
        "flush_s": None if flush_seconds is None else round(flush_seconds, 2),
        f"sample_{batches}x16x64_s": round(sample_seconds, 3),
        f"sample_{batches}x16x64_cold_s": None if cold_seconds is None else round(cold_seconds, 3),
    }


def run_child(mode: str, rows: int, args: argparse.Namespace, directory: Path) -> dict:
    command = [sys.executable, "-m", "benchmarks", NAME, "--child", mode, "--rows", str(rows),
               "--episode-len", str(args.episode_len), "--batches", str(args.batches),
               "--dir", str(directory)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        raise SystemExit(f"{mode} child failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def disk_usage(directory: Path) -> dict[str, int]:
    """Bytes allocated on disk (``du``) and apparent size of the directory's files."""
    allocated = int(subprocess.run(["du", "-s", "--block-size=1", str(directory)],
                                   capture_output=True, text=True, check=True).stdout.split()[0])
    apparent = sum(path.stat().st_size for path in directory.iterdir())
    return {"du_bytes": allocated, "apparent_bytes": apparent}


def extrapolate(result: dict, rows: int) -> dict:
    """Scale the buffer's own memory (above the baseline) linearly to ``rows``."""
    factor = rows / result["rows"]
    base = result["baseline_mib"]
    scaled = dict(result)
    for key, base_key in (("peak_rss_mib", "VmRSS"), ("peak_anon_mib", "RssAnon"),
                          ("final_rss_mib", "VmRSS"), ("rss_after_fill_mib", "VmRSS"),
                          ("peak_rss_during_fill_mib", "VmRSS")):
        scaled[key] = round(base[base_key] + (result[key] - base[base_key]) * factor, 1)
    scaled["fill_s"] = round(result["fill_s"] * factor, 2)
    scaled["extrapolated_from_rows"] = result["rows"]
    scaled["rows"] = rows
    return scaled


def plot(results: dict[str, dict], rows: int) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    names = ["memory", "disk"]
    width = 0.38
    for offset, (key, label) in enumerate((("peak_rss_mib", "peak RSS (VmHWM)"),
                                           ("peak_anon_mib", "peak anonymous (RssAnon)"))):
        values = [results[name][key] / 1024 for name in names]
        xs = [i + (offset - 0.5) * width for i in range(len(names))]
        bars = ax.bar(xs, values, width, label=label, color=f"C{offset}")
        for bar, value in zip(bars, values, strict=True):
            ax.annotate(f"{value:.2f}", (bar.get_x() + bar.get_width() / 2, value),
                        ha="center", va="bottom", fontsize=8)
    labels = []
    for name in names:
        note = " (extrapolated)" if "extrapolated_from_rows" in results[name] else ""
        labels.append(f'storage="{name}"{note}')
    ax.set_xticks(range(len(names)), labels)
    ax.set_ylabel("GiB")
    ax.set_title(f"ReplayBuffer holding {rows:,} frames of 64x64x3 uint8")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = plot_path(NAME)
    fig.savefig(path, dpi=120)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks {NAME}")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--episode-len", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--dir", type=Path, default=RESULTS / "runs" / NAME,
                        help="folder of the disk buffer (deleted afterwards)")
    parser.add_argument("--child", choices=("memory", "disk"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows % args.episode_len:
        raise SystemExit("--rows must be a multiple of --episode-len")
    if args.child:
        print(json.dumps(child(args.child, args.rows, args.episode_len, args.batches, args.dir)))
        return

    started = time.time()
    row_bytes = 64 * 64 * 3 + 4 * ACTION_DIM + 4 + 3
    data_bytes = args.rows * row_bytes
    directory = args.dir
    if directory.exists():
        shutil.rmtree(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    disk_free = shutil.disk_usage(directory.parent).free
    if disk_free < data_bytes * 1.1 + (2 << 30):
        raise SystemExit(f"{directory.parent}: {disk_free / 1e9:.1f} GB free, "
                         f"need {data_bytes * 1.1 / 1e9 + 2:.1f} GB for the disk buffer")
    notes = []
    try:
        disk = run_child("disk", args.rows, args, directory)
        disk.update(disk_usage(directory))
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    available = mem_available()
    needed = MEMORY_NEEDED * args.rows / 1_000_000
    memory_rows = args.rows
    if available < needed:
        fraction = max(0.05, (available - 3e9) / needed)
        memory_rows = max(args.episode_len,
                          int(args.rows * fraction) // args.episode_len * args.episode_len)
        notes.append(f"MemAvailable was {available / 1e9:.1f} GB (< {needed / 1e9:.1f} GB): the "
                     f"in-memory buffer was filled with {memory_rows:,} rows and its memory and "
                     f"fill time extrapolated linearly to {args.rows:,}")
    memory = run_child("memory", memory_rows, args, directory)
    if memory_rows != args.rows:
        memory = extrapolate(memory, args.rows)

    results = {"memory": memory, "disk": disk}
    summary = {
        "peak_rss_gib": {k: round(v["peak_rss_mib"] / 1024, 3) for k, v in results.items()},
        "peak_anon_gib": {k: round(v["peak_anon_mib"] / 1024, 3) for k, v in results.items()},
        "peak_rss_ratio_memory_over_disk": round(memory["peak_rss_mib"] / disk["peak_rss_mib"], 1),
        "disk_du_gib": round(disk["du_bytes"] / 2**30, 2),
    }
    figure = plot(results, args.rows)
    path = write_result(NAME, {
        "settings": {"rows": args.rows, "obs_shape": list(OBS_SHAPE), "obs_dtype": "uint8",
                     "action_dim": ACTION_DIM, "episode_len": args.episode_len,
                     "sample_batches": args.batches, "batch": [16, 64],
                     "data_bytes": data_bytes, "mem_available_bytes_before_memory_case":
                     available, "disk_directory": str(directory)},
        "summary": summary,
        "results": results,
        "notes": notes + [
            "each storage filled in a fresh subprocess (python + numpy + torch imported: see "
            "baseline_mib); peaks include that baseline",
            "peak_anon_mib: maximum RssAnon sampled after every episode and at the end",
            "disk: cold = after evicting the files from the page cache (reads from disk)",
        ],
        "plot": figure.name,
    }, started)
    print(json.dumps({"summary": summary, "notes": notes}, indent=2))
    print(f"wrote {path}")
