"""``tuneloop metrics ...``: metrics on files, no database (classification, text, agreement).

Input files: ``.txt`` (one value per line), ``.jsonl`` (one object per line; the field is
``--field``, else the first of a few usual names present), ``.csv`` / ``.tsv`` (the column is
``--field``). When both files carry an ``id`` field, values are matched by id; otherwise line
by line, and the counts must match.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tuneloop.cli.main import console
from tuneloop.errors import InputError, UserError

if TYPE_CHECKING:
    from tuneloop.metrics.intervals import Interval

app = typer.Typer(
    help="Metrics on files, no database: classification, text overlap, agreement.",
    no_args_is_help=True,
)

GOLD_FIELDS = ("label", "reference", "text", "prediction")
PRED_FIELDS = ("prediction", "label", "text")
ID_COLUMNS = ("id", "item")


class Level(StrEnum):
    nominal = "nominal"
    ordinal = "ordinal"
    interval = "interval"
    ratio = "ratio"


FieldOpt = Annotated[
    str | None,
    typer.Option(
        "--field",
        help="Field (JSONL) or column (CSV/TSV) holding the values, in both files "
        "(default: the first of label/prediction/text present).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
ResamplesOpt = Annotated[int, typer.Option(min=1, help="Bootstrap resamples for intervals.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the bootstrap.")]
ConfidenceOpt = Annotated[
    float, typer.Option(min=0.0, max=1.0, help="Confidence level of the intervals.")
]


# ----------------------------------------------------------------------------- reading files


@dataclass
class Column:
    """The values read from one file, where each came from, and their ids (when every row has
    one)."""

    path: str
    field: str | None
    values: list[str | None]
    locations: list[str]
    ids: list[str] | None


def _scalar(value: Any, location: str, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    raise InputError(location, f"expected a string, got {type(value).__name__}", field=field)


def _kind(path: str) -> str:
    from tuneloop.io.readers import detect_format

    if Path(path).name.lower().endswith(".txt"):
        return "txt"
    try:
        fmt = detect_format(path)
    except UserError:
        fmt = "?"
    if fmt not in ("jsonl", "csv", "tsv"):
        raise UserError(f"{path}: read .txt, .jsonl, .csv or .tsv files here")
    return fmt


def _read_txt(path: Path) -> Column:
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    values: list[str | None] = []
    for number, line in enumerate(lines, 1):
        try:
            values.append(line.decode("utf-8").removesuffix("\r"))
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{path}:{number}", f"invalid UTF-8 (column {exc.start + 1})"
            ) from None
    return Column(str(path), None, values, [f"{path}:{i}" for i in range(1, len(values) + 1)], None)


def read_column(path: str, field: str | None, candidates: tuple[str, ...]) -> Column:
    """One value per line/record/row of ``path``; errors name the file, line and field."""
    from tuneloop.io.readers import read_csv, read_jsonl, read_tsv

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: no such file")
    kind = _kind(path)
    if p.stat().st_size == 0:
        raise InputError(path, "file is empty (no values)")
    if kind == "txt":
        return _read_txt(p)
    reader = {"jsonl": read_jsonl, "csv": read_csv, "tsv": read_tsv}[kind]
    values: list[str | None] = []
    locations: list[str] = []
    ids: list[str] | None = []
    seen: dict[str, str] = {}
    name = field
    for row in reader(p).rows:
        if name is None:
            found = [c for c in candidates if c in row.values]
            if not found and kind != "jsonl" and len(row.values) == 1:
                found = list(row.values)
            if not found:
                fields = ", ".join(row.values) or "none"
                raise InputError(
                    row.location,
                    f"no {'/'.join(candidates)} field; name one with --field (fields: {fields})",
                )
            name = found[0]
        if name not in row.values:
            raise InputError(row.location, "missing", field=name)
        values.append(_scalar(row.values[name], row.location, name))
        locations.append(row.location)
        item_id = row.values.get("id")
        if ids is not None and item_id not in (None, ""):
            key = str(item_id)
            if key in seen:
                raise InputError(
                    row.location, f"duplicate id {key!r} (also at {seen[key]})", field="id"
                )
            seen[key] = row.location
            ids.append(key)
        else:
            ids = None
    if not values:
        raise InputError(path, "file has no records")
    return Column(path, name, values, locations, ids)


def align(first: Column, second: Column) -> Column:
    """``second`` in the order of ``first``: by id when both have ids, else line by line."""
    if first.ids is not None and second.ids is not None:
        where = {k: i for i, k in enumerate(second.ids)}
        for key, loc in zip(first.ids, first.locations, strict=True):
            if key not in where:
                raise InputError(second.path, f"id {key!r} (from {loc}) is not in this file")
        known = set(first.ids)
        for key, loc in zip(second.ids, second.locations, strict=True):
            if key not in known:
                raise InputError(loc, f"id {key!r} is not in {first.path}", field="id")
        order = [where[k] for k in first.ids]
        return Column(
            second.path,
            second.field,
            [second.values[i] for i in order],
            [second.locations[i] for i in order],
            list(first.ids),
        )
    if len(first.values) != len(second.values):
        raise UserError(
            f"{first.path} has {len(first.values)} values but {second.path} has "
            f"{len(second.values)}; they must match line for line (or both carry an 'id' field)"
        )
    return second


def _source(col: Column) -> str:
    return col.path if col.field is None else f"{col.path} (field {col.field})"


def _print_json(result: Any) -> None:
    typer.echo(json.dumps(result.to_dict()))


def _iv(interval: Interval, digits: int = 3) -> str:
    """An interval for a table cell: one line, or value over interval on a narrow screen."""
    text = interval.format(digits)
    return text if console.width >= 120 else text.replace(" [", "\n[", 1)


# ----------------------------------------------------------------------------- classification


@app.command()
def classification(
    gold: Annotated[str, typer.Option(help="Gold labels: .txt, .jsonl, .csv or .tsv.")],
    pred: Annotated[str, typer.Option(help="Predicted labels (empty/null: no answer).")],
    labels: Annotated[
        str | None,
        typer.Option(help="The label set, comma-separated (default: the gold values)."),
    ] = None,
    field: FieldOpt = None,
    as_json: JsonOpt = False,
    resamples: ResamplesOpt = 1000,
    seed: SeedOpt = 0,
    confidence: ConfidenceOpt = 0.95,
) -> None:
    """Accuracy, per-class and averaged precision/recall/F1 with intervals; confusion matrix."""
    from tuneloop.metrics.classification import NO_ANSWER, classification_metrics

    g = read_column(gold, field, GOLD_FIELDS)
    p = align(g, read_column(pred, field, PRED_FIELDS))
    names = None
    if labels is not None:
        names = [x.strip() for x in labels.split(",") if x.strip()]
        if not names:
            raise UserError("--labels is empty; write e.g. --labels pos,neg")
    gold_values: list[str] = []
    for value, loc in zip(g.values, g.locations, strict=True):
        label = (value or "").strip()
        if not label:
            raise InputError(loc, "empty gold label", field=g.field)
        if names is not None and label not in names:
            raise InputError(
                loc, f"gold label {label!r} is not among --labels ({', '.join(names)})", g.field
            )
        gold_values.append(label)
    pred_values = [(v or "").strip() or None for v in p.values]
    try:
        result = classification_metrics(
            gold_values, pred_values, names, resamples=resamples, seed=seed, confidence=confidence
        )
    except ValueError as exc:
        raise UserError(f"{gold}, {pred}: {exc}") from None
    if as_json:
        _print_json(result)
        return

    console.print(f"gold        {escape(_source(g))}")
    console.print(f"predictions {escape(_source(p))}")
    ci = f"{confidence:.0%} interval, {resamples} resamples"
    console.print(f"[bold]{result.n}[/] items; accuracy [bold]{result.accuracy}[/] ({ci})")
    table = Table("label", "support", "precision", "recall", "F1", title_justify="left")
    for name, s in result.per_class.items():
        table.add_row(escape(name), str(s.support), _iv(s.precision), _iv(s.recall), _iv(s.f1))
    for avg, scores in (("macro avg", result.macro), ("micro avg", result.micro)):
        table.add_row(
            avg,
            str(result.n),
            _iv(scores["precision"]),
            _iv(scores["recall"]),
            _iv(scores["f1"]),
            style="bold",
        )
    console.print(table)
    matrix = Table(title="confusion matrix", title_justify="left")
    matrix.add_column("gold \\ predicted")
    for col in result.columns:
        matrix.add_column(escape(col), justify="right")
    for name, row in zip(result.labels, result.confusion, strict=True):
        matrix.add_row(escape(name), *[str(x) for x in row])
    console.print(matrix)
    if result.no_answer:
        were = "prediction was" if result.no_answer == 1 else "predictions were"
        console.print(
            f"[yellow]note:[/] {result.no_answer} {were} empty or outside the labels; "
            f"counted as wrong (column {escape(NO_ANSWER)})."
        )


# ----------------------------------------------------------------------------- text


@app.command()
def text(
    refs: Annotated[str, typer.Option(help="Reference texts: .txt, .jsonl, .csv or .tsv.")],
    preds: Annotated[str, typer.Option(help="Predicted texts, one per reference.")],
    field: FieldOpt = None,
    as_json: JsonOpt = False,
    resamples: ResamplesOpt = 1000,
    seed: SeedOpt = 0,
    confidence: ConfidenceOpt = 0.95,
) -> None:
    """ROUGE-1/2/L (mean per-item F), corpus BLEU and chrF, with bootstrap intervals."""
    from tuneloop.metrics.text import text_metrics

    r = read_column(refs, field, GOLD_FIELDS)
    p = align(r, read_column(preds, field, PRED_FIELDS))
    for value, loc in zip(r.values, r.locations, strict=True):
        if value is None:
            raise InputError(loc, "reference is null", field=r.field)
    try:
        result = text_metrics(
            [v or "" for v in r.values],
            [v or "" for v in p.values],
            resamples=resamples,
            seed=seed,
            confidence=confidence,
        )
    except ValueError as exc:
        raise UserError(f"{refs}, {preds}: {exc}") from None
    if as_json:
        _print_json(result)
        return
    console.print(f"references  {escape(_source(r))}")
    console.print(f"predictions {escape(_source(p))}")
    table = Table(
        "metric",
        "value [interval]",
        "scale",
        title=f"{result.n} items ({confidence:.0%} intervals, {resamples} resamples)",
        title_justify="left",
    )
    table.add_row("ROUGE-1", _iv(result.rouge1), "mean F, 0..1")
    table.add_row("ROUGE-2", _iv(result.rouge2), "mean F, 0..1")
    table.add_row("ROUGE-L", _iv(result.rougeL), "mean F, 0..1")
    table.add_row("BLEU", _iv(result.bleu, 2), "corpus, 0..100")
    table.add_row("chrF", _iv(result.chrf, 2), "corpus, 0..100")
    console.print(table)


# ----------------------------------------------------------------------------- agreement


def _read_ratings(
    path: str, order: list[str] | None
) -> tuple[list[str], list[list[object | None]], list[object] | None]:
    """Rater names, the rating rows (numbers when every cell is one) and the value order."""
    from tuneloop.io.readers import read_csv, read_tsv

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: no such file")
    kind = _kind(path)
    if kind not in ("csv", "tsv"):
        raise UserError(f"{path}: ratings are a .csv or .tsv file (header: rater names)")
    if p.stat().st_size == 0:
        raise InputError(path, "file is empty (no ratings)")
    source = (read_csv if kind == "csv" else read_tsv)(p)
    rows = [(r.location, r.values) for r in source.rows]
    header = source.columns or []
    raters = header[1:] if header and header[0].strip().lower() in ID_COLUMNS else header
    if not raters:
        raise InputError(f"{path}:1", "no rater columns in the header")
    if not rows:
        raise InputError(path, "no rows of ratings under the header")
    cells = [[(v.get(r) or "").strip() or None for r in raters] for _, v in rows]

    def number(s: str) -> float | None:
        try:
            return float(s)
        except ValueError:
            return None

    present = [c for row in cells for c in row if c is not None]
    numeric = bool(present) and all(number(c) is not None for c in present)
    if order is not None and numeric:
        bad = [x for x in order if number(x) is None]
        if bad:
            raise UserError(f"--order: ratings in {path} are numbers but {bad[0]!r} is not")
    value_order: list[object] | None = None
    if order is not None:
        value_order = [number(x) if numeric else x for x in order]
        allowed = set(value_order)
        for (loc, _), row in zip(rows, cells, strict=True):
            for rater, cell in zip(raters, row, strict=True):
                if cell is not None and (number(cell) if numeric else cell) not in allowed:
                    raise InputError(loc, f"rating {cell!r} is not in --order", field=rater)
    ratings: list[list[object | None]] = [
        [None if c is None else (number(c) if numeric else c) for c in row] for row in cells
    ]
    return raters, ratings, value_order


@app.command()
def agreement(
    ratings: Annotated[
        str,
        typer.Option(
            help="CSV/TSV: header = rater names, one row per item, empty cell = not rated; "
            "a first column named id or item is the item id."
        ),
    ],
    level: Annotated[Level, typer.Option(help="Level of measurement.")] = Level.nominal,
    order: Annotated[
        str | None,
        typer.Option(
            help="The values from lowest to highest, comma-separated (needed for ordinal "
            "ratings that are words, e.g. bad,ok,good)."
        ),
    ] = None,
    as_json: JsonOpt = False,
    resamples: ResamplesOpt = 1000,
    seed: SeedOpt = 0,
    confidence: ConfidenceOpt = 0.95,
) -> None:
    """Krippendorff's alpha of all raters with an interval, and Cohen's kappa of every pair."""
    from tuneloop.metrics.agreement import agreement as compute

    value_order = [x.strip() for x in order.split(",") if x.strip()] if order else None
    raters, rows, values = _read_ratings(ratings, value_order)
    words = any(isinstance(v, str) for row in rows for v in row)
    if words and values is None and level is not Level.nominal:
        raise UserError(
            f"{ratings}: {level.value} ratings are words here; give their order from lowest to "
            "highest with --order, e.g. --order bad,ok,good"
        )
    try:
        result = compute(
            rows,
            level.value,
            rater_names=raters,
            value_order=values,
            resamples=resamples,
            seed=seed,
            confidence=confidence,
        )
    except ValueError as exc:
        raise UserError(f"{ratings}: {exc}") from None
    if as_json:
        _print_json(result)
        return
    console.print(
        f"{escape(ratings)}: {result.n_raters} raters, {result.n_items} items rated twice or more"
    )
    console.print(
        f"Krippendorff's alpha ({result.level}): [bold]{result.alpha}[/] "
        f"({confidence:.0%} interval, {resamples} resamples)"
    )
    weights = {"nominal": "", "ordinal": " (linear)", "interval": " (quadratic)"}
    table = Table(
        "rater",
        "rater",
        "items",
        f"Cohen's kappa{weights.get(result.level, ' (quadratic)')}",
        "identical",
        title="pairs",
        title_justify="left",
    )
    for pair in result.pairs:
        kappa = "n/a" if pair.kappa != pair.kappa else f"{pair.kappa:.3f}"
        table.add_row(escape(pair.a), escape(pair.b), str(pair.n), kappa, f"{pair.observed:.1%}")
    if result.pairs:
        console.print(table)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
