"""What ``feedback select`` puts on its items and reads about them: how many model responses
each question type shows, K responses to one prompt (sampled from one model, or one from each
of several models), and each record's answers by source (for the disagreement strategy)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select

from tuneloop.chat import target
from tuneloop.errors import UserError
from tuneloop.llm.types import Completion, GenParams, Message
from tuneloop.questions import question_spec
from tuneloop.store.db import Store
from tuneloop.store.models import Label, LLMCall, ModelEntry
from tuneloop.workflows.evaluate import ModelRef

MULTI_RESPONSE = ("pairwise", "ranking")


def response_count(question: str, responses: int | None, n_models: int, temperature: float) -> int:
    """How many responses an item shows: label queues none; rating, correction and feedback the
    model's answer; pairwise 2; ranking K (default 3, or one per model). Checks the options."""
    try:
        spec = question_spec(question)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    q = spec.type.value
    if q not in MULTI_RESPONSE:
        if n_models > 1:
            raise UserError("several --model values make pairwise or ranking queues only")
        if responses is not None:
            raise UserError("--responses is for pairwise and ranking queues")
        return 0 if q in ("label", "multilabel") else 1
    k = responses or (2 if q == "pairwise" else (n_models if n_models > 1 else 3))
    if n_models > 1 and k != n_models:
        raise UserError(f"--responses {k} but {n_models} models: each model gives one response")
    if not spec.min_responses <= k <= spec.max_responses:
        want = "2" if q == "pairwise" else f"2..{spec.max_responses}"
        raise UserError(f"a {q} item shows {want} responses, not {k}")
    if n_models == 1 and temperature <= 0:
        raise UserError("sampling several responses from one model needs --temperature above 0")
    return k


def model_responses(
    models: Sequence[ModelRef],
    run_id: int,
    messages: list[Message],
    k: int,
    *,
    temperature: float,
    seed: int,
    max_tokens: int,
    order: str,
) -> list[dict[str, Any]]:
    """K responses to ``messages`` (``{"model", "text", ...}``), shuffled by the seed ``order``
    so that no model always comes first: the greedy answer of each model, or K distinct samples
    of one model (up to 3K draws, seeds ``seed``, ``seed + 1``, ...; where it gives fewer
    distinct answers, repeats fill in). Every call is cached: the same options draw the same."""
    out: list[dict[str, Any]] = []
    if len(models) > 1:
        for m in models:
            said = m.make_engine(run_id).chat(messages, GenParams(max_tokens=max_tokens))
            out.append({"model": m.name, "text": _text(said.completion)})
    else:
        engine = models[0].make_engine(run_id)
        drawn: list[dict[str, Any]] = []
        distinct: dict[str, dict[str, Any]] = {}
        for attempt in range(3 * k):
            params = GenParams(temperature=temperature, max_tokens=max_tokens, seed=seed + attempt)
            text = _text(engine.chat(messages, params).completion)
            sample = {"model": models[0].name, "text": text, "temperature": temperature}
            sample["seed"] = params.seed
            drawn.append(sample)
            distinct.setdefault(text, sample)
            if len(distinct) == k:
                break
        firsts = list(distinct.values())
        out = (firsts + [d for d in drawn if d not in firsts])[:k]
    random.Random(order).shuffle(out)
    return out


def _text(completion: Completion | None) -> str:
    return str(completion.text).strip() if completion is not None else ""


def answers_by_source(
    store: Store,
    task: str,
    records: Mapping[int, tuple[str | None, Mapping[str, Any]]],
    examined: Sequence[str],
) -> dict[int, dict[str, Any]]:
    """Each record's answers (from ``{record id: (the model's answer, the record's fields)}``)
    by who gave them: ``model``, ``llm:NAME`` for each LLM annotator (its newest accepted label;
    labels from evaluations of the examined models or of trained models left out), ``human``
    (the newest accepted human label) and ``reference`` (the reference output)."""
    out: dict[int, dict[str, Any]] = {
        rid: ({"model": answer} if answer is not None else {})
        for rid, (answer, _) in records.items()
    }
    ids = list(out)
    with store.transaction() as session:
        skip = set(examined) | set(session.scalars(select(ModelEntry.name)))
        for start in range(0, len(ids), 1000):
            rows = session.execute(
                select(Label.record_id, Label.source, Label.value, LLMCall.model)
                .outerjoin(LLMCall, LLMCall.id == Label.llm_call_id)
                .where(
                    Label.record_id.in_(ids[start : start + 1000]),
                    Label.status == "accepted",
                    Label.source.in_(("llm", "human", "import")),
                )
                .order_by(Label.id)  # the newest last: it wins
            )
            for rid, source, value, by in rows:
                if value is None or (source == "llm" and by in skip):
                    continue
                key = {"llm": f"llm:{by or 'unknown'}", "human": "human"}.get(source, "reference")
                out[rid][key] = value
    for rid, (_, fields) in records.items():
        reference = target(task, fields)
        if reference is not None:
            out[rid]["reference"] = reference
    return out
