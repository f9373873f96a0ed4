"""``TrainConfig``: everything the training loop needs that is not the agent's own config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worldflux.core.errors import ConfigError


@dataclass
class TrainConfig:
    """Settings of one training run (the agent's settings live in its own config).

    Set from the command line with ``--set train.<field>=value``.
    """

    env: str = "Pendulum-v1"
    """Environment id understood by :func:`worldflux.envs.make` (``worldflux envs`` lists them)."""

    steps: int = 10_000
    """Agent steps to collect (calls of ``env.step`` on the wrapped env; with ``action_repeat=k``
    the simulator advances ``k`` times as many frames)."""

    seed: int = 0
    """Seeds the training env, the replay buffer, the agent and torch; evaluation envs use
    ``seed + EVAL_SEED_OFFSET``."""

    eval_every: int = 0
    """Evaluate every this many agent steps, at the first episode end after each multiple so
    a running episode is never interrupted; 0 = only once, at the end."""

    eval_episodes: int = 5
    """Episodes per evaluation (``explore=False``, separate env instance)."""

    checkpoint_every: int = 0
    """Save a checkpoint every this many agent steps, at the first episode end after each
    multiple; 0 = only the final one."""

    keep_checkpoints: int = 0
    """Keep only the newest this many periodic checkpoints, deleting older ones once a new one
    is written and verified; the final checkpoint is kept besides them. 0 = keep every one.
    May change when a run resumes."""

    log_every: int = 1000
    """Write averaged agent metrics, planner metrics and steps/s every this many agent steps
    (episode returns are logged at every episode end)."""

    action_repeat: int = 1
    """Each agent action is repeated this many times in the env, rewards summed."""

    obs_type: str | None = None
    """``"state"`` (float vectors) or ``"image"`` (uint8 ``[3, H, W]``); None = the env's
    default (state, except Atari which is image)."""

    image_size: int = 64
    """Side of square image observations (``obs_type="image"``)."""

    frame_stack: int = 1
    """Image observations: stack the last ``frame_stack`` frames along channels
    (``[3 * frame_stack, H, W]``) so that one observation shows motion."""

    env_options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the environment itself, e.g. Nav3D's
    ``--set 'train.env_options={"obstacle_observation": "each", "gust_std": 1.0}'``."""

    device: str = "auto"
    """Torch device of the agent: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda:0"``."""

    buffer_capacity: int = 1_000_000
    """Replay buffer capacity in rows (one row per observation, first rows included)."""

    tensorboard: bool = True
    """Also write TensorBoard events to ``RUN_DIR/tb`` (``metrics.jsonl`` is always written)."""

    max_nonfinite_steps: int = 10
    """Stop the run (``NonFiniteLossError``, naming the loss term) after this many optimiser
    steps in a row were skipped for a non-finite loss or gradient; the last good checkpoint
    stays the newest one."""

    wandb: bool = False
    """Also log to Weights & Biases (``pip install worldflux[wandb]``) under ``RUN_DIR/wandb``;
    ``WANDB_MODE=offline`` needs no account; a resumed run continues the same W&B run."""

    wandb_project: str = "worldflux"
    """W&B project of the run."""

    video_every: int = 0
    """Write GIFs to ``RUN_DIR/videos`` (a greedy episode, and the model's open-loop imagination
    next to the real observations) at the first evaluation after each multiple of this many
    steps, and at the final one; 0 = never (``pip install worldflux[video]``)."""

    replay_storage: str = "memory"
    """Where replay rows live: ``"memory"`` (RAM) or ``"disk"`` (memory-mapped files under
    ``replay_directory``; for long pixel runs: 1M frames of 64x64x3 are 12.3 GB in RAM)."""

    replay_directory: str | None = None
    """Folder of the disk replay storage; None = ``RUN_DIR/replay_storage``."""

    precision: str = "fp32"
    """Training precision: ``"fp32"``, ``"bf16"`` (autocast to bfloat16 on CPU or GPU) or
    ``"fp16"`` (autocast to float16 with loss scaling; CUDA only). Weights and optimiser states
    stay float32. Planning rollouts have their own switch (the agent's ``planning_dtype``)."""

    init_from: str | None = None
    """Start the agent's networks from another run: a run directory (its newest checkpoint), a
    checkpoint directory, or a saved model directory / Hub id (the world model only).
    Optimisers, counters, replay and RNGs start fresh; other settings may differ, the networks'
    sizes may not (see :mod:`worldflux.training.warm_start`)."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""
        positive = {"steps": self.steps, "eval_episodes": self.eval_episodes,
                    "action_repeat": self.action_repeat, "image_size": self.image_size,
                    "buffer_capacity": self.buffer_capacity, "frame_stack": self.frame_stack,
                    "max_nonfinite_steps": self.max_nonfinite_steps}
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"train.{name}: got {value}, expected an integer >= 1")
        non_negative = {"eval_every": self.eval_every, "checkpoint_every": self.checkpoint_every,
                        "log_every": self.log_every, "video_every": self.video_every,
                        "keep_checkpoints": self.keep_checkpoints}
        for name, value in non_negative.items():
            if value < 0:
                raise ConfigError(f"train.{name}: got {value}, expected an integer >= 0 (0 = off)")
        if self.obs_type not in (None, "state", "image"):
            raise ConfigError(
                f"train.obs_type: got {self.obs_type!r}, expected 'state', 'image' or none"
            )
        if self.replay_storage not in ("memory", "disk"):
            raise ConfigError(f"train.replay_storage: got {self.replay_storage!r}, expected "
                              "'memory' or 'disk'")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"train.precision: got {self.precision!r}, expected 'fp32', 'bf16' "
                              "or 'fp16'")
        if self.init_from is not None and not str(self.init_from).strip():
            raise ConfigError("train.init_from: got an empty string, expected a run, checkpoint "
                              "or saved-model directory (or none)")
        if not self.env:
            raise ConfigError("train.env: got an empty string, expected an env id such as Pendulum-v1")
