"""Slice analysis: the mean per-item score of each group of items, with bootstrap intervals,
worst first. Pure functions."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tuneloop.metrics.intervals import Interval, mean_interval

CONFIDENCE_EDGES = (0.6, 0.8, 0.95)


@dataclass(frozen=True)
class Slice:
    dimension: str  # label | meta.FIELD | length | confidence
    value: str
    n: int
    score: Interval  # mean per-item score
    members: tuple[int, ...]  # indices of the items in the slice

    def to_dict(self) -> dict[str, object]:
        return {
            "dimension": self.dimension,
            "value": self.value,
            "n": self.n,
            "score": self.score.to_dict(),
        }


def length_buckets(lengths: Sequence[int], k: int = 4) -> list[str]:
    """Each length's quantile bucket (``k`` buckets at most), named by its range in chars."""
    if not lengths:
        return []
    arr = np.asarray(lengths)
    cuts = np.quantile(arr, np.linspace(0, 1, k + 1)[1:-1])
    edges = [int(e) for e in np.unique(np.floor(cuts))]
    names = [f"<={edges[0]} chars"] if edges else ["all"]
    names += [f"{lo + 1}-{hi} chars" for lo, hi in itertools.pairwise(edges)]
    if edges:
        names.append(f">{edges[-1]} chars")
    index = np.searchsorted(np.asarray(edges), arr, side="left") if edges else np.zeros_like(arr)
    return [names[i] for i in index.tolist()]


def confidence_bucket(confidence: float | None) -> str | None:
    if confidence is None:
        return None
    lo = 0.0
    for edge in CONFIDENCE_EDGES:
        if confidence < edge:
            return f"{lo:.2f}-{edge:.2f}"
        lo = edge
    return f"{lo:.2f}-1.00"


def slices(
    dimension: str,
    keys: Sequence[str | None],
    scores: Sequence[float | None],
    *,
    min_count: int = 1,
    resamples: int = 1000,
    seed: int = 0,
) -> list[Slice]:
    """One slice per distinct key (None keys and None scores left out), worst first."""
    groups: dict[str, list[int]] = {}
    for i, (key, score) in enumerate(zip(keys, scores, strict=True)):
        if key is not None and score is not None:
            groups.setdefault(key, []).append(i)
    out = []
    for key, members in groups.items():
        if len(members) < min_count:
            continue
        values = [float(scores[i]) for i in members]  # type: ignore[arg-type]
        out.append(
            Slice(
                dimension,
                key,
                len(members),
                mean_interval(values, resamples=resamples, seed=seed),
                tuple(members),
            )
        )
    return sorted(out, key=lambda s: (s.score.value, -s.n))
