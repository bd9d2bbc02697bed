"""From a model name to a provider: ``fake``, a model tuneloop trained, a registry model (built
in, hosted, or from the project's tuneloop.yaml), or ``openai:MODEL``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tuneloop.config import cache_dir
from tuneloop.errors import UserError
from tuneloop.llm.engine import Price
from tuneloop.llm.types import Provider

if TYPE_CHECKING:
    from tuneloop.llm.registry_spec import ModelSpec
    from tuneloop.store.db import Store


@dataclass
class ModelHandle:
    provider: Provider
    family: str
    price: Price
    max_concurrency: int  # local engines run one call at a time

    def close(self) -> None:
        """Release the provider's connections (HTTP clients) if it holds any."""
        close = getattr(self.provider, "close", None)
        if callable(close):
            close()


def load_prices(project_dir: Path | None) -> dict[str, Price]:
    """The ``prices:`` table of the project's tuneloop.yaml: US dollars per million tokens,
    ``{MODEL: {input: 2.5, output: 10}}``. Local models cost nothing unless listed."""
    if project_dir is None:
        return {}
    from tuneloop.config import PROJECT_FILE

    path = project_dir / PROJECT_FILE
    if not path.exists():
        return {}
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    table = data.get("prices") or {}
    if not isinstance(table, dict):
        raise UserError(f"{path}: prices: expected a mapping of model -> {{input, output}}")
    prices: dict[str, Price] = {}
    for model, entry in table.items():
        if not isinstance(entry, dict) or set(entry) - {"input", "output"}:
            raise UserError(
                f"{path}: prices: {model}: expected {{input: USD per 1M tokens, output: ...}}"
            )
        try:
            prices[str(model)] = Price(float(entry.get("input", 0)), float(entry.get("output", 0)))
        except (TypeError, ValueError):
            raise UserError(f"{path}: prices: {model}: prices must be numbers") from None
    return prices


def open_model(
    name: str, project_dir: Path | None = None, store: Store | None = None
) -> ModelHandle:
    """The provider for ``name``, with the price the project's tuneloop.yaml sets for it.

    With a ``store``, a model trained in the project (``tuneloop train list``) is found by its
    name too, and runs through transformers (its adapter merged into its base)."""
    handle = _trained(name, project_dir, store) if store is not None else None
    if handle is None:
        handle = _open(name, project_dir)
    prices = load_prices(project_dir)
    price = prices.get(name) or prices.get(handle.provider.model)
    if price is not None:  # the project's table overrides the hosted list prices
        handle.price = price
    return handle


def _trained(name: str, project_dir: Path | None, store: Store) -> ModelHandle | None:
    """The model called ``name`` in the project's ``model`` table, if there is one."""
    if name == "fake" or name.startswith(("fake:", "openai:")):
        return None
    from sqlalchemy import select

    from tuneloop.config import DEFAULT_PROJECT, project_name
    from tuneloop.store.models import ModelEntry, Project

    project = project_name(project_dir) if project_dir is not None else DEFAULT_PROJECT
    with store.transaction() as session:
        entry = session.scalar(
            select(ModelEntry)
            .join(Project, Project.id == ModelEntry.project_id)
            .where(Project.name == project, ModelEntry.name == name)
        )
        if entry is None:
            return None
        path, config, family = entry.path, dict(entry.config), entry.family
    from tuneloop.llm.providers.transformers_hf import TransformersProvider
    from tuneloop.training.trained import load_trained

    model, tokenizer = load_trained(name, path, config)
    return ModelHandle(TransformersProvider(name, model, tokenizer), family, Price(), 1)


def _open(name: str, project_dir: Path | None) -> ModelHandle:
    """``fake`` / ``fake:FAMILY-NAME`` (scripted, offline), ``openai:MODEL`` (an OpenAI-compatible
    endpoint from OPENAI_BASE_URL / OPENAI_API_KEY), or a name from ``tuneloop models list``."""
    if name == "fake" or name.startswith("fake:"):
        from tuneloop.llm.providers.fake import FakeProvider

        # fake:FAMILY[-anything] plays a model of that family (for judge-family rules)
        family = name.partition(":")[2].split("-")[0] or "fake"
        return ModelHandle(FakeProvider(name), family, Price(), 8)
    if name.startswith("openai:"):
        from tuneloop.llm.hosted import DEFAULT_PRICES, transport
        from tuneloop.llm.providers.openai_compat import OpenAICompatProvider

        model = name.removeprefix("openai:")
        price = Price(*DEFAULT_PRICES.get(model, (0.0, 0.0)))
        provider = OpenAICompatProvider(model, transport=transport())
        return ModelHandle(provider, "gpt", price, _http_concurrency())
    from tuneloop.llm.registry import ENDPOINT_PROVIDERS, get_model, pull

    spec = get_model(name, project_dir)
    if spec.provider in ENDPOINT_PROVIDERS:
        return _endpoint(spec)
    if spec.provider == "llamacpp":
        from tuneloop.llm.providers.llamacpp import LlamaCppProvider

        path = pull(spec)
        return ModelHandle(
            LlamaCppProvider(
                spec.name,
                path,
                chat_template=spec.chat_template,
                context_length=spec.context_length,
                scorer=_scorer(),
                scorer_cache=cache_dir(),
            ),
            spec.family,
            Price(),
            1,
        )
    if spec.provider == "transformers":
        from tuneloop.llm.providers.transformers_hf import TransformersProvider

        source = spec.source.path or spec.source.hub
        if source is None:
            raise UserError(f"model {name!r}: a transformers model needs a path or a hub id")
        return ModelHandle(TransformersProvider(spec.name, source), spec.family, Price(), 1)
    raise UserError(f"model {name!r}: provider {spec.provider!r} is not available yet")


def _scorer() -> str:
    """How local models score batches of records: ``TUNELOOP_SCORER`` (auto, torch, llamacpp)."""
    from tuneloop.llm.providers.llamacpp import SCORERS

    value = os.environ.get("TUNELOOP_SCORER", "auto").strip().lower() or "auto"
    if value not in SCORERS:
        raise UserError(f"TUNELOOP_SCORER={value!r}: choose one of {', '.join(SCORERS)}")
    return value


def _http_concurrency() -> int:
    return int(os.environ.get("TUNELOOP_HTTP_CONCURRENCY", "4"))


def _endpoint(spec: ModelSpec) -> ModelHandle:
    """A model served over HTTP: an OpenAI-compatible endpoint (OpenAI itself, Gemini's
    compatibility endpoint, a local server) or Anthropic's Messages API. At a service's own
    URL the key must be set (its variable is named when it is not); elsewhere it is optional."""
    from tuneloop.llm.hosted import (
        DEFAULT_PRICES,
        EXTRA_BODY,
        SERVICES,
        api_key,
        missing_key,
        transport,
    )

    service = SERVICES[spec.provider]
    model = spec.source.hub or spec.name
    url = spec.source.path
    if url is None and spec.provider == "openai":
        url = os.environ.get("OPENAI_BASE_URL")  # as the provider itself would
    url = (url or service.base_url).rstrip("/")
    key = api_key(service)
    if key is None and url == service.base_url:
        raise UserError(missing_key(spec.name, service))
    key_env, key_value = key if key is not None else (None, None)
    official = url == service.base_url  # list prices hold at the service itself only
    listed = DEFAULT_PRICES.get(spec.name) or DEFAULT_PRICES.get(model)
    price = Price(*listed) if official and listed else Price()
    provider: Provider
    if spec.provider == "anthropic":
        from tuneloop.llm.providers.anthropic import AnthropicProvider

        if key_env is None or key_value is None:
            raise UserError(missing_key(spec.name, service))
        provider = AnthropicProvider(
            model, key_value, base_url=url, key_env=key_env, transport=transport()
        )
    else:
        from tuneloop.llm.providers.openai_compat import OpenAICompatProvider

        provider = OpenAICompatProvider(
            model,
            url,
            key_value or "",
            key_env=key_env,
            extra_body=EXTRA_BODY.get(spec.name) or EXTRA_BODY.get(model),
            transport=transport(),
        )
    return ModelHandle(provider, spec.family, price, _http_concurrency())
