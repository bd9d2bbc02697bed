"""Training rows in the form TRL's SFT trainer reads: conversational prompt/completion pairs.

The prompt is the record's chat messages (``record_messages``); the completion is the
assistant's answer. TRL renders both with the tokenizer's chat template, exactly as
``TransformersProvider`` renders a prompt at inference, and computes the loss on the
completion only. A tokenizer without a chat template (a base model) reads the plain text the
provider gives such models: the messages' contents joined by blank lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tuneloop.llm.types import Message


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def plain_prompt(messages: Sequence[Message]) -> str:
    """The prompt text for a model without a chat template (as the provider builds it)."""
    return "\n\n".join(m["content"] for m in messages) + "\n"


def trainer_row(row: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    """One example as TRL's prompt-completion format (conversational when there is a chat
    template)."""
    if has_chat_template(tokenizer):
        return {
            "prompt": row["prompt"],
            "completion": [{"role": "assistant", "content": row["completion"]}],
        }
    return {"prompt": plain_prompt(row["prompt"]), "completion": row["completion"]}


def trainer_rows(rows: Sequence[dict[str, Any]], tokenizer: Any) -> list[dict[str, Any]]:
    return [trainer_row(row, tokenizer) for row in rows]


def token_count(row: dict[str, Any], tokenizer: Any) -> int:
    """Tokens of the whole example (prompt and completion, end of turn included)."""
    if has_chat_template(tokenizer):
        messages = [*row["prompt"], {"role": "assistant", "content": row["completion"]}]
        ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
        return len(ids)
    text = plain_prompt(row["prompt"]) + row["completion"]
    return len(tokenizer(text)["input_ids"]) + 1  # + end of sequence


def fit_examples(
    rows: Sequence[dict[str, Any]], tokenizer: Any, max_length: int
) -> tuple[list[dict[str, Any]], int]:
    """(the examples of at most ``max_length`` tokens, how many were longer). A cut example
    would lose its answer (classification) or teach the model never to stop (generation), so
    longer examples are left out rather than truncated."""
    kept = [row for row in rows if token_count(row, tokenizer) <= max_length]
    return kept, len(rows) - len(kept)
