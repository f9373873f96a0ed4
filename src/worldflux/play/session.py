"""One play session: a learned world stepped by key presses next to the real game."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldflux.core.errors import CheckpointError, ConfigError
from worldflux.core.model import WorldModel

logger = logging.getLogger(__name__)

DEFAULT_GAME = "Breakout64"


def load_play_model(run_dir: str | Path, device: str = "cpu") -> WorldModel:
    """The world model of ``run_dir``: a ``save_pretrained`` folder, or a training run's
    ``model/`` folder inside it."""
    from worldflux.core import from_pretrained

    run_dir = Path(run_dir)
    for candidate in (run_dir, run_dir / "model"):
        if (candidate / "worldflux.json").is_file():
            return from_pretrained(str(candidate), device=device)
    raise CheckpointError(f"{run_dir}: no world model found (expected worldflux.json in it or in "
                          "its model/ folder: a `worldflux train` run or a save_pretrained folder)")


def game_of_run(run_dir: str | Path) -> str:
    """The game a run learned: ``play.json``'s ``game``, else the env of the run's
    ``config.json``; ``Breakout64`` when neither says."""
    from worldflux.envs.games import game_from_env_id

    run_dir = Path(run_dir)
    play = run_dir / "play.json"
    if play.is_file():
        game = json.loads(play.read_text()).get("game")
        if game:
            return str(game)
    config = run_dir / "config.json"
    if config.is_file():
        env = json.loads(config.read_text()).get("train", {}).get("env", "")
        game = game_from_env_id(env)
        if game:
            return game
    return DEFAULT_GAME


def frame_to_rgba(frame: np.ndarray | torch.Tensor) -> str:
    """``[3, H, W]`` frame (0..255) -> base64 RGBA bytes, as ``ImageData`` wants them."""
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().float().round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    rgb = np.asarray(frame, np.uint8).transpose(1, 2, 0)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], -1)
    return base64.b64encode(np.ascontiguousarray(rgba).tobytes()).decode("ascii")


class PlaySession:
    """A learned world and the real game, stepped together with the same actions.

    Args:
        model: a world model of ``[3, 64, 64]`` frames and 4 actions (any family: only
            ``encode``, ``update``, ``transition`` and ``decode`` are used).
        game: name of the real game (``Breakout64`` or ``Collect64``).
        seed: seeds the real game.
        game_index: game embedding of a several-game model (default: the game's own index when
            the model has that many games, else 0).
        mode: decoding mode passed to ``transition`` (``"parallel"``/``"causal"``) for models
            that take one; None = the model's default.
    """

    def __init__(self, model: WorldModel, game: str = DEFAULT_GAME, *, seed: int = 0,
                 game_index: int | None = None, mode: str | None = None) -> None:
        from worldflux.envs.games import GAMES, NUM_ACTIONS

        if game not in GAMES:
            raise ConfigError(f"game: got {game!r}, expected one of {sorted(GAMES)}")
        if tuple(model.obs_spec.shape) != (3, 64, 64) or model.action_spec.dim != NUM_ACTIONS:
            raise ConfigError(f"model: got obs_shape {model.obs_spec.shape} and "
                              f"{model.action_spec.dim} actions, expected (3, 64, 64) frames and "
                              f"{NUM_ACTIONS} actions (the native games)")
        self.model = model.eval()
        self.game_name = game
        self.game = GAMES[game](1, seed=seed)
        self.seed = seed
        self.mode = mode
        num_games = getattr(model.config, "num_games", 1)
        index = GAMES[game].game_index if game_index is None else int(game_index)
        self.game_index = index if index < num_games else 0
        self.lock = threading.Lock()
        self.episodes = 0
        self.actions_seen: list[int] = []
        self.state = None
        self.real_frame: np.ndarray | None = None
        self.last_real: tuple[float, bool] = (0.0, False)
        self.reset()

    # -- actions ----------------------------------------------------------------------------
    def reset(self) -> dict[str, Any]:
        """A new real game; the learned world starts from its first frame."""
        with self.lock:
            self.episodes += 1
            self.real_frame = self.game.reset(seed=self.seed + self.episodes)[0]
            self.history: list[tuple[int, np.ndarray]] = [(-1, self.real_frame)]
            self._start_from_history()
            return self._payload(self.real_frame, 0.0, 1.0, 0.0)

    def sync(self) -> dict[str, Any]:
        """Start the learned world again from the real game's current frame (and the real
        frames before it, for models with frame history)."""
        with self.lock:
            self._start_from_history()
            return self._payload(self.real_frame, 0.0, 1.0, 0.0)

    def step(self, action: int) -> dict[str, Any]:
        """Step both worlds with ``action`` (0 up, 1 down, 2 left, 3 right)."""
        from worldflux.envs.games import NUM_ACTIONS

        action = int(action)
        if not 0 <= action < NUM_ACTIONS:
            raise ConfigError(f"action: got {action}, expected 0..{NUM_ACTIONS - 1}")
        with self.lock:
            self.actions_seen.append(action)
            started = time.perf_counter()
            with torch.no_grad():
                onehot = torch.nn.functional.one_hot(torch.tensor([action]), NUM_ACTIONS).float()
                kwargs = {"mode": self.mode} if self.mode else {}
                self.state = self.model.transition(self.state, onehot.to(self.model.device),
                                                   **kwargs)
                preds = self.model.decode(self.state).preds
            model_ms = 1000 * (time.perf_counter() - started)
            frames, reward, terminated, truncated, _ = self.game.step(np.array([action]))
            if terminated[0] or truncated[0]:
                self.episodes += 1
                frames = self.game.reset(seed=self.seed + self.episodes)
                self.history = []
            self.real_frame = frames[0]
            self.history = (self.history + [(action, self.real_frame)])[-16:]
            self.last_real = (float(reward[0]), bool(terminated[0]))
            imagined = preds["obs"][0]
            reward_pred = float(preds.get("reward", torch.zeros(1))[0])
            cont = float(preds.get("continue", torch.ones(1))[0])
            return self._payload(imagined, reward_pred, cont, model_ms)

    # -- helpers ----------------------------------------------------------------------------
    def _start_from_history(self) -> None:
        history = getattr(self.model.config, "history", 1)
        frames = self.history[-history:]
        with torch.no_grad():
            first = torch.from_numpy(frames[0][1][None]).to(self.model.device)
            state = self.model.encode(first, game=self.game_index) \
                if self.model.family == "token" else self.model.encode(first)
            for action, frame in frames[1:]:
                onehot = torch.nn.functional.one_hot(torch.tensor([max(action, 0)]), 4).float()
                state = self.model.update(state, onehot.to(self.model.device),
                                          torch.from_numpy(frame[None]).to(self.model.device))
        self.state = state

    def _payload(self, imagined, reward: float, cont: float, model_ms: float) -> dict[str, Any]:
        return {"imagined": frame_to_rgba(imagined), "real": frame_to_rgba(self.real_frame),
                "reward": round(reward, 3), "continue": round(cont, 3),
                "real_reward": self.last_real[0], "score": int(self.game.score[0]),
                "model_ms": round(model_ms, 2), "steps": len(self.actions_seen)}

    def info(self) -> dict[str, Any]:
        config = self.model.config
        return {"game": self.game_name, "family": self.model.family,
                "history": getattr(config, "history", 1),
                "decoding": self.mode or getattr(config, "decoding", ""),
                "parameters": self.model.num_parameters(), "size": 64,
                "actions": ["up", "down", "left", "right"]}
