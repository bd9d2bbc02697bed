"""The one place every LLM call goes through: cache lookup, the call, the log row.

A call is cached by a content hash of (provider, model, operation, messages, params, choices):
repeating an unchanged call costs nothing and makes no new ``llm_call`` row. Each call is
written in its own transaction as soon as it returns, so work already paid for survives an
interrupted job; a resumed job finds it in the cache.

``classify`` always yields one of the declared labels or ``needs_review``: label scoring in one
pass where the provider can, else constrained decoding, else free text parsed with bounded
retries.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from tuneloop.llm.types import (
    ChoiceScores,
    Completion,
    GenParams,
    Message,
    Provider,
    ProviderError,
)
from tuneloop.store.db import Store
from tuneloop.store.models import LLMCall


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: float = 0.0
    output: float = 0.0

    def cost(self, tokens_in: int | None, tokens_out: int | None) -> float:
        return ((tokens_in or 0) * self.input + (tokens_out or 0) * self.output) / 1_000_000


@dataclass
class CallResult:
    call_id: int
    completion: Completion | None
    scores: ChoiceScores | None
    cached: bool
    cost: float


@dataclass
class LabelResult:
    """A classification answer: ``label`` is one of the choices, or None with status
    ``needs_review`` and the raw output kept."""

    label: str | None
    status: str  # accepted | needs_review
    confidence: float | None
    margin: float | None
    method: str  # scores | constrained | parsed
    raw_output: str | None
    call_ids: list[int]
    cached: bool
    cost: float


def cache_key(
    provider: str, model: str, op: str, messages: Sequence[Message], params: Mapping[str, Any]
) -> str:
    payload = json.dumps(
        {
            "provider": provider,
            "model": model,
            "op": op,
            "messages": list(messages),
            "params": dict(params),
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


_PUNCT = re.compile(r"[\s\"'`*.,;:!?()\[\]{}<>]+")


def _norm(text: str) -> str:
    return _PUNCT.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def parse_choice(text: str, choices: Sequence[str]) -> str | None:
    """The one choice a free-text answer names: an exact match after normalization, else the
    only choice mentioned as a whole phrase; None when zero or several are mentioned."""
    answer = _norm(text)
    by_norm = {_norm(c): c for c in choices}
    if answer in by_norm:
        return by_norm[answer]
    mentioned = [c for n, c in by_norm.items() if n and re.search(rf"\b{re.escape(n)}\b", answer)]
    return mentioned[0] if len(mentioned) == 1 else None


def softmax(logprobs: Mapping[str, float]) -> dict[str, float]:
    top = max(logprobs.values())
    exps = {k: math.exp(v - top) for k, v in logprobs.items()}
    total = sum(exps.values())
    return {k: v / total for k, v in exps.items()}


class Engine:
    """A provider plus the call log and cache in ``store``. Safe to call from several threads
    (each call uses its own short transaction)."""

    def __init__(
        self,
        store: Store,
        provider: Provider,
        *,
        family: str,
        price: Price | None = None,
        use_cache: bool = True,
        run_id: int | None = None,
    ) -> None:
        self.store = store
        self.provider = provider
        self.family = family
        self.price = price or Price()
        self.use_cache = use_cache
        self.run_id = run_id

    @property
    def model(self) -> str:
        return self.provider.model

    def _cached(self, key: str) -> LLMCall | None:
        if not self.use_cache:
            return None
        with self.store.transaction() as session:
            return session.scalar(
                select(LLMCall)
                .where(LLMCall.cache_key == key, LLMCall.error.is_(None))
                .order_by(LLMCall.id.desc())
                .limit(1)
            )

    def _log(
        self,
        key: str,
        op: str,
        messages: Sequence[Message],
        params: dict[str, Any],
        output: str | None,
        data: dict[str, Any] | None,
        tokens_in: int | None,
        tokens_out: int | None,
        latency_ms: float,
        error: str | None = None,
    ) -> tuple[int, float]:
        cost = self.price.cost(tokens_in, tokens_out)
        row = LLMCall(
            cache_key=key,
            provider=self.provider.kind,
            model=self.model,
            family=self.family,
            messages=list(messages),
            params={"op": op, **params},
            output=output,
            output_data=data,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            latency_ms=latency_ms,
            cost_usd=cost,
            error=error,
            run_id=self.run_id,
        )
        with self.store.transaction() as session:
            session.add(row)
            session.flush()
            return row.id, cost

    def _completion_call(
        self,
        op: str,
        messages: Sequence[Message],
        p: dict[str, Any],
        produce: Callable[[], Completion | None],
    ) -> CallResult | None:
        """A cached, logged call that yields a completion (None: the provider cannot)."""
        key = cache_key(self.provider.kind, self.model, op, messages, p)
        hit = self._cached(key)
        if hit is not None:
            completion = Completion(
                hit.output or "", hit.tokens_in, hit.tokens_out, None, hit.output_data or {}
            )
            return CallResult(hit.id, completion, None, True, 0.0)
        start = time.perf_counter()
        try:
            produced = produce()
        except ProviderError as exc:  # logged for the audit trail, never served from the cache
            elapsed = (time.perf_counter() - start) * 1000
            self._log(key, op, messages, p, None, None, None, None, elapsed, error=str(exc))
            raise
        if produced is None:
            return None
        latency = (time.perf_counter() - start) * 1000
        call_id, cost = self._log(
            key,
            op,
            messages,
            p,
            produced.text,
            produced.data,
            produced.tokens_in,
            produced.tokens_out,
            latency,
        )
        return CallResult(call_id, produced, None, False, cost)

    def chat(self, messages: Sequence[Message], params: GenParams | None = None) -> CallResult:
        given = params or GenParams()
        result = self._completion_call(
            "chat", messages, given.as_dict(), lambda: self.provider.chat(messages, given)
        )
        assert result is not None  # chat always produces a completion
        return result

    def _score_key(self, messages: Sequence[Message], choices: Sequence[str]) -> str:
        return cache_key(
            self.provider.kind, self.model, "score", messages, {"choices": list(choices)}
        )

    def _score_hit(self, key: str) -> CallResult | None:
        hit = self._cached(key)
        if hit is None or hit.output_data is None:
            return None
        scores = ChoiceScores(dict(hit.output_data["logprobs"]), hit.tokens_in)
        return CallResult(hit.id, None, scores, True, 0.0)

    def _score_log(
        self,
        key: str,
        messages: Sequence[Message],
        choices: Sequence[str],
        scores: ChoiceScores,
        latency_ms: float,
    ) -> CallResult:
        best = max(scores.logprobs, key=lambda c: scores.logprobs[c])
        call_id, cost = self._log(
            key,
            "score",
            messages,
            {"choices": list(choices)},
            best,
            {"logprobs": scores.logprobs, **scores.data},
            scores.tokens_in,
            0,
            latency_ms,
        )
        return CallResult(call_id, None, scores, False, cost)

    def _score(self, messages: Sequence[Message], choices: Sequence[str]) -> CallResult | None:
        key = self._score_key(messages, choices)
        hit = self._score_hit(key)
        if hit is not None:
            return hit
        start = time.perf_counter()
        scores = self.provider.score_choices(messages, choices)
        if scores is None:
            return None
        return self._score_log(key, messages, choices, scores, (time.perf_counter() - start) * 1000)

    def _choose(
        self, messages: Sequence[Message], choices: Sequence[str], params: GenParams
    ) -> CallResult | None:
        p = {**params.as_dict(), "choices": list(choices)}
        return self._completion_call(
            "choose", messages, p, lambda: self.provider.choose(messages, choices, params)
        )

    def classify(
        self,
        messages: Sequence[Message],
        choices: Sequence[str],
        params: GenParams | None = None,
        *,
        retries: int = 2,
    ) -> LabelResult:
        """One of ``choices`` with its confidence, or ``needs_review`` with the raw output."""
        params = params or GenParams(max_tokens=16)
        scored = self._score(messages, choices)
        if scored is not None and scored.scores is not None:
            return _from_scores(scored)
        chosen = self._choose(messages, choices, params)
        if chosen is not None and chosen.completion is not None:
            label = parse_choice(chosen.completion.text, choices)
            if label is not None:
                return LabelResult(
                    label,
                    "accepted",
                    None,
                    None,
                    "constrained",
                    None,
                    [chosen.call_id],
                    chosen.cached,
                    chosen.cost,
                )
        convo = list(messages)
        call_ids: list[int] = []
        cost = 0.0
        cached = True
        raw = ""
        for _ in range(retries + 1):
            result = self.chat(convo, params)
            call_ids.append(result.call_id)
            cost += result.cost
            cached = cached and result.cached
            raw = result.completion.text if result.completion else ""
            label = parse_choice(raw, choices)
            if label is not None:
                return LabelResult(
                    label, "accepted", None, None, "parsed", None, call_ids, cached, cost
                )
            convo += [
                {"role": "assistant", "content": raw},
                {
                    "role": "user",
                    "content": "Answer with exactly one of: "
                    + ", ".join(choices)
                    + ". Reply with that answer only.",
                },
            ]
        return LabelResult(None, "needs_review", None, None, "parsed", raw, call_ids, cached, cost)

    def classify_many(
        self,
        items: Sequence[tuple[Sequence[Message], Sequence[str]]],
        params: GenParams | None = None,
        *,
        retries: int = 2,
    ) -> list[LabelResult]:
        """``classify`` for each (messages, choices) item, in order. Where the provider scores
        many prompts together (``score_choices_batch``: the local llama.cpp engine), the items
        the cache does not answer are scored in one go; each is still logged as its own call
        (its latency the batch's time shared equally). Items the batch cannot score, and every
        item with other providers, go through ``classify`` one by one."""
        found: list[LabelResult | None] = [None] * len(items)
        batch = getattr(self.provider, "score_choices_batch", None)
        if callable(batch) and len(items) > 1:
            todo: list[tuple[int, str]] = []
            for i, (messages, choices) in enumerate(items):
                key = self._score_key(messages, choices)
                hit = self._score_hit(key)
                if hit is not None:
                    found[i] = _from_scores(hit)
                else:
                    todo.append((i, key))
            start = time.perf_counter()
            scored = batch([items[i] for i, _ in todo]) if len(todo) > 1 else None
            if scored is not None:
                share = (time.perf_counter() - start) * 1000 / len(todo)
                for (i, key), scores in zip(todo, scored, strict=True):
                    if scores is not None:
                        messages, choices = items[i]
                        logged = self._score_log(key, messages, choices, scores, share)
                        found[i] = _from_scores(logged)
        return [
            result if result is not None else self.classify(m, c, params, retries=retries)
            for result, (m, c) in zip(found, items, strict=True)
        ]


def _from_scores(scored: CallResult) -> LabelResult:
    """The label a scored call gives: the most probable choice, with its probability as the
    confidence and its lead over the runner-up as the margin."""
    assert scored.scores is not None
    probs = softmax(scored.scores.logprobs)
    ranked = sorted(probs.values(), reverse=True)
    best = max(probs, key=lambda c: probs[c])
    margin = ranked[0] - ranked[1] if len(ranked) > 1 else ranked[0]
    return LabelResult(
        best,
        "accepted",
        ranked[0],
        margin,
        "scores",
        None,
        [scored.call_id],
        scored.cached,
        scored.cost,
    )
