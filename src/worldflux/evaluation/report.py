"""A report per run: one self-contained HTML page (``RUN_DIR/report.html``).

Sections: the run's configuration, the learning curve (``eval.jsonl`` evaluations and the
training episodes of ``metrics.jsonl``), the evaluation table (with success / collision rates
when the run's evaluation logged them), open-loop fidelity and calibration of the run's world
model on fresh held-out episodes (plot, table, ``RUN_DIR/fidelity.json``), an optional
out-of-distribution split, and the run's newest GIFs (``RUN_DIR/videos``) next to a GIF of a
held-out episode, real vs imagined. Images are embedded as base64 data URIs and the CSS is
inline: the file can be mailed or archived alone. ``markdown=True`` also writes ``report.md``
with its images in ``report_files/``.

Held-out episodes come from seeds ``train.seed + HELDOUT_SEED_OFFSET + i``, which training and
evaluation never use. By default their actions are uniformly random: fast, and broad coverage
of the state space, but not the states the agent's own policy visits. ``policy="agent"`` plays
the agent's greedy policy instead (slow with MPC planners: a full planning step per env step).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from worldflux.core.errors import CheckpointError, ConfigError
from worldflux.core.io import atomic_write_text
from worldflux.evaluation.collect import HELDOUT_SEED_OFFSET, collect_episodes
from worldflux.evaluation.document import (
    Image,
    Section,
    Table,
    Text,
    render_html,
    render_markdown,
)
from worldflux.evaluation.fidelity import (
    FidelityResult,
    OODResult,
    deterministic,
    fidelity_figure,
    ood_figure,
    ood_split,
    open_loop_fidelity,
    supports_deterministic,
    write_fidelity_json,
)
from worldflux.evaluation.plots import PALETTE, figure_png, new_figure

__all__ = ["REPORT_FILE", "write_report"]

REPORT_FILE = "report.html"
MARKDOWN_FILE = "report.md"
ASSET_DIR = "report_files"
FIDELITY_FILE = "fidelity.json"
RATE_WORDS = ("success", "collision")
"""Evaluation keys containing these words are shown as rates in their own table."""
_EVAL_BASE_KEYS = {"step", "wall_time", "mean", "std", "returns", "lengths"}
REPORT_HORIZONS = (1, 5, 10, 20, 30, 50, 100)
"""Horizons listed in the fidelity table (those within the evaluated horizon)."""
GIF_STEPS = 100
"""The held-out real-vs-imagined GIF shows at most this many steps."""

Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: called while episodes are collected and imagined."""


# -- reading the run -----------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Records of a JSON-lines file and the number of lines that did not parse (a run still
    writing may have a partial last line)."""
    if not path.is_file():
        return [], 0
    records, bad = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(value, dict):
            records.append(value)
    return records, bad


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out += _flatten(value, name + ".")
        else:
            out.append((name, json.dumps(value) if isinstance(value, (list, dict)) else value))
    return out


# -- sections ------------------------------------------------------------------------------------
def _config_section(run_config: Mapping[str, Any], summary: Mapping[str, Any] | None,
                    step: int | None) -> list[Section]:
    train = run_config.get("train", {})
    obs_spec, action_spec = run_config.get("obs_spec", {}), run_config.get("action_spec", {})
    rows: list[tuple[str, Any]] = [
        ("agent", run_config.get("agent")), ("env", train.get("env")),
        ("steps (budget)", train.get("steps")), ("seed", train.get("seed")),
        ("action repeat", train.get("action_repeat")), ("obs type", train.get("obs_type")),
        ("observation spec", json.dumps(obs_spec) if obs_spec else None),
        ("action spec", json.dumps(action_spec) if action_spec else None),
        ("device", train.get("device")), ("precision", train.get("precision")),
        ("evaluation", f"{train.get('eval_episodes')} episode(s) "
                       + (f"every {train['eval_every']} steps" if train.get("eval_every")
                          else "at the end of the run")),
        ("worldflux version", run_config.get("worldflux_version")),
    ]
    if step is not None:
        rows.append(("checkpoint step", step))
    if summary:
        final = summary.get("final_eval") or {}
        rows += [("steps done / episodes", f"{summary.get('steps')} / {summary.get('episodes')}"),
                 ("wall time (s)", _number(summary.get("wall_time_s"))),
                 ("env steps / s", _number(summary.get("env_steps_per_s"))),
                 ("final eval return", _format_mean_std(final.get("mean"), final.get("std")))]
    else:
        rows.append(("summary", "no summary.json (the run has not finished)"))
    sections = [Section("Run", [Table(("setting", "value"), rows)])]
    agent_config = run_config.get("agent_config") or {}
    if agent_config:
        sections.append(Section("Agent configuration (all fields)",
                                [Table(("field", "value"), _flatten(agent_config))],
                                details=True))
    return sections


def _format_mean_std(mean: Any, std: Any) -> str:
    m, s = _number(mean), _number(std)
    if m is None:
        return "-"
    return f"{m:.4g} ± {s:.3g}" if s is not None else f"{m:.4g}"


def _learning_section(evals: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> Section:
    section = Section("Learning curve")
    episodes = [(m["step"], m["episode/return"]) for m in metrics
                if _number(m.get("episode/return")) is not None and _number(m.get("step"))
                is not None]
    points = [(e["step"], e["mean"], _number(e.get("std")) or 0.0) for e in evals
              if _number(e.get("mean")) is not None and _number(e.get("step")) is not None]
    if not episodes and not points:
        section.blocks.append(Text("No training episode or evaluation was logged yet.",
                                   note=True))
        return section
    figure = new_figure(8.0, 4.0)
    ax = figure.subplots()
    if episodes:
        steps, returns = np.asarray(episodes, dtype=np.float64).T
        ax.scatter(steps, returns, s=10, color=PALETTE[0], alpha=0.5,
                   label="training episode return", edgecolors="none")
        if len(returns) >= 5:
            window = max(2, len(returns) // 10)
            smooth = np.convolve(returns, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1:], smooth, color=PALETTE[0], lw=1.4,
                    label=f"training (mean of {window})")
    if points:
        steps, means, stds = np.asarray(points, dtype=np.float64).T
        ax.plot(steps, means, color=PALETTE[1], lw=1.8, marker="o", ms=4,
                label="evaluation mean return")
        ax.fill_between(steps, means - stds, means + stds, color=PALETTE[1], alpha=0.2,
                        label="evaluation ± std")
    ax.set(xlabel="agent steps", ylabel="undiscounted return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    figure.tight_layout()
    section.blocks.append(Image(figure_png(figure), "learning_curve.png",
                                f"{len(episodes)} training episodes, {len(points)} evaluations"))
    return section


def _rate_keys(evals: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for record in [*evals, *metrics]:
        for key, value in record.items():
            if any(w in key.lower() for w in RATE_WORDS) and _number(value) is not None:
                keys[key] = None
    return list(keys)


def _evaluation_section(evals: list[dict[str, Any]], metrics: list[dict[str, Any]],
                        bad_lines: int) -> Section:
    section = Section("Evaluations")
    if not evals:
        section.blocks.append(Text("eval.jsonl holds no evaluation.", note=True))
    else:
        extra = sorted({k for e in evals for k, v in e.items()
                        if k not in _EVAL_BASE_KEYS and _number(v) is not None})
        rows = []
        for e in evals:
            lengths = [x for x in e.get("lengths") or [] if _number(x) is not None]
            rows.append([e.get("step"), _number(e.get("mean")), _number(e.get("std")),
                         len(e.get("returns") or []),
                         float(np.mean(lengths)) if lengths else None,
                         *[_number(e.get(k)) for k in extra]])
        section.blocks.append(Table(("step", "mean return", "std", "episodes", "mean length",
                                     *extra), rows))
    rates = _rate_keys(evals, metrics)
    if rates:
        latest: dict[str, tuple[Any, float]] = {}
        for record in [*metrics, *evals]:  # eval.jsonl wins at equal steps
            for key in rates:
                value = _number(record.get(key))
                if value is not None:
                    step = record.get("step")
                    if key not in latest or (step is not None and step >= latest[key][0]):
                        latest[key] = (step, value)
        section.blocks.append(Table(("rate", "latest value", "at step"),
                                    [(k, v, s) for k, (s, v) in latest.items()],
                                    caption="Success / collision rates logged by the evaluation"))
    if bad_lines:
        section.blocks.append(Text(f"{bad_lines} line(s) of metrics.jsonl / eval.jsonl could "
                                   "not be parsed and were skipped (a run still writing?).",
                                   note=True))
    return section


def _fidelity_blocks(results: Mapping[str, FidelityResult], note: str) -> list:
    first = next(iter(results.values()))
    horizons = [h for h in REPORT_HORIZONS if h <= first.horizon]
    if first.horizon not in horizons:
        horizons.append(first.horizon)
    rows = []
    for label, result in results.items():
        for h in horizons:
            rows.append([label, h, result.at("relative_error", h),
                         result.at("normalized_rmse", h), result.at("rmse", h),
                         result.at("normalized_spread", h), result.at("spearman_per_h", h)])
    headline = [[label, r.spearman, r.horizon_under(0.1), r.num_episodes, r.num_starts,
                 r.num_samples, r.deterministic] for label, r in results.items()]
    return [
        Text(note, note=True),
        Table(("model", "Spearman rho (spread vs error, all pairs)", "steps under 10% error",
               "episodes", "starts", "samples", "deterministic"), headline,
              caption="Calibration and open-loop horizon"),
        Image(figure_png(fidelity_figure(results)), "fidelity.png",
              "Open-loop error vs horizon (left, middle) and predicted spread vs actual error "
              "of every start and horizon (right)"),
        Table(("model", "horizon", "relative error", "normalised RMSE", "RMSE",
               "normalised spread", "rho at h"), rows,
              caption="Relative error: median over starts of ||pred - real|| / ||real - start||; "
                      "normalised: per-dimension std units of the held-out data"),
    ]


def _gif_blocks(run_dir: Path) -> list:
    folder = run_dir / "videos"
    blocks: list = []
    for kind, caption in (("eval", "newest evaluation episode"),
                          ("imagined", "newest imagined rollout of the training run (open loop "
                                       "from the episode's first observation)")):
        files = sorted(folder.glob(f"{kind}_step*.gif"))
        if files:
            blocks.append(Image(files[-1].read_bytes(), files[-1].name,
                                f"{caption}: {files[-1].name}"))
    return blocks


def _heldout_gif(model: Any, episode: Mapping[str, np.ndarray], fps: float) -> Image:
    """Real vs imagined (ensemble mean, open loop) over the first steps of a held-out episode."""
    from worldflux.training.video import imagined_rollout, side_by_side_plot_frames, write_gif

    steps = min(GIF_STEPS, len(episode["obs"]) - 1)
    obs = episode["obs"][:steps + 1]
    imagined = imagined_rollout(model, obs, episode["actions"][1:steps + 1])
    frames = side_by_side_plot_frames(obs, imagined)
    with tempfile.TemporaryDirectory() as tmp:
        data = write_gif(Path(tmp) / "heldout.gif", frames, fps).read_bytes()
    return Image(data, "heldout_imagined.gif",
                 f"held-out episode, real (solid) vs imagined (dashed), {steps} steps open loop "
                 "from its first observation")


# -- the report ----------------------------------------------------------------------------------
def write_report(run_dir: str | os.PathLike, *,
                 fidelity: Mapping[str, FidelityResult] | FidelityResult | None = None,
                 extra_sections: Mapping[str, Any] | None = None,
                 compute_fidelity: bool = True, horizon: int = 50, episodes: int = 5,
                 policy: str = "random", num_samples: int | None = None,
                 starts_per_episode: int = 8, ood_options: Mapping[str, Any] | None = None,
                 ood: OODResult | None = None, device: str = "cpu", seed: int | None = None,
                 gif: bool = True, markdown: bool = False,
                 progress: Progress | None = None) -> Path:
    """Write ``RUN_DIR/report.html`` and return its path.

    Args:
        run_dir: a run directory (``config.json`` at least; see :mod:`worldflux.training.loop`).
        fidelity: results to show (``{label: FidelityResult}``); when ``None`` and
            ``compute_fidelity``, the run's world model (newest valid checkpoint) is evaluated
            on ``episodes`` fresh held-out episodes and the result also written to
            ``RUN_DIR/fidelity.json``.
        extra_sections: ``{title: body}`` appended at the end; a body is text (escaped),
            a mapping (a two-column table), PNG/GIF bytes (an image), or a list of those.
        compute_fidelity: evaluate the run's model when ``fidelity`` is not given.
        horizon: open-loop steps (lowered to the longest held-out episode when shorter).
        episodes: held-out episodes collected.
        policy: ``"random"`` (default, fast) or ``"agent"`` (the agent's greedy policy).
        num_samples, starts_per_episode: see :func:`open_loop_fidelity`.
        ood_options: also run :func:`ood_split` with these env options (e.g. ``{"g": 15}``)
            on the run's model, sampled and, where the family supports it, deterministic.
        ood: an :class:`OODResult` computed elsewhere, shown as is.
        device: device the run's model is loaded on.
        seed: seed of the held-out episodes (default ``train.seed + HELDOUT_SEED_OFFSET``).
        gif: add a GIF of a held-out episode, real vs imagined (needs Pillow).
        markdown: also write ``report.md`` and its images in ``report_files/``.
        progress: ``progress(phase, done, total)`` callback.

    Raises:
        CheckpointError: ``run_dir`` is not a run directory (no ``config.json``), or the model
            is needed and no checkpoint verifies.
    """
    started = time.time()
    run_dir = Path(run_dir)
    config_file = run_dir / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{config_file}: missing; is {run_dir} a worldflux run directory "
                              "(made by `worldflux train`)?")
    if policy not in ("random", "agent"):
        raise ConfigError(f"policy: got {policy!r}, expected 'random' or 'agent'")
    run_config = _read_json(config_file) or {}
    if not isinstance(run_config.get("train"), Mapping):
        raise CheckpointError(f"{config_file}: no 'train' section; expected a worldflux run's "
                              "config.json")
    summary = _read_json(run_dir / "summary.json")
    evals, bad_eval = _read_jsonl(run_dir / "eval.jsonl")
    metrics, bad_metrics = _read_jsonl(run_dir / "metrics.jsonl")

    results = ({"model": fidelity} if isinstance(fidelity, FidelityResult) else
               dict(fidelity) if fidelity is not None else None)
    fidelity_note = "Fidelity results given to the report."
    step: int | None = None
    held_gif: Image | None = None
    notes: list[Text] = []
    need_model = (results is None and compute_fidelity) or ood_options is not None
    if need_model:
        from worldflux.training.evaluate import load_run

        agent, train_config, _, step = load_run(run_dir, device=device)
        model = agent.world_model
        if model is None:
            notes.append(Text(f"Agent '{run_config.get('agent')}' has no world model: no "
                              "fidelity evaluation.", note=True))
        else:
            episode_seed = (train_config.seed + HELDOUT_SEED_OFFSET if seed is None
                            else int(seed))
            def on_step(episode: int, done: bool) -> None:
                if progress is not None:
                    progress("collect", episode + int(done), int(episodes))

            held = collect_episodes(train_config, agent if policy == "agent" else "random",
                                    episodes, seed=episode_seed, on_step=on_step)
            longest = max(len(e["obs"]) - 1 for e in held)
            used_horizon = min(int(horizon), longest)
            if results is None and compute_fidelity:
                results = {run_config.get("agent") or "model": open_loop_fidelity(
                    model, held, used_horizon, num_samples, starts_per_episode,
                    on_batch=(lambda d, t: progress("imagine", d, t)) if progress else None)}
                actions = "the agent's greedy" if policy == "agent" else "uniformly random"
                fidelity_note = (
                    f"The run's world model (checkpoint step {step}) on {len(held)} fresh "
                    f"held-out episodes (seeds {episode_seed}..{episode_seed + len(held) - 1}, "
                    f"{actions} actions), horizon {used_horizon}"
                    + (f" (the episodes are {longest} steps long)"
                       if used_horizon < horizon else "") + ".")
                write_fidelity_json(results, run_dir / FIDELITY_FILE, extra={
                    "run_dir": str(run_dir), "checkpoint_step": step, "policy": policy,
                    "episodes": len(held), "seed": episode_seed})
            if ood is None and ood_options is not None:
                models = {"sampled": model}
                if supports_deterministic(model):
                    models["deterministic"] = deterministic(model)
                if progress is not None:
                    progress("out of distribution", 0, 1)
                ood = ood_split(models, train_config, dict(ood_options),
                                policy=agent if policy == "agent" else "random",
                                episodes=episodes, seed=episode_seed, horizon=used_horizon,
                                num_samples=num_samples, starts_per_episode=starts_per_episode)
                if progress is not None:
                    progress("out of distribution", 1, 1)
            if gif:
                try:
                    held_gif = _heldout_gif(model, held[0], fps=20.0)
                except ImportError as exc:
                    notes.append(Text(f"No held-out GIF: {exc}", note=True))

    sections = _config_section(run_config, summary, step)
    sections.append(_learning_section(evals, metrics))
    sections.append(_evaluation_section(evals, metrics, bad_eval + bad_metrics))
    fidelity_section = Section("Open-loop fidelity and calibration", list(notes))
    if results:
        fidelity_section.blocks += _fidelity_blocks(results, fidelity_note)
    elif not notes:
        fidelity_section.blocks.append(Text("Not computed (--no-fidelity).", note=True))
    sections.append(fidelity_section)
    if ood is not None:
        sections.append(_ood_section(ood))
    video_blocks = _gif_blocks(run_dir) + ([held_gif] if held_gif is not None else [])
    sections.append(Section("Episodes: real next to imagined", video_blocks or [
        Text("No GIF: the run wrote no videos (train.video_every) and none was made here.",
             note=True)]))
    for title, body in (extra_sections or {}).items():
        sections.append(Section(str(title), _extra_blocks(title, body)))

    title = f"worldflux report: {run_dir.name}"
    subtitle = (f"{run_config.get('agent')} on {run_config.get('train', {}).get('env')} - "
                f"{run_dir.resolve()} - generated {time.strftime('%Y-%m-%d %H:%M:%S')} in "
                f"{time.time() - started:.1f} s")
    path = run_dir / REPORT_FILE
    atomic_write_text(path, render_html(title, subtitle, sections))
    if markdown:
        text = render_markdown(title, subtitle, sections, run_dir / ASSET_DIR, ASSET_DIR)
        atomic_write_text(run_dir / MARKDOWN_FILE, text)
    return path


def _ood_section(ood: OODResult) -> Section:
    rows = []
    for label in ood.in_distribution:
        inside, outside = ood.in_distribution[label], ood.out_of_distribution[label]
        rows.append([label, float(np.mean(inside.rmse)), float(np.mean(outside.rmse)),
                     ood.robustness_ratio(label), inside.horizon_under(0.1),
                     outside.horizon_under(0.1)])
    blocks: list = [
        Text("Perturbation: " + ", ".join(f"{k}={v}" for k, v in ood.env_options.items())
             + ". Same reset seeds and (random policy) the same actions in and out of "
               "distribution; robustness ratio = mean RMSE out / mean RMSE in (lower is more "
               "robust).", note=True),
        Table(("model", "mean RMSE in", "mean RMSE out", "robustness ratio",
               "steps under 10% (in)", "steps under 10% (out)"), rows),
        Image(figure_png(ood_figure(ood)), "ood.png", "RMSE vs horizon in and out of "
                                                      "distribution"),
    ]
    labels = list(ood.in_distribution)
    if len(labels) == 2:
        c = ood.compare(*labels)
        blocks.append(Text(f"{c['a']} vs {c['b']}: ratio {c['ratio_a']:.3g} vs "
                           f"{c['ratio_b']:.3g} (a/b = {c['a_over_b']:.3g}); OOD RMSE a/b = "
                           f"{c['ood_rmse_a_over_b']:.3g}; more robust: {c['more_robust']}."))
    return Section("Out of distribution", blocks)


def _extra_blocks(title: Any, body: Any) -> list:
    if isinstance(body, (list, tuple)):
        return [b for item in body for b in _extra_blocks(title, item)]
    if isinstance(body, (bytes, bytearray)):
        name = f"{''.join(c if c.isalnum() else '_' for c in str(title))}"
        data = bytes(body)
        return [Image(data, name + (".gif" if data[:4] == b"GIF8" else ".png"), str(title))]
    if isinstance(body, Mapping):
        return [Table(("key", "value"), [(k, v if isinstance(v, (int, float, str)) or v is None
                                          else json.dumps(v)) for k, v in body.items()])]
    if isinstance(body, (Text, Table, Image)):
        return [body]
    if isinstance(body, float) and not math.isfinite(body):
        return [Text("n/a")]
    return [Text(str(body))]
