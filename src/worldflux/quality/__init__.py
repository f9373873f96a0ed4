"""Quality gates for runs, saved models and families (``worldflux verify``).

Quick use::

    from worldflux.quality import verify
    report = verify("runs/pets-Pendulum-v1-...")   # or a saved model, or a family: "pets"
    report.passed, [g.name for g in report.gates if not g.passed]

Gates: ``finite_metrics``, ``save_load_parity``, ``loss_decrease`` and ``seed_success`` (see
:mod:`worldflux.quality.gates`). A family says what "learning" means for it by overriding
:meth:`worldflux.core.model.WorldModel.smoke_task` (default: :func:`generic_smoke_task`).
"""

from worldflux.quality.report import GateResult, VerifyReport
from worldflux.quality.smoke import (
    LinearGaussianSystem,
    SmokeResult,
    generic_smoke_task,
    random_env_transitions,
)
from worldflux.quality.verify import GATES, verify

__all__ = [
    "GATES", "GateResult", "LinearGaussianSystem", "SmokeResult", "VerifyReport",
    "generic_smoke_task", "random_env_transitions", "verify",
]
