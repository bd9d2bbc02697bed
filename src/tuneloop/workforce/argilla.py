"""Argilla 2.x: dataset settings (fields, one question, guidelines, the item id as metadata) and
records, in the JSON shapes that ``rg.Settings.to_json`` and ``dataset.records.to_json`` (that
is, ``records.to_list(flatten=False)``) write and ``rg.Settings.from_json`` and
``rg.Record.from_dict`` read; and the responses of exported records read back.

The question is named after the queue's question (``label``, ``labels``, ``rating``, ``choice``,
``ranking``, ``feedback``, ``correction``): a LabelQuestion (label; pairwise with the options
A, tie, B), a MultiLabelQuestion, a RatingQuestion (1..5, the rubric in its description), a
RankingQuestion over the responses A, B, ... or a TextQuestion. Fields are the record's input
fields and the responses (``response_a`` ...: Argilla names are lower case). Each record keeps
the item id in its metadata (``tuneloop_item_id``) and as its id; it has a suggestion only
where the queue shows suggestions.

Responses are read from records exported nested (``records.to_json``, that is
``to_list(flatten=False)``: ``responses: {question: [{"value", "user_id", "status"}]}``) or
flattened (``to_list(flatten=True)``: ``question.responses``, ``question.responses.users``,
``question.responses.status``).
``discarded`` and ``draft`` responses are skipped. The nested export of the 2.x SDK leaves the
status out, so there a response without a status counts as submitted: export flattened to keep
drafts and discarded responses out.
"""

from __future__ import annotations

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
    allowed_answers,
    question_text,
)

AGENT = "tuneloop"
SKIPPED_STATUS = ("discarded", "draft")


def field_name(name: str) -> str:
    """An Argilla field name for an input field or a response name (lower case)."""
    return name.lower() if len(name) > 1 else f"response_{name.lower()}"


def _options(values: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    return [{"value": v, "text": t, "description": None} for v, t in values]


def _question(form: Form) -> dict[str, Any]:
    q = Question(form.question)
    settings: dict[str, Any]
    if q == Question.label:
        labels = form.options["labels"]
        settings = {
            "type": "label_selection",
            "options": _options((v, v) for v in labels),
            "visible_options": None,
        }
    elif q == Question.multilabel:
        labels = form.options["labels"]
        settings = {
            "type": "multi_label_selection",
            "options": _options((v, v) for v in labels),
            "visible_options": None,
            "options_order": "natural",
        }
    elif q == Question.pairwise:
        texts = {"A": "Response A is better", "tie": "Tie", "B": "Response B is better"}
        keys = ["A", "tie", "B"] if form.options.get("allow_tie", True) else ["A", "B"]
        settings = {
            "type": "label_selection",
            "options": _options((k, texts[k]) for k in keys),
            "visible_options": None,
        }
    elif q == Question.rating:
        settings = {"type": "rating", "options": [{"value": r} for r in range(1, 6)]}
    elif q == Question.ranking:
        settings = {
            "type": "ranking",
            "options": _options((n, f"Response {n}") for n in form.response_names),
        }
    else:
        settings = {"type": "text", "use_markdown": False}
    return {
        "id": None,
        "name": form.answer_name,
        "title": question_text(form),
        "description": "\n".join(allowed_answers(form)),
        "required": True,
        "settings": settings,
    }


def settings(form: Form, items: Iterable[FormItem]) -> dict[str, Any]:
    """The dataset settings (``rg.Settings.from_json`` reads them)."""
    items = list(items)
    names = [*form.input_fields, *form.response_names]

    def always(name: str) -> bool:
        if len(name) == 1:  # a response name
            i = RESPONSE_NAMES.index(name)
            return all(i < len(it.responses) and it.responses[i] for it in items)
        return all(it.inputs.get(name) for it in items)

    fields = [
        {
            "id": None,
            "name": field_name(name),
            "title": f"Response {name}" if len(name) == 1 else name,
            "required": always(name),
            "settings": {"type": "text", "use_markdown": False},
        }
        for name in names
    ]
    guidelines = form.guidelines or question_text(form)
    return {
        "guidelines": guidelines,
        "questions": [_question(form)],
        "fields": fields,
        "vectors": [],
        "metadata": [
            {
                "id": None,
                "name": ITEM_ID,
                "title": "tuneloop item id",
                "visible_for_annotators": False,
                "settings": {"type": "integer", "min": None, "max": None},
            }
        ],
        "allow_extra_metadata": False,
        "distribution": {"strategy": "overlap", "min_submitted": form.annotators_per_item},
        "mapping": None,
    }


def suggestion_value(form: Form, value: Mapping[str, Any]) -> Any:
    """A tuneloop answer as the value of an Argilla suggestion or response."""
    q = Question(form.question)
    if q == Question.label:
        return value["label"]
    if q == Question.multilabel:
        return list(value["labels"])
    if q == Question.rating:
        return value["rating"]
    if q == Question.pairwise:
        return value["choice"]
    if q == Question.ranking:
        return [RESPONSE_NAMES[i] for i in value["ranking"]]
    return value["text"]


def records(form: Form, items: Iterable[FormItem]) -> list[dict[str, Any]]:
    """The records (``rg.Record.from_dict`` reads each; ``Dataset.records.log`` logs them)."""
    out = []
    for item in items:
        fields = {f: item.inputs[f] for f in form.input_fields if item.inputs.get(f)}
        for i, text in enumerate(item.responses):
            fields[field_name(RESPONSE_NAMES[i])] = text
        suggestions: dict[str, Any] = {}
        if form.show_suggestions and item.suggestion is not None:
            suggestions[form.answer_name] = {
                "value": suggestion_value(form, item.suggestion),
                "score": None,
                "agent": AGENT,
            }
        out.append(
            {
                "id": str(item.item_id),
                "fields": fields,
                "metadata": {ITEM_ID: item.item_id},
                "suggestions": suggestions,
                "responses": {},
                "vectors": {},
                "status": "pending",
                "_server_id": None,
            }
        )
    return out


def read_records(where: str, data: Any, form: Form, items: Mapping[int, int]) -> Reading:
    """The responses in exported records (a list of ``Record.to_dict()`` objects)."""
    collector = Collector(form, items)
    reading = collector.reading
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        data = data["records"]
    if not isinstance(data, list):
        reading.problem(where, "expected Argilla records: a list of record objects")
        return reading
    name = form.answer_name
    for r, record in enumerate(data, 1):
        rec_where = f"{where} record {r}"
        if not isinstance(record, dict):
            reading.problem(rec_where, "a record is an object")
            continue
        if record.get("id") is not None:
            rec_where += f" (id {record['id']})"
        metadata = record.get("metadata")
        if isinstance(metadata, dict) and metadata.get(ITEM_ID) is not None:
            raw_id, id_field = metadata[ITEM_ID], f"metadata.{ITEM_ID}"
        elif record.get(ITEM_ID) is not None:  # flattened: metadata at the top level
            raw_id, id_field = record[ITEM_ID], ITEM_ID
        else:
            raw_id, id_field = record.get("id"), "id"
        item_id = collector.item(rec_where, raw_id, id_field)
        if item_id is None:
            continue
        responses = _responses(record, name, rec_where, reading)
        if responses is None:
            continue
        if not responses:
            collector.skip(rec_where, f"no responses to '{name}'")
        for i, (response, field) in enumerate(responses):
            location = f"{rec_where} response {i + 1}"
            status = response.get("status") or "submitted"
            if status in SKIPPED_STATUS:
                collector.skip(location, f"{status} in Argilla")
                continue
            if status != "submitted":
                reading.problem(
                    location, f"status {status!r}: submitted, discarded or draft", f"{field}.status"
                )
                continue
            if response.get("value") is None:
                reading.problem(location, "a submitted response without a value", f"{field}.value")
                continue
            value = _value(form, response["value"], items[item_id], location, field, reading)
            if value is None:
                continue
            user = str(response.get("user_id") or "").strip()
            who = (f"argilla-{user}", user) if user else ()
            collector.answer(location, item_id, who, f"{field}.user_id", value, f"{field}.value")
    return reading


def _responses(
    record: dict[str, Any], name: str, where: str, reading: Reading
) -> list[tuple[dict[str, Any], str]] | None:
    """The responses to the question, each with the field it came from: nested
    (``responses: {name: [{value, user_id, status}]}``) or flattened (``name.responses``,
    ``name.responses.users``, ``name.responses.status``, as ``to_list(flatten=True)`` writes)."""
    flat = f"{name}.responses"
    if flat in record:
        values = record.get(flat) or []
        users = record.get(f"{flat}.users") or []
        statuses = record.get(f"{flat}.status") or []
        if not all(isinstance(x, list) for x in (values, users, statuses)) or len(users) != len(
            values
        ):
            reading.problem(where, f"'{flat}' and '{flat}.users' must be lists of one length", flat)
            return None
        return [
            (
                {
                    "value": value,
                    "user_id": users[i],
                    "status": statuses[i] if i < len(statuses) else None,
                },
                f"{flat}[{i}]",
            )
            for i, value in enumerate(values)
        ]
    nested = (record.get("responses") or {}).get(name) or []
    if not isinstance(nested, list):
        reading.problem(where, "must be a list of responses", f"responses.{name}")
        return None
    out = []
    for i, response in enumerate(nested):
        field = f"responses.{name}[{i}]"
        if not isinstance(response, dict):
            reading.problem(f"{where} response {i + 1}", "a response is an object", field)
            continue
        out.append((response, field))
    return out


def _value(
    form: Form, raw: Any, n_responses: int, location: str, field: str, reading: Reading
) -> dict[str, Any] | None:
    """A response value as a tuneloop answer (before ``check_value``)."""
    q = Question(form.question)
    if q == Question.label:
        return {"label": raw}
    if q == Question.multilabel:
        return {"labels": raw}
    if q == Question.rating:
        return {"rating": raw}
    if q == Question.pairwise:
        return {"choice": raw}
    if q == Question.ranking:
        names = RESPONSE_NAMES[:n_responses]
        order = raw
        if isinstance(raw, list) and all(isinstance(v, dict) for v in raw):
            # the API's form: [{"value": "B", "rank": 1}, ...]
            ranked = sorted(enumerate(raw), key=lambda iv: (iv[1].get("rank") or 0, iv[0]))
            order = [v.get("value") for _, v in ranked]
        if not isinstance(order, list) or any(n not in names for n in order):
            reading.problem(
                location,
                f"expected the response names {', '.join(names)} best first, got {raw!r}",
                f"{field}.value",
            )
            return None
        return {"ranking": [names.index(n) for n in order]}
    return {"text": raw}
