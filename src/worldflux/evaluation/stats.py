"""Rank statistics with numpy alone (scipy is not a dependency)."""

from __future__ import annotations

import numpy as np

from worldflux.core.errors import DataError

__all__ = ["rankdata", "spearman"]


def rankdata(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` (flattened), ties given the average of their ranks.

    ``rankdata([10, 20, 20, 5]) == [2, 3.5, 3.5, 1]`` (as ``scipy.stats.rankdata``'s default
    ``method="average"``). ``inf`` ranks last; NaN is refused (drop it first).
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(x).any():
        raise DataError("rankdata: got NaN values, expected numbers (drop NaN pairs first)")
    n = x.size
    if n == 0:
        return np.zeros(0)
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    new_group[1:] = ordered[1:] != ordered[:-1]
    group = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], n)  # exclusive
    average = (starts + ends - 1) / 2.0 + 1.0  # mean of the 1-based positions start+1 .. end
    ranks = np.empty(n)
    ranks[order] = average[group]
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of paired samples ``x [N]``, ``y [N]`` (ties averaged).

    The Pearson correlation of the ranks; pairs where either value is NaN are dropped. NaN when
    fewer than 2 pairs remain or either side is constant (no order to compare).
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise DataError(f"spearman: got {x.size} and {y.size} values, expected pairs of equal "
                        "length")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if x.size < 2:
        return float("nan")
    rx, ry = rankdata(x), rankdata(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denominator = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    if denominator == 0:
        return float("nan")
    return float(np.clip((rx * ry).sum() / denominator, -1.0, 1.0))
