"""Text overlap against references: ROUGE-1/2/L (rouge-score), corpus BLEU and chrF (sacrebleu),
each with a bootstrap interval over items.

ROUGE is the mean of per-item F-measures (``RougeScorer(["rouge1", "rouge2", "rougeL"],
use_stemmer=True)``). BLEU and chrF are corpus-level, 0..100, exactly
``sacrebleu.corpus_bleu(preds, [refs])`` and ``sacrebleu.corpus_chrf(preds, [refs])``; their
intervals resample the per-sentence sufficient statistics (n-gram counts and lengths, which add
up over sentences) and score each resample's sums, as sacrebleu's own bootstrap does, instead of
re-tokenising the corpus for every resample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuneloop.metrics.intervals import (
    FloatArray,
    IntArray,
    Interval,
    check_bootstrap,
    mean_interval,
    over_resamples,
    percentile_interval,
    resample_counts,
)

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@dataclass(frozen=True)
class TextMetrics:
    n: int
    rouge1: Interval
    rouge2: Interval
    rougeL: Interval  # the name every ROUGE tool uses
    bleu: Interval  # corpus BLEU, 0..100
    chrf: Interval  # corpus chrF, 0..100
    per_item: list[dict[str, float]] = field(default_factory=list)  # rouge1/2/L, chrf per item

    def to_dict(self) -> dict[str, Any]:
        """Corpus metrics (not the per-item scores: those go with the items)."""
        return {
            "n": self.n,
            "rouge1": self.rouge1.to_dict(),
            "rouge2": self.rouge2.to_dict(),
            "rougeL": self.rougeL.to_dict(),
            "bleu": self.bleu.to_dict(),
            "chrf": self.chrf.to_dict(),
        }


def rouge_per_item(refs: Sequence[str], preds: Sequence[str]) -> list[dict[str, float]]:
    """Per-item ROUGE F-measures from rouge-score (stemmed)."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    out = []
    for ref, pred in zip(refs, preds, strict=True):
        scores = scorer.score(ref, pred)  # (target, prediction)
        out.append({t: float(scores[t].fmeasure) for t in ROUGE_TYPES})
    return out


def corpus_bootstrap(
    metric: Any, refs: Sequence[str], preds: Sequence[str], resamples: int, seed: int
) -> tuple[float, list[float], FloatArray]:
    """A sacrebleu metric (``BLEU()``, ``CHRF()``) on the corpus: its score, the sentence
    scores, and the corpus score of every resample of items (``bootstrap_indices``' rows).

    Each sentence's sufficient statistics are extracted once; a resample's corpus score is the
    metric computed from their sum, which is what ``corpus_score`` computes on that resample."""
    stats = metric._extract_corpus_statistics(list(preds), [list(refs)])
    value = float(metric._aggregate_and_compute(stats).score)
    per_sentence = [float(metric._compute_score_from_stats(s).score) for s in stats]
    table = np.asarray(stats)

    def scores(idx: IntArray) -> FloatArray:
        summed = resample_counts(idx, len(stats)) @ table
        return np.array([metric._compute_score_from_stats(row).score for row in summed])

    return value, per_sentence, over_resamples(len(stats), resamples, seed, scores)


def text_metrics(
    refs: Sequence[str],
    preds: Sequence[str],
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> TextMetrics:
    """ROUGE-1/2/L, BLEU and chrF of ``preds`` against ``refs`` (one reference per item)."""
    from sacrebleu.metrics.bleu import BLEU
    from sacrebleu.metrics.chrf import CHRF

    check_bootstrap(resamples, confidence)
    if len(refs) != len(preds):
        raise ValueError(f"refs has {len(refs)} items, preds has {len(preds)}")
    if not refs:
        raise ValueError("no items to score")
    rouge = rouge_per_item(refs, preds)
    bleu, _, bleu_samples = corpus_bootstrap(BLEU(), refs, preds, resamples, seed)
    chrf, chrf_items, chrf_samples = corpus_bootstrap(CHRF(), refs, preds, resamples, seed)
    per_item = [{**r, "chrf": c} for r, c in zip(rouge, chrf_items, strict=True)]
    r1, r2, rl = (
        mean_interval([r[t] for r in rouge], resamples=resamples, seed=seed, confidence=confidence)
        for t in ROUGE_TYPES
    )
    return TextMetrics(
        n=len(refs),
        rouge1=r1,
        rouge2=r2,
        rougeL=rl,
        bleu=percentile_interval(bleu, bleu_samples, confidence),
        chrf=percentile_interval(chrf, chrf_samples, confidence),
        per_item=per_item,
    )
