"""Answer forms of the web pages as answer values (pure: no I/O). The field names:

``label`` (one), ``labels`` (any number), ``rating`` (1..5), ``choice`` (A, B, tie),
``rank_0`` .. ``rank_{K-1}`` (each response's rank, 1 = best), ``text``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tuneloop.questions import AnswerError, Question, question_spec


def _first(form: Mapping[str, Sequence[str]], key: str) -> str | None:
    values = form.get(key) or []
    return values[0] if values else None


def form_value(
    question: str, form: Mapping[str, Sequence[str]], n_responses: int = 0
) -> dict[str, Any]:
    """The answer a submitted form gives (checked later by ``questions.check_value``)."""
    q = question_spec(question).type
    if q == Question.label:
        label = _first(form, "label")
        if label is None:
            raise AnswerError("choose a label")
        return {"label": label}
    if q == Question.multilabel:
        return {"labels": list(form.get("labels") or [])}
    if q == Question.rating:
        rating = _first(form, "rating")
        if rating is None:
            raise AnswerError("choose a rating 1-5")
        return {"rating": int(rating) if rating.isdigit() else rating}
    if q == Question.pairwise:
        choice = _first(form, "choice")
        if choice is None:
            raise AnswerError("choose A, B or tie")
        return {"choice": choice}
    if q == Question.ranking:
        ranks = [(_first(form, f"rank_{i}") or "").strip() for i in range(n_responses)]
        if sorted(ranks) != sorted(str(r) for r in range(1, n_responses + 1)):
            raise AnswerError(f"give each response a different rank 1..{n_responses}")
        return {"ranking": sorted(range(n_responses), key=lambda i: int(ranks[i]))}
    return {"text": _first(form, "text") or ""}
