"""Transformer dynamics over frame tokens, with parallel and causal (KV-cached) decoding.

One sequence per prediction: the ``N`` context frames (``K`` tokens each), then ``K`` target
slots for the next frame. Every position gets a token (or action) embedding, a spatial
embedding (its cell), a temporal embedding (its frame in the window), a slot-type embedding
(context or target) and the game embedding. Attention is causal throughout.

Target slot ``j`` predicts token ``j`` of the next frame. Slot 0 holds the action; slot ``j > 0``
holds either token ``j - 1`` (causal mode: token by token, each new token one more position,
which the KV cache makes cost one position) or a mask token (parallel mode: every slot is known
before decoding, so one pass predicts the whole frame). Training mixes both on the same weights.
Reward and episode end are read from slot 0, which sees exactly the context and the action in
both modes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldflux.models.token.config import TokenConfig

KVCache = list[tuple[Tensor, Tensor]]
"""Per layer: keys and values ``[B, heads, L, head_dim]`` of the positions seen so far."""


def grid_sincos(grid: int, dim: int) -> Tensor:
    """2D sine-cosine position embeddings ``[grid*grid, dim]`` (row-major cells; half the
    channels encode the row, half the column, as in MAE, He et al. 2022), scaled to unit
    variance like the other embeddings. Neighbouring cells get similar vectors, so attention
    to a cell's neighbourhood in the previous frames (where a moving object comes from) is one
    linear map to learn instead of one per pair of cells."""
    quarter = dim // 4
    freqs = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / max(quarter, 1)))
    pos = torch.arange(grid, dtype=torch.float32)[:, None] * freqs  # [G, dim/4]
    axis = torch.cat([pos.sin(), pos.cos()], 1)  # [G, dim/2]
    rows = axis[:, None].expand(grid, grid, -1)
    cols = axis[None, :].expand(grid, grid, -1)
    table = torch.cat([rows, cols], -1).reshape(grid * grid, -1) * 2 ** 0.5
    if table.shape[1] < dim:  # dim not a multiple of 4
        table = torch.cat([table, torch.zeros(grid * grid, dim - table.shape[1])], 1)
    return table


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention (with an optional KV cache) + MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(),
                                 nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: Tensor, cache: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``x [B, L, D]`` (new positions) -> ``[B, L, D]`` and the keys/values of all
        positions so far. With ``cache``, the new positions attend to the cached ones and
        causally among themselves."""
        B, L, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, L, 3, self.heads, D // self.heads) \
            .permute(2, 0, 3, 1, 4)
        if cache is not None:
            k = torch.cat([cache[0], k], 2)
            v = torch.cat([cache[1], v], 2)
        past = k.shape[2] - L
        if past == 0:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=L > 1)
        elif L == 1:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            mask = torch.ones(L, past + L, dtype=torch.bool, device=x.device).tril(past)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(out.transpose(1, 2).reshape(B, L, D))
        return x + self.mlp(self.norm2(x)), (k, v)


class TokenDynamics(nn.Module):
    """Predicts the next frame's tokens, its reward and whether the episode ends.

    Args:
        config: sizes (``history``, ``embed_dim``, ``num_layers`` ...).
        action_dim: width ``A`` of the (one-hot or continuous) actions.
    """

    def __init__(self, config: TokenConfig, action_dim: int) -> None:
        super().__init__()
        self.config = config
        D, V = config.embed_dim, config.codebook_size
        self.mask_token = V
        self.token_embed = nn.Embedding(V + 1, D)
        K = config.tokens_per_frame
        self.spatial = nn.Parameter(grid_sincos(config.grid_size, D)
                                    if config.spatial_init == "sincos" else torch.randn(K, D))
        self.temporal = nn.Parameter(torch.randn(config.history + 1, D))
        self.slot_type = nn.Parameter(torch.randn(2, D))
        self.action_embed = nn.Linear(action_dim, D)
        self.game_embed = nn.Embedding(config.num_games, D)
        self.blocks = nn.ModuleList(Block(D, config.num_heads, config.mlp_ratio)
                                    for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, V)
        self.reward_head = nn.Sequential(nn.Linear(D, D), nn.SiLU(), nn.Linear(D, 1))
        self.end_head = nn.Sequential(nn.Linear(D, D), nn.SiLU(), nn.Linear(D, 1))
        self.copy_gain = nn.Parameter(torch.tensor(float(config.copy_prior)))
        # Every embedding starts on one scale, N(0, 1) like nn.Embedding's: with positions at
        # GPT-2's 0.02 next to N(0, 1) tokens, attention took hundreds of steps longer to find
        # the cells to copy from (a 4x4 moving-ball task).

    # -- embeddings ---------------------------------------------------------------------------
    def embed_context(self, tokens: Tensor, game: Tensor) -> Tensor:
        """Context tokens ``[B, N, K]`` -> ``[B, N*K, D]``."""
        B, N, K = tokens.shape
        x = self.token_embed(tokens) + self.spatial + self.temporal[:N, None] + self.slot_type[0]
        return (x + self.game_embed(game)[:, None, None]).reshape(B, N * K, -1)

    def embed_slots(self, first: int, contents: Tensor, game: Tensor, frame: int) -> Tensor:
        """Target slots ``first .. first + L - 1`` holding ``contents [B, L, D]`` -> ``[B, L, D]``."""
        L = contents.shape[1]
        position = self.spatial[first:first + L] + self.temporal[frame] + self.slot_type[1]
        return contents + position + self.game_embed(game)[:, None]

    def slot_contents(self, action: Tensor, previous: Tensor) -> Tensor:
        """Slot 0: the action ``[B, A]``; slots ``1..``: embeddings of ``previous [B, L]`` (the
        preceding target tokens, or the mask token) -> ``[B, 1 + L, D]``."""
        return torch.cat([self.action_embed(action.float())[:, None],
                          self.token_embed(previous)], 1)

    def run(self, x: Tensor, cache: KVCache | None = None) -> tuple[Tensor, KVCache]:
        """Transformer over new positions ``x [B, L, D]`` (after ``cache``) -> hidden ``[B, L, D]``."""
        new_cache: KVCache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if cache is None else cache[i])
            new_cache.append(kv)
        return self.norm(x), new_cache

    # -- training -----------------------------------------------------------------------------
    def forward(self, context: Tensor, action: Tensor, target: Tensor, game: Tensor,
                parallel: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Teacher-forced pass. ``context [B, N, K]``, ``action [B, A]``, ``target [B, K]``,
        ``game [B]``, ``parallel [B]`` (bool: mask the target's inputs) -> token logits
        ``[B, K, V]``, reward ``[B]`` (symlog units), end logit ``[B]``."""
        N = context.shape[1]
        previous = torch.where(parallel[:, None], torch.full_like(target[:, :-1], self.mask_token),
                               target[:, :-1])
        slots = self.embed_slots(0, self.slot_contents(action, previous), game, N)
        hidden, _ = self.run(torch.cat([self.embed_context(context, game), slots], 1))
        return self.heads(hidden[:, -slots.shape[1]:], context[:, -1])

    def logits(self, hidden: Tensor, last: Tensor) -> Tensor:
        """Token logits ``[B, L, V]`` of target-slot hidden states ``[B, L, D]``, plus the copy
        prior: ``copy_gain`` on the token that the same cell holds in the last context frame
        (``last [B, L]``), so that an untrained model starts from "nothing moves"."""
        copy = F.one_hot(last, self.config.codebook_size).to(hidden.dtype)
        return self.head(hidden) + self.copy_gain * copy

    def heads(self, slot_hidden: Tensor, last: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Hidden states of target slots ``[B, L, D]`` (slot 0 first) and the last context
        frame's tokens ``[B, L]`` -> logits ``[B, L, V]``, reward and end logit ``[B]`` from
        slot 0."""
        first = slot_hidden[:, 0]
        return (self.logits(slot_hidden, last), self.reward_head(first).squeeze(-1),
                self.end_head(first).squeeze(-1))

    # -- generation ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, context: Tensor, action: Tensor, game: Tensor, *, mode: str = "parallel",
                 use_cache: bool = True, temperature: float = 0.0,
                 generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Next-frame tokens from ``context [B, N, K]`` and ``action [B, A]``.

        ``mode="parallel"``: one pass with mask tokens in every slot. ``mode="causal"``: token
        by token; with ``use_cache`` each new token runs one position through the transformer
        (keys and values of earlier positions are kept), without it the whole sequence is run
        again for every token (the reference the cache must match).

        Returns ``tokens [B, K]``, ``logits [B, K, V]``, ``reward [B]`` (symlog units) and
        ``end_logit [B]``.
        """
        B, N, K = context.shape
        ctx = self.embed_context(context, game)
        if mode == "parallel":
            previous = torch.full((B, K - 1), self.mask_token, dtype=torch.long,
                                  device=context.device)
            slots = self.embed_slots(0, self.slot_contents(action, previous), game, N)
            hidden, _ = self.run(torch.cat([ctx, slots], 1))
            logits, reward, end = self.heads(hidden[:, -K:], context[:, -1])
            tokens = _sample(logits, temperature, generator)
            return {"tokens": tokens, "logits": logits, "reward": reward, "end_logit": end}
        if mode != "causal":
            raise ValueError(f"mode: got {mode!r}, expected 'parallel' or 'causal'")
        action_slot = self.embed_slots(0, self.action_embed(action.float())[:, None], game, N)
        tokens = torch.zeros(B, K, dtype=torch.long, device=context.device)
        logits_out = []
        hidden, cache = self.run(torch.cat([ctx, action_slot], 1))
        first_hidden = hidden[:, -1:]
        reward = self.reward_head(first_hidden[:, 0]).squeeze(-1)
        end = self.end_head(first_hidden[:, 0]).squeeze(-1)
        last = first_hidden
        for j in range(K):
            logits = self.logits(last[:, -1:], context[:, -1, j:j + 1])[:, 0]
            logits_out.append(logits)
            tokens[:, j] = _sample(logits[:, None], temperature, generator)[:, 0]
            if j == K - 1:
                break
            slot = self.embed_slots(j + 1, self.token_embed(tokens[:, j:j + 1]), game, N)
            if use_cache:
                last, cache = self.run(slot, cache)
            else:
                done = self.embed_slots(1, self.token_embed(tokens[:, :j + 1]), game, N)
                last, _ = self.run(torch.cat([ctx, action_slot, done], 1))
        return {"tokens": tokens, "logits": torch.stack(logits_out, 1), "reward": reward,
                "end_logit": end}


def _sample(logits: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    """Tokens ``[B, L]`` from logits ``[B, L, V]``: argmax at temperature 0, else sampled."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, -1)
    flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
    return flat.reshape(probs.shape[:-1])
