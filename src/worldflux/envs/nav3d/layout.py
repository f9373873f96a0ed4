"""Seeded placement of obstacles, start and goal, and distances to obstacles.

Obstacles are described by ``centers [K, 3]`` and ``half_sizes [K, 3]`` (m): a sphere has
radius ``half_sizes[k, 0]`` (all three entries equal), a box spans
``centers[k] +- half_sizes[k]``.
"""

from __future__ import annotations

import numpy as np

from worldflux.core.errors import ConfigError
from worldflux.envs.nav3d.config import Nav3DConfig

__all__ = ["CONTACT_TOLERANCE", "nearest_obstacle", "obstacle_surfaces", "sample_layout",
           "sample_start_goal"]

CONTACT_TOLERANCE = 1e-3
"""Contact skin (m): the body touches an obstacle when its centre is closer than
``body_radius + CONTACT_TOLERANCE`` to the obstacle's surface."""

OBSTACLE_REGION = 0.6
"""Obstacle centres lie in ``|x|, |y| <= OBSTACLE_REGION * arena_half_width``."""

START_GOAL_BAND = (0.5, 1.5)
"""Start and goal lie this far (m) from two opposite walls (drawn per episode)."""

START_GOAL_HEIGHT_MARGIN = 0.5
"""Start and goal heights are drawn in ``[margin, arena_height - margin]`` (m)."""

_LAYOUT_RESTARTS = 10
_LAYOUT_TRIES = 100  # draws per obstacle in one attempt


def _gap(config: Nav3DConfig) -> float:
    """Smallest free space (m) kept between two obstacles and between obstacles and walls."""
    return 2 * config.body_radius + 0.1


def sample_layout(config: Nav3DConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``num_obstacles`` non-overlapping obstacles: ``(centers [K, 3], half_sizes [K, 3])``.

    Obstacles keep at least ``2 * body_radius + 0.1`` m of free space between one another and
    between themselves and the walls, floor and ceiling, so that pushing the body out of one
    never pushes it into another or through a wall.

    Raises:
        ConfigError: the obstacles cannot be placed (too many or too large for the arena).
    """
    count = int(config.num_obstacles)
    centers = np.zeros((count, 3))
    half_sizes = np.zeros((count, 3))
    if count == 0:
        return centers, half_sizes
    L, Z, gap = config.arena_half_width, config.arena_height, _gap(config)
    low, high = config.obstacle_size
    box = config.obstacle_shape == "box"
    for _ in range(_LAYOUT_RESTARTS):
        placed = 0
        for _ in range(_LAYOUT_TRIES * count):
            size = rng.uniform(low, high, 3 if box else 1) * np.ones(3)
            reach = (min(OBSTACLE_REGION * L, L - size[0] - gap),
                     min(OBSTACLE_REGION * L, L - size[1] - gap))
            z_low, z_high = size[2] + gap, Z - size[2] - gap
            if min(reach) < 0 or z_high < z_low:
                break
            center = np.array([rng.uniform(-reach[0], reach[0]), rng.uniform(-reach[1], reach[1]),
                               rng.uniform(z_low, z_high)])
            if placed and not _separated(center, size, centers[:placed], half_sizes[:placed],
                                         gap, box):
                continue
            centers[placed], half_sizes[placed] = center, size
            placed += 1
            if placed == count:
                return centers, half_sizes
    raise ConfigError(
        f"Nav3DConfig.num_obstacles: could not place {count} {config.obstacle_shape} obstacles of "
        f"size {config.obstacle_size} m with {gap:.2f} m between them in an arena of half-width "
        f"{L} m and height {Z} m; expected fewer or smaller obstacles")


def _separated(center: np.ndarray, size: np.ndarray, centers: np.ndarray,
               half_sizes: np.ndarray, gap: float, box: bool) -> bool:
    if box:
        # Two boxes are apart when one axis separates them by at least ``gap``.
        apart = np.abs(centers - center) >= half_sizes + size + gap
        return bool(np.all(np.any(apart, axis=1)))
    distance = np.linalg.norm(centers - center, axis=1)
    return bool(np.all(distance >= half_sizes[:, 0] + size[0] + gap))


def sample_start_goal(config: Nav3DConfig, centers: np.ndarray, half_sizes: np.ndarray,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``(start [3], goal [3])`` near two opposite walls, clear of the obstacles.

    A random horizontal axis (x or y) and direction are drawn; the start lies 0.5-1.5 m from
    one wall, the goal 0.5-1.5 m from the opposite one (so the obstacles, in the middle, tend
    to lie in between), both at a height in ``[0.5, Z - 0.5]`` m. The start keeps 0.3 m of
    clearance from every obstacle, the goal ``success_radius + 0.1`` m.
    """
    L, Z = config.arena_half_width, config.arena_height
    near, far = L - START_GOAL_BAND[1], L - START_GOAL_BAND[0]
    margin = START_GOAL_HEIGHT_MARGIN
    for _ in range(1000):
        axis = int(rng.integers(2))
        sign = 1.0 if rng.integers(2) else -1.0
        start, goal = np.empty(3), np.empty(3)
        start[axis] = -sign * rng.uniform(near, far)
        goal[axis] = sign * rng.uniform(near, far)
        start[1 - axis] = rng.uniform(-far, far)
        goal[1 - axis] = rng.uniform(-far, far)
        start[2] = rng.uniform(margin, Z - margin)
        goal[2] = rng.uniform(margin, Z - margin)
        if _clearance(start, config, centers, half_sizes) < 0.3:
            continue
        if _clearance(goal, config, centers, half_sizes) < config.success_radius + 0.1:
            continue
        return start, goal
    raise ConfigError("Nav3DConfig: no start and goal clear of the obstacles were found; "
                      "expected fewer or smaller obstacles (num_obstacles, obstacle_size)")


def _clearance(point: np.ndarray, config: Nav3DConfig, centers: np.ndarray,
               half_sizes: np.ndarray) -> float:
    if len(centers) == 0:
        return float("inf")
    signed, _, _ = nearest_obstacle(point[None], centers[None], half_sizes[None],
                                    config.obstacle_shape)
    return float(signed[0]) - config.body_radius


def obstacle_surfaces(position: np.ndarray, centers: np.ndarray, half_sizes: np.ndarray,
                      shape: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each obstacle's nearest surface point, batched.

    Args:
        position: body centres ``[n, 3]``.
        centers: obstacle centres ``[n, K, 3]`` (K >= 1).
        half_sizes: obstacle half sizes ``[n, K, 3]``.
        shape: ``"sphere"`` or ``"box"``.

    Returns:
        ``signed [n, K]``: signed distance (m) from the body centre to obstacle ``k``'s surface
        (negative inside); ``offset [n, K, 3]``: that surface point minus the body centre;
        ``normal [n, K, 3]``: unit outward surface normal there.
    """
    rel = position[:, None, :] - centers  # [n, K, 3]
    if shape == "sphere":
        dist = np.linalg.norm(rel, axis=-1)  # [n, K]
        safe = np.where(dist > 1e-12, dist, 1.0)
        normal = np.where((dist > 1e-12)[..., None], rel / safe[..., None], [0.0, 0.0, 1.0])
        signed = dist - half_sizes[..., 0]
        offset = -signed[..., None] * normal
        return signed, offset, normal
    clamped = np.clip(rel, -half_sizes, half_sizes)
    outside_offset = clamped - rel
    outside_dist = np.linalg.norm(outside_offset, axis=-1)
    depth = half_sizes - np.abs(rel)  # [n, K, 3], all > 0 inside
    axis = np.argmin(depth, axis=-1)  # [n, K]
    side = np.where(np.take_along_axis(rel, axis[..., None], -1)[..., 0] >= 0, 1.0, -1.0)
    inside_normal = np.zeros_like(rel)
    np.put_along_axis(inside_normal, axis[..., None], side[..., None], -1)
    inside_depth = np.take_along_axis(depth, axis[..., None], -1)[..., 0]
    inside = outside_dist <= 0.0
    signed = np.where(inside, -inside_depth, outside_dist)
    safe = np.where(outside_dist > 0, outside_dist, 1.0)
    normal = np.where(inside[..., None], inside_normal, -outside_offset / safe[..., None])
    offset = np.where(inside[..., None], inside_depth[..., None] * inside_normal, outside_offset)
    return signed, offset, normal


def nearest_obstacle(position: np.ndarray, centers: np.ndarray, half_sizes: np.ndarray,
                     shape: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest obstacle surface of each body, batched.

    Args:
        position: body centres ``[n, 3]``.
        centers: obstacle centres ``[n, K, 3]`` (K may be 0).
        half_sizes: obstacle half sizes ``[n, K, 3]``.
        shape: ``"sphere"`` or ``"box"``.

    Returns:
        ``signed [n]``: signed distance (m) from the body centre to the nearest surface
        (negative inside an obstacle; ``inf`` without obstacles); ``offset [n, 3]``: nearest
        surface point minus body centre (zeros without obstacles); ``normal [n, 3]``: unit
        outward surface normal there.
    """
    n, count = position.shape[0], centers.shape[1]
    if count == 0:
        zeros = np.zeros((n, 3))
        return np.full(n, np.inf), zeros, zeros.copy()
    signed, offset, normal = obstacle_surfaces(position, centers, half_sizes, shape)
    nearest = np.argmin(signed, axis=1)  # [n]
    rows = np.arange(n)
    return signed[rows, nearest], offset[rows, nearest], normal[rows, nearest]
