"""Settings of the Nav3D world and the layout of its state observation.

Units: metres (m), seconds (s), kilograms (kg), newtons (N). The arena spans
``x, y in [-arena_half_width, arena_half_width]`` and ``z in [0, arena_height]`` with gravity
along ``-z``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from worldflux.core.errors import ConfigError, close_matches

__all__ = [
    "ACTION_DIM",
    "OBSTACLE_OBSERVATIONS",
    "GOAL_SLICE",
    "OBSTACLE_SLICE",
    "OBS_DIM",
    "OBS_NAMES",
    "POSITION_SLICE",
    "VELOCITY_SLICE",
    "Nav3DConfig",
]

OBS_NAMES: tuple[str, ...] = (
    "x", "y", "z",                      # body position (m)
    "vx", "vy", "vz",                   # body velocity (m/s)
    "goal_dx", "goal_dy", "goal_dz",    # goal position - body position (m)
    "obst_dx", "obst_dy", "obst_dz",    # nearest obstacle surface point - body position (m)
)
"""Names of the 12 float32 entries of a state observation, in order."""

OBS_DIM = len(OBS_NAMES)
"""Size of a state observation (12)."""

ACTION_DIM = 3
"""Actions are force commands ``[fx, fy, fz]`` in ``[-1, 1]``, scaled by ``max_force``."""

POSITION_SLICE = slice(0, 3)
"""``obs[..., POSITION_SLICE]``: body position ``[x, y, z]`` (m)."""

VELOCITY_SLICE = slice(3, 6)
"""``obs[..., VELOCITY_SLICE]``: body velocity (m/s)."""

GOAL_SLICE = slice(6, 9)
"""``obs[..., GOAL_SLICE]``: goal minus body position (m); its norm is the goal distance."""

OBSTACLE_SLICE = slice(9, 12)
"""``obs[..., OBSTACLE_SLICE]``: offset from the body centre to the nearest point of the
nearest obstacle's surface (m). Its norm minus ``body_radius`` is the clearance; after a
collision the body is pushed out to exactly ``body_radius``. All zeros when there are no
obstacles."""

OBSTACLE_SHAPES = ("sphere", "box")

OBSTACLE_OBSERVATIONS = ("nearest", "each")

MAX_OBSTACLES = 8
"""Most obstacles the central region holds (8 default-size spheres; about 6 default-size
boxes: more, or larger ones, may fail to place and raise ConfigError)."""


@dataclass
class Nav3DConfig:
    """Physics, task, perturbation and reward settings of ``worldflux/Nav3D-v0``.

    The defaults are the nominal (training) conditions. Out-of-distribution variants change
    ``wind``, ``gust_std`` or ``mass_scale`` (the scripted controller keeps assuming the
    nominal mass), or ``num_obstacles`` / ``obstacle_shape`` / ``layout_seed``.
    """

    arena_half_width: float = 5.0
    """``L`` (m): the body centre stays in ``x, y in [-L, L]``. Walls clamp the position and
    zero the velocity component into the wall; wall contact is not a collision."""

    arena_height: float = 4.0
    """``Z`` (m): the body centre stays in ``z in [0, Z]``; the floor (``z = 0``) and the
    ceiling (``z = Z``) act like walls (clamped, not collisions)."""

    dt: float = 0.1
    """Time step (s) of the semi-implicit Euler integration (velocity first, then position)."""

    mass: float = 1.0
    """Nominal body mass (kg)."""

    mass_scale: float = 1.0
    """Perturbation: the simulated mass is ``mass * mass_scale``. Hovering needs
    ``mass * mass_scale * gravity < max_force``, i.e. ``mass_scale < ~2`` by default."""

    drag: float = 4.0
    """Linear drag coefficient (N s / m): drag force ``-drag * velocity``. With
    ``max_force = 20`` the horizontal terminal speed at full thrust is 5 m/s and the velocity
    time constant ``mass / drag`` is 0.25 s."""

    gravity: float = 9.81
    """Gravitational acceleration (m/s^2) along ``-z``: hovering takes an upward action of
    ``mass * gravity / max_force`` (0.49 by default)."""

    max_force: float = 20.0
    """Force (N) of a full action on each axis: ``force = max_force * clip(action, -1, 1)``."""

    body_radius: float = 0.2
    """Body radius (m), used for obstacle contact (walls and floor hold the centre)."""

    num_obstacles: int = 4
    """Number of obstacles (at most 8), placed in the central part of the arena without
    overlapping (their surfaces stay at least ``2 * body_radius + 0.1`` m apart and away from
    the walls, floor and ceiling, so the body can pass between any two of them)."""

    obstacle_shape: str = "sphere"
    """``"sphere"`` or ``"box"`` (axis-aligned)."""

    obstacle_observation: str = "nearest"
    """What the state observation says of the obstacles (entries 9 on): ``"nearest"``, the
    offset to the nearest point of the nearest obstacle (3 entries, 12 in all; it jumps when
    another obstacle becomes the nearest); ``"each"``, the offset to the nearest surface point
    of every obstacle in layout order (``3 * num_obstacles`` entries: smooth along any flight,
    so a learned model can predict them; the nearest is the shortest)."""

    obstacle_size: tuple[float, float] = (0.7, 1.1)
    """Range (m) of sphere radii, or of box half-extents (drawn per axis)."""

    layout_seed: int | str = 0
    """Seed of the obstacle layout, fixed for the env instance; ``"random"`` draws a new layout
    at every reset from the episode's random stream."""

    success_radius: float = 0.5
    """The episode succeeds (``terminated=True``) when the body centre is within this distance
    (m) of the goal."""

    time_limit: int | None = 200
    """Steps after which an episode is truncated (``truncated=True``); None = never. Named
    differently from gymnasium's ``max_episode_steps`` (which only adds a ``TimeLimit``
    wrapper) so that it can be passed through ``gymnasium.make``."""

    wind: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Constant wind force (N) ``[fx, fy, fz]`` added at every step."""

    gust_std: float = 2.0
    """Standard deviation (N) of an independent Gaussian gust force drawn on each axis at every
    step (independent across steps, so the state observation stays Markov). The default, 10%
    of ``max_force``, moves the body by ~0.2 m/s per step: passing obstacles with a few
    centimetres to spare then collides now and then, wider margins do not."""

    progress_scale: float = 1.0
    """Reward per metre of progress: ``progress_scale * (previous distance - new distance)``."""

    collision_penalty: float = 1.0
    """Reward subtracted on every step that ends in contact with an obstacle."""

    success_bonus: float = 5.0
    """Reward added on the step that reaches the goal."""

    control_cost: float = 0.0
    """Reward subtracted per unit of ``|action|^2`` (action in ``[-1, 1]^3``)."""

    def validate(self) -> Nav3DConfig:
        """Check every field; returns ``self``. Raises :class:`ConfigError` naming the field."""
        positive = ("arena_half_width", "arena_height", "dt", "mass", "mass_scale", "drag",
                    "max_force", "body_radius", "success_radius")
        for name in positive:
            value = getattr(self, name)
            if not _is_number(value) or not value > 0:
                raise ConfigError(f"Nav3DConfig.{name}: expected a number > 0, got {value!r}")
        non_negative = ("gravity", "gust_std", "progress_scale", "collision_penalty",
                        "success_bonus", "control_cost")
        for name in non_negative:
            value = getattr(self, name)
            if not _is_number(value) or not value >= 0:
                raise ConfigError(f"Nav3DConfig.{name}: expected a number >= 0, got {value!r}")
        if isinstance(self.num_obstacles, bool) or int(self.num_obstacles) != self.num_obstacles \
                or not 0 <= self.num_obstacles <= MAX_OBSTACLES:
            raise ConfigError(
                f"Nav3DConfig.num_obstacles: expected an integer in [0, {MAX_OBSTACLES}], "
                f"got {self.num_obstacles!r}")
        if self.obstacle_shape not in OBSTACLE_SHAPES:
            raise ConfigError(f"Nav3DConfig.obstacle_shape: expected one of {OBSTACLE_SHAPES}, "
                              f"got {self.obstacle_shape!r}")
        if self.obstacle_observation not in OBSTACLE_OBSERVATIONS:
            raise ConfigError(f"Nav3DConfig.obstacle_observation: expected one of "
                              f"{OBSTACLE_OBSERVATIONS}, got {self.obstacle_observation!r}")
        size = tuple(self.obstacle_size)
        if len(size) != 2 or not all(_is_number(v) for v in size) or not 0 < size[0] <= size[1]:
            raise ConfigError(f"Nav3DConfig.obstacle_size: expected (low, high) with "
                              f"0 < low <= high (m), got {self.obstacle_size!r}")
        room = min(self.arena_half_width, self.arena_height / 2)
        if size[1] + 2 * self.body_radius + 0.1 > room:
            raise ConfigError(
                f"Nav3DConfig.obstacle_size: largest size {size[1]} m leaves no room for the "
                f"body in an arena of half-width {self.arena_half_width} m and height "
                f"{self.arena_height} m; expected at most "
                f"{room - 2 * self.body_radius - 0.1:.2f} m")
        if not (self.layout_seed == "random" or (
                isinstance(self.layout_seed, int) and not isinstance(self.layout_seed, bool)
                and self.layout_seed >= 0)):
            raise ConfigError(f"Nav3DConfig.layout_seed: expected an integer >= 0 or 'random', "
                              f"got {self.layout_seed!r}")
        if self.time_limit is not None and (
                isinstance(self.time_limit, bool) or int(self.time_limit) != self.time_limit
                or self.time_limit < 1):
            raise ConfigError(f"Nav3DConfig.time_limit: expected an integer >= 1 or None, "
                              f"got {self.time_limit!r}")
        wind = tuple(self.wind)
        if len(wind) != 3 or not all(_is_number(v) for v in wind):
            raise ConfigError(f"Nav3DConfig.wind: expected 3 numbers (N), got {self.wind!r}")
        return self

    @property
    def obs_dim(self) -> int:
        """Entries of a state observation: 12 (``"nearest"``) or ``9 + 3 * num_obstacles``."""
        if self.obstacle_observation == "each":
            return 9 + 3 * int(self.num_obstacles)
        return OBS_DIM

    def observation_names(self) -> tuple[str, ...]:
        """Names of the state observation's entries, in order (``OBS_NAMES`` by default)."""
        if self.obstacle_observation != "each":
            return OBS_NAMES
        each = tuple(f"obst{k}_d{axis}" for k in range(int(self.num_obstacles))
                     for axis in "xyz")
        return OBS_NAMES[:9] + each

    @property
    def body_mass(self) -> float:
        """Simulated mass (kg): ``mass * mass_scale``."""
        return float(self.mass * self.mass_scale)

    def replace(self, **changes: Any) -> Nav3DConfig:
        """A validated copy with ``changes`` applied; unknown names raise :class:`ConfigError`."""
        names = [f.name for f in dataclasses.fields(self)]
        for key in changes:
            if key not in names:
                raise ConfigError(
                    f"Nav3D option {key!r}: unknown; expected one of {', '.join(names)}."
                    f"{close_matches(key, names)}")
        changes = dict(changes)
        for key in ("wind", "obstacle_size"):
            if key in changes and changes[key] is not None:
                try:
                    changes[key] = tuple(float(v) for v in changes[key])
                except (TypeError, ValueError) as exc:
                    raise ConfigError(f"Nav3DConfig.{key}: expected a sequence of numbers, "
                                      f"got {changes[key]!r}") from exc
        return dataclasses.replace(self, **changes).validate()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and value == value and abs(value) != float("inf")
