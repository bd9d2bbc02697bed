"""Supervised fine-tuning (LoRA or full) of a causal LM on a dataset's labelled records.

Reads top to bottom in two steps. ``start_run``: resolve the dataset, the label source and the
base model -> pick each record's label (never from the test split or the gold slice) -> turn
records into chat examples with the one chat format (``record_messages``; the prompt a model
sees here is byte for byte the prompt it sees at inference) -> write them to the run's folder
and record the run. ``fit``: load the base model -> compose TRL's ``SFTConfig``/``SFTTrainer``
and PEFT's ``LoraConfig`` (loss on the completion only; padding-free batches; bf16 where the
hardware is fast at it) -> train, writing a checkpoint every ``save_steps`` and a metrics row
every step -> save the adapter (or the full model) -> register the model with its lineage.

``resume`` runs ``fit`` again on an interrupted run: it continues from the last complete
checkpoint, on the examples the run wrote when it started, and re-does (once) only the steps
after that checkpoint.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tuneloop.config import STATE_DIR
from tuneloop.errors import UserError
from tuneloop.store.datasets import resolve_dataset
from tuneloop.store.db import Store, get_project
from tuneloop.store.models import ModelEntry, PromptVersion, Run, TrainStep
from tuneloop.store.runs import marks_interruption
from tuneloop.tasks import Split
from tuneloop.training.base import BaseWeights, choose_precision, load_base, resolve_base
from tuneloop.training.config import TrainConfig
from tuneloop.training.labels import select_examples

EXAMPLES_FILE = "examples.jsonl"
Note = Callable[[str], None]


@dataclass
class TrainResult:
    run_id: int
    model: str
    path: Path
    resumed_from: int | None  # the checkpoint step a resumed run continued from
    steps: int
    train_loss: float | None
    seconds: float
    tokens_per_second: float | None
    counts: dict[str, int]  # examples per label source
    unlabelled: int  # records of the splits without a usable label from the source
    precision: str
    notes: list[str] = field(default_factory=list)


def _quiet(_: str) -> None:
    pass


def start_run(
    store: Store,
    config: TrainConfig,
    *,
    project: str = "default",
    project_dir: Path,
    note: Note = _quiet,
) -> int:
    """Resolve everything, write the run's examples, and record the run; returns its id."""
    for tracker in config.report_to:
        if importlib.util.find_spec(tracker) is None:
            raise UserError(
                f"--report-to {tracker} needs the {tracker} package: pip install {tracker}"
            )
    with store.transaction() as session:
        proj = get_project(session, project)
        dataset = resolve_dataset(session, proj, config.dataset)
        splits = config.splits or ([Split.train.value] if dataset.split_config else ["unsplit"])
        prompt = _prompt(session, proj.id, config.prompt, dataset.task_type)
        _check_name(session, proj.id, config.name, project_dir)
        same = _records_of(session, proj.id, dataset.id, config.same_records_as)
        selection = select_examples(
            session,
            dataset,
            config.labels,
            splits,
            min_confidence=config.min_confidence,
            prompt_version_id=prompt.id if prompt else None,
            limit=config.limit,
            record_ids=same,
        )
        if not selection.examples:
            raise UserError(
                f"no labelled records in {dataset.ref} (splits {', '.join(splits)}) for label "
                f"source {config.labels!r}: {_hint(config)}"
            )
        base = resolve_base(session, proj.id, config.base, project_dir, config.family, note)
        # the prompt version most LLM labels came from is the model's prompt version
        versions = selection.prompt_versions
        main_prompt = max(versions, key=lambda v: versions[v]) if versions else None
        names = {
            pv.id: f"{pv.name}@{pv.version}"
            for pv in session.scalars(select(PromptVersion).where(PromptVersion.id.in_(versions)))
        }
        run = Run(project_id=proj.id, kind="train", dataset_id=dataset.id, config={})
        session.add(run)
        session.flush()
        name = config.name or f"{dataset.name}-sft-{run.id}"
        _check_name(session, proj.id, name, project_dir)
        folder = project_dir / STATE_DIR / "train" / f"run-{run.id}"
        run.config = {
            "options": config.model_dump(mode="json"),
            "name": name,
            "dataset": dataset.ref,
            "splits": splits,
            "base": base.as_dict(),
            "run_dir": str(folder.resolve()),
            "model_dir": str((project_dir / STATE_DIR / "models" / name).resolve()),
            "prompt_version_id": main_prompt,
            "label_sources": {
                "source": config.labels,
                "counts": selection.counts,
                "unlabelled": selection.unlabelled,
                "min_confidence": config.min_confidence,
                "prompt_versions": {names[v]: n for v, n in versions.items()},
            },
        }
        run.stats = {"examples": len(selection.examples), "counts": selection.counts}
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / EXAMPLES_FILE).open("w", encoding="utf-8") as out:
            for example in selection.examples:
                out.write(json.dumps(example.as_row(), ensure_ascii=False) + "\n")
        return run.id


def sft(
    store: Store,
    config: TrainConfig,
    *,
    project: str = "default",
    project_dir: Path,
    on_step: Callable[[Any], None] | None = None,
    note: Note = _quiet,
) -> TrainResult:
    """Fine-tune ``config.base`` on ``config.dataset``'s labels; returns the registered model."""
    run_id = start_run(store, config, project=project, project_dir=project_dir, note=note)
    return fit(store, run_id, on_step=on_step, note=note)


def resume(
    store: Store,
    run_id: int,
    *,
    threads: int | None = None,
    on_step: Callable[[Any], None] | None = None,
    note: Note = _quiet,
) -> TrainResult:
    """Continue an interrupted training run from its last checkpoint."""
    with store.transaction() as session:
        run = session.get(Run, run_id)
        if run is None or run.kind != "train":
            raise UserError(f"no training run {run_id} (see `tuneloop train list`)")
        if run.status == "finished":
            raise UserError(f"training run {run_id} has finished: model {run.config['name']}")
    return fit(store, run_id, threads=threads, on_step=on_step, note=note)


def fit(
    store: Store,
    run_id: int,
    *,
    threads: int | None = None,
    on_step: Callable[[Any], None] | None = None,
    note: Note = _quiet,
) -> TrainResult:
    """The recipe: base model + TRL trainer + PEFT adapter -> train -> save -> register."""
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback, set_seed
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

    from tuneloop.training.base import quiet_libraries, quiet_library_output
    from tuneloop.training.examples import fit_examples, trainer_rows
    from tuneloop.training.lora import lora_config
    from tuneloop.training.progress import (
        StepRecorder,
        checkpoint_step,
        forget_steps_after,
        last_checkpoint,
    )

    with store.transaction() as session:
        run = session.get(Run, run_id)
        assert run is not None
        run.status, run.error = "running", None
        saved = dict(run.config)
    config = TrainConfig.model_validate(saved["options"])
    base = BaseWeights.from_dict(saved["base"])
    run_dir, model_dir = Path(saved["run_dir"]), Path(saved["model_dir"])
    notes: list[str] = []

    def tell(message: str) -> None:
        notes.append(message)
        note(message)

    with marks_interruption(store, run_id), quiet_libraries():
        # where to start: the last complete checkpoint; its later step rows are done again
        checkpoint = last_checkpoint(run_dir / "checkpoints")
        start = checkpoint_step(checkpoint) if checkpoint else 0
        redone = forget_steps_after(store, run_id, start)
        if checkpoint:
            tell(f"resuming run {run_id} from its checkpoint at step {start}")
        elif redone:
            tell(f"run {run_id} had no checkpoint yet: it starts again from step 0")

        if threads or config.threads:
            torch.set_num_threads(threads or config.threads or 1)
        quiet_library_output()  # the caller shows one progress bar, over the steps
        bf16, why = choose_precision(config.precision)
        if why:
            tell(why)
        model, tokenizer = load_base(base, bf16=bf16, lora=config.lora, note=tell)

        text = (run_dir / EXAMPLES_FILE).read_text(encoding="utf-8")
        rows = [json.loads(line) for line in text.splitlines()]
        kept, too_long = fit_examples(rows, tokenizer, config.max_length)
        if too_long:
            tell(f"{too_long} examples longer than {config.max_length} tokens were left out")
        if not kept:
            raise UserError(f"every example is longer than max_length={config.max_length} tokens")
        train_data = Dataset.from_list(trainer_rows(kept, tokenizer))

        peft_config = lora_config(config, model) if config.lora else None
        recorder = StepRecorder(store, run_id, on_step)
        padding_free = config.padding_free or config.packing
        args = SFTConfig(
            output_dir=str(run_dir / "checkpoints"),
            seed=config.seed,
            num_train_epochs=config.epochs,
            max_steps=config.max_steps or -1,
            per_device_train_batch_size=config.batch_size,
            gradient_accumulation_steps=config.grad_accum,
            learning_rate=config.peak_learning_rate,
            lr_scheduler_type=config.lr_scheduler,
            warmup_steps=config.warmup_ratio,  # a float below 1 is a share of the steps
            weight_decay=config.weight_decay,
            bf16=bf16,
            activation_checkpointing=config.activation_checkpointing,
            completion_only_loss=True,  # the prompt is context, not something to learn
            padding_free=padding_free,
            packing=config.packing,
            # every example fits (longer ones were left out); packing fills blocks this long
            max_length=config.max_length if config.packing else None,
            logging_steps=1,
            include_num_input_tokens_seen="all" if padding_free else "non_padding",
            save_strategy="steps",
            save_steps=config.save_steps,
            save_total_limit=config.save_total_limit,
            report_to=config.report_to or "none",
            disable_tqdm=True,
            dataloader_num_workers=0,
            use_cpu=not torch.cuda.is_available(),
        )
        set_seed(config.seed)  # the adapter's initialisation happens before the trainer seeds
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=train_data,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[recorder],
        )
        trainer.remove_callback(PrinterCallback)  # progress goes to on_step and the database
        output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        if model_dir.exists():
            shutil.rmtree(model_dir)  # an earlier attempt that died while saving
        trainer.save_model(str(model_dir))
        tokenizer.save_pretrained(str(model_dir))

    metrics = dict(output.metrics)
    seconds = float(metrics.get("train_runtime", 0.0))
    result_metrics: dict[str, Any] = {
        "steps": int(output.global_step),
        "train_loss": float(output.training_loss),
        "train_seconds": seconds,  # of this attempt (a resumed run: since its checkpoint)
        "tokens": float(metrics.get("num_input_tokens_seen", 0) or 0),
        "tokens_per_second": recorder.tokens_per_second,
        "examples": len(kept),
        "precision": "bf16" if bf16 else "fp32",
    }
    with store.transaction() as session:
        run = session.get(Run, run_id)
        assert run is not None
        result_metrics["final_loss"] = session.scalar(
            select(TrainStep.loss)
            .where(TrainStep.run_id == run_id)
            .order_by(TrainStep.step.desc())
            .limit(1)
        )
        entry = _register(session, run, config, base, model_dir, result_metrics)
        run.status, run.error = "finished", None
        run.finished_at = datetime.now(UTC)
        run.stats = {**run.stats, **result_metrics, "model": entry.name, "resumed_from": start}
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return TrainResult(
        run_id,
        entry.name,
        model_dir,
        start if checkpoint else None,
        int(output.global_step),
        float(output.training_loss),
        seconds,
        result_metrics["tokens_per_second"],
        dict(saved["label_sources"]["counts"]),
        int(saved["label_sources"]["unlabelled"]),
        str(result_metrics["precision"]),
        notes,
    )


def _register(
    session: Session,
    run: Run,
    config: TrainConfig,
    base: BaseWeights,
    model_dir: Path,
    metrics: dict[str, Any],
) -> ModelEntry:
    """The model row: its lineage (base, parent, dataset, labels, prompt, config, run)."""
    saved = run.config
    entry = ModelEntry(
        project_id=run.project_id,
        name=saved["name"],
        kind="sft",
        family=base.family,
        base_model=base.ref,
        path=str(model_dir),
        dataset_id=run.dataset_id,
        prompt_version_id=saved.get("prompt_version_id"),
        run_id=run.id,
        parent_id=base.parent_id,
        config={
            **config.model_dump(mode="json"),
            "method": config.method,
            "base": base.as_dict(),
            "dataset": saved["dataset"],
            "splits": saved["splits"],
        },
        label_sources=saved["label_sources"],
        metrics=metrics,
    )
    session.add(entry)
    session.flush()
    return entry


def _records_of(
    session: Session, project_id: int, dataset_id: int, run_id: int | None
) -> list[int] | None:
    """The records training run ``run_id`` trained on (``--same-records-as``)."""
    if run_id is None:
        return None
    run = session.get(Run, run_id)
    if run is None or run.kind != "train" or run.project_id != project_id:
        raise UserError(f"--same-records-as {run_id}: no training run {run_id} in this project")
    if run.dataset_id != dataset_id:
        raise UserError(
            f"--same-records-as {run_id}: that run trained on {run.config.get('dataset')}, "
            "another dataset"
        )
    examples = Path(run.config["run_dir"]) / EXAMPLES_FILE
    if not examples.exists():
        raise UserError(f"--same-records-as {run_id}: its examples file {examples} is gone")
    lines = examples.read_text(encoding="utf-8").splitlines()
    return [int(json.loads(line)["record_id"]) for line in lines]


def _prompt(session: Session, project_id: int, ref: str | None, task: str) -> PromptVersion | None:
    if ref is None:
        return None
    from tuneloop.workflows.prompts import resolve_prompt

    return resolve_prompt(session, project_id, ref, task, role="annotator")


def _check_name(session: Session, project_id: int, name: str | None, project_dir: Path) -> None:
    """A new model's name must not be taken by a trained model or a registry model."""
    if name is None:
        return
    from tuneloop.llm.registry import load_models

    taken = session.scalar(
        select(func.count())
        .select_from(ModelEntry)
        .where(ModelEntry.project_id == project_id, ModelEntry.name == name)
    )
    if taken or name in {spec.name for spec in load_models(project_dir)}:
        raise UserError(f"a model named {name!r} exists already; choose another --name")


def _hint(config: TrainConfig) -> str:
    if config.labels == "llm":
        return (
            f"no accepted LLM labels at or above confidence {config.min_confidence}"
            + (f" from prompt {config.prompt}" if config.prompt else "")
            + " (label some with `tuneloop annotate`)"
        )
    if config.labels == "human":
        return "no accepted human labels yet"
    if config.labels == "gold":
        return "the records have no reference output"
    return "no human labels, reference outputs or LLM labels"
