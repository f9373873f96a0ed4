"""AlphaZero: batched MCTS with PUCT guided by a policy-value network, self-play, training.

:class:`BatchedMCTS` searches B root positions at once. The tree lives in arrays
``[B, nodes, actions]`` (visits, value sums, priors, edge rewards, children); every simulation
descends all B trees in lockstep (a Python loop over depth, vectorised over B), expands one leaf
per tree, evaluates all the new leaves in **one** network call, and backs the values up.
Root priors get Dirichlet noise during self-play; moves are drawn from visit counts with a
temperature schedule (temperature 1 for the first moves, then the most visited move) (Silver
et al. 2017/2018, "Mastering chess and shogi by self-play ...", and its pseudocode).

Games come as *rules*: objects with batch functions over states ``[N, D]``::

    num_actions: int; two_player: bool
    initial_states(n) -> [n, D]; legal_mask(states) -> [N, A] bool
    next_states(states, actions [N]) -> (next [N, D], reward for the mover [N], done [N])
    observe(states) -> network input [N, *obs_shape]

Two-player rules give canonical states (seen by the player to move) and zero-sum rewards; the
search negates values between plies. Single-agent rules (the sliding puzzle) are searched with
a discount and min-max normalised Q values (Schrittwieser et al. 2020, MuZero, Appendix B).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from worldflux.core.device import resolve_device
from worldflux.core.errors import ConfigError
from worldflux.rl.policy import Policy, PolicyConfig, build_policy
from worldflux.rl.ppo import masked_logits

logger = logging.getLogger(__name__)

__all__ = ["AlphaZero", "AlphaZeroConfig", "BatchedMCTS", "MCTSConfig", "minimax_moves",
           "minimax_values", "network_evaluator", "sample_rows", "visit_policy"]

Evaluator = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""``(states [N, D], legal [N, A]) -> (priors [N, A], values [N])`` for the player to move."""


@dataclass
class MCTSConfig:
    """Settings of :class:`BatchedMCTS`."""

    simulations: int = 64
    """Simulations per search (each expands one node per tree)."""

    c_puct: float = 1.25
    """Exploration weight of PUCT (AlphaZero pseudocode: c_init = 1.25; its log term is ~0 at
    these visit counts and is left out)."""

    dirichlet_alpha: float = 0.3
    """Dirichlet concentration of the root noise (AlphaZero: 0.3 chess, 0.03 Go; roughly
    10 / typical number of legal moves)."""

    dirichlet_fraction: float = 0.25
    """Weight of the noise in the root priors (AlphaZero: 0.25)."""

    discount: float = 1.0
    """Discount of rewards inside the tree (1 for board games)."""

    def validate(self) -> None:
        if self.simulations < 1:
            raise ConfigError(f"mcts.simulations: got {self.simulations}, expected >= 1")
        if self.c_puct <= 0 or self.dirichlet_alpha <= 0:
            raise ConfigError("mcts.c_puct and mcts.dirichlet_alpha: expected values > 0, got "
                              f"{self.c_puct} and {self.dirichlet_alpha}")
        if not 0.0 <= self.dirichlet_fraction <= 1.0:
            raise ConfigError(f"mcts.dirichlet_fraction: got {self.dirichlet_fraction}, "
                              "expected a value in [0, 1]")


class BatchedMCTS:
    """PUCT search over B root states at once.

    Args:
        rules: the game (see the module docstring).
        evaluate: the network as an :data:`Evaluator`.
        config: search settings.
    """

    def __init__(self, rules: Any, evaluate: Evaluator, config: MCTSConfig | None = None
                 ) -> None:
        self.rules = rules
        self.evaluate = evaluate
        self.config = config or MCTSConfig()
        self.config.validate()
        self.sign = -1.0 if rules.two_player else 1.0

    def search(self, states: np.ndarray, rng: np.random.Generator, *, noise: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
        """Search from ``states [B, D]``: ``(root visit counts [B, A], root values [B])``."""
        cfg, rules = self.config, self.rules
        B, A = states.shape[0], rules.num_actions
        M = cfg.simulations + 1
        rows = np.arange(B)
        node_states = np.zeros((B, M, states.shape[1]), dtype=states.dtype)
        children = np.full((B, M, A), -1, dtype=np.int64)
        prior = np.zeros((B, M, A), dtype=np.float32)
        legal = np.zeros((B, M, A), dtype=bool)
        visits = np.zeros((B, M, A), dtype=np.float32)
        value_sum = np.zeros((B, M, A), dtype=np.float32)
        edge_reward = np.zeros((B, M, A), dtype=np.float32)
        terminal = np.zeros((B, M), dtype=bool)
        count = np.ones(B, dtype=np.int64)
        q_min = np.full(B, np.inf, dtype=np.float32)
        q_max = np.full(B, -np.inf, dtype=np.float32)

        node_states[:, 0] = states
        root_legal = rules.legal_mask(states)
        root_prior, root_value = self.evaluate(states, root_legal)
        if noise:
            alpha = np.where(root_legal, cfg.dirichlet_alpha, 1e-12)
            dirichlet = rng.gamma(alpha).astype(np.float32) * root_legal
            dirichlet /= np.maximum(dirichlet.sum(1, keepdims=True), 1e-12)
            root_prior = (1 - cfg.dirichlet_fraction) * root_prior + cfg.dirichlet_fraction * dirichlet
        prior[:, 0] = root_prior
        legal[:, 0] = root_legal

        max_depth = M
        path_nodes = np.zeros((B, max_depth), dtype=np.int64)
        path_actions = np.zeros((B, max_depth), dtype=np.int64)
        for _ in range(cfg.simulations):
            node = np.zeros(B, dtype=np.int64)
            active = np.ones(B, dtype=bool)
            length = np.zeros(B, dtype=np.int64)
            expand = np.zeros(B, dtype=bool)
            depth = 0
            while active.any() and depth < max_depth:
                n = visits[rows, node]
                w = value_sum[rows, node]
                total = n.sum(1, keepdims=True)
                q = np.where(n > 0, w / np.maximum(n, 1), 0.0)
                if self.sign > 0:  # single agent: min-max normalised Q, 0 for unvisited edges
                    span = np.where(q_max > q_min, q_max - q_min, 1.0)[:, None]
                    base = np.where(np.isfinite(q_min), q_min, 0.0)[:, None]
                    q = np.where(n > 0, (q - base) / span, 0.0)
                score = q + cfg.c_puct * prior[rows, node] * np.sqrt(np.maximum(total, 1)) / (1 + n)
                score = np.where(legal[rows, node], score, -np.inf)
                action = score.argmax(1)
                path_nodes[active, depth] = node[active]
                path_actions[active, depth] = action[active]
                length += active
                child = children[rows, node, action]
                new = active & (child < 0)
                expand |= new
                active &= ~new
                child_safe = np.maximum(child, 0)
                active &= ~terminal[rows, child_safe]
                node = np.where(active, child_safe, node)
                depth += 1
            leaf_value = np.zeros(B, dtype=np.float32)
            if expand.any():
                idx = np.flatnonzero(expand)
                last = length[idx] - 1
                parent = path_nodes[idx, last]
                act = path_actions[idx, last]
                nxt, reward, done = rules.next_states(node_states[idx, parent], act)
                new_node = count[idx]
                count[idx] += 1
                children[idx, parent, act] = new_node
                node_states[idx, new_node] = nxt
                edge_reward[idx, parent, act] = reward
                terminal[idx, new_node] = done
                going = np.flatnonzero(~done)
                if len(going):
                    sub = idx[going]
                    sub_legal = rules.legal_mask(nxt[going])
                    sub_prior, sub_value = self.evaluate(nxt[going], sub_legal)
                    prior[sub, new_node[going]] = sub_prior
                    legal[sub, new_node[going]] = sub_legal
                    leaf_value[sub] = sub_value
            # Back up from the deepest edge of each path to the root.
            ret = leaf_value
            for d in range(int(length.max()) - 1, -1, -1):
                on = length > d
                nodes_d, acts_d = path_nodes[:, d], path_actions[:, d]
                ret = np.where(on, edge_reward[rows, nodes_d, acts_d]
                               + cfg.discount * self.sign * ret, ret)
                visits[rows[on], nodes_d[on], acts_d[on]] += 1
                value_sum[rows[on], nodes_d[on], acts_d[on]] += ret[on]
                if self.sign > 0:
                    q_edge = value_sum[rows, nodes_d, acts_d] / np.maximum(
                        visits[rows, nodes_d, acts_d], 1)
                    q_min = np.where(on, np.minimum(q_min, q_edge), q_min)
                    q_max = np.where(on, np.maximum(q_max, q_edge), q_max)
        root_visits = visits[:, 0]
        root_q = value_sum[:, 0].sum(1) / np.maximum(root_visits.sum(1), 1)
        del root_value
        return root_visits, root_q


def network_evaluator(policy: Policy, rules: Any, device: torch.device, *,
                      two_player: bool) -> Evaluator:
    """Wrap a policy-value network as an :data:`Evaluator` (one forward per call)."""

    @torch.no_grad()
    def evaluate(states: np.ndarray, legal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        obs = torch.as_tensor(rules.observe(states), device=device)
        logits, value = policy(obs)
        probs = torch.softmax(masked_logits(logits, torch.as_tensor(legal, device=device)), -1)
        value = value.clamp(-1.0, 1.0) if two_player else value
        return probs.cpu().numpy(), value.cpu().numpy().astype(np.float32)

    return evaluate


def visit_policy(visits: np.ndarray, temperature: float) -> np.ndarray:
    """Move probabilities ``[B, A]`` from visit counts: ``N^(1/T)`` normalised; T=0 is argmax."""
    if temperature <= 0:
        out = np.zeros_like(visits)
        out[np.arange(len(visits)), visits.argmax(1)] = 1.0
        return out
    powered = visits ** (1.0 / temperature)
    return powered / np.maximum(powered.sum(1, keepdims=True), 1e-12)


def sample_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of ``probs [B, A]``."""
    cumulative = probs.cumsum(1)
    draws = rng.random((len(probs), 1)) * cumulative[:, -1:]
    return np.minimum((cumulative < draws).sum(1), probs.shape[1] - 1)


@dataclass
class AlphaZeroConfig:
    """Settings of :class:`AlphaZero`."""

    games_per_iteration: int = 128
    """Self-play games (or puzzle episodes) played together per iteration."""

    temperature_moves: int = 4
    """Moves drawn in proportion to visit counts (temperature 1) at the start of each game;
    later moves take the most visited action (AlphaZero: the first 30 moves of chess/Go)."""

    max_moves: int = 64
    """Longest game or episode (puzzles: the move budget, 2 x scramble depth)."""

    buffer_size: int = 50_000
    """Positions kept for training (the most recent)."""

    batch_size: int = 256
    """Positions per gradient step."""

    train_steps: int = 100
    """Gradient steps per iteration."""

    learning_rate: float = 1e-3
    """Adam step size."""

    weight_decay: float = 1e-4
    """L2 weight decay (AlphaZero: 1e-4)."""

    value_coef: float = 1.0
    """Weight of the value loss next to the policy cross-entropy."""

    mcts: MCTSConfig = field(default_factory=MCTSConfig)
    """Search settings."""

    policy: PolicyConfig = field(default_factory=lambda: PolicyConfig(hidden=(128, 128),
                                                                      activation="relu",
                                                                      shared=True))
    """The policy-value network."""

    def validate(self) -> None:
        for name in ("games_per_iteration", "max_moves", "buffer_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: got {getattr(self, name)}, expected an integer >= 1")
        self.mcts.validate()


class AlphaZero:
    """AlphaZero learner on batch rules: self-play (two-player) or searched episodes (puzzles).

    Args:
        rules: the game, or the puzzle's rules with ``start_states(n, rng)`` provided through
            ``start_states`` (puzzles start from scrambles, games from the empty board).
        config: settings.
        start_states: ``(n, rng) -> states [n, D]`` for single-agent rules.
        device, seed: as elsewhere.
    """

    def __init__(self, rules: Any, config: AlphaZeroConfig | None = None, *,
                 start_states: Callable[[int, np.random.Generator], np.ndarray] | None = None,
                 policy: Policy | None = None, device: str = "auto", seed: int = 0) -> None:
        self.config = config or AlphaZeroConfig()
        self.config.validate()
        if not rules.two_player and start_states is None:
            raise ConfigError("start_states: single-agent rules need a start-state sampler")
        self.rules = rules
        self.start_states = start_states
        self.device = resolve_device(device)
        self.rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        obs_shape = rules.observe(rules.initial_states(1)).shape[1:]
        obs_space = spaces.Box(0.0, 1.0, obs_shape, np.float32)
        self.policy = (policy or build_policy(self.config.policy, obs_space,
                                              spaces.Discrete(rules.num_actions))).to(self.device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.config.learning_rate,
                                          weight_decay=self.config.weight_decay)
        self.evaluate = network_evaluator(self.policy, rules, self.device,
                                          two_player=rules.two_player)
        self.mcts = BatchedMCTS(rules, self.evaluate, self.config.mcts)
        self._buffer: dict[str, list[np.ndarray]] = {"obs": [], "policy": [], "value": [],
                                                     "legal": []}
        self.iterations = 0
        self.env_steps = 0

    # -- playing ---------------------------------------------------------------------------------
    def choose(self, states: np.ndarray, *, temperature: float = 0.0, noise: bool = False,
               simulations: int | None = None) -> np.ndarray:
        """Search each of ``states [B, D]`` and pick a move per row ``[B]``."""
        mcts = self.mcts
        if simulations is not None and simulations != self.config.mcts.simulations:
            cfg = MCTSConfig(**{**self.config.mcts.__dict__, "simulations": simulations})
            mcts = BatchedMCTS(self.rules, self.evaluate, cfg)
        visits, _ = mcts.search(states, self.rng, noise=noise)
        return sample_rows(visit_policy(visits, temperature), self.rng)

    def play_episodes(self) -> dict[str, float]:
        """One generation of self-play games / searched puzzle episodes into the buffer."""
        cfg, rules = self.config, self.rules
        n = cfg.games_per_iteration
        states = (rules.initial_states(n) if rules.two_player
                  else self.start_states(n, self.rng))  # type: ignore[misc]
        alive = np.ones(n, dtype=bool)
        outcome = np.zeros(n, dtype=np.float32)  # reward of the last mover (games)
        end_move = np.full(n, cfg.max_moves, dtype=np.int64)
        records: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        for move in range(cfg.max_moves):
            idx = np.flatnonzero(alive)
            if not len(idx):
                break
            sub = states[idx]
            visits, _ = self.mcts.search(sub, self.rng, noise=True)
            target = visit_policy(visits, 1.0)
            temperature = 1.0 if move < cfg.temperature_moves else 0.0
            actions = sample_rows(visit_policy(visits, temperature), self.rng)
            records.append((idx, rules.observe(sub), target, rules.legal_mask(sub),
                            np.full(len(idx), move)))
            nxt, reward, done = rules.next_states(sub, actions)
            states[idx] = nxt
            self.env_steps += len(idx)
            finished = idx[done]
            outcome[finished] = reward[done]
            end_move[finished] = move
            alive[finished] = False
        solved = outcome > 0
        for idx, obs, target, legal, moves in records:
            if rules.two_player:
                # +1 for the position's player to move if they made the winning move, else -1.
                parity = np.where((end_move[idx] - moves) % 2 == 0, 1.0, -1.0)
                value = outcome[idx] * parity
            else:
                steps_left = end_move[idx] - moves
                value = np.where(solved[idx],
                                 self.config.mcts.discount ** steps_left.astype(np.float32), 0.0)
            self._buffer["obs"].append(obs)
            self._buffer["policy"].append(target.astype(np.float32))
            self._buffer["value"].append(value.astype(np.float32))
            self._buffer["legal"].append(legal)
        self._trim()
        stats = {"selfplay/games": float(n), "selfplay/mean_length": float(np.mean(
            np.minimum(end_move, cfg.max_moves - 1) + 1))}
        if rules.two_player:
            stats["selfplay/decisive"] = float(np.mean(outcome > 0))
        else:
            stats["episode/success"] = float(np.mean(solved))
        return stats

    def _trim(self) -> None:
        size = sum(len(v) for v in self._buffer["value"])
        while size > self.config.buffer_size and len(self._buffer["value"]) > 1:
            size -= len(self._buffer["value"][0])
            for key in self._buffer:
                self._buffer[key].pop(0)

    # -- training --------------------------------------------------------------------------------
    def train(self) -> dict[str, float]:
        """``train_steps`` gradient steps on the buffer: cross-entropy to the visit targets plus
        the value MSE to the outcomes."""
        cfg = self.config
        data = {k: torch.as_tensor(np.concatenate(v), device=self.device)
                for k, v in self._buffer.items()}
        total = data["value"].shape[0]
        policy_sum = value_sum = torch.zeros((), device=self.device)
        for _ in range(cfg.train_steps):
            idx = torch.randint(0, total, (min(cfg.batch_size, total),), device=self.device)
            logits, value = self.policy(data["obs"][idx])
            log_probs = torch.log_softmax(masked_logits(logits, data["legal"][idx]), -1)
            policy_loss = -(data["policy"][idx] * log_probs).sum(-1).mean()
            value_loss = (value - data["value"][idx]).square().mean()
            loss = policy_loss + cfg.value_coef * value_loss
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            # Summed on the device: one transfer per call, not two per step.
            policy_sum = policy_sum + policy_loss.detach()
            value_sum = value_sum + value_loss.detach()
        return {"loss/policy": float(policy_sum) / cfg.train_steps,
                "loss/value": float(value_sum) / cfg.train_steps}

    def learn(self, iterations: int, *,
              callback: Callable[[AlphaZero, dict[str, float]], bool | None] | None = None
              ) -> list[dict[str, float]]:
        """Alternate self-play and training; ``callback`` as in :meth:`PPO.learn`."""
        history = []
        start = time.perf_counter()
        for _ in range(iterations):
            t0 = time.perf_counter()
            metrics = self.play_episodes()
            t1 = time.perf_counter()
            metrics.update(self.train())
            t2 = time.perf_counter()
            self.iterations += 1
            metrics.update({"env_steps": float(self.env_steps), "time/selfplay_s": t1 - t0,
                            "time/update_s": t2 - t1, "time/elapsed_s": t2 - start})
            history.append(metrics)
            if callback is not None and callback(self, metrics):
                break
        return history

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "iterations": self.iterations, "env_steps": self.env_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iterations = int(state["iterations"])
        self.env_steps = int(state["env_steps"])


def minimax_values(rules: Any) -> dict[bytes, int]:
    """Exact game values of every reachable position of a small game (tic-tac-toe), for the
    player to move: +1 win, 0 draw, -1 loss. Keys are ``state.tobytes()``."""
    cache: dict[bytes, int] = {}

    def value(state: np.ndarray) -> int:
        key = state.tobytes()
        if key in cache:
            return cache[key]
        legal = np.flatnonzero(rules.legal_mask(state[None])[0])
        best = -2
        nxt, reward, done = rules.next_states(np.repeat(state[None], len(legal), 0), legal)
        for i in range(len(legal)):
            v = 1 if reward[i] > 0 else (0 if done[i] else -value(nxt[i]))
            best = max(best, v)
        cache[key] = best
        return best

    value(rules.initial_states(1)[0])
    return cache


def minimax_moves(rules: Any, states: np.ndarray, table: dict[bytes, int],
                  rng: np.random.Generator) -> np.ndarray:
    """A perfect move per row of ``states [B, D]`` (random among the optimal ones)."""
    out = np.zeros(len(states), dtype=np.int64)
    legal_all = rules.legal_mask(states)
    for b, state in enumerate(states):
        legal = np.flatnonzero(legal_all[b])
        nxt, reward, done = rules.next_states(np.repeat(state[None], len(legal), 0), legal)
        scores = np.array([1 if reward[i] > 0 else (0 if done[i] else -table[nxt[i].tobytes()])
                           for i in range(len(legal))])
        best = legal[scores == scores.max()]
        out[b] = rng.choice(best)
    return out

