"""``token`` family on the native games: frame history, rollouts, one model for two games.

Data: per game, the scripted policy with 30% random actions, 128 worlds x 200 steps for
training (25,728 frames) and 16 other worlds x 100 steps held out (seeds apart). One VQ
tokenizer (8x8 tokens, 128 codes) learns the frames of both games; every dynamics model then
trains on its tokens with the same recipe and number of examples per game:

* per game: history 1 (single-frame context, the baseline) and history 4;
* ``multi``: one history-4 model with a game embedding on both games at once (twice the steps,
  so each game gets as many examples as its single-game model).

Measured on held-out examples: next-frame token accuracy in parallel mode (all 64 tokens, and
only the tokens that change from the last context frame, and the cells whose pixels move),
against copying the last frame's tokens; greedy causal (KV-cached) decoding accuracy on a subset; and 24-step imagined rollouts
from real starts with the real actions: PSNR per step against the real frames, next to the
copy-last-frame baseline and the tokenizer's own reconstruction PSNR (the ceiling). A gallery
of real-vs-imagined GIFs and frames goes to ``results/gallery/``.

Stages (``--stage``) can run in separate processes; trained weights stay in ``--work``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from benchmarks.common import RESULTS, plot_path, pyplot, write_result
from worldflux.core.io import atomic_write_text

GAMES = ("Breakout64", "Collect64")
GALLERY = RESULTS / "gallery"


LAYERS = {"num_layers": 2, "embed_dim": 64, "changed_token_weight": 1.0,
          "dynamics_learning_rate": 2e-3, "spatial_init": "sincos"}
"""Dynamics settings of this benchmark (``--layers``, ``--embed-dim``, ``--changed-weight``,
``--lr``); the family's default size is 4 x 128."""


TOKENIZER: dict = {}
"""Tokenizer settings of this benchmark (``--encoder``, ``--encoder-context``,
``--codebook-size``, ``--normalize-codes``, ``--decoder``, ``--decoder-norm``); empty = the
family's defaults."""


def _model(history: int, num_games: int, **overrides):
    import worldflux

    torch.manual_seed(0)
    return worldflux.create_world_model(
        "token", obs_shape=(3, 64, 64), action_dim=4, action_kind="discrete", device="cpu",
        history=history, num_games=num_games, **{**TOKENIZER, **LAYERS, **overrides})


def collect_data(work: Path, args) -> dict[str, dict[str, np.ndarray]]:
    from worldflux.envs.games import GAMES as GAME_CLASSES
    from worldflux.envs.games import collect

    data = {}
    for name in GAMES:
        for split, envs, steps, seed in (("train", args.train_envs, args.train_steps, 0),
                                         ("test", 16, 100, 1000)):
            path = work / f"data_{name}_{split}.npz"
            if not path.exists():
                game = GAME_CLASSES[name](envs, seed=seed)
                d = collect(game, steps, "scripted", seed=seed, epsilon=0.3)
                np.savez(path, **d)
            data[f"{name}/{split}"] = dict(np.load(path, allow_pickle=False))
    return data


def train_tokenizer(work: Path, data, args) -> dict:
    from worldflux.models.token import reference_rows

    path = work / "tokenizer.safetensors"
    model = _model(1, len(GAMES))
    if path.exists():
        model.tokenizer.load_state_dict(load_file(path))
        return json.loads((work / "tokenizer.json").read_text())
    obs = torch.from_numpy(np.concatenate([data[f"{g}/train"]["obs"] for g in GAMES]))
    is_first = torch.from_numpy(np.concatenate([data[f"{g}/train"]["is_first"] for g in GAMES]))
    frames = obs.reshape(-1, 3, 64, 64)  # [E*T, ...]: row e*T + t is world e's step t
    T = obs.shape[1]
    config = model.config
    optimizer = model.optimizers()["tokenizer"]
    final = args.tokenizer_final_lr
    # Cosine decay of the learning rate to ``final`` times its start (1 = constant).
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: final + (1 - final) * 0.5 * (
        1 + math.cos(math.pi * min(s / max(args.tokenizer_steps, 1), 1.0))))
    rng = torch.Generator().manual_seed(0)
    started = time.time()
    model.train()
    history = []
    for step in range(args.tokenizer_steps):
        idx = torch.randint(len(frames), (64,), generator=rng)
        if config.reference_decoder:  # an earlier frame of the same episode, up to the lag
            rows, present = reference_rows(is_first, config.reference_max_lag, generator=rng)
            env, t = idx // T, idx % T
            out = model.tokenizer.loss(frames[idx], obs[env, rows[env, t]], present[env, t])
        else:
            out = model.tokenizer_loss(frames[idx])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == args.tokenizer_steps - 1:
            history.append({"step": step, **out.metrics})
        if (step + 1) % 500 == 0 and step + 1 < args.tokenizer_steps:
            model.eval()
            history.append({"step": step + 1, "held_out": tokenizer_quality(model, data)})
            print("tokenizer", step + 1, json.dumps(history[-1]), flush=True)
            model.train()
    model.eval()
    result = {"steps": args.tokenizer_steps, "batch_frames": 64,
              "reference_decoder": bool(config.reference_decoder),
              "train_s": round(time.time() - started, 1), "curve": history,
              **tokenizer_quality(model, data)}
    save_file(model.tokenizer.state_dict(), path)
    (work / "tokenizer.json").write_text(json.dumps(result))
    return result


@torch.no_grad()
def tokenizer_quality(model, data) -> dict:
    """Held-out reconstruction per game: PSNR of whole frames; PSNR on the moving pixels only
    (those that differ from the previous frame of the same episode: the ball, paddle, player,
    enemies, the score); codes in use; and on Breakout64 the share of the white ball's pixels
    reconstructed at least half bright (min channel > 127)."""
    result = {}
    for g in GAMES:
        d = data[f"{g}/test"]
        real = torch.from_numpy(d["obs"][:, 1::2]).float()  # rows 1, 3, ...: [N, T', 3, 64, 64]
        N, T = real.shape[:2]
        tokens = model.tokenize(real.reshape(N * T, 3, 64, 64))
        recon = model.detokenize(tokens).reshape(real.shape)
        prev = torch.from_numpy(d["obs"][:, 0::2][:, :T]).float()  # rows 0, 2, ...
        fresh = torch.from_numpy(d["is_first"][:, 1::2])
        moving = (real != prev).any(2) & ~fresh[..., None, None]  # differs from row t - 1
        error = ((recon - real) / 255.0).pow(2).mean(2)  # [N, T', 64, 64]
        entry = {"psnr_db": psnr(recon.flatten(0, 1), real.flatten(0, 1)).mean().item(),
                 "moving_pixel_psnr_db":
                     (10 * torch.log10(1 / error[moving].mean())).item(),
                 "codes_used": int(torch.unique(tokens).numel()),
                 "codebook_size": model.config.codebook_size}
        if model.config.reference_decoder:  # drawn against the frame before (same episode)
            with_reference = model.detokenize(tokens, prev.reshape(N * T, 3, 64, 64),
                                              ~fresh.reshape(-1)).reshape(real.shape)
            error_ref = ((with_reference - real) / 255.0).pow(2).mean(2)
            entry["psnr_with_reference_db"] = psnr(with_reference.flatten(0, 1),
                                                   real.flatten(0, 1)).mean().item()
            entry["moving_pixel_psnr_with_reference_db"] = \
                (10 * torch.log10(1 / error_ref[moving].mean())).item()
        entry.update(token_stability(model, d))
        if g == "Breakout64":
            entry["ball_pixel_recall"] = ball_recall(recon.flatten(0, 1),
                                                     real.flatten(0, 1)).item()
        result[g] = entry
    return result


def ball_recall(pred: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Breakout64: the share of the real white ball's pixels that ``pred`` draws at least half
    bright (min channel > 127). Frames ``[N, 3, 64, 64]`` give one pooled value; rollouts
    ``[N, T, 3, 64, 64]`` one value per step ``[T]``, pooled over the ``N`` starts."""
    ball = real.min(-3).values >= 250
    ball[..., :9, :] = False  # the score above the top wall is white too
    hit = (pred.min(-3).values > 127) & ball
    if real.dim() == 5:
        return hit.sum((0, 2, 3)).float() / ball.sum((0, 2, 3)).float().clamp_min(1)
    return hit.sum().float() / ball.sum().float().clamp_min(1)


@torch.no_grad()
def token_stability(model, d: dict[str, np.ndarray]) -> dict:
    """How the tokens of consecutive held-out frames (same episode) follow their pixels, as
    shares of all cells: ``static_cell_token_change`` = the cell's pixels are identical and its
    token changes (flicker the dynamics would have to predict: the lower the better);
    ``moving_cell_fraction`` = some of its pixels change; ``moving_cell_token_kept`` = some of
    its pixels change and its token does not (motion the tokens miss). Also the flicker as a
    share of the static cells."""
    obs = torch.from_numpy(d["obs"])
    N, T = obs.shape[:2]
    G = model.config.grid_size
    tokens = model.tokenize(obs.reshape(N * T, *obs.shape[2:])).reshape(N, T, G * G)
    moving = moving_cells(d, G, valid_only=False)  # [N, T-1, G*G]
    valid = ~torch.from_numpy(d["is_first"])[:, 1:, None].expand_as(moving)
    token_changed = tokens[:, 1:] != tokens[:, :-1]
    static = ~moving & valid
    total = valid.sum().clamp_min(1)
    return {"static_cell_token_change": ((token_changed & static).sum() / total).item(),
            "static_cell_token_change_of_static": token_changed[static].float().mean().item(),
            "moving_cell_fraction": ((moving & valid).sum() / total).item(),
            "moving_cell_token_kept": ((~token_changed & moving & valid).sum() / total).item()}


def psnr(pred: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) per frame of ``[N, 3, H, W]`` frames on the 0..255 scale."""
    mse = ((pred.float() - real.float()) / 255.0).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def tokenize_all(work: Path, data) -> dict[str, torch.Tensor]:
    path = work / "tokens.safetensors"
    if path.exists():
        return load_file(path)
    model = _model(1, len(GAMES))
    model.tokenizer.load_state_dict(load_file(work / "tokenizer.safetensors"))
    model.eval()
    tokens = {}
    with torch.no_grad():
        for key, d in data.items():
            N, T = d["obs"].shape[:2]
            tokens[key] = model.tokenize(torch.from_numpy(d["obs"].reshape(N * T, 3, 64, 64))) \
                .reshape(N, T, -1)
    save_file(tokens, path)
    return tokens


def examples(tokens: torch.Tensor, d: dict[str, np.ndarray], history: int, game: int) -> dict:
    from worldflux.models.token import make_windows

    is_first = torch.from_numpy(d["is_first"])
    windows = make_windows(tokens, is_first, history)
    valid = ~is_first[:, 1:]
    actions = torch.nn.functional.one_hot(torch.from_numpy(d["actions"]).clamp_min(0), 4).float()
    return {"context": windows[valid], "action": actions[:, 1:][valid],
            "target": tokens[:, 1:][valid],
            "reward": torch.from_numpy(d["rewards"])[:, 1:][valid],
            "terminated": torch.from_numpy(d["terminated"])[:, 1:][valid],
            "game": torch.full((int(valid.sum()),), game, dtype=torch.long)}


def moving_cells(d: dict[str, np.ndarray], grid: int, valid_only: bool = True) -> torch.Tensor:
    """``[M, grid*grid]`` (bool, in the order of :func:`examples`): the cells of each predicted
    frame with a pixel that differs from the frame before (the ball, paddle, player, enemies);
    ``valid_only=False``: ``[N, T-1, grid*grid]`` for every pair of consecutive rows."""
    obs = torch.from_numpy(d["obs"])
    changed = (obs[:, 1:] != obs[:, :-1]).any(2).float()  # [N, T-1, H, H]
    N, T1, H, _ = changed.shape
    cells = torch.nn.functional.max_pool2d(changed.reshape(N * T1, 1, H, H), H // grid) > 0
    cells = cells.reshape(N, T1, grid * grid)
    if not valid_only:
        return cells
    valid = ~torch.from_numpy(d["is_first"])[:, 1:]
    return cells[valid]


def _cat(parts: list[dict]) -> dict:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def train_dynamics(work: Path, name: str, games: list[str], history: int, steps: int, data,
                   tokens, args) -> dict:
    path = work / f"dynamics_{name}.safetensors"
    model = _model(history, len(GAMES))
    model.tokenizer.load_state_dict(load_file(work / "tokenizer.safetensors"))
    info_path = work / f"dynamics_{name}.json"
    done, curve, spent = 0, [], 0.0
    if path.exists():
        model.dynamics.load_state_dict(load_file(path))
        info = json.loads(info_path.read_text())
        if info["steps"] >= steps:
            return {"model": model, **info}
        # A longer --dynamics-steps continues the cached model (a fresh optimiser; the batch
        # stream goes on from where it stopped).
        done, curve, spent = info["steps"], info["curve"], info["train_s"]
    train = _cat([examples(tokens[f"{g}/train"], data[f"{g}/train"], history, GAMES.index(g))
                  for g in games])
    optimizer = model.optimizers()["dynamics"]
    rng = torch.Generator().manual_seed(1)
    M = len(train["target"])
    for _ in range(done):
        torch.randint(M, (args.batch,), generator=rng)
    started = time.time() - spent

    def save(steps_done: int) -> dict:
        info = {"history": history, "games": games, "steps": steps_done, "batch": args.batch,
                "train_examples": M, "train_s": round(time.time() - started, 1),
                "curve": curve}
        partial = path.with_suffix(".partial")
        save_file(model.dynamics.state_dict(), partial)
        os.replace(partial, path)
        atomic_write_text(info_path, json.dumps(info))
        return info

    model.train()
    for step in range(done, steps):
        idx = torch.randint(M, (args.batch,), generator=rng)
        out = model.dynamics_loss_on_tokens(*(train[k][idx] for k in (
            "context", "action", "target", "reward", "terminated", "game")))
        optimizer.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.dynamics.parameters(), 1.0)
        optimizer.step()
        if step % 25 == 0 or step == steps - 1:
            curve.append({"step": step, **out.metrics})
        if (step + 1) % 1000 == 0 and step + 1 < steps:  # a stopped run goes on from here
            save(step + 1)
    model.eval()
    return {"model": model, **save(steps)}


@torch.no_grad()
def evaluate(model, game: str, data, tokens, history: int, causal_examples: int) -> dict:
    test = examples(tokens[f"{game}/test"], data[f"{game}/test"], history, GAMES.index(game))
    preds = []
    for part in range(0, len(test["target"]), 64):
        sl = slice(part, part + 64)
        out = model.dynamics.generate(test["context"][sl], test["action"][sl], test["game"][sl],
                                      mode="parallel")
        preds.append(out["tokens"])
    pred, target, last = torch.cat(preds), test["target"], test["context"][:, -1]
    changed = target != last
    moving = moving_cells(data[f"{game}/test"], model.config.grid_size)
    result = {"examples": len(target),
              "token_accuracy": (pred == target).float().mean().item(),
              "changed_token_accuracy": (pred == target)[changed].float().mean().item(),
              "changed_fraction": changed.float().mean().item(),
              "copy_last_accuracy": (last == target).float().mean().item(),
              "moving_cell_token_accuracy": (pred == target)[moving].float().mean().item(),
              "moving_cell_copy_accuracy": (last == target)[moving].float().mean().item(),
              "moving_cell_fraction": moving.float().mean().item()}
    n = causal_examples
    out = model.dynamics.generate(test["context"][:n], test["action"][:n], test["game"][:n],
                                  mode="causal", use_cache=True)
    result["causal"] = {"examples": n,
                        "token_accuracy": (out["tokens"] == target[:n]).float().mean().item(),
                        "changed_token_accuracy":
                            (out["tokens"] == target[:n])[changed[:n]].float().mean().item(),
                        "parallel_token_accuracy_same_examples":
                            (pred[:n] == target[:n]).float().mean().item()}
    return result


@torch.no_grad()
def rollouts(model, game: str, data, tokens, horizon: int, starts: int,
             decodings: tuple[tuple[str, float], ...] = ()) -> dict:
    """Open-loop rollouts of ``horizon`` steps from ``starts`` held-out windows with the real
    actions, decoded as the model's config says; each ``(mode, temperature)`` of
    ``decodings`` is also rolled out from the same starts, under ``by_decoding`` (PSNR and,
    on Breakout64, ball recall per step; sampled rollouts with a fixed generator seed)."""
    result = _rollout(model, game, data, tokens, horizon, starts, main=True)
    saved = model.config.decoding, model.config.temperature
    for mode, temperature in decodings:
        model.config.decoding, model.config.temperature = mode, temperature
        result.setdefault("by_decoding", {})[f"{mode}_T{temperature:g}"] = _rollout(
            model, game, data, tokens, horizon, starts, main=False)
    model.config.decoding, model.config.temperature = saved
    return result


def _rollout(model, game: str, data, tokens, horizon: int, starts: int, main: bool) -> dict:
    """One decoding's rollouts: PSNR per step (and ball recall on Breakout64); ``main`` adds
    the copy-last-frame and tokenizer-ceiling baselines (the same for every decoding) and the
    gallery."""
    from worldflux.core.types import State

    d = data[f"{game}/test"]
    tok = tokens[f"{game}/test"]
    obs = torch.from_numpy(d["obs"])
    actions = torch.nn.functional.one_hot(torch.from_numpy(d["actions"]).clamp_min(0), 4).float()
    history = model.config.history
    chosen = []
    N, T = d["is_first"].shape
    for env in range(N):  # the first start in each world with a whole window and horizon
        for t0 in range(history, T - horizon, 7):
            if not d["is_first"][env, t0 - history + 1:t0 + horizon + 1].any():
                chosen.append((env, t0))
                break
    chosen = chosen[:starts]
    envs = torch.tensor([c[0] for c in chosen])
    t0s = torch.tensor([c[1] for c in chosen])
    context = torch.stack([tok[e, t - history + 1:t + 1] for e, t in chosen])
    game_index = torch.full((len(chosen),), GAMES.index(game), dtype=torch.long)
    start = obs[envs, t0s]
    # The start frame is the last real one: decode pastes it into the cells whose token the
    # dynamics left unchanged (``copy_unchanged_cells``); ``decoder_only`` is the same tokens
    # drawn by the decoder alone.
    state = State({"tokens": context, "reward": torch.zeros(len(chosen)),
                   "continue": torch.ones(len(chosen)), "game": game_index,
                   "frame": start, "frame_tokens": context[:, -1]})
    imagined, drawn, real = [], [], []
    generator = torch.Generator().manual_seed(0)  # for sampled tokens (temperature > 0)
    for k in range(1, horizon + 1):
        state = model.transition(state, actions[envs, t0s + k], generator=generator)
        imagined.append(model.decode(state).preds["obs"])
        drawn.append(model.detokenize(state["tokens"][:, -1]))
        real.append(obs[envs, t0s + k].float())
    imagined_t, real_t = torch.stack(imagined, 1), torch.stack(real, 1)
    drawn_t = torch.stack(drawn, 1)
    result = {"model_psnr_db": [psnr(imagined_t[:, k], real_t[:, k]).mean().item()
                                for k in range(horizon)],
              "copy_unchanged_cells": bool(model.config.copy_unchanged_cells),
              "decoder_only_psnr_db": [psnr(drawn_t[:, k], real_t[:, k]).mean().item()
                                       for k in range(horizon)]}
    if main:
        ceiling, pasted = [], []
        for k in range(horizon):
            real_tokens = model.tokenize(real_t[:, k])
            # As ``decode`` draws an imagined frame: against the start frame, when the
            # tokenizer takes a reference.
            recon = model.detokenize(real_tokens, start if model.config.reference_decoder
                                     else None)
            ceiling.append(psnr(recon, real_t[:, k]).mean().item())
            pasted.append(psnr(model.paste_unchanged(recon, real_tokens, start, context[:, -1]),
                               real_t[:, k]).mean().item())
        result = {"starts": len(chosen), "horizon": horizon, **result,
                  "copy_last_psnr_db": [psnr(start.float(), real_t[:, k]).mean().item()
                                        for k in range(horizon)],
                  "tokenizer_ceiling_psnr_db": ceiling,
                  "tokenizer_ceiling_pasted_psnr_db": pasted}
        _gallery(game, start.float(), real_t, imagined_t)
    if game == "Breakout64":  # does the imagined ball stay where the real one is?
        result["ball_recall_per_step"] = ball_recall(imagined_t, real_t).tolist()
    return result


def _gallery(game: str, start, real, imagined, count: int = 2) -> None:
    from PIL import Image

    GALLERY.mkdir(parents=True, exist_ok=True)
    frames = []
    for k in range(real.shape[1]):
        rows = []
        for i in range(min(count, real.shape[0])):
            pair = [real[i, k], torch.full((3, 64, 2), 255.0), imagined[i, k]]
            rows.append(torch.cat(pair, 2))
            rows.append(torch.full((3, 2, 130), 255.0))
        frames.append(torch.cat(rows, 1).byte().permute(1, 2, 0).numpy())
    images = [Image.fromarray(f).resize((f.shape[1] * 3, f.shape[0] * 3), Image.NEAREST)
              for f in frames]
    images[0].save(GALLERY / f"token_{game}_real_vs_imagined.gif", save_all=True,
                   append_images=images[1:], duration=120, loop=0)
    strip = np.concatenate([np.concatenate([real[0, k].byte().permute(1, 2, 0).numpy(),
                                            imagined[0, k].byte().permute(1, 2, 0).numpy()], 0)
                            for k in range(0, real.shape[1], 4)], 1)
    Image.fromarray(strip).resize((strip.shape[1] * 2, strip.shape[0] * 2), Image.NEAREST) \
        .save(GALLERY / f"token_{game}_strip.png")


def play_screenshot(work: Path, game: str, seconds: float) -> dict:
    """The gallery's play screenshot: the ``game`` history-4 model of ``work`` served by
    ``worldflux play`` (its page in headless chromium through Selenium), holding the right
    arrow for a while, then the left one; returns the frame rate the page reports."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    from worldflux.play import PlaySession, serve_in_background

    model = _model(4, len(GAMES))
    model.tokenizer.load_state_dict(load_file(work / "tokenizer.safetensors"))
    model.dynamics.load_state_dict(load_file(work / f"dynamics_{game}_h4.safetensors"))
    session = PlaySession(model, game, seed=0)
    server, url = serve_in_background(session)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=900,820"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(url)
        time.sleep(2.0)
        body = driver.find_element("tag name", "body")
        for key in (Keys.ARROW_RIGHT, Keys.ARROW_LEFT):
            ActionChains(driver).key_down(key, body).perform()
            time.sleep(seconds / 2)
            ActionChains(driver).key_up(key, body).perform()
        fps = float(driver.execute_script(
            "return document.getElementById('fps').dataset.fps || 0"))
        GALLERY.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(GALLERY / f"token_play_{game}.png"))
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
    return {"game": game, "page_fps": fps, "steps": len(session.actions_seen)}


def export_models(work: Path, out: Path) -> dict[str, str]:
    """The trained history-4 models of ``work`` (each game's, and the two-game one) as
    ``save_pretrained`` folders ``out/token_GAME`` / ``out/token_multi`` with a ``play.json``
    naming the game, so that ``worldflux play out/token_GAME`` plays in the learned world."""
    written = {}
    for name, game in [(g, g) for g in GAMES] + [("multi", GAMES[0])]:
        weights = work / f"dynamics_{name}_h4.safetensors"
        if not weights.exists():
            continue
        model = _model(4, len(GAMES))
        model.tokenizer.load_state_dict(load_file(work / "tokenizer.safetensors"))
        model.dynamics.load_state_dict(load_file(weights))
        folder = out / f"token_{name}"
        model.save_pretrained(str(folder))
        atomic_write_text(folder / "play.json", json.dumps({"game": game}))
        written[name] = str(folder)
    return written


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    labels, values, colors = [], [], []
    for game in GAMES:
        for key, color in (("h1", "tab:gray"), ("h4", "tab:blue"), ("multi", "tab:green")):
            entry = result["accuracy"].get(f"{game}/{key}")
            if entry:
                labels.append(f"{game[:-2]}\n{key}")
                values.append(entry["changed_token_accuracy"])
                colors.append(color)
    axes[0].bar(range(len(values)), values, color=colors)
    axes[0].set_xticks(range(len(values)), labels, fontsize=8)
    axes[0].set_ylabel("held-out accuracy on changing tokens")
    axes[0].set_title("next-frame tokens: history 1 vs 4 vs one model for both")
    for i, game in enumerate(GAMES):
        roll = result["rollouts"].get(game)
        if not roll:
            continue
        ax = axes[1 + i]
        steps = range(1, roll["horizon"] + 1)
        ax.plot(steps, roll["model_psnr_db"], label="imagined (history 4)")
        ax.plot(steps, roll["copy_last_psnr_db"], label="copy last frame", ls="--")
        ax.plot(steps, roll["tokenizer_ceiling_psnr_db"], label="tokenizer ceiling", ls=":")
        if "decoder_only_psnr_db" in roll and roll.get("copy_unchanged_cells"):
            ax.plot(steps, roll["decoder_only_psnr_db"], label="imagined, decoder only",
                    alpha=0.6)
            ax.plot(steps, roll["tokenizer_ceiling_pasted_psnr_db"],
                    label="tokenizer ceiling, unchanged cells pasted", ls=":", alpha=0.6)
        ax.set_xlabel("imagined step")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"{game}: open-loop rollout")
        ax.legend(loc="best", fontsize=7, framealpha=0.6)
        if "ball_recall_per_step" in roll:
            twin = ax.twinx()
            twin.plot(steps, roll["ball_recall_per_step"], color="tab:red", alpha=0.6)
            twin.set_ylim(0, 1)
            twin.set_ylabel("ball pixels drawn where the real ball is", color="tab:red")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks token_games")
    parser.add_argument("--stage", default="all",
                        choices=["all", "single", "multi", "report", "play", "export"],
                        help="report: only merge results of stages run before (--merge); play: "
                             "only the gallery's play screenshot of the trained Breakout64 model; "
                             "export: the trained history-4 models as save_pretrained folders "
                             "under --export-dir (worldflux play DIR/token_GAME)")
    parser.add_argument("--export-dir", default=str(RESULTS / "models"),
                        help="where --stage export writes the models")
    parser.add_argument("--work", default="/tmp/worldflux_token_games")
    parser.add_argument("--train-envs", type=int, default=128)
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--tokenizer-steps", type=int, default=3000)
    parser.add_argument("--dynamics-steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--horizon", type=int, default=24)
    parser.add_argument("--name", default="token_games")
    parser.add_argument("--games", default=",".join(GAMES),
                        help="games of the single-game stage (comma-separated)")
    parser.add_argument("--layers", type=int, default=2, help="transformer blocks")
    parser.add_argument("--embed-dim", type=int, default=64, help="transformer width")
    parser.add_argument("--changed-weight", type=float, default=1.0,
                        help="changed_token_weight of the dynamics loss")
    parser.add_argument("--lr", type=float, default=2e-3, help="dynamics learning rate")
    parser.add_argument("--encoder", default=None, choices=["conv", "cell", "patch"],
                        help="tokenizer encoder (default: the family's)")
    parser.add_argument("--encoder-context", type=int, default=None,
                        help="neighbouring cells a patch-encoder vector sees (0 or 1)")
    parser.add_argument("--codebook-size", type=int, default=None,
                        help="tokenizer codes (default: the family's, 128)")
    parser.add_argument("--normalize-codes", type=int, default=None, choices=[0, 1],
                        help="l2-normalised codes (default: the family's)")
    parser.add_argument("--decoder", default=None, choices=["conv", "patch"],
                        help="tokenizer decoder (default: the family's)")
    parser.add_argument("--decoder-norm", default=None, choices=["group", "position", "none"],
                        help="norm in the tokenizer's decoder (default: the family's)")
    parser.add_argument("--reference-decoder", type=int, default=None, choices=[0, 1],
                        help="the tokenizer's decoder draws against the last real frame "
                             "(default: the family's, off)")
    parser.add_argument("--tokenizer-final-lr", type=float, default=1.0,
                        help="the tokenizer's learning rate decays along a cosine to this "
                             "fraction of its start (1 = constant)")
    parser.add_argument("--histories", default="1,4", help="histories of the single-game stage")
    parser.add_argument("--rollout-decodings", default="",
                        help="more decodings of the history-4 rollouts, as MODE:TEMPERATURE "
                             "(comma-separated), e.g. causal:0,causal:1 (the main rollout "
                             "decodes in parallel, argmax)")
    parser.add_argument("--merge", default="",
                        help="result names (comma-separated) whose stages ran in other processes")
    args = parser.parse_args(argv)
    LAYERS["num_layers"] = args.layers
    LAYERS["embed_dim"] = args.embed_dim
    LAYERS["changed_token_weight"] = args.changed_weight
    LAYERS["dynamics_learning_rate"] = args.lr
    for key, value in (("encoder", args.encoder), ("encoder_context", args.encoder_context),
                       ("codebook_size", args.codebook_size),
                       ("normalize_codes", args.normalize_codes),
                       ("decoder", args.decoder), ("decoder_norm", args.decoder_norm),
                       ("reference_decoder", args.reference_decoder)):
        if value is not None:
            TOKENIZER[key] = bool(value) if key in ("normalize_codes", "reference_decoder") \
                else value
    decodings = tuple((mode, float(temp)) for mode, temp in (
        item.split(":") for item in filter(None, args.rollout_decodings.split(","))))
    for mode, _ in decodings:
        if mode not in ("parallel", "causal"):
            parser.error(f"--rollout-decodings: got mode {mode!r}, expected parallel or causal")
    started = time.time()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if args.stage == "play":
        print(json.dumps(play_screenshot(work, "Breakout64", 8.0)))
        return
    if args.stage == "export":
        print(json.dumps(export_models(work, Path(args.export_dir))))
        return
    data = collect_data(work, args)
    tok_result = train_tokenizer(work, data, args)
    tokens = tokenize_all(work, data)
    result_path = RESULTS / f"{args.name}.json"
    previous = json.loads(result_path.read_text()) if result_path.exists() else {}
    accuracy = previous.get("accuracy", {})
    rolls = previous.get("rollouts", {})
    training = previous.get("training", {})
    for other in filter(None, args.merge.split(",")):
        earlier = json.loads((RESULTS / f"{other}.json").read_text())
        accuracy.update(earlier.get("accuracy", {}))
        rolls.update(earlier.get("rollouts", {}))
        training.update(earlier.get("training", {}))
    if args.stage in ("all", "single"):
        for game in args.games.split(","):
            for history in (int(h) for h in args.histories.split(",")):
                key = f"{game}/h{history}"
                trained = train_dynamics(work, f"{game}_h{history}", [game], history,
                                         args.dynamics_steps, data, tokens, args)
                model = trained.pop("model")
                training[key] = trained
                accuracy[key] = evaluate(model, game, data, tokens, history, 64)
                if history == 4:
                    rolls[game] = rollouts(model, game, data, tokens, args.horizon, 16,
                                           decodings)
    if args.stage in ("all", "multi"):
        trained = train_dynamics(work, "multi_h4", list(GAMES), 4, 2 * args.dynamics_steps,
                                 data, tokens, args)
        model = trained.pop("model")
        training["multi"] = trained
        for game in GAMES:
            accuracy[f"{game}/multi"] = evaluate(model, game, data, tokens, 4, 64)
    summary = {}
    for game in GAMES:
        h1, h4 = accuracy.get(f"{game}/h1"), accuracy.get(f"{game}/h4")
        multi = accuracy.get(f"{game}/multi")
        entry = {}
        if h1 and h4:
            entry["h1_vs_h4_token_accuracy"] = [h1["token_accuracy"], h4["token_accuracy"]]
            entry["h1_vs_h4_changed_token_accuracy"] = [h1["changed_token_accuracy"],
                                                        h4["changed_token_accuracy"]]
        if multi and h4:
            entry["multi_over_single_token_accuracy"] = \
                multi["token_accuracy"] / h4["token_accuracy"]
            entry["multi_over_single_changed_token_accuracy"] = \
                multi["changed_token_accuracy"] / h4["changed_token_accuracy"]
        roll = rolls.get(game)
        if roll:
            entry["rollout_psnr_db_step1_step20"] = [roll["model_psnr_db"][0],
                                                     roll["model_psnr_db"][19]]
            entry["copy_last_psnr_db_step1_step20"] = [roll["copy_last_psnr_db"][0],
                                                       roll["copy_last_psnr_db"][19]]
            if "decoder_only_psnr_db" in roll:
                entry["decoder_only_psnr_db_step1_step20"] = [roll["decoder_only_psnr_db"][0],
                                                              roll["decoder_only_psnr_db"][19]]
        summary[game] = entry
    payload = {"summary": summary, "tokenizer": tok_result, "accuracy": accuracy,
               "rollouts": rolls, "training": training,
               "settings": {k: v for k, v in vars(args).items() if k != "work"}}
    if previous.get("wall_time_s"):
        payload["earlier_stages_wall_time_s"] = previous["wall_time_s"]
    write_result(args.name, payload, started)
    plot({"accuracy": accuracy, "rollouts": rolls}, plot_path(args.name))
    print(json.dumps(summary, indent=2))
