"""Hosted LLMs as named models: OpenAI (GPT-4-class and GPT-3.5-class), Anthropic (Claude) and
Google (Gemini), each with its family, context length, list price and API key variable.

Which path each service takes, and why:

- OpenAI: its own Chat Completions API through the OpenAI-compatible provider (that API is
  what the provider was written against; structured outputs constrain labels).
- Anthropic: its native Messages API (``providers/anthropic.py``). Anthropic documents its
  OpenAI-compatible endpoint as a way to try models out, not a production path, and it drops
  fields it does not support; forced tool use on the Messages API constrains labels.
- Google: the Gemini API's OpenAI-compatible endpoint, which Google maintains as a supported
  surface of the Gemini API (chat, JSON-schema structured outputs, ``reasoning_effort``), so one
  well-tested provider serves both. Its errors come in Google's shape (``{"error": {"code",
  "message", "status", "details"}}``, sometimes wrapped in a list), handled there.

A hosted model is *configured* when its service's key variable is set: only then does it appear
in ``tuneloop models list`` (the list says which variables would add which models). Naming an
unconfigured one fails with one message naming the variable. Keys come from the environment
only, never from project files.

Prices are list prices in US dollars per million tokens (input, output; the short-prompt tier)
as the services published them in ``PRICES_AS_OF``; they change, so a project's tuneloop.yaml
``prices:`` overrides any of them. A newer model needs no code: add it under ``models:`` with
``provider: openai | anthropic | gemini`` (and its price under ``prices:``).

Tests route every hosted call through one ``httpx`` transport with ``set_transport`` (an
``httpx.MockTransport`` answering in each API's documented shapes): no test reaches the network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuneloop.llm.registry_spec import TEMPLATE_SERVED, ModelSource, ModelSpec

if TYPE_CHECKING:
    import httpx

PRICES_AS_OF = "2025-11"


@dataclass(frozen=True)
class Service:
    """A hosted API: where it is, which environment variables may hold its key (the first
    set one wins), and where a user gets a key."""

    provider: str  # the registry provider that speaks its API
    title: str
    base_url: str
    key_envs: tuple[str, ...]
    keys_page: str
    terms: str

    @property
    def key_hint(self) -> str:
        return " or ".join(self.key_envs)


SERVICES: dict[str, Service] = {
    "openai": Service(
        "openai",
        "OpenAI",
        "https://api.openai.com/v1",
        ("OPENAI_API_KEY",),
        "https://platform.openai.com/api-keys",
        "hosted by OpenAI (OpenAI terms of use)",
    ),
    "anthropic": Service(
        "anthropic",
        "Anthropic",
        "https://api.anthropic.com",
        ("ANTHROPIC_API_KEY",),
        "https://console.anthropic.com/settings/keys",
        "hosted by Anthropic (Anthropic commercial terms)",
    ),
    "gemini": Service(
        "gemini",
        "Google",
        "https://generativelanguage.googleapis.com/v1beta/openai",
        ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        "https://aistudio.google.com/apikey",
        "hosted by Google (Gemini API terms)",
    ),
}


@dataclass(frozen=True)
class _Preset:
    name: str  # also the model's id in the service's API
    family: str
    provider: str
    context_length: int
    price: tuple[float, float]  # USD per 1M tokens: input, output
    description: str


_PRESETS: tuple[_Preset, ...] = (
    _Preset("gpt-4o", "gpt", "openai", 128_000, (2.50, 10.00), "GPT-4o: GPT-4-class"),
    _Preset("gpt-4o-mini", "gpt", "openai", 128_000, (0.15, 0.60), "GPT-4o mini: small, cheap"),
    _Preset("gpt-4.1", "gpt", "openai", 1_047_576, (2.00, 8.00), "GPT-4.1: GPT-4-class"),
    _Preset("gpt-4.1-mini", "gpt", "openai", 1_047_576, (0.40, 1.60), "GPT-4.1 mini"),
    _Preset("gpt-4.1-nano", "gpt", "openai", 1_047_576, (0.10, 0.40), "GPT-4.1 nano"),
    _Preset("gpt-3.5-turbo", "gpt", "openai", 16_385, (0.50, 1.50), "GPT-3.5 Turbo"),
    _Preset("claude-haiku-4-5", "claude", "anthropic", 200_000, (1.00, 5.00), "Claude Haiku 4.5"),
    _Preset(
        "claude-sonnet-4-5", "claude", "anthropic", 200_000, (3.00, 15.00), "Claude Sonnet 4.5"
    ),
    _Preset("claude-opus-4-5", "claude", "anthropic", 200_000, (5.00, 25.00), "Claude Opus 4.5"),
    _Preset(
        "gemini-2.5-flash-lite",
        "gemini",
        "gemini",
        1_048_576,
        (0.10, 0.40),
        "Gemini 2.5 Flash-Lite (thinking off)",
    ),
    _Preset(
        "gemini-2.5-flash",
        "gemini",
        "gemini",
        1_048_576,
        (0.30, 2.50),
        "Gemini 2.5 Flash (thinking off)",
    ),
    _Preset(
        "gemini-2.5-pro",
        "gemini",
        "gemini",
        1_048_576,
        (1.25, 10.00),
        "Gemini 2.5 Pro (always thinks: its thinking tokens count against --max-tokens)",
    ),
)

# request fields a preset always sends: Gemini 2.5 Flash models think before answering unless
# told not to, and their thinking would spend a label's few tokens (2.5 Pro cannot stop)
EXTRA_BODY: dict[str, dict[str, Any]] = {
    "gemini-2.5-flash": {"reasoning_effort": "none"},
    "gemini-2.5-flash-lite": {"reasoning_effort": "none"},
}

DEFAULT_PRICES: dict[str, tuple[float, float]] = {p.name: p.price for p in _PRESETS}

HOSTED: tuple[ModelSpec, ...] = tuple(
    ModelSpec(
        name=p.name,
        family=p.family,
        provider=p.provider,
        source=ModelSource(path=SERVICES[p.provider].base_url, hub=p.name),
        licence=SERVICES[p.provider].terms,
        chat_template=TEMPLATE_SERVED,
        context_length=p.context_length,
        description=f"{p.description}; list price ${p.price[0]:g} / ${p.price[1]:g} per 1M "
        f"tokens in / out ({PRICES_AS_OF})",
        architecture="not published",
    )
    for p in _PRESETS
)


def api_key(service: Service) -> tuple[str, str] | None:
    """(the variable, its value) of the first of the service's key variables that is set."""
    for env in service.key_envs:
        value = os.environ.get(env, "").strip()
        if value:
            return env, value
    return None


def configured(spec: ModelSpec) -> bool:
    """Whether the key of the service behind ``spec`` is set."""
    service = SERVICES.get(spec.provider)
    return service is not None and api_key(service) is not None


def hosted_models(only_configured: bool = True) -> list[ModelSpec]:
    """The hosted presets (by default only those whose key is set)."""
    return [spec for spec in HOSTED if configured(spec) or not only_configured]


def unconfigured() -> dict[Service, list[str]]:
    """The services whose key is not set, with the preset names setting it would add."""
    missing: dict[Service, list[str]] = {}
    for spec in HOSTED:
        if not configured(spec):
            missing.setdefault(SERVICES[spec.provider], []).append(spec.name)
    return missing


def missing_key(name: str, service: Service) -> str:
    """The message for a model whose service has no key."""
    return (
        f"model {name!r} is served by {service.title} and needs an API key: set "
        f"{service.key_hint} (create a key at {service.keys_page})"
    )


# -- the transport hook (tests) ----------------------------------------------------------------

_transport: httpx.BaseTransport | None = None


def set_transport(transport: httpx.BaseTransport | None) -> None:
    """Route every hosted and OpenAI-compatible call through ``transport`` (tests pass an
    ``httpx.MockTransport``); None restores the network."""
    global _transport
    _transport = transport


def transport() -> httpx.BaseTransport | None:
    return _transport
