"""How many updates DreamerV3's two-hot heads need before they output CartPole's scale.

The reward head and the critic end in a zero-initialised layer over 255 symexp-spaced bins
(paper v1; reference ``outscale: 0.0``) and train with Adam at the paper v1 learning rates
(reward head: 1e-4, critic: 3e-5). Their prediction stays near 0 until the logits of the target
bins have risen by several units, and Adam moves each weight by about ``lr`` per update, so the
number of updates this takes grows as the layers get narrower.

Two measurements (1 thread):

* ``heads``: a head alone (the agent's :class:`~worldflux.agents.dreamerv3.Critic`: ``layers``
  x Linear-LayerNorm-SiLU of width ``units``, zero output layer) regressed with the two-hot loss
  on 2048 fixed random features ``x [2048, 640]`` towards ``c * (1 + 0.1 x_0)``: ``c = 100``
  (CartPole values, critic shape: 3 layers, lr 3e-5) and ``c = 1`` (CartPole's reward, reward
  head shape: 1 layer, lr 1e-4), at widths 64 (``size1m``) and 256 (the paper's smallest model,
  XS). Reported: the mean prediction after 100, 300, 1000 and 3000 updates.
* ``agent``: ``train_step`` of the ``size1m`` agent (batch 16 x 64, paper v1 settings) on 4000
  random-policy CartPole-v1 steps; reported: the mean imagined reward (true value 1) and value
  after 100, 200 and 300 updates.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.common import write_result

NAME = "dreamerv3_heads"
MARKS = (100, 300, 1000, 3000)
HEADS = [  # (what, units, layers, lr, target centre)
    ("critic", 64, 3, 3e-5, 100.0), ("critic", 256, 3, 3e-5, 100.0),
    ("reward", 64, 1, 1e-4, 1.0), ("reward", 256, 1, 1e-4, 1.0),
]


def _head(units: int, layers: int, lr: float, centre: float) -> dict[str, float]:
    """Mean prediction of a zero-initialised two-hot head at each of ``MARKS`` updates."""
    import torch

    from worldflux.agents.dreamerv3 import Critic
    from worldflux.nn.twohot import soft_ce

    torch.manual_seed(0)
    head = Critic(640, units, layers, 255, 20.0)
    opt = torch.optim.Adam(head.parameters(), lr=lr, eps=1e-5)
    feat = torch.randn(2048, 640)
    target = centre * (1 + 0.1 * feat[:, 0])
    means = {}
    for update in range(1, max(MARKS) + 1):
        loss = soft_ce(head(feat), target, -20.0, 20.0).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 100.0)
        opt.step()
        if update in MARKS:
            with torch.no_grad():
                means[str(update)] = round(float(head.value(feat).mean()), 3)
    return means


def _agent(updates: int) -> dict[str, dict[str, float]]:
    """Imagined reward and value of the size1m agent trained on random CartPole data."""
    import gymnasium as gym
    import numpy as np
    import torch

    from worldflux.agents import build_agent
    from worldflux.core.spec import ActionSpec, ObservationSpec
    from worldflux.data import ReplayBuffer
    from worldflux.data.tensors import to_torch

    agent = build_agent("dreamerv3", ObservationSpec((4,)), ActionSpec(2, "discrete"),
                        device=torch.device("cpu"), seed=0, overrides={"model.size": "size1m"})
    env = gym.make("CartPole-v1")
    buffer = ReplayBuffer(10_000, obs_shape=(4,), action_dim=2, seed=0)
    rng = np.random.default_rng(0)
    steps = 0
    while steps < 4000:
        obs, _ = env.reset(seed=int(rng.integers(1 << 30)))
        buffer.add(obs, np.zeros(2, np.float32), 0.0, False, False, True)
        done = False
        while not done:
            action = int(rng.integers(2))
            obs, reward, term, trunc, _ = env.step(action)
            buffer.add(obs, np.eye(2, dtype=np.float32)[action], float(reward), term, trunc,
                       False)
            done, steps = term or trunc, steps + 1
    out = {}
    for update in range(1, updates + 1):
        metrics = agent.train_step(to_torch(buffer.sample_stream(16, 64), agent.device))
        if update % 100 == 0:
            out[str(update)] = {k: round(metrics[f"ac/{k}"], 4)
                                for k in ("imag_reward", "imag_value", "return_scale")}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks {NAME}")
    parser.add_argument("--agent-updates", type=int, default=300)
    args = parser.parse_args(argv)
    started = time.time()
    heads = []
    for what, units, layers, lr, centre in HEADS:
        means = _head(units, layers, lr, centre)
        heads.append({"head": what, "units": units, "layers": layers, "lr": lr,
                      "target_mean": centre, "prediction_mean_after_updates": means})
        print(what, units, layers, lr, centre, means, flush=True)
    agent = _agent(args.agent_updates)
    print("agent", agent)
    write_result(NAME, {"heads": heads, "agent_size1m_random_cartpole": agent}, started)


if __name__ == "__main__":
    main()
