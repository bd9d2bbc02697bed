"""What the HTTP providers share: one request with its failures sorted into worth-retrying or
not, and the retry loop (exponential backoff with jitter, honoring the server's Retry-After).

A failure worth retrying raises ``Transient`` inside an attempt; ``Retry.run`` sleeps and tries
again, and after the last attempt raises a retryable ``ProviderError``. Anything else an
attempt raises (a ``ProviderHTTPError`` for a request the server will never accept, a
``ProviderAuthError`` for a refused key) ends the call at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from tuneloop.llm.types import ProviderError

T = TypeVar("T")
TRANSIENT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


class ProviderHTTPError(ProviderError):
    """The endpoint answered with an HTTP error that another attempt would not fix."""

    def __init__(self, message: str, *, status: int, server_message: str) -> None:
        super().__init__(message, retryable=False)
        self.status = status
        self.server_message = server_message


class Transient(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass
class Retry:
    """Up to ``max_retries`` more attempts, waiting ``backoff * 2**n`` seconds (plus up to a
    quarter of jitter) or what the server asked for, never more than ``max_backoff``."""

    max_retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more")

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(self.max_backoff, retry_after)
        base = self.backoff * 2.0**attempt
        return min(self.max_backoff, base * (1.0 + 0.25 * self.rng.random()))

    def run(self, attempt: Callable[[], T], fail: Callable[[str], ProviderError]) -> T:
        """``attempt()`` until it returns; ``fail(reason)`` makes the error after the last."""
        reason = ""
        for n in range(self.max_retries + 1):
            try:
                return attempt()
            except Transient as exc:
                reason = exc.reason
                if n < self.max_retries:
                    self.sleep(self.delay(n, exc.retry_after))
        error = fail(f"gave up after {self.max_retries + 1} attempts: {reason}")
        error.retryable = True
        raise error


def post(client: httpx.Client, url: str, payload: dict[str, Any]) -> httpx.Response:
    """POST ``payload`` as JSON; timeouts and dropped connections are ``Transient`` (other
    ``httpx.HTTPError`` propagate: the request itself is wrong)."""
    try:
        return client.post(url, json=payload)
    except httpx.TimeoutException as exc:
        raise Transient(f"timed out ({type(exc).__name__})") from exc
    except TRANSIENT_ERRORS as exc:
        raise Transient(f"connection failed ({type(exc).__name__}: {exc})") from exc


def retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (an HTTP date is left to our own backoff)."""
    value = response.headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return max(0.0, seconds) if seconds is not None else None


def snippet(text: str, limit: int = 500) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."


def int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
