"""Agreement between raters: Krippendorff's alpha over all raters (with a bootstrap interval
over items) and Cohen's kappa for every pair of raters.

``ratings`` has one row per item and one column per rater; None, NaN and '' are missing.
Values are numbers or strings. Nominal strings are coded to integers; ordinal (and interval)
strings need ``value_order`` and are placed at 1..k in that order; numbers keep their values
(or, given ``value_order``, their position in it for nominal and ordinal data, which leaves
alpha unchanged for any order-preserving ``value_order``).

The point alpha is ``krippendorff.alpha(reliability_data=<raters x items>,
level_of_measurement=level)``. Kappa is ``sklearn.metrics.cohen_kappa_score`` on the items both
raters rated, unweighted for nominal data, linearly weighted for ordinal data, quadratically
for interval and ratio data, with the whole value scale as its labels. Undefined values
(one value only, no item rated twice) are NaN here and null in ``to_dict``, with a note.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Literal, cast

import numpy as np

from tuneloop.metrics.intervals import (
    FloatArray,
    IntArray,
    Interval,
    _num,
    check_bootstrap,
    over_resamples,
    percentile_interval,
    resample_counts,
)

LEVELS = ("nominal", "ordinal", "interval", "ratio")
KAPPA_WEIGHTS: dict[str, str | None] = {
    "nominal": None,
    "ordinal": "linear",
    "interval": "quadratic",
    "ratio": "quadratic",
}
_NAN = math.nan


@dataclass(frozen=True)
class PairAgreement:
    a: str  # rater names
    b: str
    n: int  # items both rated
    kappa: float  # Cohen's kappa (weighted by level); NaN when undefined
    observed: float  # fraction of those items with identical ratings

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "n": self.n,
            "kappa": _num(self.kappa),
            "observed": _num(self.observed),
        }


@dataclass(frozen=True)
class Agreement:
    alpha: Interval  # Krippendorff's alpha; NaN when undefined (see notes)
    n_items: int  # items with two or more ratings
    n_raters: int
    level: str
    pairs: list[PairAgreement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raters: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "alpha": self.alpha.to_dict(),
            "n_items": self.n_items,
            "n_raters": self.n_raters,
            "raters": list(self.raters),
            "pairs": [p.to_dict() for p in self.pairs],
            "notes": list(self.notes),
        }


def is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value == ""
    return isinstance(value, float | np.floating) and bool(np.isnan(value))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating)


def code_ratings(
    ratings: Sequence[Sequence[object | None]],
    level: str,
    value_order: Sequence[object] | None,
    n_raters: int,
) -> tuple[FloatArray, FloatArray | None, list[str]]:
    """Ratings as floats (items x raters, NaN for missing); the codes of the whole scale when
    ``value_order`` gave it; and notes on how the values were coded."""
    notes: list[str] = []
    present: list[Any] = [v for row in ratings for v in row if not is_missing(v)]
    numeric = all(_is_number(v) for v in present)
    code: dict[Any, float] | None = None
    scale = None
    if value_order is not None:
        order = list(value_order)
        if len(set(order)) != len(order):
            raise ValueError(f"value_order has duplicates: {order}")
        known = set(order)
        unknown = sorted({repr(v) for v in present if v not in known})
        if unknown:
            raise ValueError(f"ratings {', '.join(unknown)} are not in value_order {order}")
        if not (numeric and level in ("interval", "ratio")):
            code = {v: float(i + 1) for i, v in enumerate(order)}
            scale = np.arange(1.0, len(order) + 1.0)
            if level in ("interval", "ratio"):
                notes.append(f"{level} ratings placed at 1..{len(order)} in value_order")
    elif not numeric:
        if level != "nominal":
            raise ValueError(
                f"{level} ratings that are not all numbers need value_order "
                "(the values from lowest to highest)"
            )
        distinct = sorted(set(present), key=repr)
        code = {v: float(i) for i, v in enumerate(distinct)}

    def value(v: Any) -> float:
        if is_missing(v):
            return _NAN
        return code[v] if code is not None else float(v)

    data = np.full((len(ratings), n_raters), _NAN)
    for i, row in enumerate(ratings):
        data[i] = [value(v) for v in row]
    return data, scale, notes


def distances(domain: FloatArray, level: str, n_v: FloatArray) -> FloatArray:
    """Krippendorff's squared distances between domain values: (V, V), or (R, V, V) for
    ordinal data, whose distances depend on the value frequencies ``n_v`` (R, V)."""
    a, b = domain[:, None], domain[None, :]
    if level == "nominal":
        return np.asarray(a != b, dtype=np.float64)
    if level == "interval":
        return np.asarray((a - b) ** 2, dtype=np.float64)
    if level == "ratio":
        total = a + b
        ratio = np.zeros(np.broadcast(a, b).shape, dtype=np.float64)
        np.divide(a - b, total, out=ratio, where=total != 0)
        return np.asarray(ratio**2, dtype=np.float64)
    i = np.arange(domain.size)
    lo, hi = np.minimum(i[:, None], i[None, :]), np.maximum(i[:, None], i[None, :])
    cum = np.concatenate([np.zeros((n_v.shape[0], 1)), np.cumsum(n_v, axis=1)], axis=1)
    between = cum[:, hi + 1] - cum[:, lo]
    return np.asarray(
        (between - (n_v[:, i][:, :, None] + n_v[:, i][:, None, :]) / 2) ** 2, dtype=np.float64
    )


def resampled_alpha(
    value_counts: IntArray, domain: FloatArray, level: str, idx: IntArray
) -> FloatArray:
    """Krippendorff's alpha of every resample of items (rows of ``idx``), vectorised.

    ``value_counts`` (N, V): how many raters gave each domain value to each item, for items
    with two or more ratings. Coincidences add up over items, so each resample's coincidence
    matrix is a weighted sum of the items' ones. NaN where alpha is undefined."""
    vc = np.asarray(value_counts, dtype=np.float64)
    n_items, n_values = vc.shape
    weights = resample_counts(idx, n_items) / (vc.sum(axis=1) - 1)[None, :]
    o = np.empty((idx.shape[0], n_values, n_values))
    step = max(1, 4_000_000 // max(1, n_items * n_values))
    diag = np.arange(n_values)
    for start in range(0, idx.shape[0], step):
        w = weights[start : start + step]
        block = np.matmul((w[:, :, None] * vc[None]).transpose(0, 2, 1), vc)
        block[:, diag, diag] -= w @ vc
        o[start : start + step] = block
    n_v = o.sum(axis=1)
    e = n_v[:, :, None] * n_v[:, None, :]
    e[:, diag, diag] -= n_v
    e /= (n_v.sum(axis=1) - 1)[:, None, None]
    d = distances(domain, level, n_v)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 1 - (o * d).sum(axis=(1, 2)) / (e * d).sum(axis=(1, 2))
    return np.asarray(out, dtype=np.float64)


def _kappa(y1: FloatArray, y2: FloatArray, labels: FloatArray, weights: str | None) -> float:
    from sklearn.metrics import cohen_kappa_score

    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")  # undefined kappa: NaN, explained in a note
        return float(cohen_kappa_score(y1, y2, labels=labels, weights=weights))


def agreement(
    ratings: Sequence[Sequence[object | None]],
    level: str = "nominal",
    *,
    rater_names: Sequence[str] | None = None,
    value_order: Sequence[object] | None = None,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Agreement:
    """Krippendorff's alpha of all raters with a bootstrap interval over items, and Cohen's
    kappa of every rater pair with two or more items in common."""
    import krippendorff

    check_bootstrap(resamples, confidence)
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    widths = {len(row) for row in ratings}
    if len(widths) > 1:
        raise ValueError(f"every item needs one rating cell per rater; rows have {sorted(widths)}")
    n_raters = widths.pop() if widths else len(rater_names or [])
    names = list(rater_names) if rater_names is not None else []
    if rater_names is None:
        names = [f"rater {i + 1}" for i in range(n_raters)]
    if len(names) != n_raters:
        raise ValueError(f"{len(names)} rater names for {n_raters} raters")

    data, scale, notes = code_ratings(ratings, level, value_order, n_raters)  # items x raters
    rated = ~np.isnan(data)
    pairable = rated.sum(axis=1) >= 2
    n_items = int(pairable.sum())
    domain = np.unique(data[rated])
    labels = domain if scale is None else scale

    alpha = Interval(_NAN, _NAN, _NAN)
    if n_items == 0:
        notes.append("no item has ratings from two raters: alpha is undefined")
    elif domain.size < 2:
        notes.append(
            "every rating has the same value: alpha is undefined (nothing varies to agree on)"
        )
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            lom = cast(Literal["nominal", "ordinal", "interval", "ratio"], level)
            value = float(krippendorff.alpha(reliability_data=data.T, level_of_measurement=lom))
        counts = (data[pairable][:, :, None] == domain[None, None, :]).sum(axis=1)
        samples = over_resamples(
            n_items, resamples, seed, lambda idx: resampled_alpha(counts, domain, level, idx)
        )
        alpha = percentile_interval(value, samples, confidence)
        if math.isnan(value):
            notes.append(
                "the ratings of items rated twice or more all have one value: alpha is "
                "undefined (no expected disagreement)"
            )

    pairs = []
    for i, j in combinations(range(n_raters), 2):
        both = rated[:, i] & rated[:, j]
        n = int(both.sum())
        if n < 2:
            continue
        y1, y2 = data[both, i], data[both, j]
        kappa = _kappa(y1, y2, labels, KAPPA_WEIGHTS[level])
        if math.isnan(kappa):
            notes.append(
                f"kappa of {names[i]} and {names[j]} is undefined (chance agreement is "
                "complete: they used one and the same value)"
            )
        pairs.append(PairAgreement(names[i], names[j], n, kappa, float(np.mean(y1 == y2))))
    if n_raters >= 2 and not pairs:
        notes.append("no pair of raters shares two or more items: no kappa")
    return Agreement(alpha, n_items, n_raters, level, pairs, notes, names)
