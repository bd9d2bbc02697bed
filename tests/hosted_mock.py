"""OpenAI, Anthropic and Google's Gemini API, played offline by one ``httpx.MockTransport``
handler: requests are checked the way each service checks them (URL, key header, version
header) and answered in each API's documented shapes, errors included.

Use the ``hosted_apis`` fixture: it sets a key for each service, routes every hosted call
through the mock (``tuneloop.llm.hosted.set_transport``) and gives the ``HostedAPIs`` object, whose
``requests`` tell what was sent and whose ``fail_next`` makes a service answer an error first.
No test that uses it reaches the network.

The mock "model" is simple and deterministic: a constrained answer is the first allowed value;
a free-text answer to "Answer with exactly one of: a, b." is "a"; a judge prompt (one that asks
for a rating) gets a short rationale and ``Rating: good``; anything else gets a one-line summary
of the last message.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

KEYS = {
    "OPENAI_API_KEY": "sk-proj-test-0penAIkey",
    "ANTHROPIC_API_KEY": "sk-ant-api03-test-anthropicKey",
    "GEMINI_API_KEY": "AIzaSy-test-geminiKey",
}
OPENAI = "api.openai.com"
ANTHROPIC = "api.anthropic.com"
GEMINI = "generativelanguage.googleapis.com"
# models that refuse JSON-schema structured outputs, as OpenAI's older models do
NO_STRUCTURED_OUTPUTS = {"gpt-3.5-turbo"}


# -- the documented bodies ---------------------------------------------------------------------


def openai_completion(model: str, content: str | None, finish: str = "stop") -> dict[str, Any]:
    """OpenAI's chat completion object."""
    return {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": f"{model}-2024-08-06" if model.startswith("gpt-4o") else model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": content,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": 8,
            "total_tokens": 128,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_fc9f1d7035",
    }


def openai_error(
    status: int, message: str, type_: str, code: str | None = None, **headers: str
) -> httpx.Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return httpx.Response(status, json=body, headers=headers)


def gemini_completion(model: str, content: str, finish: str = "stop") -> dict[str, Any]:
    """A chat completion as Gemini's OpenAI-compatible endpoint returns it."""
    return {
        "choices": [
            {
                "finish_reason": finish,
                "index": 0,
                "message": {"content": content, "role": "assistant"},
            }
        ],
        "created": 1763750000,
        "id": "Zj8gab-PFvKvz7IP9cL3oQ4",
        "model": model,
        "object": "chat.completion",
        "usage": {"completion_tokens": 8, "prompt_tokens": 120, "total_tokens": 128},
    }


def gemini_error(
    status: int, message: str, status_name: str, *details: dict[str, Any], wrapped: bool = True
) -> httpx.Response:
    """Google's error body; the OpenAI-compatible endpoint wraps it in a list."""
    error: dict[str, Any] = {"code": status, "message": message, "status": status_name}
    if details:
        error["details"] = list(details)
    body: Any = [{"error": error}] if wrapped else {"error": error}
    return httpx.Response(status, json=body)


def gemini_bad_key(wrapped: bool = True) -> httpx.Response:
    return gemini_error(
        400,
        "API key not valid. Please pass a valid API key.",
        "INVALID_ARGUMENT",
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        },
        {
            "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
            "locale": "en-US",
            "message": "API key not valid. Please pass a valid API key.",
        },
        wrapped=wrapped,
    )


def gemini_quota(retry_delay: str = "7s") -> httpx.Response:
    return gemini_error(
        429,
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
        "RESOURCE_EXHAUSTED",
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": "generativelanguage.googleapis.com/"
                    "generate_content_free_tier_requests",
                    "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                    "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"},
                    "quotaValue": "10",
                }
            ],
        },
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [
                {
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                }
            ],
        },
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay},
    )


def anthropic_message(
    model: str,
    blocks: list[dict[str, Any]],
    stop_reason: str = "end_turn",
    stop_sequence: str | None = None,
) -> dict[str, Any]:
    """Anthropic's Message object."""
    return {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message",
        "role": "assistant",
        "model": f"{model}-20251001" if model == "claude-haiku-4-5" else model,
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {
            "input_tokens": 120,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 8,
            "service_tier": "standard",
        },
    }


def anthropic_text(model: str, text: str, stop_reason: str = "end_turn") -> dict[str, Any]:
    return anthropic_message(model, [{"type": "text", "text": text}], stop_reason)


def anthropic_tool_use(model: str, given: dict[str, Any]) -> dict[str, Any]:
    block = {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "answer"}
    return anthropic_message(model, [{**block, "input": given}], "tool_use")


def anthropic_error(status: int, type_: str, message: str, **headers: str) -> httpx.Response:
    body = {
        "type": "error",
        "error": {"type": type_, "message": message},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }
    return httpx.Response(status, json=body, headers={"request-id": body["request_id"], **headers})


def anthropic_rate_limited(seconds: int = 20) -> httpx.Response:
    return anthropic_error(
        429,
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50 requests per "
        "minute. For details, refer to: https://docs.claude.com/en/api/rate-limits.",
        **{
            "retry-after": str(seconds),
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": "2026-11-21T20:00:20Z",
        },
    )


def anthropic_overloaded() -> httpx.Response:
    return anthropic_error(529, "overloaded_error", "Overloaded")


# -- the mock "model" --------------------------------------------------------------------------

_ONE_OF = re.compile(r"one of:\s*([^\n]+?)\.?\s*(?:\n|$)", re.IGNORECASE)


def answer(messages: list[dict[str, Any]]) -> str:
    """The mock model's free-text reply to a conversation."""
    last = str(messages[-1].get("content", "")) if messages else ""
    if "Rating: <level>" in last:  # a judge prompt
        return "It keeps the main facts of the source and adds nothing.\nRating: good"
    options = _ONE_OF.findall(last)
    if options:
        return options[-1].split(",")[0].strip()
    words = last.split()
    return " ".join(words[-12:]) if words else "(nothing to answer)"


class HostedAPIs:
    """The three services behind one transport handler (thread-safe)."""

    def __init__(self, keys: dict[str, str] | None = None) -> None:
        self.keys = dict(keys or KEYS)
        self.requests: list[httpx.Request] = []
        self._failures: dict[str, list[httpx.Response]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def fail_next(self, host: str, *responses: httpx.Response) -> None:
        """``host`` (OPENAI, ANTHROPIC or GEMINI) answers these before answering normally."""
        with self._lock:
            self._failures.setdefault(host, []).extend(responses)

    def bodies(self, host: str) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.url.host == host]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
            queued = self._failures.get(request.url.host)
            failure = queued.pop(0) if queued else None
        if failure is not None:
            return failure
        body = json.loads(request.content)
        if request.url.host == OPENAI and request.url.path == "/v1/chat/completions":
            return self._openai(request, body)
        if request.url.host == GEMINI and request.url.path == "/v1beta/openai/chat/completions":
            return self._gemini(request, body)
        if request.url.host == ANTHROPIC and request.url.path == "/v1/messages":
            return self._anthropic(request, body)
        return httpx.Response(404, text=f"no such endpoint: {request.url}")

    def _openai(self, request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        key = self.keys.get("OPENAI_API_KEY")
        if request.headers.get("authorization") != f"Bearer {key}":
            given = request.headers.get("authorization", "").removeprefix("Bearer ")
            return openai_error(
                401,
                f"Incorrect API key provided: {given[:3]}*****{given[-4:]}. You can find your "
                "API key at https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
            )
        model = body["model"]
        response_format = body.get("response_format")
        if response_format is not None:
            if model in NO_STRUCTURED_OUTPUTS and response_format["type"] == "json_schema":
                return openai_error(
                    400,
                    "Invalid parameter: 'response_format' of type 'json_schema' is not "
                    "supported with this model. Learn more about supported models at the "
                    "Structured Outputs guide: https://platform.openai.com/docs/guides/"
                    "structured-outputs",
                    "invalid_request_error",
                )
            if set(response_format) - {"type", "json_schema"}:
                extra = sorted(set(response_format) - {"type", "json_schema"})[0]
                return openai_error(
                    400,
                    f"Additional properties are not allowed ('{extra}' was unexpected) - "
                    "'response_format'",
                    "invalid_request_error",
                )
            schema = response_format["json_schema"]["schema"]
            first = schema["properties"]["answer"]["enum"][0]
            content = json.dumps({"answer": first})
        else:
            content = answer(body["messages"])
        return httpx.Response(200, json=openai_completion(model, content))

    def _gemini(self, request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        key = self.keys.get("GEMINI_API_KEY") or self.keys.get("GOOGLE_API_KEY")
        if request.headers.get("authorization") != f"Bearer {key}":
            return gemini_bad_key()
        model = body["model"]
        response_format = body.get("response_format")
        if response_format is not None and response_format.get("type") == "json_schema":
            first = response_format["json_schema"]["schema"]["properties"]["answer"]["enum"][0]
            content = json.dumps({"answer": first})
        else:
            content = answer(body["messages"])
        return httpx.Response(200, json=gemini_completion(model, content))

    def _anthropic(self, request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        if request.headers.get("x-api-key") != self.keys.get("ANTHROPIC_API_KEY"):
            return anthropic_error(401, "authentication_error", "invalid x-api-key")
        if request.headers.get("anthropic-version") != "2023-06-01":
            return anthropic_error(
                400, "invalid_request_error", "anthropic-version: header is required"
            )
        if "temperature" in body and "top_p" in body:
            return anthropic_error(
                400,
                "invalid_request_error",
                "`temperature` and `top_p` cannot both be specified for this model. Please "
                "use only one.",
            )
        if any(m["role"] == "system" for m in body["messages"]):
            return anthropic_error(
                400,
                "invalid_request_error",
                'messages: Unexpected role "system". The Messages API accepts a top-level '
                '`system` parameter, not "system" as an input message role.',
            )
        model = body["model"]
        choice = body.get("tool_choice")
        if choice is not None and choice.get("type") == "tool":
            tool = next(t for t in body["tools"] if t["name"] == choice["name"])
            first = tool["input_schema"]["properties"]["answer"]["enum"][0]
            return httpx.Response(200, json=anthropic_tool_use(model, {"answer": first}))
        turns = [{"role": "system", "content": body.get("system", "")}, *body["messages"]]
        return httpx.Response(200, json=anthropic_text(model, answer(turns)))


@pytest.fixture
def hosted_apis(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostedAPIs]:
    """The three services offline, with their keys set."""
    from tuneloop.llm import hosted

    apis = HostedAPIs()
    for env, key in KEYS.items():
        monkeypatch.setenv(env, key)
    hosted.set_transport(httpx.MockTransport(apis))
    try:
        yield apis
    finally:
        hosted.set_transport(None)
