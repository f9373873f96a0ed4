"""``worldflux train ppo|alphazero --env ...``: the fast-RL branch of ``worldflux train``.

Settings: ``--set KEY=VALUE`` with ``env.<option>`` for the native env (e.g.
``--set env.depth=8``), ``train.<field>`` for :class:`~worldflux.rl.trainer.RLRunConfig`
(e.g. ``train.checkpoint_every=10``) and anything else for the learner's config (e.g.
``--set learning_rate=1e-3 --set policy.hidden=[128,128]``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from worldflux.core.errors import ConfigError

__all__ = ["train_rl_command"]


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def train_rl_command(agent: str, *, env: str | None, steps: int | None, seed: int | None,
                     out: Path | None, sets: list[str] | None, config: Path | None,
                     device: str | None, eval_episodes: int | None,
                     cli_args: dict[str, Any], resume: bool = False) -> dict[str, Any]:
    """Compose the configs (defaults < ``--config`` < options < ``--set``) and train;
    ``resume``: ``config`` is the run's own ``config.json`` and ``out`` its directory."""
    from worldflux.core.config import apply_overrides, from_dict, parse_set_options
    from worldflux.rl.trainer import RLRunConfig, rl_config_class, train_rl

    config_cls = rl_config_class(agent)
    run = RLRunConfig()
    agent_config = config_cls()
    if config is not None:
        try:
            data = json.loads(Path(config).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"--config {config}: cannot read a JSON config ({exc})") from None
        if isinstance(data, dict) and "agent_config" in data:
            if "train" in data:
                run = from_dict(RLRunConfig, data["train"])
            data = data["agent_config"]
        agent_config = from_dict(config_cls, data)
    given = {"env": env, "steps": steps, "seed": seed, "device": device,
             "eval_episodes": eval_episodes}
    run = apply_overrides(run, {k: v for k, v in given.items() if v is not None})
    env_options = dict(run.env_options)
    for key, value in parse_set_options(sets).items():
        if key.startswith("env."):
            env_options[key.removeprefix("env.")] = _value(value)
        elif key.startswith("train."):
            run = apply_overrides(run, {key.removeprefix("train."): value})
        else:
            agent_config = apply_overrides(agent_config, {key: value})
    run.env_options = env_options
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"{agent}-{run.env.replace('/', '_')}-{stamp}"
    return train_rl(agent, run, out, agent_config=agent_config, cli_args=cli_args,
                    resume=resume)
