"""The ``token`` family: a VQ-VAE tokenizer and transformer dynamics over frame tokens (IRIS-like).

State keys: ``"tokens" [B, N, K]`` (int64: the last ``N = history`` frames as ``K`` tokens each,
oldest first; the last row is the current frame), ``"reward" [B]`` (predicted reward of the
transition into the state; 0 after ``encode``), ``"continue" [B]`` (probability that the episode
goes on), ``"game" [B]`` (int64 index into the game embedding), ``"frame" [B, C, H, H]`` (the
last real frame, from ``encode`` / ``update``) and ``"frame_tokens" [B, K]`` (its tokens; -1 in
``initial_state``, where there is no real frame), which ``decode`` pastes into the cells whose
token did not change (``config.copy_unchanged_cells``).

Training: :meth:`TokenModel.tokenizer_loss` (reconstruction + VQ on every frame of a batch) and
:meth:`TokenModel.dynamics_loss` (next-frame tokens, reward and end, on tokens from the current
tokenizer without gradients into it) are separate components with their own optimisers
(:meth:`TokenModel.optimizers`); :meth:`loss` is their sum, for the generic contract.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from worldflux.core.model import WorldModel
from worldflux.core.registry import WorldModelRegistry
from worldflux.core.spec import ActionSpec, IOContract, ObservationSpec, standard_batch_keys
from worldflux.core.types import Batch, LossOutput, ModelOutput, State
from worldflux.models.token.config import TokenConfig
from worldflux.models.token.dynamics import TokenDynamics
from worldflux.models.token.tokenizer import Tokenizer
from worldflux.nn.twohot import symexp, symlog

CHUNK = 256
"""Frames per tokenizer call when tokenizing many frames without gradients."""


@WorldModelRegistry.register("token", TokenConfig, aliases=("iris",), tier="experimental",
                             description="VQ-VAE frame tokenizer + transformer dynamics with "
                                         "frame history (IRIS-like), parallel or KV-cached "
                                         "causal decoding")
class TokenModel(WorldModel):
    """Discrete-token world model of 64x64 games; see :class:`TokenConfig`."""

    family = "token"
    config_class: ClassVar[type[TokenConfig]] = TokenConfig

    def __init__(self, config: TokenConfig, obs_spec: ObservationSpec, action_spec: ActionSpec):
        super().__init__(config, obs_spec, action_spec)
        config.validate(obs_spec, action_spec)
        self.tokenizer = Tokenizer(config, tuple(obs_spec.shape))
        self.dynamics = TokenDynamics(config, action_spec.dim)

    # -- contract ---------------------------------------------------------------------------
    def io_contract(self) -> IOContract:
        return IOContract(self.obs_spec, self.action_spec, standard_batch_keys(),
                          state_keys=("tokens", "reward", "continue", "game", "frame", "frame_tokens"),
                          predictions=("obs", "reward", "continue"), min_sequence_length=2)

    def initial_state(self, batch_size: int) -> State:
        device = self.dynamics.spatial.device
        N, K = self.config.history, self.config.tokens_per_frame
        # No real frame yet: frame tokens of -1 match no token, so decode pastes nothing.
        return self._state(torch.zeros(batch_size, N, K, dtype=torch.long, device=device),
                           torch.zeros(batch_size, dtype=torch.long, device=device),
                           frame=torch.zeros(batch_size, *self.obs_spec.shape,
                                             dtype=torch.uint8, device=device),
                           frame_tokens=torch.full((batch_size, K), -1, dtype=torch.long,
                                                   device=device))

    def encode(self, obs: Tensor, *, game: Tensor | int | None = None) -> State:
        """Tokens of ``obs [B, C, H, H]``, repeated over the history (as at an episode start);
        ``game`` selects the game embedding (default 0). ``obs`` is kept as the last real frame
        (see ``config.copy_unchanged_cells``)."""
        tokens = self.tokenize(obs)
        history = tokens[:, None].expand(-1, self.config.history, -1).contiguous()
        return self._state(history, self._games(game, tokens.shape[0], tokens.device),
                           frame=obs, frame_tokens=tokens)

    def update(self, state: State, action: Tensor, obs: Tensor) -> State:
        """A real step: ``obs``'s tokens join the history (the oldest frame drops out) and
        ``obs`` becomes the last real frame."""
        tokens = self.tokenize(obs)
        history = torch.cat([state["tokens"][:, 1:], tokens[:, None]], 1)
        return self._state(history, state["game"], frame=obs, frame_tokens=tokens)

    def transition(self, state: State, action: Tensor, *, mode: str | None = None,
                   use_cache: bool = True, generator: torch.Generator | None = None) -> State:
        """One imagined frame: the dynamics' tokens (``config.decoding`` unless ``mode``)."""
        out = self.dynamics.generate(state["tokens"], action.float(), state["game"],
                                     mode=mode or self.config.decoding, use_cache=use_cache,
                                     temperature=self.config.temperature, generator=generator)
        history = torch.cat([state["tokens"][:, 1:], out["tokens"][:, None]], 1)
        frame = {k: state[k] for k in ("frame", "frame_tokens") if k in state}
        return State({"tokens": history, "reward": symexp(out["reward"]),
                      "continue": torch.sigmoid(-out["end_logit"]), "game": state["game"],
                      **frame}, {"family": self.family})

    def decode(self, state: State) -> ModelOutput:
        """``obs [B, C, H, H]`` (float, 0..255) of the current frame's tokens, and the heads.
        With ``config.copy_unchanged_cells`` and a real frame in the state, the cells whose
        token equals that frame's are its pixels (:meth:`paste_unchanged`)."""
        tokens = state["tokens"][:, -1]
        has_frame = "frame" in state  # states built by hand may lack it
        reference = present = None
        if has_frame and self.config.reference_decoder:
            # -1 frame tokens (initial_state): no real frame to draw against.
            reference, present = state["frame"], state["frame_tokens"][:, 0] >= 0
        obs = self.detokenize(tokens, reference, present)
        if self.config.copy_unchanged_cells and has_frame:
            obs = self.paste_unchanged(obs, tokens, state["frame"], state["frame_tokens"])
        return ModelOutput({"obs": obs, "reward": state["reward"],
                            "continue": state["continue"]}, state)

    def paste_unchanged(self, decoded: Tensor, tokens: Tensor, frame: Tensor,
                        frame_tokens: Tensor) -> Tensor:
        """``decoded [B, C, H, H]`` (0..255) with every cell whose token in ``tokens [B, K]``
        equals ``frame_tokens [B, K]`` replaced by that cell of ``frame [B, C, H, H]``."""
        G = self.config.grid_size
        cell = decoded.shape[-1] // G
        same = (tokens == frame_tokens).reshape(-1, 1, G, G)
        same = same.repeat_interleave(cell, 2).repeat_interleave(cell, 3)
        return torch.where(same, frame.to(decoded.dtype), decoded)

    def loss(self, batch: Batch) -> LossOutput:
        """Tokenizer loss + dynamics loss (each component also trains on its own)."""
        tok = self.tokenizer_loss(batch)
        dyn = self.dynamics_loss(batch)
        components = {f"tokenizer/{k}": v for k, v in tok.components.items()}
        components.update({f"dynamics/{k}": v for k, v in dyn.components.items()})
        metrics = {f"tokenizer/{k}": v for k, v in tok.metrics.items()}
        metrics.update({f"dynamics/{k}": v for k, v in dyn.metrics.items()})
        return LossOutput(tok.loss + dyn.loss, components, metrics)

    # -- components -------------------------------------------------------------------------
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """One optimiser per component: Adam for the tokenizer, AdamW for the dynamics (decay
        on matrices only)."""
        c = self.config
        decay = [p for n, p in self.dynamics.named_parameters() if p.dim() >= 2
                 and "embed" not in n and n not in ("spatial", "temporal", "slot_type")]
        ids = {id(p) for p in decay}
        rest = [p for p in self.dynamics.parameters() if id(p) not in ids]
        return {
            "tokenizer": torch.optim.Adam(self.tokenizer.parameters(),
                                          lr=c.tokenizer_learning_rate),
            "dynamics": torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay},
                                           {"params": rest, "weight_decay": 0.0}],
                                          lr=c.dynamics_learning_rate),
        }

    def tokenizer_loss(self, batch: Batch | Tensor) -> LossOutput:
        """Reconstruction + VQ loss on every frame of ``batch["obs"] [B, T, C, H, H]`` (or on
        frames ``[N, C, H, H]``). With ``reference_decoder``, each frame of a batch is drawn
        against an earlier frame of its episode in the batch (:func:`reference_rows`); bare
        frames have none."""
        if isinstance(batch, Tensor) or not self.config.reference_decoder:
            obs = batch if isinstance(batch, Tensor) else batch["obs"]
            return self.tokenizer.loss(obs.reshape(-1, *self.obs_spec.shape))
        obs = batch["obs"]
        B, T = obs.shape[:2]
        rows, present = reference_rows(batch["is_first"], self.config.reference_max_lag)
        reference = torch.gather(obs, 1, rows.reshape(B, T, *[1] * (obs.dim() - 2)).expand_as(obs))
        shape = self.obs_spec.shape
        return self.tokenizer.loss(obs.reshape(-1, *shape), reference.reshape(-1, *shape),
                                   present.reshape(-1))

    def dynamics_loss(self, batch: Batch) -> LossOutput:
        """Next-frame losses on every row ``t >= 1`` of ``batch`` that continues an episode;
        tokens come from the current tokenizer (no gradient into it). An optional
        ``batch["game"] [B]`` (int64) selects the game embedding."""
        obs = batch["obs"]
        B, T = obs.shape[:2]
        with torch.no_grad():
            tokens = self.tokenize(obs.reshape(B * T, *obs.shape[2:])).reshape(B, T, -1)
        windows = make_windows(tokens, batch["is_first"], self.config.history)
        valid = ~batch["is_first"][:, 1:].bool()
        actions = self.action_spec.to_tensor(batch["actions"])
        game = self._games(batch.get("game"), B, tokens.device)
        return self.dynamics_loss_on_tokens(
            windows[valid], actions[:, 1:][valid], tokens[:, 1:][valid],
            batch["rewards"][:, 1:][valid], batch["terminated"][:, 1:][valid].bool(),
            game[:, None].expand(B, T - 1)[valid])

    def dynamics_loss_on_tokens(self, context: Tensor, action: Tensor, target: Tensor,
                                reward: Tensor, terminated: Tensor, game: Tensor,
                                parallel: Tensor | None = None) -> LossOutput:
        """Losses of ``M`` prepared examples: ``context [M, N, K]``, ``action [M, A]``,
        ``target [M, K]``, ``reward [M]``, ``terminated [M]``, ``game [M]``; ``parallel [M]``
        (bool) defaults to a random ``parallel_fraction`` of the rows. The token loss weighs the
        cells whose token differs from the last context frame by ``changed_token_weight``."""
        M = context.shape[0]
        if M == 0:
            zero = sum(p.sum() for p in self.dynamics.parameters()) * 0
            return LossOutput(zero, {"tokens": zero}, {"examples": 0.0})
        if parallel is None:
            parallel = torch.rand(M, device=context.device) < self.config.parallel_fraction
        logits, reward_pred, end_logit = self.dynamics(context, action, target, game, parallel)
        per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                    reduction="none").reshape(target.shape)  # [M, K]
        changed = target != context[:, -1]
        weight = torch.where(changed, self.config.changed_token_weight, 1.0)
        token_loss = (per_token * weight).sum() / weight.sum()
        reward_loss = F.mse_loss(reward_pred, symlog(reward.float()))
        end_loss = F.binary_cross_entropy_with_logits(end_logit, terminated.float())
        loss = token_loss + self.config.reward_scale * reward_loss + \
            self.config.end_scale * end_loss
        with torch.no_grad():
            hits = logits.argmax(-1) == target
            correct = hits.float().mean(1)
            changed_accuracy = hits[changed].float().mean() if changed.any() else hits.new_ones(
                (), dtype=torch.float32)
        metrics = {"token_loss": float(token_loss.detach()),
                   "changed_token_accuracy": float(changed_accuracy),
                   "reward_loss": float(reward_loss.detach()),
                   "end_loss": float(end_loss.detach()),
                   "token_accuracy": float(correct.mean()), "examples": float(M)}
        return LossOutput(loss, {"tokens": token_loss,
                                 "reward": self.config.reward_scale * reward_loss,
                                 "end": self.config.end_scale * end_loss}, metrics)

    # -- helpers ----------------------------------------------------------------------------
    def tokenize(self, obs: Tensor) -> Tensor:
        """Token indices ``[N, K]`` of frames ``[N, C, H, H]`` (chunked without gradients)."""
        if torch.is_grad_enabled() or obs.shape[0] <= CHUNK:
            return self.tokenizer.tokenize(obs)
        return torch.cat([self.tokenizer.tokenize(part) for part in obs.split(CHUNK)])

    def detokenize(self, tokens: Tensor, reference: Tensor | None = None,
                   present: Tensor | None = None) -> Tensor:
        """Frames ``[N, C, H, H]`` (float, 0..255) of token indices ``[N, K]``, drawn against
        ``reference [N, C, H, H]`` (``present [N]``) with ``config.reference_decoder``."""
        if torch.is_grad_enabled() or tokens.shape[0] <= CHUNK:
            return self.tokenizer.detokenize(tokens, reference, present)
        parts = []
        for start in range(0, tokens.shape[0], CHUNK):
            rows = slice(start, start + CHUNK)
            parts.append(self.tokenizer.detokenize(
                tokens[rows], None if reference is None else reference[rows],
                None if present is None else present[rows]))
        return torch.cat(parts)

    def _games(self, game: Tensor | int | None, batch_size: int, device) -> Tensor:
        if game is None:
            game = 0
        game = torch.as_tensor(game, dtype=torch.long, device=device)
        if game.dim() == 0:
            game = game.expand(batch_size)
        if game.numel() and (int(game.min()) < 0 or int(game.max()) >= self.config.num_games):
            from worldflux.core.errors import ContractError

            raise ContractError(f"game: got indices in [{int(game.min())}, {int(game.max())}], "
                                f"expected 0..{self.config.num_games - 1} (config.num_games)")
        return game.contiguous()

    def _state(self, tokens: Tensor, game: Tensor, frame: Tensor, frame_tokens: Tensor) -> State:
        B = tokens.shape[0]
        zeros = torch.zeros(B, device=tokens.device)
        return State({"tokens": tokens, "reward": zeros, "continue": torch.ones_like(zeros),
                      "game": game, "frame": frame, "frame_tokens": frame_tokens},
                     {"family": self.family})

    @classmethod
    def smoke_specs(cls) -> tuple[ObservationSpec, ActionSpec]:
        """64x64 RGB frames with the four arrow-key actions of the native games."""
        return ObservationSpec((3, 64, 64), "uint8"), ActionSpec(4, "discrete")

    @classmethod
    def smoke_task(cls, seed: int, quick: bool = True):
        """A small model (8-channel tokenizer, one 32-wide block) learns Breakout64 frames
        from the scripted policy: tokenizer and dynamics each with their own optimiser for 60
        steps (full: 200) on [4, 6] windows; passes when the held-out total loss falls by 40% (seeds 0-2: 63-75%)."""
        import numpy as np

        from worldflux.envs.games import BreakoutBatch, collect
        from worldflux.quality.smoke import SmokeResult

        steps = 60 if quick else 200
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            obs_spec, action_spec = cls.smoke_specs()
            config = cls.config_class(channels=8, code_dim=8, codebook_size=32, history=2,
                                      embed_dim=32, num_layers=1, num_heads=2)
            model = cls(config, obs_spec, action_spec)
            data = collect(BreakoutBatch(12, seed=int(seed)), 30, "scripted", seed=int(seed))
            windows = {k: torch.from_numpy(np.ascontiguousarray(v[:, :30].reshape(
                v.shape[0] * 5, 6, *v.shape[2:]))) for k, v in data.items() if k != "game"}
            windows["actions"] = windows["actions"].clamp_min(0)
            windows["is_first"][:, 0] = True
            held_out = {k: v[-8:] for k, v in windows.items()}
            train = {k: v[:-8] for k, v in windows.items()}
            optimizers = model.optimizers()

            def held_out_loss() -> float:
                model.eval()
                with torch.no_grad():
                    torch.manual_seed(0)
                    return float(model.loss(held_out).loss)

            before = held_out_loss()
            generator = torch.Generator().manual_seed(int(seed))
            for _ in range(steps):
                model.train()
                rows = torch.randint(len(train["obs"]), (4,), generator=generator)
                batch = {k: v[rows] for k, v in train.items()}
                for name, out in (("tokenizer", model.tokenizer_loss(batch)),
                                  ("dynamics", model.dynamics_loss(batch))):
                    optimizers[name].zero_grad()
                    out.loss.backward()
                    optimizers[name].step()
            after = held_out_loss()
        decrease = (before - after) / max(abs(before), 1e-12)
        return SmokeResult(bool(decrease >= 0.4), float(decrease), 0.4,
                           f"Breakout64 frames, {steps} steps per component: held-out loss "
                           f"{before:.4g} -> {after:.4g}; relative decrease must be >= 0.4")


def episode_starts(is_first: Tensor) -> Tensor:
    """``[B, T]`` (int64): the row at which each row's episode starts in ``is_first [B, T]``
    (row 0 starts one, whatever its flag)."""
    T = is_first.shape[1]
    steps = torch.arange(T, device=is_first.device).expand(is_first.shape)
    first = is_first.bool().clone()
    first[:, 0] = True
    return torch.cummax(torch.where(first, steps, torch.zeros_like(steps)), 1).values


def reference_rows(is_first: Tensor, max_lag: int, generator: torch.Generator | None = None
                   ) -> tuple[Tensor, Tensor]:
    """Reference frames of a ``reference_decoder`` tokenizer: for each row ``t`` of
    ``is_first [B, T]``, the row ``t - L`` with ``L`` uniform in ``1..max_lag``, no earlier than
    its episode's first row. Returns ``rows [B, T]`` (int64) and ``present [B, T]`` (bool: False
    where no earlier row of the episode exists, i.e. ``rows == t``)."""
    B, T = is_first.shape
    steps = torch.arange(T, device=is_first.device).expand(B, T)
    lag = torch.randint(1, max_lag + 1, (B, T), generator=generator,
                        device="cpu" if generator is not None else is_first.device)
    rows = torch.maximum(steps - lag.to(is_first.device), episode_starts(is_first))
    return rows, rows < steps


def make_windows(tokens: Tensor, is_first: Tensor, history: int) -> Tensor:
    """Context windows for predicting rows ``1..T-1``: ``tokens [B, T, K]`` -> ``[B, T-1, N, K]``.

    The window for row ``t`` holds rows ``t-N .. t-1``; rows before the episode's first row
    (``is_first``) are replaced by that first row, as :meth:`TokenModel.encode` pads a fresh
    episode.
    """
    B, T, K = tokens.shape
    steps = torch.arange(T, device=tokens.device)
    start = episode_starts(is_first)  # [B, T]
    target = steps[1:]  # rows predicted
    offsets = torch.arange(-history, 0, device=tokens.device)
    rows = target[:, None] + offsets  # [T-1, N]
    episode_start = start[:, :-1]  # the start of row t-1's episode, [B, T-1]
    rows = torch.maximum(rows[None], episode_start[..., None])  # [B, T-1, N]
    index = rows.reshape(B, -1, 1).expand(-1, -1, K)
    return torch.gather(tokens, 1, index).reshape(B, T - 1, history, K)
