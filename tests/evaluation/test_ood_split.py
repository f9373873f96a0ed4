"""Held-out episode collection, env options (the OOD perturbation) and the OOD split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from worldflux.core.errors import ConfigError, DataError
from worldflux.data import validate_episode
from worldflux.evaluation import (
    collect_episodes,
    compare_robustness,
    deterministic,
    ood_split,
    plot_ood,
    replay_episodes,
)


def test_collected_episodes_follow_the_episode_schema():
    episodes = collect_episodes("Pendulum-v1", "random", episodes=2, seed=5, max_steps=30)
    assert len(episodes) == 2
    for episode in episodes:
        assert validate_episode(episode, obs_shape=(3,), action_dim=1) == 31
        assert not episode["actions"][0].any() and episode["is_first"][0]
        assert not episode["is_first"][1:].any()
        assert episode["truncated"][-1] and not episode["truncated"][:-1].any()
        assert not episode["terminated"].any()
        assert np.all(np.abs(episode["actions"]) <= 1.0)  # make() normalises to [-1, 1]
    assert not np.array_equal(episodes[0]["obs"][0], episodes[1]["obs"][0])  # seeds 5 and 6
    again = collect_episodes("Pendulum-v1", "random", episodes=2, seed=5, max_steps=30)
    np.testing.assert_array_equal(again[1]["obs"], episodes[1]["obs"])
    full = collect_episodes("Pendulum-v1", lambda obs: np.array([0.5], np.float32), episodes=1)
    assert full[0]["obs"].shape == (201, 3) and full[0]["truncated"][-1]
    np.testing.assert_array_equal(full[0]["actions"][1:], 0.5)


def test_agent_policies_act_greedily_and_reset_every_episode():
    class StubAgent:
        resets, calls = 0, []

        def reset(self):
            self.resets += 1

        def act(self, obs, *, explore):
            self.calls.append(explore)
            return np.array([-0.25], np.float32)

    agent = StubAgent()
    episodes = collect_episodes("Pendulum-v1", agent, episodes=2, seed=3, max_steps=5)
    assert agent.resets == 2 and agent.calls == [False] * 10
    assert all(np.all(e["actions"][1:] == -0.25) for e in episodes)


def test_env_options_perturb_the_dynamics_only():
    kwargs = {"episodes": 1, "seed": 9, "max_steps": 40}
    base = collect_episodes("Pendulum-v1", **kwargs)[0]
    heavy_g = collect_episodes("Pendulum-v1", env_options={"g": 20.0}, **kwargs)[0]
    heavy_m = collect_episodes("Pendulum-v1", env_options={"unwrapped.m": 2.0}, **kwargs)[0]
    for other in (heavy_g, heavy_m):
        np.testing.assert_array_equal(other["obs"][0], base["obs"][0])  # same reset
        np.testing.assert_array_equal(other["actions"], base["actions"])  # same actions
        assert np.abs(other["obs"][1:] - base["obs"][1:]).max() > 0.05  # other dynamics

    with pytest.raises(ConfigError, match="unwrapped.nope.*no attribute 'nope'"):
        collect_episodes("Pendulum-v1", env_options={"unwrapped.nope": 1.0}, **kwargs)
    with pytest.raises(ConfigError, match="bogus"):
        collect_episodes("Pendulum-v1", env_options={"bogus": 1.0}, **kwargs)
    with pytest.raises(ConfigError, match="policy"):
        collect_episodes("Pendulum-v1", policy="greedy", **kwargs)


def test_ood_gravity_gives_a_larger_error_and_models_compare(fitted_pets, tmp_path):
    result = ood_split({"stochastic": fitted_pets, "deterministic": deterministic(fitted_pets)},
                       "Pendulum-v1", {"g": 20.0}, episodes=2, horizon=30,
                       starts_per_episode=4)
    ratios = result.ratios()
    assert set(ratios) == {"stochastic", "deterministic"}
    for label in ratios:
        inside = result.in_distribution[label]
        outside = result.out_of_distribution[label]
        assert inside.num_starts == outside.num_starts == 8
        assert np.mean(outside.rmse) > 1.3 * np.mean(inside.rmse)
        assert ratios[label] == pytest.approx(np.mean(outside.rmse) / np.mean(inside.rmse))
        assert result.ratio_per_h(label).shape == (30,)
    comparison = compare_robustness(result, "stochastic", "deterministic")
    assert comparison["a_over_b"] == pytest.approx(ratios["stochastic"] / ratios["deterministic"])
    assert comparison["more_robust"] == min(ratios, key=ratios.get)
    assert result.compare("stochastic", "deterministic") == comparison

    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["env_options"] == {"g": 20.0} and data["in_env_options"] == {}
    assert data["robustness_ratio"]["stochastic"] == pytest.approx(ratios["stochastic"])
    assert plot_ood(result, tmp_path / "ood.png").read_bytes()[:4] == b"\x89PNG"

    with pytest.raises(ConfigError, match="non-empty"):
        ood_split(fitted_pets, "Pendulum-v1", {}, episodes=1)
    with pytest.raises(ConfigError, match="label"):
        result.robustness_ratio("nope")


def test_replay_episodes_of_a_run(pets_run, tmp_path):
    episodes = replay_episodes(pets_run)
    assert len(episodes) == 1 and episodes[0]["obs"].shape == (201, 3)
    assert len(replay_episodes(pets_run, last=1)) == 1
    with pytest.raises(DataError, match="replay"):
        replay_episodes(tmp_path)
