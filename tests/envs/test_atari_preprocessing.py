"""Atari preprocessing keeps what matters: in a 64x64 Pong frame both paddles and the ball are
present where the raw 210x160 frame has them."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ale_py")
pytest.importorskip("cv2")

from worldflux import envs  # noqa: E402

# Pong palette (raw RGB frames): the opponent's paddle, the agent's paddle, the ball.
COLOURS = {"left paddle": (213, 130, 74), "right paddle": (92, 186, 92), "ball": (236, 236, 236)}
PLAY_ROWS = (34, 194)  # between the score bar and the bottom wall


def _objects(raw: np.ndarray) -> dict[str, np.ndarray]:
    """Pixel coordinates ``[N, 2]`` (row, column) of each object in a raw RGB frame."""
    play = raw[PLAY_ROWS[0]:PLAY_ROWS[1]]
    return {name: np.argwhere((play == colour).all(-1)) + [PLAY_ROWS[0], 0]
            for name, colour in COLOURS.items()}


def save_png(path, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image).save(path)


def test_pong_64x64_frame_keeps_both_paddles_and_the_ball(tmp_path):
    env = envs.make("atari/pong", seed=0, image_size=64)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (1, 64, 64) and obs.dtype == np.uint8
    ale = env.unwrapped.ale
    found = None
    for _ in range(100):  # the ball is served a few agent steps after the reset
        obs, *_ = env.step(0)
        raw = ale.getScreenRGB()
        objects = _objects(raw)
        if all(len(v) for v in objects.values()):
            found = objects
            break
    env.close()
    assert found is not None, "no raw frame with both paddles and the ball within 100 steps"
    frame = obs[0]
    save_png(tmp_path / "pong_64x64.png", frame)
    save_png(tmp_path / "pong_raw.png", raw)
    assert (tmp_path / "pong_64x64.png").stat().st_size > 0
    background = int(np.bincount(frame[16:60].reshape(-1)).argmax())
    scale = np.array([64 / 210, 64 / 160])
    for name, pixels in found.items():
        # where the raw frame has the object, the 64x64 frame differs from the background
        rows, cols = np.round((pixels + 0.5) * scale - 0.5).astype(int).T
        rows, cols = rows.clip(0, 63), cols.clip(0, 63)
        contrast = np.abs(frame[rows, cols].astype(int) - background)
        assert contrast.max() >= 20, f"{name}: no trace at the raw position (contrast {contrast})"
        # and the object is not smeared everywhere: far from it the frame is background
        far = np.ones_like(frame, dtype=bool)
        far[max(rows.min() - 3, 0):rows.max() + 4, max(cols.min() - 3, 0):cols.max() + 4] = False
        assert (np.abs(frame[far].astype(int) - background) < 20).mean() > 0.8, name
