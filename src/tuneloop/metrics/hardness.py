"""How hard an item is for a model: the uncertainty of its label distribution (margin,
entropy) and the disagreement among the answers it got (the model's, LLM annotators', people's,
the reference); or a seeded random key, the baseline. Pure functions; higher ``hardness`` means
harder.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MEASURES = ("margin", "entropy")


def probabilities(logprobs: Mapping[str, float]) -> dict[str, float]:
    """A normalised distribution from per-choice log-probabilities."""
    if not logprobs:
        raise ValueError("no choices scored")
    top = max(logprobs.values())
    exps = {k: math.exp(v - top) for k, v in logprobs.items()}
    total = sum(exps.values())
    return {k: v / total for k, v in exps.items()}


def margin(probs: Mapping[str, float]) -> float:
    """The best choice's probability minus the runner-up's (1.0 with a single choice)."""
    ranked = sorted(probs.values(), reverse=True)
    return ranked[0] - ranked[1] if len(ranked) > 1 else 1.0


def entropy(probs: Mapping[str, float]) -> float:
    """Shannon entropy in nats (0 for a sure answer; log K for a uniform one over K)."""
    return -sum(p * math.log(p) for p in probs.values() if p > 0)


def uncertainty(probs: Mapping[str, float], measure: str = "margin") -> float:
    """Hardness by uncertainty: ``1 - margin`` or the entropy."""
    if measure not in MEASURES:
        raise ValueError(f"uncertainty measure must be one of {', '.join(MEASURES)}")
    return 1.0 - margin(probs) if measure == "margin" else entropy(probs)


def label_disagreement(votes: Sequence[str]) -> float:
    """The share of answers that differ from the most common one (0: all agree; fewer than two
    answers: 0, nothing to disagree with)."""
    if len(votes) < 2:
        return 0.0
    top = Counter(votes).most_common(1)[0][1]
    return 1.0 - top / len(votes)


def text_disagreement(votes: Sequence[str]) -> float:
    """1 minus the mean ROUGE-L F-measure over every pair of answers (0: the same words)."""
    if len(votes) < 2:
        return 0.0
    from tuneloop.metrics.text import rouge_per_item

    pairs = list(itertools.combinations(votes, 2))
    scores = rouge_per_item([a for a, _ in pairs], [b for _, b in pairs])
    return 1.0 - sum(s["rougeL"] for s in scores) / len(scores)


@dataclass(frozen=True)
class Hard:
    """How hard one item is: ``hardness`` (higher is harder; None: the model gave no usable
    answer, hardest of all), what it was measured from, and a tie-breaker (higher first)."""

    hardness: float | None
    details: dict[str, Any] = field(default_factory=dict)
    tie: float = 0.0


def hardest(ranked: Mapping[int, Hard], n: int) -> list[int]:
    """The ``n`` hardest ids: no answer first, then by hardness, tie-breaker, id."""

    def key(i: int) -> tuple[bool, float, float, int]:
        h = ranked[i]
        return (h.hardness is not None, -(h.hardness or 0.0), -h.tie, i)

    return sorted(ranked, key=key)[:n]


def by_uncertainty(
    answers: Mapping[int, tuple[str | None, Mapping[str, float] | None]], measure: str
) -> dict[int, Hard]:
    """Each (answer, label distribution) by its uncertainty (``1 - margin`` or the entropy;
    both are kept with the distribution); an item with no answer is the hardest; one with an
    answer but no distribution (a parsed answer) cannot be ranked."""
    ranked = {}
    for i, (answer, probs) in answers.items():
        if answer is None:
            ranked[i] = Hard(None, {"no_answer": True})
        elif probs is not None:
            shown = {k: round(v, 6) for k, v in probs.items()}
            measured = {"margin": round(margin(probs), 6), "entropy": round(entropy(probs), 6)}
            ranked[i] = Hard(uncertainty(probs, measure), {**measured, "probs": shown})
    return ranked


def by_disagreement(
    votes: Mapping[int, Mapping[str, Any]],
    unsure: Mapping[int, float],
    *,
    free_text: bool = False,
) -> dict[int, Hard]:
    """Items whose answers (by source: the model, LLM annotators, people, the reference)
    disagree, by how much; among equals the model's least sure (``unsure``) first."""
    ranked = {}
    for i, given in votes.items():
        answers = [str(v) for v in given.values()]
        value = text_disagreement(answers) if free_text else label_disagreement(answers)
        if value > 0:
            details = {"disagreement": round(value, 6), "votes": dict(given)}
            ranked[i] = Hard(value, details, unsure.get(i, 0.0))
    return ranked


def by_random(names: Mapping[int, str], seed: int) -> dict[int, Hard]:
    """A seeded uniform random key for each item (from ``names``: a stable name per id), as
    its "hardness": the ``n`` highest keys are a uniform sample without replacement, the same
    for the same seed and names whatever their order; a later draw that leaves out the items
    taken before continues the same random order. The baseline other strategies must beat."""
    return {i: Hard(random.Random(f"{seed}:{name}").random()) for i, name in names.items()}
