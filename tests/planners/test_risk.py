"""Risk measures over sampled returns, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from worldflux.core.errors import ConfigError
from worldflux.planners import RiskConfig, risk_value

# Two candidates, 10 sampled returns each: the same mean (5.5 vs 5.5), different spread.
SAFE = [5.0, 5.0, 5.5, 5.5, 5.5, 5.5, 5.5, 5.5, 6.0, 6.0]
RISKY = [-4.0, 1.0, 4.0, 6.0, 7.0, 7.0, 8.0, 8.0, 9.0, 9.0]
R = torch.tensor([SAFE, RISKY])


def test_mean_and_mean_std():
    assert risk_value(R, RiskConfig()).tolist() == pytest.approx([5.5, 5.5])
    assert risk_value(R, RiskConfig("mean_std", lam=0.0)).tolist() == pytest.approx([5.5, 5.5])
    std_safe = torch.tensor(SAFE).std(unbiased=False).item()
    std_risky = torch.tensor(RISKY).std(unbiased=False).item()
    out = risk_value(R, RiskConfig("mean_std", lam=1.0)).tolist()
    assert out == pytest.approx([5.5 - std_safe, 5.5 - std_risky])
    assert out[0] > out[1]  # risk aversion prefers the safe plan


def test_cvar_var_worst_by_hand():
    # alpha 0.2 of 10 samples -> the 2 worst
    assert risk_value(R, RiskConfig("cvar", alpha=0.2)).tolist() == pytest.approx([5.0, -1.5])
    assert risk_value(R, RiskConfig("var", alpha=0.2)).tolist() == pytest.approx([5.0, 1.0])
    assert risk_value(R, RiskConfig("worst")).tolist() == pytest.approx([5.0, -4.0])
    # alpha 0.25 -> ceil(2.5) = 3 worst
    assert risk_value(R, RiskConfig("cvar", alpha=0.25)).tolist() == pytest.approx(
        [(5 + 5 + 5.5) / 3, (-4 + 1 + 4) / 3])
    # alpha 1 -> CVaR is the mean
    assert risk_value(R, RiskConfig("cvar", alpha=1.0)).tolist() == pytest.approx([5.5, 5.5])


def test_entropic_by_hand_and_limits():
    beta = 0.5
    expected = [-1 / beta * math.log(sum(math.exp(-beta * r) for r in row) / len(row))
                for row in (SAFE, RISKY)]
    assert risk_value(R, RiskConfig("entropic", beta=beta)).tolist() == pytest.approx(expected)
    small = risk_value(R, RiskConfig("entropic", beta=1e-4)).tolist()
    assert small == pytest.approx([5.5, 5.5], abs=1e-2)  # beta -> 0: the mean
    large = risk_value(R, RiskConfig("entropic", beta=50.0)).tolist()
    assert large == pytest.approx([5.0, -4.0], abs=0.1)  # beta -> inf: the worst case


@pytest.mark.parametrize("config, match", [
    (RiskConfig("cavr"), "risk.measure: got 'cavr'.*cvar"),
    (RiskConfig("cvar", alpha=0.0), "risk.alpha"),
    (RiskConfig("entropic", beta=0.0), "risk.beta"),
    (RiskConfig("mean_std", lam=-1.0), "risk.lam"),
])
def test_bad_settings_name_the_field(config, match):
    with pytest.raises(ConfigError, match=match):
        config.validate()
