"""Hosted LLMs: OpenAI, Anthropic (its Messages API) and Google's Gemini API (its
OpenAI-compatible endpoint) as named models, against mock transports answering in each API's
documented shapes, errors and rate limits included. No test reaches the network."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import CLI
from tests.hosted_mock import (
    ANTHROPIC,
    GEMINI,
    KEYS,
    OPENAI,
    HostedAPIs,
    anthropic_error,
    anthropic_message,
    anthropic_overloaded,
    anthropic_rate_limited,
    anthropic_text,
    anthropic_tool_use,
    gemini_bad_key,
    gemini_completion,
    gemini_error,
    gemini_quota,
    openai_error,
)
from tuneloop.errors import UserError
from tuneloop.llm.engine import Engine
from tuneloop.llm.factory import open_model
from tuneloop.llm.providers.anthropic import AnthropicProvider
from tuneloop.llm.providers.openai_compat import OpenAICompatProvider
from tuneloop.llm.types import GenParams, Provider, ProviderAuthError, ProviderError
from tuneloop.store.db import Store
from tuneloop.store.models import LLMCall

KEY = KEYS["ANTHROPIC_API_KEY"]
MESSAGES = [
    {"role": "system", "content": "You label film reviews."},
    {"role": "user", "content": "Label: A warm, funny film. Answer with exactly one of: pos, neg."},
]
CHOICES = ["pos", "neg"]
Handler = Callable[[httpx.Request], httpx.Response]


class Script:
    """Replays responses (or raises exceptions) in order, the last one forever."""

    def __init__(self, *steps: httpx.Response | Exception) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        return step

    def body(self, i: int = -1) -> Any:
        return json.loads(self.requests[i].content)


def ok(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json=body)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def claude(sleeps: list[float]) -> Iterator[Callable[..., AnthropicProvider]]:
    made: list[AnthropicProvider] = []

    def build(handler: Handler, **kwargs: Any) -> AnthropicProvider:
        provider = AnthropicProvider(
            "claude-haiku-4-5",
            KEY,
            transport=httpx.MockTransport(handler),
            sleep=sleeps.append,
            **kwargs,
        )
        made.append(provider)
        return provider

    yield build
    for provider in made:
        provider.close()


# --- Anthropic's Messages API ---------------------------------------------------------------


def test_anthropic_request_and_reply_shapes(claude: Callable[..., AnthropicProvider]) -> None:
    script = Script(ok(anthropic_text("claude-haiku-4-5", "pos")))
    provider = claude(script)
    assert isinstance(provider, Provider) and provider.kind == "anthropic"
    out = provider.chat(MESSAGES, GenParams(temperature=0.2, max_tokens=20, seed=3, stop=("\n",)))
    assert (out.text, out.tokens_in, out.tokens_out, out.finish_reason) == ("pos", 120, 8, "stop")
    assert out.data == {"id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "model": "claude-haiku-4-5-20251001"}
    request = script.requests[0]
    assert str(request.url) == "https://api.anthropic.com/v1/messages"
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    assert script.body() == {  # system on top, one of temperature / top_p, no seed
        "model": "claude-haiku-4-5",
        "max_tokens": 20,
        "system": "You label film reviews.",
        "messages": [MESSAGES[1]],
        "temperature": 0.2,
        "stop_sequences": ["\n"],
    }
    provider.chat(MESSAGES[1:], GenParams(top_p=0.9))
    assert "system" not in script.body() and "temperature" not in script.body()
    assert script.body()["top_p"] == 0.9
    assert provider.score_choices(MESSAGES, CHOICES) is None  # no log-probabilities offered


def test_anthropic_text_blocks_and_stop_reasons(claude: Callable[..., AnthropicProvider]) -> None:
    blocks = [{"type": "text", "text": "The answer "}, {"type": "text", "text": "is pos."}]
    script = Script(
        ok(anthropic_message("claude-haiku-4-5", blocks, "max_tokens")),
        ok(anthropic_message("claude-haiku-4-5", blocks, "stop_sequence", "\n")),
    )
    provider = claude(script)
    cut = provider.chat(MESSAGES, GenParams())
    assert (cut.text, cut.finish_reason) == ("The answer is pos.", "length")
    assert provider.chat(MESSAGES, GenParams()).finish_reason == "stop"


def test_anthropic_choose_forces_the_answer_tool(claude: Callable[..., AnthropicProvider]) -> None:
    script = Script(ok(anthropic_tool_use("claude-haiku-4-5", {"answer": "neg"})))
    out = claude(script).choose(MESSAGES, ["pos", "neg", "pos"], GenParams(max_tokens=16))
    assert out is not None and out.text == "neg"
    assert out.data["structured"] == "tool_use" and json.loads(out.data["raw"]) == {"answer": "neg"}
    sent = script.body()
    assert sent["tool_choice"] == {"type": "tool", "name": "answer"}
    assert sent["tools"][0]["input_schema"] == {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["pos", "neg"]}},
        "required": ["answer"],
    }
    assert sent["max_tokens"] == 256  # room for the tool call around the answer


def test_anthropic_choose_outside_the_choices_falls_back(
    claude: Callable[..., AnthropicProvider],
) -> None:
    provider = claude(Script(ok(anthropic_tool_use("claude-haiku-4-5", {"answer": "maybe"}))))
    assert provider.choose(MESSAGES, CHOICES, GenParams()) is None
    refused = anthropic_error(400, "invalid_request_error", "tool_choice: not supported")
    provider = claude(Script(refused))
    assert provider.choose(MESSAGES, CHOICES, GenParams()) is None
    assert provider.choose(MESSAGES, CHOICES, GenParams()) is None and not provider.tools_supported


def test_anthropic_rate_limit_honors_retry_after(
    claude: Callable[..., AnthropicProvider], sleeps: list[float]
) -> None:
    script = Script(anthropic_rate_limited(20), ok(anthropic_text("claude-haiku-4-5", "pos")))
    assert claude(script, max_backoff=60).chat(MESSAGES, GenParams()).text == "pos"
    assert sleeps == [20.0] and len(script.requests) == 2


@pytest.mark.parametrize(
    "failure",
    [
        anthropic_overloaded(),
        anthropic_error(500, "api_error", "Internal server error"),
        httpx.Response(502, text="<html>Bad Gateway</html>"),
        httpx.Response(200, text='{"id": "msg_01", "type": "mess'),
        ok({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        httpx.ReadTimeout("timed out"),
        httpx.ConnectError("connection refused"),
    ],
    ids=["529", "500", "502", "garbled", "error-in-200", "timeout", "connect"],
)
def test_anthropic_transient_failures_are_retried(
    claude: Callable[..., AnthropicProvider],
    sleeps: list[float],
    failure: httpx.Response | Exception,
) -> None:
    script = Script(failure, ok(anthropic_text("claude-haiku-4-5", "neg")))
    assert claude(script).chat(MESSAGES, GenParams()).text == "neg"
    assert len(script.requests) == 2 and len(sleeps) == 1 and 0.5 <= sleeps[0] <= 0.625


def test_anthropic_gives_up_retryable(
    claude: Callable[..., AnthropicProvider], sleeps: list[float]
) -> None:
    with pytest.raises(ProviderError, match="gave up after 3 attempts: HTTP 529") as info:
        claude(Script(anthropic_overloaded()), max_retries=2).chat(MESSAGES, GenParams())
    assert info.value.retryable and len(sleeps) == 2


def test_anthropic_bad_key_is_one_clear_error(
    claude: Callable[..., AnthropicProvider], sleeps: list[float]
) -> None:
    script = Script(anthropic_error(401, "authentication_error", f"invalid x-api-key {KEY}"))
    with pytest.raises(ProviderAuthError) as info:
        claude(script).chat(MESSAGES, GenParams())
    assert isinstance(info.value, UserError) and not info.value.retryable
    message = str(info.value)
    assert "ANTHROPIC_API_KEY" in message and "authentication_error" in message
    assert KEY not in message and len(script.requests) == 1 and sleeps == []


@pytest.mark.parametrize(
    ("status", "type_", "text"),
    [
        (400, "invalid_request_error", "max_tokens: Field required"),
        (403, "permission_error", "Your API key does not have permission to use this model."),
        (404, "not_found_error", "model: claude-nope"),
        (413, "request_too_large", "Request exceeds the maximum allowed number of bytes."),
    ],
)
def test_anthropic_client_errors_fail_at_once(
    claude: Callable[..., AnthropicProvider], status: int, type_: str, text: str
) -> None:
    script = Script(anthropic_error(status, type_, text))
    with pytest.raises(ProviderError, match=f"HTTP {status}: {text}") as info:
        claude(script).chat(MESSAGES, GenParams())
    assert not isinstance(info.value, UserError) and type_ in str(info.value)
    assert len(script.requests) == 1


def test_anthropic_refusal_and_missing_content(claude: Callable[..., AnthropicProvider]) -> None:
    script = Script(ok(anthropic_message("claude-haiku-4-5", [], "refusal")))
    with pytest.raises(ProviderError, match="refused") as info:
        claude(script).chat(MESSAGES, GenParams())
    assert not info.value.retryable and len(script.requests) == 1
    script = Script(ok({"id": "msg_1", "type": "message", "role": "assistant"}))
    with pytest.raises(ProviderError, match="no content blocks"):
        claude(script, max_retries=1).chat(MESSAGES, GenParams())


# --- presets through the factory --------------------------------------------------------------


def _engine(store: Store, name: str, project_dir: Path | None = None) -> Engine:
    handle = open_model(name, project_dir)
    return Engine(store, handle.provider, family=handle.family, price=handle.price)


@pytest.mark.parametrize(
    ("name", "family", "kind", "host", "price"),
    [
        ("gpt-4o", "gpt", "openai", OPENAI, (2.5, 10.0)),
        ("gpt-3.5-turbo", "gpt", "openai", OPENAI, (0.5, 1.5)),
        ("claude-haiku-4-5", "claude", "anthropic", ANTHROPIC, (1.0, 5.0)),
        ("gemini-2.5-flash", "gemini", "openai", GEMINI, (0.3, 2.5)),
    ],
)
def test_presets_label_with_family_price_and_cost(
    store: Store,
    hosted_apis: HostedAPIs,
    name: str,
    family: str,
    kind: str,
    host: str,
    price: tuple[float, float],
) -> None:
    handle = open_model(name)
    assert (handle.family, handle.provider.kind, handle.provider.model) == (family, kind, name)
    assert (handle.price.input, handle.price.output) == price and handle.max_concurrency == 4
    engine = Engine(store, handle.provider, family=handle.family, price=handle.price)
    result = engine.classify(MESSAGES, CHOICES)
    assert result.label == "pos" and result.status == "accepted"
    # structured outputs where the API has them; GPT-3.5 refuses them: parsed free text
    assert result.method == ("parsed" if name == "gpt-3.5-turbo" else "constrained")
    assert result.cost == pytest.approx((120 * price[0] + 8 * price[1]) / 1e6)
    assert {r.url.host for r in hosted_apis.requests} == {host}
    with store.transaction() as s:
        call = s.scalars(select(LLMCall).where(LLMCall.error.is_(None))).one()
        assert (call.model, call.family, call.provider) == (name, family, kind)
        assert (call.tokens_in, call.tokens_out) == (120, 8)
    handle.close()


def test_openai_preset_request(hosted_apis: HostedAPIs) -> None:
    handle = open_model("gpt-4o")
    handle.provider.chat(MESSAGES, GenParams(max_tokens=12))
    request = hosted_apis.requests[-1]
    assert str(request.url) == "https://api.openai.com/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEYS['OPENAI_API_KEY']}"
    body = json.loads(request.content)
    assert (body["model"], body["max_tokens"], body["messages"]) == ("gpt-4o", 12, MESSAGES)
    handle.close()


def test_gemini_preset_request_and_key_variables(
    hosted_apis: HostedAPIs, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = open_model("gemini-2.5-flash")
    out = handle.provider.choose(MESSAGES, CHOICES, GenParams(max_tokens=16))
    assert out is not None and out.text == "pos"
    request = hosted_apis.requests[-1]
    base = "https://generativelanguage.googleapis.com/v1beta/openai"
    assert str(request.url) == f"{base}/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEYS['GEMINI_API_KEY']}"
    body = json.loads(request.content)
    assert body["reasoning_effort"] == "none"  # a Flash model answers without thinking first
    assert body["response_format"]["json_schema"]["schema"]["properties"]["answer"] == {
        "type": "string",
        "enum": CHOICES,
    }
    handle.close()
    handle = open_model("gemini-2.5-pro")  # cannot stop thinking: nothing extra is sent
    handle.provider.chat(MESSAGES, GenParams())
    assert "reasoning_effort" not in json.loads(hosted_apis.requests[-1].content)
    handle.close()
    # GOOGLE_API_KEY serves when GEMINI_API_KEY is not set
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.setenv("GOOGLE_API_KEY", "AIzaSy-google-key")
    hosted_apis.keys = {
        **hosted_apis.keys,
        "GEMINI_API_KEY": "",
        "GOOGLE_API_KEY": "AIzaSy-google-key",
    }
    handle = open_model("gemini-2.5-flash-lite")
    assert handle.provider.chat(MESSAGES, GenParams()).text == "pos"
    assert hosted_apis.requests[-1].headers["authorization"] == "Bearer AIzaSy-google-key"
    handle.close()


def test_gemini_rate_limits_and_overload_are_retried(sleeps: list[float]) -> None:
    done = httpx.Response(200, json=gemini_completion("gemini-2.5-flash", "neg"))
    unavailable = gemini_error(
        503, "The model is overloaded. Please try again later.", "UNAVAILABLE"
    )
    script = Script(gemini_quota("7s"), unavailable, done)
    with OpenAICompatProvider(
        "gemini-2.5-flash",
        "https://generativelanguage.googleapis.com/v1beta/openai",
        "AIzaSy-key",
        key_env="GEMINI_API_KEY",
        transport=httpx.MockTransport(script),
        sleep=sleeps.append,
    ) as provider:
        assert provider.chat(MESSAGES, GenParams()).text == "neg"
    assert sleeps[0] == 7.0 and 1.0 <= sleeps[1] <= 1.25  # Google's RetryInfo, then backoff


@pytest.mark.parametrize("wrapped", [True, False])
def test_gemini_bad_key_names_the_variable(sleeps: list[float], wrapped: bool) -> None:
    script = Script(gemini_bad_key(wrapped))
    with (
        OpenAICompatProvider(
            "gemini-2.5-flash",
            "https://generativelanguage.googleapis.com/v1beta/openai",
            "AIzaSy-wrong",
            key_env="GEMINI_API_KEY",
            transport=httpx.MockTransport(script),
            sleep=sleeps.append,
        ) as provider,
        pytest.raises(ProviderAuthError) as info,
    ):
        provider.chat(MESSAGES, GenParams())
    message = str(info.value)
    assert "GEMINI_API_KEY" in message and "API key not valid" in message
    assert "INVALID_ARGUMENT" in message and "AIzaSy-wrong" not in message
    assert len(script.requests) == 1 and sleeps == []


def test_gemini_other_errors_show_googles_message(sleeps: list[float]) -> None:
    script = Script(
        gemini_error(404, "models/gemini-9 is not found for API version v1main", "NOT_FOUND")
    )
    with (
        OpenAICompatProvider(
            "gemini-9", "https://generativelanguage.googleapis.com/v1beta/openai", "k",
            transport=httpx.MockTransport(script), sleep=sleeps.append,
        ) as provider,
        pytest.raises(ProviderError, match=r"HTTP 404: models/gemini-9 is not found .*NOT_FOUND"),
    ):  # fmt: skip
        provider.chat(MESSAGES, GenParams())


def test_a_thinking_model_cut_off_before_answering_is_an_empty_answer(sleeps: list[float]) -> None:
    body = gemini_completion("gemini-2.5-pro", "", "length")
    del body["choices"][0]["message"]["content"]
    script = Script(httpx.Response(200, json=body))
    with OpenAICompatProvider(
        "gemini-2.5-pro", "https://x.test/v1", "k", transport=httpx.MockTransport(script)
    ) as provider:
        out = provider.chat(MESSAGES, GenParams(max_tokens=8))
    assert (out.text, out.finish_reason) == ("", "length") and len(script.requests) == 1


def test_openai_rate_limit_then_bad_key(hosted_apis: HostedAPIs, sleeps: list[float]) -> None:
    limited = openai_error(
        429,
        "Rate limit reached for gpt-4o in organization org-test on tokens per min (TPM): "
        "Limit 30000, Used 29500, Requested 900. Please try again in 1.2s.",
        "tokens",
        "rate_limit_exceeded",
        **{"retry-after": "2"},
    )
    hosted_apis.fail_next(OPENAI, limited)
    handle = open_model("gpt-4o")
    provider = handle.provider
    assert isinstance(provider, OpenAICompatProvider)
    provider.retry.sleep = sleeps.append
    assert provider.chat(MESSAGES, GenParams()).text == "pos"
    assert sleeps == [2.0]
    hosted_apis.keys["OPENAI_API_KEY"] = "sk-rotated"
    with pytest.raises(ProviderAuthError, match="OPENAI_API_KEY") as info:
        provider.chat(MESSAGES, GenParams(max_tokens=5))
    assert "Incorrect API key provided" in str(info.value)
    assert KEYS["OPENAI_API_KEY"] not in str(info.value)
    handle.close()


# --- the registry and the CLI ---------------------------------------------------------------


def test_models_list_shows_hosted_models_once_their_key_is_set(
    cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = cli("models", "list")
    assert code == 0 and "gpt-4o" not in out.split("models (")[0]
    assert "OpenAI models (gpt-4o, gpt-4o-mini," in out and "set OPENAI_API_KEY to use them" in out
    assert "set ANTHROPIC_API_KEY to use them" in out
    assert "set GEMINI_API_KEY or GOOGLE_API_KEY to use them" in out
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    code, out, _ = cli("models", "list")
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("│")}
    for name in ("claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-5"):
        assert "claude" in rows[name] and "anthropic" in rows[name] and "- (endpoint)" in rows[name]
    assert "1 / 5" in rows["claude-haiku-4-5"] and "gpt-4o" not in rows
    assert "Anthropic models" not in out and "set OPENAI_API_KEY" in out
    code, out, _ = cli("models", "info", "claude-haiku-4-5")
    assert code == 0
    for text in ("family          claude", "https://api.anthropic.com", "ANTHROPIC_API_KEY (set)"):
        assert text in out, text


def test_a_hosted_model_without_its_key_is_one_clear_error(cli: CLI, tmp_path: Path) -> None:
    (tmp_path / "reviews.jsonl").write_text('{"text": "fine", "label": "pos"}\n')
    code, _, err = cli("data", "import", "reviews.jsonl", "--task", "classification")
    assert code == 0, err
    code, out, err = cli("annotate", "--dataset", "reviews", "--model", "claude-opus-4-5")
    assert code == 1 and out == ""
    assert err.strip() == (
        "error: model 'claude-opus-4-5' is served by Anthropic and needs an API key: set "
        "ANTHROPIC_API_KEY (create a key at https://console.anthropic.com/settings/keys)"
    )
    code, _, err = cli("models", "info", "gemini-2.5-pro")
    assert code == 1 and "set GEMINI_API_KEY or GOOGLE_API_KEY" in err


def test_a_refused_key_stops_the_command_with_one_line(
    cli: CLI, tmp_path: Path, hosted_apis: HostedAPIs
) -> None:
    (tmp_path / "reviews.jsonl").write_text('{"text": "fine", "label": "pos"}\n')
    assert cli("data", "import", "reviews.jsonl", "--task", "classification")[0] == 0
    hosted_apis.keys["ANTHROPIC_API_KEY"] = "sk-ant-rotated"
    code, _, err = cli("annotate", "--dataset", "reviews", "--model", "claude-haiku-4-5")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "the API key in ANTHROPIC_API_KEY was refused" in err
    assert "invalid x-api-key (authentication_error)" in err and KEY not in err


def test_same_family_judge_is_refused_across_gpt_models(
    cli: CLI, tmp_path: Path, hosted_apis: HostedAPIs
) -> None:
    notes = tmp_path / "notes.jsonl"
    notes.write_text(
        json.dumps({"source": "Doctor: Cough? Patient: Two weeks.", "summary": "Cough."}) + "\n"
    )
    assert cli("data", "import", str(notes), "--task", "summarization")[0] == 0
    assert cli("prompt", "new", "note", "--from", "conversation-summary")[0] == 0
    common = ("prompt", "evaluate", "--prompt", "note", "--dataset", "notes", "--model", "gpt-4o")
    code, _, err = cli(*common, "--judge", "gpt-3.5-turbo")
    assert code == 1 and "the judge gpt-3.5-turbo is of the same model family (gpt)" in err
    assert hosted_apis.requests == []  # refused before any call
    code, out, err = cli(*common, "--judge", "gpt-3.5-turbo", "--allow-same-family", "--json")
    assert code == 0, err
    assert json.loads(out)["judge"]["family"] == "gpt"
    code, out, err = cli(*common, "--judge", "gemini-2.5-flash-lite", "--json", "--force")
    assert code == 0, err
    judge = json.loads(out)["judge"]
    assert (judge["model"], judge["family"], judge["rated"]) == (
        "gemini-2.5-flash-lite",
        "gemini",
        1,
    )


def test_project_prices_override_and_new_models_need_no_code(
    cli: CLI, store: Store, tmp_path: Path, hosted_apis: HostedAPIs
) -> None:
    (tmp_path / "tuneloop.yaml").write_text(
        "prices:\n"
        "  claude-haiku-4-5: {input: 2, output: 10}\n"
        "  claude-sonnet-4-6: {input: 3, output: 15}\n"
        "models:\n"
        "  - name: claude-sonnet-4-6\n"
        "    family: claude\n"
        "    provider: anthropic\n"
        "    context_length: 1000000\n"
        "  - name: my-gemini\n"
        "    family: gemini\n"
        "    provider: gemini\n"
        "    hub: gemini-2.5-flash\n"
        "    context_length: 1048576\n"
    )
    haiku = _engine(store, "claude-haiku-4-5", tmp_path)
    assert (haiku.price.input, haiku.price.output) == (2.0, 10.0)
    assert haiku.chat(MESSAGES).cost == pytest.approx((120 * 2 + 8 * 10) / 1e6)
    newer = open_model("claude-sonnet-4-6", tmp_path)
    assert (newer.family, newer.provider.kind, newer.price.input) == ("claude", "anthropic", 3.0)
    assert newer.provider.chat(MESSAGES, GenParams()).text == "pos"
    assert hosted_apis.bodies(ANTHROPIC)[-1]["model"] == "claude-sonnet-4-6"
    mine = open_model("my-gemini", tmp_path)
    assert (mine.provider.model, mine.price.input) == ("gemini-2.5-flash", 0.3)
    newer.close()
    mine.close()
    code, out, _ = cli("models", "list")
    row = next(line for line in out.splitlines() if "claude-sonnet-4-6" in line)
    assert "3 / 15" in row and "served" not in row


def test_openai_prefix_keeps_working_and_is_priced(hosted_apis: HostedAPIs) -> None:
    handle = open_model("openai:gpt-4o-mini")
    assert (handle.family, handle.price.input) == ("gpt", 0.15)
    assert handle.provider.chat(MESSAGES, GenParams()).text == "pos"
    assert hosted_apis.requests[-1].url.host == OPENAI
    handle.close()


def test_a_failed_model_call_stops_the_command_with_one_clear_error(
    cli: CLI, tmp_path: Path, hosted_apis: HostedAPIs
) -> None:
    (tmp_path / "reviews.jsonl").write_text('{"text": "fine", "label": "pos"}\n')
    assert cli("data", "import", "reviews.jsonl", "--task", "classification")[0] == 0
    from tests.hosted_mock import ANTHROPIC, anthropic_error

    hosted_apis.fail_next(
        ANTHROPIC, anthropic_error(404, "not_found_error", "model: claude-haiku-4-5")
    )
    code, _, err = cli("annotate", "--dataset", "reviews", "--model", "claude-haiku-4-5")
    assert code == 1 and "Traceback" not in err, err
    assert err.startswith("error: model call failed:") and "not_found_error" in err
    assert "run the same command again to continue" in err
