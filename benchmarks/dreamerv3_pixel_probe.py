"""How many world-model updates DreamerV3 needs before it sees the cart in 64x64 pixels.

The pixel task of the DreamerV3 DMC benchmark (``cartpole-balance`` from 64x64 frames) did not
learn on CPU budgets; the reconstructions showed the empty scene and the reward head a constant.
This probe trains the world model alone (no actor or critic) on fixed pixel episodes, one case
per settings, and follows what the model has learned about the foreground:

* ``fg_error``: squared reconstruction error on the pixels that differ from the background
  (per-pixel median of all frames, any channel off by more than 30 of 255), divided by the error
  of drawing the background there. 1: the cart and the pole are not drawn; 0: drawn exactly.
* ``reward_corr``: correlation of the reward head's prediction with the true reward.

Both on held-out episodes, from the posterior (filtering the episode with its actions), every
``--every`` updates. Data: ``--episodes`` random-policy episodes of ``dmc/cartpole-balance``
(action repeat 2, camera 0 as in the reference), or the replay of a pixel run
(``--replay RUN/seed0/replay``); the last two episodes are held out.

``python -m benchmarks dreamerv3_pixel_probe --updates 1500 --case base: --case
lr1e-3:model_lr=1e-3`` (a case is ``NAME:key=value,key=value`` of agent overrides on top of
the DMC recipe: ``size1m``, units 256, strided CNN, critic lr 3e-4, bf16).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.common import plot_path, pyplot, write_result

NAME = "dreamerv3_pixel_probe"
RECIPE = {"model.size": "size1m", "model.units": "256", "model.cnn_strided": "true",
          "critic_lr": "3e-4"}
HELD_OUT = 2
EVAL_ROWS = 200  # first rows of each held-out episode: the cart is in view early on


def _episodes(args) -> list[dict]:
    import numpy as np

    if args.replay:
        files = sorted(Path(args.replay).glob("episode-*.npz"))
        if len(files) <= HELD_OUT:
            raise SystemExit(f"--replay: {args.replay} holds {len(files)} episodes, need more "
                             f"than {HELD_OUT}")
        return [dict(np.load(f, allow_pickle=False)) for f in files[:args.episodes]]
    from worldflux.envs import make

    env = make(f"dmc/{args.task}", obs_type="image", action_repeat=2, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    out = []
    for _ in range(args.episodes):
        obs, _ = env.reset()
        rows = {"obs": [obs], "actions": [np.zeros(1, np.float32)], "rewards": [0.0],
                "terminated": [False], "is_first": [True]}
        done = False
        while not done:
            action = rng.uniform(-1, 1, 1).astype(np.float32)
            obs, reward, term, trunc, _ = env.step(action)
            for key, value in (("obs", obs), ("actions", action), ("rewards", reward),
                               ("terminated", term), ("is_first", False)):
                rows[key].append(value)
            done = term or trunc
        out.append({"obs": np.stack(rows["obs"]), "actions": np.stack(rows["actions"]),
                    "rewards": np.asarray(rows["rewards"], np.float32),
                    "terminated": np.asarray(rows["terminated"]),
                    "is_first": np.asarray(rows["is_first"])})
    env.close()
    return out


def _probe(name: str, overrides: dict[str, str], episodes: list[dict], args) -> dict:
    """Train one case's world model; its foreground error and reward correlation over updates."""
    import numpy as np
    import torch

    from worldflux.agents import build_agent
    from worldflux.core.spec import ActionSpec, ObservationSpec

    agent = build_agent("dreamerv3", ObservationSpec((3, 64, 64), "uint8"), ActionSpec(1),
                        device=torch.device("cpu"), seed=args.seed,
                        overrides={**RECIPE, **overrides})
    agent.configure_training(precision=args.precision)
    model, cfg = agent.model, agent.config
    train, test = episodes[:-HELD_OUT], episodes[-HELD_OUT:]
    stream = {k: np.concatenate([e[k] for e in train])
              for k in ("obs", "actions", "rewards", "terminated", "is_first")}
    rows = len(stream["rewards"])
    background = np.median(np.concatenate([e["obs"][::5] for e in episodes]), 0)
    background = background.astype(np.float32)
    rng = np.random.default_rng(args.seed)

    def evaluate() -> tuple[float, float]:
        err = base = 0.0
        truth, pred = [], []
        for ep in test:
            obs = torch.from_numpy(ep["obs"][:EVAL_ROWS])
            actions = torch.from_numpy(ep["actions"][:EVAL_ROWS]).float()[None]
            with torch.no_grad():
                embed = model.encoder(obs)[None]
                seq = model.observe(embed, actions, torch.from_numpy(ep["is_first"][:EVAL_ROWS])[None])
                feat = model.feat(seq["deter"], seq["stoch"])[0]
                recon = model.decode_obs(feat).float().numpy()
                reward = model.reward(feat).float().reshape(-1).numpy()
            frames = obs.float().numpy()
            mask = np.abs(frames - background).max(1, keepdims=True) > 30
            mask = np.broadcast_to(mask, frames.shape)
            err += float(((recon - frames) ** 2)[mask].sum())
            base += float(((background - frames) ** 2)[mask].sum())
            truth.append(ep["rewards"][1:EVAL_ROWS])
            pred.append(reward[1:])
        corr = float(np.corrcoef(np.concatenate(truth), np.concatenate(pred))[0, 1])
        return err / max(base, 1.0), corr

    marks, started = [], time.perf_counter()
    for update in range(1, args.updates + 1):
        index = rng.integers(0, rows - cfg.batch_length, cfg.batch_size)[:, None]
        index = index + np.arange(cfg.batch_length)
        batch = {k: torch.from_numpy(v[index]) for k, v in stream.items()}
        model.train()
        metrics, _ = agent.train_world_model(batch)
        model.eval()
        if update % args.every == 0:
            fg, corr = evaluate()
            marks.append({"update": update, "fg_error": round(fg, 4), "reward_corr": round(corr, 3),
                          "rec_loss": round(metrics["model/rec_loss"], 2),
                          "kl": round(metrics["model/kl"], 3)})
            print(name, marks[-1], f"{time.perf_counter() - started:.0f}s", flush=True)
    return {"case": name, "overrides": overrides, "train_rows": rows, "marks": marks,
            "seconds": round(time.perf_counter() - started, 1)}


def _plot(cases: list[dict], name: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for case in cases:
        x = [m["update"] for m in case["marks"]]
        axes[0].plot(x, [m["fg_error"] for m in case["marks"]], marker=".", label=case["case"])
        axes[1].plot(x, [m["reward_corr"] for m in case["marks"]], marker=".",
                     label=case["case"])
    axes[0].set(xlabel="world-model updates (16 x 64)", ylabel="foreground error (1: not drawn)",
                title="cart and pole in the reconstruction")
    axes[1].set(xlabel="world-model updates (16 x 64)", ylabel="correlation",
                title="reward head vs true reward")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plot_path(name), dpi=100)


def _case(text: str) -> tuple[str, dict[str, str]]:
    name, _, rest = text.partition(":")
    pairs = [p for p in rest.split(",") if p]
    bad = [p for p in pairs if "=" not in p]
    if not name or bad:
        raise SystemExit(f"--case: got {text!r}, expected NAME:key=value,key=value "
                         "(e.g. lr1e-3:model_lr=1e-3, or base: for the recipe alone)")
    return name, dict(p.split("=", 1) for p in pairs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks {NAME}")
    parser.add_argument("--case", action="append", type=_case,
                        help="NAME:key=value,... (repeatable); default: base and lr1e-3")
    parser.add_argument("--updates", type=int, default=1500)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--replay", default=None, help="episode folder of a pixel run")
    parser.add_argument("--task", default="cartpole-balance")
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=NAME, help="result file name (cases run apart)")
    args = parser.parse_args(argv)
    cases = args.case or [("base", {}), ("lr1e-3", {"model_lr": "1e-3"})]
    started = time.time()
    episodes = _episodes(args)
    results = [_probe(name, overrides, episodes, args) for name, overrides in cases]
    _plot(results, args.name)
    write_result(args.name, {"task": args.task, "recipe": RECIPE, "precision": args.precision,
                             "episodes": len(episodes), "held_out": HELD_OUT,
                             "data": args.replay or "random policy", "seed": args.seed,
                             "cases": results}, started)


if __name__ == "__main__":
    main()
