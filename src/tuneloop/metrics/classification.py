"""Classification against gold labels: accuracy, per-class and averaged precision, recall and
F1, and the confusion matrix, each with a bootstrap interval over items.

Point values are scikit-learn's (``accuracy_score``, ``precision_recall_fscore_support`` with
``zero_division=0``, ``confusion_matrix``). The bootstrap builds the confusion matrix of every
resample at once with ``np.bincount`` and derives all metrics from it vectorised
(``confusion_scores``), which the tests hold equal to scikit-learn.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuneloop.metrics.intervals import (
    FloatArray,
    IntArray,
    Interval,
    check_bootstrap,
    over_resamples,
    percentile_interval,
)

NO_ANSWER = "<no answer>"
"""The column of predictions outside the label set (None: no answer); always wrong."""

AVERAGES = ("precision", "recall", "f1")


@dataclass(frozen=True)
class ClassScores:
    precision: Interval
    recall: Interval
    f1: Interval
    support: int  # gold items of this class

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision.to_dict(),
            "recall": self.recall.to_dict(),
            "f1": self.f1.to_dict(),
            "support": self.support,
        }


@dataclass(frozen=True)
class ClassificationMetrics:
    n: int
    labels: list[str]
    accuracy: Interval
    per_class: dict[str, ClassScores]
    macro: dict[str, Interval]  # precision / recall / f1
    micro: dict[str, Interval]
    confusion: list[list[int]]  # rows: gold in `labels` order; columns: `columns`
    columns: list[str]  # labels, + NO_ANSWER when a prediction fell outside them
    no_answer: int = 0  # predictions outside the labels (None included)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "labels": list(self.labels),
            "accuracy": self.accuracy.to_dict(),
            "per_class": {k: v.to_dict() for k, v in self.per_class.items()},
            "macro": {k: v.to_dict() for k, v in self.macro.items()},
            "micro": {k: v.to_dict() for k, v in self.micro.items()},
            "confusion": [list(row) for row in self.confusion],
            "columns": list(self.columns),
            "no_answer": self.no_answer,
        }


def _divide(num: FloatArray, den: FloatArray) -> FloatArray:
    """num / den, 0 where den is 0 (scikit-learn's ``zero_division=0``)."""
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def confusion_scores(cms: IntArray) -> dict[str, FloatArray]:
    """All metrics of a stack of confusion matrices, vectorised.

    ``cms`` has shape (R, L, K): rows are the L gold labels, columns the L labels and, when
    K = L + 1, the no-answer column last. Returns ``accuracy`` (R,), per-class ``precision``,
    ``recall``, ``f1`` (R, L), and ``macro_*`` / ``micro_*`` (R,) for each of the three."""
    c: FloatArray = np.asarray(cms, dtype=np.float64)
    n_labels = c.shape[1]
    tp = np.diagonal(c[:, :, :n_labels], axis1=1, axis2=2)
    support = c.sum(axis=2)
    predicted = c[:, :, :n_labels].sum(axis=1)
    out: dict[str, FloatArray] = {
        "accuracy": _divide(tp.sum(axis=1), c.sum(axis=(1, 2))),
        "precision": _divide(tp, predicted),
        "recall": _divide(tp, support),
        "f1": _divide(2 * tp, support + predicted),
    }
    for name in AVERAGES:
        out[f"macro_{name}"] = out[name].mean(axis=1)
    tp_all, pred_all, true_all = tp.sum(axis=1), predicted.sum(axis=1), support.sum(axis=1)
    out["micro_precision"] = _divide(tp_all, pred_all)
    out["micro_recall"] = _divide(tp_all, true_all)
    out["micro_f1"] = _divide(2 * tp_all, true_all + pred_all)
    return out


def bootstrap_confusions(
    gold_codes: IntArray, pred_codes: IntArray, n_labels: int, n_columns: int, idx: IntArray
) -> IntArray:
    """The confusion matrix of every resample (rows of ``idx``): shape (R, L, K)."""
    r = idx.shape[0]
    cells = n_labels * n_columns
    codes = gold_codes * n_columns + pred_codes
    flat = codes[idx] + (np.arange(r, dtype=np.int64) * cells)[:, None]
    counts = np.bincount(flat.ravel(), minlength=r * cells)
    return counts.reshape(r, n_labels, n_columns).astype(np.int64)


def mapped_predictions(pred: Sequence[str | None], labels: Sequence[str]) -> list[str]:
    """Predictions with None and anything outside ``labels`` replaced by ``NO_ANSWER``."""
    known = set(labels)
    return [p if p is not None and p in known else NO_ANSWER for p in pred]


def per_item_correct(gold: Sequence[str], pred: Sequence[str | None]) -> list[bool]:
    """Whether each prediction equals its gold label (None is wrong)."""
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} items, pred has {len(pred)}")
    return [p is not None and p == g for g, p in zip(gold, pred, strict=True)]


def classification_metrics(
    gold: Sequence[str],
    pred: Sequence[str | None],
    labels: Sequence[str] | None = None,
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> ClassificationMetrics:
    """Accuracy, per-class / macro / micro precision, recall and F1, and the confusion matrix.

    ``labels`` defaults to the sorted gold values; a gold value outside ``labels`` is an error.
    A prediction that is None or outside ``labels`` counts as wrong and lands in the
    ``NO_ANSWER`` column of the confusion matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    check_bootstrap(resamples, confidence)
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} items, pred has {len(pred)}")
    if not gold:
        raise ValueError("no items to score")
    names = sorted(set(gold)) if labels is None else list(labels)
    if len(set(names)) != len(names):
        raise ValueError(f"labels contain duplicates: {names}")
    index = {name: i for i, name in enumerate(names)}
    for i, g in enumerate(gold):
        if g not in index:
            raise ValueError(f"gold label {g!r} of item {i} is not among the labels {names}")
    mapped = mapped_predictions(pred, names)
    no_answer = sum(1 for p in mapped if p == NO_ANSWER)
    columns = [*names, NO_ANSWER] if no_answer else list(names)

    # point values: scikit-learn
    n_labels = len(names)
    accuracy = float(accuracy_score(gold, mapped))
    per = precision_recall_fscore_support(gold, mapped, labels=names, average=None, zero_division=0)
    averaged = {
        avg: precision_recall_fscore_support(
            gold, mapped, labels=names, average=avg, zero_division=0
        )
        for avg in ("macro", "micro")
    }
    with warnings.catch_warnings():  # one label only: scikit-learn warns, the matrix is right
        warnings.filterwarnings("ignore", message="A single label was found", category=UserWarning)
        confusion = confusion_matrix(gold, mapped, labels=columns)[:n_labels]

    # intervals: every resample's confusion matrix at once
    gold_codes = np.array([index[g] for g in gold], dtype=np.int64)
    pred_codes = np.array([index.get(p, n_labels) for p in mapped], dtype=np.int64)
    cms = over_resamples(
        len(gold),
        resamples,
        seed,
        lambda idx: bootstrap_confusions(gold_codes, pred_codes, n_labels, len(columns), idx),
    )
    samples = confusion_scores(cms)

    def interval(value: Any, key: str, col: int | None = None) -> Interval:
        s = samples[key] if col is None else samples[key][:, col]
        return percentile_interval(float(value), s, confidence)

    per_class = {
        name: ClassScores(
            precision=interval(per[0][i], "precision", i),
            recall=interval(per[1][i], "recall", i),
            f1=interval(per[2][i], "f1", i),
            support=int(per[3][i]),
        )
        for i, name in enumerate(names)
    }
    macro = {m: interval(averaged["macro"][j], f"macro_{m}") for j, m in enumerate(AVERAGES)}
    micro = {m: interval(averaged["micro"][j], f"micro_{m}") for j, m in enumerate(AVERAGES)}
    return ClassificationMetrics(
        n=len(gold),
        labels=names,
        accuracy=interval(accuracy, "accuracy"),
        per_class=per_class,
        macro=macro,
        micro=micro,
        confusion=[[int(x) for x in row] for row in confusion],
        columns=columns,
        no_answer=no_answer,
    )
