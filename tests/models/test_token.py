"""The ``token`` family: KV cache, decoding modes, frame history, game embedding, tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import worldflux
from worldflux.core.errors import ConfigError, ContractError
from worldflux.envs.games import BreakoutBatch, collect
from worldflux.models.token import Quantizer, TokenConfig, make_windows

TINY = {"channels": 8, "code_dim": 8, "codebook_size": 16, "embed_dim": 32, "num_layers": 2,
        "num_heads": 2}


def tiny_model(history: int = 2, obs_side: int = 64, **overrides):
    torch.manual_seed(0)
    return worldflux.create_world_model(
        "token", obs_shape=(3, obs_side, obs_side), action_dim=4, action_kind="discrete",
        device="cpu", history=history, **{**TINY, **overrides})


def random_inputs(model, batch: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c = model.config
    context = torch.randint(0, c.codebook_size, (batch, c.history, c.tokens_per_frame), generator=g)
    action = torch.nn.functional.one_hot(torch.randint(0, 4, (batch,), generator=g), 4).float()
    return context, action, torch.zeros(batch, dtype=torch.long)


def test_cached_and_uncached_causal_decoding_agree():
    model = tiny_model().eval()
    context, action, game = random_inputs(model)
    cached = model.dynamics.generate(context, action, game, mode="causal", use_cache=True)
    full = model.dynamics.generate(context, action, game, mode="causal", use_cache=False)
    assert torch.equal(cached["tokens"], full["tokens"])
    torch.testing.assert_close(cached["logits"], full["logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cached["reward"], full["reward"])
    # Sampled tokens too: the same draws give the same frame.
    draws = [model.dynamics.generate(context, action, game, mode="causal", use_cache=use,
                                     temperature=1.0,
                                     generator=torch.Generator().manual_seed(5))["tokens"]
             for use in (True, False)]
    assert torch.equal(*draws)


def test_generation_matches_the_teacher_forced_training_pass():
    model = tiny_model().eval()
    context, action, game = random_inputs(model)
    with torch.no_grad():
        causal = model.dynamics.generate(context, action, game, mode="causal")
        logits, _, _ = model.dynamics(context, action, causal["tokens"], game,
                                      torch.zeros(3, dtype=torch.bool))
        torch.testing.assert_close(logits, causal["logits"], atol=1e-5, rtol=1e-5)
        parallel = model.dynamics.generate(context, action, game, mode="parallel")
        logits, reward, _ = model.dynamics(context, action, parallel["tokens"], game,
                                           torch.ones(3, dtype=torch.bool))
        torch.testing.assert_close(logits, parallel["logits"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(reward, causal["reward"], atol=1e-5, rtol=1e-5)


def test_transition_modes_and_update_shift_the_history():
    model = tiny_model(history=3).eval()
    frames = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    state = model.encode(frames)
    assert state["tokens"].shape == (2, 3, 64)
    assert torch.equal(state["tokens"][:, 0], state["tokens"][:, 2])
    action = torch.tensor([0, 3])
    for mode in ("parallel", "causal"):
        nxt = model.transition(state, action, mode=mode)
        assert torch.equal(nxt["tokens"][:, :2], state["tokens"][:, 1:])
        assert nxt["continue"].shape == (2,) and ((0 <= nxt["continue"]) & (nxt["continue"] <= 1)).all()
    other = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    updated = model.update(state, action, other)
    assert torch.equal(updated["tokens"][:, -1], model.tokenize(other))
    assert model.decode(updated).preds["obs"].shape == (2, 3, 64, 64)


def test_windows_repeat_the_first_frame_of_an_episode():
    tokens = torch.arange(6).view(1, 6, 1)
    is_first = torch.tensor([[True, False, False, True, False, False]])
    windows = make_windows(tokens, is_first, 3)[0, :, :, 0]
    assert windows.tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 2], [3, 3, 3], [3, 3, 4]]


def _moving_ball(batch: int, games: torch.Tensor, g: torch.Generator, history: int,
                 by_game: bool):
    """A ball token (1) on a background (0) of 16 cells, moving one cell per frame: to the
    right or the left at random, or (``by_game``) right in game 0 and left in game 1.
    Returns context ``[batch, history, 16]`` and target ``[batch, 16]`` tokens."""
    if by_game:
        direction = 1 - 2 * games
    else:
        direction = torch.where(torch.rand(batch, generator=g) < 0.5, -1, 1)
    start = torch.randint(4, 12, (batch,), generator=g)
    frames = torch.zeros(batch, history + 1, 16, dtype=torch.long)
    for t in range(history + 1):
        position = (start + direction * (t - history)).clamp(0, 15)
        frames[torch.arange(batch), t, position] = 1
    return frames[:, :history], frames[:, history]


def _train_ball(history: int, num_games: int = 1, by_game: bool = False, steps: int = 150):
    """Accuracy on the changing tokens of a tiny dynamics model trained on the moving ball."""
    torch.manual_seed(0)
    model = worldflux.create_world_model(
        "token", obs_shape=(3, 16, 16), action_dim=4, action_kind="discrete", device="cpu",
        history=history, num_games=num_games, grid_size=4, codebook_size=4, embed_dim=32,
        num_layers=2, num_heads=2, channels=4, code_dim=4, dynamics_learning_rate=6e-3)
    optimizer = model.optimizers()["dynamics"]
    g = torch.Generator().manual_seed(0)
    action = torch.zeros(64, 4)
    for _ in range(steps):
        games = torch.randint(0, num_games, (64,), generator=g)
        context, target = _moving_ball(64, games, g, history, by_game)
        out = model.dynamics_loss_on_tokens(context, action, target, torch.zeros(64), torch.zeros(
            64, dtype=torch.bool), games)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    games = torch.arange(256) % num_games
    context, target = _moving_ball(256, games, torch.Generator().manual_seed(99), history,
                                   by_game)
    pred = model.dynamics.generate(context, action[:1].expand(256, -1), games)["tokens"]
    changed = target != context[:, -1]
    return (pred == target)[changed].float().mean().item()


def test_frame_history_resolves_motion_that_one_frame_cannot():
    one = _train_ball(history=1)
    two = _train_ball(history=2)
    assert two > 0.95
    # From one frame the direction is a coin flip (the vacated cell is still predictable).
    assert one < 0.85


def test_game_embedding_tells_the_games_apart():
    # One frame, but the game decides the direction: only the game embedding can tell.
    assert _train_ball(history=1, num_games=2, by_game=True, steps=250) > 0.9


def test_tokenizer_learns_game_frames_and_components_have_own_optimisers():
    data = collect(BreakoutBatch(8, seed=0), 24, "random", seed=0)
    frames = torch.from_numpy(data["obs"].reshape(-1, 3, 64, 64))
    # The plain pixel loss: the hard-pixel term (default) slows the first steps' PSNR gain down
    # (8 dB instead of 13 after these 40 steps); test_tokenizer_keeps_a_small_bright_object
    # covers it.
    model = tiny_model(hard_pixel_fraction=0.0)
    optimizers = model.optimizers()
    dynamics_before = [p.detach().clone() for p in model.dynamics.parameters()]
    first = model.tokenizer_loss(frames[:64]).metrics
    for step in range(40):
        out = model.tokenizer_loss(frames[(step * 32) % 160:][:32])
        optimizers["tokenizer"].zero_grad()
        out.loss.backward()
        optimizers["tokenizer"].step()
    model.eval()
    last = model.tokenizer_loss(frames[160:]).metrics
    assert last["psnr"] > first["psnr"] + 5
    assert last["codes_used"] > 0.2
    for before, after in zip(dynamics_before, model.dynamics.parameters(), strict=True):
        assert torch.equal(before, after)


def test_dead_codes_are_restarted_at_encoder_outputs():
    config = TokenConfig(codebook_size=8, code_dim=2, restart_every=5, dead_code_threshold=0.5,
                         codebook_init="random")
    quantizer = Quantizer(config).train()
    data = torch.randn(256, 2) * 0.05 + 10.0  # far from every initial code
    with torch.enable_grad():
        for _ in range(5):
            quantizer(data)
            quantizer.restart_dead(data)
    distance = (quantizer.codebook - 10.0).norm(dim=1)
    assert (distance < 1.0).sum() >= 7  # the unused codes moved to the data


def test_tokenizer_training_restarts_dead_codes():
    # Through Tokenizer.loss (the training path), not only Quantizer.restart_dead: random codes
    # far from the encoder outputs are dead and must move to them.
    model = tiny_model(codebook_init="random", restart_every=2)
    frames = torch.from_numpy(collect(BreakoutBatch(2, seed=0), 8, "random")["obs"].reshape(
        -1, 3, 64, 64))
    restarted = [model.tokenizer_loss(frames).metrics["restarted"] for _ in range(4)]
    assert sum(restarted) > 0
    with torch.no_grad():
        assert "restarted" not in model.tokenizer_loss(frames).metrics  # no restarts without grad


def test_restarts_favour_badly_reconstructed_vectors_and_kmeans_seeds_rare_ones():
    torch.manual_seed(0)
    common = torch.randn(1000, 2) * 0.05
    rare = torch.randn(4, 2) * 0.05 + torch.tensor([10.0, 0.0])  # a ball: 4 vectors in 1004
    data = torch.cat([common, rare])
    # k-means++ seeding: the rare cluster gets a code of its own from the first batch.
    quantizer = Quantizer(TokenConfig(codebook_size=4, code_dim=2)).train()
    with torch.enable_grad():
        _, idx, _, _ = quantizer(data)
    assert set(idx[-4:].tolist()).isdisjoint(idx[:-4].tolist())
    # Error-weighted restarts: dead codes go where the reconstruction error is.
    config = TokenConfig(codebook_size=8, code_dim=2, restart_every=1, dead_code_threshold=0.5,
                         codebook_init="random")
    quantizer = Quantizer(config).train()
    error = torch.cat([torch.full((1000,), 1e-4), torch.ones(4)])
    with torch.enable_grad():
        quantizer(data)
    assert quantizer.restart_dead(data, error) >= 4
    near_rare = (quantizer.codebook - torch.tensor([10.0, 0.0])).norm(dim=1) < 1.0
    assert int(near_rare.sum()) >= 4


def _bright_squares(count: int, generator: torch.Generator) -> torch.Tensor:
    """16x16 frames ``[count, 3, 16, 16]`` (uint8): a dark blue background and one white 2x2
    square at a random place (a small moving object such as Breakout64's ball)."""
    frames = torch.zeros(count, 3, 16, 16, dtype=torch.uint8)
    frames[:, 2] = 40
    for i, (row, col) in enumerate(torch.randint(0, 15, (count, 2), generator=generator).tolist()):
        frames[i, :, row:row + 2, col:col + 2] = 255
    return frames


def _square_recall(**overrides) -> float:
    """Share of the square's pixels reconstructed at least half bright on held-out frames by a
    small tokenizer (4x4 tokens of 4x4 pixels, 32 codes) after 300 steps of 32 frames."""
    torch.manual_seed(0)
    model = worldflux.create_world_model(
        "token", obs_shape=(3, 16, 16), action_dim=4, action_kind="discrete", device="cpu",
        grid_size=4, codebook_size=32, code_dim=8, channels=16, embed_dim=32, num_layers=1,
        num_heads=2, **overrides)
    optimizer = model.optimizers()["tokenizer"]
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        out = model.tokenizer_loss(_bright_squares(32, g))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    model.eval()
    test = _bright_squares(64, torch.Generator().manual_seed(1))
    with torch.no_grad():
        recon = model.detokenize(model.tokenize(test))
    square = test.min(1).values == 255
    return (recon.min(1).values > 127)[square].float().mean().item()


def test_tokenizer_keeps_a_small_bright_object():
    # The square is 4 of 256 pixels: the plain pixel loss leaves it out of the tokens, the
    # hard-pixel term keeps it (2% of a 16x16 frame = 5 pixels, as the default 0.5% is 20
    # pixels of a 64x64 frame, against Breakout64's 4-pixel ball).
    assert _square_recall(hard_pixel_fraction=0.02) > 0.9
    assert _square_recall(hard_pixel_fraction=0.0) < 0.5


def test_patch_encoder_keeps_a_small_bright_object():
    # Each token from its own cell's pixels only: the square must still get codes of its own.
    assert _square_recall(hard_pixel_fraction=0.02, encoder="patch") > 0.9


def _frames_with_a_moving_square(side: int = 64) -> torch.Tensor:
    """Two frames ``[2, 3, side, side]``: a fixed pattern (stripes, a block) and a white 4x4
    square that moves 4 px to the right within the top-left 8x8 cell, everything else equal."""
    g = torch.Generator().manual_seed(3)
    frame = torch.randint(0, 256, (3, side, side), generator=g, dtype=torch.uint8)
    frames = frame.repeat(2, 1, 1, 1)
    frames[0, :, 2:6, 0:4] = 255
    frames[1, :, 2:6, 4:8] = 255
    return frames


@pytest.mark.parametrize(("encoder", "context"), [("patch", 0), ("patch", 1), ("conv", 0)])
def test_tokens_of_a_static_region_stay_when_a_distant_object_moves(encoder, context):
    model = tiny_model(encoder=encoder, encoder_context=context)
    with torch.enable_grad():  # k-means start of the codebook on encoder outputs of real frames
        model.tokenizer_loss(torch.from_numpy(collect(BreakoutBatch(2, seed=0), 8, "random")[
            "obs"].reshape(-1, 3, 64, 64)))
    model.eval()
    frames = _frames_with_a_moving_square()
    with torch.no_grad():
        z = model.tokenizer.encode_vectors(frames)  # [2, 8, 8, D]
        tokens = model.tokenize(frames).reshape(2, 8, 8)
    # Cells beyond the reach of the moved pixels (cell (0, 0)): own cell only, or the 3x3
    # neighbourhood too.
    far = torch.ones(8, 8, dtype=torch.bool)
    far[:1 + context, :1 + context] = False
    difference = (z[0] - z[1]).abs().amax(-1)  # [8, 8]
    if encoder == "patch":
        assert float(difference[far].max()) < 1e-5
        assert torch.equal(tokens[0][far], tokens[1][far])
        assert float(difference[0, 0]) > 1e-3  # the moved square itself is seen
        if context:
            assert float(difference[1, 1]) > 1e-3  # a neighbour sees it too
    else:
        # The conv encoder normalises over the whole image: every cell's vector moves.
        assert float(difference[far].min()) > 1e-4


@pytest.mark.parametrize(("decoder", "norm", "reach"), [
    ("patch", "group", 8),  # its own cell only
    ("conv", "position", 24),  # the 3x3 conv on the grid and the transposed convs: 2 cells
    ("conv", "group", None)])  # the whole-image GroupNorm: everywhere
def test_decoder_draws_a_distant_static_region_alike_unless_it_normalises_the_image(
        decoder, norm, reach):
    model = tiny_model(encoder="patch", decoder=decoder, decoder_norm=norm).eval()
    frames = _frames_with_a_moving_square()
    with torch.no_grad():
        tokens = model.tokenize(frames)
        tokens[1] = tokens[0]
        tokens[1, 0] = (tokens[0, 0] + 1) % model.config.codebook_size  # only cell (0, 0) differs
        pixels = model.detokenize(tokens)
    difference = (pixels[0] - pixels[1]).abs().amax(0)
    assert float(difference[:8, :8].max()) > 1e-2
    far = torch.ones(64, 64, dtype=torch.bool)
    far[:reach or 8, :reach or 8] = False
    if reach:
        assert float(difference[far].max()) < 1e-3
    else:
        assert float(difference[far].min()) > 1e-4


def test_learned_codebook_gets_gradients():
    model = tiny_model(codebook_update="learned")
    frames = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    model.tokenizer_loss(frames).loss.backward()
    assert model.tokenizer.quantizer.codebook.grad is not None


def test_loss_reads_the_game_and_rejects_unknown_ones():
    model = tiny_model(num_games=2)
    batch = {"obs": torch.randint(0, 256, (2, 3, 3, 64, 64), dtype=torch.uint8),
             "actions": torch.tensor([[0, 1, 2], [0, 3, 3]]),
             "rewards": torch.zeros(2, 3), "terminated": torch.zeros(2, 3, dtype=torch.bool),
             "truncated": torch.zeros(2, 3, dtype=torch.bool),
             "is_first": torch.tensor([[True, False, False]] * 2),
             "game": torch.tensor([0, 1])}
    out = model.loss(batch)
    assert out.metrics["dynamics/examples"] == 4 and torch.isfinite(out.loss)
    batch["game"] = torch.tensor([0, 2])
    with pytest.raises(ContractError, match="num_games"):
        model.loss(batch)


@pytest.mark.parametrize(("field", "value", "match"), [
    ("grid_size", 6, "power of two"), ("embed_dim", 31, "multiple of num_heads"),
    ("decoding", "beam", "parallel"), ("codebook_update", "kmeans", "ema")])
def test_bad_config_is_rejected(field, value, match):
    with pytest.raises(ConfigError, match=match):
        tiny_model(**{field: value})


def test_rollout_runs_from_real_frames():
    model = tiny_model().eval()
    frames = torch.from_numpy(np.ascontiguousarray(
        collect(BreakoutBatch(2, seed=0), 1, "random")["obs"][:, 0]))
    trajectory = model.rollout(model.encode(frames), torch.randint(0, 4, (2, 5)))
    assert trajectory.states["tokens"].shape == (2, 5, 2, 64)
    assert trajectory.continues.shape == (2, 5)


def test_decode_pastes_the_last_real_frame_into_cells_whose_token_did_not_change():
    model = tiny_model(history=2).eval()
    frames = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    state = model.encode(frames)
    with torch.no_grad():
        # Right after encode every token equals the real frame's: the real frame comes back.
        assert torch.equal(model.decode(state).preds["obs"], frames.float())
        # One imagined frame in which cell 9 (row 1, column 1) changes token.
        tokens = state["tokens"].clone()
        tokens[:, -1, 9] = (tokens[:, -1, 9] + 1) % model.config.codebook_size
        imagined = state.replace(tokens=tokens)
        obs = model.decode(imagined).preds["obs"]
        decoded = model.detokenize(tokens[:, -1])
        changed = torch.zeros(64, 64, dtype=torch.bool)
        changed[8:16, 8:16] = True
        assert torch.equal(obs[..., changed], decoded[..., changed])
        assert torch.equal(obs[..., ~changed], frames.float()[..., ~changed])
        # Off: the decoder draws every cell.
        model.config.copy_unchanged_cells = False
        assert torch.equal(model.decode(imagined).preds["obs"], decoded)
    # transition keeps the real frame for the imagined frames that follow.
    nxt = model.transition(state, torch.tensor([1, 2]))
    assert torch.equal(nxt["frame"], frames) and torch.equal(nxt["frame_tokens"], state["tokens"][:, -1])


def test_reference_rows_stay_in_the_episode_before_the_frame():
    from worldflux.models.token import reference_rows

    is_first = torch.tensor([[1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 1, 0]], dtype=torch.bool)
    # Lag 1: the frame before, except at an episode's first row (no reference there).
    rows, present = reference_rows(is_first, 1)
    assert rows.tolist() == [[0, 0, 1, 3, 3, 4], [0, 0, 1, 2, 4, 4]]
    assert present.tolist() == [[False, True, True, False, True, True],
                                [False, True, True, True, False, True]]
    # Longer lags: never before the episode's first row, never the frame itself when present.
    rows, present = reference_rows(is_first.repeat(50, 1), 4, torch.Generator().manual_seed(0))
    steps = torch.arange(6).expand_as(rows)
    start = torch.tensor([[0, 0, 0, 3, 3, 3], [0, 0, 0, 0, 4, 4]]).repeat(50, 1)
    assert bool((rows >= start).all()) and bool((rows >= steps - 4).all())
    assert torch.equal(present, rows < steps) and torch.equal(present, steps > start)
    assert set((steps - rows)[present].tolist()) == {1, 2, 3}  # the longest reach here: 3


def _textured_episodes(episodes: int, steps: int, seed: int) -> torch.Tensor:
    """``[E, T, 3, 32, 32]`` uint8: a random texture per episode (more than 16 codes can
    draw) under a white square that fills one 4x4 cell and moves a cell a step along a row."""
    g = torch.Generator().manual_seed(seed)
    texture = torch.randint(0, 200, (episodes, 1, 3, 32, 32), generator=g, dtype=torch.uint8)
    frames = texture.repeat(1, steps, 1, 1, 1)
    rows = 4 * torch.randint(0, 8, (episodes,), generator=g)
    cols = 4 * torch.randint(0, 8 - steps + 1, (episodes,), generator=g)
    for e in range(episodes):
        for t in range(steps):
            x = int(cols[e]) + 4 * t
            frames[e, t, :, int(rows[e]):int(rows[e]) + 4, x:x + 4] = 255
    return frames


def test_reference_decoder_draws_what_the_codes_cannot():
    # 16 codes cannot draw a random texture; drawn against an earlier frame of the episode,
    # the texture comes from the reference and the codes carry the square.
    model = tiny_model(obs_side=32, encoder="patch", decoder_norm="position",
                       reference_decoder=True, reference_max_lag=4, tokenizer_learning_rate=1e-2)
    optimizer = model.optimizers()["tokenizer"]
    train = _textured_episodes(24, 6, seed=0)
    is_first = torch.zeros(4, 6, dtype=torch.bool)
    is_first[:, 0] = True
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        episodes = train[torch.randint(len(train), (4,), generator=g)]
        out = model.tokenizer_loss({"obs": episodes, "is_first": is_first})
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    model.eval()
    test = _textured_episodes(8, 6, seed=1)
    frames, reference = test[:, 1:].reshape(-1, 3, 32, 32), test[:, :-1].reshape(-1, 3, 32, 32)
    with torch.no_grad():
        tokens = model.tokenize(frames)
        drawn = model.detokenize(tokens, reference)
        alone = model.detokenize(tokens)
    error = ((drawn - frames.float()) / 255).pow(2).mean()
    psnr_reference = float(10 * torch.log10(1 / error))
    psnr_alone = float(10 * torch.log10(1 / ((alone - frames.float()) / 255).pow(2).mean()))
    assert psnr_reference > psnr_alone + 10, (psnr_reference, psnr_alone)  # seen: 28.2 / 13.0
    # The square is drawn where it is now, not where the reference had it (seen: 94%).
    square = frames.min(1).values == 255
    assert float((drawn.min(1).values > 200)[square].float().mean()) > 0.85


def test_decode_draws_against_the_last_real_frame_once_there_is_one():
    model = tiny_model(history=2, reference_decoder=True, copy_unchanged_cells=False).eval()
    frames = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        state = model.encode(frames)
        tokens = state["tokens"][:, -1]
        drawn = model.decode(state).preds["obs"]
        assert torch.equal(drawn, model.detokenize(tokens, frames))
        assert not torch.equal(drawn, model.detokenize(tokens))
        # initial_state holds no real frame: the codes alone.
        blank = model.initial_state(2)
        assert torch.equal(model.decode(blank).preds["obs"],
                           model.detokenize(blank["tokens"][:, -1]))


def test_a_reference_of_the_wrong_shape_is_rejected():
    model = tiny_model(reference_decoder=True).eval()
    tokens = torch.zeros(2, 64, dtype=torch.long)
    with pytest.raises(ContractError, match="reference: got shape"):
        model.detokenize(tokens, torch.zeros(3, 3, 64, 64))
