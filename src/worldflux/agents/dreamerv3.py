"""DreamerV3 agent (Hafner, Pasukonis, Ba, Lillicrap 2023, arXiv:2301.04104, paper v1).

* World model: :class:`~worldflux.models.dreamerv3.DreamerV3Model` trained on replayed windows
  of ``batch_length`` rows (its own Adam: lr 1e-4, eps 1e-8, gradient norm clipped at 1000;
  paper v1 hyperparameter table).
* Actor-critic trained purely in imagination: from every posterior state of the batch the actor
  is rolled out ``imag_horizon`` (15) steps through the prior. Rewards and continues come from
  the world model's heads; lambda-returns (``gamma = 1 - 1/333``, ``lambda = 0.95``) bootstrap
  from the critic. Returns are normalised by the EMA (decay 0.99) of their 5th-95th percentile
  range, floored at 1 (:class:`ReturnNormalizer`). The actor maximises the normalised advantage
  (REINFORCE for discrete actions, backpropagation through the dynamics for continuous ones;
  configurable) plus ``3e-4`` times its entropy; the critic (two-hot over 255 bins) regresses the
  returns and, with weight 1, the outputs of a slow critic (EMA 0.02 after every update). Each
  has its own Adam (lr 3e-5, eps 1e-5, clip 100).
* World-model parameters are frozen (``requires_grad`` off) while the actor and critic losses
  are built, so those losses never leave gradients on them; the critic is frozen for the actor
  loss the same way. The return normaliser and the slow critic move only in training steps.
* Online schedule: ``prefill`` random steps, then ``train_ratio`` replayed steps per environment
  step (updates per step = ``train_ratio / (batch_size * batch_length)``, accumulated).
  Replayed windows run on across episode ends (:meth:`ReplayBuffer.sample_stream`), as the
  reference's fixed-length chunks do; ``is_first`` restarts the RSSM inside a window.

Usage::

    worldflux train dreamerv3 --env CartPole-v1 --steps 50000 --set model.size=size1m
    worldflux train dreamerv3 --env dmc/cartpole-swingup --set model.size=size1m
    worldflux train dreamerv3 --env dmc/cartpole-balance --set train.obs_type=image
    worldflux train dreamerv3 --env atari/pong --set train_ratio=1024
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldflux.agents.base import Agent, AgentRegistry
from worldflux.core.errors import ConfigError, DataError
from worldflux.core.memory import retain_freed_memory
from worldflux.core.spec import ActionSpec, ObservationSpec
from worldflux.data.tensors import to_torch
from worldflux.models.dreamerv3 import DreamerV3Config, DreamerV3Model
from worldflux.models.dreamerv3.networks import (
    MLP,
    _linear,
    log_softmax,
    sample_one_hot,
    unimix_probs,
)
from worldflux.nn.twohot import soft_ce, two_hot_cross_entropy, two_hot_inv

logger = logging.getLogger(__name__)

__all__ = ["Actor", "Critic", "DreamerV3Agent", "DreamerV3AgentConfig", "ReturnNormalizer",
           "actor_loss", "critic_loss", "imagination_weights", "lambda_returns"]


@dataclass
class DreamerV3AgentConfig:
    """DreamerV3: world model, actor-critic in imagination, online schedule (paper v1 values)."""

    model: DreamerV3Config = field(default_factory=DreamerV3Config)
    """The world model (``--set model.size=size1m`` for the smallest preset)."""
    batch_size: int = 16
    """Replayed windows per update (paper: 16)."""
    batch_length: int = 64
    """Rows per window (paper: 64). Shorter windows are used while no stored episode is this
    long yet."""
    replay_across_episodes: bool = True
    """Replayed windows run on across episode ends into other episodes (the reference replay's
    fixed-length chunks; ``ReplayBuffer.sample_stream``); false keeps each window inside one
    episode (then short episodes are sampled only once windows are shortened to fit them)."""
    train_ratio: float = 512.0
    """Replayed steps per environment step (paper v1: 512 for DMC, 1024 for Atari 100k and
    proprioceptive control with small budgets)."""
    prefill: int = 1024
    """Random-action environment steps before the first update."""
    imag_horizon: int = 15
    """Imagination horizon H (paper: 15)."""
    horizon: float = 333.0
    """Discount horizon: ``gamma = 1 - 1 / horizon`` (paper: 333, gamma 0.997)."""
    return_lambda: float = 0.95
    """lambda of the lambda-returns (paper: 0.95)."""
    imagined_continue: Literal["mode", "probability"] = "probability"
    """How the continue head discounts imagined states: ``probability`` (the current reference
    release, ``con(inp).prob(1)``) or ``mode`` (paper v1 reference ``imagine``:
    ``cont = head.mode()``, 1 unless ``p(continue) < 0.5``). On CartPole-v1, where only the
    continue head tells a falling pole from a balanced one (the reward is 1 either way), the
    mode hid most episode ends: at 22.5k steps the head gave real terminal rows p = 0.66 on
    average (70% of them above 0.5), and 3.6% of imagined 15-step rollouts ended where 17% of
    real ones do. With the probability, 3 seeds reached evaluation returns of 194-297 at 10k
    steps, against 29-164 with the mode (``benchmarks/RESULTS.md``, DreamerV3 on CartPole)."""
    actor_entropy: float = 3e-4
    """Entropy regulariser eta of the actor (paper: 3e-4)."""
    retnorm_decay: float = 0.99
    """EMA decay of the return percentiles (paper: 0.99)."""
    retnorm_low: float = 5.0
    """Lower return percentile (paper: 5)."""
    retnorm_high: float = 95.0
    """Upper return percentile (paper: 95)."""
    retnorm_floor: float = 1.0
    """Returns are divided by ``max(floor, P95 - P5)`` (paper: 1, so small returns are not
    scaled up)."""
    slow_critic_fraction: float = 0.02
    """EMA rate of the slow critic (paper v1 reference ``slow_critic_fraction``: 0.02)."""
    slow_critic_every: int = 1
    """Updates between slow-critic EMA steps (paper v1 reference: 1)."""
    slow_critic_reg: float = 1.0
    """Weight of the critic's regulariser towards the slow critic's outputs (paper: 1)."""
    actor_grad_discrete: Literal["reinforce", "backprop"] = "reinforce"
    """Actor gradient for discrete actions (paper: REINFORCE)."""
    actor_grad_continuous: Literal["reinforce", "backprop"] = "backprop"
    """Actor gradient for continuous actions (paper v1: backpropagation through the dynamics)."""
    actor_layers: int = 3
    """Hidden layers of the actor (reference ``policy.layers``: 3), width ``model.units``."""
    critic_layers: int = 3
    """Hidden layers of the critic (reference ``value.layers``: 3), width ``model.units``."""
    actor_unimix: float = 0.01
    """Uniform mixture of the discrete actor (paper: 1%)."""
    actor_min_std: float = 0.1
    """Lower bound of the continuous actor's std (paper v1 reference ``minstd``: 0.1)."""
    actor_max_std: float = 1.0
    """Upper bound of the continuous actor's std (paper v1 reference ``maxstd``: 1)."""
    model_lr: float = 1e-4
    """World-model Adam learning rate (paper v1: 1e-4)."""
    model_eps: float = 1e-8
    """World-model Adam epsilon (paper v1: 1e-8)."""
    model_clip: float = 1000.0
    """World-model gradient norm clip (paper v1: 1000)."""
    actor_lr: float = 3e-5
    """Actor Adam learning rate (paper v1: 3e-5)."""
    critic_lr: float = 3e-5
    """Critic Adam learning rate (paper v1: 3e-5)."""
    ac_eps: float = 1e-5
    """Actor and critic Adam epsilon (paper v1: 1e-5)."""
    ac_clip: float = 100.0
    """Actor and critic gradient norm clip (paper v1: 100)."""
    retain_freed_memory: bool = True
    """Keep freed memory in glibc's heap for the next update instead of returning it to the OS
    (:func:`worldflux.core.memory.retain_freed_memory`, process-wide; CPU only). An update frees
    and reallocates the same tensors; page-faulting them back cost 10% (vectors) to 20% (pixels)
    of a ``size1m`` update on this project's CPU VM. Changes no value."""

    def validate(self) -> None:
        self.model.validate()
        for name in ("batch_size", "batch_length", "imag_horizon", "slow_critic_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: got {getattr(self, name)}, expected an integer >= 1")
        if self.batch_length < 2:
            raise ConfigError(f"batch_length: got {self.batch_length}, expected >= 2")
        if self.train_ratio <= 0 or self.prefill < 0:
            raise ConfigError(f"train_ratio/prefill: got {self.train_ratio}/{self.prefill}, "
                              "expected train_ratio > 0 and prefill >= 0")
        if self.horizon <= 1:
            raise ConfigError(f"horizon: got {self.horizon}, expected > 1 (gamma = 1 - 1/horizon)")
        if not 0 <= self.return_lambda <= 1:
            raise ConfigError(f"return_lambda: got {self.return_lambda}, expected in [0, 1]")
        if not 0 <= self.retnorm_decay < 1:
            raise ConfigError(f"retnorm_decay: got {self.retnorm_decay}, expected in [0, 1)")
        if not 0 <= self.retnorm_low < self.retnorm_high <= 100:
            raise ConfigError(f"retnorm_low/retnorm_high: got {self.retnorm_low}/"
                              f"{self.retnorm_high}, expected 0 <= low < high <= 100")
        if not 0 < self.slow_critic_fraction <= 1:
            raise ConfigError(f"slow_critic_fraction: got {self.slow_critic_fraction}, "
                              "expected in (0, 1]")
        if not 0 < self.actor_min_std < self.actor_max_std:
            raise ConfigError(f"actor_min_std/actor_max_std: got {self.actor_min_std}/"
                              f"{self.actor_max_std}, expected 0 < min < max")
        for name in ("actor_grad_discrete", "actor_grad_continuous"):
            if getattr(self, name) not in ("reinforce", "backprop"):
                raise ConfigError(f"{name}: got {getattr(self, name)!r}, expected 'reinforce' "
                                  "or 'backprop'")
        for name in ("model_lr", "actor_lr", "critic_lr", "model_eps", "ac_eps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: got {getattr(self, name)}, expected > 0")

    @property
    def gamma(self) -> float:
        """Discount ``1 - 1 / horizon`` (paper: 0.997)."""
        return 1.0 - 1.0 / self.horizon


# -- mechanisms ----------------------------------------------------------------------------------
def lambda_returns(rewards: Tensor, values: Tensor, discounts: Tensor, lam: float) -> Tensor:
    """Bootstrapped lambda-returns ``[H, N]`` (paper Eq. 7).

    ``R_H = v_H`` and ``R_t = r_{t+1} + d_{t+1} ((1 - lam) v_{t+1} + lam R_{t+1})`` for
    ``t = H-1 .. 0``, with ``rewards [H, N]`` (``r_1..r_H``, the reward of reaching state
    ``t + 1``), ``values [H + 1, N]`` (``v_0..v_H``) and ``discounts [H, N]``
    (``gamma * continue`` of states ``1..H``). Returns ``R_0..R_{H-1}``.
    """
    horizon = rewards.shape[0]
    if values.shape[0] != horizon + 1 or discounts.shape[0] != horizon:
        raise ValueError(f"lambda_returns: got rewards {tuple(rewards.shape)}, values "
                         f"{tuple(values.shape)}, discounts {tuple(discounts.shape)}; expected "
                         "[H, N], [H + 1, N], [H, N]")
    out = []
    last = values[-1]
    for t in reversed(range(horizon)):
        last = rewards[t] + discounts[t] * ((1 - lam) * values[t + 1] + lam * last)
        out.append(last)
    return torch.stack(out[::-1], 0)


def imagination_weights(cont: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
    """Discounts and loss weights of an imagined trajectory (paper v1 reference ``imagine``).

    ``cont [H + 1, N]``: continue flags of states ``0..H``, the start's ``1 - terminated`` and
    then the continue head's mode (or probability, ``imagined_continue``). Returns
    ``discounts [H, N] = gamma * cont[1:]`` (those of the lambda-returns) and
    ``weights [H + 1, N] = cumprod(gamma * cont) / gamma``: the start counts 1 (0 when it is
    terminal), state ``t`` counts ``gamma^t`` while no predicted episode end came before it,
    and 0 after one (reference ``traj['weight']``, stop-gradient in both losses).
    """
    discounts = gamma * cont[1:]
    weights = torch.cumprod(gamma * cont, 0) / gamma
    return discounts, weights.detach()


def actor_loss(log_prob: Tensor, entropy: Tensor, ret: Tensor, base: Tensor, scale: Tensor,
               weight: Tensor, entropy_scale: float, reinforce: bool) -> Tensor:
    """The actor loss of paper v1 Eq. 11 over ``[H, N]`` imagined states -> a scalar.

    ``advantage = (ret - base) / scale`` with ``scale = max(1, P95 - P5)`` (the return
    normaliser); REINFORCE maximises ``log_prob * sg(advantage)``, backpropagation the advantage
    itself; plus ``entropy_scale`` (paper: 3e-4) times the entropy. Each state weighs ``weight``
    (:func:`imagination_weights`, stop-gradient); the mean runs over all ``H * N`` states
    (reference ``loss.mean()``).
    """
    advantage = (ret - base) / scale
    objective = log_prob * advantage.detach() if reinforce else advantage
    return -((objective + entropy_scale * entropy) * weight.detach()).mean()


def critic_loss(logits: Tensor, target: Tensor, slow_value: Tensor, weight: Tensor,
                slow_reg: float, bin_range: float) -> Tensor:
    """Critic loss over ``[H, N]`` imagined states -> a scalar (paper v1, reference
    ``VFunction.loss``): the two-hot cross-entropy of ``logits [H, N, bins]`` against
    ``sg(target)`` (the lambda-returns) plus ``slow_reg`` (paper: 1) times the cross-entropy
    against ``sg(slow_value)`` (the slow critic's mean), each state weighted by ``weight``."""
    loss = two_hot_cross_entropy(logits, (target.detach(), slow_value.detach()), (1.0, slow_reg),
                                 -bin_range, bin_range)  # both terms in one pass over the bins
    return (loss * weight.detach()).mean()


class ReturnNormalizer(nn.Module):
    """EMA of the ``low``-th and ``high``-th return percentiles (paper Eq. 8-9).

    ``update(x)``: ``L <- decay L + (1 - decay) P_low(x)``, same for ``H``; ``scale()`` is
    ``max(floor, H - L)``. Both start at 0. Percentiles interpolate linearly
    (``torch.quantile``), as ``jnp.percentile`` in the reference.
    """

    def __init__(self, decay: float = 0.99, low: float = 5.0, high: float = 95.0,
                 floor: float = 1.0) -> None:
        super().__init__()
        self.decay, self.low_q, self.high_q, self.floor = decay, low / 100, high / 100, floor
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.zeros(()))

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        flat = x.detach().float().reshape(-1)
        q = torch.quantile(flat, torch.tensor([self.low_q, self.high_q], device=flat.device))
        self.low.mul_(self.decay).add_((1 - self.decay) * q[0])
        self.high.mul_(self.decay).add_((1 - self.decay) * q[1])

    def scale(self) -> Tensor:
        """``max(floor, H - L)`` (a scalar tensor, no gradient)."""
        return torch.clamp(self.high - self.low, min=self.floor).detach()


class Actor(nn.Module):
    """Policy over the model feature: ``feat [..., F]`` -> action distribution.

    Discrete: a categorical with ``unimix`` uniform mixing (paper: 1%); samples are one-hot.
    Continuous (paper v1 reference ``normal``): ``Normal(tanh(mu), std)`` per dimension with
    ``std = (max - min) * sigmoid(s + 2) + min``.
    """

    def __init__(self, feat_dim: int, action_spec: ActionSpec, units: int, layers: int,
                 unimix: float, min_std: float, max_std: float) -> None:
        super().__init__()
        self.discrete = action_spec.kind == "discrete"
        self.action_dim = action_spec.dim
        self.unimix, self.min_std, self.max_std = unimix, min_std, max_std
        self.mlp = MLP(feat_dim, units, layers)
        out = action_spec.dim if self.discrete else 2 * action_spec.dim
        self.out = _linear(self.mlp.out_features, out)

    def forward(self, feat: Tensor) -> dict[str, Tensor]:
        """Distribution parameters: ``logits`` (discrete) or ``mean``/``std`` (continuous)."""
        x = self.out(self.mlp(feat)).float()
        if self.discrete:
            probs = unimix_probs(x, self.unimix)
            return {"logits": torch.log(probs) if self.unimix > 0 else x, "probs": probs}
        mean, std = x.chunk(2, -1)
        std = (self.max_std - self.min_std) * torch.sigmoid(std + 2.0) + self.min_std
        return {"mean": torch.tanh(mean), "std": std}

    def sample(self, dist: dict[str, Tensor], *, reparameterise: bool = False,
               generator: torch.Generator | None = None) -> Tensor:
        """One action ``[..., A]`` (one-hot for discrete; no gradient unless reparameterised)."""
        if self.discrete:
            probs = dist["probs"] if "probs" in dist else F.softmax(dist["logits"], -1)
            return sample_one_hot(probs.detach(), generator).float()
        noise = torch.randn(dist["mean"].shape, generator=generator, device=dist["mean"].device)
        action = dist["mean"] + dist["std"] * noise
        return action if reparameterise else action.detach()

    def mode(self, dist: dict[str, Tensor]) -> Tensor:
        if self.discrete:
            return F.one_hot(dist["logits"].argmax(-1), self.action_dim).float()
        return dist["mean"]

    def log_prob(self, dist: dict[str, Tensor], action: Tensor) -> Tensor:
        """Log-probability ``[...]`` of ``action [..., A]``."""
        if self.discrete:
            return (log_softmax(dist["logits"]) * action).sum(-1)
        return torch.distributions.Normal(dist["mean"], dist["std"]).log_prob(action).sum(-1)

    def entropy(self, dist: dict[str, Tensor]) -> Tensor:
        if self.discrete:
            log_p = log_softmax(dist["logits"])
            return -(log_p.exp() * log_p).sum(-1)
        return torch.distributions.Normal(dist["mean"], dist["std"]).entropy().sum(-1)


class Critic(nn.Module):
    """Value ``feat [..., F]`` -> logits ``[..., num_bins]`` over symexp-spaced bins; the output
    layer starts at zero (reference ``value.outscale: 0.0``)."""

    def __init__(self, feat_dim: int, units: int, layers: int, num_bins: int,
                 bin_range: float) -> None:
        super().__init__()
        self.bin_range = bin_range
        self.mlp = MLP(feat_dim, units, layers)
        self.out = _linear(self.mlp.out_features, num_bins, scale=0.0)

    def forward(self, feat: Tensor) -> Tensor:
        return self.out(self.mlp(feat)).float()

    def value(self, feat: Tensor) -> Tensor:
        return two_hot_inv(self(feat), -self.bin_range, self.bin_range)

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return soft_ce(logits, target, -self.bin_range, self.bin_range)


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Parameters of ``modules`` with ``requires_grad`` off inside the block (restored after):
    a loss built inside leaves no gradient on them, while gradients still flow *through* them."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


# -- agent ---------------------------------------------------------------------------------------
@AgentRegistry.register("dreamerv3", DreamerV3AgentConfig, tier="experimental",
                        description="DreamerV3: RSSM world model, actor-critic in imagination")
class DreamerV3Agent(Agent):
    """DreamerV3 for discrete or continuous actions; vector or 64x64 image observations."""

    name = "dreamerv3"

    def __init__(self, config: DreamerV3AgentConfig, obs_spec: ObservationSpec,
                 action_spec: ActionSpec, device: torch.device, seed: int = 0) -> None:
        super().__init__(config, obs_spec, action_spec, device, seed)
        config.validate()
        if config.retain_freed_memory and device.type == "cpu":
            retain_freed_memory()
        torch.manual_seed(seed)
        self.model = DreamerV3Model(copy.deepcopy(config.model), obs_spec, action_spec).to(device)
        units = self.model.sizes.units
        feat = self.model.feat_dim
        self.actor = Actor(feat, action_spec, units, config.actor_layers, config.actor_unimix,
                           config.actor_min_std, config.actor_max_std).to(device)
        self.critic = Critic(feat, units, config.critic_layers, config.model.num_bins,
                             config.model.bin_range).to(device)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.retnorm = ReturnNormalizer(config.retnorm_decay, config.retnorm_low,
                                        config.retnorm_high, config.retnorm_floor).to(device)
        # Adam's fused kernel (one pass over all parameters; CPU and CUDA in PyTorch >= 2.4)
        # instead of one small operation per tensor and step: the same update rule.
        fused = {"fused": True} if device.type in ("cpu", "cuda") else {}
        self.model_opt = torch.optim.Adam(self.model.parameters(), lr=config.model_lr,
                                          eps=config.model_eps, **fused)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr,
                                          eps=config.ac_eps, **fused)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr,
                                           eps=config.ac_eps, **fused)
        grad = (config.actor_grad_discrete if action_spec.kind == "discrete"
                else config.actor_grad_continuous)
        if grad == "backprop" and action_spec.kind == "discrete":
            raise ConfigError("actor_grad_discrete: got 'backprop', expected 'reinforce' "
                              "(one-hot samples carry no reparameterised gradient)")
        self.actor_grad = grad
        self.env_steps = 0
        self.updates = 0
        self.credit = 0.0
        self.seq_len = config.batch_length
        self._acting: tuple[Tensor, Tensor] | None = None
        self._feat_buffer: Tensor | None = None
        self._prev_action: Tensor | None = None
        self.model.eval()

    @property
    def world_model(self) -> DreamerV3Model:
        return self.model

    # -- acting -----------------------------------------------------------------------------
    def reset(self) -> None:
        self._acting = None
        self._prev_action = None

    @torch.no_grad()
    def act(self, obs: np.ndarray, *, explore: bool) -> np.ndarray:
        obs_t = torch.as_tensor(np.asarray(obs), device=self.device).unsqueeze(0)
        if self._acting is None:
            state = self.model.encode(obs_t)
        else:
            deter, stoch = self._acting
            state = self.model.update(self.model._state(deter, stoch), self._prev_action, obs_t)
        self._acting = (state["deter"], state["stoch"])
        if explore and self.env_steps < self.config.prefill:
            action = self.random_action()
            self._prev_action = self._as_model_action(action)
            return action
        dist = self.actor(self.model.feat(state["deter"], state["stoch"]))
        sample = self.actor.sample(dist) if explore else self.actor.mode(dist)
        if self.actor.discrete:
            index = int(sample[0].argmax())
            self._prev_action = sample
            return np.asarray(index)
        action = sample[0].clamp(self.action_spec.low, self.action_spec.high)
        self._prev_action = action.unsqueeze(0)
        return action.float().cpu().numpy()

    def _as_model_action(self, action: np.ndarray) -> Tensor:
        if self.action_spec.kind == "discrete":
            return F.one_hot(torch.as_tensor(int(action)), self.action_spec.dim).float()[None].to(
                self.device)
        return torch.as_tensor(np.asarray(action, dtype=np.float32), device=self.device)[None]

    # -- learning ---------------------------------------------------------------------------
    def update(self, buffer, *, env_step: int, episode_done: bool) -> dict[str, float]:
        self.env_steps = env_step
        cfg = self.config
        if env_step < cfg.prefill:
            return {}
        self.credit += cfg.train_ratio / (cfg.batch_size * cfg.batch_length)
        count = int(self.credit)
        self.credit -= count
        sums: dict[str, float] = {}
        for _ in range(count):
            for key, value in self.train_step(self.sample(buffer)).items():
                sums[key] = sums.get(key, 0.0) + value
        return {key: value / count for key, value in sums.items()} if count else {}

    def sample(self, buffer) -> dict[str, Tensor]:
        """``batch_size`` windows of ``batch_length`` rows of the stream of episodes, crossing
        episode boundaries (``is_first`` marks where the RSSM restarts), as in the paper's
        replay. Buffers without ``sample_stream`` give windows inside one episode (shorter
        while no stored episode is long enough: the longest power-of-two fraction that fits)."""
        cfg = self.config
        if cfg.replay_across_episodes and hasattr(buffer, "sample_stream"):
            return to_torch(buffer.sample_stream(cfg.batch_size, cfg.batch_length), self.device)
        length = cfg.batch_length
        while True:
            try:
                return to_torch(buffer.sample(cfg.batch_size, length), self.device)
            except DataError:
                if length <= 2:
                    raise
                length = max(2, length // 2)

    def imagine(self, deter: Tensor, stoch: Tensor, out: Tensor | None = None
                ) -> dict[str, Tensor]:
        """Roll the actor out ``imag_horizon`` steps through the prior from ``deter [N, D]``,
        ``stoch [N, S * K]``: ``feat [H + 1, N, F]``, ``action [H, N, A]`` (taken in states
        ``0..H-1``) and the actor's distributions there, ``dist`` (each ``[H, N, ...]``, with
        gradients towards the actor's parameters; gradients reach actions only when the actor is
        reparameterised). ``out`` (``[H + 1, N, F]``, optional) receives the features when no
        graph is built (REINFORCE)."""
        H = self.config.imag_horizon
        reparam = self.actor_grad == "backprop"
        graph = reparam and torch.is_grad_enabled()
        if graph:
            feats = [self.model.feat(deter, stoch)]
        else:
            # REINFORCE needs no gradient through the dynamics: the prior steps run without a
            # graph (the same values), writing each feature concat(deter, stoch) straight into
            # its row of one [H + 1, N, F] tensor instead of concatenating and stacking.
            D = deter.shape[-1]
            shape = (H + 1, *deter.shape[:-1], self.model.feat_dim)
            feat = (out if out is not None and out.shape == shape and out.dtype == deter.dtype
                    else torch.empty(shape, device=deter.device, dtype=deter.dtype))
            feat[0, ..., :D] = deter
            feat[0, ..., D:] = stoch
            # The actor reads the rows through ``.data`` (its own version counter): writing row
            # t + 1 later does not invalidate the row t it saved for its backward pass (each row
            # is written once, before it is read).
            rows = feat.data
        actions, dists = [], []
        img_step = self.model.img_stepper()
        for t in range(H):
            dist = self.actor((feats[-1] if graph else rows[t]).detach())
            action = self.actor.sample(dist, reparameterise=reparam)
            with torch.set_grad_enabled(graph):
                deter, _, stoch = img_step(deter, stoch, action)
            if graph:
                feats.append(self.model.feat(deter, stoch))
            else:
                feat[t + 1, ..., :D] = deter
                feat[t + 1, ..., D:] = stoch
            actions.append(action)
            dists.append(dist)
        return {"feat": torch.stack(feats, 0) if graph else feat,
                "action": torch.stack(actions, 0),
                "dist": {key: torch.stack([d[key] for d in dists], 0) for key in dists[0]}}

    def actor_critic_losses(self, starts: dict[str, Tensor]) -> tuple[Tensor, Tensor,
                                                                      dict[str, float]]:
        """Actor and critic losses from posterior start states ``deter [N, D]``,
        ``stoch [N, S * K]``, ``cont [N]`` (1 - terminated). World-model parameters are frozen:
        the losses leave no gradient on them. Updates the return normaliser."""
        cfg = self.config
        gamma = cfg.gamma
        reinforce = self.actor_grad == "reinforce"
        critic_logits = None
        with frozen(self.model):
            # The features (40 MB at the paper's batch) go into the same tensor every update:
            # without ``retain_freed_memory`` glibc maps blocks this large afresh each time, page
            # faults included. The previous update's graph, which saved them, is gone by now (if
            # it were not, autograd's version check would raise instead of using overwritten
            # values).
            traj = self.imagine(starts["deter"].detach(), starts["stoch"].detach(),
                                out=self._feat_buffer)
            if reinforce:
                self._feat_buffer = traj["feat"]
            feat = traj["feat"]
            reward = self.model.reward(feat[1:])
            logit = self.model.cont_logit(feat[1:])
            head = (torch.sigmoid(logit) if cfg.imagined_continue == "probability"
                    else (logit > 0).float())
            cont = torch.cat([starts["cont"][None].float(), head], 0)
            if reinforce:
                # No gradient flows through the values: one critic pass (on sg(feat)) gives
                # both the values of the returns and the logits of the critic loss (states
                # 0..H-1; the last state's logits only bootstrap).
                hidden = self.critic.mlp(feat.detach())
                critic_logits = self.critic.out(hidden[:-1]).float()
                with torch.no_grad():
                    last = self.critic.out(hidden[-1]).float()
                    value = torch.cat([two_hot_inv(critic_logits.detach(), -self.critic.bin_range,
                                                   self.critic.bin_range),
                                       two_hot_inv(last, -self.critic.bin_range,
                                                   self.critic.bin_range)[None]], 0)
            else:
                with frozen(self.critic):
                    value = self.critic.value(feat)
            discount, weight = imagination_weights(cont, gamma)
            ret = lambda_returns(reward, value, discount, cfg.return_lambda)
            self.retnorm.update(ret)
            scale = self.retnorm.scale()
            dist = traj["dist"]  # the actor on sg(feat[:-1]), as computed while imagining
            entropy = self.actor.entropy(dist)
            log_prob = (self.actor.log_prob(dist, traj["action"].detach()) if reinforce
                        else torch.zeros_like(entropy))
            a_loss = actor_loss(log_prob, entropy, ret, value[:-1], scale, weight[:-1],
                                cfg.actor_entropy, reinforce)
        feat_sg = feat[:-1].detach()
        with torch.no_grad():
            slow = self.slow_critic.value(feat_sg)
        logits = critic_logits if critic_logits is not None else self.critic(feat_sg)
        c_loss = critic_loss(logits, ret, slow, weight[:-1], cfg.slow_critic_reg,
                             cfg.model.bin_range)
        metrics = {"actor_loss": float(a_loss.detach()),
                   "critic_loss": float(c_loss.detach()),
                   "entropy": float(entropy.detach().mean()),
                   "imag_return": float(ret.detach().mean()),
                   "imag_reward": float(reward.detach().mean()),
                   "imag_value": float(value.detach().mean()),
                   "return_scale": float(scale),
                   "return_low": float(self.retnorm.low), "return_high": float(self.retnorm.high)}
        return a_loss, c_loss, metrics

    def train_step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """One DreamerV3 update on a batch ``[B, T]``: world model, then actor and critic on the
        imagined rollouts from its posterior states, then the slow critic's EMA step."""
        cfg = self.config
        self.model.train()
        try:
            metrics, seq = self.train_world_model(batch)
            starts = {"deter": seq["deter"].detach().flatten(0, 1),
                      "stoch": seq["stoch"].detach().flatten(0, 1),
                      "cont": 1.0 - batch["terminated"].float().flatten(0, 1)}
            with self.amp.autocast():
                a_loss, c_loss, ac = self.actor_critic_losses(starts)
            metrics.update({f"ac/{k}": v for k, v in ac.items()})
            self.amp.max_grad_norm = cfg.ac_clip
            for loss, opt, module, where in (
                    (a_loss, self.actor_opt, self.actor, "dreamerv3 actor"),
                    (c_loss, self.critic_opt, self.critic, "dreamerv3 critic")):
                opt.zero_grad(set_to_none=True)
                if not torch.isfinite(loss.detach()):
                    self.nonfinite.skip(where, f"non-finite loss {float(loss.detach())}")
                    continue
                self.amp.backward(loss)
                self.amp.step(opt, module.named_parameters(), self.nonfinite, where)
            self.updates += 1
            if self.updates % cfg.slow_critic_every == 0:
                self.update_slow_critic()
        finally:
            self.model.eval()
        metrics["train/seq_len"] = float(batch["obs"].shape[1])
        return metrics

    def train_world_model(self, batch: dict[str, Tensor]) -> tuple[dict[str, float],
                                                                   dict[str, Tensor]]:
        """The world-model half of :meth:`train_step` (the model must be in train mode): loss
        on ``batch [B, T]`` and one optimiser step. Returns ``model/`` metrics and the
        posterior sequence of :meth:`DreamerV3Model.observe`."""
        with self.amp.autocast():
            out, seq = self.model.world_model_loss(batch)
        if self.nonfinite.loss_ok(out, "dreamerv3 model"):
            self.model_opt.zero_grad(set_to_none=True)
            self.amp.backward(out.loss)
            self.amp.max_grad_norm = self.config.model_clip
            self.amp.step(self.model_opt, self.model.named_parameters(), self.nonfinite,
                          "dreamerv3 model")
        return {f"model/{k}": v for k, v in out.metrics.items()}, seq

    @torch.no_grad()
    def update_slow_critic(self) -> None:
        """``slow <- (1 - fraction) * slow + fraction * critic`` (paper: 0.02 every update)."""
        mix = self.config.slow_critic_fraction
        for slow, fast in zip(self.slow_critic.parameters(), self.critic.parameters(),
                              strict=True):
            slow.lerp_(fast, mix)

    # -- checkpoints ------------------------------------------------------------------------
    def networks(self) -> dict[str, nn.Module]:
        return {"model": self.model, "actor": self.actor, "critic": self.critic,
                "slow_critic": self.slow_critic, "retnorm": self.retnorm}

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "slow_critic": self.slow_critic.state_dict(),
            "retnorm": self.retnorm.state_dict(),
            "model_opt": self.model_opt.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "amp": self.amp.state_dict(),
            "rng": self.rng.bit_generator.state,
            "env_steps": self.env_steps,
            "updates": self.updates,
            "credit": self.credit,
            "nonfinite_in_a_row": self.nonfinite.in_a_row,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.slow_critic.load_state_dict(state["slow_critic"])
        self.retnorm.load_state_dict(state["retnorm"])
        self.model_opt.load_state_dict(state["model_opt"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.amp.load_state_dict(state.get("amp") or {})
        self.rng.bit_generator.state = state["rng"]
        self.env_steps = int(state["env_steps"])
        self.updates = int(state["updates"])
        self.credit = float(state["credit"])
        self.nonfinite.in_a_row = int(state.get("nonfinite_in_a_row", 0))
