"""Annotation workforces and tools: a queue out as a vendor sheet (CSV, XLSX), Label Studio tasks
or Argilla records, filled outside tuneloop by a script, and back in; agreement across imported
and native answers; every validation error names file, row and field, and imports nothing."""

from __future__ import annotations

import csv
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.conftest import CLI
from tests.people import (
    GOLD,
    PASSWORD,
    add_llm_labels,
    add_people,
    answer_counts_agree,
    fast_hashing,  # noqa: F401
    import_reviews,
    record_ids,
)
from tests.people import import_answers as import_qa_dataset
from tuneloop.errors import Forbidden, UserError
from tuneloop.metrics.agreement import agreement
from tuneloop.questions import Question
from tuneloop.store.db import Store, open_store
from tuneloop.store.models import Answer, QueueItem, User
from tuneloop.workflows.answering import next_item, submit
from tuneloop.workflows.queue_items import NewItem, dataset_items
from tuneloop.workflows.queues import QueueSpec, create_queue, update_queue
from tuneloop.workflows.review import adjudicate, disagreements, queue_agreement, resolved
from tuneloop.workflows.users import Actor, authenticate
from tuneloop.workflows.workforce import ImportProblems, export_queue, import_answers
from tuneloop.workforce import Form, FormItem, argilla, labelstudio

pytestmark = pytest.mark.usefixtures("fast_hashing")

SECRET_MODEL = "secret-model-xq"  # a model name that must never leave tuneloop


@pytest.fixture
def world(cli: CLI, db_url: str, tmp_path: Path) -> Iterator[tuple[Store, dict[str, Actor]]]:
    import_reviews(cli, tmp_path)
    import_qa_dataset(cli, tmp_path)
    store = open_store(db_url)
    people = add_people(store)
    yield store, people
    store.dispose()


def _rating_queue(store: Store, *, suggestions: bool = False, name: str = "rate") -> int:
    items = [
        NewItem(rid, [{"model": SECRET_MODEL, "text": f"response {n}"}], suggestion={"rating": 4})
        for n, rid in enumerate(record_ids(store, "answers"))
    ]
    spec = QueueSpec(
        name=name,
        question="rating",
        dataset="answers",
        annotators_per_item=3,
        members=["alice"],
        guidelines="Rate how well the response answers the question.",
        show_suggestions=suggestions,
    )
    return create_queue(store, spec, items).id


def _label_queue(store: Store, *, suggestions: bool = False) -> int:
    add_llm_labels(store, record_ids(store, "reviews"), "pos")
    spec = QueueSpec(
        name="sentiment",
        question="label",
        dataset="reviews",
        annotators_per_item=3,
        members=["alice"],
        guidelines="Positive or negative?",
        show_suggestions=suggestions,
    )
    return create_queue(store, spec, dataset_items(store, "reviews")).id


def _answer_natively(
    store: Store, actor: Actor, queue_id: int, values: list[dict[str, Any]]
) -> None:
    for value in values:
        item = next_item(store, actor, queue_id)
        assert item is not None
        submit(store, actor, queue_id, item.item_id, value)


def _item_ids(store: Store, queue_id: int) -> list[int]:
    with store.transaction() as session:
        return list(
            session.scalars(
                select(QueueItem.id)
                .where(QueueItem.queue_id == queue_id)
                .order_by(QueueItem.position)
            )
        )


def _answers(store: Store, queue_id: int) -> list[tuple[int, str, Any, str]]:
    with store.transaction() as session:
        return [
            tuple(row)  # type: ignore[misc]
            for row in session.execute(
                select(QueueItem.position, User.username, Answer.value, Answer.source)
                .join(Answer, Answer.queue_item_id == QueueItem.id)
                .join(User, User.id == Answer.user_id)
                .where(QueueItem.queue_id == queue_id)
                .order_by(QueueItem.position, User.username)
            )
        ]


def _check_agreement(store: Store, reviewer: Actor, queue_id: int, raters: list[str]) -> None:
    """The reviewer's agreement (the web app's workflow) counts imported and native answers
    alike, and equals the metric computed straight from the stored answers."""
    result = queue_agreement(store, reviewer, queue_id, resamples=50)
    assert result.raters == raters
    rows: dict[int, list[object]] = {}
    for position, user, value, _ in _answers(store, queue_id):
        coded = next(iter(value.values()))
        rows.setdefault(position, [None] * len(raters))[raters.index(user)] = coded
    table = [rows[k] for k in sorted(rows)]
    assert result.table == table
    direct = agreement(
        table, result.level or "", rater_names=raters, value_order=result.value_order, resamples=50
    )
    assert result.overall is not None and result.overall.alpha == direct.alpha
    assert [(p.a, p.b, p.kappa) for p in result.overall.pairs] == [
        (p.a, p.b, p.kappa) for p in direct.pairs
    ]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _all_text(paths: list[Path]) -> str:
    """Every string in the exported files (XLSX cells included)."""
    from openpyxl import load_workbook

    out = []
    for path in paths:
        if path.suffix == ".xlsx":
            wb = load_workbook(path, read_only=True)
            for ws in wb.worksheets:
                for row in ws.iter_rows(values_only=True):
                    out += [str(v) for v in row if v is not None]
            wb.close()
        else:
            out.append(path.read_text(encoding="utf-8-sig"))
    return "\n".join(out)


# --- the vendor sheet round trip ------------------------------------------------------------


def test_vendor_sheet_round_trip_and_agreement(
    world: tuple[Store, dict[str, Actor]], tmp_path: Path
) -> None:
    from openpyxl import load_workbook

    store, p = world
    queue_id = _rating_queue(store)
    alice = [1, 2, 3, 4, 5, 5]
    _answer_natively(store, p["alice"], queue_id, [{"rating": r} for r in alice])

    # CSV: the sheet and its instructions; what a vendor sees, never gold, model or suggestion
    sheet = export_queue(store, p["rita"], queue_id, "csv", tmp_path / "out" / "rate.csv")
    assert [x.name for x in sheet.paths] == ["rate.csv", "rate.instructions.md"]
    rows = _read_csv(sheet.paths[0])
    assert list(rows[0]) == [
        "item_id",
        "question",
        "response_A",
        "rating",
        "annotator",
        "comment",
    ]
    assert [int(r["item_id"]) for r in rows] == _item_ids(store, queue_id)
    assert rows[0]["question"] == "question 0?" and rows[0]["response_A"] == "response 0"
    assert all(r["rating"] == "" and r["annotator"] == "" for r in rows)
    guide = sheet.paths[1].read_text()
    assert "5: excellent" in guide and "Rate how well" in guide and "rating" in guide
    text = _all_text(sheet.paths)
    assert GOLD not in text and SECRET_MODEL not in text and "suggestion" not in text

    # vendor annotator 1 fills the CSV (annotator column), a script standing in for a person
    vendor1 = [1, 2, 3, 5, 5, 4]
    for row, rating in zip(rows, vendor1, strict=True):
        row["rating"], row["annotator"] = str(rating), "Vendor-1"
    rows[0]["comment"] = "clear"
    filled = tmp_path / "filled-1.csv"
    _write_csv(filled, rows)

    # XLSX: an Instructions sheet and an Items sheet with a drop-down; annotator 2 fills it and
    # sends it back without names (imported --as vendor-2)
    book = export_queue(store, None, queue_id, "xlsx", tmp_path / "rate.xlsx").paths[0]
    wb = load_workbook(book)
    assert wb.sheetnames == ["Instructions", "Items"]
    guide_rows = {r[0]: r[1] for r in wb["Instructions"].iter_rows(values_only=True)}
    assert guide_rows["queue"] == "rate" and "4: good" in guide_rows["answers"]
    items = wb["Items"]
    header = [c.value for c in items[1]]
    assert header == ["item_id", "question", "response_A", "rating", "annotator", "comment"]
    assert items.data_validations.dataValidation[0].formula1 == '"1,2,3,4,5"'
    vendor2 = [2, 2, 3, 4, 4, 5]
    for row_cells, rating in zip(items.iter_rows(min_row=2), vendor2, strict=True):
        row_cells[header.index("rating")].value = rating  # a number cell, as Excel keeps it
    wb.save(tmp_path / "filled-2.xlsx")
    assert GOLD not in _all_text([book]) and SECRET_MODEL not in _all_text([book])

    first = import_answers(store, p["ada"], queue_id, filled)
    assert (first.new, first.updated, first.unchanged, first.source) == (6, 0, 0, "import:vendor")
    assert first.annotators == ["vendor-1"] and first.new_users == ["vendor-1"]
    second = import_answers(store, None, queue_id, tmp_path / "filled-2.xlsx", as_user="vendor-2")
    assert (second.new, second.annotators, second.format) == (6, ["vendor-2"], "xlsx")
    # the same file again: nothing changes (answers are updated, never duplicated)
    again = import_answers(store, None, queue_id, filled)
    assert (again.new, again.updated, again.unchanged) == (0, 0, 6)
    rows[1]["rating"] = "1"
    _write_csv(filled, rows)
    changed = import_answers(store, None, queue_id, filled)
    assert (changed.new, changed.updated, changed.unchanged) == (0, 1, 5)
    vendor1[1] = 1

    stored = _answers(store, queue_id)
    assert len(stored) == 18
    assert answer_counts_agree(store) == 18
    assert {(u, s) for _, u, _, s in stored} == {
        ("alice", "web"),
        ("vendor-1", "import:vendor"),
        ("vendor-2", "import:vendor"),
    }
    with store.transaction() as session:
        vendor = session.scalar(select(User).where(User.username == "vendor-1"))
        assert vendor is not None and vendor.role == "annotator"
        assert not vendor.active and vendor.password_hash is None
        meta = session.scalar(
            select(Answer.meta).where(Answer.user_id == vendor.id).order_by(Answer.id).limit(1)
        )
        assert meta["comment"] == "clear" and meta["import"]["at"].endswith("row 2")
    with pytest.raises(UserError, match="wrong username or password"):
        authenticate(store, "vendor-1", PASSWORD, "127.0.0.1")

    # agreement and adjudication treat imported answers like the web app's
    _check_agreement(store, p["rita"], queue_id, ["alice", "vendor-1", "vendor-2"])
    disputed = disagreements(store, p["rita"], queue_id)
    assert [d.position for d in disputed] == [
        i + 1
        for i, trio in enumerate(zip(alice, vendor1, vendor2, strict=True))
        if len(set(trio)) > 1
    ]
    assert {s for d in disputed for _, _, s in d.answers} == {"web", "import:vendor"}
    adjudicate(store, p["rita"], queue_id, disputed[0].item_id, {"rating": 2})
    final = {r.item_id: r for r in resolved(store, p["rita"], queue_id)}
    assert final[disputed[0].item_id].how == "adjudicated"
    assert [r.how for r in final.values()].count("unanimous") == 6 - len(disputed)


def test_sheet_errors_name_file_row_and_field_and_import_nothing(
    world: tuple[Store, dict[str, Actor]], tmp_path: Path
) -> None:
    store, p = world
    queue_id = _rating_queue(store)
    sheet = export_queue(store, None, queue_id, "csv", tmp_path / "rate.csv").paths[0]
    ids = _item_ids(store, queue_id)

    def filled() -> list[dict[str, str]]:
        rows = _read_csv(sheet)
        for row in rows:
            row["rating"], row["annotator"] = "3", "v1"
        return rows

    def problems(rows: list[dict[str, str]], **kw: Any) -> str:
        path = tmp_path / "bad.csv"
        if rows:
            _write_csv(path, rows)
        with pytest.raises(ImportProblems) as err:
            import_answers(store, None, queue_id, path, **kw)
        assert "nothing imported" in str(err.value)
        return str(err.value)

    bad = tmp_path / "bad.csv"
    rows = filled()
    rows[0]["item_id"] = "99999"
    rows[1]["rating"] = "7"
    rows[2]["item_id"] = "abc"
    rows[3]["rating"] = "four"
    rows[4]["annotator"] = ""
    rows[5]["annotator"] = "Jane Doe!"
    message = problems(rows)
    # one message with every problem, each naming the file, the row and the column
    assert "7 problems" in message  # the rows with bad ids leave their items without a row
    assert f"{bad} row 2: field 'item_id': no item 99999 in queue 'rate'" in message
    assert f"{bad} row 3: field 'rating': rating 7 must be one of 1, 2, 3, 4, 5" in message
    assert f"{bad} row 4: field 'item_id': item id 'abc' is not a number" in message
    assert f"{bad} row 5: field 'rating': rating 'four' must be one of" in message
    assert f"{bad} row 6: field 'annotator': no annotator: name one, or pass --as USER" in message
    assert f"{bad} row 7: field 'annotator': annotator 'Jane Doe!' is not a usable username" in (
        message
    )
    # a duplicate row, and rows gone missing (refused unless --partial)
    rows = filled()
    rows.append(dict(rows[0]))
    message = problems(rows)
    assert (
        f"{bad} row 8: field 'annotator': a second answer of 'v1' to item {ids[0]} "
        f"(the first: {bad} row 2)" in message
    )
    rows = filled()[:4]
    message = problems(rows)
    assert f"{bad}: field 'item_id': no row for 2 of the 6 items (item_id {ids[4]}, {ids[5]})" in (
        message
    )
    assert "--partial" in message
    # an answer without an item id, a missing column, --as with two people in the file
    rows = filled()
    rows[2]["item_id"] = ""
    assert f"{bad} row 4: field 'item_id': an answer without an item id" in problems(
        rows, partial=True
    )
    rows = [{k: v for k, v in r.items() if k != "rating"} for r in filled()]
    assert f"{bad} row 1: field 'rating': no column 'rating'" in problems(rows)
    rows = filled()
    rows[1]["annotator"] = "v2"
    assert "--as v9 takes a file from one annotator; this one has answers from v1, v2" in (
        problems(rows, as_user="v9")
    )
    # nothing of all that was imported, and no one was added
    assert _answers(store, queue_id) == []
    with store.transaction() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 5
    # a part of the sheet, on purpose
    rows = filled()[:4]
    _write_csv(bad, rows)
    part = import_answers(store, None, queue_id, bad, partial=True)
    assert (part.new, part.missing) == (4, 2)
    # an empty answer cell is an item not answered: skipped, not an error
    rows = filled()
    rows[0]["rating"] = ""
    _write_csv(bad, rows)
    assert import_answers(store, None, queue_id, bad).skipped == {"no answer": 1}


def test_label_and_ranking_sheets_check_the_question(
    world: tuple[Store, dict[str, Actor]], tmp_path: Path
) -> None:
    from openpyxl import load_workbook

    store, p = world
    label = _label_queue(store)
    path = export_queue(store, None, label, "csv", tmp_path / "labels.csv").paths[0]
    rows = _read_csv(path)
    assert list(rows[0]) == ["item_id", "text", "label", "annotator", "comment"]  # no gold label
    for row, value in zip(rows, ["pos", "POS", "maybe"] + ["neg"] * 7, strict=True):
        row["label"], row["annotator"] = value, "v1"
    _write_csv(path, rows)
    with pytest.raises(ImportProblems, match=r"row 4: field 'label': label 'maybe' is not one of"):
        import_answers(store, None, label, path)
    rows[2]["label"] = "neg"
    _write_csv(path, rows)
    assert import_answers(store, None, label, path).new == 10  # "POS" is the label pos
    # ranking: a permutation of the response names, best first
    responses = [{"model": f"{SECRET_MODEL}-{j}", "text": f"answer {j}"} for j in range(3)]
    rank = create_queue(
        store,
        QueueSpec("rank", "ranking", members=["alice"]),
        [NewItem(rid, responses) for rid in record_ids(store, "answers")[:2]],
    ).id
    book = export_queue(store, None, rank, "xlsx", tmp_path / "rank.xlsx").paths[0]
    assert SECRET_MODEL not in _all_text([book])
    wb = load_workbook(book)
    sheet = wb["Items"]
    header = [c.value for c in sheet[1]]
    assert header[2:5] == ["response_A", "response_B", "response_C"]
    sheet.cell(row=2, column=header.index("ranking") + 1, value="C > A > B")
    sheet.cell(row=3, column=header.index("ranking") + 1, value="A > A > B")
    wb.save(book)
    with pytest.raises(ImportProblems) as err:
        import_answers(store, None, rank, book, as_user="v1")
    assert f"{book} sheet 'Items' row 3: field 'ranking': ranking [0, 0, 1] must list every" in (
        str(err.value)
    )
    sheet.cell(row=3, column=header.index("ranking") + 1, value="b,c,a")
    wb.save(book)
    assert import_answers(store, None, rank, book, as_user="v1").new == 2
    assert [v for *_, v, _ in _answers(store, rank)] == [
        {"ranking": [2, 0, 1]},
        {"ranking": [1, 2, 0]},
    ]
    # a sheet of another queue is refused by name
    with pytest.raises(ImportProblems, match="the sheet is for queue 'rank', not 'sentiment'"):
        import_answers(store, None, label, book, as_user="v1", partial=True)
    with pytest.raises(Forbidden):
        import_answers(store, p["rita"], label, book)
    with pytest.raises(Forbidden):
        export_queue(store, p["alice"], label, "csv", tmp_path / "x.csv")


# --- Label Studio ---------------------------------------------------------------------------


def _ls_annotation(who: Any, label: str, *, cancelled: bool = False) -> dict[str, Any]:
    result = [
        {
            "id": "r1",
            "from_name": "label",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": [label]},
            "origin": "manual",
        }
    ]
    return {
        "id": 1000,
        "completed_by": who,
        "result": [] if cancelled else result,
        "was_cancelled": cancelled,
        "ground_truth": False,
        "created_at": "2024-05-01T10:00:00.000000Z",
        "updated_at": "2024-05-01T10:00:00.000000Z",
        "lead_time": 3.2,
        "task": 1,
    }


def test_label_studio_round_trip(world: tuple[Store, dict[str, Actor]], tmp_path: Path) -> None:
    store, p = world
    queue_id = _label_queue(store)
    alice = ["pos", "neg"] * 5
    _answer_natively(store, p["alice"], queue_id, [{"label": v} for v in alice])
    out = export_queue(store, None, queue_id, "labelstudio", tmp_path / "ls").paths
    assert [x.name for x in out] == ["config.xml", "tasks.json", "instructions.md"]
    config = ET.fromstring(out[0].read_text())
    assert config.tag == "View"
    assert config.find("Text").attrib == {"name": "text", "value": "$text"}  # type: ignore[union-attr]
    choices = config.find("Choices")
    assert choices is not None and choices.attrib["name"] == "label"
    assert choices.attrib["toName"] == "text" and choices.attrib["choice"] == "single"
    assert [c.attrib["value"] for c in choices] == ["pos", "neg"]
    tasks = json.loads(out[1].read_text())
    assert len(tasks) == 10 and all(set(t) == {"data"} for t in tasks)  # no predictions
    assert all(set(t["data"]) == {"tuneloop_item_id", "text"} for t in tasks)
    assert "Positive or negative?" in out[2].read_text()

    # Label Studio's JSON export, as two annotators left it: one by email, one by user id; a
    # skipped (cancelled) annotation, and the last task nobody finished is not in the export
    ann = ["pos", "neg", "neg", "neg", "pos", "neg", "pos", "pos", "pos"]
    lsu = ["pos", "neg", "pos", "neg", "pos", "pos", "pos", "neg", "neg"]
    export = []
    for n, task in enumerate(tasks[:9]):
        annotations = [
            _ls_annotation({"id": 7, "email": "Ann@Vendor.com", "first_name": "Ann"}, ann[n]),
            _ls_annotation(8, lsu[n]),
        ]
        if n == 0:
            annotations.append(_ls_annotation(9, "neg", cancelled=True))
        export.append(
            {"id": n + 1, "data": task["data"], "annotations": annotations, "predictions": []}
        )
    path = tmp_path / "project-1-at-2024-05-01.json"
    path.write_text(json.dumps(export))
    result = import_answers(store, None, queue_id, path, annotators={"8": "lsuser"})
    assert (result.format, result.source, result.new, result.missing) == (
        "labelstudio",
        "import:labelstudio",
        18,
        1,
    )
    assert result.skipped == {"cancelled (skipped in Label Studio)": 1}
    assert result.annotators == ["ann@vendor.com", "lsuser"]
    assert import_answers(store, None, queue_id, path, annotators={"8": "lsuser"}).unchanged == 18
    _check_agreement(store, p["rita"], queue_id, ["alice", "ann@vendor.com", "lsuser"])

    # a choice outside the label set: one error naming the task and field, nothing imported
    export[3]["annotations"][1]["result"][0]["value"]["choices"] = ["neutral"]
    export[5]["data"]["tuneloop_item_id"] = 424242
    del export[6]["data"]["tuneloop_item_id"]  # a task made in Label Studio, not by tuneloop
    path.write_text(json.dumps(export))
    with pytest.raises(ImportProblems) as err:
        import_answers(store, None, queue_id, path)
    message = str(err.value)
    assert (
        f"{path} task 4 (id 4) annotation 2: field 'annotations[1].result': "
        "label 'neutral' is not one of ['pos', 'neg']" in message
    )
    assert f"{path} task 6 (id 6): field 'data.tuneloop_item_id': no item 424242" in message
    assert f"{path} task 7 (id 7): field 'data.tuneloop_item_id': no item id" in message
    assert len(_answers(store, queue_id)) == 28


def test_label_studio_shows_suggestions_only_where_the_queue_does(
    world: tuple[Store, dict[str, Actor]], tmp_path: Path
) -> None:
    store, _ = world
    queue_id = _label_queue(store, suggestions=True)
    tasks = json.loads(
        export_queue(store, None, queue_id, "labelstudio", tmp_path / "ls").paths[1].read_text()
    )
    assert tasks[0]["predictions"] == [
        {
            "model_version": "tuneloop-suggestion",
            "result": [
                {
                    "from_name": "label",
                    "to_name": "text",
                    "type": "choices",
                    "value": {"choices": ["pos"]},
                }
            ],
        }
    ]
    update_queue(store, None, queue_id, show_suggestions=False)
    tasks = json.loads(
        export_queue(store, None, queue_id, "labelstudio", tmp_path / "ls").paths[1].read_text()
    )
    assert all("predictions" not in t for t in tasks)


# --- Argilla --------------------------------------------------------------------------------

USERS = {
    "ann": "4f5b1c0e-7a57-4c1c-9a43-5a3e0a2c1d01",
    "ben": "0b9d2a6e-1c3f-4e8b-8d7a-2f6c9e1b3a02",
    "cat": "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c03",
}


def test_argilla_round_trip(world: tuple[Store, dict[str, Actor]], tmp_path: Path) -> None:
    store, p = world
    queue_id = _rating_queue(store)
    alice = [1, 2, 3, 4, 5, 5]
    _answer_natively(store, p["alice"], queue_id, [{"rating": r} for r in alice])
    out = export_queue(store, None, queue_id, "argilla", tmp_path / "argilla").paths
    assert [x.name for x in out] == ["settings.json", "records.json"]
    settings = json.loads(out[0].read_text())
    assert [f["name"] for f in settings["fields"]] == ["question", "response_a"]
    assert settings["fields"][0]["settings"] == {"type": "text", "use_markdown": False}
    (question,) = settings["questions"]
    assert question["name"] == "rating" and question["required"] is True
    assert question["settings"] == {
        "type": "rating",
        "options": [{"value": v} for v in range(1, 6)],
    }
    assert "5: excellent" in question["description"]
    assert settings["guidelines"].startswith("Rate how well")
    assert settings["metadata"][0]["name"] == "tuneloop_item_id"
    assert settings["distribution"] == {"strategy": "overlap", "min_submitted": 3}
    records = json.loads(out[1].read_text())
    ids = _item_ids(store, queue_id)
    assert [r["metadata"]["tuneloop_item_id"] for r in records] == ids
    assert records[0]["fields"] == {"question": "question 0?", "response_a": "response 0"}
    assert all(r["suggestions"] == {} and r["responses"] == {} for r in records)  # hidden
    text = _all_text(out)
    assert GOLD not in text and SECRET_MODEL not in text

    # records as Argilla exports them (Record.to_dict), with responses of three people: ann
    # and ben submitted, cat discarded one and left a draft
    ann, ben = [1, 3, 3, 4, 5, 4], [2, 2, 3, 5, 5, 5]
    for n, record in enumerate(records):
        record["_server_id"] = f"00000000-0000-0000-0000-00000000000{n}"
        record["status"] = "completed"
        record["responses"] = {
            "rating": [
                {"value": ann[n], "user_id": USERS["ann"], "status": "submitted"},
                {"value": ben[n], "user_id": USERS["ben"]},  # no status: submitted
            ]
        }
    records[0]["responses"]["rating"].append(
        {"value": 1, "user_id": USERS["cat"], "status": "discarded"}
    )
    records[1]["responses"]["rating"].append(
        {"value": 5, "user_id": USERS["cat"], "status": "draft"}
    )
    (tmp_path / "argilla" / "records.json").write_text(json.dumps(records))
    result = import_answers(
        store, None, queue_id, tmp_path / "argilla", annotators={USERS["ann"]: "ann"}
    )
    assert (result.format, result.source, result.new) == ("argilla", "import:argilla", 12)
    assert result.skipped == {"discarded in Argilla": 1, "draft in Argilla": 1}
    assert result.annotators == ["ann", f"argilla-{USERS['ben']}"]
    _check_agreement(store, p["rita"], queue_id, ["alice", "ann", f"argilla-{USERS['ben']}"])

    # a rating outside 1..5 and an unknown status: named by record, response and field
    records[2]["responses"]["rating"][0]["value"] = 9
    records[4]["responses"]["rating"][1]["status"] = "pending"
    bad = tmp_path / "records.json"
    bad.write_text(json.dumps(records))
    with pytest.raises(ImportProblems) as err:
        import_answers(store, None, queue_id, bad, "argilla")
    message = str(err.value)
    assert (
        f"{bad} record 3 (id {ids[2]}) response 1: field 'responses.rating[0].value': "
        "rating 9 must be one of 1, 2, 3, 4, 5" in message
    )
    assert f"{bad} record 5 (id {ids[4]}) response 2: field 'responses.rating[1].status'" in message
    assert len(_answers(store, queue_id)) == 18


def test_argilla_suggestions_only_where_the_queue_shows_them(
    world: tuple[Store, dict[str, Actor]], tmp_path: Path
) -> None:
    store, _ = world
    queue_id = _rating_queue(store, suggestions=True)
    records = json.loads(
        export_queue(store, None, queue_id, "argilla", tmp_path / "a").paths[1].read_text()
    )
    assert records[0]["suggestions"] == {"rating": {"value": 4, "score": None, "agent": "tuneloop"}}
    rows = _read_csv(export_queue(store, None, queue_id, "csv", tmp_path / "s.csv").paths[0])
    assert rows[0]["suggestion"] == "4"
    update_queue(store, None, queue_id, show_suggestions=False)
    records = json.loads(
        export_queue(store, None, queue_id, "argilla", tmp_path / "a").paths[1].read_text()
    )
    assert all(r["suggestions"] == {} for r in records)
    rows = _read_csv(export_queue(store, None, queue_id, "csv", tmp_path / "s.csv").paths[0])
    assert "suggestion" not in rows[0]


# --- every question type through both tools' shapes (pure) ----------------------------------

CASES: list[tuple[str, dict[str, Any], int, dict[str, Any]]] = [
    ("label", {"labels": ["pos", "neg"]}, 0, {"label": "neg"}),
    ("multilabel", {"labels": ["a", "b", "c"]}, 0, {"labels": ["a", "c"]}),
    ("rating", {"rubric": {str(k): "x" for k in range(1, 6)}}, 1, {"rating": 2}),
    ("pairwise", {"allow_tie": True}, 2, {"choice": "tie"}),
    ("ranking", {}, 3, {"ranking": [2, 0, 1]}),
    ("feedback", {}, 1, {"text": "too long"}),
    ("correction", {}, 1, {"text": "the fixed answer"}),
]


@pytest.mark.parametrize(("question", "options", "k", "value"), CASES)
def test_every_question_type_through_label_studio_and_argilla(
    question: str, options: dict[str, Any], k: int, value: dict[str, Any]
) -> None:
    form = Form("q", question, options, None, ["text"], k, True)
    item = FormItem(5, {"text": "hello"}, [f"r{j}" for j in range(k)], value)
    config = ET.fromstring(labelstudio.config(form))
    names = {e.attrib.get("name") for e in config.iter()}
    assert form.answer_name in names
    (task,) = labelstudio.tasks(form, [item])
    # an annotation is the prediction's result, as Label Studio stores both
    export = [
        {
            "id": 1,
            "data": task["data"],
            "annotations": [
                {
                    "completed_by": 3,
                    "result": task["predictions"][0]["result"],
                    "was_cancelled": False,
                }
            ],
        }
    ]
    reading = labelstudio.read_export("ls.json", export, form, {5: k})
    assert reading.problems == [] and [g.value for g in reading.answers] == [value]
    assert reading.answers[0].annotator == ("labelstudio-3", "3")
    settings = argilla.settings(form, [item])
    assert settings["questions"][0]["name"] == form.answer_name
    (record,) = argilla.records(form, [item])
    suggestion = record["suggestions"][form.answer_name]["value"]
    record["responses"] = {form.answer_name: [{"value": suggestion, "user_id": "u1"}]}
    reading = argilla.read_records("records.json", [record], form, {5: k})
    assert reading.problems == [] and [g.value for g in reading.answers] == [value]
    if question == "ranking":  # the API's form of a ranking is read too
        record["responses"]["ranking"] = [
            {
                "value": [
                    {"value": "B", "rank": 3},
                    {"value": "C", "rank": 1},
                    {"value": "A", "rank": 2},
                ],
                "user_id": "u1",
            }
        ]
        reading = argilla.read_records("records.json", [record], form, {5: k})
        assert [g.value for g in reading.answers] == [value]
    assert Question(question).value == question


# --- the command line, and a labeling job out to a vendor -----------------------------------


def test_queue_export_import_cli_and_a_labeling_job(cli: CLI, tmp_path: Path) -> None:
    import_reviews(cli, tmp_path)
    code, out, err = cli("annotate", "--dataset", "reviews", "--model", "fake")
    assert code == 0, err
    run_id = re.search(r"run (\d+)", out)
    assert run_id is not None
    code, out, err = cli(
        "queue", "create", "vendor", "--job", run_id.group(1), "--question", "label", "-k", "2"
    )
    assert code == 0, err
    assert "label items" in out
    code, out, err = cli("queue", "export", "vendor", "--out", str(tmp_path / "vendor.csv"))
    assert code == 0, err
    assert "items as csv" in out and "vendor.instructions.md" in out
    rows = _read_csv(tmp_path / "vendor.csv")
    assert "suggestion" not in rows[0] and len(rows) >= 2  # the job's labels stay hidden
    for n, row in enumerate(rows):
        row["label"], row["annotator"] = ("pos" if n % 2 else "neg"), "v1"
    _write_csv(tmp_path / "v1.csv", rows)
    for n, row in enumerate(rows):
        row["label"], row["annotator"] = ("pos" if n % 3 else "neg"), "v2"
    _write_csv(tmp_path / "v2.csv", rows)
    code, out, err = cli("queue", "import", "vendor", str(tmp_path / "v1.csv"))
    assert code == 0, err
    assert f"{len(rows)} answers imported, 0 updated, 0 unchanged, 0 skipped" in out
    assert "new people (annotators who cannot sign in): v1" in out
    assert "agreement: needs two annotators" in out
    code, out, err = cli("queue", "import", "vendor", str(tmp_path / "v2.csv"), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["new"] == len(rows) and data["agreement"]["agreement"]["raters"] == ["v1", "v2"]
    code, out, _ = cli("queue", "import", "vendor", str(tmp_path / "v2.csv"))
    assert f"0 answers imported, 0 updated, {len(rows)} unchanged" in out
    assert "agreement: Krippendorff's alpha (nominal)" in out and "2 annotators" in out
    rows[0]["label"] = "meh"
    _write_csv(tmp_path / "bad.csv", rows)
    code, _, err = cli("queue", "import", "vendor", str(tmp_path / "bad.csv"))
    assert code == 1 and "1 problem, nothing imported" in err
    assert f"{tmp_path / 'bad.csv'} row 2: field 'label': label 'meh' is not one of" in err
    # with suggestions shown, the job's labels go out as suggestions; other formats need --format
    assert cli("queue", "assign", "vendor", "--suggestions")[0] == 0
    code, out, err = cli(
        "queue", "export", "vendor", "--format", "argilla", "--out", str(tmp_path / "ar")
    )
    assert code == 0, err
    records = json.loads((tmp_path / "ar" / "records.json").read_text())
    assert {r["suggestions"]["label"]["agent"] for r in records} == {"tuneloop"}
    code, _, err = cli("queue", "export", "vendor", "--out", str(tmp_path / "ar2"))
    assert code == 1 and "pass --format" in err
    code, _, err = cli("queue", "create", "x", "--job", "999", "--question", "label")
    assert code == 1 and "no labeling job (annotate run) 999" in err
    code, _, err = cli("queue", "create", "x", "--job", run_id.group(1), "--question", "pairwise")
    assert code == 1 and "a pairwise queue needs several responses" in err
    for args in (["queue", "export"], ["queue", "import"]):
        code, out, _ = cli(*args, "--help")
        assert code == 0 and "Usage:" in out


# --- the draft README section runs as written ------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Vendors, Label Studio and Argilla"
CHECKED_OUTPUT = ("queue ", "  wrote ", "annotators ", "  new people", "  skipped ", "error: ")


def _draft_steps() -> list[tuple[str, list[str]]]:
    steps: list[tuple[str, list[str]]] = []
    readme = (ROOT / "README.md").read_text()
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    for block in re.findall(r"```text\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            if line.startswith("$ tuneloop "):
                steps.append((line[len("$ tuneloop ") :], []))
            elif steps and line.startswith(CHECKED_OUTPUT) and "..." not in line:
                steps[-1][1].append(line)
            elif steps and steps[-1][1] and steps[-1][1][0].startswith("error: "):
                steps[-1][1].append(line)  # the problems an error lists
    return steps


def _fill_draft_file(name: str, tmp_path: Path) -> None:
    """What the people outside tuneloop send back, for each file the draft imports."""
    from openpyxl import load_workbook

    target = tmp_path / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith("team.xlsx"):  # one sheet, a row per item and annotator
        wb = load_workbook(tmp_path / "vendor" / "note-ratings.xlsx")
        sheet = wb["Items"]
        header = [c.value for c in sheet[1]]
        rows = [[c.value for c in r] for r in sheet.iter_rows(min_row=2)]
        for n, row in enumerate(rows):
            row[header.index("rating")] = 2 + n % 3
            row[header.index("annotator")] = "anna@vendor.example"
            sheet.append([*row[:-3], 3 + n % 2, "Ben", "short but right"])
        for r, row in enumerate(rows, 2):
            for c, value in enumerate(row, 1):
                sheet.cell(row=r, column=c, value=value)
        wb.save(target)
    elif name.endswith(".csv"):
        rows = _read_csv(tmp_path / "vendor" / "note-ratings.csv")
        for n, row in enumerate(rows):
            row["rating"] = str(1 + n % 5)
        if name.endswith("late.csv"):
            rows[1]["rating"], rows[2]["item_id"] = "6", "999"
        _write_csv(target, rows)
    elif name.startswith("project-"):  # Label Studio's JSON export
        tasks = json.loads((tmp_path / "labelstudio" / "tasks.json").read_text())
        export = []
        for n, task in enumerate(tasks):
            annotations = [
                _ls_annotation({"id": 1, "email": "anna@vendor.example"}, "positive"),
                _ls_annotation(2, "positive" if n % 2 else "negative"),
            ]
            if n == 0:
                annotations.append(_ls_annotation(3, "negative", cancelled=True))
            export.append({"id": 100 + n, "data": task["data"], "annotations": annotations})
        target.write_text(json.dumps(export))
    else:  # Argilla records, exported flat with each response's status
        records = json.loads((tmp_path / "argilla" / "records.json").read_text())
        flat = []
        for n, record in enumerate(records):
            flat.append(
                {
                    "id": record["id"],
                    "status": "completed",
                    "_server_id": None,
                    **record["fields"],
                    **record["metadata"],
                    "label.responses": ["positive", "negative" if n else "positive", "negative"],
                    "label.responses.users": [
                        "5c0d7a52-1b7e-4b44-9f5a-0f6a4d2f1e3b",
                        USERS["ben"],
                        USERS["cat"],
                    ],
                    "label.responses.status": ["submitted", "submitted", "discarded"],
                    "label.suggestion": record["suggestions"]["label"]["value"],
                }
            )
        target.write_text(json.dumps(flat))


def test_readme_section_commands_run(cli: CLI, tmp_path: Path) -> None:
    """Every `$ tuneloop` line of README's vendors section, in order, after the walkthrough's
    imports; the fake model stands in for SmolLM2, a script for the people."""
    import shlex
    import shutil

    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    for line in (
        "data import examples/reviews.jsonl --task classification --map text=review "
        "--map label=sentiment --split 0.5,0.25,0.25 --gold 4",
        "data import examples/notes.jsonl --task summarization",
        "annotate --dataset reviews --model fake",  # the walkthrough's labeling job
    ):
        assert cli(*shlex.split(line))[0] == 0
    steps = _draft_steps()
    assert len(steps) >= 10
    job = ""
    for command, shown in steps:
        command = command.replace("smollm2-135m-instruct", "fake").replace(
            "--job 9", f"--job {job}"
        )
        args = shlex.split(command)
        if args[:2] == ["queue", "import"]:
            _fill_draft_file(args[3], tmp_path)
        code, out, err = cli(*args)
        expect_error = any(s.startswith("error: ") for s in shown)
        assert code == (1 if expect_error else 0), (command, out, err)
        if args[0] == "annotate":
            found = re.search(r"run (\d+)", out)
            assert found is not None
            job = found.group(1)
        for line in shown:
            if expect_error:  # item ids depend on what ran before
                pattern = re.sub(r"item_id\\ \d+", r"item_id\\ \\d+", re.escape(line))
                assert re.search(pattern, err), (command, line, err)
                continue
            if "(id " in line:  # queue ids depend on what ran before
                line = line.split(" (id ")[0]
            assert line in out, (command, line, out)
    late = next(shown for command, shown in steps if "late.csv" in command)
    assert len(late) == 4 and "row 3: field 'rating': rating 6 must be one of" in late[1]


def test_sheets_never_carry_formulas(tmp_path: Path) -> None:
    """Record text that looks like a formula stays text for the vendor's spreadsheet."""
    from openpyxl import load_workbook

    from tuneloop.workforce import sheets

    form = Form("q", "label", {"labels": ["pos", "neg"]}, None, ["text"], 0, False)
    evil = '=HYPERLINK("http://evil.example","click")'
    items = [
        FormItem(1, {"text": evil}, [], None),
        FormItem(2, {"text": "bell\x07 and -1"}, [], None),
    ]
    book = sheets.write_xlsx(form, items, tmp_path / "s.xlsx")[0]
    cell = load_workbook(book)["Items"]["B2"]
    assert (cell.value, cell.data_type) == (evil, "s")
    assert load_workbook(book)["Items"]["B3"].value == "bell and -1"  # no control characters
    rows = _read_csv(sheets.write_csv(form, items, tmp_path / "s.csv")[0])
    assert rows[0]["text"] == "'" + evil and rows[1]["text"] == "bell\x07 and -1"
