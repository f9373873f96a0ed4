"""Proximal Policy Optimisation over a :class:`~worldflux.rl.env.BatchedEnv`.

Collection steps all N envs at once (one policy forward per step for the whole batch, no Python
loop over envs); the update is clipped PPO with GAE, per-minibatch advantage normalisation,
optional value clipping, an entropy bonus and several epochs of minibatches (Schulman et al.
2017; the defaults are CleanRL's ppo.py, which follows the paper's Atari/MuJoCo settings).
Discrete actions are categorical with the env's action mask; continuous ones Gaussian with a
state-independent log-std::

    env = make_batched_env("CartPole-v1", 8, seed=0)
    ppo = PPO(env, PPOConfig(), seed=0)
    ppo.learn(100_000)
    actions = ppo.act(obs, mask, deterministic=True)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from worldflux.core.device import resolve_device
from worldflux.core.errors import ConfigError
from worldflux.rl.env import BatchedEnv
from worldflux.rl.policy import Policy, PolicyConfig, build_policy

logger = logging.getLogger(__name__)

__all__ = ["PPO", "EpisodeTracker", "PPOConfig", "Rollout", "masked_logits"]

MASKED_LOGIT = -1e8
"""Logit given to illegal actions (finite, so entropies and exports stay NaN-free)."""


@dataclass
class PPOConfig:
    """Settings of :class:`PPO` (defaults: CleanRL ppo.py / Schulman et al. 2017)."""

    num_envs: int = 8
    """Environments stepped together."""

    rollout_steps: int = 128
    """Steps per env between updates (a rollout is ``num_envs * rollout_steps`` transitions)."""

    learning_rate: float = 2.5e-4
    """Adam step size."""

    anneal_lr: bool = True
    """Decay the step size linearly to 0 over the run."""

    gamma: float = 0.99
    """Discount."""

    gae_lambda: float = 0.95
    """GAE lambda (Schulman et al. 2016)."""

    minibatches: int = 4
    """Minibatches per epoch."""

    epochs: int = 4
    """Passes over each rollout."""

    normalize_advantage: bool = True
    """Standardise advantages within each minibatch."""

    clip_coef: float = 0.2
    """Ratio clip epsilon."""

    clip_value: bool = True
    """Clip the value update around the old values (same epsilon as the ratio)."""

    ent_coef: float = 0.01
    """Entropy bonus weight."""

    vf_coef: float = 0.5
    """Value loss weight."""

    max_grad_norm: float = 0.5
    """Gradient norm clip."""

    reward_scale: float = 1.0
    """Rewards are multiplied by this before the advantages are computed (e.g. 0.1 for returns
    in the hundreds, so the value loss and ``clip_value`` work at a sane scale)."""

    target_kl: float | None = None
    """Stop the epochs of an update early when the approximate KL exceeds this."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """The network (``policy.normalize_obs`` turns observation normalisation on)."""

    def validate(self) -> None:
        for name in ("num_envs", "rollout_steps", "minibatches", "epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: got {getattr(self, name)}, expected an integer >= 1")
        if self.num_envs * self.rollout_steps < self.minibatches:
            raise ConfigError(f"minibatches: got {self.minibatches}, more than the "
                              f"{self.num_envs * self.rollout_steps} transitions of a rollout")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}: got {getattr(self, name)}, expected a value in [0, 1]")
        if self.learning_rate <= 0 or self.clip_coef <= 0:
            raise ConfigError("learning_rate and clip_coef: expected values > 0, got "
                              f"{self.learning_rate} and {self.clip_coef}")


def masked_logits(logits: Tensor, mask: Tensor | None) -> Tensor:
    """``logits [B, A]`` with illegal actions (``mask`` False) pushed to a huge negative."""
    return logits if mask is None else logits.masked_fill(~mask, MASKED_LOGIT)


class EpisodeTracker:
    """Returns, lengths and successes of the episodes that end in a batched env."""

    def __init__(self, num_envs: int) -> None:
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self.lengths = np.zeros(num_envs, dtype=np.int64)
        self.finished_returns: list[float] = []
        self.finished_lengths: list[int] = []
        self.finished_success: list[bool] = []

    def update(self, reward: np.ndarray, done: np.ndarray, info: dict[str, np.ndarray]) -> None:
        live = ~info["skip"] if "skip" in info else True
        self.returns += reward
        self.lengths += live
        if done.any():
            rows = np.flatnonzero(done)
            self.finished_returns += self.returns[rows].tolist()
            self.finished_lengths += self.lengths[rows].tolist()
            if "success" in info:
                self.finished_success += info["success"][rows].tolist()
            self.returns[rows] = 0.0
            self.lengths[rows] = 0

    def pop(self) -> dict[str, float]:
        """Means over the episodes finished since the last call (empty dict when none)."""
        if not self.finished_returns:
            return {}
        out = {"episode/return": float(np.mean(self.finished_returns)),
               "episode/length": float(np.mean(self.finished_lengths)),
               "episode/count": float(len(self.finished_returns))}
        if self.finished_success:
            out["episode/success"] = float(np.mean(self.finished_success))
        self.finished_returns, self.finished_lengths, self.finished_success = [], [], []
        return out


@dataclass
class Rollout:
    """One rollout, time-major: ``obs [T, N, *obs]``, ``actions [T, N(, A)]``, the rest
    ``[T, N]``; ``mask [T, N, A]`` for discrete spaces with masks."""

    obs: Tensor
    actions: Tensor
    log_probs: Tensor
    values: Tensor
    advantages: Tensor
    returns: Tensor
    valid: Tensor
    mask: Tensor | None


class PPO:
    """PPO learner over a batched env.

    Args:
        env: the :class:`~worldflux.rl.env.BatchedEnv` (``env.num_envs`` overrides
            ``config.num_envs``).
        config: settings.
        policy: a ready :class:`~worldflux.rl.policy.Policy` (default: built from
            ``config.policy``).
        device: ``auto``, ``cpu``, ``cuda``...
        seed: seeds torch and the env's first reset.
    """

    def __init__(self, env: BatchedEnv, config: PPOConfig | None = None, *,
                 policy: Policy | None = None, device: str = "auto", seed: int = 0) -> None:
        self.config = config or PPOConfig()
        self.config.validate()
        self.env = env
        self.device = resolve_device(device)
        torch.manual_seed(seed)
        self.policy = (policy or build_policy(self.config.policy, env.observation_space,
                                              env.action_space)).to(self.device)
        self.continuous = self.policy.continuous
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.config.learning_rate,
                                          eps=1e-5)
        self.tracker = EpisodeTracker(env.num_envs)
        self.env_steps = 0
        self.updates = 0
        self._obs, info = env.reset(seed=seed)
        self._mask = info.get("action_mask")

    # -- acting ----------------------------------------------------------------------------------
    def _distribution(self, out: Tensor, mask: Tensor | None):
        if self.continuous:
            return torch.distributions.Normal(out, self.policy.log_std.exp().expand_as(out))
        return torch.distributions.Categorical(logits=masked_logits(out, mask))

    @torch.no_grad()
    def act(self, obs: np.ndarray, mask: np.ndarray | None = None, *,
            deterministic: bool = False) -> np.ndarray:
        """Actions ``[N]`` (discrete) or ``[N, A]`` for observations ``[N, *obs]``."""
        out, _ = self.policy(torch.as_tensor(obs, device=self.device))
        if self.continuous:
            if deterministic:
                return out.cpu().numpy()
            return self._distribution(out, None).sample().cpu().numpy()
        mask_t = None if mask is None else torch.as_tensor(mask, device=self.device)
        logits = masked_logits(out, mask_t)
        if deterministic:
            return logits.argmax(-1).cpu().numpy()
        return self._sample_discrete(logits).cpu().numpy()

    @staticmethod
    def _sample_discrete(logits: Tensor) -> Tensor:
        # Gumbel-max: one vectorised draw, cheaper than Categorical.sample on small batches.
        noise = torch.rand_like(logits).clamp_(1e-20, 1.0)
        return (logits - torch.log(-torch.log(noise))).argmax(-1)

    # -- collection ------------------------------------------------------------------------------
    @torch.no_grad()
    def collect(self) -> Rollout:
        """Step the envs ``rollout_steps`` times and compute GAE advantages."""
        cfg, env, dev = self.config, self.env, self.device
        steps, n = cfg.rollout_steps, env.num_envs
        obs_buf = torch.empty((steps, n, *self.policy.obs_shape), device=dev)
        if self.continuous:
            act_buf = torch.empty((steps, n, self.policy.action_dim), device=dev)
        else:
            act_buf = torch.empty((steps, n), dtype=torch.long, device=dev)
        logp_buf = torch.empty((steps, n), device=dev)
        val_buf = torch.empty((steps, n), device=dev)
        rew_buf = torch.empty((steps, n), device=dev)
        done_buf = torch.empty((steps, n), device=dev)
        valid_buf = torch.ones((steps, n), dtype=torch.bool, device=dev)
        mask_buf = (torch.empty((steps, n, self.policy.action_dim), dtype=torch.bool, device=dev)
                    if self._mask is not None else None)
        obs, mask = self._obs, self._mask
        for t in range(steps):
            obs_t = torch.as_tensor(obs, device=dev)
            obs_buf[t] = obs_t
            out, value = self.policy(obs_t)
            if self.continuous:
                dist = self._distribution(out, None)
                action = dist.sample()
                logp = dist.log_prob(action).sum(-1)
            else:
                mask_t = None
                if mask is not None:
                    mask_t = torch.as_tensor(mask, device=dev)
                    mask_buf[t] = mask_t
                logits = torch.log_softmax(masked_logits(out, mask_t), -1)
                action = self._sample_discrete(logits)
                logp = logits.gather(1, action[:, None]).squeeze(1)
            act_buf[t] = action
            logp_buf[t] = logp
            val_buf[t] = value
            obs, reward, terminated, truncated, info = env.step(action.cpu().numpy())
            done = terminated | truncated
            self.tracker.update(reward, done, info)
            reward_t = torch.as_tensor(reward, device=dev) * cfg.reward_scale
            cut = truncated & ~terminated
            if cut.any() and "final_obs" in info:
                # A time limit is not a terminal state: bootstrap from the last observation.
                rows = np.flatnonzero(cut)
                _, final_value = self.policy(torch.as_tensor(info["final_obs"][rows], device=dev))
                reward_t[torch.as_tensor(rows, device=dev)] += cfg.gamma * final_value
            rew_buf[t] = reward_t
            done_buf[t] = torch.as_tensor(done, device=dev, dtype=torch.float32)
            if "skip" in info:
                valid_buf[t] = ~torch.as_tensor(info["skip"], device=dev)
            mask = info.get("action_mask")
        self._obs, self._mask = obs, mask
        _, next_value = self.policy(torch.as_tensor(obs, device=dev))
        advantages = torch.empty_like(rew_buf)
        last = torch.zeros(n, device=dev)
        for t in reversed(range(steps)):
            following = next_value if t == steps - 1 else val_buf[t + 1]
            live = 1.0 - done_buf[t]
            delta = rew_buf[t] + cfg.gamma * following * live - val_buf[t]
            last = delta + cfg.gamma * cfg.gae_lambda * live * last
            advantages[t] = last
        # The step after a skipped (placeholder) row starts a new episode: its value is not
        # the continuation of the placeholder, which is left out of the loss anyway.
        self.env_steps += steps * n
        return Rollout(obs_buf, act_buf, logp_buf, val_buf, advantages, advantages + val_buf,
                       valid_buf, mask_buf)

    # -- update ----------------------------------------------------------------------------------
    def update(self, rollout: Rollout) -> dict[str, float]:
        """Clipped-PPO epochs over ``rollout``; returns mean losses and diagnostics."""
        cfg = self.config
        flat = rollout.valid.reshape(-1)
        index = torch.nonzero(flat).squeeze(1)
        obs = rollout.obs.reshape(-1, *self.policy.obs_shape)[index]
        actions = rollout.actions.reshape(-1, *rollout.actions.shape[2:])[index]
        old_logp = rollout.log_probs.reshape(-1)[index]
        old_values = rollout.values.reshape(-1)[index]
        advantages = rollout.advantages.reshape(-1)[index]
        returns = rollout.returns.reshape(-1)[index]
        mask = None if rollout.mask is None else rollout.mask.reshape(-1, self.policy.action_dim)[index]
        total = obs.shape[0]
        size = max(1, total // cfg.minibatches)
        keys = ("loss/policy", "loss/value", "loss/entropy", "ppo/approx_kl", "ppo/clipfrac")
        totals = torch.zeros(len(keys), device=self.device)  # summed on the device, read once
        count = 0
        stop = False
        for _ in range(cfg.epochs):
            order = torch.randperm(total, device=self.device)
            for start in range(0, total - size + 1, size):
                mb = order[start:start + size]
                out, value = self.policy(obs[mb])
                dist = self._distribution(out, None if mask is None else mask[mb])
                if self.continuous:
                    logp = dist.log_prob(actions[mb]).sum(-1)
                    entropy = dist.entropy().sum(-1)
                else:
                    logp = dist.log_prob(actions[mb])
                    entropy = dist.entropy()
                log_ratio = logp - old_logp[mb]
                ratio = log_ratio.exp()
                adv = advantages[mb]
                if cfg.normalize_advantage and adv.numel() > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg_loss = torch.max(-adv * ratio,
                                    -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
                if cfg.clip_value:
                    clipped = old_values[mb] + (value - old_values[mb]).clamp(-cfg.clip_coef,
                                                                              cfg.clip_coef)
                    v_loss = 0.5 * torch.max((value - returns[mb]).square(),
                                             (clipped - returns[mb]).square()).mean()
                else:
                    v_loss = 0.5 * (value - returns[mb]).square().mean()
                ent = entropy.mean()
                loss = pg_loss - cfg.ent_coef * ent + cfg.vf_coef * v_loss
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).mean()
                    clipfrac = ((ratio - 1).abs() > cfg.clip_coef).float().mean()
                    totals += torch.stack([pg_loss.detach(), v_loss.detach(), ent.detach(),
                                           approx_kl, clipfrac])
                count += 1
                if cfg.target_kl is not None and float(approx_kl) > cfg.target_kl:
                    stop = True
                    break
            if stop:
                break
        if self.policy.obs_normalizer is not None:
            # Statistics change only between updates, so the ratios above stay consistent.
            self.policy.obs_normalizer.update(obs)
        self.updates += 1
        metrics = dict(zip(keys, (totals / count).tolist(), strict=True)) if count else {}
        var = returns.var()
        metrics["ppo/explained_variance"] = float(
            1 - (returns - old_values).var() / var) if var > 0 else float("nan")
        return metrics

    # -- loop ------------------------------------------------------------------------------------
    def learn(self, total_steps: int, *,
              callback: Callable[[PPO, dict[str, float]], bool | None] | None = None
              ) -> list[dict[str, float]]:
        """Collect and update until ``env_steps`` reaches ``total_steps`` (a resumed learner
        continues where its state left off, learning-rate annealing included); returns one
        metrics dict per update. ``callback(ppo, metrics)`` runs after each update; returning
        True stops."""
        cfg = self.config
        per_rollout = cfg.rollout_steps * self.env.num_envs
        iterations = max(1, math.ceil(total_steps / per_rollout))
        history: list[dict[str, Any]] = []
        base_lr = cfg.learning_rate
        start = time.perf_counter()
        for it in range(min(self.env_steps // per_rollout, iterations), iterations):
            if cfg.anneal_lr:
                for group in self.optimizer.param_groups:
                    group["lr"] = base_lr * (1.0 - it / iterations)
            t0 = time.perf_counter()
            rollout = self.collect()
            t1 = time.perf_counter()
            metrics = self.update(rollout)
            t2 = time.perf_counter()
            metrics.update(self.tracker.pop())
            metrics.update({"env_steps": float(self.env_steps), "time/collect_s": t1 - t0,
                            "time/update_s": t2 - t1, "time/elapsed_s": t2 - start,
                            "perf/collect_steps_per_s": per_rollout / max(t1 - t0, 1e-9)})
            history.append(metrics)
            if callback is not None and callback(self, metrics):
                break
        return history

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "env_steps": self.env_steps, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.env_steps = int(state["env_steps"])
        self.updates = int(state["updates"])
