"""Human feedback as training records, in TRL's conversational formats. Pure: no I/O.

- an SFT record: ``{"prompt": [messages], "completion": [{"role": "assistant", ...}]}``
  (TRL's prompt-completion format; the prompt is the one chat format of ``tuneloop.chat``)
- a preference record: ``{"prompt": [messages], "chosen": [assistant message],
  "rejected": [assistant message]}`` (TRL's preference format with an explicit prompt, what
  ``DPOTrainer`` and ``RewardTrainer`` read)

A pairwise choice gives one pair ("tie" gives none); a ranking of K responses, best first,
gives its K*(K-1)/2 ordered pairs. A pair whose two responses have the same text is a tie too.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Message = dict[str, str]


@dataclass(frozen=True)
class Pairs:
    pairs: list[tuple[int, int]]  # (chosen, rejected) response indexes
    ties: int  # pairs dropped: a "tie" choice, or two responses with the same text


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def preference_pairs(answer: Mapping[str, Any], texts: Sequence[str]) -> Pairs:
    """The (chosen, rejected) pairs a pairwise or ranking answer states about ``texts``."""
    if "choice" in answer:
        choice = answer["choice"]
        if choice == "tie":
            return Pairs([], 1)
        ordered = [(0, 1)] if choice == "A" else [(1, 0)]
    elif "ranking" in answer:
        ordered = list(itertools.combinations(answer["ranking"], 2))
    else:
        raise ValueError(f"not a pairwise or ranking answer: {dict(answer)!r}")
    kept = [(c, r) for c, r in ordered if not _same_text(texts[c], texts[r])]
    return Pairs(kept, len(ordered) - len(kept))


def assistant(text: str) -> list[Message]:
    return [{"role": "assistant", "content": text}]


def sft_record(prompt: list[Message], completion: str, **meta: Any) -> dict[str, Any]:
    return {"prompt": prompt, "completion": assistant(completion), **meta}


def preference_record(
    prompt: list[Message], chosen: str, rejected: str, **meta: Any
) -> dict[str, Any]:
    return {"prompt": prompt, "chosen": assistant(chosen), "rejected": assistant(rejected), **meta}
