"""How close batched label scores are to the model's float32 weights: the torch scorer's 8-bit
decoder and llama.cpp's batched scoring of the 4-bit file, on Rotten Tomatoes prompts.

Both scorers approximate the same thing: the next-token log-probabilities of the model the
GGUF file holds. The reference here is that model with its weights dequantized to float32 and
run by transformers, one forward pass per prompt. For each record the script compares each
label's log-probability (what tuneloop stores, and turns into the label's confidence) and the
margin between the two labels (what picks the label) with the reference's.

Run: ``.venv/bin/python bench/scorer_closeness.py [--records N] [--models A,B] [--write]``
(a few minutes; converts each model for the torch scorer if the cache lacks it).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from annotate import machine

README = Path(__file__).with_name("README.md")
START, END = "<!-- closeness-results:start -->", "<!-- closeness-results:end -->"
MODELS = "smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct"
DATASET = "rotten-tomatoes"


@dataclass
class Row:
    model: str
    scorer: str
    records: int
    level: tuple[float, float, float]  # mean |log-prob difference|, 95% interval
    worst: float
    margin: tuple[float, float, float]  # mean |margin difference|, 95% interval
    same: int  # records whose label is the reference's


def mean_interval(values: np.ndarray) -> tuple[float, float, float]:
    from scipy.stats import bootstrap

    ci = bootstrap((values,), np.mean, confidence_level=0.95, n_resamples=2000, random_state=0)
    return (
        float(values.mean()),
        float(ci.confidence_interval.low),
        float(ci.confidence_interval.high),
    )


def prompts(n: int) -> tuple[list[list[dict[str, str]]], list[str]]:
    """The task's chat format for the first ``n`` records of the dataset, and its labels."""
    from tuneloop.chat import record_messages
    from tuneloop.examples import example_rows, get_example

    rows = []
    for row in example_rows(get_example(DATASET)):
        rows.append(row.values)
        if len(rows) == n:
            break
    labels = sorted({str(r["label"]) for r in rows})
    messages = [
        [dict(m) for m in record_messages("classification", {"text": r["text"]}, labels)]
        for r in rows
    ]
    return messages, labels


def reference(path: Path, token_lists: list[list[int]], ids: list[int]) -> np.ndarray:
    """log-probabilities of the ``ids`` after each prompt, float32 transformers model."""
    import torch
    import transformers

    hf: Any = transformers
    model = hf.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    out = []
    with torch.inference_mode():
        for tokens in token_lists:
            logits = model(input_ids=torch.tensor([tokens])).logits[0, -1].double()
            out.append(torch.log_softmax(logits, dim=-1)[ids].numpy())
    return np.array(out)


def measure(model: str, n: int) -> list[Row]:
    from tuneloop.config import cache_dir
    from tuneloop.llm.providers.llamacpp import LlamaCppProvider
    from tuneloop.llm.registry import get_model, model_path

    entry = get_model(model)
    path = model_path(entry)
    if path is None:
        raise SystemExit(f"pull the model first: tuneloop models pull {model}")
    messages, labels = prompts(n)
    rows = []
    want: np.ndarray | None = None
    for scorer in ("torch", "llamacpp"):
        provider = LlamaCppProvider(
            model,
            path,
            context_length=entry.context_length,
            scorer=scorer,
            scorer_cache=cache_dir(),
        )
        items = [(m, labels) for m in messages]
        scores = provider.score_choices_batch(items)
        if scores is None or any(s is None for s in scores):
            raise SystemExit(f"{model}: the {scorer} scorer did not score every record")
        got = np.array([[s.logprobs[c] for c in labels] for s in scores if s is not None])
        if want is None:
            ids = [provider._answer(c)[0] for c in labels]
            tokens = [provider._tokens(provider.prompt_text(m)) for m in messages]
            print(f"{model}: float32 reference on {n} records ...", flush=True)
            want = reference(path, tokens, ids)
        name = str(scores[0].data.get("scorer", scorer)) if scores[0] else scorer
        provider.close()
        level = np.abs(got - want).reshape(-1)
        margin = np.abs((got[:, 0] - got[:, 1]) - (want[:, 0] - want[:, 1]))
        same = int(np.sum((got[:, 0] > got[:, 1]) == (want[:, 0] > want[:, 1])))
        rows.append(
            Row(
                model,
                name,
                n,
                mean_interval(level),
                float(level.max()),
                mean_interval(margin),
                same,
            )
        )
    return rows


def report(rows: list[Row], date: str, load: tuple[float, float, float]) -> str:
    lines = [
        "| model | scorer | records | mean \\|log-prob − float32\\| [95% CI] | max | "
        "mean \\|margin − float32\\| [95% CI] | same label as float32 |",
        "|---|---|---:|---|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.scorer} | {r.records} | {r.level[0]:.3f} "
            f"[{r.level[1]:.3f}, {r.level[2]:.3f}] | {r.worst:.2f} | {r.margin[0]:.3f} "
            f"[{r.margin[1]:.3f}, {r.margin[2]:.3f}] | {r.same}/{r.records} |"
        )
    lines += [
        "",
        f"- command: `python bench/scorer_closeness.py --write`; date: {date}",
        f"- machine: {machine(load)}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200, help="records per model")
    parser.add_argument("--models", default=MODELS, help="comma-separated registry names")
    parser.add_argument("--write", action="store_true", help="update the results in README.md")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = [row for model in args.models.split(",") for row in measure(model, args.records)]
    section = report(rows, date, load)
    print(section)
    if args.write:
        text = README.read_text(encoding="utf-8")
        if START not in text:
            raise SystemExit(f"{README} has no {START} marker")
        pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.DOTALL)
        README.write_text(
            pattern.sub(lambda _: f"{START}\n{section}\n{END}", text, count=1), encoding="utf-8"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
