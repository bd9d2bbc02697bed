"""Queue items from a labeling job (an ``annotate`` run): its records, with the job's label as
the item's suggestion or its output as the response to judge, so that a job's records can go to
people (the web app, a vendor, Label Studio, Argilla) like any queue's."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from tuneloop.errors import NotFound, UserError
from tuneloop.questions import Question, question_spec
from tuneloop.store.db import Store, get_project
from tuneloop.store.models import Dataset, Label, Record, Run
from tuneloop.workflows.queue_items import NewItem


def job_items(
    store: Store, run_id: int, question: str, project: str = "default"
) -> tuple[str, list[NewItem]]:
    """Queue items for the records a labeling job (an ``annotate`` run) labelled, and the
    job's dataset: for label and multilabel questions the job's label is the item's suggestion
    (shown only where the queue shows suggestions); for rating, feedback and correction the
    job's output is the response to judge."""
    try:
        q = question_spec(question).type
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if q in (Question.pairwise, Question.ranking):
        raise UserError(
            f"a labeling job gives one output per record; a {q} queue needs several responses"
        )
    with store.transaction() as session:
        proj = get_project(session, project)
        run = session.get(Run, run_id)
        if run is None or run.kind != "annotate" or run.project_id != proj.id:
            raise NotFound(f"no labeling job (annotate run) {run_id} in project {proj.name!r}")
        ds = session.get(Dataset, run.dataset_id) if run.dataset_id else None
        if ds is None:
            raise NotFound(f"labeling job {run_id} has no dataset any more")
        rows = session.execute(
            select(Label.record_id, Label.value, Label.status)
            .join(Record, Record.id == Label.record_id)
            .where(Label.run_id == run.id)
            .order_by(Record.position, Label.id)
        ).all()
        model = str(run.config.get("model") or "llm")
        ref = ds.ref
    if not rows:
        raise UserError(f"labeling job {run_id} has labelled no records yet")
    items = []
    for record_id, value, status in dict((r[0], r) for r in rows).values():
        where = f"labeling job {run_id} record {record_id}"
        if q == Question.label:
            suggestion: dict[str, Any] | None = (
                {"label": value} if status == "accepted" and isinstance(value, str) else None
            )
            items.append(NewItem(record_id, suggestion=suggestion, location=where))
        elif q == Question.multilabel:
            labels = value if isinstance(value, list) else [value]
            suggestion = {"labels": labels} if status == "accepted" else None
            items.append(NewItem(record_id, suggestion=suggestion, location=where))
        else:
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            items.append(NewItem(record_id, [{"model": model, "text": text}], location=where))
    return ref, items
