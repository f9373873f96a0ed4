"""Planners as pure optimisers: quality on a known objective, bounds, warm start, priors,
coloured noise, MPPI weights and config validation. Every registered planner is covered."""

from __future__ import annotations

import math

import pytest
import torch

from worldflux.core.errors import ConfigError, RegistryError
from worldflux.planners import (
    CEMPlanner,
    ICEMPlanner,
    MPPIPlanner,
    PlannerConfig,
    PlannerRegistry,
    colored_noise,
    make_planner,
)

H, A = 6, 2
PLANNERS = ["random", "cem", "mppi", "icem"]


def _registered_planners() -> list[str]:
    make_planner(PlannerConfig(name="cem", population=4, elites=2), 1)  # loads the built-ins
    return PlannerRegistry.names()


def small_config(name: str, **overrides) -> PlannerConfig:
    settings = dict(name=name, horizon=H, population=200, iterations=5, elites=20)
    settings.update(overrides)
    return PlannerConfig(**settings)


def quadratic(target: torch.Tensor):
    """Objective ``-||x - target||^2`` over ``[N, H, A]`` (maximum 0 at ``target``)."""

    def objective(sequences: torch.Tensor) -> torch.Tensor:
        return -(sequences - target).pow(2).sum((1, 2))

    return objective


def _target() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return (torch.rand(H, A, generator=g) * 1.2 - 0.6)


def test_all_registered_planners_are_tested():
    assert set(_registered_planners()) == set(PLANNERS)


@pytest.mark.parametrize("name,horizon,reduction", [
    ("random", 2, 0.1),  # uniform sampling needs a small search space to do well
    ("cem", H, 0.02), ("mppi", H, 0.02), ("icem", H, 0.05),
])
def test_planner_optimises_a_quadratic(name, horizon, reduction):
    target = _target()[:horizon]
    objective = quadratic(target)
    planner = make_planner(small_config(name, horizon=horizon), A)
    start = planner.initial_mean()
    initial_error = -float(objective(start[None])[0])
    result = planner.plan(objective)
    assert result.actions.shape == (horizon, A)
    assert result.first_action.shape == (A,)
    error = -float(objective(result.actions[None])[0])
    assert error < reduction * initial_error, (error, initial_error)
    assert result.value <= 0 and math.isfinite(result.value)
    assert result.extras["wf.planner.horizon"] == horizon
    assert result.extras["wf.planner.name"] == name
    assert result.extras["wf.planner.evaluated"] > 0


@pytest.mark.parametrize("name", PLANNERS)
def test_planner_respects_bounds(name):
    low, high = torch.tensor([-0.5, 0.0]), torch.tensor([0.5, 2.0])
    target = torch.tensor([3.0, -3.0]).expand(H, A)  # optimum outside the box: on its corner
    seen = {"min": torch.full((A,), math.inf), "max": torch.full((A,), -math.inf)}

    def objective(sequences):
        flat = sequences.reshape(-1, A)
        seen["min"] = torch.minimum(seen["min"], flat.min(0).values)
        seen["max"] = torch.maximum(seen["max"], flat.max(0).values)
        return quadratic(target)(sequences)

    planner = make_planner(small_config(name), A, low=low, high=high)
    prior = torch.full((2, H, A), 10.0)  # out of bounds: clipped before scoring
    result = planner.plan(objective, prior=prior)
    assert (result.actions >= low).all() and (result.actions <= high).all()
    assert (seen["min"] >= low).all() and (seen["max"] <= high).all()
    centre = ((low + high) / 2).expand(H, A)
    assert float(objective(result.actions[None])[0]) > float(objective(centre[None])[0])


@pytest.mark.parametrize("name", PLANNERS)
def test_warm_start_shifts_the_previous_solution(name):
    low, high = torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 1.0])
    planner = make_planner(small_config(name), A, low=low, high=high)
    centre = (low + high) / 2
    assert torch.equal(planner.initial_mean(), centre.expand(H, A))
    result = planner.plan(quadratic(_target()))
    previous = planner.state_dict()["previous"]
    if name != "icem":  # iCEM executes its best sequence but warm-starts from its refitted mean
        assert torch.equal(previous, result.actions)
    warm = planner.initial_mean()
    assert torch.equal(warm[:-1], previous[1:])
    assert torch.equal(warm[-1], centre)
    planner.reset()
    assert torch.equal(planner.initial_mean(), centre.expand(H, A))
    assert "previous" not in planner.state_dict() and "elites" not in planner.state_dict()


@pytest.mark.parametrize("name", PLANNERS)
def test_warm_start_can_be_disabled(name):
    planner = make_planner(small_config(name, warm_start=False), A)
    planner.plan(quadratic(_target()))
    assert torch.equal(planner.initial_mean(), torch.zeros(H, A))


@pytest.mark.parametrize("name", PLANNERS)
def test_planner_state_round_trip_reproduces_the_plan(name):
    objective = quadratic(_target())
    planner = make_planner(small_config(name, population=50, elites=10), A)
    planner.plan(objective)
    state = planner.state_dict()
    first = planner.plan(objective)
    other = make_planner(small_config(name, population=50, elites=10), A,
                         generator=torch.Generator().manual_seed(99))
    other.load_state_dict(state)
    second = other.plan(objective)
    assert torch.equal(first.actions, second.actions) and first.value == second.value


@pytest.mark.parametrize("name", PLANNERS)
def test_prior_sequences_join_the_population(name):
    prior = torch.full((1, H, A), 0.3)
    prior[0, :, 1] = -0.7

    def only_the_prior(sequences):
        hit = (sequences - prior[0]).abs().amax((1, 2)) < 1e-6
        return torch.where(hit, torch.tensor(5.0), torch.tensor(-100.0))

    planner = make_planner(small_config(name), A)
    result = planner.plan(only_the_prior, prior=prior)
    assert result.value == 5.0
    if name in ("random", "icem"):  # these execute the best sequence found
        assert torch.equal(result.actions, prior[0])


def test_colored_noise_has_unit_variance_and_correlation_grows_with_beta():
    g = torch.Generator().manual_seed(0)
    shape = (20000, 16, 1)

    def lag1(x):
        x = x - x.mean(0)
        return float((x[:, 1:] * x[:, :-1]).mean() / x.var())

    white = colored_noise(0.0, shape, generator=g)
    pink = colored_noise(2.0, shape, generator=g)
    assert pink.shape == shape
    for noise in (white, pink):
        per_step = noise.var(0).squeeze(-1)  # variance at every time step
        assert torch.allclose(per_step, torch.ones(16), atol=0.05), per_step
    assert abs(lag1(white)) < 0.03
    assert lag1(pink) > 0.5
    odd = colored_noise(3.0, (20000, 7, 2), generator=g)
    assert torch.allclose(odd.var(0), torch.ones(7, 2), atol=0.05)
    assert colored_noise(2.0, (3, 1, 2), generator=g).shape == (3, 1, 2)


def _mppi(iterations: int) -> MPPIPlanner:
    cfg = PlannerConfig(name="mppi", horizon=1, population=2, elites=2, iterations=iterations,
                        temperature=0.5, init_std=0.5, min_std=0.01)
    planner = make_planner(cfg, 1, generator=torch.Generator().manual_seed(0))
    assert isinstance(planner, MPPIPlanner)
    return planner


def _by_position(seen: list[torch.Tensor]):
    def objective(sequences):
        seen.append(sequences.clone())
        return torch.tensor([1.0, 3.0])  # the second sample is always the better one

    return objective


def test_mppi_weights_by_hand():
    seen: list[torch.Tensor] = []
    result = _mppi(1).plan(_by_position(seen))
    x1, x2 = float(seen[0][0, 0, 0]), float(seen[0][1, 0, 0])
    # Elites best first; weights exp(0.5 * (3 - 3)) = 1 for x2 and exp(0.5 * (1 - 3)) = e^-1 for x1.
    w1, w2 = math.exp(-1.0), 1.0
    mean = (w1 * x1 + w2 * x2) / (w1 + w2)
    assert float(result.actions[0, 0]) == pytest.approx(mean, rel=1e-6)
    assert result.value == 3.0
    effective = (w1 + w2) ** 2 / (w1**2 + w2**2)  # 1 / sum(normalised w^2)
    assert result.extras["wf.planner.effective_samples"] == pytest.approx(effective, rel=1e-6)

    # The second iteration samples around that mean with the weighted std of the two elites.
    seen.clear()
    _mppi(2).plan(_by_position(seen))
    std = math.sqrt((w1 * (x1 - mean) ** 2 + w2 * (x2 - mean) ** 2) / (w1 + w2))
    g = torch.Generator().manual_seed(0)
    torch.randn((2, 1, 1), generator=g)  # the first iteration's draws
    expected = torch.clamp(mean + max(std, 0.01) * torch.randn((2, 1, 1), generator=g), -1, 1)
    torch.testing.assert_close(seen[1], expected)


def test_icem_evaluates_fewer_sequences_than_cem():
    objective = quadratic(_target())
    cem = make_planner(small_config("cem"), A)
    icem = make_planner(small_config("icem"), A)
    assert isinstance(cem, CEMPlanner) and isinstance(icem, ICEMPlanner)
    cem_count = cem.plan(objective).extras["wf.planner.evaluated"]
    icem_result = icem.plan(objective)
    assert cem_count == 200 * 5
    assert icem_result.extras["wf.planner.evaluated"] < cem_count
    assert ICEMPlanner.total_samples(200, 5, 1.25, 20) < cem_count


@pytest.mark.parametrize("field,value", [
    ("horizon", 0), ("population", 1), ("iterations", 0), ("elites", 0), ("elites", 300),
    ("momentum", 1.0), ("momentum", -0.1), ("min_std", 0.0), ("max_std", 0.01),
])
def test_config_validation_names_the_field(field, value):
    cfg = small_config("cem", **{field: value})
    with pytest.raises(ConfigError) as excinfo:
        make_planner(cfg, A)
    message = str(excinfo.value)
    assert message.startswith("planner.") and field in message and str(value) in message


def test_unknown_planner_name():
    with pytest.raises(RegistryError, match="unknown planner 'cme'.*Did you mean: cem"):
        make_planner(PlannerConfig(name="cme"), A)  # type: ignore[arg-type]


def test_objective_with_wrong_output_shape_is_rejected():
    planner = make_planner(small_config("cem"), A)
    with pytest.raises(ConfigError, match=r"scores of shape \(200, 6\), expected \[200\]"):
        planner.plan(lambda seqs: seqs.sum(-1))


def test_nan_scores_are_never_elites():
    target = _target()

    def objective(sequences):
        values = quadratic(target)(sequences)
        return torch.where(sequences[:, 0, 0] > 0, torch.tensor(math.nan), values)

    result = make_planner(small_config("random"), A).plan(objective)
    assert math.isfinite(result.value) and float(result.actions[0, 0]) <= 0


def test_icem_executes_best_or_mean_as_configured():
    import torch

    from worldflux.planners import PlannerConfig, make_planner

    target = torch.linspace(-0.5, 0.5, 10)[:, None]

    def objective(x):
        return -((x - target) ** 2).sum((1, 2))

    best = make_planner(PlannerConfig(name="icem", horizon=10, population=64, elites=8), 1)
    result = best.plan(objective)
    assert torch.isclose(objective(result.actions[None])[0], torch.tensor(result.value))
    mean = make_planner(PlannerConfig(name="icem", horizon=10, population=64, elites=8,
                                      icem_execute="mean"), 1)
    result = mean.plan(objective)
    assert torch.equal(result.actions, mean._previous)
    assert float(objective(result.actions[None])[0]) > -0.5  # far better than zeros (-1.02)
