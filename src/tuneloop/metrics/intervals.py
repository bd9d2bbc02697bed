"""Bootstrap intervals over items, paired comparisons of two systems, McNemar's exact test.

The bootstrap resamples *items* with replacement (``numpy.random.default_rng(seed)``), so the
same seed gives the same interval. Intervals use the percentile method; resamples on which a
metric is undefined (NaN) are left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _num(x: float) -> float | None:
    """A float for JSON: NaN (undefined) becomes None."""
    return None if math.isnan(x) else float(x)


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


@dataclass(frozen=True)
class Interval:
    """A point value and its bootstrap interval. NaN means undefined."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float | None]:
        """``{"value", "low", "high"}``, with None where undefined (JSON has no NaN)."""
        return {"value": _num(self.value), "low": _num(self.low), "high": _num(self.high)}

    def format(self, digits: int = 3) -> str:
        return f"{_fmt(self.value, digits)} [{_fmt(self.low, digits)}, {_fmt(self.high, digits)}]"

    def __str__(self) -> str:
        return self.format()


def check_bootstrap(resamples: int, confidence: float) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")


def bootstrap_indices(n: int, resamples: int, seed: int) -> IntArray:
    """``resamples`` rows of ``n`` item indices drawn with replacement: shape (resamples, n)."""
    if n < 0 or resamples < 0:
        raise ValueError(f"n and resamples must be >= 0, got n={n}, resamples={resamples}")
    rng = np.random.default_rng(seed)
    if n == 0:
        return np.zeros((resamples, 0), dtype=np.int64)
    return rng.integers(0, n, size=(resamples, n), dtype=np.int64)


def index_blocks(n: int, resamples: int, seed: int, max_cells: int = 1 << 22) -> Iterator[IntArray]:
    """``bootstrap_indices(n, resamples, seed)`` in blocks of rows of at most ``max_cells``
    indices (the same rows: one generator, drawn in order), so memory stays bounded."""
    rng = np.random.default_rng(seed)
    per = max(1, max_cells // max(n, 1))
    for start in range(0, resamples, per):
        rows = min(per, resamples - start)
        if n == 0:
            yield np.zeros((rows, 0), dtype=np.int64)
        else:
            yield rng.integers(0, n, size=(rows, n), dtype=np.int64)


def over_resamples(
    n: int, resamples: int, seed: int, statistic: Callable[[IntArray], npt.NDArray[Any]]
) -> npt.NDArray[Any]:
    """``statistic`` of every resample (it maps a block of index rows to one result per row),
    computed block by block and stacked: the same as ``statistic(bootstrap_indices(...))``."""
    return np.concatenate([statistic(idx) for idx in index_blocks(n, resamples, seed)])


def resample_counts(indices: IntArray, n: int) -> IntArray:
    """How often each item occurs in each resample: shape (resamples, n).

    ``counts @ per_item_stats`` sums additive statistics of every resample in one product."""
    r = indices.shape[0]
    offsets = (np.arange(r, dtype=np.int64) * n)[:, None]
    flat = np.bincount((indices + offsets).ravel(), minlength=r * n)
    return flat.reshape(r, n).astype(np.int64)


def percentile_interval(value: float, samples: Any, confidence: float = 0.95) -> Interval:
    """The percentile bootstrap interval of ``samples`` around ``value``; NaN samples ignored
    (and a NaN interval when every sample is NaN)."""
    check_bootstrap(1, confidence)
    arr = np.asarray(samples, dtype=np.float64).ravel()
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return Interval(float(value), math.nan, math.nan)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(arr, [tail, 100.0 - tail])
    return Interval(float(value), float(low), float(high))


def mean_interval(
    scores: Sequence[float], *, resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> Interval:
    """The mean of per-item scores with a bootstrap interval over items (NaN when empty)."""
    check_bootstrap(resamples, confidence)
    x = np.asarray(scores, dtype=np.float64)
    if x.size == 0:
        return Interval(math.nan, math.nan, math.nan)
    samples = over_resamples(x.size, resamples, seed, lambda idx: x[idx].mean(axis=1))
    return percentile_interval(float(x.mean()), samples, confidence)


@dataclass(frozen=True)
class PairedDifference:
    """System B minus system A on the same items."""

    diff: Interval  # mean of b - a
    p_value: float  # two-sided paired bootstrap
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"diff": self.diff.to_dict(), "p_value": _num(self.p_value), "n": self.n}


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedDifference:
    """Paired bootstrap of the mean per-item difference ``b - a``.

    The p-value is two-sided: twice the fraction of resampled mean differences on the other
    side of zero from the observed one (zero counts as the other side), capped at 1."""
    check_bootstrap(resamples, confidence)
    xa = np.asarray(a, dtype=np.float64)
    xb = np.asarray(b, dtype=np.float64)
    if xa.shape != xb.shape:
        raise ValueError(f"paired scores need equal lengths, got {xa.size} and {xb.size}")
    n = int(xa.size)
    if n == 0:
        return PairedDifference(Interval(math.nan, math.nan, math.nan), math.nan, 0)
    d = xb - xa
    observed = float(d.mean())
    samples = over_resamples(n, resamples, seed, lambda idx: d[idx].mean(axis=1))
    if observed > 0:
        other = float(np.mean(samples <= 0))
    elif observed < 0:
        other = float(np.mean(samples >= 0))
    else:
        other = 1.0
    p = min(1.0, 2.0 * other)
    return PairedDifference(percentile_interval(observed, samples, confidence), p, n)


@dataclass(frozen=True)
class McNemar:
    """McNemar's test on paired right/wrong outcomes."""

    only_a: int  # items A got right and B got wrong
    only_b: int  # items B got right and A got wrong
    p_value: float  # exact: two-sided binomial test on the discordant pairs
    statistic: float  # chi-square with continuity correction (for display)
    n: int = 0  # paired items

    def to_dict(self) -> dict[str, Any]:
        return {
            "only_a": self.only_a,
            "only_b": self.only_b,
            "p_value": self.p_value,
            "statistic": self.statistic,
            "n": self.n,
        }


def mcnemar(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> McNemar:
    """Exact McNemar test: ``scipy.stats.binomtest(min(only_a, only_b), only_a + only_b, 0.5)``
    (two-sided); p = 1 when no pair is discordant."""
    from scipy.stats import binomtest

    if len(a_correct) != len(b_correct):
        raise ValueError(
            f"paired outcomes need equal lengths, got {len(a_correct)} and {len(b_correct)}"
        )
    only_a = sum(1 for x, y in zip(a_correct, b_correct, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a_correct, b_correct, strict=True) if y and not x)
    discordant = only_a + only_b
    if discordant == 0:
        return McNemar(0, 0, 1.0, 0.0, len(a_correct))
    p = float(binomtest(min(only_a, only_b), discordant, 0.5).pvalue)
    statistic = max(abs(only_a - only_b) - 1, 0) ** 2 / discordant
    return McNemar(only_a, only_b, min(p, 1.0), float(statistic), len(a_correct))
