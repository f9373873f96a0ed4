"""Open-loop rollout fidelity, uncertainty calibration and an out-of-distribution split.

For start points along held-out episodes the model imagines ``horizon`` steps open loop (it
sees the real observation at the start and the real actions, never a later observation);
``K`` sampled rollouts are compared with what really happened. Per horizon ``h = 1..H``
(``N`` starts, ``D`` flattened observation dimensions, ``m`` the mean of the ``K`` samples,
``x`` the real observations, ``sigma_d`` the per-dimension std of the held-out observations):

========================  =============================================================
``mae[h]``                mean over starts and dims of ``|m_h - x_h|``
``mse[h]``, ``rmse[h]``   mean of ``(m_h - x_h)^2``, and its square root
``normalized_rmse[h]``    ``sqrt(mean over starts and dims of ((m_h - x_h) / sigma_d)^2)``:
                          error in units of the data's spread (0.1 = a tenth of a std)
``relative_error[h]``     median over starts of ``||m_h - x_h|| / ||x_h - x_0||``: error as
                          a fraction of how far the system really moved from the start
                          state (the median ignores the few starts where it barely moved;
                          a start that did not move at all counts as ``inf`` unless the
                          error is 0 too)
``relative_error_pooled`` ``sum over starts ||m_h - x_h|| / sum over starts ||x_h - x_0||``
``spread[h]``             mean over starts and dims of the std across the ``K`` samples
                          (population std, ``ddof = 0``)
``normalized_spread[h]``  the same with every dimension divided by ``sigma_d``
``spearman_per_h[h]``     rank correlation over starts between a start's normalised spread
                          and its normalised RMS error at ``h``
``spearman``              the same over all ``(start, h)`` pairs together (dominated by
                          both growing with ``h``; ``spearman_per_h`` asks whether the spread
                          also tells the harder starts apart at a fixed horizon)
``crps[h]``               continuous ranked probability score of the ``K`` samples, per
                          dimension in units of ``sigma_d``, mean over dims and starts:
                          ``E|X - x| - E|X - X'| / 2`` (Gneiting & Raftery 2007); the mean
                          absolute error for a deterministic model; lower is better, and a
                          spread that covers the truth is rewarded
========================  =============================================================

``sigma_d`` is floored: a dimension that never varies in the data is measured in raw units.
Image observations (uint8) are compared in ``[0, 1]`` units.

"The model keeps relative error under 10% over 20+ steps" reads as
``result.horizon_under(0.1) >= 20``; "spread correlates with error at rho >= 0.7" as
``result.spearman >= 0.7``.

Rollouts come from ``model.imagine(obs [B, *obs], actions [B, T, A], K, generator=...) ->
[K, B, T + 1, *obs]`` when the family has it; otherwise :func:`imagine_rollouts` runs the
one-step contract itself (``encode``, then ``transition`` and ``decode`` repeatedly; sample
``k`` on ensemble member ``k % E`` for families whose state carries ``"member"``).
"""

from __future__ import annotations

import inspect
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from worldflux.core.errors import ConfigError, ContractError, DataError
from worldflux.core.io import atomic_write_text
from worldflux.evaluation.collect import HELDOUT_SEED_OFFSET, collect_episodes
from worldflux.evaluation.stats import spearman

__all__ = [
    "FidelityResult",
    "OODResult",
    "compare_robustness",
    "deterministic",
    "fidelity_figure",
    "imagine_rollouts",
    "ood_split",
    "open_loop_fidelity",
    "plot_fidelity",
    "plot_ood",
    "supports_deterministic",
    "write_fidelity_json",
]

PER_HORIZON_KEYS = ("mae", "mse", "rmse", "normalized_rmse", "relative_error",
                    "relative_error_pooled", "relative_state_error", "spread",
                    "normalized_spread", "spearman_per_h", "coverage_90", "crps")
"""Arrays ``[H]`` of a :class:`FidelityResult` (index ``h - 1`` holds horizon ``h``)."""
SCALE_FLOOR = 1e-6
"""Dimensions whose std in the data is below this are measured in raw units (scale 1)."""


# -- rollouts ------------------------------------------------------------------------------------
def _accepts(method: Any, name: str) -> bool:
    try:
        parameters = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD
                                     for p in parameters.values())


def _ensemble_size(model: Any) -> int | None:
    size = getattr(getattr(model, "config", None), "ensemble_size", None)
    return int(size) if isinstance(size, int) and size >= 1 else None


@torch.no_grad()
def imagine_rollouts(model: Any, obs: Tensor, actions: Tensor, num_samples: int, *,
                     generator: torch.Generator | None = None,
                     deterministic: bool = False, use_imagine: bool = True) -> Tensor:
    """``K`` open-loop rollouts from real observations with given actions.

    Args:
        model: a :class:`~worldflux.core.model.WorldModel` (or anything with ``imagine``).
        obs: first observations ``[B, *obs_shape]``.
        actions: actions ``[B, T, A]`` (``actions[:, t]`` leads from step ``t`` to ``t + 1``).
        num_samples: ``K`` sampled rollouts per row.
        generator: random generator on the model's device (reproducible samples).
        deterministic: no sampling (PETS: the ensemble mean); all ``K`` rollouts are equal.
        use_imagine: use ``model.imagine`` when it exists (False: always the one-step
            contract, e.g. to check a family's ``imagine`` against it).

    Returns:
        Predicted observations ``[K, B, T + 1, *obs_shape]`` (``[:, :, 0]`` is the decoded
        first observation), float.

    ``model.imagine`` is used when it exists (and, for ``deterministic``, accepts that keyword);
    otherwise ``encode`` -> (``transition`` -> ``decode``) x ``T`` on ``K * B`` rows, row
    ``k * B + b`` being sample ``k`` of row ``b``, propagated by ensemble member ``k % E``
    when the state has a ``"member"`` tensor.
    """
    K = int(num_samples)
    if K < 1:
        raise ConfigError(f"num_samples: got {num_samples!r}, expected an integer >= 1")
    if obs.ndim < 2 or actions.ndim != 3 or actions.shape[0] != obs.shape[0]:
        raise ContractError(f"obs/actions: got shapes {tuple(obs.shape)} and "
                            f"{tuple(actions.shape)}, expected [B, *obs_shape] and [B, T, A]")
    B, T = actions.shape[:2]
    expected = (K, B, T + 1, *obs.shape[1:])
    training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        imagine = getattr(model, "imagine", None)
        if use_imagine and callable(imagine) and (not deterministic
                                                  or _accepts(imagine, "deterministic")):
            kwargs: dict[str, Any] = {}
            if generator is not None and _accepts(imagine, "generator"):
                kwargs["generator"] = generator
            if deterministic:
                kwargs["deterministic"] = True
            out = imagine(obs, actions, K, **kwargs)
        else:
            out = _contract_rollouts(model, obs, actions, K, generator, deterministic)
    finally:
        if hasattr(model, "train"):
            model.train(training)
    if tuple(out.shape) != expected:
        raise ContractError(f"imagine: got shape {tuple(out.shape)}, expected {expected} "
                            "[K, B, T + 1, *obs_shape]")
    return out.float()


def _contract_rollouts(model: Any, obs: Tensor, actions: Tensor, K: int,
                       generator: torch.Generator | None, deterministic: bool) -> Tensor:
    """Rollouts through ``encode`` / ``transition`` / ``decode`` (see :func:`imagine_rollouts`)."""
    B, T, A = actions.shape
    rows_obs = obs.unsqueeze(0).expand(K, *obs.shape).reshape(K * B, *obs.shape[1:])
    rows_act = actions.unsqueeze(0).expand(K, B, T, A).reshape(K * B, T, A)
    state = model.encode(rows_obs)
    E = _ensemble_size(model)
    if E is not None and "member" in state:
        member = torch.arange(K, device=rows_obs.device).repeat_interleave(B) % E
        state = state.replace(member=member.to(state["member"].dtype))
    kwargs: dict[str, Any] = {}
    if _accepts(model.transition, "deterministic"):
        kwargs["deterministic"] = bool(deterministic)
    elif deterministic:
        raise ConfigError(f"deterministic: {type(model).__name__}.transition has no "
                          "'deterministic' option; evaluate it with deterministic=False")
    if generator is not None and _accepts(model.transition, "generator"):
        kwargs["generator"] = generator
    predictions = [model.decode(state).preds["obs"]]
    for t in range(T):
        state = model.transition(state, rows_act[:, t], **kwargs)
        predictions.append(model.decode(state).preds["obs"])
    stacked = torch.stack(predictions, 1)  # [K * B, T + 1, *obs]
    return stacked.reshape(K, B, T + 1, *obs.shape[1:])


class _Deterministic:
    """A model seen through :func:`deterministic`: ``imagine`` without sampling."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def imagine(self, obs: Tensor, actions: Tensor, num_samples: int, *,
                generator: torch.Generator | None = None) -> Tensor:
        return imagine_rollouts(self.model, obs, actions, num_samples, generator=generator,
                                deterministic=True)


def supports_deterministic(model: Any) -> bool:
    """Whether :func:`imagine_rollouts` can run ``model`` with ``deterministic=True``."""
    imagine = getattr(model, "imagine", None)
    if callable(imagine) and _accepts(imagine, "deterministic"):
        return True
    return _accepts(getattr(model, "transition", None), "deterministic")


def deterministic(model: Any) -> Any:
    """``model`` with sampling switched off (PETS: the ensemble mean, no noise).

    The deterministic counterpart of a stochastic model, e.g. for
    ``ood_split({"stochastic": model, "deterministic": deterministic(model)}, ...)``.
    """
    return _Deterministic(model)


# -- results -------------------------------------------------------------------------------------
def _json_number(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _from_json(values: Sequence[Any]) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


@dataclass
class FidelityResult:
    """Open-loop fidelity of one model on a set of episodes (see the module docstring)."""

    horizon: int
    """``H``: steps imagined from every start."""
    num_samples: int
    """``K``: sampled rollouts per start."""
    num_starts: int
    """``N``: start points (over all episodes)."""
    num_episodes: int
    """Episodes long enough to hold at least one start."""
    deterministic: bool
    """Rollouts were made without sampling."""
    scale: np.ndarray
    """``sigma_d [D]``: per-dimension std of the held-out observations (floored to 1)."""
    mae: np.ndarray
    """``[H]`` mean absolute error of the sample mean."""
    mse: np.ndarray
    """``[H]`` mean squared error of the sample mean."""
    rmse: np.ndarray
    """``[H]`` square root of ``mse``."""
    normalized_rmse: np.ndarray
    """``[H]`` RMS error with every dimension divided by ``scale``."""
    relative_error: np.ndarray
    """``[H]`` median over starts of ``||m_h - x_h|| / ||x_h - x_0||``."""
    relative_error_pooled: np.ndarray
    """``[H]`` summed error norms over summed true-change norms."""
    relative_state_error: np.ndarray
    """``[H]`` median over starts of ``||m_h - x_h|| / ||x_h||``: the error relative to the
    true observation's magnitude (the textbook relative error; lenient where the observation
    is large and barely moves, which is why ``relative_error`` is reported too)."""
    spread: np.ndarray
    """``[H]`` std across samples, averaged over dimensions and starts."""
    normalized_spread: np.ndarray
    """``[H]`` ``spread`` with every dimension divided by ``scale``."""
    spearman_per_h: np.ndarray
    """``[H]`` rank correlation over starts of normalised spread vs normalised error."""
    spearman: float
    """Rank correlation over all ``(start, h)`` pairs."""
    coverage_90: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """``[H]`` share of real values (over starts and dimensions) inside the 5th-95th
    percentile range of the ``K`` sampled rollouts: 0.9 is calibrated, lower is
    over-confident (a deterministic model's range is a point: 0)."""
    crps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """``[H]`` normalised CRPS of the sampled rollouts (see the module docstring)."""
    pair_error: np.ndarray | None = field(default=None, repr=False)
    """``[N, H]`` normalised RMS error of every start and horizon (for scatter plots)."""
    pair_spread: np.ndarray | None = field(default=None, repr=False)
    """``[N, H]`` normalised spread of every start and horizon."""

    def horizon_under(self, threshold: float = 0.1, metric: str = "relative_error") -> int:
        """Number of leading horizons ``1..h`` whose ``metric`` stays below ``threshold``."""
        if metric not in PER_HORIZON_KEYS:
            raise ConfigError(f"metric: got {metric!r}, expected one of {PER_HORIZON_KEYS}")
        values = np.asarray(getattr(self, metric))
        below = np.isfinite(values) & (values < threshold)
        return int(np.argmin(below)) if not below.all() else int(values.size)

    def at(self, metric: str, h: int) -> float:
        """``metric`` at horizon ``h`` (1-based); NaN beyond the horizon."""
        values = np.asarray(getattr(self, metric))
        return float(values[h - 1]) if 1 <= h <= values.size else float("nan")

    def summary(self) -> dict[str, Any]:
        """Headline numbers: correlation, errors at horizons 1/10/20/50, steps under 10%."""
        out: dict[str, Any] = {"spearman": _json_number(self.spearman),
                               "spearman_per_h_mean": _json_number(np.nanmean(
                                   self.spearman_per_h)) if np.isfinite(
                                   self.spearman_per_h).any() else None,
                               "horizon_under_10pct": self.horizon_under(0.1)}
        for h in (1, 10, 20, 50):
            if h <= self.horizon:
                out[f"relative_error_h{h}"] = _json_number(self.at("relative_error", h))
                out[f"normalized_rmse_h{h}"] = _json_number(self.at("normalized_rmse", h))
        return out

    def to_dict(self, include_pairs: bool = False) -> dict[str, Any]:
        """JSON-able dict (non-finite numbers become ``null``); pairs only when asked."""
        out: dict[str, Any] = {
            "horizon": self.horizon, "num_samples": self.num_samples,
            "num_starts": self.num_starts, "num_episodes": self.num_episodes,
            "deterministic": self.deterministic,
            "spearman": _json_number(self.spearman),
            "scale": [_json_number(v) for v in np.asarray(self.scale).reshape(-1)],
            "summary": self.summary(),
        }
        for key in PER_HORIZON_KEYS:
            out[key] = [_json_number(v) for v in np.asarray(getattr(self, key))]
        if include_pairs and self.pair_error is not None and self.pair_spread is not None:
            out["pair_error"] = [[_json_number(v) for v in row] for row in self.pair_error]
            out["pair_spread"] = [[_json_number(v) for v in row] for row in self.pair_spread]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FidelityResult:
        """Inverse of :meth:`to_dict`."""
        try:
            later = ("relative_state_error", "coverage_90", "crps")
            arrays = {key: _from_json(data[key]) for key in PER_HORIZON_KEYS if key not in later}
            # Results written before these metrics existed read back with NaNs for them.
            for key in later:
                arrays[key] = _from_json(data.get(key, [None] * len(data["mae"])))
            pairs = {key: np.asarray([_from_json(row) for row in data[key]]) if key in data
                     else None for key in ("pair_error", "pair_spread")}
            return cls(horizon=int(data["horizon"]), num_samples=int(data["num_samples"]),
                       num_starts=int(data["num_starts"]),
                       num_episodes=int(data["num_episodes"]),
                       deterministic=bool(data["deterministic"]),
                       scale=_from_json(data["scale"]),
                       spearman=float("nan") if data["spearman"] is None else float(
                           data["spearman"]),
                       **arrays, **pairs)
        except KeyError as exc:
            raise DataError(f"fidelity result: missing key {exc.args[0]!r}") from exc


def write_fidelity_json(results: Mapping[str, FidelityResult] | FidelityResult,
                        path: str | os.PathLike, *, include_pairs: bool = False,
                        extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``{label: result.to_dict()}`` (plus ``extra`` keys) as indented JSON, atomically."""
    if isinstance(results, FidelityResult):
        results = {"model": results}
    payload: dict[str, Any] = {"results": {label: r.to_dict(include_pairs)
                                           for label, r in results.items()}}
    payload.update(extra or {})
    path = Path(path)
    atomic_write_text(path, json.dumps(payload, indent=2, allow_nan=False))
    return path


# -- open-loop fidelity --------------------------------------------------------------------------
def _starts(rows: int, horizon: int, per_episode: int) -> np.ndarray:
    last = rows - 1 - horizon  # the window obs[s .. s + H] must fit in the episode
    if last < 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.rint(np.linspace(0, last, per_episode)).astype(np.int64))


def _as_float(obs: np.ndarray) -> np.ndarray:
    obs = np.asarray(obs)
    if obs.dtype == np.uint8:
        return obs.astype(np.float64) / 255.0
    return obs.astype(np.float64)


@torch.no_grad()
def open_loop_fidelity(model: Any, episodes: Sequence[Mapping[str, np.ndarray]],
                       horizon: int = 50, num_samples: int | None = None,
                       starts_per_episode: int = 8, *, seed: int = 0,
                       deterministic: bool = False, batch_size: int = 256,
                       on_batch: Callable[[int, int], None] | None = None) -> FidelityResult:
    """Fidelity of ``horizon``-step open-loop rollouts along ``episodes``.

    Args:
        model: a world model (``imagine`` or the one-step contract; see the module docstring).
        episodes: dicts of the episode schema (``obs [L + 1, ...]``, ``actions [L + 1, A]``
            whose row ``t`` led to ``obs[t]``); episodes shorter than ``horizon`` steps are
            skipped.
        horizon: ``H`` imagined steps per start.
        num_samples: ``K`` rollouts per start (default: the ensemble size when the model has
            one, else 5).
        starts_per_episode: start points spread evenly over each episode's valid range
            ``0 .. L - H`` (fewer when the range is shorter).
        seed: seed of the rollouts' random generator.
        deterministic: rollouts without sampling (spread and correlations become 0 / NaN).
        batch_size: starts imagined together (memory: ``K * batch * (H + 1) * D`` floats).
        on_batch: called as ``on_batch(starts_done, starts_total)`` after every batch.

    Raises:
        DataError: no episode holds ``horizon + 1`` rows, or an episode is malformed.
    """
    if int(horizon) != horizon or horizon < 1:
        raise ConfigError(f"horizon: got {horizon!r}, expected an integer >= 1")
    if int(starts_per_episode) != starts_per_episode or starts_per_episode < 1:
        raise ConfigError(f"starts_per_episode: got {starts_per_episode!r}, expected >= 1")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ConfigError(f"batch_size: got {batch_size!r}, expected an integer >= 1")
    H = int(horizon)
    K = int(num_samples) if num_samples is not None else (_ensemble_size(model) or 5)
    if K < 1:
        raise ConfigError(f"num_samples: got {num_samples!r}, expected an integer >= 1")
    if not episodes:
        raise DataError("episodes: got an empty list, expected at least one episode")

    windows_obs, windows_act, used, longest = [], [], 0, 0
    all_obs = []
    for i, episode in enumerate(episodes):
        if "obs" not in episode or "actions" not in episode:
            raise DataError(f"episodes[{i}]: missing 'obs' or 'actions'; expected episode dicts "
                            "of worldflux.data.episodes' schema")
        obs, actions = np.asarray(episode["obs"]), np.asarray(episode["actions"], np.float32)
        if actions.ndim != 2 or actions.shape[0] != obs.shape[0]:
            raise DataError(f"episodes[{i}]: actions shape {actions.shape}, expected "
                            f"[{obs.shape[0]}, A] (one row per observation)")
        longest = max(longest, obs.shape[0] - 1)
        starts = _starts(obs.shape[0], H, int(starts_per_episode))
        if starts.size == 0:
            continue
        used += 1
        all_obs.append(_as_float(obs).reshape(obs.shape[0], -1))
        for s in starts:
            windows_obs.append(obs[s:s + H + 1])
            windows_act.append(actions[s + 1:s + H + 1])
    if not windows_obs:
        raise DataError(f"episodes: the longest has {longest} steps, expected at least "
                        f"horizon={H}; collect longer episodes or lower the horizon")
    data = np.concatenate(all_obs, 0)
    scale = data.std(0)
    scale = np.where(scale > SCALE_FLOOR, scale, 1.0)

    device = model.device if isinstance(getattr(model, "device", None), torch.device) else \
        torch.device("cpu")
    generator = torch.Generator(device=device).manual_seed(int(seed))
    obs_dtype = torch.uint8 if np.asarray(windows_obs[0]).dtype == np.uint8 else torch.float32
    image_scale = 255.0 if obs_dtype == torch.uint8 else 1.0
    N = len(windows_obs)
    per_pair: dict[str, list[np.ndarray]] = {k: [] for k in (
        "abs", "sq", "nerr", "enorm", "change", "snorm", "spread", "nspread", "inside",
        "crps")}
    for lo in range(0, N, int(batch_size)):
        real = np.stack(windows_obs[lo:lo + batch_size])  # [b, H + 1, *obs]
        acts = torch.as_tensor(np.stack(windows_act[lo:lo + batch_size]), device=device)
        first = torch.as_tensor(real[:, 0], device=device).to(obs_dtype)
        samples = imagine_rollouts(model, first, acts, K, generator=generator,
                                   deterministic=deterministic)
        b = real.shape[0]
        pred = samples.double().cpu().numpy().reshape(K, b, H + 1, -1) / image_scale
        truth = _as_float(real).reshape(b, H + 1, -1)
        mean = pred.mean(0)
        err = mean[:, 1:] - truth[:, 1:]  # [b, H, D]
        std = pred[:, :, 1:].std(0)  # ddof = 0
        per_pair["abs"].append(np.abs(err).mean(-1))
        per_pair["sq"].append((err ** 2).mean(-1))
        per_pair["nerr"].append(np.sqrt(((err / scale) ** 2).mean(-1)))
        per_pair["enorm"].append(np.linalg.norm(err, axis=-1))
        per_pair["change"].append(np.linalg.norm(truth[:, 1:] - truth[:, :1], axis=-1))
        per_pair["snorm"].append(np.linalg.norm(truth[:, 1:], axis=-1))
        per_pair["spread"].append(std.mean(-1))
        per_pair["nspread"].append((std / scale).mean(-1))
        low, high = np.quantile(pred[:, :, 1:], [0.05, 0.95], axis=0)  # [b, H, D] each
        per_pair["inside"].append(((truth[:, 1:] >= low) & (truth[:, 1:] <= high)).mean(-1))
        per_pair["crps"].append(_crps(pred[:, :, 1:] / scale, truth[:, 1:] / scale).mean(-1))
        if on_batch is not None:
            on_batch(min(lo + b, N), N)
    pairs = {k: np.concatenate(v, 0) for k, v in per_pair.items()}  # each [N, H]
    enorm, change = pairs["enorm"], pairs["change"]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(change > 0, enorm / np.where(change > 0, change, 1.0),
                         np.where(enorm > 0, np.inf, 0.0))
        pooled = enorm.sum(0) / change.sum(0)
        snorm = pairs["snorm"]
        state_ratio = np.where(snorm > 0, enorm / np.where(snorm > 0, snorm, 1.0),
                               np.where(enorm > 0, np.inf, 0.0))
    mse = pairs["sq"].mean(0)
    nerr, nspread = pairs["nerr"], pairs["nspread"]
    return FidelityResult(
        horizon=H, num_samples=K, num_starts=N, num_episodes=used,
        deterministic=bool(deterministic), scale=scale,
        mae=pairs["abs"].mean(0), mse=mse, rmse=np.sqrt(mse),
        normalized_rmse=np.sqrt((nerr ** 2).mean(0)),
        relative_error=np.median(ratio, axis=0), relative_error_pooled=pooled,
        relative_state_error=np.median(state_ratio, axis=0),
        spread=pairs["spread"].mean(0), normalized_spread=nspread.mean(0),
        spearman_per_h=np.asarray([spearman(nspread[:, h], nerr[:, h]) for h in range(H)]),
        spearman=spearman(nspread, nerr), coverage_90=pairs["inside"].mean(0),
        crps=pairs["crps"].mean(0),
        pair_error=nerr, pair_spread=nspread,
    )


def _crps(samples: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """CRPS of the empirical distribution of ``samples [K, ...]`` at ``truth [...]``:
    ``mean_k |x_k - y| - mean_{k, l} |x_k - x_l| / 2``, the second term from the sorted samples
    (``sum_i (2i - K - 1) x_(i) / K^2``, i = 1..K) instead of all K^2 pairs."""
    K = samples.shape[0]
    first = np.abs(samples - truth[None]).mean(0)
    weights = (2.0 * np.arange(1, K + 1) - K - 1).reshape(-1, *([1] * truth.ndim))
    return first - (weights * np.sort(samples, axis=0)).sum(0) / K ** 2


# -- out of distribution -------------------------------------------------------------------------
@dataclass
class OODResult:
    """Fidelity of models on in-distribution and perturbed (OOD) episodes of the same seeds.

    The robustness ratio of a model is ``mean_h rmse_ood[h] / mean_h rmse_in[h]`` (raw units,
    horizons ``1..H``): how many times larger its open-loop error gets under the
    perturbation (1 = unaffected; lower is more robust).
    """

    env_options: dict[str, Any]
    """The perturbation (``make`` kwargs and ``unwrapped.*`` attributes)."""
    in_env_options: dict[str, Any]
    """Options of the in-distribution episodes (usually none)."""
    in_distribution: dict[str, FidelityResult]
    """Label -> fidelity on the in-distribution episodes."""
    out_of_distribution: dict[str, FidelityResult]
    """Label -> fidelity on the perturbed episodes."""

    def robustness_ratio(self, label: str) -> float:
        """``mean_h rmse_ood / mean_h rmse_in`` of model ``label``."""
        if label not in self.in_distribution:
            raise ConfigError(f"label: got {label!r}, expected one of "
                              f"{sorted(self.in_distribution)}")
        inside = float(np.mean(self.in_distribution[label].rmse))
        outside = float(np.mean(self.out_of_distribution[label].rmse))
        return outside / inside if inside > 0 else float("inf")

    def ratios(self) -> dict[str, float]:
        """Label -> robustness ratio."""
        return {label: self.robustness_ratio(label) for label in self.in_distribution}

    def ratio_per_h(self, label: str) -> np.ndarray:
        """``[H]`` ``rmse_ood[h] / rmse_in[h]`` of model ``label``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.out_of_distribution[label].rmse / self.in_distribution[label].rmse

    def compare(self, a: str, b: str) -> dict[str, Any]:
        """Robustness of model ``a`` against model ``b``; see :func:`compare_robustness`."""
        return compare_robustness(self, a, b)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: options, ratios, and both fidelity results of every model."""
        return {
            "env_options": dict(self.env_options), "in_env_options": dict(self.in_env_options),
            "robustness_ratio": {k: _json_number(v) for k, v in self.ratios().items()},
            "in_distribution": {k: r.to_dict() for k, r in self.in_distribution.items()},
            "out_of_distribution": {k: r.to_dict() for k, r in self.out_of_distribution.items()},
        }


def compare_robustness(result: OODResult, a: str, b: str) -> dict[str, Any]:
    """Which of two models (e.g. stochastic ``a`` vs deterministic ``b``) degrades less OOD.

    Returns:
        ``{"a", "b", "ratio_a", "ratio_b", "a_over_b": ratio_a / ratio_b (below 1: a is more
        robust), "ood_rmse_a_over_b": mean OOD RMSE of a over that of b, "ood_coverage_90_a"
        / "_b": mean OOD share of real values inside each model's 90% sample range (how
        well each knows what it does not know), "ood_crps_a_over_b": mean OOD CRPS of a over
        that of b (the whole predictive distribution scored, mean and spread; below 1: a
        predicts the perturbed system better), "more_robust": the label with the smaller
        ratio}``.
    """
    ratio_a, ratio_b = result.robustness_ratio(a), result.robustness_ratio(b)
    ood_b = float(np.mean(result.out_of_distribution[b].rmse))
    ood_a = float(np.mean(result.out_of_distribution[a].rmse))

    def coverage(label: str) -> float | None:
        values = np.asarray(result.out_of_distribution[label].coverage_90, dtype=float)
        return float(np.nanmean(values)) if np.isfinite(values).any() else None

    return {"a": a, "b": b, "ratio_a": ratio_a, "ratio_b": ratio_b,
            "a_over_b": ratio_a / ratio_b if ratio_b > 0 else float("inf"),
            "ood_rmse_a_over_b": ood_a / ood_b if ood_b > 0 else float("inf"),
            "ood_coverage_90_a": coverage(a), "ood_coverage_90_b": coverage(b),
            "ood_crps_a_over_b": _mean_ratio(result.out_of_distribution[a].crps,
                                             result.out_of_distribution[b].crps),
            "more_robust": a if ratio_a <= ratio_b else b}


def _mean_ratio(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not (np.isfinite(a).any() and np.isfinite(b).any()) or np.nanmean(b) <= 0:
        return None
    return float(np.nanmean(a) / np.nanmean(b))


def ood_split(models: Mapping[str, Any] | Any, env: Any, env_options: Mapping[str, Any], *,
              policy: Any = "random", episodes: int = 5, seed: int = HELDOUT_SEED_OFFSET,
              max_steps: int | None = None, in_env_options: Mapping[str, Any] | None = None,
              horizon: int = 50, num_samples: int | None = None, starts_per_episode: int = 8,
              fidelity_seed: int = 0,
              on_step: Callable[[int, bool], None] | None = None) -> OODResult:
    """Open-loop fidelity on in-distribution and on perturbed episodes of the same seeds.

    Both episode sets start from the same resets (``seed + i``) and, with the random policy,
    take the same actions, so only the dynamics differ.

    Args:
        models: a model or ``{label: model}`` (wrap one in :func:`deterministic` to compare a
            stochastic model with its deterministic self).
        env: env id, ``TrainConfig`` or factory (see :func:`collect_episodes`).
        env_options: the perturbation, e.g. ``{"g": 15.0}`` (Pendulum-v1 gravity),
            ``{"unwrapped.m": 1.5}`` (its mass), ``{"wind": 0.5}`` (an env that takes it).
        policy, episodes, seed, max_steps: as in :func:`collect_episodes`.
        in_env_options: options of the in-distribution episodes (default: none).
        horizon, num_samples, starts_per_episode: as in :func:`open_loop_fidelity`.
        fidelity_seed: seed of the rollouts' sampling.
        on_step: progress callback of the episode collection.
    """
    if not isinstance(env_options, Mapping) or not env_options:
        raise ConfigError(f"env_options: got {env_options!r}, expected a non-empty dict "
                          "describing the perturbation (e.g. {'g': 15.0})")
    labelled = dict(models) if isinstance(models, Mapping) else {"model": models}
    common = {"policy": policy, "episodes": episodes, "seed": seed, "max_steps": max_steps,
              "on_step": on_step}
    inside = collect_episodes(env, env_options=in_env_options, **common)
    outside = collect_episodes(env, env_options=env_options, **common)
    options = {"horizon": horizon, "num_samples": num_samples,
               "starts_per_episode": starts_per_episode, "seed": fidelity_seed}
    return OODResult(
        env_options=dict(env_options), in_env_options=dict(in_env_options or {}),
        in_distribution={k: open_loop_fidelity(m, inside, **options)
                         for k, m in labelled.items()},
        out_of_distribution={k: open_loop_fidelity(m, outside, **options)
                             for k, m in labelled.items()},
    )


# -- plots ---------------------------------------------------------------------------------------
def _as_results(results: Mapping[str, FidelityResult] | FidelityResult
                ) -> dict[str, FidelityResult]:
    if isinstance(results, FidelityResult):
        return {"model": results}
    if not results:
        raise DataError("results: got an empty mapping, expected {label: FidelityResult}")
    return dict(results)


def fidelity_figure(results: Mapping[str, FidelityResult] | FidelityResult, *,
                    title: str | None = None, max_points: int = 2000):
    """Figure of relative error, normalised error and spread vs horizon, and a calibration
    scatter (normalised spread vs normalised error of every start and horizon), one colour per
    model (legend: ``rho`` over all pairs)."""
    from worldflux.evaluation.plots import PALETTE, new_figure

    results = _as_results(results)
    figure = new_figure(13.5, 4.0)
    left, middle, right = figure.subplots(1, 3)
    rng = np.random.default_rng(0)
    for i, (label, result) in enumerate(results.items()):
        color = PALETTE[i % len(PALETTE)]
        h = np.arange(1, result.horizon + 1)
        left.plot(h, result.relative_error, color=color, lw=1.6, label=label)
        middle.plot(h, result.normalized_rmse, color=color, lw=1.6, label=f"{label} error")
        if np.any(result.normalized_spread > 0):
            middle.plot(h, result.normalized_spread, color=color, lw=1.2, ls="--",
                        label=f"{label} spread")
        if result.pair_error is not None and result.pair_spread is not None:
            x, y = result.pair_spread.reshape(-1), result.pair_error.reshape(-1)
            keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
            x, y = x[keep], y[keep]
            if x.size > max_points:
                pick = rng.choice(x.size, max_points, replace=False)
                x, y = x[pick], y[pick]
            rho = "n/a" if not math.isfinite(result.spearman) else f"{result.spearman:.2f}"
            if x.size:
                right.scatter(x, y, s=5, alpha=0.35, color=color, label=f"{label} (rho {rho})",
                              edgecolors="none")
    left.axhline(0.1, color="#888888", lw=0.8, ls=":", label="10%")
    left.set(xlabel="horizon (steps)", ylabel="relative error (median)",
             title="relative error ||pred - real|| / ||real - start||")
    left.set_yscale("log")
    middle.set(xlabel="horizon (steps)", ylabel="in data std units",
               title="normalised RMSE (solid) and spread (dashed)")
    middle.set_yscale("log")
    right.set(xlabel="predicted spread (std units)", ylabel="actual error (std units)",
              title="calibration: spread vs error")
    if right.collections:
        right.set_xscale("log")
        right.set_yscale("log")
        right.legend(fontsize=8, frameon=False, markerscale=3)
    for ax in (left, middle):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    right.grid(alpha=0.3)
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return figure


def plot_fidelity(results: Mapping[str, FidelityResult] | FidelityResult,
                  path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Write :func:`fidelity_figure` as a PNG at ``path`` (atomically); returns the path."""
    from worldflux.evaluation.plots import save_png

    return save_png(fidelity_figure(results, title=title), path)


def ood_figure(result: OODResult):
    """RMSE vs horizon in (solid) and out of distribution (dashed), one colour per model."""
    from worldflux.evaluation.plots import PALETTE, new_figure

    figure = new_figure(6.5, 4.0)
    ax = figure.subplots()
    for i, label in enumerate(result.in_distribution):
        color = PALETTE[i % len(PALETTE)]
        inside, outside = result.in_distribution[label], result.out_of_distribution[label]
        h = np.arange(1, inside.horizon + 1)
        ratio = result.robustness_ratio(label)
        ax.plot(h, inside.rmse, color=color, lw=1.6, label=f"{label} in-distribution")
        ax.plot(h, outside.rmse, color=color, lw=1.6, ls="--",
                label=f"{label} OOD (x{ratio:.2f})")
    options = ", ".join(f"{k}={v}" for k, v in result.env_options.items())
    ax.set(xlabel="horizon (steps)", ylabel="RMSE", title=f"out of distribution: {options}")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    figure.tight_layout()
    return figure


def plot_ood(result: OODResult, path: str | os.PathLike) -> Path:
    """Write :func:`ood_figure` as a PNG at ``path`` (atomically); returns the path."""
    from worldflux.evaluation.plots import save_png

    return save_png(ood_figure(result), path)
