"""``worldflux train ppo|alphazero``: a fast-RL run in the same run directory as the agents.

Run directory (shared conventions with :mod:`worldflux.training.loop`)::

    RUN_DIR/
        config.json       {"agent", "agent_config", "train", "env_options", "worldflux_version"}
        metrics.jsonl     one JSON object per update (losses, episode returns, throughput)
        tb/               TensorBoard events (unless tensorboard is False)
        checkpoints/step_XXXXXXXX/   learner state (safetensors + JSON, atomic)
        policy.onnx, policy.onnx.json   the final policy bundle (when onnx is installed)
        summary.json      final evaluation, wall time, steps/s

PPO runs on any :func:`~worldflux.rl.env.make_batched_env` id; AlphaZero on the rules of
``game/tictactoe``, ``game/connect4``, ``puzzle/sliding-3x3`` and ``puzzle/sliding-4x4``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from worldflux.core.config import to_dict
from worldflux.core.errors import ConfigError, RegistryError
from worldflux.core.io import atomic_write_text
from worldflux.rl.alphazero import AlphaZero, AlphaZeroConfig
from worldflux.rl.env import make_batched_env
from worldflux.rl.evaluate import run_episodes
from worldflux.rl.ppo import PPO, PPOConfig

logger = logging.getLogger(__name__)

__all__ = ["RL_ALGORITHMS", "RLRunConfig", "rl_config_class", "train_rl"]

RL_ALGORITHMS = ("ppo", "alphazero")
"""Algorithms ``worldflux train`` hands to :func:`train_rl`."""

AZ_ENVS = ("game/tictactoe", "game/connect4", "puzzle/sliding-3x3", "puzzle/sliding-4x4")


@dataclass
class RLRunConfig:
    """What a fast-RL run does around the learner."""

    env: str = "CartPole-v1"
    """Env id (native batched id or gymnasium id)."""

    steps: int = 100_000
    """PPO: env steps; AlphaZero: env steps of self-play (moves over all games)."""

    seed: int = 0
    """Seed of torch and the envs."""

    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""

    eval_episodes: int = 100
    """Episodes (games) of the final evaluation."""

    checkpoint_every: int = 0
    """Checkpoint every N updates (0: only at the end)."""

    tensorboard: bool = True
    """Write TensorBoard events to RUN_DIR/tb."""

    export_onnx: bool = True
    """Write RUN_DIR/policy.onnx + manifest at the end (skipped when onnx is missing)."""

    env_options: dict[str, Any] = field(default_factory=dict)
    """Options of the native env (e.g. ``{"depth": 8}`` for the sliding puzzle)."""


def rl_config_class(algorithm: str) -> type:
    if algorithm == "ppo":
        return PPOConfig
    if algorithm == "alphazero":
        return AlphaZeroConfig
    raise RegistryError(f"algorithm '{algorithm}': expected one of {', '.join(RL_ALGORITHMS)}")


def _az_rules(env_id: str, options: dict[str, Any]):
    from worldflux.envs.puzzles import ConnectFour, SlidingPuzzleRules, TicTacToe

    if env_id == "game/tictactoe":
        return TicTacToe(), None, 9
    if env_id == "game/connect4":
        return ConnectFour(), None, 42
    if env_id in ("puzzle/sliding-3x3", "puzzle/sliding-4x4"):
        rules = SlidingPuzzleRules(3 if env_id.endswith("3x3") else 4)
        depth = int(options.get("depth", 32))
        low = int(options.get("min_depth") or depth)

        def start(n: int, rng: np.random.Generator) -> np.ndarray:
            return rules.scramble(n, rng.integers(low, depth + 1, size=n), rng)

        return rules, start, int(options.get("depth_slope", 2)) * depth
    raise ConfigError(f"--env {env_id}: AlphaZero runs on {', '.join(AZ_ENVS)}")


def train_rl(algorithm: str, run: RLRunConfig, run_dir: str | Path, *,
             agent_config: Any = None, cli_args: dict[str, Any] | None = None,
             resume: bool = False) -> dict[str, Any]:
    """Train PPO or AlphaZero per ``run`` into ``run_dir``; returns the summary dict.

    ``resume``: continue the run in ``run_dir`` from its newest checkpoint that verifies (the
    learner's networks, optimiser and counters; the envs start new episodes), up to
    ``run.steps`` env steps in all."""
    from worldflux import __version__
    from worldflux.training.checkpoint import save_checkpoint
    from worldflux.training.logger import Logger
    from worldflux.training.loop import prepare_run_dir

    agent_config = agent_config or rl_config_class(algorithm)()
    if run.steps < 1:
        raise ConfigError(f"steps: got {run.steps}, expected an integer >= 1")
    run_dir = prepare_run_dir(run_dir, resume=resume)
    config_record = {"agent": algorithm, "agent_config": to_dict(agent_config),
                     "train": to_dict(run), "worldflux_version": __version__}
    atomic_write_text(run_dir / "config.json", json.dumps(config_record, indent=2))
    start = time.perf_counter()
    with Logger.for_run(run_dir, tensorboard=run.tensorboard) as log:
        if algorithm == "ppo":
            env = make_batched_env(run.env, agent_config.num_envs, seed=run.seed,
                                   **run.env_options)
            learner: Any = PPO(env, agent_config, device=run.device, seed=run.seed)
            _restore(learner, run_dir, resume)

            def callback(ppo: PPO, metrics: dict[str, float]) -> None:
                log.log(metrics, step=ppo.env_steps)
                if run.checkpoint_every and ppo.updates % run.checkpoint_every == 0:
                    save_checkpoint(run_dir, ppo.env_steps, ppo.state_dict())

            learner.learn(run.steps, callback=callback)
            final = _evaluate_ppo(learner, run)
            obs_space, action_space = env.observation_space, env.action_space
            masked = "action_mask" in env.reset(seed=run.seed)[1]
        elif algorithm == "alphazero":
            rules, start_states, max_moves = _az_rules(run.env, run.env_options)
            if agent_config.max_moves != max_moves:
                # The env sets the game length (puzzles: the move budget of the scramble depth).
                logger.info("alphazero: max_moves %d -> %d, the move limit of %s",
                            agent_config.max_moves, max_moves, run.env)
                agent_config.max_moves = max_moves
            learner = AlphaZero(rules, agent_config, start_states=start_states,
                                device=run.device, seed=run.seed)
            _restore(learner, run_dir, resume)

            def az_callback(az: AlphaZero, metrics: dict[str, float]) -> bool:
                log.log(metrics, step=az.env_steps)
                if run.checkpoint_every and az.iterations % run.checkpoint_every == 0:
                    save_checkpoint(run_dir, az.env_steps, az.state_dict())
                return az.env_steps >= run.steps

            learner.learn(10**9, callback=az_callback)
            final = _evaluate_alphazero(learner, rules, start_states, run)
            from gymnasium import spaces

            obs_shape = rules.observe(rules.initial_states(1)).shape[1:]
            obs_space = spaces.Box(0.0, 1.0, obs_shape, np.float32)
            action_space = spaces.Discrete(rules.num_actions)
            masked = True
        else:
            raise RegistryError(f"algorithm '{algorithm}': expected one of "
                                f"{', '.join(RL_ALGORITHMS)}")
        log.log({f"eval/{k}": v for k, v in final.items() if not isinstance(v, list)},
                step=learner.env_steps)
    wall = time.perf_counter() - start
    save_checkpoint(run_dir, learner.env_steps, learner.state_dict())
    bundle = None
    if run.export_onnx:
        try:
            from worldflux.export.rl_policy import export_rl_policy

            export_rl_policy(learner.policy, obs_space, action_space, run_dir / "policy.onnx",
                             action_mask=masked, extra={"env": run.env,
                                                        "env_options": run.env_options})
            bundle = str(run_dir / "policy.onnx")
        except ImportError:
            logger.warning("onnx is not installed: no policy.onnx (pip install 'worldflux[onnx]')")
    summary = {"agent": algorithm, "env": run.env, "final_eval": final,
               "steps": int(learner.env_steps), "episodes": int(final.get("episodes", 0)),
               "wall_time_s": wall, "env_steps_per_s": learner.env_steps / max(wall, 1e-9),
               "run_dir": str(run_dir), "model": bundle, "cli_args": cli_args or {}}
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    return summary


def _restore(learner: Any, run_dir: Path, resume: bool) -> None:
    """Load the newest checkpoint that verifies into ``learner`` (``resume`` only); damaged
    ones are named and skipped."""
    if not resume:
        return
    from worldflux.training.checkpoint import latest_checkpoint, load_checkpoint

    path = latest_checkpoint(run_dir)
    if path is None:
        logger.warning("%s: no checkpoint to resume from; starting from scratch", run_dir)
        return
    learner.load_state_dict(load_checkpoint(path)["state"])
    logger.info("resumed from %s at %d env steps", path, learner.env_steps)


def _evaluate_ppo(ppo: PPO, run: RLRunConfig) -> dict[str, Any]:
    env = make_batched_env(run.env, run.eval_episodes, seed=run.seed + 10_000, **run.env_options)
    result = run_episodes(env, lambda obs, mask: ppo.act(obs, mask, deterministic=True),
                          seed=run.seed + 10_000)
    returns = result["returns"]
    return {"mean": float(returns.mean()), "std": float(returns.std()),
            "returns": returns.tolist(), "success": float(result["success"].mean()),
            "episodes": len(returns)}


def _evaluate_alphazero(az: AlphaZero, rules: Any, start_states: Any,
                        run: RLRunConfig) -> dict[str, Any]:
    """Games: score against a uniformly random player (win 1, draw 0, loss -1), half the games
    moving first. Puzzles: solve rate of greedy searched episodes."""
    from worldflux.envs.puzzles import random_legal

    n = run.eval_episodes
    rng = np.random.default_rng(run.seed + 10_000)
    if rules.two_player:
        states = rules.initial_states(n)
        az_first = np.arange(n) % 2 == 0
        score = np.zeros(n)
        alive = np.ones(n, dtype=bool)
        for move in range(rules.cells):
            idx = np.flatnonzero(alive)
            if not len(idx):
                break
            az_turn = az_first[idx] == (move % 2 == 0)
            actions = random_legal(rules.legal_mask(states[idx]), rng)
            if az_turn.any():
                actions[az_turn] = az.choose(states[idx[az_turn]])
            nxt, reward, done = rules.next_states(states[idx], actions)
            states[idx] = nxt
            ended = idx[done]
            score[ended] = np.where(az_turn[done], 1.0, -1.0) * reward[done]
            alive[ended] = False
        return {"mean": float(score.mean()), "std": float(score.std()), "returns": score.tolist(),
                "win_rate": float((score > 0).mean()), "loss_rate": float((score < 0).mean()),
                "episodes": n}
    states = start_states(n, rng)
    solved = np.zeros(n, dtype=bool)
    for _ in range(az.config.max_moves):
        idx = np.flatnonzero(~solved)
        if not len(idx):
            break
        nxt, _, done = rules.next_states(states[idx], az.choose(states[idx]))
        states[idx] = nxt
        solved[idx[done]] = True
    score = solved.astype(np.float64)
    return {"mean": float(score.mean()), "std": float(score.std()), "returns": score.tolist(),
            "success": float(score.mean()), "episodes": n}



