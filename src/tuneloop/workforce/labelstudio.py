"""Label Studio: a labeling config (XML) for the queue's question, its tasks (JSON), and the
answers of Label Studio's JSON export read back.

The config shows each input field in a ``Text`` tag and the responses as ``Text`` tags named
``response_A`` ... (a ``List`` for rankings), and asks with one control tag named after the
question: ``Choices`` (label: single, multilabel: multiple, pairwise: A / tie / B), ``Rating``
(1..5; the rubric as headers), ``Ranker`` over the ``List`` (its result is the response names in
the annotator's order), or ``TextArea`` (feedback; correction pre-filled with response A).

A task's ``data`` holds the fields the config names and ``tuneloop_item_id``. Where the queue
shows suggestions, each task carries the suggestion as a prediction (Label Studio shows it as a
pre-annotation). The export is Label Studio's JSON export: a list of tasks, each with
``annotations`` whose ``result`` holds one entry per control tag (``from_name``, ``type``,
``value``); ``completed_by`` is the annotator (a user id, or an object with ``email`` and
``id``); cancelled (skipped) annotations and those without a result for the question are
skipped.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from typing import Any

from tuneloop.questions import Question
from tuneloop.workforce import (
    ITEM_ID,
    RESPONSE_NAMES,
    Collector,
    Form,
    FormItem,
    Reading,
    question_text,
    response_field,
)

RESPONSES_LIST = "responses"  # the List of responses a Ranker orders
PREDICTION_VERSION = "tuneloop-suggestion"
RESULT_TYPE = {
    Question.label: "choices",
    Question.multilabel: "choices",
    Question.pairwise: "choices",
    Question.rating: "rating",
    Question.ranking: "ranker",
    Question.feedback: "textarea",
    Question.correction: "textarea",
}


def _target(form: Form) -> str:
    """The object tag that the control tag labels."""
    q = Question(form.question)
    if q == Question.ranking:
        return RESPONSES_LIST
    if q == Question.correction or not form.input_fields:
        return response_field("A")
    return form.input_fields[0]


def config(form: Form) -> str:
    """The labeling config (Label Studio's XML) for the queue's question."""
    q = Question(form.question)
    view = ET.Element("View")
    ET.SubElement(view, "Header", value=question_text(form))
    for name in form.input_fields:
        if len(form.input_fields) > 1:
            ET.SubElement(view, "Header", value=name, size="6")
        ET.SubElement(view, "Text", name=name, value=f"${name}")
    if q == Question.ranking:
        ET.SubElement(
            view, "List", name=RESPONSES_LIST, value=f"${RESPONSES_LIST}", title="Responses"
        )
    else:
        for name in form.response_names:
            ET.SubElement(view, "Header", value=f"Response {name}", size="6")
            field = response_field(name)
            ET.SubElement(view, "Text", name=field, value=f"${field}")
    control = form.answer_name
    target = _target(form)
    if q in (Question.label, Question.multilabel, Question.pairwise):
        choice = "multiple" if q == Question.multilabel else "single"
        tag = ET.SubElement(
            view,
            "Choices",
            name=control,
            toName=target,
            choice=choice,
            showInline="true",
            required="false" if q == Question.multilabel else "true",
        )
        if q == Question.pairwise:
            values = ["A", "tie", "B"] if form.options.get("allow_tie", True) else ["A", "B"]
        else:
            values = list(form.options["labels"])
        for value in values:
            ET.SubElement(tag, "Choice", value=value)
    elif q == Question.rating:
        for key, text in sorted(form.options["rubric"].items()):
            ET.SubElement(view, "Header", value=f"{key}: {text}", size="6")
        ET.SubElement(view, "Rating", name=control, toName=target, maxRating="5", required="true")
    elif q == Question.ranking:
        ET.SubElement(view, "Ranker", name=control, toName=target)
    else:
        attrs = {"name": control, "toName": target, "rows": "5", "maxSubmissions": "1"}
        attrs |= {"editable": "true", "required": "true"}
        if q == Question.correction:
            attrs["value"] = f"${response_field('A')}"
        ET.SubElement(view, "TextArea", attrs)
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def result(form: Form, value: Mapping[str, Any]) -> dict[str, Any]:
    """A tuneloop answer as one Label Studio result entry (for predictions)."""
    q = Question(form.question)
    kind = RESULT_TYPE[q]
    out: dict[str, Any]
    if q == Question.label:
        out = {"choices": [value["label"]]}
    elif q == Question.multilabel:
        out = {"choices": list(value["labels"])}
    elif q == Question.pairwise:
        out = {"choices": [value["choice"]]}
    elif q == Question.rating:
        out = {"rating": value["rating"]}
    elif q == Question.ranking:
        out = {"ranker": {form.answer_name: [RESPONSE_NAMES[i] for i in value["ranking"]]}}
    else:
        out = {"text": [value["text"]]}
    return {
        "from_name": form.answer_name,
        "to_name": _target(form),
        "type": kind,
        "value": out,
    }


def tasks(form: Form, items: Iterable[FormItem]) -> list[dict[str, Any]]:
    """Tasks to import into a Label Studio project with ``config(form)``."""
    out = []
    for item in items:
        data: dict[str, Any] = {ITEM_ID: item.item_id}
        for name in form.input_fields:
            data[name] = item.inputs.get(name, "")
        if Question(form.question) == Question.ranking:
            data[RESPONSES_LIST] = [
                {"id": RESPONSE_NAMES[i], "title": f"Response {RESPONSE_NAMES[i]}", "body": text}
                for i, text in enumerate(item.responses)
            ]
        else:
            for i, text in enumerate(item.responses):
                data[response_field(RESPONSE_NAMES[i])] = text
        task: dict[str, Any] = {"data": data}
        if form.show_suggestions and item.suggestion is not None:
            task["predictions"] = [
                {"model_version": PREDICTION_VERSION, "result": [result(form, item.suggestion)]}
            ]
        out.append(task)
    return out


def read_export(where: str, data: Any, form: Form, items: Mapping[int, int]) -> Reading:
    """The answers in Label Studio's JSON export (already parsed from ``where``)."""
    collector = Collector(form, items)
    reading = collector.reading
    if not isinstance(data, list):
        reading.problem(where, "expected Label Studio's JSON export: a list of tasks")
        return reading
    control = form.answer_name
    for t, task in enumerate(data, 1):
        task_where = f"{where} task {t}"
        if isinstance(task, dict) and task.get("id") is not None:
            task_where += f" (id {task['id']})"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            reading.problem(task_where, "a task is an object with 'data'", "data")
            continue
        item_id = collector.item(task_where, task["data"].get(ITEM_ID), f"data.{ITEM_ID}")
        if item_id is None:
            continue
        annotations = task.get("annotations") or []
        if not isinstance(annotations, list):
            reading.problem(task_where, "must be a list", "annotations")
            continue
        if not annotations:
            collector.skip(task_where, "no annotations")
        for a, annotation in enumerate(annotations, 1):
            location = f"{task_where} annotation {a}"
            if not isinstance(annotation, dict):
                reading.problem(location, "an annotation is an object", f"annotations[{a - 1}]")
                continue
            if annotation.get("was_cancelled"):
                collector.skip(location, "cancelled (skipped in Label Studio)")
                continue
            entries = [
                r
                for r in annotation.get("result") or []
                if isinstance(r, dict) and r.get("from_name") == control
            ]
            if not entries:
                collector.skip(location, f"no result for '{control}'")
                continue
            field = f"annotations[{a - 1}].result"
            value = _value(form, entries, items[item_id], location, field, reading)
            if value is None:
                continue
            who = _annotator(annotation.get("completed_by"))
            collector.answer(location, item_id, who, "completed_by", value, field)
    return reading


def _annotator(raw: Any) -> tuple[str, ...]:
    """Who made an annotation: email first (the name to use), then the user id."""
    if isinstance(raw, dict):
        email = str(raw.get("email") or "").strip()
        user_id = raw.get("id")
        keys = [email] if email else []
        if user_id is not None:
            keys += [f"labelstudio-{user_id}", str(user_id)]
        return tuple(keys)
    if isinstance(raw, int | str) and not isinstance(raw, bool) and str(raw).strip():
        text = str(raw).strip()
        return (text,) if "@" in text else (f"labelstudio-{text}", text)
    return ()


def _value(
    form: Form,
    entries: list[dict[str, Any]],
    n_responses: int,
    location: str,
    field: str,
    reading: Reading,
) -> dict[str, Any] | None:
    """The answer (before ``check_value``) from the result entries of the question's tag."""
    q = Question(form.question)
    if len(entries) > 1 and q != Question.feedback:
        reading.problem(
            location, f"{len(entries)} results for '{form.answer_name}', want one", field
        )
        return None
    value = entries[0].get("value")
    if not isinstance(value, dict):
        reading.problem(location, "a result needs a 'value' object", f"{field}.value")
        return None
    if q in (Question.label, Question.multilabel, Question.pairwise):
        choices = value.get("choices")
        if not isinstance(choices, list):
            reading.problem(location, "expected a list of choices", f"{field}.value.choices")
            return None
        if q == Question.multilabel:
            return {"labels": choices}
        if len(choices) != 1:
            reading.problem(
                location, f"expected one choice, got {choices}", f"{field}.value.choices"
            )
            return None
        return {"label": choices[0]} if q == Question.label else {"choice": choices[0]}
    if q == Question.rating:
        return {"rating": value.get("rating")}
    if q == Question.ranking:
        ranker = value.get("ranker")
        order = ranker.get(form.answer_name) if isinstance(ranker, dict) else None
        if order is None and isinstance(ranker, dict) and len(ranker) == 1:
            order = next(iter(ranker.values()))
        names = RESPONSE_NAMES[:n_responses]
        if not isinstance(order, list) or any(n not in names for n in order):
            reading.problem(
                location,
                f"expected the response names {', '.join(names)} in ranked order, got {order!r}",
                f"{field}.value.ranker",
            )
            return None
        return {"ranking": [names.index(n) for n in order]}
    texts: list[str] = []
    for entry in entries:
        raw = entry.get("value", {}).get("text") if isinstance(entry.get("value"), dict) else None
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list):
            reading.problem(
                location, "expected the text as a list of strings", f"{field}.value.text"
            )
            return None
        texts += [str(t) for t in raw]
    return {"text": "\n".join(texts)}
