"""Videos (GIFs) of evaluation episodes and of the world model's imagination next to reality.

:func:`write_videos` runs one greedy episode and writes into the run directory::

    RUN_DIR/videos/eval_step{step:08d}.gif       rendered frames of the episode
    RUN_DIR/videos/imagined_step{step:08d}.gif   the model's open-loop prediction vs the real
                                                 observations of that episode

For flat observations the imagined video is an animated plot (one panel per observation
dimension, real and imagined curves growing over time); for image observations it shows the real
frame and the imagined one side by side. The open-loop error per horizon is returned for
logging (``video/imagined_mse_h{k}``).

Needs ``pip install "worldflux[video]"`` (Pillow for GIFs) and matplotlib for the plots. The env
must render ``rgb_array`` frames: :func:`make_render_env` builds one from a
:class:`~worldflux.training.config.TrainConfig`.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch

from worldflux.core.errors import ConfigError, DataError
from worldflux.core.io import atomic_write_bytes
from worldflux.training.environment import env_action

__all__ = [
    "VIDEO_DIR",
    "imagined_rollout",
    "make_render_env",
    "open_loop_mse",
    "record_episode",
    "side_by_side_plot_frames",
    "write_gif",
    "write_videos",
]

VIDEO_DIR = "videos"
"""Folder of the run directory that holds the GIFs."""
DEFAULT_HORIZONS = (1, 5, 10, 25, 50, 100, 200, 500, 1000)
"""Open-loop horizons reported as ``video/imagined_mse_h{k}`` (those within the episode)."""
REAL_COLOR, IMAGINED_COLOR = "#1f1f1f", "#e8710a"


# -- environments and episodes -----------------------------------------------------------------
def make_render_env(config, seed: int, *, size: int = 256) -> gymnasium.Env:
    """The env of ``config`` (a ``TrainConfig``) as training sees it, able to ``render()`` frames.

    State-observation envs are made with ``render_mode="rgb_array"`` (dm_control renders
    ``size x size`` from the task's default camera); image-observation envs already render, at
    ``image_size``; Atari envs render the full-colour screen.
    """
    from worldflux import envs
    from worldflux.envs.registry import _DMC_DEFAULT_CAMERA

    env_id = config.env
    kwargs: dict[str, Any] = {}
    atari = env_id.startswith(("atari/", "ALE/"))
    if atari or config.obs_type != "image":
        kwargs["render_mode"] = "rgb_array"
        if env_id.startswith(("dmc/", "dm_control/")):
            task = env_id.split("/", 1)[1]
            domain = task.split("-", 1)[0]
            kwargs["render_kwargs"] = {"width": int(size), "height": int(size),
                                       "camera_id": _DMC_DEFAULT_CAMERA.get(domain, 0)}
        elif env_id.startswith("worldflux/"):  # native envs draw at any size
            kwargs["render_size"] = int(size)
    return envs.make(env_id, seed=seed, action_repeat=config.action_repeat,
                     obs_type=config.obs_type, image_size=config.image_size,
                     frame_stack=config.frame_stack if config.obs_type == "image" else 1,
                     **{**config.env_options, **kwargs})


def _render(env: gymnasium.Env) -> np.ndarray:
    try:
        frame = env.render()
    except gymnasium.error.DependencyNotInstalled as exc:
        raise ImportError(
            f"rendering {env.spec.id if env.spec else env}: {exc}. For gymnasium's classic "
            'control envs: pip install "gymnasium[classic-control]" (pygame)'
        ) from exc
    if frame is None:
        raise ConfigError(
            f"env.render() returned None: the env was made with render_mode="
            f"{getattr(env, 'render_mode', None)!r}, expected 'rgb_array' "
            "(build it with worldflux.training.video.make_render_env)"
        )
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] not in (3, 4):
        raise DataError(
            f"env.render(): got an array of shape {frame.shape}, expected an RGB frame [H, W, 3]"
        )
    if frame.dtype != np.uint8:
        scale = 255.0 if np.issubdtype(frame.dtype, np.floating) and frame.max() <= 1.0 else 1.0
        frame = np.clip(np.rint(frame * scale), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(frame[..., :3])


def record_episode(agent, env: gymnasium.Env, seed: int, max_steps: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """One evaluation episode (``agent.act(obs, explore=False)``) from ``env.reset(seed=seed)``.

    Frame ``t`` is rendered after observation ``t`` arrived, so frames and observations align.

    Args:
        agent: a :class:`~worldflux.agents.base.Agent`.
        env: an env made with ``render_mode="rgb_array"`` (:func:`make_render_env`).
        seed: seed of the reset.
        max_steps: stop after this many agent steps (default: the end of the episode).

    Returns:
        ``(frames uint8 [T + 1, H, W, 3], obs [T + 1, *obs_shape], actions float32 [T, A],
        undiscounted return)``; actions are the rows the replay buffer would store (one-hot
        for discrete actions).
    """
    if max_steps is not None and max_steps < 1:
        raise ConfigError(f"max_steps: got {max_steps}, expected >= 1 or None")
    obs, _ = env.reset(seed=int(seed))
    agent.reset()
    frames, observations, actions = [_render(env)], [np.array(obs, copy=True)], []
    total, done = 0.0, False
    while not done and (max_steps is None or len(actions) < max_steps):
        action, stored = env_action(agent.act(obs, explore=False), agent.action_spec)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        done = bool(terminated or truncated)
        actions.append(np.asarray(stored, dtype=np.float32))
        observations.append(np.array(obs, copy=True))
        frames.append(_render(env))
    if len({f.shape for f in frames}) != 1:
        raise DataError(f"env.render(): frame shapes changed during the episode "
                        f"({sorted({f.shape for f in frames})})")
    action_dim = agent.action_spec.dim
    return (np.stack(frames), np.stack(observations),
            np.stack(actions) if actions else np.zeros((0, action_dim), np.float32), total)


# -- imagination ---------------------------------------------------------------------------------
def _accepts(method, name: str) -> bool:
    try:
        return name in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


@torch.no_grad()
def imagined_rollout(world_model, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Open-loop prediction of an episode from its first real observation.

    ``encode(obs[0])``, then ``transition`` with the real actions one step at a time and
    ``decode`` of every state: the model never sees the later real observations. Families whose
    ``transition`` takes ``deterministic`` (PETS: the ensemble mean, no sampling) use it.

    Args:
        world_model: a :class:`~worldflux.core.model.WorldModel`.
        obs: real observations ``[T + 1, *obs_shape]`` (only ``obs[0]`` is used).
        actions: actions taken ``[T, A]``.

    Returns:
        Predicted observations ``[T + 1, *obs_shape]`` (``[0]`` is the decoded first state),
        float32, or uint8 (rounded, clipped) when the model's observations are uint8.
    """
    obs, actions = np.asarray(obs), np.asarray(actions, dtype=np.float32)
    shape = tuple(world_model.obs_spec.shape)
    if obs.ndim != len(shape) + 1 or tuple(obs.shape[1:]) != shape:
        raise DataError(f"obs: got shape {obs.shape}, expected [T + 1, {', '.join(map(str, shape))}]")
    if actions.ndim != 2 or actions.shape[0] != obs.shape[0] - 1:
        raise DataError(f"actions: got shape {actions.shape}, expected [T, A] with "
                        f"T = {obs.shape[0] - 1} (one fewer than the observations)")
    device = world_model.device
    training = world_model.training
    world_model.eval()
    try:
        state = world_model.encode(torch.as_tensor(obs[:1], device=device))
        predictions = [world_model.decode(state).preds["obs"]]
        kwargs = {"deterministic": True} if _accepts(world_model.transition, "deterministic") else {}
        steps = torch.as_tensor(actions, device=device)
        for t in range(steps.shape[0]):
            state = world_model.transition(state, steps[t:t + 1], **kwargs)
            predictions.append(world_model.decode(state).preds["obs"])
    finally:
        world_model.train(training)
    imagined = torch.cat(predictions, 0).float().cpu().numpy()
    if world_model.obs_spec.dtype == "uint8":
        return np.clip(np.rint(imagined), 0, 255).astype(np.uint8)
    return imagined.astype(np.float32)


def open_loop_mse(real: np.ndarray, imagined: np.ndarray) -> np.ndarray:
    """Mean squared error of ``imagined`` vs ``real`` at each horizon ``k = 1..T``: ``[T]``.

    Both are ``[T + 1, *obs_shape]``; uint8 images are compared in ``[0, 1]`` units.
    """
    real, imagined = np.asarray(real), np.asarray(imagined)
    if real.shape != imagined.shape:
        raise DataError(f"imagined: got shape {imagined.shape}, expected the real one {real.shape}")
    scale = 255.0 if real.dtype == np.uint8 else 1.0
    diff = (imagined[1:].astype(np.float64) - real[1:].astype(np.float64)) / scale
    return np.mean(diff.reshape(diff.shape[0], -1) ** 2, axis=1)


# -- frames --------------------------------------------------------------------------------------
def side_by_side_plot_frames(real: np.ndarray, imagined: np.ndarray,
                             names: Sequence[str] | None = None, *, width: int = 512,
                             panel_height: int = 100, dpi: int = 100) -> np.ndarray:
    """Frames ``uint8 [T + 1, H, W, 3]`` comparing a real and an imagined observation sequence.

    Flat observations ``[T + 1, D]``: an animated figure with one panel per dimension
    (``names[i]`` as its title), the real curve (dark, solid) and the imagined one (orange,
    dashed) growing up to step ``t`` in frame ``t``. Image observations ``[T + 1, C, H, W]``
    (uint8, ``C`` 1 or 3, or stacked frames ``3k`` of which the newest is shown): frame ``t``
    is real ``t`` | imagined ``t`` with a white 2-pixel gap.
    """
    real, imagined = np.asarray(real), np.asarray(imagined)
    if real.shape != imagined.shape:
        raise DataError(f"imagined: got shape {imagined.shape}, expected the real one {real.shape}")
    if real.ndim == 4:
        return _image_pairs(real, imagined)
    if real.ndim != 2:
        raise DataError(f"real: got shape {real.shape}, expected [T + 1, D] or [T + 1, C, H, W]")
    return _plot_frames(real.astype(np.float64), imagined.astype(np.float64), names, width,
                        panel_height, dpi)


def _image_pairs(real: np.ndarray, imagined: np.ndarray) -> np.ndarray:
    if real.shape[1] != 1 and real.shape[1] % 3:
        raise DataError(f"real: got {real.shape[1]} channels, expected 1, 3 or stacked frames of "
                        "3 ([T + 1, C, H, W])")
    if real.shape[1] > 3:  # stacked frames (oldest first): show the newest
        real, imagined = real[:, -3:], imagined[:, -3:]

    def hwc(frames: np.ndarray) -> np.ndarray:
        if frames.dtype != np.uint8:
            frames = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
        frames = frames.transpose(0, 2, 3, 1)
        return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames

    left, right = hwc(real), hwc(imagined)
    gap = np.full((*left.shape[:2], 2, 3), 255, np.uint8)
    return np.ascontiguousarray(np.concatenate([left, gap, right], axis=2))


def _plot_frames(real: np.ndarray, imagined: np.ndarray, names: Sequence[str] | None,
                 width: int, panel_height: int, dpi: int) -> np.ndarray:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError('imagined-rollout plots need matplotlib: pip install "worldflux[plot]"'
                          ) from exc
    steps, dims = real.shape
    names = list(names) if names is not None else [f"obs[{i}]" for i in range(dims)]
    if len(names) != dims:
        raise DataError(f"names: got {len(names)} names, expected one per dimension ({dims})")
    cols = 1 if dims <= 6 else math.ceil(dims / 6)
    rows = math.ceil(dims / cols)
    height = 40 + rows * panel_height
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False, sharex=True).reshape(-1)
    time = np.arange(steps)
    lines = []
    for i, ax in enumerate(axes):
        if i >= dims:
            ax.set_visible(False)
            continue
        low, high = _limits(real[:, i], imagined[:, i])
        ax.set_xlim(0, max(steps - 1, 1))
        ax.set_ylim(low, high)
        ax.set_title(names[i], fontsize=8, loc="left", pad=2)
        ax.tick_params(labelsize=7)
        # Animated artists stay out of the static background and are drawn frame by frame.
        (real_line,) = ax.plot([], [], color=REAL_COLOR, lw=1.4, label="real", animated=True)
        (imagined_line,) = ax.plot([], [], color=IMAGINED_COLOR, lw=1.4, ls="--",
                                   label="imagined", animated=True)
        lines.append((i, real_line, imagined_line))
    axes[0].legend(loc="upper right", fontsize=7, frameon=False, ncols=2)
    figure.tight_layout(pad=0.4, rect=(0, 0, 1, 1 - 24 / height))
    figure.text(0.5, 1 - 4 / height, "real vs imagined (open loop from step 0) over time",
                fontsize=9, ha="center", va="top")
    canvas.draw()
    background = canvas.copy_from_bbox(figure.bbox)
    frames = np.empty((steps, *np.asarray(canvas.buffer_rgba()).shape[:2], 3), np.uint8)
    for t in range(steps):
        canvas.restore_region(background)
        for i, real_line, imagined_line in lines:
            real_line.set_data(time[:t + 1], real[:t + 1, i])
            imagined_line.set_data(time[:t + 1], imagined[:t + 1, i])
            real_line.axes.draw_artist(real_line)
            imagined_line.axes.draw_artist(imagined_line)
        frames[t] = np.asarray(canvas.buffer_rgba())[..., :3]
    return frames


def _limits(real: np.ndarray, imagined: np.ndarray) -> tuple[float, float]:
    """y-limits covering the real curve and the imagined one, unless it runs far away."""
    finite = imagined[np.isfinite(imagined)]
    low, high = float(np.min(real)), float(np.max(real))
    span = max(high - low, 1e-3)
    if finite.size:  # follow the imagination up to one real span beyond the real range
        low = max(min(low, float(finite.min())), low - span)
        high = min(max(high, float(finite.max())), high + span)
    pad = 0.05 * max(high - low, 1e-3)
    return low - pad, high + pad


def _resize(frames: np.ndarray, max_side: int | None) -> np.ndarray:
    if max_side is None or max(frames.shape[1:3]) <= max_side:
        return frames
    from PIL import Image

    h, w = frames.shape[1:3]
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR))
                     for f in frames])


def write_gif(path: str | os.PathLike, frames: np.ndarray, fps: float = 20.0) -> Path:
    """Write ``frames uint8 [N, H, W, 3]`` as a looping GIF at ``path``, atomically.

    GIF stores frame durations in hundredths of a second: the duration is
    ``round(100 / fps)`` of them, at least 2 (viewers slow shorter frames down). Consecutive
    frames that are identical after palette conversion are merged by the encoder (their
    durations added), so a still scene gives fewer frames but the same playing time.
    """
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError('writing GIFs needs Pillow: pip install "worldflux[video]"') from exc
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise DataError(f"frames: got shape {frames.shape}, expected [N >= 1, H, W, 3]")
    if frames.dtype != np.uint8:
        raise DataError(f"frames: got dtype {frames.dtype}, expected uint8")
    if not fps > 0:
        raise ConfigError(f"fps: got {fps}, expected a positive number")
    duration = 10 * max(2, round(100 / fps))  # milliseconds, a multiple of 10
    # One palette for the whole clip (from up to 16 frames spread over it): frames then differ
    # only where the picture changed, which the encoder stores as small cropped updates.
    sample = frames[np.linspace(0, len(frames) - 1, min(16, len(frames))).astype(int)]
    palette = Image.fromarray(np.concatenate(list(sample), axis=0)).quantize(
        256, method=Image.Quantize.MEDIANCUT)
    images = [Image.fromarray(frame).quantize(palette=palette, dither=Image.Dither.NONE)
              for frame in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=duration, loop=0)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


# -- all together --------------------------------------------------------------------------------
@contextlib.contextmanager
def _agent_untouched(agent) -> Iterator[None]:
    """Restore the agent's state (planner warm start, generators) and the global RNGs after."""
    saved = copy.deepcopy(agent.state_dict())
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    try:
        yield
    finally:
        agent.load_state_dict(saved)
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)


def write_videos(run_dir: str | os.PathLike, agent, env: gymnasium.Env, step: int, seed: int, *,
                 max_steps: int | None = None, fps: float | None = None,
                 frame_size: int | None = 256,
                 horizons: Sequence[int] = DEFAULT_HORIZONS,
                 names: Sequence[str] | None = None,
                 restore_agent: bool = True) -> dict[str, Any]:
    """Record one greedy episode and write its GIFs under ``RUN_DIR/videos``.

    Args:
        run_dir: the run directory.
        agent: the agent (its ``world_model``, when it has one, imagines the episode).
        env: a rendering env (:func:`make_render_env`).
        step: agent step the files are named after (``eval_step{step:08d}.gif``...).
        seed: seed of the episode's reset.
        max_steps: cut the episode after this many agent steps (default: whole episode).
        fps: frames per second (default: the env's ``render_fps`` metadata, else 20).
        frame_size: rendered frames are shrunk to at most this side (None: as rendered).
        horizons: open-loop horizons reported in ``metrics`` (those ``<= T``).
        names: titles of the observation panels (default ``obs[i]``).
        restore_agent: put the agent's state and the global RNG states back afterwards, so
            recording changes nothing in the training that follows.

    Returns:
        ``{"eval": Path, "imagined": Path or None (agent without world model), "return": float,
        "length": T, "imagined_mse": float64 [T] (open-loop MSE at horizons 1..T, empty
        without a world model), "metrics": {"video/return", "video/length",
        "video/imagined_mse_h{k}", "video/imagined_mse_mean"}}``.
    """
    folder = Path(run_dir) / VIDEO_DIR
    guard = _agent_untouched(agent) if restore_agent else contextlib.nullcontext()
    with guard:
        frames, obs, actions, total = record_episode(agent, env, seed, max_steps)
        model = agent.world_model
        imagined = imagined_rollout(model, obs, actions) if model is not None else None
    if fps is None:
        fps = float((getattr(env, "metadata", None) or {}).get("render_fps") or 20.0)
    result: dict[str, Any] = {
        "eval": write_gif(folder / f"eval_step{int(step):08d}.gif", _resize(frames, frame_size),
                          fps),
        "imagined": None, "return": total, "length": len(actions),
        "imagined_mse": np.zeros(0),
    }
    metrics = {"video/return": total, "video/length": float(len(actions))}
    if imagined is not None:
        plot = side_by_side_plot_frames(obs, imagined, names)
        result["imagined"] = write_gif(folder / f"imagined_step{int(step):08d}.gif",
                                       _resize(plot, None if obs.ndim == 2 else frame_size), fps)
        errors = open_loop_mse(obs, imagined)
        result["imagined_mse"] = errors
        metrics.update({f"video/imagined_mse_h{k}": float(errors[k - 1])
                        for k in horizons if 1 <= k <= len(errors)})
        if len(errors):
            metrics["video/imagined_mse_mean"] = float(errors.mean())
    result["metrics"] = metrics
    return result
