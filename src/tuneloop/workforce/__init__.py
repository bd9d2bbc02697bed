"""Annotation workforces and tools at the edges: a queue out as a vendor task sheet (CSV, XLSX),
Label Studio tasks or Argilla records, and the answers people gave there back in.

Everything here is pure (files in, values out; no database). A format module writes what a
``Form`` (the queue's question, options and guidelines) and its ``FormItem`` s hold, and reads a
filled file back into a ``Reading``: the answers it holds, each checked against the question
(``tuneloop.questions.check_value``), the rows it skips on purpose (blank, discarded, drafts),
and every problem found, each naming the file, the row or task, and the column or field.
``tuneloop.workflows.workforce`` resolves annotators and writes a reading all or nothing.

What an export holds is what an annotator may see in the web app: the record's input fields
(never its reference output), the model responses named A, B, ... (never the model names) and
the item's LLM suggestion only where the queue shows suggestions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tuneloop.errors import InputError
from tuneloop.questions import AnswerError, Question, check_value

RESPONSE_NAMES = "ABCDEFGHI"  # as the web app names responses
ITEM_ID = "tuneloop_item_id"  # the item id in Label Studio task data and Argilla metadata
# the answer's column (sheets), control tag (Label Studio) and question name (Argilla)
ANSWER_NAME = {
    Question.label: "label",
    Question.multilabel: "labels",
    Question.rating: "rating",
    Question.pairwise: "choice",
    Question.ranking: "ranking",
    Question.feedback: "feedback",
    Question.correction: "correction",
}
EMPTY_SET = "-"  # a multilabel answer with no label, in a sheet cell


@dataclass(frozen=True)
class Form:
    """A queue as the formats need it: the question and how it is asked."""

    queue: str
    question: str  # label | multilabel | rating | pairwise | ranking | feedback | correction
    options: dict[str, Any]  # labels, rubric, allow_tie, prompt
    guidelines: str | None
    input_fields: list[str]  # the records' input fields that any item has, in task order
    n_responses: int  # the most responses an item has
    show_suggestions: bool
    annotators_per_item: int = 1

    @property
    def answer_name(self) -> str:
        return ANSWER_NAME[Question(self.question)]

    @property
    def response_names(self) -> list[str]:
        return list(RESPONSE_NAMES[: self.n_responses])


@dataclass(frozen=True)
class FormItem:
    """One item as an annotator may see it."""

    item_id: int
    inputs: dict[str, str]  # input field -> text (lists shown one per line)
    responses: list[str]  # texts of responses A, B, ...
    suggestion: dict[str, Any] | None  # only where the queue shows suggestions


@dataclass(frozen=True)
class Given:
    """One answer read from a file, in its canonical form."""

    location: str  # "sheet.csv row 4", "export.json task 3 annotation 1"
    item_id: int
    annotator: tuple[str, ...]  # the person's identities in the file, the name to use first
    annotator_field: str  # where the file names the person, for messages
    value: dict[str, Any]
    comment: str | None = None


@dataclass
class Reading:
    """What a filled file holds for a queue."""

    answers: list[Given] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (location, why)
    problems: list[InputError] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)  # item ids the file mentions
    queue: str | None = None  # the queue the file says it belongs to, when it says

    def problem(self, location: str, message: str, name: str | None = None) -> None:
        self.problems.append(InputError(location, message, name))


class Collector:
    """Shared checks of the readers: item ids against the queue, values against the question."""

    def __init__(self, form: Form, items: Mapping[int, int]) -> None:
        self.form = form
        self.items = items  # item id -> its number of responses
        self.reading = Reading()

    def item(self, location: str, raw: Any, name: str) -> int | None:
        """The item id of ``raw`` if it is one of the queue's items, else None (a problem)."""
        item_id = as_int(raw)
        if raw is None or raw == "":
            self.reading.problem(location, "no item id", name)
            return None
        if item_id is None:
            self.reading.problem(location, f"item id {raw!r} is not a number", name)
            return None
        if item_id not in self.items:
            self.reading.problem(location, f"no item {item_id} in queue {self.form.queue!r}", name)
            return None
        self.reading.seen.add(item_id)
        return item_id

    def answer(
        self,
        location: str,
        item_id: int,
        annotator: tuple[str, ...],
        annotator_field: str,
        value: Any,
        name: str,
        comment: str | None = None,
    ) -> None:
        try:
            clean = check_value(self.form.question, self.form.options, value, self.items[item_id])
        except AnswerError as exc:
            self.reading.problem(location, str(exc), name)
            return
        given = Given(location, item_id, annotator, annotator_field, clean, comment or None)
        self.reading.answers.append(given)

    def skip(self, location: str, why: str) -> None:
        self.reading.skipped.append((location, why))


def as_int(raw: Any) -> int | None:
    """An integer from a cell or JSON value (``12``, ``"12"``, ``12.0``), else None."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str):
        text = raw.strip()
        if re.fullmatch(r"\d+", text):
            return int(text)
        if re.fullmatch(r"\d+\.0+", text):
            return int(float(text))
    return None


def cell_text(raw: Any) -> str:
    """A cell's content as trimmed text ('' when empty)."""
    if raw is None:
        return ""
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    return str(raw).strip()


def value_from_text(form: Form, text: str, n_responses: int) -> dict[str, Any]:
    """The answer a sheet cell spells (before ``check_value``); AnswerError says what is wrong.

    label: the label (case does not matter when it is unambiguous); multilabel: labels joined
    by ``|`` (``-`` for none); rating: 1..5; pairwise: A, B or tie; ranking: response names
    best first, joined by ``>`` (``B > A > C``); feedback and correction: the text.
    """
    q = Question(form.question)
    if q == Question.label:
        return {"label": _label(form, text)}
    if q == Question.multilabel:
        if text == EMPTY_SET:
            return {"labels": []}
        return {"labels": [_label(form, part.strip()) for part in text.split("|") if part.strip()]}
    if q == Question.rating:
        rating = as_int(text)
        return {"rating": rating if rating is not None else text}
    if q == Question.pairwise:
        choice = {"a": "A", "b": "B", "tie": "tie"}.get(text.lower(), text)
        return {"choice": choice}
    if q == Question.ranking:
        names = [p.strip().upper() for p in re.split(r"[>,;\s]+", text) if p.strip()]
        allowed = RESPONSE_NAMES[:n_responses]
        bad = [n for n in names if len(n) != 1 or n not in allowed]
        if bad:
            raise AnswerError(
                f"ranking {text!r}: {bad[0]!r} is not a response name; write the names "
                f"{', '.join(allowed)} best first, e.g. {' > '.join(reversed(allowed))}"
            )
        return {"ranking": [allowed.index(n) for n in names]}
    return {"text": text}


def _label(form: Form, text: str) -> str:
    labels: list[str] = form.options.get("labels", [])
    if text in labels:
        return text
    folded = [label for label in labels if label.casefold() == text.casefold()]
    return folded[0] if len(folded) == 1 else text


def text_of_value(question: str, value: Mapping[str, Any]) -> str:
    """An answer spelt as a sheet cell (the inverse of ``value_from_text``)."""
    q = Question(question)
    if q == Question.label:
        return str(value["label"])
    if q == Question.multilabel:
        return " | ".join(value["labels"]) or EMPTY_SET
    if q == Question.rating:
        return str(value["rating"])
    if q == Question.pairwise:
        return str(value["choice"])
    if q == Question.ranking:
        return " > ".join(RESPONSE_NAMES[i] for i in value["ranking"])
    return str(value["text"])


def allowed_answers(form: Form) -> list[str]:
    """How to answer, in lines a person reads (sheets, instructions files)."""
    q = Question(form.question)
    if q == Question.label:
        return ["one of: " + ", ".join(form.options["labels"])]
    if q == Question.multilabel:
        return [
            "any of: " + ", ".join(form.options["labels"]),
            f"join several with | (e.g. a | c); write {EMPTY_SET} for none",
        ]
    if q == Question.rating:
        return ["a whole number 1..5:"] + [
            f"{k}: {v}" for k, v in sorted(form.options["rubric"].items())
        ]
    if q == Question.pairwise:
        tie = form.options.get("allow_tie", True)
        return [
            "A if response A is better, B if response B is better"
            + (", tie if equal" if tie else "")
        ]
    if q == Question.ranking:
        names = form.response_names
        return [
            f"the response names {', '.join(names)} best first, joined by >, e.g. "
            f"{' > '.join(reversed(names))}"
        ]
    if q == Question.correction:
        return ["the response A, corrected (the whole corrected text)"]
    return ["free-text feedback"]


def question_text(form: Form) -> str:
    """The question as shown to people."""
    if form.options.get("prompt"):
        return str(form.options["prompt"])
    return {
        Question.label: "Which label fits?",
        Question.multilabel: "Which labels fit?",
        Question.rating: "How good is the response (1-5)?",
        Question.pairwise: "Which response is better?",
        Question.ranking: "Rank the responses, best first.",
        Question.feedback: "What is good or bad here?",
        Question.correction: "Correct the response.",
    }[Question(form.question)]


def response_field(name: str) -> str:
    """The field or column of response ``A``: ``response_A``."""
    return f"response_{name}"
