"""Following a training run: per-step metrics into the database, progress to the caller, and
the checkpoints a resumed run starts from.

Imports transformers at module level: import this module inside functions only.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from tuneloop.store.db import Store
from tuneloop.store.models import TrainStep

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"  # written last: a checkpoint without it is incomplete


@dataclass
class StepInfo:
    step: int
    total: int
    loss: float | None
    learning_rate: float | None
    tokens_per_second: float | None


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class StepRecorder(TrainerCallback):
    """Writes one ``train_step`` row per logged optimizer step (``logging_steps=1``) and hands
    the step to ``on_step`` (a progress bar). The hooks of TrainerCallback are its interface;
    nothing of the trainer is overridden."""

    def __init__(
        self, store: Store, run_id: int, on_step: Callable[[StepInfo], None] | None = None
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.on_step = on_step
        self._clock = time.monotonic()
        self._tokens = 0
        self.tokens = 0  # seen by the steps this callback followed
        self.seconds = 0.0

    @property
    def tokens_per_second(self) -> float | None:
        """Over the steps followed (a resumed run: since its checkpoint)."""
        return self.tokens / self.seconds if self.seconds > 0 else None

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        self._clock = time.monotonic()
        self._tokens = int(state.num_input_tokens_seen or 0)
        if self.on_step is not None:
            self.on_step(StepInfo(state.global_step, state.max_steps, None, None, None))

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not logs or "loss" not in logs:
            return  # the end-of-training summary
        now = time.monotonic()
        tokens = int(state.num_input_tokens_seen or 0)
        elapsed = now - self._clock
        speed = (tokens - self._tokens) / elapsed if elapsed > 0 and tokens else None
        if speed is not None:
            self.tokens += tokens - self._tokens
            self.seconds += elapsed
        self._clock, self._tokens = now, tokens
        row = TrainStep(
            run_id=self.run_id,
            step=state.global_step,
            epoch=_number(logs.get("epoch")),
            loss=_number(logs.get("loss")),
            learning_rate=_number(logs.get("learning_rate")),
            grad_norm=_number(logs.get("grad_norm")),
            tokens_per_second=speed,
        )
        with self.store.transaction() as session:
            session.add(row)
        if self.on_step is not None:
            self.on_step(
                StepInfo(state.global_step, state.max_steps, row.loss, row.learning_rate, speed)
            )


def checkpoint_step(path: Path) -> int:
    return int(path.name.removeprefix(CHECKPOINT_PREFIX))


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint under ``folder`` (a kill -9 during a save leaves an
    incomplete one behind; it is removed)."""
    if not folder.is_dir():
        return None
    found = [
        p
        for p in folder.iterdir()
        if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and p.name[11:].isdigit()
    ]
    for path in sorted(found, key=checkpoint_step, reverse=True):
        try:
            json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            shutil.rmtree(path, ignore_errors=True)
            continue
        return path
    return None


def forget_steps_after(store: Store, run_id: int, step: int) -> int:
    """Delete the step rows a resumed run will do again; returns how many there were."""
    with store.transaction() as session:
        result = session.execute(
            delete(TrainStep).where(TrainStep.run_id == run_id, TrainStep.step > step)
        )
        return int(getattr(result, "rowcount", 0) or 0)
