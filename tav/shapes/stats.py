"""Uncertainty over clips: bootstrap intervals for means and paired differences, and verdicts.

Why: the edits of one clip share its objects, its motion and its tuned model, so they are not
independent samples; intervals therefore resample *clips* (a cluster bootstrap), never single
videos. Comparisons are paired (same clip, same edit, same seed), which removes what the clips
themselves contribute to the spread. A claim holds only when its whole interval lies on its side
of zero, fails when the whole interval lies on the other side, and is undecided otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

CONFIDENCE = 0.95
N_BOOT = 4000
#: a comparison pairs two variants' rows that agree on these fields
PAIR_KEY = ("clip", "prompt", "seed")


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean over videos and its bootstrap interval over clips."""

    mean: float
    lo: float
    hi: float
    videos: int
    clips: int

    def fmt(self, digits: int = 2) -> str:
        """``0.83 [0.78, 0.88]``; the one spelling the report, README and FINDINGS share."""
        return f"{self.mean:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"


def cluster_bootstrap(
    values: Sequence[float],
    clusters: Sequence[Hashable],
    *,
    n_boot: int = N_BOOT,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Interval:
    """Mean of ``values`` with a percentile interval from resampling whole clusters with replacement.

    Each resample's mean pools the videos of the drawn clusters, so clusters with more videos weigh
    more, exactly as in the point estimate. Non-finite values are dropped; with fewer than two
    clusters there is no spread to resample and the interval is NaN (undecided).
    """
    v = np.asarray(values, dtype=float)
    c = np.asarray([str(x) for x in clusters])
    if v.shape != c.shape:
        raise ValueError(f"{len(v)} values but {len(c)} cluster labels")
    keep = np.isfinite(v)
    v, c = v[keep], c[keep]
    if len(v) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, 0)
    ids, inverse = np.unique(c, return_inverse=True)
    sums = np.bincount(inverse, weights=v)
    counts = np.bincount(inverse).astype(float)
    mean = float(sums.sum() / counts.sum())
    if len(ids) < 2:
        return Interval(mean, float("nan"), float("nan"), len(v), len(ids))
    draw = np.random.default_rng(seed).integers(0, len(ids), size=(n_boot, len(ids)))
    boot = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return Interval(mean, float(lo), float(hi), len(v), len(ids))


def paired_differences(
    rows: Sequence[dict[str, Any]],
    a: str,
    b: str,
    value: Callable[[dict[str, Any]], float],
    key: Sequence[str] = PAIR_KEY,
) -> tuple[list[float], list[str]]:
    """``value(a) - value(b)`` for every (clip, edit, seed) both variants ran, and each pair's clip."""
    by_key = {tuple(r[k] for k in key): r for r in rows if r["variant"] == b}
    diffs, clips = [], []
    for r in rows:
        if r["variant"] != a:
            continue
        other = by_key.get(tuple(r[k] for k in key))
        if other is not None:
            diffs.append(value(r) - value(other))
            clips.append(r["clip"])
    return diffs, clips


def paired_interval(
    rows: Sequence[dict[str, Any]], a: str, b: str, value: Callable[[dict[str, Any]], float], **kwargs: Any
) -> Interval:
    """Mean paired difference ``a - b`` with its interval over clips."""
    diffs, clips = paired_differences(rows, a, b, value)
    return cluster_bootstrap(diffs, clips, **kwargs)


def verdict(difference: Interval, sign: int) -> str:
    """Whether "a - b has sign ``sign``" (+1: a is larger) holds, does not hold, or is undecided."""
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign}")
    lo, hi = sorted((sign * difference.lo, sign * difference.hi))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "undecided"
    if lo > 0:
        return "holds"
    if hi < 0:
        return "does not hold"
    return "undecided"
