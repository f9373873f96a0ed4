"""Evaluation: greedy episodes of an agent, and of a finished run rebuilt from its directory."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np

from worldflux.core.errors import CheckpointError
from worldflux.training.environment import (
    EVAL_SEED_OFFSET,
    attach_env_reward,
    env_action,
    make_env,
    specs_for,
)

__all__ = ["evaluate", "evaluate_run", "load_run"]


def evaluate(agent, env: gymnasium.Env, episodes: int, seed: int,
             on_step: Callable[[int, bool], None] | None = None) -> dict[str, Any]:
    """Run ``episodes`` episodes with ``agent.act(obs, explore=False)``.

    ``on_step(episode, done)`` is called after every env step (progress bars).

    Episode ``i`` starts from ``env.reset(seed=seed + i)``, so repeated evaluations (across
    training, or of two agents) face the same initial states.

    Returns:
        ``{"mean", "std", "returns": [episodes], "lengths": [episodes]}`` (undiscounted returns),
        plus ``success_rate`` when the env's final ``info`` has ``success`` / ``is_success`` and
        ``collision_rate`` (episodes with a collision) and ``collisions_per_episode`` when it
        has ``collisions``.
    """
    returns: list[float] = []
    lengths: list[int] = []
    successes: list[bool] = []
    collisions: list[int] = []
    for episode in range(int(episodes)):
        obs, _ = env.reset(seed=int(seed) + episode)
        agent.reset()
        total, length, done = 0.0, 0, False
        info: dict[str, Any] = {}
        while not done:
            action, _ = env_action(agent.act(obs, explore=False), agent.action_spec)
            obs, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            length += 1
            done = bool(terminated or truncated)
            if on_step is not None:
                on_step(episode, done)
        returns.append(total)
        lengths.append(length)
        if "success" in info or "is_success" in info:
            successes.append(bool(info.get("success", info.get("is_success"))))
        if "collisions" in info:
            collisions.append(int(info["collisions"]))
    values = np.asarray(returns, dtype=np.float64)
    result = {"mean": float(values.mean()) if returns else float("nan"),
              "std": float(values.std()) if returns else float("nan"),
              "returns": returns, "lengths": lengths}
    # Goal-reaching envs report success / collisions in their final info (e.g. Nav3D).
    if successes and len(successes) == len(returns):
        result["success_rate"] = float(np.mean(successes))
    if collisions and len(collisions) == len(returns):
        result["collision_rate"] = float(np.mean([c > 0 for c in collisions]))
        result["collisions_per_episode"] = float(np.mean(collisions))
    return result


def load_run(run_dir: str | os.PathLike, *, device: str | None = None):
    """Rebuild a run's agent from ``config.json`` and its newest valid checkpoint.

    Returns:
        ``(agent, train_config, checkpoint_path, step)``.

    Raises:
        CheckpointError: no ``config.json`` or no checkpoint that verifies.
    """
    from worldflux.agents import agent_config_class, build_agent
    from worldflux.core.config import from_dict
    from worldflux.core.device import resolve_device
    from worldflux.training.checkpoint import latest_checkpoint, load_checkpoint
    from worldflux.training.config import TrainConfig

    run_dir = Path(run_dir)
    config_file = run_dir / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{config_file}: missing; is {run_dir} a worldflux run directory?")
    try:
        run_config = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_file}: not valid JSON ({exc})") from exc
    train_config = from_dict(TrainConfig, run_config["train"])
    agent_config = from_dict(agent_config_class(run_config["agent"]), run_config["agent_config"])
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise CheckpointError(f"{run_dir / 'checkpoints'}: no valid checkpoint to evaluate")
    env = make_env(train_config, seed=train_config.seed)
    try:
        obs_spec, action_spec = specs_for(env)
    finally:
        env.close()
    agent = build_agent(run_config["agent"], obs_spec, action_spec,
                        device=resolve_device(device or train_config.device),
                        seed=train_config.seed, config=agent_config)
    loaded = load_checkpoint(checkpoint)
    agent.load_state_dict(loaded["state"]["agent"])
    env = make_env(train_config, seed=train_config.seed)
    try:
        attach_env_reward(agent, env)
    finally:
        env.close()
    return agent, train_config, checkpoint, loaded["step"]


def evaluate_run(run_dir: str | os.PathLike, episodes: int, *, seed: int | None = None,
                 device: str | None = None,
                 on_step: Callable[[int, bool], None] | None = None) -> dict[str, Any]:
    """Evaluate the newest valid checkpoint of ``run_dir`` for ``episodes`` episodes.

    ``seed`` defaults to ``train.seed + EVAL_SEED_OFFSET``, the seed of the evaluations made
    during training, so the numbers are comparable with ``eval.jsonl``.

    Returns:
        :func:`evaluate`'s dict plus ``checkpoint``, ``step``, ``seed`` and ``episodes``.
    """
    agent, train_config, checkpoint, step = load_run(run_dir, device=device)
    seed = train_config.seed + EVAL_SEED_OFFSET if seed is None else int(seed)
    env = make_env(train_config, seed=seed)
    try:
        result = evaluate(agent, env, episodes, seed, on_step=on_step)
    finally:
        env.close()
    return {**result, "episodes": int(episodes), "seed": seed, "step": step,
            "checkpoint": str(checkpoint)}
