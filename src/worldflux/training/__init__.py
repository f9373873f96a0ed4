"""Training: the online loop, evaluation, checkpoints and logging.

Quick use::

    from worldflux.training import TrainConfig, train, evaluate_run
    summary = train("pets", TrainConfig(env="Pendulum-v1", steps=1000), {}, "runs/pets-pendulum")
    evaluate_run("runs/pets-pendulum", episodes=10)      # {"mean", "std", "returns", ...}
"""

from worldflux.training.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from worldflux.training.config import TrainConfig
from worldflux.training.environment import EVAL_SEED_OFFSET
from worldflux.training.evaluate import evaluate, evaluate_run, load_run
from worldflux.training.logger import Logger
from worldflux.training.loop import train

__all__ = [
    "EVAL_SEED_OFFSET",
    "Logger",
    "TrainConfig",
    "evaluate",
    "evaluate_run",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_run",
    "save_checkpoint",
    "train",
    "verify_checkpoint",
]
