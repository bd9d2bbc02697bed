"""``tuneloop queue ...``: human annotation queues (create, list, show, assign, agreement) and
their way out to vendors and annotation tools and back (export, import)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tuneloop.cli.main import console, state
from tuneloop.errors import UserError

app = typer.Typer(
    help="Human annotation queues: records (or model responses) with a question type, "
    "guidelines and an assignment policy. People answer them in `tuneloop web`.",
    no_args_is_help=True,
)

QueueName = Annotated[str, typer.Argument(help="Queue name (or id).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the {what} {path}: {exc}") from None


def _rubric(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(_read_text(path, "rubric"))
    except yaml.YAMLError as exc:
        raise UserError(f"rubric {path}: not YAML/JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise UserError(f"rubric {path}: expected a mapping of ratings 1..5 to descriptions")
    return {str(k): v for k, v in data.items()}


def _item_rows(path: Path) -> Iterator[tuple[str, Mapping[str, Any]]]:
    from tuneloop.workflows.queue_items import jsonl_rows

    return jsonl_rows(_read_text(path, "items file"), str(path))


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Name of the new queue.")],
    question: Annotated[
        str,
        typer.Option(help="label, multilabel, rating, pairwise, ranking, feedback or correction."),
    ],
    dataset: Annotated[
        str | None, typer.Option(help="Dataset NAME[@VERSION] the records come from.")
    ] = None,
    split: Annotated[
        list[str] | None,
        typer.Option(help="Split(s) to take records from (default: all but gold)."),
    ] = None,
    n: Annotated[int | None, typer.Option("-n", help="A seeded sample of this many.")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    ids: Annotated[str | None, typer.Option(help="Only these record ids (comma list).")] = None,
    items: Annotated[
        Path | None,
        typer.Option(
            help="JSONL items: record_id or id, optional responses [{model, text}] and suggestion."
        ),
    ] = None,
    job: Annotated[
        int | None,
        typer.Option(
            help="The records a labeling job (annotate run id) labelled: its label as the "
            "suggestion, or its output as the response to rate or correct."
        ),
    ] = None,
    labels: Annotated[
        str | None, typer.Option(help="Label set, comma list (default: the dataset's).")
    ] = None,
    rubric: Annotated[
        Path | None, typer.Option(help="YAML/JSON mapping of ratings 1..5 to descriptions.")
    ] = None,
    guidelines: Annotated[
        Path | None, typer.Option(help="Guidelines file (Markdown/plain text).")
    ] = None,
    prompt: Annotated[str | None, typer.Option(help="The question shown to people.")] = None,
    annotators_per_item: Annotated[
        int, typer.Option("--annotators-per-item", "-k", help="Distinct people per item.")
    ] = 1,
    suggestions: Annotated[
        bool, typer.Option("--suggestions", help="Show LLM suggestions to the people.")
    ] = False,
    no_tie: Annotated[bool, typer.Option("--no-tie", help="Pairwise without 'tie'.")] = False,
    assign: Annotated[
        str | None, typer.Option(help="Usernames who may work on it (comma list).")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Create a queue from a dataset's records (splits, a sample, ids), an items file, or the
    records of a labeling job."""
    from tuneloop.workflows.queue_items import dataset_items, items_from_rows
    from tuneloop.workflows.queues import QueueSpec, create_queue

    store = state.store()
    options: dict[str, Any] = {}
    if labels:
        options["labels"] = _csv(labels)
    if rubric is not None:
        options["rubric"] = _rubric(rubric)
    if prompt:
        options["prompt"] = prompt
    if no_tie:
        options["allow_tie"] = False
    if job is not None:
        from tuneloop.workflows.job_items import job_items

        if items is not None or dataset or ids or n is not None or split:
            raise UserError("--job takes its records and dataset from the job; give it alone")
        dataset, new_items = job_items(store, job, question, state.project_name)
    elif items is not None:
        if ids or n is not None or split:
            raise UserError("give --items, or --ids / -n / --split, not both")
        new_items = items_from_rows(store, _item_rows(items), dataset, state.project_name)
    elif dataset is not None:
        new_items = dataset_items(
            store,
            dataset,
            splits=split or [],
            n=n,
            seed=seed,
            ids=_csv(ids),
            project=state.project_name,
        )
    else:
        raise UserError("queue create needs --dataset, --items or --job")
    spec = QueueSpec(
        name=name,
        question=question,
        options=options,
        guidelines=_read_text(guidelines, "guidelines") if guidelines else None,
        annotators_per_item=annotators_per_item,
        show_suggestions=suggestions,
        dataset=dataset,
        members=_csv(assign),
        project=state.project_name,
    )
    info = create_queue(store, spec, new_items)
    if as_json:
        console.print_json(json.dumps(info.to_dict()))
        return
    console.print(
        f"queue {escape(info.name)} (id {info.id}): {info.items} {info.question} items, "
        f"{info.annotators_per_item} per item, members: {', '.join(info.members) or 'none yet'}"
    )


@app.command("list")
def list_(as_json: AsJson = False) -> None:
    """The project's queues with their progress."""
    from tuneloop.workflows.answering import progress
    from tuneloop.workflows.queues import list_queues

    store = state.store()
    queues = list_queues(store, None, state.project_name)
    rows = [(q, progress(store, None, q.id)) for q in queues]
    if as_json:
        console.print_json(json.dumps([{**q.to_dict(), "progress": p.to_dict()} for q, p in rows]))
        return
    table = Table("id", "queue", "question", "items", "complete", "answers", "per item", "status")
    for q, p in rows:
        table.add_row(
            str(q.id),
            escape(q.name),
            q.question,
            str(q.items),
            str(p.complete),
            str(p.answers),
            str(q.annotators_per_item),
            q.status,
        )
    console.print(table)


@app.command("show")
def show(name: QueueName, as_json: AsJson = False) -> None:
    """A queue's question, options, policy, members and progress per annotator."""
    from tuneloop.workflows.answering import progress
    from tuneloop.workflows.queues import resolve_queue, show_queue

    store = state.store()
    queue_id = resolve_queue(store, name, state.project_name)
    info, prog = show_queue(store, None, queue_id), progress(store, None, queue_id)
    if as_json:
        console.print_json(json.dumps({**info.to_dict(), "progress": prog.to_dict()}))
        return
    console.print(f"queue {escape(info.name)} (id {info.id}), {info.status}")
    console.print(f"question   {info.question} {escape(json.dumps(info.options))}")
    console.print(f"dataset    {info.dataset or '-'}")
    console.print(f"policy     {info.annotators_per_item} distinct people per item")
    console.print(f"suggest    {'shown' if info.show_suggestions else 'hidden'}")
    console.print(f"members    {', '.join(info.members) or 'none'}")
    console.print(f"progress   {prog.complete}/{prog.items} items complete, {prog.answers} answers")
    for user, count in prog.per_annotator.items():
        console.print(f"  {user:20} {count}")


@app.command("assign")
def assign(
    name: QueueName,
    add: Annotated[str | None, typer.Option(help="Usernames to add (comma list).")] = None,
    remove: Annotated[str | None, typer.Option(help="Usernames to remove (comma list).")] = None,
    annotators_per_item: Annotated[
        int | None, typer.Option("--annotators-per-item", "-k", help="Distinct people per item.")
    ] = None,
    suggestions: Annotated[
        bool | None,
        typer.Option("--suggestions/--no-suggestions", help="Show LLM suggestions or not."),
    ] = None,
    status: Annotated[str | None, typer.Option(help="open or closed.")] = None,
) -> None:
    """Change who may work on a queue and its policy."""
    from tuneloop.workflows.queues import assign as assign_members
    from tuneloop.workflows.queues import resolve_queue, update_queue

    store = state.store()
    queue_id = resolve_queue(store, name, state.project_name)
    info = assign_members(store, None, queue_id, _csv(add), _csv(remove))
    if annotators_per_item is not None or suggestions is not None or status is not None:
        info = update_queue(
            store,
            None,
            queue_id,
            annotators_per_item=annotators_per_item,
            show_suggestions=suggestions,
            status=status,
        )
    console.print(
        f"queue {escape(info.name)}: members {', '.join(info.members) or 'none'}; "
        f"{info.annotators_per_item} per item; suggestions "
        f"{'shown' if info.show_suggestions else 'hidden'}; {info.status}"
    )


@app.command("agreement")
def agreement(
    name: QueueName,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    as_json: AsJson = False,
) -> None:
    """Krippendorff's alpha of the queue's annotators, and per pair Cohen's kappa and alpha."""
    from tuneloop.workflows.queues import resolve_queue
    from tuneloop.workflows.review import queue_agreement

    store = state.store()
    result = queue_agreement(
        store, None, resolve_queue(store, name, state.project_name), resamples=resamples, seed=seed
    )
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
        return
    if result.overall is None:
        console.print("; ".join(result.notes))
        return
    a = result.overall
    console.print(
        f"{escape(result.queue)}: Krippendorff's alpha ({a.level}) {a.alpha} over "
        f"{a.n_items} units, {a.n_raters} annotators"
    )
    table = Table("a", "b", "items", "kappa", "alpha", "observed")
    for p in a.pairs:
        table.add_row(
            p.a,
            p.b,
            str(p.n),
            f"{p.kappa:.3f}",
            result.pair_alpha[(p.a, p.b)].format(),
            f"{p.observed:.3f}",
        )
    console.print(table)
    for note in result.notes:
        console.print(f"note: {escape(note)}")


Format = Annotated[
    str | None,
    typer.Option(
        "--format",
        help="csv or xlsx (a vendor task sheet), labelstudio or argilla.",
        show_default=False,
    ),
]


@app.command("export")
def export(
    name: QueueName,
    out: Annotated[
        Path,
        typer.Option(help="The file (csv, xlsx) or folder (labelstudio, argilla) to write."),
    ],
    fmt: Format = None,
) -> None:
    """Write a queue for people outside tuneloop: a vendor task sheet (csv, xlsx) with
    instructions and empty answer columns, Label Studio tasks and labeling config, or Argilla
    dataset settings and records. Never gold labels or model names; LLM suggestions only where
    the queue shows them."""
    from tuneloop.workflows.queues import resolve_queue
    from tuneloop.workflows.workforce import FORMATS, export_queue

    if fmt is None:
        suffix = out.suffix.lower().lstrip(".")
        if suffix not in ("csv", "xlsx"):
            raise UserError(f"pass --format ({', '.join(FORMATS)})")
        fmt = suffix
    store = state.store()
    result = export_queue(store, None, resolve_queue(store, name, state.project_name), fmt, out)
    console.print(f"queue {escape(result.queue)}: {result.items} items as {result.format}")
    for path in result.paths:
        console.print(f"  wrote {escape(str(path))}")


def _mapping(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UserError(f"--annotator {pair!r}: write ID=USERNAME (e.g. 7=alice)")
        out[key.strip()] = value.strip()
    return out


@app.command("import")
def import_(
    name: QueueName,
    file: Annotated[Path, typer.Argument(help="The filled sheet, or the tool's export.")],
    fmt: Format = None,
    as_user: Annotated[
        str | None,
        typer.Option("--as", help="Every answer is this person's (a file from one annotator)."),
    ] = None,
    annotator: Annotated[
        list[str] | None,
        typer.Option(
            help="Map a name, email or user id of the file to a username: ID=USERNAME (repeatable)."
        ),
    ] = None,
    partial: Annotated[
        bool, typer.Option("--partial", help="Accept a sheet that lacks some items' rows.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Import the answers of a filled vendor sheet, a Label Studio JSON export or Argilla
    records into the queue: everything is checked first and one bad row imports nothing.
    Annotators become people of tuneloop (added as annotators who cannot sign in), so agreement
    and adjudication count their answers. Importing the same file again changes nothing."""
    from tuneloop.workflows.queues import resolve_queue
    from tuneloop.workflows.review import queue_agreement
    from tuneloop.workflows.workforce import import_answers

    store = state.store()
    queue_id = resolve_queue(store, name, state.project_name)
    result = import_answers(
        store,
        None,
        queue_id,
        file,
        fmt,
        as_user=as_user,
        annotators=_mapping(annotator),
        partial=partial or None,
    )
    agreement = queue_agreement(store, None, queue_id, resamples=200)
    if as_json:
        data = result.to_dict()
        data["agreement"] = agreement.to_dict()
        console.print_json(json.dumps(data))
        return
    console.print(
        f"queue {escape(result.queue)}: {result.new} answers imported, {result.updated} updated, "
        f"{result.unchanged} unchanged, {sum(result.skipped.values())} skipped "
        f"(from {escape(result.file)}, source {result.source})"
    )
    for why, count in sorted(result.skipped.items()):
        console.print(f"  skipped {count}: {escape(why)}")
    if result.missing:
        console.print(f"  {result.missing} items of the queue are not in the file")
    console.print(f"annotators {', '.join(result.annotators) or 'none'}")
    if result.new_users:
        console.print(
            f"  new people (annotators who cannot sign in): {', '.join(result.new_users)}"
        )
    if result.over_policy:
        console.print(
            f"  {result.over_policy} items now have more answers than the queue's people per item"
        )
    overall = agreement.overall
    if overall is not None and overall.n_raters >= 2 and overall.n_items:
        console.print(
            f"agreement: Krippendorff's alpha ({overall.level}) {overall.alpha} over "
            f"{overall.n_items} units, {overall.n_raters} annotators; pairs and disagreements: "
            f"`tuneloop queue agreement {escape(name)}` and the reviewer pages"
        )
    elif agreement.level is not None:
        console.print("agreement: needs two annotators on the same items")
