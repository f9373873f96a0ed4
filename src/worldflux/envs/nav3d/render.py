"""Top-down NumPy raster of a Nav3D world: ``[size, size, 3]`` uint8, no display needed.

Layout of a frame (``size = 64``): the arena ``[-L, L]^2`` fills a ``56 x 56`` square on the
left (``x`` to the right, ``y`` up, 5.6 px/m), vertically centred; the right 8 columns hold two
altitude bars, filled from the bottom of the frame in proportion to ``z / arena_height``: the
body's (orange) then the goal's (green).

* floor: dark grey; obstacles: blue, brighter where their top surface is higher (spheres look
  like domes, boxes are flat), edges anti-aliased;
* goal: bright green disc of radius ``success_radius``;
* body: disc drawn last, its radius grows from 1.5 px (floor) to 4 px (ceiling) and its
  colour goes from red to yellow with altitude.

The floor and obstacles are drawn once per layout and cached; a frame then costs a copy, two
small disc blends and two bars (about 0.07 ms at 64 x 64 on one CPU core).
"""

from __future__ import annotations

import functools

import numpy as np

from worldflux.envs.nav3d.config import Nav3DConfig

__all__ = ["frame_geometry", "render_frame"]

BACKGROUND = np.array([12.0, 12.0, 16.0])
FLOOR = np.array([48.0, 48.0, 58.0])
OBSTACLE = np.array([80.0, 150.0, 255.0])
GOAL = np.array([60.0, 255.0, 90.0])
BODY_LOW = np.array([210.0, 40.0, 30.0])
BODY_HIGH = np.array([255.0, 235.0, 60.0])
BAR_BODY = np.array([255.0, 150.0, 40.0])


def frame_geometry(size: int, arena_half_width: float) -> tuple[int, int, float]:
    """``(arena_px, top, scale)``: arena square side (px), its first row, pixels per metre."""
    bar = max(3, round(size / 8))
    arena_px = size - bar
    return arena_px, (size - arena_px) // 2, arena_px / (2.0 * arena_half_width)


def to_pixels(xy: np.ndarray, size: int, arena_half_width: float) -> tuple[float, float]:
    """Continuous ``(col, row)`` of world point ``xy`` (pixel ``(c, r)`` covers ``[c, c+1)``)."""
    _, top, scale = frame_geometry(size, arena_half_width)
    L = arena_half_width
    return (float(xy[0]) + L) * scale, top + (L - float(xy[1])) * scale


@functools.lru_cache(maxsize=64)
def _static_layer(size: int, half_width: float, height: float, shape: str,
                  centers_bytes: bytes, half_sizes_bytes: bytes) -> np.ndarray:
    centers = np.frombuffer(centers_bytes, dtype=np.float64).reshape(-1, 3)
    half_sizes = np.frombuffer(half_sizes_bytes, dtype=np.float64).reshape(-1, 3)
    arena_px, top, scale = frame_geometry(size, half_width)
    frame = np.empty((size, size, 3))
    frame[:] = BACKGROUND
    pixel = (np.arange(arena_px) + 0.5) / scale
    xs = (-half_width + pixel)[None, None, :]  # [1, 1, A]
    ys = (half_width - pixel)[None, :, None]  # [1, A, 1]
    arena = np.broadcast_to(FLOOR, (arena_px, arena_px, 3)).copy()
    if len(centers):
        cx, cy, cz = (centers[:, i, None, None] for i in range(3))
        if shape == "sphere":
            radius = half_sizes[:, 0, None, None]
            rho2 = (xs - cx) ** 2 + (ys - cy) ** 2  # [K, A, A]
            coverage = np.clip((radius - np.sqrt(rho2)) * scale + 0.5, 0.0, 1.0)
            top_height = cz + np.sqrt(np.maximum(radius**2 - rho2, 0.0))
        else:
            hx, hy, hz = (half_sizes[:, i, None, None] for i in range(3))
            cover_x = np.clip((hx - np.abs(xs - cx)) * scale + 0.5, 0.0, 1.0)
            cover_y = np.clip((hy - np.abs(ys - cy)) * scale + 0.5, 0.0, 1.0)
            coverage = cover_x * cover_y
            top_height = np.broadcast_to(cz + hz, coverage.shape)
        top_height = np.where(coverage > 0, top_height, -np.inf)
        highest = np.argmax(top_height, axis=0)[None]  # [1, A, A]: the obstacle seen from above
        cover = np.take_along_axis(coverage, highest, 0)[0]
        shade = 0.3 + 0.7 * np.clip(np.take_along_axis(top_height, highest, 0)[0] / height, 0, 1)
        colour = shade[..., None] * OBSTACLE
        arena = arena * (1.0 - cover[..., None]) + colour * cover[..., None]
    frame[top:top + arena_px, :arena_px] = arena
    layer = np.rint(frame).astype(np.uint8)
    layer.flags.writeable = False
    return layer


def _blend_disc(frame: np.ndarray, col: float, row: float, radius: float,
                colour: np.ndarray) -> None:
    """Alpha-blend an anti-aliased disc centred at continuous ``(col, row)`` into ``frame``."""
    size = frame.shape[0]
    r0, r1 = max(0, int(row - radius - 1)), min(size, int(row + radius + 2))
    c0, c1 = max(0, int(col - radius - 1)), min(size, int(col + radius + 2))
    if r0 >= r1 or c0 >= c1:
        return
    rows = (np.arange(r0, r1) + 0.5 - row)[:, None]
    cols = (np.arange(c0, c1) + 0.5 - col)[None, :]
    cover = np.clip(radius - np.sqrt(rows**2 + cols**2) + 0.5, 0.0, 1.0)[..., None]
    window = frame[r0:r1, c0:c1]
    window[:] = np.rint(window * (1.0 - cover) + colour * cover)


def _blend_bar(frame: np.ndarray, c0: int, c1: int, fraction: float,
               colour: np.ndarray) -> None:
    """Fill columns ``[c0, c1)`` from the bottom up to ``fraction`` of the frame height."""
    size = frame.shape[0]
    c1 = min(c1, size)
    if c0 >= c1:
        return
    filled = float(np.clip(fraction, 0.0, 1.0)) * size
    cover = np.clip(filled - (size - 1 - np.arange(size)), 0.0, 1.0)[:, None, None]
    window = frame[:, c0:c1]
    window[:] = np.rint(window * (1.0 - cover) + colour * cover)


def render_frame(config: Nav3DConfig, centers: np.ndarray, half_sizes: np.ndarray,
                 goal: np.ndarray, position: np.ndarray, size: int = 64) -> np.ndarray:
    """One top-down frame ``[size, size, 3]`` uint8 (see the module docstring for its layout).

    Args:
        config: the world's settings (arena, success radius, obstacle shape).
        centers: obstacle centres ``[K, 3]`` (m); half_sizes: ``[K, 3]`` (m).
        goal: goal position ``[3]`` (m); position: body position ``[3]`` (m).
        size: side of the square frame (px); >= 16.
    """
    size = int(size)
    L, Z = float(config.arena_half_width), float(config.arena_height)
    layer = _static_layer(size, L, Z, config.obstacle_shape,
                          np.ascontiguousarray(centers, dtype=np.float64).tobytes(),
                          np.ascontiguousarray(half_sizes, dtype=np.float64).tobytes())
    frame = layer.astype(np.float32)
    arena_px, _, scale = frame_geometry(size, L)
    unit = size / 64.0
    col, row = to_pixels(goal, size, L)
    _blend_disc(frame, col, row, max(1.5 * unit, config.success_radius * scale), GOAL)
    height = float(np.clip(position[2] / Z, 0.0, 1.0))
    col, row = to_pixels(position, size, L)
    body = BODY_LOW + (BODY_HIGH - BODY_LOW) * height
    _blend_disc(frame, col, row, unit * (1.5 + 2.5 * height), body)
    width = max(1, (size - arena_px - 2) // 2)
    _blend_bar(frame, arena_px + 1, arena_px + 1 + width, height, BAR_BODY)
    _blend_bar(frame, arena_px + 2 + width, arena_px + 2 + 2 * width, goal[2] / Z, GOAL)
    return frame.astype(np.uint8)
