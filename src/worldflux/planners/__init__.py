"""Planners: pure optimisers over action sequences (import only worldflux.core).

    planner = make_planner(PlannerConfig(name="icem", horizon=15), action_dim=1)
    result = planner.plan(objective)          # objective: [N, H, A] -> [N]
    action = result.first_action
"""

from worldflux.planners.base import (
    Objective,
    Planner,
    PlannerConfig,
    PlannerRegistry,
    PlannerResult,
    make_planner,
)
from worldflux.planners.cem import CEMPlanner
from worldflux.planners.icem import ICEMPlanner
from worldflux.planners.mppi import MPPIPlanner
from worldflux.planners.noise import colored_noise
from worldflux.planners.random_shooting import RandomShootingPlanner
from worldflux.planners.risk import RISK_MEASURES, RiskConfig, risk_value

__all__ = [
    "RISK_MEASURES",
    "RiskConfig",
    "risk_value",
    "CEMPlanner", "ICEMPlanner", "MPPIPlanner", "Objective", "Planner", "PlannerConfig",
    "PlannerRegistry", "PlannerResult", "RandomShootingPlanner", "colored_noise", "make_planner",
]
