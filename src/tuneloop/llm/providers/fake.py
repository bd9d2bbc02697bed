"""A scripted provider for tests and dry runs: deterministic, offline, instant (or slowed down).

``FakeProvider()`` answers a classification prompt with the first declared label that appears
in the text (else one chosen by a hash of the prompt), and scores labels the same way; other
prompts get an echo-like answer. Pass ``script`` to decide answers yourself.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import time
from collections.abc import Callable, Sequence

from tuneloop.llm.types import ChoiceScores, Completion, GenParams, Message

Script = Callable[[Sequence[Message]], str]

_LABELS = re.compile(r"exactly one of: (.+?)\.\n", re.S)


def _hash_unit(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def default_answer(messages: Sequence[Message], choices: Sequence[str] | None = None) -> str:
    prompt = messages[-1]["content"]
    if choices is None:
        found = _LABELS.search(prompt)
        choices = [c.strip() for c in found.group(1).split(",")] if found else None
    if choices:
        body = prompt.rsplit("\n\n", 1)[-1].casefold()
        for choice in choices:
            if re.search(rf"\b{re.escape(choice.casefold())}\b", body):
                return choice
        return choices[int(_hash_unit(prompt) * len(choices)) % len(choices)]
    return "Answer: " + " ".join(prompt.split()[-8:])


class FakeProvider:
    """Satisfies the Provider Protocol without a model. ``delay`` (seconds per call, default
    from ``TUNELOOP_FAKE_DELAY``) makes long runs for interruption tests."""

    kind = "fake"

    def __init__(
        self,
        model: str = "fake",
        script: Script | None = None,
        *,
        can_score: bool = True,
        can_choose: bool = True,
        can_batch: bool = False,
        delay: float | None = None,
    ) -> None:
        self.model = model
        self.script = script
        self.can_score = can_score
        self.can_choose = can_choose
        self.can_batch = can_batch
        self.batches: list[int] = []  # the size of each score_choices_batch call
        self.delay = float(os.environ.get("TUNELOOP_FAKE_DELAY", "0")) if delay is None else delay
        self.calls = 0

    def _tick(self) -> None:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)

    def chat(self, messages: Sequence[Message], params: GenParams) -> Completion:
        self._tick()
        text = self.script(messages) if self.script else default_answer(messages)
        n_in = sum(len(m["content"].split()) for m in messages)
        return Completion(text, n_in, len(text.split()), "stop")

    def _scores(self, messages: Sequence[Message], choices: Sequence[str]) -> ChoiceScores:
        pick = self.script(messages) if self.script else default_answer(messages, choices)
        spread = 1.0 + 3.0 * _hash_unit(messages[-1]["content"])  # confidence varies by record
        logits = {c: (spread if c == pick else 0.0) for c in choices}
        norm = math.log(sum(math.exp(v) for v in logits.values()))
        n_in = sum(len(m["content"].split()) for m in messages)
        return ChoiceScores({c: v - norm for c, v in logits.items()}, n_in)

    def score_choices(
        self, messages: Sequence[Message], choices: Sequence[str]
    ) -> ChoiceScores | None:
        if not self.can_score:
            return None
        self._tick()
        return self._scores(messages, choices)

    def score_choices_batch(
        self, items: Sequence[tuple[Sequence[Message], Sequence[str]]]
    ) -> list[ChoiceScores | None] | None:
        """With ``can_batch``: every item scored as ``score_choices`` would, in one call (one
        delay); an item whose prompt contains "[alone]" is left for ``score_choices``."""
        if not (self.can_batch and self.can_score):
            return None
        self.batches.append(len(items))
        self._tick()
        return [None if "[alone]" in m[-1]["content"] else self._scores(m, c) for m, c in items]

    def choose(
        self, messages: Sequence[Message], choices: Sequence[str], params: GenParams
    ) -> Completion | None:
        if not self.can_choose:
            return None
        self._tick()
        pick = self.script(messages) if self.script else default_answer(messages, choices)
        return Completion(pick, None, 1, "stop", {"structured": "fake"})
