"""Anthropic's Claude models through their own Messages API (``POST /v1/messages``).

Why the native API and not Anthropic's OpenAI-compatible endpoint: Anthropic documents that
endpoint as a way to test and compare models, not a long-term or production path; it silently
drops fields it does not support (a JSON-schema ``response_format`` would constrain nothing) and
ignores ``strict`` on tools. The Messages API is the one Anthropic's own SDKs are built on and
keeps stable under ``anthropic-version``. This provider speaks it with httpx directly, like the
OpenAI-compatible provider beside it (the SDK would be one more dependency for one endpoint).

The request carries ``x-api-key`` and ``anthropic-version``; system messages go in the
top-level ``system`` field; only one of ``temperature`` / ``top_p`` is sent (newer models refuse
both). The reply's text blocks are joined; ``stop_reason`` maps to a finish reason (``end_turn``
and ``stop_sequence`` -> stop, ``max_tokens`` -> length; ``refusal`` fails the call). ``choose``
forces a tool whose one argument is an enum of the choices. Claude offers no token
log-probabilities, so there is no label scoring. Retried: 429 ``rate_limit_error`` (after its
``retry-after``), 500 ``api_error``, 529 ``overloaded_error``, 502/503/504, timeouts, dropped
connections and garbled bodies. A refused key (401 ``authentication_error``) fails at once with
one message naming the environment variable; other errors at once with the server's message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from tuneloop.llm.providers.http_retry import (
    ProviderHTTPError,
    Retry,
    Transient,
    int_or_none,
    post,
    retry_after,
    snippet,
)
from tuneloop.llm.types import (
    ChoiceScores,
    Completion,
    GenParams,
    Message,
    ProviderAuthError,
    ProviderError,
)

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 529})
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}
ANSWER_TOOL = "answer"
CHOOSE_MIN_TOKENS = 256  # a forced tool call spends tokens on its wrapper too


@dataclass
class _Reply:
    blocks: list[dict[str, Any]]
    stop_reason: str | None
    tokens_in: int | None
    tokens_out: int | None
    data: dict[str, Any]

    @property
    def text(self) -> str:
        return "".join(
            str(b.get("text", "")) for b in self.blocks if b.get("type") == "text"
        ).strip()


class AnthropicProvider:
    """Claude through the Messages API; one ``httpx.Client`` shared by the engine's threads."""

    kind = "anthropic"

    def __init__(
        self,
        model: str,
        api_key: str,
        *,
        base_url: str | None = None,
        key_env: str = "ANTHROPIC_API_KEY",
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.model = model
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.key_env = key_env
        self._api_key = api_key
        self.retry = Retry(max_retries, backoff, max_backoff, sleep)
        self.tools_supported = True  # turned off if the model refuses forced tool use
        headers = {
            "x-api-key": api_key,
            "anthropic-version": API_VERSION,
            "content-type": "application/json",
            "accept": "application/json",
        }
        self._client = httpx.Client(timeout=timeout, headers=headers, transport=transport)

    def __repr__(self) -> str:
        return f"AnthropicProvider(model={self.model!r}, base_url={self.base_url!r})"

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> AnthropicProvider:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the Provider protocol -----------------------------------------------------------------

    def chat(self, messages: Sequence[Message], params: GenParams) -> Completion:
        reply = self._post(self._payload(messages, params))
        return Completion(
            reply.text,
            reply.tokens_in,
            reply.tokens_out,
            FINISH.get(reply.stop_reason or "", reply.stop_reason),
            reply.data,
        )

    def score_choices(
        self, messages: Sequence[Message], choices: Sequence[str]
    ) -> ChoiceScores | None:
        return None  # the Messages API gives no token log-probabilities

    def choose(
        self, messages: Sequence[Message], choices: Sequence[str], params: GenParams
    ) -> Completion | None:
        """The answer as the one argument of a forced ``answer`` tool, an enum of the choices;
        None (the engine parses free text) when the reply names none of them."""
        if not self.tools_supported:
            return None
        options = list(dict.fromkeys(choices))
        payload = self._payload(messages, params)
        payload["max_tokens"] = max(params.max_tokens, CHOOSE_MIN_TOKENS)
        payload["tools"] = [
            {
                "name": ANSWER_TOOL,
                "description": "Give your answer: exactly one of the allowed values.",
                "input_schema": {
                    "type": "object",
                    "properties": {"answer": {"type": "string", "enum": options}},
                    "required": ["answer"],
                },
            }
        ]
        payload["tool_choice"] = {"type": "tool", "name": ANSWER_TOOL}
        try:
            reply = self._post(payload)
        except ProviderHTTPError as exc:
            if exc.status == 400 and "tool" in exc.server_message.lower():
                self.tools_supported = False  # e.g. a model without tool use
                return None
            raise
        call = next(
            (b for b in reply.blocks if b.get("type") == "tool_use" and b.get("name") == "answer"),
            None,
        )
        given = call.get("input") if call is not None else None
        answer = given.get("answer") if isinstance(given, dict) else None
        if not isinstance(answer, str) or answer not in options:
            return None
        data = {**reply.data, "structured": "tool_use", "raw": json.dumps(given)}
        finish = FINISH.get(reply.stop_reason or "", reply.stop_reason)
        return Completion(answer, reply.tokens_in, reply.tokens_out, finish, data)

    # -- HTTP ----------------------------------------------------------------------------------

    def _payload(self, messages: Sequence[Message], params: GenParams) -> dict[str, Any]:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        turns = [
            {"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"
        ]
        payload: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_tokens,
            "messages": turns,
        }
        if system:
            payload["system"] = system
        # newer Claude models take temperature or top_p, not both; a seed is not offered
        if params.top_p < 1.0:
            payload["top_p"] = params.top_p
        else:
            payload["temperature"] = params.temperature
        if params.stop:
            payload["stop_sequences"] = list(params.stop)
        return payload

    def _post(self, payload: dict[str, Any]) -> _Reply:
        return self.retry.run(lambda: self._attempt(payload), self._error)

    def _attempt(self, payload: dict[str, Any]) -> _Reply:
        try:
            response = post(self._client, f"{self.base_url}/v1/messages", payload)
        except httpx.HTTPError as exc:
            raise self._error(f"request failed ({type(exc).__name__}: {exc})") from exc
        status = response.status_code
        if status == 401:
            message = self._redact(_server_message(response))
            raise ProviderAuthError(
                f"{self._where()}: the API key in {self.key_env} was refused; set "
                f"{self.key_env} to a valid Anthropic API key (HTTP 401: {message})"
            )
        if status in RETRY_STATUSES:
            detail = f"HTTP {status}: {_server_message(response)}"
            raise Transient(detail, retry_after(response))
        if status >= 400:
            message = self._redact(_server_message(response))
            raise ProviderHTTPError(
                f"{self._where()}: HTTP {status}: {message}", status=status, server_message=message
            )
        try:
            body = response.json()
        except ValueError:
            raise Transient(f"response body is not JSON: {snippet(response.text)!r}") from None
        return self._reply(body)

    def _reply(self, body: Any) -> _Reply:
        if isinstance(body, dict) and body.get("type") == "error":  # an error sent with 200
            error = body.get("error")
            kind = error.get("type") if isinstance(error, dict) else None
            if kind in ("overloaded_error", "api_error", "rate_limit_error"):
                raise Transient(f"{kind} in a 200 response")
            raise self._error(f"the API answered an error: {snippet(json.dumps(body))}")
        content = body.get("content") if isinstance(body, dict) else None
        if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
            raise Transient("response has no content blocks")
        stop = body.get("stop_reason")
        if stop == "refusal":
            raise self._error("the model refused to answer (stop_reason: refusal)")
        usage = body.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        data: dict[str, Any] = {"id": body.get("id"), "model": body.get("model")}
        return _Reply(
            content,
            stop if isinstance(stop, str) else None,
            int_or_none(usage.get("input_tokens")),
            int_or_none(usage.get("output_tokens")),
            data,
        )

    # -- errors --------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.model} at {self.base_url}"

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _error(self, message: str) -> ProviderError:
        return ProviderError(self._redact(f"{self._where()}: {message}"))


def _server_message(response: httpx.Response) -> str:
    """``error.message (error.type)`` of Anthropic's ``{"type": "error", "error": {...}}``
    body, or the plain body (a proxy's HTML page, say)."""
    try:
        body = response.json()
    except ValueError:
        return snippet(response.text) or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        kind = error.get("type")
        return f"{error['message']} ({kind})" if kind else str(error["message"])
    return snippet(response.text)
