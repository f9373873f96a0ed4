"""State autoencoder and latent dynamics against dynamics on raw observations, Nav3D.

Per seed, the data of ``nav3d_fidelity`` (flights of a slow, noisy scripted controller, the
obstacle observation of ``--obstacle-observation``), then the MPC agent's training recipe
(bootstrap + held-out early stopping) for two deterministic one-network models that differ
only in where the dynamics live:

* ``raw``: the ``mlp`` family, standardised observation changes;
* ``latent``: the ``latent-mlp`` family (MLP autoencoder, latent MLP dynamics), with a first
  stage of ``--autoencoder-epochs`` epochs that trains the autoencoder alone.

Reported: the autoencoder's relative reconstruction error ``||x_hat - x|| / ||x||`` on the
held-out observations (median and pooled; target < 1%), and both models' open-loop relative
error per horizon on the held-out flights replayed without gusts (the model's own error; see
``nav3d_fidelity``), with them, and against the expected flight of the gusty env (the mean of
64 gust draws from each start, ``mean_flight``; see ``nav3d_fidelity``) (target: latent
dynamics match or beat raw ones).
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np

from benchmarks.common import plot_path, pyplot, write_result
from benchmarks.nav3d_fidelity import (
    ENV,
    episodes_as_transitions,
    flight_arguments,
    flights,
    mean_flights,
)

MODELS = {"raw": ("pets", {"model.ensemble_size": "1", "model.stochastic": "false"}),
          "latent": ("latent-mpc", {})}


def run_seed(seed: int, episodes: int, heldout: int, horizon: int, obstacle_observation: str,
             autoencoder_epochs: int, latent_overrides: dict[str, str] | None = None) -> dict:
    import torch

    from worldflux.agents import build_agent
    from worldflux.core.spec import ActionSpec, ObservationSpec
    from worldflux.evaluation import open_loop_fidelity

    torch.manual_seed(seed)
    config, train_eps, gusty, calm = flights(seed, episodes, heldout, obstacle_observation)
    expected, _ = mean_flights(gusty, {"obstacle_observation": obstacle_observation}, horizon,
                               seed=seed)
    data = episodes_as_transitions(train_eps)
    out: dict = {"fits": {}, "summary": {}, "curves": {}}
    for name, (agent_name, overrides) in MODELS.items():
        extra = {"autoencoder_epochs": str(autoencoder_epochs), **(latent_overrides or {})} \
            if name == "latent" else {}
        agent = build_agent(agent_name, ObservationSpec((config.obs_dim,)), ActionSpec(3),
                            device=torch.device("cpu"), seed=seed,
                            overrides={"max_epochs": "60", "patience": "8", **overrides, **extra})
        started = time.time()
        fit = agent.train_model(data)
        out["fits"][name] = {**{k: v for k, v in fit.items() if "member" not in k},
                             "seconds": round(time.time() - started, 1)}
        model = agent.model.eval()
        summary = {}
        for split, eps, starts in (("no_gusts", calm, 8), ("gusts", gusty, 8),
                                   ("mean_flight", expected, 1)):
            result = open_loop_fidelity(model, eps, horizon=horizon, num_samples=1,
                                        starts_per_episode=starts, seed=seed)
            summary[f"{split}_steps_under_10pct"] = int(
                result.horizon_under(0.1, "relative_state_error"))
            summary[f"{split}_relative_state_error_h20"] = float(
                result.at("relative_state_error", 20))
            out["curves"][f"{name}_{split}"] = [float(v) for v in result.relative_state_error]
        if name == "latent":
            x = torch.as_tensor(np.concatenate([ep["obs"] for ep in gusty]))
            with torch.no_grad():
                x_hat = model.decode_latent(model.encode_latent(x))
            rel = (x_hat - x).norm(dim=-1) / x.norm(dim=-1)
            summary["ae_relative_error_median"] = float(rel.median())
            summary["ae_relative_error_pooled"] = float((x_hat - x).norm() / x.norm())
        out["summary"][name] = summary
    return out


def _plot(results: dict, path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, split in zip(axes, ("no_gusts", "gusts"), strict=True):  # mean_flight: in the JSON
        for name in MODELS:
            curves = np.array([r["curves"][f"{name}_{split}"] for r in results.values()])
            h = np.arange(1, curves.shape[1] + 1)
            ax.plot(h, curves.mean(0), label=f"{name} (mean of {len(curves)} seeds)")
        ax.axhline(0.1, color="grey", ls="--", lw=0.8)
        ax.set_title(f"held-out flights, {split.replace('_', ' ')}")
        ax.set_xlabel("open-loop horizon (steps)")
        ax.legend()
    axes[0].set_ylabel("median ||pred - real|| / ||real||")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = flight_arguments("nav3d_latent", episodes=40)
    parser.add_argument("--autoencoder-epochs", type=int, default=200)
    parser.add_argument("--latent-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="agent overrides of the latent model, e.g. model.training=encoded")
    args = parser.parse_args(argv)
    latent_overrides = dict(item.split("=", 1) for item in args.latent_set)
    started = time.time()
    results = {}
    for seed in args.seeds:
        results[seed] = run_seed(seed, args.episodes, args.heldout, args.horizon,
                                 args.obstacle_observation, args.autoencoder_epochs,
                                 latent_overrides)
        print(seed, json.dumps(results[seed]["summary"]))
    name = "nav3d_latent" + args.name_suffix
    _plot(results, plot_path(name))
    table = {model: {key: statistics.mean(r["summary"][model][key] for r in results.values())
                     for key in results[args.seeds[0]]["summary"][model]} for model in MODELS}
    payload = {
        "task": ENV, "obstacle_observation": args.obstacle_observation, "seeds": args.seeds,
        "train_episodes": args.episodes, "heldout_episodes": args.heldout,
        "horizon": args.horizon, "autoencoder_epochs": args.autoencoder_epochs,
        "latent_overrides": latent_overrides,
        "mean_over_seeds": table,
        "targets": {
            "state autoencoder relative error < 1% (median)":
                table["latent"]["ae_relative_error_median"] < 0.01,
            **{f"latent dynamics match or beat raw (steps under 10%, {label})":
                table["latent"][f"{split}_steps_under_10pct"]
                >= table["raw"][f"{split}_steps_under_10pct"]
               for split, label in (("no_gusts", "no gusts"), ("gusts", "gusty flights"),
                                    ("mean_flight", "expected gusty flight"))},
        },
        "by_seed": {s: {"summary": r["summary"], "fits": r["fits"]} for s, r in results.items()},
        "curves_by_seed": {s: r["curves"] for s, r in results.items()},
    }
    path = write_result(name, payload, started)
    print(json.dumps({"mean_over_seeds": table, "targets": payload["targets"]}, indent=2))
    print(f"wrote {path}")
