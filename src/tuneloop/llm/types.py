"""What every provider speaks: messages in, a completion or label scores out. Pure types."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from tuneloop.errors import UserError

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}


class ProviderError(Exception):
    """A call failed after the provider's own retries (network, server, bad response)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ProviderAuthError(ProviderError, UserError):
    """The service refused the API key: the user has to fix it (the message names the
    environment variable it came from). Never retried; the CLI prints it as one line."""


@dataclass(frozen=True)
class GenParams:
    """Sampling parameters; part of the cache key. Defaults are greedy and short."""

    temperature: float = 0.0
    max_tokens: int = 256
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["stop"] = list(self.stop)
        return out


@dataclass
class Completion:
    """One generated answer."""

    text: str
    tokens_in: int | None = None
    tokens_out: int | None = None
    finish_reason: str | None = None
    data: dict[str, Any] = field(default_factory=dict)  # logprobs etc., stored with the call


@dataclass
class ChoiceScores:
    """Log-probability of each choice as the assistant's whole answer to the messages."""

    logprobs: dict[str, float]
    tokens_in: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Provider(Protocol):
    """An LLM behind one interface. ``kind`` names the provider type (llamacpp, transformers,
    openai, fake); ``model`` the model as that provider knows it."""

    kind: str
    model: str

    def chat(self, messages: Sequence[Message], params: GenParams) -> Completion:
        """Generate the assistant's next message."""
        ...

    def score_choices(
        self, messages: Sequence[Message], choices: Sequence[str]
    ) -> ChoiceScores | None:
        """Score each choice as the whole assistant answer, in one pass where the engine
        allows it; None when this provider cannot (the engine then constrains or parses)."""
        ...

    def choose(
        self, messages: Sequence[Message], choices: Sequence[str], params: GenParams
    ) -> Completion | None:
        """Generate an answer constrained to one of ``choices`` (grammar or JSON schema);
        None when this provider cannot constrain."""
        ...
