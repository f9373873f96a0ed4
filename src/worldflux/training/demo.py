"""``worldflux demo``: uncertainty-aware MPC on the native 3D navigation world, end to end.

1. Train PETS (an ensemble of Gaussian MLPs; the env's reward function of observations) online
   on ``worldflux/Nav3D-v0`` from state observations.
2. Evaluate on the same held-out episodes: random actions, the scripted reference controller,
   PETS planning risk-neutrally (mean of the particle returns) and risk-averse (CVaR).
3. Measure the model's open-loop fidelity (error per horizon, spread vs error) on held-out
   flights and write a self-contained ``report.html`` into the run directory.

The budget and planner settings are the module constants below, tuned so the whole demo runs in
a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from worldflux.core.errors import RegistryError
from worldflux.training.config import TrainConfig
from worldflux.training.environment import EVAL_SEED_OFFSET, make_env, specs_for
from worldflux.training.evaluate import evaluate, load_run
from worldflux.training.loop import train

DEMO_AGENT = "pets"
DEMO_ENV = "worldflux/Nav3D-v0"
DEMO_STEPS = 800
"""Two random 200-step episodes, then planned flights (the model is retrained after each)."""
DEMO_SEED = 0
DEMO_EVAL_EPISODES = 10
DEMO_AGENT_OVERRIDES: dict[str, str] = {
    "reward_source": "env",      # PETS' known-reward setting: Nav3D's reward of observations
    "seed_steps": "400",
    "planner.name": "cem",
    "planner.population": "150",
    "planner.elites": "15",
    "planner.iterations": "3",
    "planner.horizon": "15",
    "num_particles": "20",
}
DEMO_RISK = {"measure": "cvar", "alpha": 0.2}
"""The risk-averse objective compared with the risk-neutral one: CVaR of the worst 20%."""
DEMO_FIDELITY_EPISODES = 4
DEMO_FIDELITY_HORIZON = 30
DEMO_RUNS_ROOT = Path("runs")
"""Demo runs go to ``runs/demo-YYYYmmdd-HHMMSS`` unless ``out_dir`` is given."""


def _require_agent(name: str) -> None:
    from worldflux.agents import agent_config_class

    try:
        agent_config_class(name)
    except RegistryError as exc:
        raise RegistryError(
            f"demo: needs the '{name}' agent, which is not registered in this installation "
            f"({exc})"
        ) from None


class _Policy:
    """A plain ``obs -> action`` function as an agent for :func:`evaluate`."""

    def __init__(self, fn, action_spec) -> None:
        self.fn, self.action_spec = fn, action_spec

    def reset(self) -> None:
        pass

    def act(self, obs, *, explore: bool):
        return self.fn(obs)


def run_demo(console: Console, *, out_dir: str | os.PathLike | None = None,
             progress: bool | None = None) -> dict[str, Any]:
    """Run the demo, print the tables and return the figures.

    Returns:
        ``{"results": {policy: eval dict}, "fidelity": summary, "report", "run_dir",
        "wall_time_s"}``.

    Raises:
        RegistryError: the demo agent is not registered.
    """
    import numpy as np

    from worldflux.envs.nav3d import noisy_scripted_policy, scripted_action
    from worldflux.evaluation import collect_episodes, open_loop_fidelity, write_report
    from worldflux.planners import RiskConfig

    _require_agent(DEMO_AGENT)
    run_dir = Path(out_dir) if out_dir is not None else (
        DEMO_RUNS_ROOT / f"demo-{time.strftime('%Y%m%d-%H%M%S')}")
    # video_every: the final evaluation also writes GIFs (a flight, and the model's imagination
    # next to it) that the report embeds.
    config = TrainConfig(env=DEMO_ENV, steps=DEMO_STEPS, seed=DEMO_SEED,
                         eval_episodes=DEMO_EVAL_EPISODES, tensorboard=False,
                         video_every=DEMO_STEPS)
    console.print(f"[bold]worldflux demo[/]: PETS + CEM on {DEMO_ENV} (state observations) for "
                  f"{DEMO_STEPS} steps, then risk-neutral vs risk-averse planning, open-loop "
                  f"fidelity and a report; run directory {run_dir}")
    start = time.perf_counter()
    train(DEMO_AGENT, config, DEMO_AGENT_OVERRIDES, run_dir, console=console, progress=progress)
    train_time = time.perf_counter() - start

    agent, _, _, _ = load_run(run_dir, device="cpu")
    eval_seed = DEMO_SEED + EVAL_SEED_OFFSET
    env = make_env(config, seed=eval_seed)
    results: dict[str, dict[str, Any]] = {}
    try:
        _, action_spec = specs_for(env)
        rng = np.random.default_rng(DEMO_SEED)
        baselines = {
            "random actions": _Policy(lambda obs: rng.uniform(-1, 1, 3).astype(np.float32),
                                      action_spec),
            "scripted controller": _Policy(
                lambda obs: scripted_action(np.asarray(obs)[None])[0].astype(np.float32),
                action_spec),
        }
        for label, policy in baselines.items():
            results[label] = evaluate(policy, env, DEMO_EVAL_EPISODES, eval_seed)
        results["PETS, risk-neutral (mean)"] = evaluate(agent, env, DEMO_EVAL_EPISODES,
                                                        eval_seed)
        agent.config = copy.deepcopy(agent.config)
        agent.config.risk = RiskConfig(**DEMO_RISK)
        results[f"PETS, risk-averse (CVaR {DEMO_RISK['alpha']})"] = evaluate(
            agent, env, DEMO_EVAL_EPISODES, eval_seed)
    finally:
        env.close()

    heldout = collect_episodes(DEMO_ENV, noisy_scripted_policy(DEMO_SEED + 1),
                               DEMO_FIDELITY_EPISODES, seed=DEMO_SEED + 2 * EVAL_SEED_OFFSET)
    fidelity = open_loop_fidelity(agent.model.eval(), heldout, horizon=DEMO_FIDELITY_HORIZON,
                                  num_samples=10, seed=DEMO_SEED)
    planning = {label: (f"success {r['success_rate']:.0%}, episodes with a collision "
                        f"{r['collision_rate']:.0%}, return {r['mean']:.2f} ± {r['std']:.2f}")
                for label, r in results.items()}
    report = write_report(run_dir, fidelity={"pets": fidelity},
                          extra_sections={"Policies on the same evaluation episodes": planning})
    wall_time = time.perf_counter() - start

    table = Table(title=f"{DEMO_ENV}: {DEMO_EVAL_EPISODES} evaluation episodes (same seeds)")
    for column in ("policy", "success", "episodes with a collision", "return (mean ± std)"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for label, r in results.items():
        table.add_row(label, f"{r['success_rate']:.0%}", f"{r['collision_rate']:.0%}",
                      f"{r['mean']:.2f} ± {r['std']:.2f}")
    console.print(table)
    summary = fidelity.summary()
    console.print(
        f"open-loop fidelity of the learned ensemble over {DEMO_FIDELITY_HORIZON} steps: "
        f"relative error (vs the true observation) under 10% for "
        f"{fidelity.horizon_under(0.1, 'relative_state_error')} steps, spread-vs-error rank "
        f"correlation {fidelity.spearman:.2f}")
    console.print(f"PETS trained for {DEMO_STEPS} steps in {train_time:.0f} s; whole demo "
                  f"{wall_time:.0f} s. Report: {report}")
    return {"results": results, "fidelity": summary, "report": str(report),
            "run_dir": str(run_dir), "wall_time_s": wall_time}
