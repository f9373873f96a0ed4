"""Each gate on its own: what it measures, and that it fails when it should."""

from __future__ import annotations

import math

import pytest
import torch
from quality_models import TinyLinearModel

from worldflux.core import ActionSpec, ObservationSpec
from worldflux.quality import SmokeResult
from worldflux.quality.gates import (
    finite_metrics,
    loss_decrease,
    model_outputs,
    save_load_parity,
    scan_jsonl,
    seed_success,
)


def _tiny(seed: int = 0) -> TinyLinearModel:
    torch.manual_seed(seed)
    model = TinyLinearModel(None, ObservationSpec((3,)), ActionSpec(2))
    torch.nn.init.normal_(model.net.weight, std=0.3)
    return model


class ScaledModel(TinyLinearModel):
    """Scales its predictions by a buffer that save_pretrained does not write (persistent=False)."""

    def __init__(self, config, obs_spec, action_spec) -> None:
        super().__init__(config, obs_spec, action_spec)
        self.register_buffer("scale", torch.ones(1), persistent=False)

    def transition(self, state, action):
        out = super().transition(state, action)
        return out.replace(obs=out["obs"] * self.scale)


class NonFiniteLossModel(TinyLinearModel):
    def loss(self, batch):
        out = super().loss(batch)
        return type(out)(out.loss * float("nan"))


def test_scan_jsonl_finds_nan_inf_null_and_broken_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"step": 100, "loss": 1.5, "name": "x", "ok": true}\n'
        '{"step": 200, "loss": 1.0, "eval": {"returns": [1.0, null]}}\n'
        '{"step": 300, "loss": NaN}\n'
        '{"step": 400, "loss": Infinity}\n'
        "not json\n"
        "\n"
    )
    checked, bad, first = scan_jsonl(path)
    assert checked == 2 + 4 + 2 + 2  # numbers and nulls; strings and booleans are not counted
    assert bad == 4  # null, NaN, Infinity, the broken line
    assert first == "metrics.jsonl line 2 (step 200): 'eval.returns[1]' is null"
    path.write_text('{"step": 1, "loss": 0.5}\n')
    assert scan_jsonl(path) == (2, 0, None)


def test_finite_metrics_checks_the_model_tensors_and_its_outputs(tmp_path):
    model = _tiny()
    result = finite_metrics(model, None)
    assert result.passed and result.value == 0.0
    assert "2 parameter/buffer tensors" in result.detail and "forward outputs" in result.detail
    with torch.no_grad():
        model.net.bias[1] = float("inf")
    result = finite_metrics(model, None)
    assert not result.passed and result.value >= 2  # net.bias, and the outputs it reaches
    assert "non-finite model tensor(s): net.bias" in result.detail
    (tmp_path / "eval.jsonl").write_text('{"step": 1, "mean": 0.0}\n')
    result = finite_metrics(None, tmp_path)  # a run directory without metrics.jsonl
    assert not result.passed and "metrics.jsonl: missing" in result.detail


def test_model_outputs_are_reproducible_for_a_seed():
    model = _tiny()
    first, second = model_outputs(model, seed=3), model_outputs(model, seed=3)
    assert sorted(first) == ["decode/obs", "decode/reward", "encode/obs", "encode/reward",
                             "rollout/rewards", "rollout/states/obs", "rollout/states/reward"]
    assert first["rollout/states/obs"].shape == (4, 5, 3)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_save_load_parity_is_exact_and_catches_unsaved_state(register_family):
    register_family("test-gates-linear", TinyLinearModel)
    result = save_load_parity(_tiny())
    assert result.passed and result.value == 0.0 and result.detail.startswith("bit-identical")
    register_family("test-gates-scaled", ScaledModel)
    torch.manual_seed(0)
    model = ScaledModel(None, ObservationSpec((3,)), ActionSpec(2))
    model.scale.fill_(2.0)  # lost by save_pretrained: the loaded model predicts differently
    result = save_load_parity(model)
    assert not result.passed and result.value > 0
    assert "output rollout/states/obs" in result.detail or "output decode" in result.detail


def test_loss_decrease_passes_for_a_learner_and_fails_on_nan():
    result = loss_decrease(_tiny(), None, steps=40)
    assert result.passed and result.value >= result.threshold == pytest.approx(0.01)
    assert result.info["first"] > result.info["last"] and result.info["steps"] == 40
    assert result.value == pytest.approx((result.info["first"] - result.info["last"])
                                         / result.info["first"])
    assert loss_decrease(_tiny(), None, steps=35).value == result.value  # rounded up to 40
    assert loss_decrease(_tiny(), None, steps=200).value > 2 * result.value  # keeps learning
    assert "synthetic linear-Gaussian contract data (no run directory)" in result.detail
    torch.manual_seed(0)
    broken = NonFiniteLossModel(None, ObservationSpec((3,)), ActionSpec(2))
    result = loss_decrease(broken, None, steps=40)
    assert not result.passed and math.isnan(result.value)
    assert "non-finite loss at step 0" in result.detail


def _scripted(passing: set[int]) -> type:
    class Scripted(TinyLinearModel):
        @classmethod
        def smoke_task(cls, seed, quick=True):
            if seed == 99:
                raise RuntimeError("diverged")
            return SmokeResult(seed in passing, float(seed), 0.5, f"scripted seed {seed}")

    return Scripted


@pytest.mark.parametrize("passing, seeds, rate, passed", [
    ({0, 1, 2, 3}, 5, 0.8, True),     # exactly 80%: passes
    ({0, 1, 2}, 5, 0.6, False),
    (set(), 3, 0.0, False),
])
def test_seed_success_needs_80_percent_of_the_seeds(passing, seeds, rate, passed):
    result = seed_success(_scripted(passing), seeds)
    assert result.passed is passed and result.value == pytest.approx(rate)
    assert result.threshold == pytest.approx(0.8)
    assert [row["passed"] for row in result.info["seeds"]] == [s in passing for s in range(seeds)]
    if not passed:
        first_failure = min(set(range(seeds)) - passing)
        assert f"first failure: scripted seed {first_failure}" in result.detail


def test_seed_success_counts_a_crashing_seed_as_failed():
    scripted = _scripted({0})
    original = scripted.smoke_task
    scripted.smoke_task = classmethod(lambda cls, seed, quick=True: original(99))
    result = seed_success(scripted, 2)
    assert not result.passed and result.value == 0.0
    assert "raised RuntimeError: diverged" in result.detail
