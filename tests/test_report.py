"""The HTML report (`tuneloop report RUN`, the demo's last step): evaluation, training and demo
runs made for real with scripted fake models and the tiny in-process model; their plots, their
numbers, one self-contained file, clear errors; and the page in headless Chromium."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.conftest import CLI
from tuneloop.llm.engine import Engine, Price
from tuneloop.llm.factory import ModelHandle
from tuneloop.llm.providers.fake import FakeProvider
from tuneloop.llm.types import Message
from tuneloop.store.db import Store, open_store
from tuneloop.store.models import LLMCall, Queue, QueueItem, Record, Run, TrainStep
from tuneloop.workflows.demo import DemoConfig
from tuneloop.workflows.evaluate import EvaluateOptions, ModelRef, evaluate
from tuneloop.workflows.prompts import PromptSpec, create_prompt

PLOT = re.compile(r'<figure class="plot" data-plot="([^"]+)"')
DEMO_PLOTS = [
    "stages",
    "prompt-comparison",
    "confusion-prompts",
    "slices-prompts",
    "label-sources",
    "loss-curve",
    "training-speed",
    "gold-comparison",
    "confusion-gold",
]
STAGES = [
    "data",
    "eyeball",
    "evaluate v1",
    "evaluate v2",
    "compare",
    "apply",
    "fine-tune",
    "gold",
    "review",
]
V1 = "Answer with exactly one of: {{ labels | join(', ') }}.\n\nText:\n{{ text }}"


def plots_of(html: str) -> list[str]:
    return PLOT.findall(html)


def iv(d: dict[str, Any], digits: int = 3) -> str:
    return f"{d['value']:.{digits}f} [{d['low']:.{digits}f}, {d['high']:.{digits}f}]"


def assert_self_contained(html: str) -> None:
    """One file that opens offline: no scripts, no stylesheet or image to fetch, no URL."""
    lower = html.lower()
    assert "<script" not in lower and "<link" not in lower and "@import" not in lower
    assert not re.search(r"""\b(?:src|href)\s*=\s*["'](?!#)""", html)  # in-page links only
    assert all(u.startswith("#") for u in re.findall(r"url\(\s*['\"]?([^)'\"]*)", html))
    assert "http://" not in lower and "https://" not in lower
    assert "<svg" in html and "<style>" in html


def _reviews(tmp_path: Path, n: int) -> Path:
    """Reviews whose text names their label two times in three (the fake annotator answers
    the label the text names, else one picked by a hash of the prompt)."""
    path = tmp_path / "reviews.jsonl"
    with path.open("w") as f:
        for i in range(n):
            label = "fresh" if i % 2 else "rotten"
            hint = f"a {label} one" if i % 3 else "hard to say"
            text = f"review {i}: {hint}" + " and long" * (i % 6)
            genre = "drama" if i % 4 else "comedy"
            f.write(json.dumps({"text": text, "label": label, "metadata": {"genre": genre}}))
            f.write("\n")
    return path


def _import(cli: CLI, tmp_path: Path, *, name: str = "reviews", n: int = 80) -> None:
    code, _, err = cli(
        "data",
        "import",
        str(_reviews(tmp_path, n)),
        "--task",
        "classification",
        "--labels",
        "fresh,rotten",
        "--name",
        name,
        "--split",
        "0.6,0.2,0.2",
        "--gold",
        "10",
        "--dedupe",
        "none",
    )
    assert code == 0, err


def fake(store: Store, name: str, family: str, provider: FakeProvider | None = None) -> ModelRef:
    p = provider or FakeProvider(name)
    return ModelRef(name, family, lambda run_id: Engine(store, p, family=family, run_id=run_id))


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face folder with the tiny llama and its ChatML character tokenizer."""
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    from tests.tiny import tiny_llama, tiny_tokenizer

    folder = tmp_path_factory.mktemp("tiny-base")
    tok = tiny_tokenizer()
    tiny_llama(len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# --- plots ------------------------------------------------------------------------------------


def test_plots_are_inline_svg_with_escaped_text_and_unique_ids() -> None:
    from tuneloop.report import plots
    from tuneloop.report.plots import BarPanel, Confusion, Estimate

    hostile = "<b>costs $5 & $10</b> " + "very long " * 10
    bars = plots.interval_bars(
        [hostile, "plain"],
        {"v1": [Estimate(0.5, 0.4, 0.6), Estimate(None)], "v2": [Estimate(0.7), Estimate(1.0)]},
        title="Slices",
        xlabel="accuracy",
        key="slices",
    )
    matrix = plots.confusion_matrices(
        [Confusion("v1", ["a", "b"], ["a", "b", "<no answer>"], [[3, 1, 0], [0, 2, 1]])],
        title="Confusion",
        key="confusion",
    )
    counts = plots.bar_panels([BarPanel("sources", "records", {"llm": 3.0})], title="", key="x")
    for svg in (bars, matrix, counts):
        assert svg.startswith("<svg ") and svg.endswith("</svg>")
        assert "<?xml" not in svg and "DOCTYPE" not in svg and "http" not in svg
    assert "&lt;b&gt;costs $5 &amp; $10&lt;/b&gt;" in bars  # escaped, and no TeX
    assert "…" in bars and "&lt;no answer&gt;" in matrix
    ids = re.findall(r'\bid="([^"]+)"', bars + matrix + counts)
    assert len(ids) == len(set(ids)) and all(
        i.startswith(("slices-", "confusion-", "x-")) for i in ids
    )
    refs = re.findall(r'href="#([^"]+)"', bars + matrix + counts)
    assert set(refs) <= set(ids)


# --- an evaluation run --------------------------------------------------------------------------


def test_evaluation_report_shows_metrics_confusion_and_slices(
    cli: CLI, db_url: str, tmp_path: Path
) -> None:
    _import(cli, tmp_path)
    store = open_store(db_url)
    try:
        create_prompt(store, "default", "sentiment", PromptSpec(task="classification", user=V1))
        opts = EvaluateOptions("sentiment", "reviews", n=40, resamples=200)
        result = evaluate(store, opts, fake(store, "fake:qwen", "qwen"))
    finally:
        store.dispose()
    out = tmp_path / "out" / "eval.html"
    code, stdout, err = cli("report", str(result.run_id), "--out", str(out))
    assert code == 0, err
    assert f"report: {out}" in stdout
    html = out.read_text(encoding="utf-8")
    assert plots_of(html) == ["confusion", "slices"]
    m = result.stats["metrics"]
    assert iv(m["accuracy"]) in html and iv(m["macro"]["f1"]) in html
    assert iv(m["per_class"]["fresh"]["f1"]) in html
    assert f"Evaluation run {result.run_id}: sentiment@1" in html
    assert "reviews@1" in html and "fake:qwen" in html
    for label in ("label = fresh", "label = rotten", "genre = drama"):
        assert label in html  # the slices
    assert_self_contained(html)
    # run:ID works too, and the default file is under the project's reports folder
    code, stdout, err = cli("report", f"run:{result.run_id}")
    assert code == 0, err
    default = tmp_path / "reports" / f"evaluate-run-{result.run_id}.html"
    assert f"report: {default}" in stdout and plots_of(default.read_text()) == plots_of(html)


def _notes(tmp_path: Path) -> Path:
    path = tmp_path / "notes.jsonl"
    with path.open("w") as f:
        for i in range(30):
            source = f"Doctor: how is the cough {i}? Patient: better since the syrup." + (
                " It was bad at night." * (i % 5)
            )
            f.write(json.dumps({"source": source, "summary": f"Cough {i} improving."}) + "\n")
    return path


def test_generative_evaluation_report_shows_text_metrics_and_judge_levels(
    cli: CLI, db_url: str, tmp_path: Path
) -> None:
    code, _, err = cli(
        "data", "import", str(_notes(tmp_path)), "--task", "summarization", "--dedupe", "none"
    )
    assert code == 0, err

    def judge_script(messages: Sequence[Message]) -> str:
        text = messages[-1]["content"]
        level = ["bad", "moderate", "good", "excellent"][len(text) % 4]
        return "No idea." if "cough 7?" in text else f"Fair.\nRating: {level}"

    store = open_store(db_url)
    try:
        create_prompt(
            store, "default", "note", PromptSpec(task="summarization", user="Sum up:\n{{ source }}")
        )
        writer = FakeProvider("fake:smollm", script=lambda m: "The cough is better.")
        rater = FakeProvider("fake:qwen", script=judge_script, can_score=False, can_choose=False)
        result = evaluate(
            store,
            EvaluateOptions("note", "notes", n=30, resamples=100),
            fake(store, "fake:smollm", "smollm", writer),
            fake(store, "fake:qwen", "qwen", rater),
        )
    finally:
        store.dispose()
    code, _, err = cli("report", str(result.run_id), "--out", str(tmp_path / "gen.html"))
    assert code == 0, err
    html = (tmp_path / "gen.html").read_text(encoding="utf-8")
    assert plots_of(html) == ["text-metrics", "judge-levels", "slices"]
    assert iv(result.stats["metrics"]["rougeL"]) in html
    assert iv(result.stats["judge"]["mean"], 2) in html
    assert "fake:qwen (family qwen)" in html and "needs review" in html
    assert_self_contained(html)


# --- a training run -----------------------------------------------------------------------------


def test_train_report_shows_loss_speed_label_sources_and_lineage(
    cli: CLI, db_url: str, tmp_path: Path, tiny_base: Path
) -> None:
    from tuneloop.training.config import TrainConfig
    from tuneloop.workflows.train import sft

    _import(cli, tmp_path, n=40)
    store = open_store(db_url)
    try:
        config = TrainConfig(
            dataset="reviews",
            base=str(tiny_base),
            name="tiny-student",
            labels="gold",
            max_steps=4,
            batch_size=4,
            threads=1,
        )
        result = sft(store, config, project_dir=tmp_path)
        with store.transaction() as s:
            losses = s.scalars(
                select(TrainStep.loss).where(TrainStep.run_id == result.run_id)
            ).all()
    finally:
        store.dispose()
    code, _, err = cli("report", str(result.run_id), "--out", str(tmp_path / "train.html"))
    assert code == 0, err
    html = (tmp_path / "train.html").read_text(encoding="utf-8")
    assert plots_of(html) == ["loss-curve", "training-speed", "label-sources"]
    assert f"Training run {result.run_id}: tiny-student" in html
    assert f"{losses[-1]:.4g}" in html  # the last step's loss
    assert f"{result.counts['gold']}" in html and str(tiny_base) in html
    assert len(losses) == 4
    assert_self_contained(html)


# --- errors -------------------------------------------------------------------------------------


def test_bad_run_ids_give_one_clear_error(cli: CLI, db_url: str, tmp_path: Path) -> None:
    _import(cli, tmp_path)  # makes import run 1
    code, _, err = cli("report", "999")
    assert code == 1 and "no run 999 in project 'default'" in err
    code, _, err = cli("report", "1")
    assert code == 1 and "run 1 is an import run; a report covers demo, evaluate and train" in err
    code, _, err = cli("report", "latest")
    assert code == 1 and "RUN is a run id such as 12, got 'latest'" in err
    store = open_store(db_url)
    try:
        create_prompt(store, "default", "sentiment", PromptSpec(task="classification", user=V1))

        def boom(_: Sequence[Message]) -> str:
            raise RuntimeError("the annotator went away")

        broken = FakeProvider("fake:qwen", script=boom, can_score=False, can_choose=False)
        with pytest.raises(RuntimeError):
            evaluate(
                store,
                EvaluateOptions("sentiment", "reviews", n=10),
                fake(store, "fake:qwen", "qwen", broken),
            )
        with store.transaction() as s:
            stopped = s.scalars(select(Run.id).where(Run.kind == "evaluate")).one()
    finally:
        store.dispose()
    code, _, err = cli("report", str(stopped))
    assert code == 1 and f"evaluation run {stopped} is interrupted: nothing to report" in err
    assert "Traceback" not in err
    assert not (tmp_path / "reports").exists()  # nothing half-written


# --- the demo -----------------------------------------------------------------------------------


@pytest.fixture
def fake_demo(monkeypatch: pytest.MonkeyPatch, tiny_base: Path) -> DemoConfig:
    """``tuneloop demo --quick`` on scripted fake annotators and the tiny model as the
    student's base (the test imports the demo's dataset itself: nothing is downloaded)."""
    from tuneloop.workflows import demo

    config = DemoConfig(
        sample=1000,
        gold=10,
        annotator="fake:qwen-annotator",
        eyeball_n=4,
        evaluate_n=24,
        annotate_n=24,
        student_base=str(tiny_base),
        train_max_steps=3,
        review_n=5,
    )
    monkeypatch.setattr(demo, "QUICK", config)
    real = demo.open_model

    def open_model(name: str, project_dir: Path | None = None, store: Any = None) -> ModelHandle:
        if name == str(tiny_base):
            from tuneloop.llm.providers.transformers_hf import TransformersProvider

            return ModelHandle(TransformersProvider(name, name), "llama", Price(), 1)
        return real(name, project_dir, store=store)

    monkeypatch.setattr(demo, "open_model", open_model)
    return config


def test_demo_records_itself_and_writes_its_report(
    cli: CLI, store: Store, tmp_path: Path, fake_demo: DemoConfig
) -> None:
    _import(cli, tmp_path, name=fake_demo.dataset_name)
    code, out, err = cli("demo", "--quick")
    assert code == 0, err
    with store.transaction() as s:
        demo = s.scalars(select(Run).where(Run.kind == "demo")).one()
        assert demo.status == "finished" and demo.config["annotator"] == "fake:qwen-annotator"
        assert demo.config["quick"] is True and demo.config["evaluate_n"] == 24
        stages = demo.stats["stages"]
        assert list(stages) == STAGES
        assert all(st["seconds"] >= 0 for st in stages.values())
        assert stages["data"]["reused"] is True  # the test imported the dataset
        assert not any(stages[k]["reused"] for k in STAGES[1:])
        runs = {k: st["runs"] for k, st in stages.items()}
        assert set(runs["gold"]) == {"base", "annotator", "student"}
        v1 = s.get(Run, runs["evaluate v1"]["evaluation"])
        assert v1 is not None and v1.kind == "evaluate" and v1.config["prompt"] == "sentiment@1"
        v1_calls = s.scalar(
            select(func.count())
            .select_from(LLMCall)
            .where(LLMCall.run_id == v1.stats["annotate_run"])
        )
        # eyeball answers on records of the sample come from the cache: no call of this run
        assert stages["evaluate v1"]["llm"]["calls"] == v1_calls > 12
        assert stages["evaluate v1"]["new_llm"]["calls"] == v1_calls
        assert stages["fine-tune"]["llm"]["calls"] == 0
        assert stages["gold"]["llm"]["calls"] == 30  # three models, ten gold records
        assert stages["compare"]["result"]["a"] == "sentiment@1"
        train = s.get(Run, runs["fine-tune"]["train"])
        assert train is not None and train.kind == "train" and train.status == "finished"
        gold_student = s.get(Run, runs["gold"]["student"])
        assert gold_student is not None
        student_accuracy = gold_student.stats["metrics"]["accuracy"]
        # the review stage: the student's 5 least sure validation records, queued for people
        review = stages["review"]
        queue = s.scalars(select(Queue).where(Queue.name == review["queue"])).one()
        assert review["queue"] == f"{fake_demo.dataset_name}-hard" and review["items"] == 5
        assert queue.question == "label" and review["people"] == {
            "demo-admin": "admin",
            "demo-annotator": "annotator",
        }
        items = s.scalars(select(QueueItem).where(QueueItem.queue_id == queue.id)).all()
        splits = {s.get(Record, item.record_id).split for item in items}  # type: ignore[union-attr]
        assert len(items) == 5 and splits == {"validation"}
        v1_accuracy = v1.stats["metrics"]["accuracy"]
        final_loss = train.stats["final_loss"]
        first = demo.id
    path = tmp_path / "reports" / f"demo-run-{first}.html"
    assert f"report: {path}" in out
    passwords = tmp_path / ".tuneloop" / "demo-passwords.txt"
    assert "sign in as demo-annotator" in out and str(passwords) in out
    assert passwords.stat().st_mode & 0o777 == 0o600
    lines = passwords.read_text().splitlines()
    assert [line.split(" ")[0] for line in lines] == ["demo-admin", "demo-annotator"]
    assert lines[0].split(": ")[1] not in out  # the password is in the file only
    html = path.read_text(encoding="utf-8")
    assert plots_of(html) == DEMO_PLOTS
    assert f"tuneloop demo, run {first}" in html
    assert iv(v1_accuracy) in html and iv(student_accuracy) in html
    assert f"{final_loss:.4g}" in html
    assert_self_contained(html)

    # a second demo reuses every stage, makes no LLM call, and records itself as a new run
    code, out, err = cli("demo", "--quick")
    assert code == 0, err
    with store.transaction() as s:
        again = s.scalars(select(Run).where(Run.kind == "demo", Run.id != first)).one()
        assert all(st["reused"] for st in again.stats["stages"].values())
        assert all(st["new_llm"]["calls"] == 0 for st in again.stats["stages"].values())
        assert again.stats["stages"]["gold"]["runs"] == runs["gold"]
        second = again.id
    html = (tmp_path / "reports" / f"demo-run-{second}.html").read_text(encoding="utf-8")
    assert plots_of(html) == DEMO_PLOTS and "evaluate v1 (reused)" in html
    assert iv(v1_accuracy) in html
    # and `tuneloop report` draws the same page from the stored record
    code, _, err = cli("report", str(first), "--out", str(tmp_path / "again.html"))
    assert code == 0, err
    assert plots_of((tmp_path / "again.html").read_text()) == DEMO_PLOTS


# --- in a browser -------------------------------------------------------------------------------


def _open(chromium: Any, path: Path, shot: Path) -> tuple[list[str], list[dict[str, float]]]:
    """Load the file in a fresh page (every request but the file itself is refused and
    recorded), screenshot the whole page; returns the problems and each plot's box."""
    page = chromium.new_page(viewport={"width": 1200, "height": 900})
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}")
            if msg.type in ("error", "warning")
            else None
        ),
    )

    def route(r: Any) -> None:
        if r.request.url == path.as_uri():
            r.continue_()
        else:
            problems.append(f"request: {r.request.url}")
            r.abort()

    page.route("**/*", route)
    try:
        page.goto(path.as_uri(), wait_until="load")
        boxes = []
        figures = page.locator("figure.plot")
        for i in range(figures.count()):
            svg = figures.nth(i).locator("svg")
            assert svg.is_visible(), figures.nth(i).get_attribute("data-plot")
            box = svg.bounding_box()
            assert box is not None
            boxes.append(box)
        assert page.locator("svg text").count() > 20  # labels, ticks and values are text
        page.screenshot(path=str(shot), full_page=True)
    finally:
        page.close()
    return problems, boxes


def _real_image(path: Path, *, min_height: int) -> None:
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width == 1200 and height >= min_height
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50  # text, bars, shading: not one colour


@pytest.mark.browser
def test_reports_render_in_headless_chromium(
    chromium: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fake_demo: DemoConfig,
) -> None:
    from tuneloop.workflows.demo import run_demo

    cli = CLI(f"sqlite:///{tmp_path / 'browser.db'}", capsys)
    _import(cli, tmp_path, name=fake_demo.dataset_name)
    store = open_store(cli.db_url)
    try:
        result = run_demo(store, quick=True, project_dir=tmp_path, say=lambda _: None)
        assert result.report is not None
        train_run = result.student["run_id"]
    finally:
        store.dispose()
    problems, boxes = _open(chromium, result.report, tmp_path / "demo.png")
    assert problems == []
    assert len(boxes) == len(DEMO_PLOTS)
    assert all(b["width"] > 400 and b["height"] > 100 for b in boxes), boxes
    _real_image(tmp_path / "demo.png", min_height=4000)

    assert cli("report", str(train_run), "--out", str(tmp_path / "train.html"))[0] == 0
    problems, boxes = _open(chromium, tmp_path / "train.html", tmp_path / "train.png")
    assert problems == [] and len(boxes) == 3
    assert all(b["width"] > 400 and b["height"] > 100 for b in boxes), boxes
    _real_image(tmp_path / "train.png", min_height=1200)
