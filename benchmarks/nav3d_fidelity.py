"""Open-loop fidelity of four dynamics families on worldflux/Nav3D-v0, in and out of distribution.

Per seed: 40 training episodes of a slow, noisy scripted flight (so episodes are long enough for
50-step rollouts and cover the arena), then the same training recipe (the MPC agent's bootstrap
+ held-out early stopping) for four families that differ only in their uncertainty model:

* ``mlp``: one deterministic MLP;  ``ensemble-mlp``: 5 deterministic bootstrapped members;
* ``gaussian``: one Gaussian MLP (NLL);  ``pets``: 5 Gaussian members (epistemic + aleatoric).

Held-out episodes (other seeds, same policy) measure the error at every horizon 1..50, the
relative error in two forms (median over starts): against the true change from the start,
``||pred - real|| / ||real - start||`` (strict), and against the true observation,
``||pred - real|| / ||real||`` (the textbook form), and the Spearman rank
correlation between predicted spread and real error; an out-of-distribution split repeats it with
a heavier body and wind (``mass_scale=1.3, wind=(3, 0, 0)``). Targets (issue: uncertainty-aware
MPC): ensemble spread-vs-error rho >= 0.7; relative error < 10% over 20+ steps; the stochastic
model more robust out of distribution than the deterministic one (ratio reported), measured
both on the mean prediction (RMSE, OOD over in-distribution) and on the whole predictive
distribution (CRPS out of distribution, a proper score that rewards a spread covering what the
model gets wrong). The
held-out flights are also replayed without gusts (``gust_std=0``, same starts and policy seeds):
the env's own noise sets a floor under any open-loop error, and the calm split shows how much of
the error is the model's. That floor is measured too (``oracle``): from each held-out start the
real env flies the same actions under 64 gust draws, and the mean of those flights is the best
any predictor of the mean can do; its relative error against the recorded flight is what no
model can beat. The models are also scored against those mean flights (``mean_flight_*``): a
gust is a random draw that no spread can rank, so an ensemble's spread is checked against its
error on the flight it should predict, the expected one under the same gusty env.

``--obstacle-observation each`` (default) observes the offset to every obstacle (smooth along
a flight); ``nearest`` the env's default nearest-obstacle offset, which jumps when another
obstacle becomes the nearest (that jump dominated the open-loop error in the first runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from benchmarks.common import Transitions, plot_path, write_result

VARIANTS = {
    "mlp": {"model.ensemble_size": "1", "model.stochastic": "false"},
    "ensemble-mlp": {"model.stochastic": "false"},
    "gaussian": {"model.ensemble_size": "1"},
    "pets": {},
}
OOD = {"mass_scale": 1.3, "wind": (3.0, 0.0, 0.0)}
ENV = "worldflux/Nav3D-v0"


def slow_noisy_policy(seed: int, config=None):
    from worldflux.envs.nav3d import noisy_scripted_policy

    return noisy_scripted_policy(seed, max_speed=0.8, noise=0.35, config=config)


def mean_flights(episodes, options: dict, horizon: int, *, draws: int = 64,
                 starts_per_episode: int = 8, seed: int = 0) -> tuple[list[dict], np.ndarray]:
    """The env's own mean flight from every start of ``open_loop_fidelity`` (same starts):
    ``draws`` gust draws from the recorded start state under the recorded actions, averaged.

    Returns ``(windows, floor)``: one episode dict per start (``obs [H + 1, D]``: the recorded
    start, then the mean flight; ``actions [H + 1, 3]``: the recorded ones), which
    ``open_loop_fidelity(..., starts_per_episode=1)`` scores as the expected flight, and
    ``floor [H]``: the median relative state error of the mean flight against the recorded one
    (what no predictor of the mean can beat).
    """
    from worldflux.envs.nav3d.batch import Nav3DBatch
    from worldflux.envs.nav3d.config import Nav3DConfig
    from worldflux.evaluation.fidelity import _starts

    config = Nav3DConfig().replace(**options)
    rng = np.random.default_rng(seed)
    windows, ratios = [], []
    for ep in episodes:
        obs, actions = np.asarray(ep["obs"], np.float64), np.asarray(ep["actions"])
        for s in _starts(obs.shape[0], horizon, starts_per_episode):
            world = Nav3DBatch(draws, config, seed=0)
            world.reset(seed=0)  # the fixed layout; the state is then set to the start
            world.set_state(obs[s, 0:3], obs[s, 3:6], obs[s, 0:3] + obs[s, 6:9])
            world.keys[:] = rng.integers(0, 2**63, size=draws, dtype=np.int64).astype(np.uint64)
            flights = np.stack([world.step(np.repeat(actions[s + 1 + t][None], draws, 0))[0]
                                for t in range(horizon)], 1)  # [draws, H, D]
            expected = flights.mean(0)
            truth = obs[s + 1:s + 1 + horizon]
            ratios.append(np.linalg.norm(expected - truth, axis=-1)
                          / np.linalg.norm(truth, axis=-1))
            windows.append({"obs": np.concatenate([obs[s:s + 1], expected]).astype(np.float32),
                            "actions": np.asarray(actions[s:s + horizon + 1], np.float32)})
    return windows, np.median(np.asarray(ratios), axis=0)


def episodes_as_transitions(episodes) -> Transitions:
    """Episode dicts -> every transition, as the agent's training round reads a buffer."""
    obs, act, rew, nxt = [], [], [], []
    for ep in episodes:
        obs.append(ep["obs"][:-1])
        nxt.append(ep["obs"][1:])
        act.append(ep["actions"][1:])
        rew.append(ep["rewards"][1:])
    return Transitions(*(np.concatenate(x) for x in (obs, act, rew, nxt)))


def flights(seed: int, episodes: int, heldout: int, obstacle_observation: str):
    """``(config, training flights, held-out flights, the same held-out flights without
    gusts)`` of the slow, noisy scripted controller; held-out flights use other seeds."""
    from worldflux.envs.nav3d.config import Nav3DConfig
    from worldflux.evaluation import collect_episodes

    options = {"obstacle_observation": obstacle_observation}
    config = Nav3DConfig().replace(**options)
    train = collect_episodes(ENV, slow_noisy_policy(seed, config), episodes, seed=1000 * seed,
                             env_options=options)
    held_seed = 20_000 + 1000 * seed
    gusty = collect_episodes(ENV, slow_noisy_policy(seed + 100, config), heldout,
                             seed=held_seed, env_options=options)
    calm = collect_episodes(ENV, slow_noisy_policy(seed + 100, config), heldout,
                            seed=held_seed, env_options={**options, "gust_std": 0.0})
    return config, train, gusty, calm


def run_seed(seed: int, episodes: int, heldout: int, horizon: int,
             obstacle_observation: str = "each") -> dict:
    import torch

    from worldflux.agents import build_agent
    from worldflux.core.spec import ActionSpec, ObservationSpec
    from worldflux.evaluation import ood_split, open_loop_fidelity

    options = {"obstacle_observation": obstacle_observation}
    torch.manual_seed(seed)
    config, train_eps, held_eps, calm_eps = flights(seed, episodes, heldout, obstacle_observation)
    held_seed = 20_000 + 1000 * seed
    data = episodes_as_transitions(train_eps)
    models, fits = {}, {}
    for name, overrides in VARIANTS.items():
        agent = build_agent("pets", ObservationSpec((config.obs_dim,)), ActionSpec(3),
                            device=torch.device("cpu"), seed=seed,
                            overrides={"max_epochs": "60", "patience": "8", **overrides})
        t0 = time.time()
        fits[name] = {k: v for k, v in agent.train_model(data).items()
                      if not k.startswith("model/nll_member")}
        fits[name]["seconds"] = round(time.time() - t0, 1)
        models[name] = agent.model.eval()
    fidelity = {name: open_loop_fidelity(model, held_eps, horizon=horizon, num_samples=10,
                                         starts_per_episode=8, seed=seed)
                for name, model in models.items()}
    # The same flights without gusts: what the model gets wrong beyond the env's own noise.
    calm = {name: open_loop_fidelity(model, calm_eps, horizon=horizon, num_samples=10,
                                     starts_per_episode=8, seed=seed)
            for name, model in models.items()}
    ood = ood_split(models, ENV, {**OOD, **options}, policy=slow_noisy_policy(seed + 100, config),
                    episodes=heldout, seed=held_seed, horizon=horizon, num_samples=10,
                    starts_per_episode=8, fidelity_seed=seed, in_env_options=options)
    # The gusty flights' expected course: an ensemble's spread can rank its error against the
    # mean flight, not the part of one recorded flight that a gust draw decided.
    expected_eps, floor = mean_flights(held_eps, options, horizon, seed=seed)
    expected = {name: open_loop_fidelity(model, expected_eps, horizon=horizon, num_samples=10,
                                         starts_per_episode=1, seed=seed)
                for name, model in models.items()}
    summary = {"oracle": {
        "relative_state_error_h20": _num(floor[19]) if horizon >= 20 else None,
        "steps_under_10pct_relative_state_error":
            int(np.argmin(floor < 0.1)) if not (floor < 0.1).all() else int(horizon),
        "relative_state_error": [_num(v) for v in floor]}}
    for name, result in fidelity.items():
        summary[name] = {
            "spearman_spread_error": _num(result.spearman),
            "steps_under_10pct_relative_error": int(result.horizon_under(0.1)),
            "relative_error_h20": _num(result.at("relative_error", 20)),
            "steps_under_10pct_relative_state_error":
                int(result.horizon_under(0.1, "relative_state_error")),
            "relative_state_error_h20": _num(result.at("relative_state_error", 20)),
            "relative_error_h50": _num(result.at("relative_error", horizon)),
            "normalized_rmse_h20": _num(result.at("normalized_rmse", 20)),
            "ood_robustness_ratio": _num(ood.robustness_ratio(name)),
            "no_gusts_relative_state_error_h20": _num(calm[name].at("relative_state_error", 20)),
            "no_gusts_steps_under_10pct_relative_state_error":
                int(calm[name].horizon_under(0.1, "relative_state_error")),
            "no_gusts_relative_error_h20": _num(calm[name].at("relative_error", 20)),
            "no_gusts_spearman_spread_error": _num(calm[name].spearman),
            "mean_flight_spearman_spread_error": _num(expected[name].spearman),
            "mean_flight_steps_under_10pct_relative_state_error":
                int(expected[name].horizon_under(0.1, "relative_state_error")),
            "coverage_90_h20": _num(result.at("coverage_90", 20)),
            "ood_coverage_90_mean": _num(np.mean(ood.out_of_distribution[name].coverage_90)),
            "crps_mean": _num(np.mean(result.crps)),
            "ood_crps_mean": _num(np.mean(ood.out_of_distribution[name].crps)),
        }
    summary["ood_pets_vs_ensemble_mlp"] = ood.compare("pets", "ensemble-mlp")
    summary["ood_gaussian_vs_mlp"] = ood.compare("gaussian", "mlp")
    summary["ood_pets_vs_mlp"] = ood.compare("pets", "mlp")
    return {"summary": summary, "fits": fits,
            "fidelity": {k: v.to_dict(include_pairs=True) for k, v in fidelity.items()},
            "curves": {"pets_gusts": [_num(v) for v in fidelity["pets"].relative_state_error],
                       "pets_no_gusts": [_num(v) for v in calm["pets"].relative_state_error],
                       "oracle_gusts": [_num(v) for v in floor]},
            "ood": ood.to_dict(),
            "train_transitions": int(len(data.data[0])),
            "heldout_episode_lengths": [int(len(e["rewards"]) - 1) for e in held_eps]}


def _plot_floor(results: dict, path) -> None:
    """PETS's relative state error per horizon with and without gusts, next to the floor that
    the gusts set (the env's own mean flight), mean over seeds."""
    from benchmarks.common import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    labels = {"pets_gusts": "PETS, held-out flights with gusts",
              "pets_no_gusts": "PETS, the same flights without gusts (model error)",
              "oracle_gusts": "floor: the env's own mean flight, with gusts"}
    for key, label in labels.items():
        curves = np.array([[np.nan if v is None else v for v in r["curves"][key]]
                           for r in results.values()])
        ax.plot(np.arange(1, curves.shape[1] + 1), np.nanmean(curves, 0), label=label,
                ls="--" if key.startswith("oracle") else "-")
    ax.axhline(0.1, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("open-loop horizon (steps)")
    ax.set_ylabel("median ||pred - real|| / ||real||")
    ax.set_title(f"Nav3D open-loop error, mean of {len(results)} seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _num(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def flight_arguments(name: str, episodes: int) -> argparse.ArgumentParser:
    """The options shared by the Nav3D model benchmarks (seeds, flights, horizon, observation)."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks {name}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=episodes)
    parser.add_argument("--heldout", type=int, default=8)
    parser.add_argument("--horizon", type=int, default=50)
    parser.add_argument("--obstacle-observation", choices=("each", "nearest"), default="each")
    parser.add_argument("--name-suffix", default="")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = flight_arguments("nav3d_fidelity", episodes=80).parse_args(argv)
    started = time.time()
    from worldflux.evaluation import plot_fidelity
    from worldflux.evaluation.fidelity import FidelityResult

    results = {}
    for seed in args.seeds:
        results[seed] = run_seed(seed, args.episodes, args.heldout, args.horizon,
                                 args.obstacle_observation)
        print(seed, json.dumps(results[seed]["summary"], default=str)[:2000])
    plot_fidelity({k: FidelityResult.from_dict(v)
                   for k, v in results[args.seeds[0]]["fidelity"].items()},
                  plot_path("nav3d_fidelity" + args.name_suffix))

    _plot_floor(results, plot_path("nav3d_fidelity" + args.name_suffix + "_floor"))

    def mean(name, key):
        vals = [results[s]["summary"][name][key] for s in results]
        vals = [v for v in vals if v is not None]
        return statistics.mean(vals) if vals else None

    table = {name: {key: mean(name, key) for key in results[args.seeds[0]]["summary"][name]
                    if key != "relative_state_error"}
             for name in ("oracle", *VARIANTS)}
    ood_abs = statistics.mean(results[s]["summary"]["ood_pets_vs_ensemble_mlp"]
                              ["ood_rmse_a_over_b"] for s in results)
    ood_crps = {key: statistics.mean(results[s]["summary"][key]["ood_crps_a_over_b"]
                                     for s in results)
                for key in ("ood_pets_vs_ensemble_mlp", "ood_gaussian_vs_mlp", "ood_pets_vs_mlp")}
    payload = {
        "task": ENV, "obstacle_observation": args.obstacle_observation, "seeds": args.seeds, "train_episodes": args.episodes,
        "heldout_episodes": args.heldout, "horizon": args.horizon, "ood_options": OOD,
        "mean_over_seeds": table,
        "ood_rmse_pets_over_ensemble_mlp": ood_abs,
        "ood_crps_ratios_mean_over_seeds": ood_crps,
        "targets": {
            "pets spread-vs-error rho >= 0.7": (table["pets"]["spearman_spread_error"] or 0) >= 0.7,
            "pets relative error (vs the true change from the start) < 10% over 20+ steps":
                table["pets"]["steps_under_10pct_relative_error"] >= 20,
            "pets relative error (vs the true observation) < 10% over 20+ steps":
                table["pets"]["steps_under_10pct_relative_state_error"] >= 20,
            "same on the gust-free replay (the model's own error)":
                table["pets"]["no_gusts_steps_under_10pct_relative_state_error"] >= 20,
            "pets spread-vs-error rho >= 0.7 on the gust-free replay":
                (table["pets"]["no_gusts_spearman_spread_error"] or 0) >= 0.7,
            "stochastic ensemble lower OOD error than deterministic ensemble": ood_abs < 1.0,
            **{f"{a} lower OOD CRPS than {b} on every seed": all(
                (results[s]["summary"][key]["ood_crps_a_over_b"] or 2) < 1.0 for s in results)
               for a, b, key in (("pets", "ensemble-mlp", "ood_pets_vs_ensemble_mlp"),
                                 ("gaussian", "mlp", "ood_gaussian_vs_mlp"),
                                 ("pets", "mlp", "ood_pets_vs_mlp"))},
            **{f"{name} spread-vs-error rho >= 0.7 on every seed, {split}": all(
                (results[s]["summary"][name][key] or 0) >= 0.7 for s in results)
               for name in ("ensemble-mlp", "pets")
               for split, key in (("gust-free replay", "no_gusts_spearman_spread_error"),
                                  ("against the mean flight with gusts",
                                   "mean_flight_spearman_spread_error"))},
        },
        "by_seed": {s: r["summary"] for s, r in results.items()},
        "fits_by_seed": {s: r["fits"] for s, r in results.items()},
        "curves_by_seed": {s: r["curves"] for s, r in results.items()},
        "details_seed0": {"fidelity": results[args.seeds[0]]["fidelity"],
                          "ood": results[args.seeds[0]]["ood"]},
    }
    path = write_result("nav3d_fidelity" + args.name_suffix, payload, started)
    print(json.dumps({"mean_over_seeds": table, "targets": payload["targets"],
                      "ood_rmse_pets_over_ensemble_mlp": ood_abs}, indent=2, default=str))
    print(f"wrote {path}")
