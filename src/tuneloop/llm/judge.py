"""The five-level judge: one rating (0..4) with its rationale, never a guess.

``rate`` asks the judge model for a short rationale and a last line ``Rating: <level>``. A reply
whose rating cannot be read is followed up once through the engine's constrained path (label
scoring where the provider can, else constrained decoding, else free text parsed with bounded
retries); a reply still outside the scale is flagged ``needs_review`` with the raw output.
``mode="score"`` skips the rationale and scores the five levels in one pass (fast, local).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

from tuneloop.llm.engine import Engine
from tuneloop.llm.types import GenParams, Message

LEVELS: tuple[str, ...] = ("very bad", "bad", "moderate", "good", "excellent")
MODES = ("rationale", "score")
RATING_LINE = re.compile(r"^\W*(final\s+)?rating\b\W*", re.I)


@dataclass
class Rating:
    score: int | None  # index of the level, 0 = worst; None when flagged
    level: str | None
    status: str  # accepted | needs_review
    rationale: str | None
    raw_output: str | None
    method: str  # parsed | scores | constrained
    confidence: float | None = None
    call_ids: list[int] = field(default_factory=list)
    cached: bool = True
    cost: float = 0.0


def check_levels(levels: Sequence[str]) -> list[str]:
    """Five distinct, non-empty level names, worst first."""
    clean = [str(v).strip() for v in levels]
    if len(clean) != 5 or len(set(clean)) != 5 or not all(clean):
        raise ValueError(f"exactly 5 distinct, non-empty names, worst first; got {list(levels)}")
    return clean


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"[\s\"'`*_.,;:!?()\[\]{}<>#]+", " ", text).strip()


def parse_level(text: str, levels: Sequence[str]) -> int | None:
    """The level a reply gives: its last ``Rating:`` line, or a reply that is nothing but a
    level (or a digit 0..4, read as the level's index). Level words inside free text are never
    read as the rating ("a good summary would..." is not a rating); a level inside a longer
    one ("bad" in "very bad") does not count twice; several levels named -> None."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    rated = [ln for ln in lines if RATING_LINE.match(ln.strip())]
    answer = _norm(RATING_LINE.sub("", rated[-1].strip()) if rated else text)
    norms = [_norm(v) for v in levels]
    if answer in norms:
        return norms.index(answer)
    digit = re.fullmatch(r"([0-4])(?: ?/ ?4)?", answer)
    if digit:
        return int(digit.group(1))
    if not rated:
        return None
    pattern = "|".join(re.escape(n) for n in sorted(norms, key=len, reverse=True))
    found = {m.group(0) for m in re.finditer(rf"\b(?:{pattern})\b", answer)}
    if len(found) == 1:
        return norms.index(found.pop())
    return None


def _rationale(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    kept = [ln for ln in lines if not RATING_LINE.match(ln.strip())]
    return "\n".join(kept).strip()


def _ask_for_level(levels: Sequence[str]) -> Message:
    return {
        "role": "user",
        "content": "Give your final rating. Answer with exactly one of: "
        + ", ".join(levels)
        + ".\nReply with that rating only.",
    }


def rate(
    engine: Engine,
    messages: Sequence[Message],
    levels: Sequence[str] = LEVELS,
    *,
    mode: str = "rationale",
    max_tokens: int = 192,
    retries: int = 2,
) -> Rating:
    """Rate one answer; ``messages`` is the rendered judge prompt."""
    levels = check_levels(levels)
    if mode not in MODES:
        raise ValueError(f"judge mode must be one of {', '.join(MODES)}, got {mode!r}")
    convo = list(messages)
    call_ids: list[int] = []
    cost, cached, rationale, raw = 0.0, True, None, None
    if mode == "rationale":
        said = engine.chat(convo, GenParams(max_tokens=max_tokens, temperature=0.0))
        call_ids.append(said.call_id)
        cost, cached = said.cost, said.cached
        raw = said.completion.text if said.completion else ""
        rationale = _rationale(raw) or None
        index = parse_level(raw, levels)
        if index is not None:
            return Rating(
                index,
                levels[index],
                "accepted",
                rationale,
                raw,
                "parsed",
                None,
                call_ids,
                cached,
                cost,
            )
        convo += [{"role": "assistant", "content": raw}, _ask_for_level(levels)]
    else:
        convo.append(_ask_for_level(levels))
    result = engine.classify(convo, levels, GenParams(max_tokens=8), retries=retries)
    call_ids += result.call_ids
    cost += result.cost
    cached = cached and result.cached
    if result.label is None:
        return Rating(
            None,
            None,
            "needs_review",
            rationale,
            result.raw_output or raw,
            result.method,
            None,
            call_ids,
            cached,
            cost,
        )
    index = levels.index(result.label)
    return Rating(
        index,
        levels[index],
        "accepted",
        rationale,
        raw,
        result.method,
        result.confidence,
        call_ids,
        cached,
        cost,
    )
