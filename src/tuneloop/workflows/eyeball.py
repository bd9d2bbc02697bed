"""Eyeball a prompt version: the annotator answers a few (fewer than 20) seeded records, a
person marks each answer good or bad with a note, and the verdicts are kept with the version.

Reads top to bottom: resolve dataset and prompt -> draw the seeded sample (never from the gold
slice unless it is named) -> the annotator labels it (a resumable annotate job; answers cached)
-> the caller shows input and output side by side and collects verdicts -> ``save_verdicts``
stores them in one transaction (a second verdict on the same record replaces the first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from tuneloop.errors import UserError
from tuneloop.store.datasets import resolve_dataset
from tuneloop.store.db import Store, get_project
from tuneloop.store.models import Label, PromptVerdict, PromptVersion, Record
from tuneloop.tasks import task_spec
from tuneloop.workflows.annotate import AnnotateOptions, annotate
from tuneloop.workflows.evaluate import ModelRef
from tuneloop.workflows.prompts import resolve_prompt
from tuneloop.workflows.sampling import default_splits, sample_records

MAX_EYEBALL = 19
VERDICTS = ("good", "bad")


@dataclass
class EyeballOptions:
    prompt: str
    dataset: str
    n: int = 15
    seed: int = 0
    splits: list[str] | None = None  # default: every split but gold
    max_tokens: int = 256
    project: str = "default"


@dataclass
class EyeballItem:
    record_id: int
    inputs: dict[str, Any]
    output: Any  # the annotator's answer (None: no answer in the label set)
    status: str  # accepted | needs_review
    raw_output: str | None
    reference: Any
    label_id: int | None
    verdict: str | None = None  # an earlier verdict on this record, if any
    note: str | None = None


@dataclass
class EyeballSample:
    prompt: str
    prompt_version_id: int
    items: list[EyeballItem]


@dataclass
class Verdict:
    record_id: int
    verdict: str  # good | bad
    note: str | None = None
    label_id: int | None = None
    output: Any = None


def eyeball(store: Store, opts: EyeballOptions, annotator: ModelRef) -> EyeballSample:
    """The annotator's answers on the seeded sample, with any verdicts given before."""
    if not 1 <= opts.n <= MAX_EYEBALL:
        raise UserError(
            f"eyeball -n must be between 1 and {MAX_EYEBALL} (fewer than 20 samples, read by a "
            f"person); got {opts.n}. Use `tuneloop prompt evaluate` for 500+ samples."
        )
    with store.transaction() as session:
        project = get_project(session, opts.project)
        dataset = resolve_dataset(session, project, opts.dataset)
        prompt = resolve_prompt(session, project.id, opts.prompt, dataset.task_type)
        ref, prompt_id, task = f"{prompt.name}@{prompt.version}", prompt.id, dataset.task_type
        splits = default_splits(dataset, opts.splits or [])
        sample = sample_records(session, dataset, splits, opts.n, opts.seed, need_reference=False)
        dataset_ref = dataset.ref
    done = annotate(
        store,
        AnnotateOptions(
            dataset=dataset_ref,
            model=annotator.name,
            prompt=ref,
            record_ids=sample.ids,
            max_tokens=opts.max_tokens,
            project=opts.project,
        ),
        annotator.make_engine,
    )
    spec = task_spec(task)
    with store.transaction() as session:
        records = {
            r.id: r for r in session.scalars(select(Record).where(Record.id.in_(sample.ids)))
        }
        labels = {
            lab.record_id: lab
            for lab in session.scalars(select(Label).where(Label.run_id == done.run_id))
        }
        earlier = {
            v.record_id: v
            for v in session.scalars(
                select(PromptVerdict).where(PromptVerdict.prompt_version_id == prompt_id)
            )
        }
        items = []
        for rid in sample.ids:
            rec, lab, old = records[rid], labels.get(rid), earlier.get(rid)
            items.append(
                EyeballItem(
                    rid,
                    {k: rec.fields[k] for k in spec.inputs if rec.fields.get(k) is not None},
                    None if lab is None else lab.value,
                    "needs_review" if lab is None else lab.status,
                    None if lab is None else lab.raw_output,
                    rec.fields.get(spec.target),
                    None if lab is None else lab.id,
                    None if old is None else old.verdict,
                    None if old is None else old.note,
                )
            )
    return EyeballSample(ref, prompt_id, items)


def save_verdicts(
    store: Store,
    project: str,
    prompt: str,
    verdicts: Sequence[Verdict],
    *,
    author: str | None = None,
) -> dict[str, int]:
    """Store the verdicts with the prompt version (replacing earlier ones on the same records);
    returns the version's good/bad totals."""
    for v in verdicts:
        if v.verdict not in VERDICTS:
            raise UserError(f"record {v.record_id}: verdict must be good or bad, got {v.verdict!r}")
    with store.transaction() as session:
        project_id = get_project(session, project).id
        version = resolve_prompt(session, project_id, prompt)
        known = set(
            session.scalars(select(Record.id).where(Record.id.in_([v.record_id for v in verdicts])))
        )
        for v in verdicts:
            if v.record_id not in known:
                raise UserError(f"verdict for record {v.record_id}: no such record")
            row = session.scalar(
                select(PromptVerdict).where(
                    PromptVerdict.prompt_version_id == version.id,
                    PromptVerdict.record_id == v.record_id,
                )
            )
            if row is None:
                row = PromptVerdict(prompt_version_id=version.id, record_id=v.record_id)
                session.add(row)
            row.verdict, row.note, row.author = v.verdict, v.note, author
            row.label_id, row.output = v.label_id, v.output
        session.flush()
        return verdict_counts(session, version)


def verdict_counts(session: Any, version: PromptVersion) -> dict[str, int]:
    rows = session.execute(
        select(PromptVerdict.verdict, func.count())
        .where(PromptVerdict.prompt_version_id == version.id)
        .group_by(PromptVerdict.verdict)
    ).all()
    counts = dict.fromkeys(VERDICTS, 0)
    counts.update({v: int(n) for v, n in rows})
    return counts
