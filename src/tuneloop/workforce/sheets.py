"""Task sheets for an external vendor: CSV (with a Markdown instructions file beside it) or XLSX
(an Instructions sheet and an Items sheet), one row per item, and the filled sheet read back.

Columns: ``item_id``, the record's input fields, ``response_A`` ... (model responses, without
model names), ``suggestion`` (only where the queue shows suggestions), the empty answer column
(named after the question: ``label``, ``labels``, ``rating``, ``choice``, ``ranking``,
``feedback`` or ``correction``), ``annotator`` and ``comment``. Rows count as a spreadsheet
shows them: the header is row 1.

A vendor may hand back one sheet per annotator or one sheet with a row per item and annotator.
A row whose answer cell is empty is skipped (not answered); other columns are not read back.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tuneloop.questions import AnswerError
from tuneloop.workforce import (
    Collector,
    Form,
    FormItem,
    Reading,
    allowed_answers,
    cell_text,
    question_text,
    response_field,
    text_of_value,
    value_from_text,
)

ITEM = "item_id"
ANNOTATOR = "annotator"
COMMENT = "comment"
SUGGESTION = "suggestion"
ITEMS_SHEET = "Items"
INSTRUCTIONS_SHEET = "Instructions"
MAX_CELL = 32_000  # Excel keeps at most 32,767 characters in a cell
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def columns(form: Form) -> list[str]:
    cols = [ITEM, *form.input_fields, *(response_field(n) for n in form.response_names)]
    if form.show_suggestions:
        cols.append(SUGGESTION)
    return [*cols, form.answer_name, ANNOTATOR, COMMENT]


def rows(form: Form, items: Iterable[FormItem]) -> Iterator[list[Any]]:
    """The Items rows: what the annotator reads, and empty answer cells."""
    for item in items:
        row: list[Any] = [item.item_id]
        row += [item.inputs.get(f, "") for f in form.input_fields]
        row += [
            item.responses[i] if i < len(item.responses) else "" for i in range(form.n_responses)
        ]
        if form.show_suggestions:
            row.append(text_of_value(form.question, item.suggestion) if item.suggestion else "")
        yield [*row, "", "", ""]


def instructions(form: Form) -> list[tuple[str, str]]:
    """(heading, text) pairs: the queue, the question, the allowed answers, how to fill in."""
    answer = form.answer_name
    out = [
        ("queue", form.queue),
        ("question", question_text(form)),
        ("answers", "\n".join(allowed_answers(form))),
        ("guidelines", form.guidelines or "(none)"),
        (
            "how to fill in",
            f"Write your answer in the column '{answer}' of each row and your name or id in "
            f"'{ANNOTATOR}' ('{COMMENT}' is optional). Leave '{answer}' empty for an item you "
            f"do not answer. Do not change '{ITEM}', and do not delete rows. Several annotators: "
            "one copy of the sheet each, or copies of the rows with each annotator's name.",
        ),
    ]
    if form.show_suggestions:
        out.append(("suggestion", "A machine's guess, shown to help; it may be wrong."))
    return out


def instructions_markdown(form: Form) -> str:
    parts = [f"# Task sheet: {form.queue}\n"]
    for heading, text in instructions(form):
        parts.append(f"## {heading.capitalize()}\n\n{text}\n")
    return "\n".join(parts)


def _display(value: Any) -> Any:
    """A display cell that no spreadsheet reads as a formula, and that fits in a cell."""
    if not isinstance(value, str):
        return value
    if len(value) > MAX_CELL:
        value = value[:MAX_CELL] + " [... cut: the text is longer than a cell holds]"
    return value


def _csv_safe(value: Any) -> Any:
    value = _display(value)
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value  # shown as text by spreadsheets, never run as a formula
    return value


def write_csv(form: Form, items: Iterable[FormItem], path: Path) -> list[Path]:
    """The sheet (UTF-8 with a byte order mark, so that Excel reads it right) and its
    instructions beside it (``NAME.instructions.md``); the paths written."""
    guide = path.with_name(path.stem + ".instructions.md")
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns(form))
        for row in rows(form, items):
            writer.writerow([_csv_safe(v) for v in row])
    guide_tmp = guide.with_name(guide.name + ".partial")
    guide_tmp.write_text(instructions_markdown(form), encoding="utf-8")
    os.replace(tmp, path)
    os.replace(guide_tmp, guide)
    return [path, guide]


def write_xlsx(form: Form, items: Iterable[FormItem], path: Path) -> list[Path]:
    from openpyxl import Workbook
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
    from openpyxl.styles import Alignment, Font
    from openpyxl.worksheet.datavalidation import DataValidation

    def clean(value: Any) -> Any:
        value = _display(value)
        return ILLEGAL_CHARACTERS_RE.sub("", value) if isinstance(value, str) else value

    wb = Workbook()
    guide = wb.active
    guide.title = INSTRUCTIONS_SHEET
    for heading, text in instructions(form):
        guide.append([heading, clean(text)])
    for cell in guide["A"]:
        cell.font = Font(bold=True)
    for cell in guide["B"]:
        cell.alignment = Alignment(wrap_text=True, vertical="top")
    guide.column_dimensions["A"].width = 16
    guide.column_dimensions["B"].width = 100

    sheet = wb.create_sheet(ITEMS_SHEET)
    header = columns(form)
    sheet.append(header)
    n = 0
    for row in rows(form, items):
        sheet.append([clean(v) for v in row])
        n += 1
    for row_cells in sheet.iter_rows(min_row=2):
        for cell in row_cells:
            if isinstance(cell.value, str) and cell.value.startswith("="):
                cell.data_type = "s"  # text, never a formula
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    sheet.freeze_panes = "B2"
    answer_col = header.index(form.answer_name) + 1
    choices = _choices(form)
    if choices is not None and n:
        letter = sheet.cell(row=1, column=answer_col).column_letter
        check = DataValidation(
            type="list",
            formula1='"' + ",".join(choices) + '"',
            allow_blank=True,
            showErrorMessage=True,
            errorTitle="Not an allowed answer",
            error="Pick one of: " + ", ".join(choices),
        )
        sheet.add_data_validation(check)
        check.add(f"{letter}2:{letter}{n + 1}")
    tmp = path.with_name(path.name + ".partial")
    wb.save(tmp)
    wb.close()
    os.replace(tmp, path)
    return [path]


def _choices(form: Form) -> list[str] | None:
    """Allowed cell values for a drop-down, where the question has a short closed set."""
    if form.question == "label":
        labels: list[str] = form.options["labels"]
        if all('"' not in v and "," not in v for v in labels) and len(",".join(labels)) < 250:
            return labels
        return None
    if form.question == "rating":
        return ["1", "2", "3", "4", "5"]
    if form.question == "pairwise":
        return ["A", "tie", "B"] if form.options.get("allow_tie", True) else ["A", "B"]
    return None


def read_csv(path: Path, form: Form, items: Mapping[int, int]) -> Reading:
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            table = [list(r) for r in csv.reader(f)]
    except UnicodeDecodeError as exc:
        collector = Collector(form, items)
        collector.reading.problem(str(path), f"not UTF-8 text ({exc.reason}); save it as CSV UTF-8")
        return collector.reading
    except csv.Error as exc:
        collector = Collector(form, items)
        collector.reading.problem(str(path), f"not a CSV file: {exc}")
        return collector.reading
    return read_table(str(path), table, form, items)


def read_xlsx(path: Path, form: Form, items: Mapping[int, int]) -> Reading:
    from zipfile import BadZipFile

    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        wb = load_workbook(path, read_only=True, data_only=True)
    except (BadZipFile, InvalidFileException, KeyError, OSError) as exc:
        collector = Collector(form, items)
        collector.reading.problem(str(path), f"not an XLSX workbook: {exc}")
        return collector.reading
    try:
        name = ITEMS_SHEET if ITEMS_SHEET in wb.sheetnames else wb.sheetnames[0]
        table = [list(r) for r in wb[name].iter_rows(values_only=True)]
        queue = None
        if INSTRUCTIONS_SHEET in wb.sheetnames:
            for row in wb[INSTRUCTIONS_SHEET].iter_rows(values_only=True):
                if len(row) > 1 and row[0] == "queue":
                    queue = cell_text(row[1])
    finally:
        wb.close()
    reading = read_table(f"{path} sheet {name!r}", table, form, items)
    reading.queue = queue
    return reading


def read_table(
    where: str, table: Sequence[Sequence[Any]], form: Form, items: Mapping[int, int]
) -> Reading:
    """The answers of a sheet's rows (``table[0]`` is the header)."""
    collector = Collector(form, items)
    reading = collector.reading
    if not table:
        reading.problem(where, "the sheet is empty (no header row)")
        return reading
    header = [cell_text(c) for c in table[0]]
    answer = form.answer_name
    for needed in (ITEM, answer):
        if needed not in header:
            reading.problem(
                f"{where} row 1",
                f"no column '{needed}' (the header has {', '.join(header)})",
                needed,
            )
    if reading.problems:
        return reading
    col = {
        name: header.index(name) for name in (ITEM, answer, ANNOTATOR, COMMENT) if name in header
    }

    def get(row: Sequence[Any], name: str) -> Any:
        i = col.get(name)
        return row[i] if i is not None and i < len(row) else None

    for number, row in enumerate(table[1:], 2):
        location = f"{where} row {number}"
        raw_id, text = get(row, ITEM), cell_text(get(row, answer))
        if cell_text(raw_id) == "":
            if text:
                reading.problem(location, "an answer without an item id", ITEM)
            continue  # a blank row
        item_id = collector.item(location, raw_id, ITEM)
        if item_id is None:
            continue
        if not text:
            collector.skip(location, "no answer")
            continue
        name = cell_text(get(row, ANNOTATOR))
        raw = _value(form, text, items[item_id], location, answer, collector)
        if raw is not None:
            collector.answer(
                location,
                item_id,
                (name,) if name else (),
                ANNOTATOR,
                raw,
                answer,
                cell_text(get(row, COMMENT)),
            )
    return reading


def _value(
    form: Form, text: str, n_responses: int, location: str, answer: str, collector: Collector
) -> dict[str, Any] | None:
    try:
        return value_from_text(form, text, n_responses)
    except AnswerError as exc:
        collector.reading.problem(location, str(exc), answer)
        return None
