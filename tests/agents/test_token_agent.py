"""The ``token`` agent: fits the token world model from the replay buffer, in stages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldflux.agents.base import build_agent
from worldflux.core.errors import ConfigError
from worldflux.core.spec import ActionSpec, ObservationSpec
from worldflux.data import ReplayBuffer
from worldflux.envs.games import BreakoutBatch, collect

TINY = {"model.channels": 8, "model.code_dim": 8, "model.codebook_size": 16,
        "model.embed_dim": 32, "model.num_layers": 1, "model.num_heads": 2, "model.history": 2,
        "learning_starts": 0, "train_every": 1, "batch_size": 4, "seq_len": 4,
        # The plain pixel loss: the default hard-pixel term slows the first updates' PSNR gain,
        # which the staging test reads (tests/models/test_token.py covers the term).
        "model.hard_pixel_fraction": 0.0}
OBS, ACTIONS = ObservationSpec((3, 64, 64), "uint8"), ActionSpec(4, "discrete")


@pytest.fixture(scope="module")
def buffer():
    data = collect(BreakoutBatch(4, seed=0), 40, "scripted", seed=0)
    buffer = ReplayBuffer(1000, (3, 64, 64), 4, obs_dtype=np.dtype(np.uint8), seed=0)
    for env in range(4):
        for t in range(41):
            action = np.zeros(4, np.float32)
            if data["actions"][env, t] >= 0:
                action[data["actions"][env, t]] = 1.0
            buffer.add(data["obs"][env, t], action, data["rewards"][env, t],
                       data["terminated"][env, t], data["truncated"][env, t],
                       data["is_first"][env, t])
    return buffer


def agent(**overrides):
    return build_agent("token", OBS, ACTIONS, device=torch.device("cpu"), seed=0,
                       overrides={**TINY, **overrides})


def test_tokenizer_trains_first_then_both(buffer):
    a = agent(tokenizer_warmup=3)
    metrics = [a.update(buffer, env_step=step, episode_done=False) for step in range(30)]
    assert "tokenizer/psnr" in metrics[0] and "dynamics/token_loss" not in metrics[2]
    assert "dynamics/token_loss" in metrics[3]
    assert metrics[-1]["tokenizer/psnr"] > metrics[0]["tokenizer/psnr"] + 3
    assert a.world_model is a.model
    action = a.act(np.zeros((3, 64, 64), np.uint8), explore=True)
    assert 0 <= int(action) < 4


def test_dynamics_stage_starts_from_a_pretrained_tokenizer(buffer, tmp_path):
    first = agent(components="tokenizer")
    for step in range(5):
        metrics = first.update(buffer, env_step=step, episode_done=False)
    assert "dynamics/token_loss" not in metrics
    first.world_model.save_pretrained(str(tmp_path / "run" / "model"))
    second = agent(components="dynamics", pretrained=str(tmp_path / "run"))
    tokenizer = {k: v.clone() for k, v in second.model.tokenizer.state_dict().items()}
    for name, value in first.model.tokenizer.state_dict().items():
        assert torch.equal(value, tokenizer[name]), name
    for step in range(5):
        metrics = second.update(buffer, env_step=step, episode_done=False)
    assert "dynamics/token_loss" in metrics and "tokenizer/psnr" not in metrics
    for name, value in second.model.tokenizer.state_dict().items():
        assert torch.equal(value, tokenizer[name]), f"{name} moved in the dynamics stage"
    restored = agent(components="dynamics")
    restored.load_state_dict(second.state_dict())
    assert restored.updates == 5


def test_bad_settings_are_rejected():
    with pytest.raises(ConfigError, match="components"):
        agent(components="everything")
    with pytest.raises(ConfigError, match="discrete"):
        build_agent("token", OBS, ActionSpec(2), device=torch.device("cpu"), overrides=TINY)


def test_the_agent_trains_a_tokenizer_that_draws_against_earlier_frames(buffer):
    # Replay sequences give each frame an earlier frame of its episode as the reference.
    a = agent(tokenizer_warmup=3, **{"model.reference_decoder": True, "model.encoder": "patch"})
    metrics = [a.update(buffer, env_step=step, episode_done=False) for step in range(30)]
    assert "dynamics/token_loss" in metrics[-1]
    assert metrics[-1]["tokenizer/psnr"] > metrics[0]["tokenizer/psnr"] + 3
