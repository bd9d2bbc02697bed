"""``tuneloop feedback ...``: challenging examples into review queues, and people's answers
back into training data (human labels, SFT and preference records, ratings); simulated
annotators answer label queues for experiments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tuneloop.cli.main import console, state
from tuneloop.errors import UserError

app = typer.Typer(
    help="Human feedback on a model: select the items it finds hardest into a review queue, "
    "then turn the answers into training data (or simulate the answers, for experiments).",
    no_args_is_help=True,
)

QueueRef = Annotated[str, typer.Option("--queue", help="Queue name (or id).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the {what} {path}: {exc}") from None


def _rubric(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(_read(path, "rubric"))
    except yaml.YAMLError as exc:
        raise UserError(f"rubric {path}: not YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"rubric {path}: expected a mapping of ratings 1..5 to descriptions")
    return {str(k): v for k, v in data.items()}


@app.command("select")
def select(
    model: Annotated[
        list[str],
        typer.Option(
            help="The model to examine (a trained model's name, a registry model, fake). "
            "Repeat for pairwise/ranking queues: one response from each."
        ),
    ],
    dataset: Annotated[
        str | None,
        typer.Option(
            help="Dataset NAME or NAME@VERSION (default: the one the model was trained on)."
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Split whose records are scored.")] = "validation",
    strategy: Annotated[
        str,
        typer.Option(
            help="uncertainty, disagreement, judge-low, slice, or random (a seeded uniform "
            "sample: the baseline)."
        ),
    ] = "uncertainty",
    n: Annotated[int, typer.Option("-n", "--n", help="How many items the queue gets.")] = 100,
    candidates: Annotated[
        int | None,
        typer.Option(
            help="Score a seeded sample of this many of the split's records, not all of them "
            "(faster on a large split)."
        ),
    ] = None,
    question: Annotated[
        str,
        typer.Option(help="label, rating, pairwise, ranking, correction or feedback."),
    ] = "label",
    queue: Annotated[
        str | None, typer.Option(help="Name of the new queue (default DATASET-STRATEGY-RUN).")
    ] = None,
    responses: Annotated[
        int | None,
        typer.Option(help="Responses per item of a ranking queue (default 3, or one per model)."),
    ] = None,
    temperature: Annotated[
        float, typer.Option(help="Sampling temperature for several responses of one model.")
    ] = 0.8,
    measure: Annotated[
        str, typer.Option(help="Uncertainty by margin (lowest first) or entropy (highest).")
    ] = "margin",
    min_slice: Annotated[int, typer.Option(help="Smallest slice ranked (slice).")] = 5,
    judge: Annotated[
        str | None, typer.Option(help="Judge model (judge-low; slice for generative tasks).")
    ] = None,
    judge_prompt: Annotated[str | None, typer.Option(help="Judge prompt NAME[@VERSION].")] = None,
    allow_same_family: Annotated[
        bool, typer.Option("--allow-same-family", help="Allow a judge of the model's family.")
    ] = False,
    include_queued: Annotated[
        bool,
        typer.Option(
            "--include-queued", help="Also records already in a queue of this question type."
        ),
    ] = False,
    seed: Annotated[
        int, typer.Option(help="Seed of samples, response order and the random draw.")
    ] = 0,
    max_tokens: Annotated[int, typer.Option(help="Longest generated answer.")] = 256,
    annotators_per_item: Annotated[
        int, typer.Option("--annotators-per-item", "-k", help="Distinct people per item.")
    ] = 1,
    assign: Annotated[
        str | None, typer.Option(help="Usernames who may work on it (comma list).")
    ] = None,
    guidelines: Annotated[
        Path | None, typer.Option(help="Guidelines file (Markdown/plain text).")
    ] = None,
    labels: Annotated[
        str | None, typer.Option(help="Label set, comma list (default: the dataset's).")
    ] = None,
    rubric: Annotated[
        Path | None, typer.Option(help="YAML/JSON mapping of ratings 1..5 to descriptions.")
    ] = None,
    prompt: Annotated[str | None, typer.Option(help="The question shown to people.")] = None,
    no_tie: Annotated[bool, typer.Option("--no-tie", help="Pairwise without 'tie'.")] = False,
    as_json: AsJson = False,
) -> None:
    """Score a split's records with a model and put the ones it finds hardest into a new
    review queue: lowest label margin (or highest entropy), disagreement among the model, LLM
    annotators, people and the reference, lowest judge rating, or the worst slices; or a
    seeded random sample, the baseline to beat. Pairwise and ranking queues show K responses per
    item. The same options reuse the selection."""
    from tuneloop.cli.protocol import open_models, stage_bars
    from tuneloop.workflows.feedback import SelectOptions, select_hard

    options: dict[str, Any] = {}
    if labels:
        options["labels"] = _csv(labels)
    if rubric is not None:
        options["rubric"] = _rubric(rubric)
    if prompt:
        options["prompt"] = prompt
    if no_tie:
        options["allow_tie"] = False
    opts = SelectOptions(
        dataset=dataset,
        split=split,
        strategy=strategy,
        n=n,
        candidates=candidates,
        question=question,
        queue=queue,
        responses=responses,
        temperature=temperature,
        seed=seed,
        measure=measure,
        min_slice=min_slice,
        judge_prompt=judge_prompt,
        allow_same_family=allow_same_family,
        include_queued=include_queued,
        max_tokens=max_tokens,
        annotators_per_item=annotators_per_item,
        members=_csv(assign),
        guidelines=_read(guidelines, "guidelines") if guidelines else None,
        queue_options=options,
        project=state.project_name,
    )
    store = state.store()
    with open_models(*model, judge) as refs:
        models = [r for r in refs[:-1] if r is not None]
        if as_json:
            result = select_hard(store, opts, models, refs[-1])
        else:
            with stage_bars() as bar:
                result = select_hard(store, opts, models, refs[-1], on_progress=bar)
    if as_json:
        console.print_json(json.dumps(result.__dict__))
        return
    how = "reused" if result.reused else f"from {result.scored} scored records"
    console.print(
        f"queue {escape(result.queue)} (id {result.queue_id}): {len(result.chosen)} "
        f"{result.question} items, the hardest by {result.strategy} ({how}; run {result.run_id})"
    )
    table = Table("#", "record", "hardness", "model answer", "why")
    for i, c in enumerate(result.chosen[:20], 1):
        hardness = "no answer" if c["hardness"] is None else f"{c['hardness']:.3f}"
        why = {k: v for k, v in c.items() if k not in ("record_id", "record", "hardness", "answer")}
        table.add_row(
            str(i),
            escape(str(c["record"])),
            hardness,
            escape(_short(c["answer"])),
            escape(_short(json.dumps(why, ensure_ascii=False), 70)),
        )
    console.print(table)
    if len(result.chosen) > 20:
        console.print(f"... and {len(result.chosen) - 20} more (--json for all)")
    for note in result.notes:
        console.print(f"note: {escape(note)}")


def _short(value: Any, limit: int = 40) -> str:
    text = " ".join(str(value if value is not None else "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@app.command("apply")
def apply(queue: QueueRef, as_json: AsJson = False) -> None:
    """Make the final answers of a label or correction queue accepted human labels on their
    records (`train sft --labels human` or `mix` trains on them). Applying again adds nothing;
    a final answer changed since replaces its label."""
    from tuneloop.workflows.feedback_data import apply_feedback

    result = apply_feedback(state.store(), queue, state.project_name)
    if as_json:
        console.print_json(json.dumps(result.__dict__))
        return
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(result.skipped.items()))
    splits = ", ".join(f"{split} {n}" for split, n in sorted(result.splits.items()))
    console.print(
        f"queue {escape(result.queue)}: {result.added} human labels added, {result.replaced} "
        f"replaced, {result.unchanged} unchanged" + (f"; skipped {skipped}" if skipped else "")
    )
    if splits:
        console.print(f"labels by split: {splits}")
    for note in result.notes:
        console.print(f"note: {escape(note)}")


@app.command("export")
def export(
    queue: QueueRef,
    kind: Annotated[
        str,
        typer.Option(
            help="sft (label/correction queues), preferences (pairwise, ranking, correction) "
            "or ratings (rating queues)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write.")],
    as_json: AsJson = False,
) -> None:
    """Write a queue's feedback as JSONL in TRL's conversational formats: SFT records
    (prompt, completion), preference records (prompt, chosen, rejected; a ranking of K gives
    K*(K-1)/2 pairs, ties dropped) or ratings (prompt, response, model, rating, rater)."""
    from tuneloop.workflows.feedback_data import export_feedback

    result = export_feedback(state.store(), queue, kind, out, state.project_name)
    if as_json:
        console.print_json(json.dumps({**result.__dict__, "path": str(result.path)}))
        return
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(result.skipped.items()) if n)
    console.print(
        f"wrote {result.rows} {result.kind} records from {result.items} items of queue "
        f"{escape(result.queue)} to {escape(str(result.path))}"
        + (f" (dropped: {skipped})" if skipped else "")
    )


@app.command("simulate")
def simulate(
    queue: QueueRef,
    noise: Annotated[
        float,
        typer.Option(help="Chance that an answer is another label than the true one (0..1)."),
    ] = 0.1,
    annotators: Annotated[
        int | None,
        typer.Option(help="Simulated people (sim-1, sim-2, ...); default: the queue's per item."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the flips.")] = 0,
    reference: Annotated[
        str | None,
        typer.Option(
            help="Where the true label is: meta.NAME for a metadata field (default: the "
            "record's reference output)."
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Answer a label queue without people, for experiments: simulated annotators (users
    sim-1, sim-2, ... who cannot sign in) give each record's true label, another label with
    probability --noise, through the same answering as the web app (source "simulated"; the
    queue's people per item hold). Running it again adds nothing."""
    from tuneloop.workflows.feedback_simulate import SimulateOptions, simulate_answers

    opts = SimulateOptions(
        queue=queue,
        noise=noise,
        annotators=annotators,
        seed=seed,
        reference=reference,
        project=state.project_name,
    )
    result = simulate_answers(state.store(), opts)
    if as_json:
        console.print_json(json.dumps(result.__dict__))
        return
    people = ", ".join(result.annotators)
    console.print(
        f"queue {escape(result.queue)}: {result.answers} simulated answers from {people} "
        f"({result.flipped} flipped, noise {noise:g}); {result.complete} of {result.items} "
        "items complete"
    )
    if result.new_users:
        console.print(
            f"new simulated annotators (no password, cannot sign in): {', '.join(result.new_users)}"
        )
    for note in result.notes:
        console.print(f"note: {escape(note)}")
