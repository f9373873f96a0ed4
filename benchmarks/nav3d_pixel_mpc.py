"""MPC from 64x64 pixels on Nav3D, against MPC from state under the same protocol.

Per seed: flights of the slow, noisy scripted controller (as in ``nav3d_fidelity``) recorded as
two stacked top-down frames (``[6, 64, 64]`` uint8: the frame before and the current one, so
that one observation shows motion), the env's rewards and the actions; then

* ``pixel``: the ``pixel-mpc`` agent (keypoint autoencoder of each of the two frames, a
  bootstrapped ensemble of latent MLP dynamics (``--ensemble-size``, 5) fitted open loop over
  windows, a reward head with Huber errors, planned in the latent space with one particle per
  member, each plan scored by mean - lambda * std of its members' returns, ``--risk-lam`` 1:
  pessimism against the plans that only some members believe in), its autoencoder first
  trained alone (``--autoencoder-epochs``) and then frozen;
* ``state`` (``--agents pixel state``): the ``pets`` agent on the same flights' state
  observations, also with a learned reward (the online state benchmark ``nav3d_mpc`` plans
  with the env's reward function and reaches 100%).

Then ``--online-rounds`` rounds of ``--online-episodes`` planned flights with exploration noise,
the dynamics and reward head retrained on all transitions after each (an online MBRL loop: the
scripted flights alone never show the model what flying away from the goal does). Finally the
agents fly the same held-out episodes (same starts, same gusts) with CEM in closed loop, without
further training. Reported: success rate, final distance to the goal, contact steps, return,
and the wall time of a planning decision (the issue's bar: pixel MPC >= 50% success and >= 50%
of the state-based success, at >= 5 decisions per second on this 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.common import Transitions, plot_path, pyplot, write_result
from benchmarks.nav3d_fidelity import ENV, slow_noisy_policy

# The planner of the online state benchmark (nav3d_mpc): CEM 150 x 3 iterations, horizon 15.
PLANNER = {"planner.name": "cem", "planner.population": "150", "planner.elites": "15",
           "planner.iterations": "3", "planner.horizon": "15", "num_particles": "1"}


def collect(seed: int, episodes: int) -> dict[str, np.ndarray]:
    """Scripted flights as stacked frames and states: transitions of both observations."""
    from worldflux import envs

    policy = slow_noisy_policy(seed)
    rows: dict[str, list] = {k: [] for k in ("pixels", "next_pixels", "state", "next_state",
                                             "action", "reward")}
    env = envs.make(ENV, obs_type="image", frame_stack=2, seed=1000 * seed)
    for episode in range(episodes):
        pixels, _ = env.reset(seed=1000 * seed + episode)
        state = env.unwrapped.state()
        done = False
        while not done:
            action = policy(state)
            next_pixels, reward, terminated, truncated, _ = env.step(action)
            next_state = env.unwrapped.state()
            for key, value in (("pixels", pixels), ("next_pixels", next_pixels),
                               ("state", state), ("next_state", next_state),
                               ("action", action), ("reward", reward)):
                rows[key].append(np.asarray(value))
            pixels, state, done = next_pixels, next_state, terminated or truncated
    return {k: np.stack(v) for k, v in rows.items()}


def fly(agent, seed: int, episodes: int, pixels: bool, *, first_seed: int = 50_000,
        record: dict[str, list] | None = None) -> dict:
    """Closed-loop flights (held out by default: seeds from 50,000 on, no exploration);
    per-decision wall time of ``agent.act``. With ``record``, the flights explore (the agent's
    ``exploration_noise``) and their transitions are appended to it (``obs``, ``next_obs``,
    ``action``, ``reward`` lists)."""
    from worldflux import envs

    options = {"obs_type": "image", "frame_stack": 2} if pixels else {}
    env = envs.make(ENV, seed=first_seed + 1000 * seed, **options)
    success, contacts, returns, decision_s, final_distance = [], [], [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=first_seed + 1000 * seed + episode)
        agent.reset()
        done, total, info = False, 0.0, {}
        while not done:
            started = time.perf_counter()
            action = np.asarray(agent.act(obs, explore=record is not None), np.float32)
            decision_s.append(time.perf_counter() - started)
            next_obs, reward, terminated, truncated, info = env.step(action)
            if record is not None:
                for key, value in (("obs", obs), ("next_obs", next_obs), ("action", action),
                                   ("reward", reward)):
                    record[key].append(np.asarray(value))
            obs, total = next_obs, total + reward
            done = terminated or truncated
        success.append(bool(info.get("success", False)))
        final_distance.append(float(np.linalg.norm(env.unwrapped.goal - env.unwrapped.position)))
        contacts.append(int(info.get("collisions", 0)))
        returns.append(total)
    return {"success_rate": float(np.mean(success)), "contacts_per_episode":
            float(np.mean(contacts)), "mean_return": float(np.mean(returns)),
            "decision_ms_median": 1000 * float(np.median(decision_s)),
            "decisions_per_second": 1.0 / float(np.median(decision_s)),
            "final_goal_distance_median": float(np.median(final_distance)),
            "final_goal_distances": [round(d, 3) for d in final_distance],
            "episodes": episodes}


def online_rounds(agent, seed: int, args, pixels: bool,
                  pool: dict[str, np.ndarray]) -> list[dict]:
    """After the fit on scripted flights: ``args.online_rounds`` rounds of
    ``args.online_episodes`` planned flights (with exploration noise, seeds 30,000 on, never
    evaluated), each followed by a training round on every transition so far, as an online
    MBRL loop corrects the model where the planner takes it. The autoencoder keeps its
    first-stage weights (no further autoencoder stage; the dynamics and reward head go on
    learning)."""

    agent.config.autoencoder_epochs = 0
    agent.config.exploration_noise = args.online_noise
    rounds = []
    for r in range(args.online_rounds):
        agent.env_steps = len(pool["action"])  # past the random seed steps: plan and explore
        started = time.time()
        new: dict[str, list] = {key: [] for key in pool}
        flights = fly(agent, seed, args.online_episodes, pixels,
                      first_seed=30_000 + 100 * r, record=new)
        flown = time.time() - started
        # One copy of the pool at a time (frames are 24 KB each): the new rows are appended.
        pool = {key: np.concatenate([pool[key], np.stack(new[key])]) for key in pool}
        started = time.time()
        fit = agent.train_model(Transitions(
            pool["obs"], pool["action"].astype(np.float32), pool["reward"].astype(np.float32),
            pool["next_obs"]))
        rounds.append({"round": r, "train_flight_success": flights["success_rate"],
                       "train_flight_return": flights["mean_return"],
                       "transitions": len(pool["action"]), "flight_s": round(flown, 1),
                       "fit_s": round(time.time() - started, 1),
                       "holdout_mse": float(fit.get("model/holdout_mse", float("nan"))),
                       "reward_mse": float(fit.get("model/reward_mse", float("nan")))})
        every = args.eval_every_rounds
        if every and (r + 1) % every == 0 and r + 1 < args.online_rounds:
            # The held-out flights of the final evaluation, flown with this round's model.
            held_out = fly(agent, seed, args.eval_episodes, pixels)
            rounds[-1].update({"heldout_success": held_out["success_rate"],
                               "heldout_final_distance_median":
                                   held_out["final_goal_distance_median"],
                               "heldout_contacts": held_out["contacts_per_episode"]})
        print(seed, "online", json.dumps(rounds[-1]), flush=True)
    return rounds


def load_saved(agent, directory: Path) -> None:
    """Give ``agent`` the weights of a model written by ``--save-models`` (read back by
    ``from_pretrained``: checksum and format verified), after checking that the agent's model
    settings are the saved ones."""
    from worldflux.core.config import to_dict
    from worldflux.core.errors import CheckpointError
    from worldflux.core.serialization import from_pretrained

    if not directory.is_dir():
        raise SystemExit(f"--load-models: no saved model at {directory} (expected the "
                         "directory written by --save-models)")
    try:
        model = from_pretrained(directory, device="cpu")
    except CheckpointError as exc:
        raise SystemExit(f"--load-models: {exc}") from None
    saved, current = to_dict(model.config), to_dict(agent.model.config)
    differ = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if differ:
        raise SystemExit("--load-models: the model settings differ from the saved model's "
                         "(field: saved, this command): "
                         + ", ".join(f"{k}: {a!r}, {b!r}" for k, (a, b) in differ.items())
                         + "; pass the saved run's model flags")
    agent.model.load_state_dict(model.state_dict())
    agent.trained = True


def run_seed(seed: int, args) -> dict:
    import torch

    from worldflux.agents import build_agent
    from worldflux.core.config import parse_set_options
    from worldflux.core.spec import ActionSpec, ObservationSpec

    torch.manual_seed(seed)
    started = time.time()
    if args.load_models:  # no flights to learn from: the saved models fly the held-out ones
        from worldflux import envs

        data: dict[str, np.ndarray] = {}
        state_dim = envs.make(ENV).observation_space.shape[0]
        out: dict = {"loaded_from": args.load_models, "fits": {}, "flights": {}}
    else:
        data = collect(seed, args.episodes)
        state_dim = data["state"].shape[1]
        out = {"transitions": int(len(data["action"])),
               "collect_s": round(time.time() - started, 1), "fits": {}, "flights": {}}
    common = {**PLANNER, "max_epochs": str(args.max_epochs), "patience": "5"}
    agents = {
        "pixel": ("pixel-mpc", ObservationSpec((6, 64, 64), "uint8"),
                  {**common, "model.conv_depth": str(args.conv_depth),
                   "model.encoder": args.encoder, "model.latent_size": str(args.latent_size),
                   "model.foreground_weight": str(args.foreground_weight),
                   "model.training": args.training, "model.reward_head": args.reward_head,
                   "model.rollout_steps": str(args.rollout_steps),
                   "model.reward_huber_delta": str(args.reward_huber_delta),
                   "model.reward_events": (str(list(args.reward_events)) if args.reward_events
                                           else "none"),
                   "model.frames": str(args.frames if args.encoder == "keypoints" else 1),
                   "autoencoder_epochs": str(args.autoencoder_epochs),
                   "model.ensemble_size": str(args.ensemble_size),
                   "num_particles": str(args.ensemble_size),
                   "risk.measure": "mean_std", "risk.lam": str(args.risk_lam),
                   **parse_set_options(args.set)},
                  ("pixels", "next_pixels")),
        "state": ("pets", ObservationSpec((state_dim,)),
                  {**common, "num_particles": "20"}, ("state", "next_state")),
    }
    for name, (agent_name, spec, overrides, (obs_key, next_key)) in agents.items():
        if name not in args.agents:
            continue
        agent = build_agent(agent_name, spec, ActionSpec(3), device=torch.device("cpu"),
                            seed=seed, overrides=overrides)
        saved = Path(args.load_models or args.save_models or ".") / f"{name}_s{seed}"
        started = time.time()
        if args.load_models:
            load_saved(agent, saved)
        else:
            fit = agent.train_model(Transitions(data[obs_key], data["action"],
                                                 data["reward"].astype(np.float32),
                                                 data[next_key]))
            out["fits"][name] = {**{k: float(v) for k, v in fit.items() if "member" not in k},
                                 "seconds": round(time.time() - started, 1)}
        if args.online_rounds and not args.load_models:
            out.setdefault("online", {})[name] = online_rounds(
                agent, seed, args, name == "pixel", {
                    "obs": data[obs_key], "next_obs": data[next_key],
                    "action": data["action"], "reward": data["reward"]})
        started = time.time()
        out["flights"][name] = {**fly(agent, seed, args.eval_episodes, name == "pixel"),
                                "seconds": round(time.time() - started, 1)}
        if args.save_models:
            agent.model.save_pretrained(saved)
        print(seed, name, json.dumps(out["fits"].get(name)), json.dumps(out["flights"][name]),
              flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks nav3d_pixel_mpc")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--max-epochs", type=int, default=60)
    parser.add_argument("--autoencoder-epochs", type=int, default=5)
    parser.add_argument("--conv-depth", type=int, default=16)
    parser.add_argument("--encoder", default="keypoints", choices=["keypoints", "conv"])
    parser.add_argument("--latent-size", type=int, default=48)
    parser.add_argument("--foreground-weight", type=float, default=20.0)
    parser.add_argument("--training", default="encoded", choices=["encoded", "two_stage"])
    parser.add_argument("--reward-head", default="mlp", choices=["mlp", "potential"])
    parser.add_argument("--rollout-steps", type=int, default=4)
    parser.add_argument("--reward-huber-delta", type=float, default=0.3,
                        help="Huber threshold of the pixel agent's reward head (standardised)")
    parser.add_argument("--reward-events", type=float, nargs=2, default=None,
                        metavar=("LOW", "HIGH"),
                        help="pixel agent: rewards below LOW / above HIGH (collisions, the goal "
                             "bonus) are classified as events apart from the dense progress "
                             "(model.reward_events); e.g. -0.5 2.5")
    parser.add_argument("--frames", type=int, default=2,
                        help="keypoints: encode each of the 2 stacked frames on its own")
    parser.add_argument("--online-rounds", type=int, default=5,
                        help="rounds of planned flights + retraining after the scripted data")
    parser.add_argument("--online-episodes", type=int, default=6, help="flights per round")
    parser.add_argument("--online-noise", type=float, default=0.3,
                        help="std of the Gaussian noise on planned actions in online flights")
    parser.add_argument("--eval-every-rounds", type=int, default=0,
                        help="also fly the held-out evaluation after every K-th online round "
                             "(success against rounds); 0 = only at the end")
    parser.add_argument("--ensemble-size", type=int, default=5,
                        help="pixel agent: latent dynamics members (one planning particle each)")
    parser.add_argument("--risk-lam", type=float, default=1.0,
                        help="pixel agent: plans scored by mean - LAM * std of the members' "
                             "returns (0 = risk-neutral mean)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="pixel agent setting applied last, e.g. risk.measure=cvar "
                             "risk.alpha=0.2")
    parser.add_argument("--save-models", metavar="DIR",
                        help="write each final model to DIR/AGENT_sSEED (save_pretrained)")
    parser.add_argument("--load-models", metavar="DIR",
                        help="skip data and training: the models saved in DIR by "
                             "--save-models fly the held-out flights (e.g. under another "
                             "--risk-lam or --set risk.*); the model flags must be the saved run's")
    parser.add_argument("--agents", nargs="+", default=["pixel"])
    parser.add_argument("--name-suffix", default="")
    parser.add_argument("--merge", nargs="+", metavar="NAME",
                        help="combine the seeds of earlier results (run side by side, one seed "
                             "each) into one result instead of running")
    args = parser.parse_args(argv)
    started = time.time()
    if args.merge:
        runs = [json.loads((plot_path(n).with_suffix(".json")).read_text()) for n in args.merge]
        results = {int(seed): r for run in runs for seed, r in run["by_seed"].items()}
        settings = runs[0]["settings"]
        args.seeds, args.agents = sorted(results), settings["agents"]
        args.episodes, args.eval_episodes = settings["episodes"], settings["eval_episodes"]
        merged_wall = {n: run["wall_time_s"] for n, run in zip(args.merge, runs, strict=True)}
    else:
        results = {seed: run_seed(seed, args) for seed in args.seeds}
        settings, merged_wall = vars(args), None
    table = {name: {key: statistics.mean(r["flights"][name][key] for r in results.values())
                    for key in ("success_rate", "contacts_per_episode", "mean_return",
                                "decisions_per_second", "final_goal_distance_median")}
             for name in args.agents}
    payload = {"task": ENV, "seeds": args.seeds, "train_flights": args.episodes,
               "eval_episodes": args.eval_episodes, "planner": PLANNER,
               "settings": settings, "mean_over_seeds": table, "by_seed": results}
    if merged_wall:
        payload["merged_from"] = merged_wall
    if {"pixel", "state"} <= set(args.agents):
        pixel, state = table["pixel"], table["state"]
        payload["targets"] = {
            "pixel MPC success >= 50%": pixel["success_rate"] >= 0.5,
            "pixel success >= 50% of state success":
                pixel["success_rate"] >= 0.5 * state["success_rate"],
            ">= 5 decisions per second": pixel["decisions_per_second"] >= 5,
        }
    name = "nav3d_pixel_mpc" + args.name_suffix
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    names = list(table)
    ax.bar(names, [100 * table[n]["success_rate"] for n in names], color=["C1", "C0"][:len(names)])
    ax.set_ylabel("held-out success (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Nav3D MPC from pixels vs state ({len(results)} seed(s))")
    fig.tight_layout()
    fig.savefig(plot_path(name), dpi=110)
    plt.close(fig)
    path = write_result(name, payload, started)
    print(json.dumps({"mean_over_seeds": table, "targets": payload.get("targets")}, indent=2))
    print(f"wrote {path}")
