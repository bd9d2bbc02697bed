"""Any OpenAI-compatible chat completions endpoint: OpenAI, Google's Gemini (its OpenAI
compatibility endpoint), vLLM, TGI, Ollama, llama.cpp's server.

One ``httpx.Client`` per provider, shared by the engine's worker threads. Transient failures
(429 short of an exhausted quota, 500/502/503/504, timeouts, dropped connections, garbled 200
bodies) are retried with exponential backoff and jitter, honoring ``Retry-After`` (or Google's
``RetryInfo``); other HTTP errors fail at once with the server's own message, and a refused API
key fails with one message naming the environment variable it came from. The API key never
appears in an error message.
"""

from __future__ import annotations

import json
import os
import re
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

__all__ = ["DEFAULT_BASE_URL", "OpenAICompatProvider", "ProviderHTTPError"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
STRUCTURED_MODES = ("auto", "json_schema", "none")
# a refused key: OpenAI answers 401; Google answers 400 (or 403) with reason API_KEY_INVALID
_BAD_KEY = re.compile(r"API_KEY_INVALID|API key not valid|API key expired", re.IGNORECASE)


@dataclass
class _Reply:
    text: str
    tokens_in: int | None
    tokens_out: int | None
    finish_reason: str | None
    data: dict[str, Any]


class OpenAICompatProvider:
    """Chat completions over HTTP; ``choose`` constrains answers with a JSON schema when the
    endpoint supports ``response_format`` and reports None (free-text fallback) when not."""

    kind = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        structured: str = "auto",
        extra_headers: dict[str, str] | None = None,
        extra_body: dict[str, Any] | None = None,
        key_env: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        with_logprobs: bool = False,
    ) -> None:
        """``key_env`` names where ``api_key`` came from (for the message when the key is
        refused); ``extra_body`` is merged into every request (e.g. ``reasoning_effort``)."""
        if structured not in STRUCTURED_MODES:
            raise ValueError(f"structured must be one of {STRUCTURED_MODES}, not {structured!r}")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip(
            "/"
        )
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if api_key is None and key:
            key_env = key_env or "OPENAI_API_KEY"
        self._api_key = key or None
        self.key_env = key_env
        self.retry = Retry(max_retries, backoff, max_backoff, sleep)
        self.structured = structured
        self.with_logprobs = with_logprobs
        self.extra_body = dict(extra_body or {})
        self.schema_supported = structured != "none"  # turned off when "auto" learns otherwise
        self._format_index: int | None = None  # which response_format this endpoint takes
        headers = {"Accept": "application/json", **(extra_headers or {})}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._client = httpx.Client(timeout=timeout, headers=headers, transport=transport)

    def __repr__(self) -> str:
        return f"OpenAICompatProvider(model={self.model!r}, base_url={self.base_url!r})"

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAICompatProvider:
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
            reply.text, reply.tokens_in, reply.tokens_out, reply.finish_reason, reply.data
        )

    def score_choices(
        self, messages: Sequence[Message], choices: Sequence[str]
    ) -> ChoiceScores | None:
        return None  # chat endpoints do not score arbitrary continuations

    def choose(
        self, messages: Sequence[Message], choices: Sequence[str], params: GenParams
    ) -> Completion | None:
        if not self.schema_supported:
            return None
        options = list(dict.fromkeys(choices))
        schema = {
            "type": "object",
            "properties": {"answer": {"type": "string", "enum": options}},
            "required": ["answer"],
            "additionalProperties": False,
        }
        formats: list[dict[str, Any]] = [
            {
                "type": "json_schema",
                "json_schema": {"name": "answer", "strict": True, "schema": schema},
            },
            # llama.cpp's server and others: JSON mode with a schema
            {"type": "json_object", "schema": schema},
        ]
        if self._format_index is not None:
            formats = formats[self._format_index : self._format_index + 1]
        reply = None
        for index, response_format in enumerate(formats):
            payload = self._payload(messages, params)
            payload["response_format"] = response_format
            try:
                reply = self._post(payload)
                if self._format_index is None:
                    self._format_index = index
                break
            except ProviderHTTPError as exc:
                text = exc.server_message.lower()
                rejected = any(w in text for w in ("response_format", "json_schema", "json_object"))
                if self.structured == "auto" and rejected and exc.status >= 400:
                    continue
                raise
        if reply is None:
            self.schema_supported = False
            return None
        answer = _parse_answer(reply.text, options)
        if answer is None:
            if self.structured == "json_schema":
                raise self._error(f"answer is not JSON naming one of the choices: {reply.text!r}")
            if reply.finish_reason != "length":  # a cut-off answer says nothing about support
                self.schema_supported = False
            return None
        data = {**reply.data, "structured": "json_schema", "raw": reply.text}
        return Completion(answer, reply.tokens_in, reply.tokens_out, reply.finish_reason, data)

    # -- HTTP ----------------------------------------------------------------------------------

    def _payload(self, messages: Sequence[Message], params: GenParams) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "temperature": params.temperature,
            "max_tokens": params.max_tokens,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            payload["seed"] = params.seed
        if params.stop:
            payload["stop"] = list(params.stop)
        if self.with_logprobs:
            payload["logprobs"] = True
            payload["top_logprobs"] = 5
        payload.update(self.extra_body)
        return payload

    def _post(self, payload: dict[str, Any]) -> _Reply:
        return self.retry.run(lambda: self._attempt(payload), self._error)

    def _attempt(self, payload: dict[str, Any]) -> _Reply:
        try:
            response = post(self._client, f"{self.base_url}/chat/completions", payload)
        except httpx.HTTPError as exc:
            raise self._error(f"request failed ({type(exc).__name__}: {exc})") from exc
        status = response.status_code
        if status == 401 or (status in (400, 403) and _BAD_KEY.search(response.text)):
            raise self._auth_error(status, self._redact(_server_message(response)))
        # a server that rejects the request's own shape (some answer 500 to an unknown
        # response_format) will not change its mind: do not retry that
        shape_error = "response_format" in response.text and "validation" in response.text.lower()
        if (
            status in RETRY_STATUSES
            and "insufficient_quota" not in response.text
            and not shape_error
        ):
            detail = f"HTTP {status}: {_server_message(response)}"
            raise Transient(detail, retry_after(response) or _retry_info(response))
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
        choices = body.get("choices") if isinstance(body, dict) else None
        choice = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(choice, dict):
            raise Transient("response has no choices[0]")
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        finish = choice.get("finish_reason")
        if not isinstance(content, str):
            refusal = message.get("refusal") if isinstance(message, dict) else None
            if isinstance(refusal, str) and refusal:
                raise self._error(f"the model refused: {refusal}")
            if finish != "length":
                raise Transient("response has no choices[0].message.content")
            content = ""  # a thinking model spent max_tokens before answering: an empty answer
        usage = body.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        data: dict[str, Any] = {"id": body.get("id"), "model": body.get("model")}
        if self.with_logprobs and choice.get("logprobs") is not None:
            data["logprobs"] = choice["logprobs"]
        return _Reply(
            content,
            int_or_none(usage.get("prompt_tokens")),
            int_or_none(usage.get("completion_tokens")),
            finish if isinstance(finish, str) else None,
            data,
        )

    # -- errors --------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.model} at {self.base_url}"

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _error(self, message: str, *, retryable: bool = False) -> ProviderError:
        return ProviderError(self._redact(f"{self._where()}: {message}"), retryable=retryable)

    def _auth_error(self, status: int, message: str) -> ProviderAuthError:
        if self.key_env:
            fix = f"the API key in {self.key_env} was refused; set {self.key_env} to a valid key"
        elif self._api_key:
            fix = "the API key was refused"
        else:
            fix = "it needs an API key (set OPENAI_API_KEY)"
        return ProviderAuthError(f"{self._where()}: {fix} (HTTP {status}: {message})")


def _server_message(response: httpx.Response) -> str:
    """The error text in OpenAI's ``{"error": {"message": ...}}`` shape, Google's
    ``{"error": {"message", "status"}}`` (its compatibility endpoint wraps it in a list), the
    shapes some compatible servers use instead, or the plain body."""
    try:
        body = response.json()
    except ValueError:
        return snippet(response.text) or response.reason_phrase
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            kind = error.get("type") or error.get("code")
            if isinstance(error.get("status"), str):  # Google: a name beats the number
                kind = error["status"]
            return f"{error['message']} ({kind})" if kind else str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return snippet(response.text)


def _retry_info(response: httpx.Response) -> float | None:
    """The wait Google asks for in a 429's ``google.rpc.RetryInfo`` detail (``"37s"``)."""
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, list) and body:
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("rpc.RetryInfo"):
            match = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _parse_answer(content: str, options: list[str]) -> str | None:
    try:
        parsed = json.loads(content)
    except ValueError:
        return None
    answer = parsed.get("answer") if isinstance(parsed, dict) else None
    return answer if isinstance(answer, str) and answer in options else None
