"""Supervised fine-tuning on a tiny random llama saved to disk (built in process): the recipe,
label sources, the one chat format, checkpoints and resume after kill -9, lineage, the trained
model as a provider, export, and clear errors."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.conftest import CLI
from tuneloop.errors import UserError
from tuneloop.store.db import Store, get_project, open_store
from tuneloop.store.models import (
    Dataset,
    Label,
    LLMCall,
    ModelEntry,
    PromptVersion,
    Record,
    Run,
    TrainStep,
)
from tuneloop.training.config import TrainConfig, dump_config, load_config

pytest.importorskip("trl")
pytest.importorskip("peft")

EXAMPLE_CONFIG = Path(__file__).parents[1] / "examples" / "sft.yaml"
IMPORT = ("--task", "classification", "--split", "0.5,0.25,0.25", "--gold", "8")


def _reviews(tmp_path: Path, n: int = 60) -> Path:
    path = tmp_path / "reviews.jsonl"
    with path.open("w") as f:
        for i in range(n):
            word = "good" if i % 2 else "bad"
            label = "pos" if i % 2 else "neg"
            f.write(json.dumps({"text": f"film {i} was {word}", "label": label}) + "\n")
    return path


def _import(cli: CLI, tmp_path: Path, n: int = 60) -> None:
    code, _, err = cli("data", "import", str(_reviews(tmp_path, n)), *IMPORT, "--dedupe", "none")
    assert code == 0, err


def _config(base: Path, **options: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "dataset": "reviews",
        "base": str(base),
        "labels": "gold",
        "max_steps": 4,
        "batch_size": 4,
        "threads": 1,
    }
    return TrainConfig(**{**values, **options})


class Spy:
    """Keeps the SFTTrainer the recipe composes, and its parameters before training."""

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


# --- config -----------------------------------------------------------------------------------


def test_shipped_config_loads_round_trips_and_runs(
    cli: CLI, db_url: str, tmp_path: Path, tiny_base: Path
) -> None:
    from tuneloop.workflows.train import sft

    config = load_config(EXAMPLE_CONFIG, {"dataset": "reviews"})
    assert (config.base, config.lora, config.labels, config.grad_accum) == (
        "smollm2-135m-instruct",
        True,
        "mix",
        2,
    )
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(config))
    assert load_config(again) == config
    # flags win over the file; the file over the defaults
    flagged = load_config(EXAMPLE_CONFIG, {"dataset": "d", "lora": False, "max_steps": 3})
    assert (flagged.method, flagged.max_steps, flagged.epochs) == ("full", 3, 2.0)
    assert flagged.peak_learning_rate == 2e-4  # the file sets it
    # the shipped file trains (on the tiny base, one step)
    _import(cli, tmp_path)
    run = load_config(EXAMPLE_CONFIG, {"dataset": "reviews", "base": str(tiny_base)})
    run.max_steps, run.threads = 1, 1
    store = open_store(db_url)
    result = sft(store, run, project_dir=tmp_path)
    assert result.steps == 1 and result.counts == {"human": 0, "gold": 26, "llm": 0}
    store.dispose()


def test_precision_falls_back_to_fp32_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from tuneloop.training import base

    monkeypatch.setattr(base, "bf16_supported", lambda: False)
    bf16, note = base.choose_precision("auto")
    assert not bf16 and note is not None and "fp32" in note
    assert base.choose_precision("fp32") == (False, None)
    monkeypatch.setattr(base, "bf16_supported", lambda: True)
    assert base.choose_precision("auto") == (True, None)


def test_bad_config_names_file_line_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: reviews\nlora_r: 8\nbatch_sise: 4\n")
    with pytest.raises(UserError, match=r"bad.yaml, line 3: batch_sise: unknown key; known"):
        load_config(bad)
    bad.write_text("dataset: reviews\nmin_confidence: 2\n")
    with pytest.raises(UserError, match=r"line 2: min_confidence: Input should be less than"):
        load_config(bad)
    bad.write_text("dataset: reviews\nsplits: [train, test]\n")
    with pytest.raises(
        UserError, match="line 2: splits: training on the test split is not allowed"
    ):
        load_config(bad)
    with pytest.raises(UserError, match="--dataset: missing"):
        load_config(None, {})
    with pytest.raises(UserError, match="--labels: Input should be"):
        load_config(None, {"dataset": "d", "labels": "best"})


# --- label sources ------------------------------------------------------------------------------


def test_label_sources_and_held_out_splits(store: Store) -> None:
    from tuneloop.training.labels import select_examples

    with store.transaction() as s:
        project = get_project(s, "default")
        ds = Dataset(
            project_id=project.id,
            name="d",
            version=1,
            task_type="classification",
            labels=["pos", "neg"],
            split_config={"fractions": [0.5, 0.25, 0.25]},
        )
        s.add(ds)
        s.flush()
        pv = PromptVersion(
            project_id=project.id,
            name="p",
            version=1,
            task_type="classification",
            user_template="x",
        )
        s.add(pv)
        s.flush()
        splits = ["train"] * 6 + ["validation", "test", "gold"]
        records = []
        for i, split in enumerate(splits):
            reference = "pos" if i in (0, 1, 6, 7, 8) else None
            fields = {"text": f"text {i}", "label": reference}
            r = Record(
                dataset_id=ds.id, position=i, fields=fields, split=split, content_hash=str(i)
            )
            s.add(r)
            records.append(r)
        s.flush()
        ids = [r.id for r in records]

        def label(i: int, value: str, source: str, conf: float | None = None, **kw: Any) -> None:
            s.add(Label(record_id=ids[i], value=value, source=source, confidence=conf, **kw))

        label(0, "neg", "human")  # human beats the reference in a mix
        label(1, "neg", "llm", 0.99, prompt_version_id=pv.id)  # the reference beats the LLM
        label(2, "neg", "llm", 0.95, prompt_version_id=pv.id)
        label(3, "pos", "llm", 0.6)  # below the confidence floor
        label(4, "pos", "llm", 0.9, status="needs_review")  # not accepted
        label(5, "neg", "import")  # an imported label is a reference output
        label(2, "pos", "llm", 0.97, prompt_version_id=pv.id)  # newer: wins over the first
        for i in (6, 7, 8):  # validation, test, gold: labelled by everyone
            label(i, "neg", "human")
            label(i, "neg", "llm", 0.99)
        s.flush()

        def pick(source: str, splits: list[str] | None = None, **kw: Any) -> dict[int, Any]:
            chosen = select_examples(s, ds, source, splits or ["train"], **kw)
            return {ids.index(e.record_id): (e.source, e.completion) for e in chosen.examples}

        assert pick("gold") == {0: ("gold", "pos"), 1: ("gold", "pos"), 5: ("gold", "neg")}
        assert pick("human") == {0: ("human", "neg")}
        assert pick("llm", min_confidence=0.8) == {1: ("llm", "neg"), 2: ("llm", "pos")}
        assert pick("llm", min_confidence=0.5) == {
            1: ("llm", "neg"),
            2: ("llm", "pos"),
            3: ("llm", "pos"),
        }
        assert pick("llm", prompt_version_id=pv.id) == {1: ("llm", "neg"), 2: ("llm", "pos")}
        mix = select_examples(s, ds, "mix", ["train"], min_confidence=0.8)
        assert {ids.index(e.record_id): e.source for e in mix.examples} == {
            0: "human",
            1: "gold",
            2: "llm",
            5: "gold",
        }
        assert mix.counts == {"human": 1, "gold": 2, "llm": 1}
        assert (mix.unlabelled, mix.prompt_versions) == (2, {pv.id: 1})
        assert [m["role"] for m in mix.examples[0].prompt] == ["user"]
        assert "Answer with exactly one of: pos, neg." in mix.examples[0].prompt[0]["content"]
        assert "label" not in mix.examples[0].prompt[0]["content"]
        # validation may be chosen; the test split and the gold slice never give an example
        assert set(pick("mix", ["train", "validation"])) == {0, 1, 2, 3, 5, 6}
        for held in ("test", "gold"):
            with pytest.raises(UserError, match=f"training on the {held} split is not allowed"):
                select_examples(s, ds, "mix", ["train", held])
        assert len(select_examples(s, ds, "mix", ["train"], limit=2).examples) == 2


# --- the recipe ---------------------------------------------------------------------------------


def test_lora_sft_trains_the_adapter_only(
    cli: CLI, db_url: str, tmp_path: Path, tiny_base: Path, spy: Spy
) -> None:
    from tuneloop.workflows.train import sft

    _import(cli, tmp_path)
    store = open_store(db_url)
    steps: list[Any] = []
    result = sft(
        store, _config(tiny_base, name="tiny-lora"), project_dir=tmp_path, on_step=steps.append
    )
    assert result.steps == 4 and result.model == "tiny-lora" and result.counts == {"gold": 26}
    assert result.train_loss is not None and math.isfinite(result.train_loss)
    assert [s.step for s in steps if s.loss is not None] == [1, 2, 3, 4]
    trainable = 0
    for name, param in spy.trainer.model.named_parameters():
        changed = not param.detach().equal(spy.before[name])
        assert changed == param.requires_grad, name
        assert param.requires_grad == ("lora_" in name), name
        trainable += param.requires_grad
    assert trainable == 2 * 2 * 7  # A and B of q, k, v, o, gate, up, down in 2 layers
    assert (result.path / "adapter_config.json").is_file()
    with store.transaction() as s:
        rows = s.scalars(select(TrainStep).order_by(TrainStep.step)).all()
        assert [r.step for r in rows] == [1, 2, 3, 4]
        assert all(r.loss is not None and math.isfinite(r.loss) for r in rows)
        assert all(r.learning_rate is not None and r.tokens_per_second for r in rows)
        run = s.get(Run, result.run_id)
        assert run is not None and run.status == "finished" and run.kind == "train"
    # the checkpoints went away with success; the examples the run trained on stay
    run_dir = tmp_path / ".tuneloop" / "train" / f"run-{result.run_id}"
    assert not (run_dir / "checkpoints").exists()
    assert len((run_dir / "examples.jsonl").read_text().splitlines()) == 26
    store.dispose()


def test_full_finetune_trains_every_weight(
    cli: CLI, db_url: str, tmp_path: Path, tiny_base: Path, spy: Spy
) -> None:
    from tuneloop.workflows.train import sft

    _import(cli, tmp_path)
    store = open_store(db_url)
    result = sft(store, _config(tiny_base, lora=False, max_steps=3), project_dir=tmp_path)
    assert math.isfinite(result.train_loss or math.nan)
    for name, param in spy.trainer.model.named_parameters():
        assert param.requires_grad and not param.detach().equal(spy.before[name]), name
    assert (result.path / "model.safetensors").is_file()
    assert not (result.path / "adapter_config.json").exists()
    store.dispose()


def test_train_prompt_is_the_inference_prompt_byte_for_byte(
    cli: CLI, db_url: str, tmp_path: Path, tiny_base: Path, spy: Spy
) -> None:
    """The tokens the trainer reads before the answer (loss masked) are the tokens the
    transformers provider feeds the model for the same record, built by record_messages."""
    from tuneloop.chat import record_messages
    from tuneloop.llm.providers.transformers_hf import TransformersProvider
    from tuneloop.workflows.train import sft

    _import(cli, tmp_path)
    store = open_store(db_url)
    sft(store, _config(tiny_base, max_steps=1, padding_free=False), project_dir=tmp_path)
    trainer = spy.trainer
    tokenizer = trainer.processing_class
    provider = TransformersProvider("tiny", trainer.model, tokenizer)
    with store.transaction() as s:
        records = s.scalars(select(Record).where(Record.split == "train")).all()
        by_text = {r.fields["text"]: r for r in records}
        label_set = s.scalars(select(Dataset.labels)).one()
    checked = 0
    for row in trainer.train_dataset:
        ids = row["input_ids"]
        cut = next(i for i, target in enumerate(row["labels"]) if target != -100)
        train_prompt = tokenizer.decode(ids[:cut])
        text = train_prompt.split("Text:\n", 1)[1].split("<|im_end|>", 1)[0]
        record = by_text[text]
        inputs = {"text": record.fields["text"]}
        messages = record_messages("classification", inputs, label_set)
        assert provider.prompt_ids(messages) == ids[:cut]
        assert tokenizer.decode(provider.prompt_ids(messages)) == train_prompt
        assert tokenizer.decode(ids[cut:]) == record.fields["label"] + "<|im_end|>\n"
        checked += 1
    assert checked == 26
    store.dispose()


def test_padding_free_batches_give_the_padded_loss(
    cli: CLI, db_url: str, tmp_path: Path, tiny_base: Path
) -> None:
    from tuneloop.workflows.train import sft

    _import(cli, tmp_path)
    store = open_store(db_url)
    losses = []
    for padding_free in (False, True):
        config = _config(tiny_base, max_steps=2, precision="fp32", padding_free=padding_free)
        result = sft(store, config, project_dir=tmp_path)
        with store.transaction() as s:
            losses.append(
                s.scalars(
                    select(TrainStep.loss)
                    .where(TrainStep.run_id == result.run_id)
                    .order_by(TrainStep.step)
                ).all()
            )
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    store.dispose()


# --- checkpoints and resume ---------------------------------------------------------------------


def test_kill_9_mid_training_then_resume(
    cli: CLI, db_url: str, tmp_path: Path, tiny_base: Path
) -> None:
    _import(cli, tmp_path, 200)
    cmd = [
        sys.executable,
        "-m",
        "tuneloop.cli",
        "--db",
        db_url,
        "train",
        "sft",
        "--dataset",
        "reviews",
        "--base",
        str(tiny_base),
        "--labels",
        "gold",
        "--max-steps",
        "60",
        "--batch-size",
        "2",
        "--save-steps",
        "5",
        "--save-total-limit",
        "3",
        "--threads",
        "1",
        "--name",
        "resumed",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "200"},
    )
    store = open_store(db_url)
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        with store.transaction() as s:
            done = s.scalar(select(func.count()).select_from(TrainStep)) or 0
        if done >= 12:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before the kill; give it more steps"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with store.transaction() as s:
        run = s.scalars(select(Run).where(Run.kind == "train")).one()
        before = s.scalar(select(func.count()).select_from(TrainStep)) or 0
        assert run.status == "running" and 12 <= before < 60
        run_id = run.id
    checkpoints = sorted(
        (tmp_path / ".tuneloop" / "train" / f"run-{run_id}" / "checkpoints").iterdir()
    )
    assert checkpoints, "no checkpoint before the kill"

    code, out, err = cli("train", "resume", str(run_id), "--threads", "1")
    assert code == 0, err
    assert f"resuming run {run_id} from its checkpoint at step" in out
    assert "model resumed trained 60 steps, resumed at step" in out
    with store.transaction() as s:
        steps = s.scalars(select(TrainStep.step).where(TrainStep.run_id == run_id)).all()
        assert sorted(steps) == list(range(1, 61))  # every step once, none twice
        run = s.get(Run, run_id)
        assert run is not None and run.status == "finished"
        assert s.scalars(select(ModelEntry.name)).all() == ["resumed"]
    code, _, err = cli("train", "resume", str(run_id))
    assert code == 1 and f"training run {run_id} has finished: model resumed" in err
    store.dispose()


# --- lineage, use by name, export ---------------------------------------------------------------


def test_lineage_annotate_by_name_child_and_export(
    cli: CLI, db_url: str, tmp_path: Path, tiny_base: Path
) -> None:
    _import(cli, tmp_path)
    store = open_store(db_url)
    with store.transaction() as s:
        ds = s.scalars(select(Dataset)).one()
        pv = PromptVersion(
            project_id=ds.project_id,
            name="sentiment",
            version=2,
            task_type="classification",
            user_template="{{ text }}",
        )
        s.add(pv)
        s.flush()
        train = s.scalars(select(Record).where(Record.split == "train")).all()
        for r in train[:10]:
            s.add(
                Label(
                    record_id=r.id,
                    value=r.fields["label"],
                    source="llm",
                    confidence=0.9,
                    prompt_version_id=pv.id,
                )
            )
        pv_id = pv.id
    common = ("--dataset", "reviews", "--base", str(tiny_base), "--max-steps", "2")
    code, out, err = cli(
        "train", "sft", *common, "--labels", "llm", "--name", "student", "--threads", "1"
    )
    assert code == 0, err
    assert "model student trained 2 steps" in out and "examples by label source: llm 10" in out
    with store.transaction() as s:
        entry = s.scalars(select(ModelEntry).where(ModelEntry.name == "student")).one()
        assert (entry.kind, entry.family, entry.base_model) == ("sft", "llama", str(tiny_base))
        assert entry.dataset_id == ds.id and entry.prompt_version_id == pv_id
        assert entry.run_id is not None and entry.parent_id is None
        assert entry.label_sources["counts"] == {"llm": 10}
        assert entry.label_sources["prompt_versions"] == {"sentiment@2": 10}
        assert entry.config["method"] == "lora" and entry.config["max_steps"] == 2
        assert entry.metrics["steps"] == 2
    code, out, _ = cli("models", "show", "student")
    assert code == 0
    for text in (
        "sft (lora)",
        f"student <- {tiny_base}",
        "reviews@1",
        "llm: llm 10",
        "prompt version  sentiment@2",
    ):
        assert text in out, text
    assert re.search(r"llm labels by +sentiment@2 10", out)

    # the trained model is a provider by name: annotate with it
    code, out, err = cli(
        "annotate", "--dataset", "reviews", "--model", "student", "--split", "validation"
    )
    assert code == 0, err
    assert "labelled 13 records now" in out
    with store.transaction() as s:
        calls = s.scalars(select(LLMCall).where(LLMCall.model == "student")).all()
        assert len(calls) == 13 and {c.family for c in calls} == {"llama"}

    # a child of the trained model (its adapter merged first), full fine-tune
    code, out, err = cli(
        "train", "sft", "--dataset", "reviews", "--base", "student", "--full", "--labels", "gold",
        "--max-steps", "1", "--name", "child", "--threads", "1",
    )  # fmt: skip
    assert code == 0, err
    code, out, _ = cli("models", "show", "child")
    assert f"child <- student <- {tiny_base}" in out and "sft (full)" in out
    with store.transaction() as s:
        child = s.scalars(select(ModelEntry).where(ModelEntry.name == "child")).one()
        assert child.parent_id == entry.id and child.base_model == "student"

    # export: the adapter folder, a merged folder that loads alone, and GGUF's clear refusal
    code, out, err = cli("train", "export", "student", "--format", "adapter", "-o", "ad")
    assert code == 0, err
    assert (tmp_path / "ad" / "adapter_config.json").is_file()
    code, _, err = cli("train", "export", "student", "--format", "merged", "-o", "merged")
    assert code == 0, err
    _same_logits(tmp_path / "merged", "student", store)
    code, _, err = cli("train", "export", "child", "--format", "adapter", "-o", "x")
    assert code == 1 and "full fine-tune: it has no adapter" in err
    code, _, err = cli("train", "export", "student", "--format", "gguf", "-o", "g")
    assert code == 1 and "is not a GGUF model" in err and "convert_hf_to_gguf.py" in err
    code, out, _ = cli("train", "list")
    assert code == 0 and "student" in out and "child" in out
    store.dispose()


def _same_logits(folder: Path, name: str, store: Store) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from tuneloop.llm.factory import open_model

    merged = AutoModelForCausalLM.from_pretrained(folder)
    handle = open_model(name, None, store=store)
    live = getattr(handle.provider, "lm")  # noqa: B009
    ids = torch.tensor([[1, 5, 6, 7, 2]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, live(ids).logits, atol=1e-5)
    assert "lora" not in " ".join(n for n, _ in merged.named_parameters())


# --- bad input --------------------------------------------------------------------------------


def test_bad_input_gives_one_clear_error(cli: CLI, tmp_path: Path, tiny_base: Path) -> None:
    _import(cli, tmp_path)
    base = ("train", "sft", "--dataset", "reviews", "--threads", "1", "--max-steps", "1")
    code, _, err = cli(*base, "--base", "no-such-model")
    assert code == 1 and "unknown base model 'no-such-model'" in err
    assert "Traceback" not in err
    code, _, err = cli(*base, "--base", str(tmp_path))
    assert code == 1 and "has no config.json" in err
    code, _, err = cli(*base, "--base", str(tiny_base), "--labels", "human")
    assert code == 1 and "no labelled records in reviews@1 (splits train)" in err
    assert "no accepted human labels yet" in err
    code, _, err = cli(*base, "--base", str(tiny_base), "--splits", "gold")
    assert code == 1 and "training on the gold split is not allowed" in err
    code, _, err = cli(*base, "--base", str(tiny_base), "--name", "smollm2-135m-instruct")
    assert code == 1 and "a model named 'smollm2-135m-instruct' exists already" in err
    code, _, err = cli(*base, "--base", str(tiny_base), "--lora-r", "0")
    assert code == 1 and "--lora-r: Input should be greater than or equal to 1" in err
    config = tmp_path / "c.yaml"
    config.write_text("labels: gold\nlearning_rate: fast\n")
    code, _, err = cli(*base, "--config", str(config))
    assert code == 1 and "c.yaml, line 2: learning_rate: Input should be a valid number" in err
    code, _, err = cli("train", "resume", "999")
    assert code == 1 and "no training run 999" in err
    code, _, err = cli(*base, "--base", str(tiny_base), "--lora-targets", "attn")
    assert code == 1 and "--lora-targets: attn is not a Linear layer of this model" in err
    assert "its Linear layers: down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj" in err
    if importlib.util.find_spec("wandb") is None:
        code, _, err = cli(*base, "--base", str(tiny_base), "--report-to", "wandb")
        assert code == 1 and "--report-to wandb needs the wandb package" in err
    with pytest.raises(ValueError):
        TrainConfig(dataset="d", report_to=["tensorflow"])
    code, out, _ = cli("train", "sft", "--help")
    assert code == 0 and "--min-confidence" in out and "--lora" in out and "--full" in out


# --- the packaged student, for real -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.network_pip
def test_smollm2_trains_and_its_gguf_runs_in_llama_cpp(
    cli: CLI, db_url: str, tmp_path: Path
) -> None:
    """2 real steps on SmolLM2-135M (its GGUF dequantized once into the cache), then the GGUF
    export gives llama.cpp the distribution transformers computes for the trained model."""
    import numpy as np
    import torch

    pytest.importorskip("llama_cpp")
    from tuneloop.llm.factory import open_model
    from tuneloop.llm.providers.llamacpp_runtime import open_llama

    _import(cli, tmp_path, 24)
    code, out, err = cli(
        "train", "sft", "--dataset", "reviews", "--base", "smollm2-135m-instruct", "--labels",
        "gold", "--max-steps", "2", "--batch-size", "2", "--threads", "1", "--name", "smol",
    )  # fmt: skip
    assert code == 0, err
    assert "model smol trained 2 steps" in out
    code, out, err = cli("train", "export", "smol", "--format", "gguf", "--outtype", "f32")
    assert code == 0, err
    gguf = tmp_path / "export" / "smol-f32.gguf"
    assert gguf.is_file()

    store = open_store(db_url)
    provider: Any = open_model("smol", None, store=store).provider
    messages = [{"role": "user", "content": "Classify the text.\n\nText:\nfilm 3 was good"}]
    ids = provider.prompt_ids(messages)
    with torch.no_grad():
        logits = provider.lm(torch.tensor([ids])).logits[0, -1].float()
    expected = torch.log_softmax(logits, -1).numpy()
    llm = open_llama(model_path=str(gguf), n_ctx=256, logits_all=True, verbose=False, n_threads=1)
    try:
        llm.eval(ids)
        raw = np.array(llm.scores[len(ids) - 1], dtype=np.float64)
    finally:
        llm.close()
    actual = raw - raw.max() - np.log(np.exp(raw - raw.max()).sum())
    top = np.argsort(-expected)[:20]
    assert int(np.argmax(actual)) == int(top[0])
    assert np.abs(actual[top] - expected[top]).max() < 0.05
    store.dispose()


def test_same_records_as_trains_another_label_source_on_the_same_records(
    cli: CLI, store: Store, tmp_path: Path, tiny_base: Path
) -> None:
    """The label-quality ceiling: the dataset's own labels on exactly the records a run trained
    on with LLM labels."""
    _import(cli, tmp_path)
    with store.transaction() as s:
        train = s.scalars(
            select(Record).where(Record.split == "train").order_by(Record.position)
        ).all()
        chosen = [r.id for r in train[3:15:2]]  # not a prefix: --limit could not pick these
        for r in train[3:15:2]:
            flipped = "neg" if r.fields["label"] == "pos" else "pos"
            s.add(Label(record_id=r.id, value=flipped, source="llm", confidence=0.9))
    common = ("--dataset", "reviews", "--base", str(tiny_base), "--max-steps", "1")
    code, out, err = cli("train", "sft", *common, "--labels", "llm", "--name", "on-llm")
    assert code == 0, err
    with store.transaction() as s:
        first = s.scalars(select(Run).where(Run.kind == "train")).one()
        first_id, first_dir = first.id, Path(first.config["run_dir"])
    code, out, err = cli(
        "train",
        "sft",
        *common,
        "--labels",
        "gold",
        "--same-records-as",
        str(first_id),
        "--name",
        "on-gold",
    )
    assert code == 0, err
    assert f"examples by label source: gold {len(chosen)}" in out
    with store.transaction() as s:
        second = s.scalars(select(Run).where(Run.kind == "train", Run.id != first_id)).one()
        second_dir = Path(second.config["run_dir"])

    def rows(folder: Path) -> list[dict[str, Any]]:
        lines = (folder / "examples.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    a, b = rows(first_dir), rows(second_dir)
    assert [r["record_id"] for r in a] == [r["record_id"] for r in b] == chosen
    assert [r["prompt"] for r in a] == [r["prompt"] for r in b]
    assert all(x["completion"] != y["completion"] for x, y in zip(a, b, strict=True))
    assert {r["source"] for r in b} == {"gold"}
    code, _, err = cli("train", "sft", *common, "--same-records-as", "999", "--name", "x")
    assert code == 1 and "--same-records-as 999: no training run 999" in err
