"""worldflux/Nav3D-v0: physics, seeding, batch = single envs, reward_fn, images, registration."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch

from worldflux.core.errors import ConfigError
from worldflux.envs import check_env, env_spec, list_envs, make
from worldflux.envs.nav3d import (
    GOAL_SLICE,
    OBS_NAMES,
    OBSTACLE_SLICE,
    Nav3DBatch,
    Nav3DConfig,
    Nav3DEnv,
    evaluate_policy,
    random_policy,
    reward_fn,
    scripted_action,
)
from worldflux.envs.nav3d.render import GOAL, frame_geometry, render_frame, to_pixels

ENV_ID = "worldflux/Nav3D-v0"
QUIET = Nav3DConfig(num_obstacles=0, gust_std=0.0)
"""No obstacles, no gusts: dynamics checked against closed-form values."""


def _hover(config: Nav3DConfig, n: int = 1) -> np.ndarray:
    """Actions ``[n, 3]`` that cancel gravity for the nominal mass."""
    action = np.zeros((n, 3))
    action[:, 2] = config.mass * config.gravity / config.max_force
    return action


def _place(batch: Nav3DBatch, position, velocity=(0.0, 0.0, 0.0)) -> None:
    batch.position[:] = np.asarray(position, dtype=np.float64)
    batch.velocity[:] = np.asarray(velocity, dtype=np.float64)
    batch._distance = np.linalg.norm(batch.goal - batch.position, axis=1)


# ------------------------------------------------------------------------------ seeding, batch


def test_same_seed_same_episode_and_other_seed_differs():
    def rollout(seed: int) -> np.ndarray:
        env = Nav3DEnv()
        obs = [env.reset(seed=seed)[0]]
        actions = np.random.default_rng(0).uniform(-1, 1, (25, 3))
        obs += [env.step(action)[0] for action in actions]
        return np.stack(obs)

    first, again, other = rollout(7), rollout(7), rollout(8)
    np.testing.assert_array_equal(first, again)
    assert first.shape == (26, len(OBS_NAMES)) and first.dtype == np.float32
    assert not np.allclose(first[0], other[0])


def test_batch_of_n_equals_n_single_envs():
    n, seed = 5, 11
    batch = Nav3DBatch(n)
    batch_obs, _ = batch.reset(seed=seed)
    singles = [Nav3DEnv() for _ in range(n)]
    single_obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(singles)])
    np.testing.assert_array_equal(batch_obs, single_obs)
    rng = np.random.default_rng(1)
    for _ in range(40):
        actions = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
        obs, reward, terminated, truncated, info = batch.step(actions)
        for i, env in enumerate(singles):
            o, r, te, tr, inf = env.step(actions[i])
            np.testing.assert_allclose(obs[i], o, rtol=0, atol=1e-6)
            assert abs(reward[i] - r) < 1e-9
            assert (terminated[i], truncated[i]) == (te, tr)
            assert info["collisions"][i] == inf["collisions"]


def test_fixed_layout_is_kept_and_random_layout_changes():
    fixed = Nav3DBatch(2, Nav3DConfig(layout_seed=3))
    fixed.reset(seed=0)
    first = fixed.centers.copy()
    fixed.reset()
    np.testing.assert_array_equal(fixed.centers, first)
    assert np.allclose(fixed.centers[0], fixed.centers[1])
    assert not np.allclose(first, Nav3DBatch(1, Nav3DConfig(layout_seed=4)).centers[0])

    random = Nav3DBatch(2, Nav3DConfig(layout_seed="random"))
    random.reset(seed=0)
    before = random.centers.copy()
    random.reset()
    assert not np.allclose(before, random.centers)
    assert not np.allclose(before[0], before[1])


def test_starts_and_goals_are_clear_of_obstacles():
    config = Nav3DConfig(layout_seed="random", num_obstacles=6)
    batch = Nav3DBatch(100, config)
    obs, _ = batch.reset(seed=0)
    clearance = np.linalg.norm(obs[:, OBSTACLE_SLICE], axis=1) - config.body_radius
    assert clearance.min() >= 0.3 - 1e-5
    goal_distance = np.linalg.norm(obs[:, GOAL_SLICE], axis=1)
    assert goal_distance.min() > 5.0  # start and goal lie near opposite walls


# ------------------------------------------------------------------------------ physics


def test_without_thrust_the_body_falls_to_the_floor():
    batch = Nav3DBatch(1, QUIET)
    batch.reset(seed=0)
    _place(batch, [0.0, 0.0, 3.0])
    obs, *_, info = batch.step(np.zeros((1, 3)))
    # First semi-implicit Euler step: v = -g dt, z = 3 - g dt^2.
    np.testing.assert_allclose(obs[0, 5], -QUIET.gravity * QUIET.dt, rtol=1e-6)
    np.testing.assert_allclose(obs[0, 2], 3.0 - QUIET.gravity * QUIET.dt**2, rtol=1e-6)
    for _ in range(30):
        obs, *_, info = batch.step(np.zeros((1, 3)))
    assert obs[0, 2] == 0.0 and obs[0, 5] == 0.0
    assert info["boundary_contact"][0] and not info["collision"][0]
    # Hover thrust holds the altitude.
    _place(batch, [0.0, 0.0, 2.0])
    for _ in range(20):
        obs, *_ = batch.step(_hover(QUIET))
    np.testing.assert_allclose(obs[0, 2], 2.0, atol=1e-5)


def test_drag_gives_terminal_velocity_force_over_drag():
    for drag in (4.0, 8.0):
        config = QUIET.replace(drag=drag)
        batch = Nav3DBatch(1, config)
        batch.reset(seed=0)
        _place(batch, [-4.8, 0.0, 2.0])
        action = _hover(config)
        action[0, 0] = 1.0
        for _ in range(15):  # 15 time constants of the velocity for drag 4 (0.6 per step)
            obs, *_ = batch.step(action)
        assert not batch.position[0, 0] >= config.arena_half_width  # no wall reached
        np.testing.assert_allclose(obs[0, 3], config.max_force / drag, rtol=1e-3)
        assert abs(obs[0, 5]) < 1e-6


def test_obstacle_contact_pushes_out_zeroes_inward_velocity_and_is_penalised():
    config = Nav3DConfig(num_obstacles=1, gust_std=0.0)
    batch = Nav3DBatch(1, config)
    batch.reset(seed=0)
    center, radius = batch.centers[0, 0], batch.half_sizes[0, 0, 0]
    contact = radius + config.body_radius
    # Just outside the contact distance on the -x side, flying at the obstacle.
    _place(batch, center - [contact + 0.05, 0.0, 0.0], velocity=[3.0, 0.0, 0.0])
    action = _hover(config)
    action[0, 0] = 1.0
    obs, reward, terminated, _, info = batch.step(action)
    assert info["collision"][0] and info["collisions"][0] == 1 and not terminated[0]
    np.testing.assert_allclose(np.linalg.norm(batch.position[0] - center), contact, atol=1e-9)
    normal = (batch.position[0] - center) / contact
    assert float(batch.velocity[0] @ normal) >= -1e-9  # no velocity into the obstacle
    np.testing.assert_allclose(np.linalg.norm(obs[0, OBSTACLE_SLICE]), config.body_radius,
                               atol=1e-6)
    progress = reward[0] + config.collision_penalty
    assert abs(progress) < 0.5  # the penalty was subtracted from a small progress term
    # Steering away ends the contact; the episode count stays.
    action[0, 0] = -1.0
    for _ in range(3):
        obs, reward, _, _, info = batch.step(action)
    assert not info["collision"][0] and info["collisions"][0] == 1


def test_box_obstacles_push_out_along_the_nearest_face():
    config = Nav3DConfig(num_obstacles=1, obstacle_shape="box", gust_std=0.0)
    batch = Nav3DBatch(1, config)
    batch.reset(seed=0)
    center, half = batch.centers[0, 0], batch.half_sizes[0, 0]
    _place(batch, center + [0.0, 0.0, half[2] + config.body_radius + 0.02],
           velocity=[0.0, 0.0, -2.0])
    obs, _, _, _, info = batch.step(np.zeros((1, 3)))  # falls onto the top face
    assert info["collision"][0]
    np.testing.assert_allclose(batch.position[0, 2], center[2] + half[2] + config.body_radius,
                               atol=1e-9)
    assert batch.velocity[0, 2] >= 0.0
    np.testing.assert_allclose(obs[0, OBSTACLE_SLICE], [0.0, 0.0, -config.body_radius],
                               atol=1e-6)


def test_success_terminates_with_the_bonus():
    config = Nav3DConfig(gust_std=0.0)
    batch = Nav3DBatch(1, config)
    batch.reset(seed=0)
    goal = batch.goal[0]
    _place(batch, goal - [0.6, 0.0, 0.0], velocity=[3.0, 0.0, 0.0])  # moves 0.18 m
    before = np.linalg.norm(batch.goal[0] - batch.position[0])
    _, reward, terminated, truncated, info = batch.step(_hover(config))
    after = info["distance"][0]
    assert terminated[0] and not truncated[0] and info["success"][0]
    assert after <= config.success_radius
    np.testing.assert_allclose(reward[0], (before - after) + config.success_bonus, atol=1e-9)


def test_time_limit_truncates_and_does_not_terminate():
    env = Nav3DEnv(time_limit=12, num_obstacles=0)
    env.reset(seed=0)
    for step in range(1, 13):
        _, _, terminated, truncated, _ = env.step(np.zeros(3, np.float32))
        assert not terminated
        assert truncated == (step == 12)


def test_perturbations_change_the_dynamics():
    def final_velocity(**options) -> np.ndarray:
        config = QUIET.replace(**options)
        batch = Nav3DBatch(1, config)
        batch.reset(seed=0)
        _place(batch, [0.0, 0.0, 2.0])
        for _ in range(8):
            obs, *_ = batch.step(_hover(QUIET))  # the nominal hover thrust
        return obs[0, 3:6]

    np.testing.assert_allclose(final_velocity(), 0.0, atol=1e-9)
    # A constant 2 N wind drifts the body at wind / drag.
    np.testing.assert_allclose(final_velocity(wind=(2.0, 0.0, 0.0))[0], 2.0 / 4.0, rtol=0.05)
    assert final_velocity(mass_scale=1.5)[2] < -1.0  # heavier: the nominal thrust sinks it
    gusty = final_velocity(gust_std=3.0)
    assert np.abs(gusty).max() > 0.05


# ------------------------------------------------------------------------------ reward_fn


def test_reward_fn_recomputes_env_rewards_from_observations():
    config = Nav3DConfig(control_cost=0.05, layout_seed="random")
    batch = Nav3DBatch(32, config)
    obs, _ = batch.reset(seed=0)
    rng = np.random.default_rng(0)
    rows: list[tuple[np.ndarray, ...]] = []
    active = np.ones(32, dtype=bool)
    blind = config.replace(num_obstacles=0)  # flies straight at the goal, hitting obstacles
    for _ in range(80):
        action = np.clip(scripted_action(obs, blind) + 0.3 * rng.standard_normal((32, 3)), -1, 1)
        next_obs, reward, terminated, truncated, _ = batch.step(action)
        rows += [(obs[i], action[i], next_obs[i], reward[i]) for i in np.flatnonzero(active)]
        active &= ~(terminated | truncated)
        obs = next_obs
    o, a, o2, r = (np.stack(column) for column in zip(*rows, strict=True))
    predicted = reward_fn(torch.from_numpy(o), torch.from_numpy(a).float(),
                          torch.from_numpy(o2), config).numpy()
    np.testing.assert_allclose(predicted, r, atol=2e-4)
    assert (r < -0.5).sum() >= 5  # collisions are in the data
    assert (r > 3.0).sum() >= 10  # and successes


# ------------------------------------------------------------------------------ images


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(mask)
    return float(cols.mean()) + 0.5, float(rows.mean()) + 0.5


def test_image_observations_show_goal_body_and_altitudes():
    env = Nav3DEnv(obs_type="image", render_mode="rgb_array", num_obstacles=0)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 64, 64) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs)
    np.testing.assert_array_equal(env.render(), obs.transpose(1, 2, 0))

    config = env.config
    arena_px, _, scale = frame_geometry(64, config.arena_half_width)
    empty = np.zeros((0, 3))

    def frame(goal, body):
        return render_frame(config, empty, empty, np.asarray(goal), np.asarray(body), 64)

    def goal_mask(image):
        return np.all(image[:, :arena_px] == GOAL.astype(np.uint8), axis=-1)

    def body_mask(image):
        arena = image[:, :arena_px].astype(int)
        return (arena[..., 0] > 150) & (arena[..., 2] < 100) & (arena[..., 1] < 245)

    a = frame([3.0, 2.0, 1.0], [-3.0, -2.0, 1.0])
    b = frame([1.0, 2.0, 1.0], [-3.0, 1.0, 3.0])
    goal_a, goal_b = _centroid(goal_mask(a)), _centroid(goal_mask(b))
    np.testing.assert_allclose(goal_a, to_pixels(np.array([3.0, 2.0]), 64, 5.0), atol=0.5)
    np.testing.assert_allclose(goal_a[0] - goal_b[0], 2.0 * scale, atol=0.5)
    body_a, body_b = _centroid(body_mask(a)), _centroid(body_mask(b))
    np.testing.assert_allclose(body_a[1] - body_b[1], 3.0 * scale, atol=0.5)
    assert body_mask(b).sum() > body_mask(a).sum()  # higher body: bigger marker
    # Altitude bars (right edge): body column, then goal column, filled from the bottom.
    body_col, goal_col = arena_px + 1, arena_px + 5
    filled = lambda image, col: int((image[:, col].astype(int).sum(-1) > 200).sum())  # noqa: E731
    assert abs(filled(a, body_col) - 64 * 1.0 / 4.0) <= 1
    assert abs(filled(b, body_col) - 64 * 3.0 / 4.0) <= 1
    assert abs(filled(a, goal_col) - 16) <= 1
    # Obstacles are drawn, brighter where higher; a bigger render for people.
    big = Nav3DEnv(render_mode="rgb_array", render_size=256)
    big.reset(seed=0)
    assert big.render().shape == (256, 256, 3)


def test_image_step_moves_the_body_pixels():
    env = Nav3DEnv(obs_type="image", num_obstacles=0, gust_std=0.0)
    first, _ = env.reset(seed=1)
    for _ in range(5):
        obs, *_ = env.step(np.array([1.0, 1.0, 0.7], np.float32))
    assert np.abs(obs.astype(int) - first.astype(int)).sum() > 500


def test_rendering_is_fast():
    import time

    batch = Nav3DBatch(1)
    batch.reset(seed=0)
    batch.render(64)
    start = time.perf_counter()
    for _ in range(200):
        batch.render(64)
    per_frame = (time.perf_counter() - start) / 200
    assert per_frame < 1e-3  # ~0.07 ms on one core; generous for loaded CI machines


# ------------------------------------------------------------------------------ controllers


def test_scripted_controller_reaches_the_goal_and_random_does_not():
    scripted = evaluate_policy(lambda obs: scripted_action(obs), episodes=100, seed=0)
    assert scripted["success_rate"] >= 0.9
    assert scripted["collision_rate"] <= 0.1
    rand = evaluate_policy(random_policy(0), episodes=100, seed=0)
    assert rand["success_rate"] <= 0.1
    blind = evaluate_policy(lambda obs: scripted_action(obs, QUIET), episodes=100, seed=0)
    assert blind["collision_rate"] >= 0.3  # obstacles are in the way of the straight line


# ------------------------------------------------------------------------------ registration


def test_gymnasium_make_check_env_and_list_envs():
    assert ENV_ID in list_envs()
    env = gymnasium.make(ENV_ID)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (12,)
    check_env(Nav3DEnv())
    check_env(make(ENV_ID, obs_type="image"), obs_type="image")


def test_worldflux_make_both_obs_types_and_options():
    state = make(ENV_ID, seed=0)
    obs, _ = state.reset()
    assert obs.shape == (12,) and obs.dtype == np.float32
    spec = env_spec(state)
    assert spec["action_dim"] == 3 and spec["action_kind"] == "continuous"
    image = make(ENV_ID, obs_type="image", image_size=32, seed=0)
    pixels, _ = image.reset()
    assert pixels.shape == (3, 32, 32) and pixels.dtype == np.uint8
    empty = make(ENV_ID, num_obstacles=0, seed=0)
    np.testing.assert_array_equal(empty.reset()[0][OBSTACLE_SLICE], 0.0)
    short = make(ENV_ID, max_episode_steps=5, seed=0)
    short.reset()
    flags = [short.step(np.zeros(3, np.float32))[3] for _ in range(5)]
    assert flags == [False] * 4 + [True]
    with pytest.raises(ConfigError, match="num_obstacle"):
        make(ENV_ID, num_obstacle=3)


def test_vector_env_autoresets_in_the_same_step():
    envs = gymnasium.make_vec(ENV_ID, num_envs=3, vectorization_mode="vector_entry_point",
                              time_limit=4)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (3, 12)
    for _ in range(4):
        obs, reward, terminated, truncated, info = envs.step(np.zeros((3, 3), np.float32))
    assert truncated.all() and info["_final_obs"].all()
    assert not np.allclose(obs, info["final_obs"])  # new episodes started
    assert info["steps"].tolist() == [4, 4, 4]


def test_batch_autoreset_returns_new_first_observations():
    batch = Nav3DBatch(3, Nav3DConfig(time_limit=3), autoreset=True)
    batch.reset(seed=0)
    for _ in range(3):
        obs, _, _, truncated, info = batch.step(np.zeros((3, 3)))
    assert truncated.all() and info["steps"].tolist() == [3, 3, 3]
    assert batch.steps.tolist() == [0, 0, 0]
    np.testing.assert_array_equal(obs, batch.observe())
    assert not np.allclose(obs, info["final_obs"])


def test_invalid_options_name_the_field():
    with pytest.raises(ConfigError, match="obstacle_shape"):
        Nav3DConfig(obstacle_shape="cone").validate()
    with pytest.raises(ConfigError, match="layout_seed"):
        Nav3DConfig(layout_seed="sometimes").validate()
    with pytest.raises(ConfigError, match="num_obstacles"):
        Nav3DConfig(num_obstacles=12).validate()
    with pytest.raises(ConfigError, match="could not place 8"):
        Nav3DBatch(1, Nav3DConfig(num_obstacles=8, obstacle_size=(1.3, 1.4)))
    with pytest.raises(ConfigError, match="actions"):
        batch = Nav3DBatch(2)
        batch.reset(seed=0)
        batch.step(np.zeros((3, 3)))


def test_each_obstacle_observation_is_smooth_and_flies_like_nearest():
    """``obstacle_observation="each"``: 9 + 3K entries, the same physics and rewards as the
    default, the nearest entry equals the default's offset, and no entry ever jumps."""
    config = Nav3DConfig(obstacle_observation="each", num_obstacles=5)
    assert config.obs_dim == 24 and len(config.observation_names()) == 24
    assert config.observation_names()[9:12] == ("obst0_dx", "obst0_dy", "obst0_dz")
    each = Nav3DBatch(4, config, seed=3)
    nearest = Nav3DBatch(4, config.replace(obstacle_observation="nearest"), seed=3)
    obs_e, _ = each.reset(seed=3)
    obs_n, _ = nearest.reset(seed=3)
    env = Nav3DEnv(obstacle_observation="each", num_obstacles=5)
    assert env.observation_space.shape == (24,)
    rng = np.random.default_rng(0)
    largest_jump = 0.0
    for _ in range(60):
        scripted = scripted_action(obs_e, config)
        np.testing.assert_allclose(scripted, scripted_action(obs_n, nearest.config), atol=1e-9)
        actions = np.clip(scripted + 0.5 * rng.standard_normal((4, 3)), -1, 1)
        next_e, rew_e, *_ = each.step(actions)
        next_n, rew_n, *_ = nearest.step(actions)
        np.testing.assert_array_equal(next_e[:, :9], next_n[:, :9])
        np.testing.assert_array_equal(rew_e, rew_n)
        offsets = next_e[:, 9:].reshape(4, 5, 3)
        shortest = offsets[np.arange(4), np.argmin(np.linalg.norm(offsets, axis=2), axis=1)]
        np.testing.assert_allclose(shortest, next_n[:, 9:], atol=1e-6)
        assert env.observation_space.contains(next_e[0])
        for got, want in ((next_e, rew_e), (next_n, rew_n)):
            cfg = config if got.shape[1] == 24 else nearest.config
            torch_reward = reward_fn(torch.as_tensor(obs_e if got is next_e else obs_n),
                                     torch.as_tensor(actions), torch.as_tensor(got), cfg)
            np.testing.assert_allclose(torch_reward.numpy(), want, atol=1e-4)
        largest_jump = max(largest_jump, float(np.abs(next_e[:, 9:] - obs_e[:, 9:]).max()))
        obs_e, obs_n = next_e, next_n
    # The body moves at most ~0.75 m a step; an offset to a fixed surface moves no further.
    assert largest_jump < 1.0
    with pytest.raises(ConfigError, match="obstacle_observation"):
        Nav3DConfig(obstacle_observation="all").validate()


def test_set_state_replays_a_recorded_state():
    batch = Nav3DBatch(3, QUIET, seed=0)
    with pytest.raises(ConfigError, match="reset"):
        batch.set_state([0, 0, 1], [0, 0, 0], [1, 0, 1])
    batch.reset(seed=0)
    obs = batch.set_state([0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [2.0, 0.0, 1.0])
    np.testing.assert_allclose(obs[:, 0:3], [[0, 0, 1]] * 3)
    np.testing.assert_allclose(obs[:, 6:9], [[2, 0, 0]] * 3)
    _, reward, *_ = batch.step(_hover(QUIET, 3))
    # Progress is measured from the set state: 0.1 m along +x at 1 m/s (drag slows it a bit).
    assert np.all((reward > 0.05) & (reward <= 0.1 + 1e-9))
