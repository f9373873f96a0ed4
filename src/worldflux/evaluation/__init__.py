"""Evaluating world models: open-loop rollout fidelity, uncertainty calibration, an
out-of-distribution split, and a self-contained HTML report per run.

Quick use::

    from worldflux.evaluation import collect_episodes, open_loop_fidelity, plot_fidelity
    episodes = collect_episodes("Pendulum-v1", "random", episodes=5, seed=20_000)
    result = open_loop_fidelity(model, episodes, horizon=50)
    result.horizon_under(0.1), result.spearman        # steps under 10% error, calibration rho
    plot_fidelity({"pets": result}, "fidelity.png")

    from worldflux.evaluation import ood_split, deterministic
    ood = ood_split({"stochastic": model, "deterministic": deterministic(model)},
                    "Pendulum-v1", {"g": 15.0})
    ood.ratios(), ood.compare("stochastic", "deterministic")

    from worldflux.evaluation import write_report
    write_report("runs/pets-pendulum")                 # -> runs/pets-pendulum/report.html
"""

from worldflux.evaluation.collect import (
    HELDOUT_SEED_OFFSET,
    apply_env_options,
    collect_episodes,
    env_factory_for,
    replay_episodes,
)
from worldflux.evaluation.fidelity import (
    FidelityResult,
    OODResult,
    compare_robustness,
    deterministic,
    fidelity_figure,
    imagine_rollouts,
    ood_split,
    open_loop_fidelity,
    plot_fidelity,
    plot_ood,
    write_fidelity_json,
)
from worldflux.evaluation.report import write_report
from worldflux.evaluation.stats import rankdata, spearman

__all__ = [
    "HELDOUT_SEED_OFFSET",
    "FidelityResult",
    "OODResult",
    "apply_env_options",
    "collect_episodes",
    "compare_robustness",
    "deterministic",
    "env_factory_for",
    "fidelity_figure",
    "imagine_rollouts",
    "ood_split",
    "open_loop_fidelity",
    "plot_fidelity",
    "plot_ood",
    "rankdata",
    "replay_episodes",
    "spearman",
    "write_fidelity_json",
    "write_report",
]
