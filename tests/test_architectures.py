"""`tuneloop train sft` with LoRA, then evaluation and generation through the transformers
provider, on a tiny random model of each supported architecture (built in process, no
download): Open LLaMA (llama), Falcon, StableLM, Pythia (gpt_neox) and phi, besides the
qwen2 and gemma3 of the built-in models.

Each architecture names its Linear layers differently (Falcon and GPT-NeoX fuse q/k/v into
``query_key_value``; phi has ``dense``, ``fc1``, ``fc2``; GPT-NeoX calls its output head
``embed_out`` in older checkpoints): the LoRA targets are read from the model, never listed."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import CLI
from tests.tiny import ARCHITECTURES
from tuneloop.store.db import open_store
from tuneloop.store.models import Dataset, LLMCall, ModelEntry, Record

pytest.importorskip("trl")
pytest.importorskip("peft")

ATTENTION_MLP = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
FUSED_QKV = {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}
# architecture -> (Linear layers LoRA must adapt, tokenizer, the family tuneloop gives it).
# Base models of these architectures mostly ship without a chat template: those read plain
# text, in training and at inference alike. Open LLaMA's tokenizer is SentencePiece. (For a
# qwen2 folder transformers loads its own Qwen2Tokenizer around the saved vocabulary, which
# drops the character vocabulary's whitespace: harmless here, both sides read the same ids.)
EXPECTED: dict[str, tuple[set[str], str, str]] = {
    "llama": (ATTENTION_MLP, "sentencepiece", "llama"),
    "qwen2": (ATTENTION_MLP, "chatml", "qwen"),
    "gemma3_text": (ATTENTION_MLP, "plain", "gemma"),
    "falcon": (FUSED_QKV, "plain", "falcon"),
    "stablelm": (ATTENTION_MLP, "chatml", "stablelm"),
    "gpt_neox": (FUSED_QKV, "plain", "pythia"),
    "phi": ({"q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"}, "plain", "phi"),
}


def _base_folder(root: Path, architecture: str, tokenizer: str) -> Path:
    """A Hugging Face folder with a tiny random model of ``architecture`` and a character
    tokenizer: ChatML, plain (a base model), or SentencePiece-like plain."""
    from tests.tiny import tiny_model, tiny_tokenizer

    folder = root / f"tiny-{architecture}"
    tok = tiny_tokenizer(
        chat_template=tokenizer == "chatml", sentencepiece=tokenizer == "sentencepiece"
    )
    tiny_model(architecture, len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: these tests exercise the architectures, not the database backends."""
    return f"sqlite:///{tmp_path / 'tuneloop.db'}"


class Spy:
    """The SFTTrainer the recipe composes, and its parameters before training."""

    trainer: Any = None
    before: dict[str, Any]


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Spy]:
    from trl.trainer import sft_trainer

    real = sft_trainer.SFTTrainer
    seen = Spy()

    def make(*args: Any, **kwargs: Any) -> Any:
        trainer = real(*args, **kwargs)
        seen.trainer = trainer
        seen.before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        return trainer

    monkeypatch.setattr(sft_trainer, "SFTTrainer", make)
    yield seen


def test_every_architecture_is_tested() -> None:
    assert set(EXPECTED) == set(ARCHITECTURES)


@pytest.mark.parametrize("architecture", list(EXPECTED))
def test_lora_sft_then_evaluate_and_generate(
    architecture: str, cli: CLI, db_url: str, tmp_path: Path, spy: Spy
) -> None:
    targets, tokenizer, family = EXPECTED[architecture]
    reviews = tmp_path / "reviews.jsonl"
    with reviews.open("w") as f:
        for i in range(24):
            word, label = ("good", "pos") if i % 2 else ("bad", "neg")
            f.write(json.dumps({"text": f"film {i} was {word}", "label": label}) + "\n")
    code, _, err = cli(
        "data", "import", str(reviews), "--task", "classification", "--split", "0.5,0.25,0.25",
        "--gold", "4", "--dedupe", "none",
    )  # fmt: skip
    assert code == 0, err
    base = _base_folder(tmp_path, architecture, tokenizer)

    code, out, err = cli(
        "train", "sft", "--dataset", "reviews", "--base", str(base), "--labels", "gold",
        "--max-steps", "3", "--batch-size", "4", "--threads", "1", "--name", "student",
    )  # fmt: skip
    assert code == 0, err
    assert "model student trained 3 steps" in out

    # LoRA adapted exactly the model's own Linear layers (its output head left alone), and
    # training changed every trainable parameter and nothing else
    peft_config = spy.trainer.model.peft_config["default"]
    assert set(peft_config.target_modules) == targets
    trainable = 0
    for name, param in spy.trainer.model.named_parameters():
        changed = not param.detach().equal(spy.before[name])
        assert param.requires_grad == ("lora_" in name), name
        assert changed == param.requires_grad, name
        trainable += param.requires_grad
    assert trainable == 2 * 2 * len(targets)  # A and B of every target in 2 layers
    store = open_store(db_url)
    try:
        with store.transaction() as s:
            labels = list(s.scalars(select(Dataset.labels)).one())
            train = s.scalars(select(Record).where(Record.split == "train")).all()
            records = [(r.fields["text"], r.fields["label"]) for r in train]
        _scored_as_trained(spy.trainer, records, labels)
        with store.transaction() as s:
            entry = s.scalars(select(ModelEntry).where(ModelEntry.name == "student")).one()
            assert entry.family == family
            assert math.isfinite(entry.metrics["train_loss"])
            assert math.isfinite(entry.metrics["final_loss"])

        # evaluation by the trained model's name: label scoring through transformers
        code, out, err = cli(
            "eval", "--model", "student", "--dataset", "reviews", "--split", "test",
            "--resamples", "50", "--json",
        )  # fmt: skip
        assert code == 0, err
        stats = json.loads(out)
        assert stats["model"] == "student" and stats["n"] == 5
        assert 0.0 <= stats["metrics"]["accuracy"]["value"] <= 1.0
        with store.transaction() as s:
            calls = s.scalars(select(LLMCall).where(LLMCall.model == "student")).all()
            assert len(calls) == 5
            assert {(c.provider, c.family, c.params["op"]) for c in calls} == {
                ("transformers", family, "score")
            }

        # generation: the same model, opened by name as every command opens it
        from tuneloop.llm.engine import Engine
        from tuneloop.llm.factory import open_model
        from tuneloop.llm.types import GenParams

        handle = open_model("student", tmp_path, store=store)
        assert (handle.provider.kind, handle.family) == ("transformers", family)
        engine = Engine(store, handle.provider, family=handle.family)
        reply = engine.chat([{"role": "user", "content": "film 3 was"}], GenParams(max_tokens=6))
        assert reply.completion is not None
        assert reply.completion.tokens_out is not None and 1 <= reply.completion.tokens_out <= 6
    finally:
        store.dispose()


def _scored_as_trained(trainer: Any, records: list[tuple[str, str]], labels: list[str]) -> None:
    """Label scoring reads each example's prompt and scores its answer in exactly the tokens
    the trainer trained on (the loss-masked prompt, then the answer to its end of turn)."""
    from tuneloop.chat import record_messages
    from tuneloop.llm.providers.transformers_hf import TransformersProvider

    provider = TransformersProvider("tiny", trainer.model, trainer.processing_class)
    examples = {}
    for text, label in records:
        messages = record_messages("classification", {"text": text}, labels)
        examples[tuple(provider.prompt_ids(messages))] = (messages, label)
    for row in trainer.train_dataset:
        ids = row["input_ids"]
        start = next(i for i, target in enumerate(row["labels"]) if target != -100)
        messages, label = examples[tuple(ids[:start])]  # the prompt is the inference prompt
        scored, answer_start = provider.answer_ids(messages, label)
        assert (scored, answer_start) == (ids[: len(scored)], start)
        assert len(scored) > start and scored[-1] == provider._end_of_turn[0]
