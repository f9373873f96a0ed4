"""Rank statistics checked against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worldflux.core.errors import DataError
from worldflux.evaluation import rankdata, spearman


def test_rankdata_averages_tied_ranks():
    np.testing.assert_array_equal(rankdata([10, 20, 20, 5]), [2, 3.5, 3.5, 1])
    np.testing.assert_array_equal(rankdata([3, 3, 3]), [2, 2, 2])
    np.testing.assert_array_equal(rankdata([1.0, np.inf, -np.inf]), [2, 3, 1])
    assert rankdata([]).shape == (0,)
    with pytest.raises(DataError, match="NaN"):
        rankdata([1.0, np.nan])


def test_spearman_matches_hand_computed_values():
    # No ties: d = rank(x) - rank(y) = [-1, 1, -1, 1, 0], rho = 1 - 6 * 4 / (5 * 24) = 0.8.
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    # Ties: ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4]; Pearson of ranks = 4.5 / sqrt(4.5 * 5).
    assert spearman([1, 2, 2, 3], [10, 30, 20, 40]) == pytest.approx(3 / math.sqrt(10))
    # Monotone transforms do not matter; reversing the order flips the sign.
    x = np.array([0.3, 0.1, 0.7, 0.2, 0.9])
    assert spearman(x, np.exp(5 * x)) == pytest.approx(1.0)
    assert spearman(x, -x ** 3) == pytest.approx(-1.0)


def test_spearman_drops_nan_pairs_and_is_nan_without_an_order():
    assert spearman([1, 2, np.nan, 3], [1, 2, 5, 3]) == pytest.approx(1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))  # constant side
    assert math.isnan(spearman([1], [2]))
    with pytest.raises(DataError, match="equal"):
        spearman([1, 2], [1, 2, 3])
