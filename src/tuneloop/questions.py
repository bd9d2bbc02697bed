"""Question types of human annotation queues: their options, the answers they accept, the
keys that answer them, and how answers are coded for agreement.

An answer is a small JSON object, the same from the web app, the API and imports:

======================  ==============================================  ======================
question                value                                           agreement
======================  ==============================================  ======================
``label``               ``{"label": "pos"}``                            nominal
``multilabel``          ``{"labels": ["a", "c"]}`` (sorted, may be [])  nominal on the set
``rating``              ``{"rating": 4}`` (1..5, rubric shown)          ordinal 1..5
``pairwise``            ``{"choice": "A" | "B" | "tie"}``               ordinal A < tie < B
``ranking``             ``{"ranking": [2, 0, 1]}`` (response indexes,   ordinal rank of each
                        best first)                                     response
``feedback``            ``{"text": "..."}``                             none (free text)
``correction``          ``{"text": "the corrected response"}``          none (free text)
======================  ==============================================  ======================

This module is pure: no I/O, no database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Question(StrEnum):
    label = "label"
    multilabel = "multilabel"
    rating = "rating"
    pairwise = "pairwise"
    ranking = "ranking"
    feedback = "feedback"
    correction = "correction"


@dataclass(frozen=True)
class QuestionSpec:
    type: Question
    description: str
    min_responses: int = 0  # model responses each item needs
    max_responses: int = 0
    level: str | None = None  # Krippendorff level of measurement; None: no agreement


QUESTIONS: dict[Question, QuestionSpec] = {
    Question.label: QuestionSpec(
        Question.label, "one label from a closed set", level="nominal", max_responses=1
    ),
    Question.multilabel: QuestionSpec(
        Question.multilabel, "any labels from a closed set", level="nominal", max_responses=1
    ),
    Question.rating: QuestionSpec(
        Question.rating, "a rating 1-5 with a rubric", level="ordinal", max_responses=1
    ),
    Question.pairwise: QuestionSpec(
        Question.pairwise, "the better of two responses (A, B or tie)", 2, 2, "ordinal"
    ),
    Question.ranking: QuestionSpec(
        Question.ranking, "a ranking of K responses, best first", 2, 9, "ordinal"
    ),
    Question.feedback: QuestionSpec(Question.feedback, "free-text feedback", max_responses=9),
    Question.correction: QuestionSpec(Question.correction, "the model's response, corrected", 1, 1),
}

RATINGS = (1, 2, 3, 4, 5)
DEFAULT_RUBRIC = {
    "1": "very bad: wrong, harmful or useless",
    "2": "bad: mostly wrong or unhelpful",
    "3": "moderate: partly right, needs work",
    "4": "good: right, small flaws",
    "5": "excellent: right, complete and clear",
}
CHOICES = ("A", "tie", "B")  # the order of the ordinal scale
RESERVED_KEYS = frozenset("suzeg?")  # skip, undo, undo (ctrl+z), edit text, guidelines, help
LABEL_KEYS = "1234567890" + "".join(c for c in "abcdefghijklmnopqrtvwxy" if c not in RESERVED_KEYS)
MAX_TEXT = 20_000


class AnswerError(ValueError):
    """An answer that the question does not accept; the message says why."""


def question_spec(question: str) -> QuestionSpec:
    try:
        return QUESTIONS[Question(question)]
    except ValueError:
        known = ", ".join(q.value for q in Question)
        raise ValueError(f"unknown question type {question!r}; known: {known}") from None


def check_options(
    question: str, options: Mapping[str, Any], dataset_labels: Sequence[str] | None = None
) -> dict[str, Any]:
    """The queue's options, checked and completed (labels from the dataset, the default
    rubric); raises ValueError naming the option at fault."""
    q = question_spec(question).type
    known = {"labels", "rubric", "allow_tie", "prompt"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown queue option(s) {', '.join(unknown)}; known: {sorted(known)}")
    out: dict[str, Any] = {}
    if q in (Question.label, Question.multilabel):
        labels = options.get("labels") or (list(dataset_labels) if dataset_labels else None)
        if not labels:
            raise ValueError(f"a {q} queue needs labels (--labels a,b,c or a dataset with labels)")
        if not all(isinstance(v, str) and v.strip() for v in labels):
            raise ValueError(f"labels must be non-empty strings, got {labels!r}")
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be distinct, got {labels}")
        if len(labels) > len(LABEL_KEYS):
            raise ValueError(f"at most {len(LABEL_KEYS)} labels (one key each), got {len(labels)}")
        out["labels"] = list(labels)
    if q == Question.rating:
        rubric = options.get("rubric") or DEFAULT_RUBRIC
        if not isinstance(rubric, Mapping) or set(map(str, rubric)) != {str(r) for r in RATINGS}:
            raise ValueError("a rating rubric describes each of the ratings 1, 2, 3, 4 and 5")
        out["rubric"] = {str(k): str(v) for k, v in sorted(rubric.items(), key=lambda kv: kv[0])}
    if q == Question.pairwise:
        out["allow_tie"] = bool(options.get("allow_tie", True))
    if options.get("prompt"):
        out["prompt"] = str(options["prompt"])  # the question shown above the answer form
    return out


def check_responses(question: str, responses: Sequence[Mapping[str, Any]] | None) -> None:
    """Raise ValueError unless an item of this question type has a fitting list of responses
    (each ``{"model": str, "text": str}``)."""
    spec = question_spec(question)
    n = len(responses or [])
    if n < spec.min_responses or n > spec.max_responses:
        want = (
            f"exactly {spec.min_responses}"
            if spec.min_responses == spec.max_responses
            else f"{spec.min_responses} to {spec.max_responses}"
        )
        raise ValueError(f"a {spec.type} item needs {want} response(s), got {n}")
    for i, r in enumerate(responses or []):
        if not isinstance(r, Mapping) or not isinstance(r.get("text"), str):
            raise ValueError(f"response {i + 1} needs a text (and a model name), got {r!r:.80}")


def check_value(
    question: str, options: Mapping[str, Any], value: Any, n_responses: int = 0
) -> dict[str, Any]:
    """The answer in its canonical form, or AnswerError saying what is wrong."""
    q = question_spec(question).type
    if not isinstance(value, Mapping):
        raise AnswerError(f"an answer is a JSON object, got {value!r:.80}")
    if q == Question.label:
        label = value.get("label")
        if label not in options["labels"]:
            raise AnswerError(f"label {label!r} is not one of {options['labels']}")
        return {"label": label}
    if q == Question.multilabel:
        labels = value.get("labels")
        if not isinstance(labels, list) or any(v not in options["labels"] for v in labels):
            raise AnswerError(f"labels {labels!r} must be a list of {options['labels']}")
        return {"labels": sorted(set(labels), key=options["labels"].index)}
    if q == Question.rating:
        rating = value.get("rating")
        if isinstance(rating, str) and rating.isdigit():
            rating = int(rating)
        if isinstance(rating, bool) or rating not in RATINGS:
            raise AnswerError(f"rating {rating!r} must be one of 1, 2, 3, 4, 5")
        return {"rating": rating}
    if q == Question.pairwise:
        choice = value.get("choice")
        allowed = CHOICES if options.get("allow_tie", True) else ("A", "B")
        if choice not in allowed:
            raise AnswerError(f"choice {choice!r} must be one of {', '.join(allowed)}")
        return {"choice": choice}
    if q == Question.ranking:
        ranking = value.get("ranking")
        if (
            not isinstance(ranking, list)
            or any(isinstance(i, bool) or not isinstance(i, int) for i in ranking)
            or sorted(ranking) != list(range(n_responses))
        ):
            raise AnswerError(
                f"ranking {ranking!r} must list every response index 0..{n_responses - 1} once, "
                "best first"
            )
        return {"ranking": list(ranking)}
    text = value.get("text")
    if not isinstance(text, str) or not text.strip():
        raise AnswerError("the answer needs a text")
    if len(text) > MAX_TEXT:
        raise AnswerError(f"the text is longer than {MAX_TEXT} characters")
    return {"text": text.replace("\r\n", "\n")}


def same_answer(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two canonical answers agree (free texts compare with whitespace trimmed)."""
    if "text" in a and "text" in b:
        return " ".join(str(a["text"]).split()) == " ".join(str(b["text"]).split())
    return dict(a) == dict(b)


def agreement_scale(question: str, n_responses: int = 0) -> tuple[str, list[Any] | None] | None:
    """(level of measurement, value order) of the coded answers; None for free text."""
    q = question_spec(question)
    if q.level is None:
        return None
    if q.type == Question.rating:
        return q.level, list(RATINGS)
    if q.type == Question.pairwise:
        return q.level, list(CHOICES)
    if q.type == Question.ranking:
        return q.level, list(range(1, n_responses + 1))
    return q.level, None


def agreement_units(question: str, value: Mapping[str, Any]) -> list[tuple[int, Any]]:
    """The coded answer as (unit, value) pairs: one unit per item, except rankings, which give
    each response's rank (1 = best) as its own unit."""
    q = question_spec(question).type
    if q == Question.label:
        return [(0, value["label"])]
    if q == Question.multilabel:
        return [(0, "|".join(value["labels"]))]
    if q == Question.rating:
        return [(0, value["rating"])]
    if q == Question.pairwise:
        return [(0, value["choice"])]
    if q == Question.ranking:
        return [(response, rank) for rank, response in enumerate(value["ranking"], 1)]
    return []


def label_keys(labels: Sequence[str]) -> list[tuple[str, str]]:
    """(key, label) for each label: 1..9, 0, then letters that no other action uses."""
    return list(zip(LABEL_KEYS, labels, strict=False))


def describe(question: str, value: Mapping[str, Any] | None) -> str:
    """An answer in a few words, for tables."""
    if value is None:
        return ""
    q = question_spec(question).type
    if q == Question.label:
        return str(value.get("label"))
    if q == Question.multilabel:
        return ", ".join(value.get("labels", [])) or "(none)"
    if q == Question.rating:
        return str(value.get("rating"))
    if q == Question.pairwise:
        return str(value.get("choice"))
    if q == Question.ranking:
        return " > ".join(str(i + 1) for i in value.get("ranking", []))
    text = str(value.get("text", ""))
    return text if len(text) <= 80 else text[:77] + "..."
