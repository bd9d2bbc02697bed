"""The command line: fast help, init, examples, and the demo end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.conftest import CLI
from tests.test_report import DEMO_PLOTS, assert_self_contained, plots_of
from tuneloop.store.db import Store
from tuneloop.store.models import EvalItem, Label, LLMCall, Record, Run

HEAVY = ("torch", "sqlalchemy", "datasets", "pyarrow", "numpy", "alembic", "transformers")


def test_help_imports_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "from tuneloop.cli.main import main\n"
        "rc = main(['--help'])\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout
    assert "data" in out.stdout and "examples" in out.stdout and "demo" in out.stdout


def test_every_command_has_help(cli: CLI) -> None:
    for args in (
        ["data", "import"],
        ["data", "export"],
        ["data", "split"],
        ["data", "dedupe"],
        ["data", "show"],
        ["data", "stats"],
        ["data", "list"],
        ["examples", "list"],
        ["examples", "import"],
        ["init"],
        ["demo"],
        ["report"],
    ):
        code, out, _ = cli(*args, "--help")
        assert code == 0 and "Usage:" in out, args


def test_init_writes_project_file(cli: CLI, tmp_path: Path) -> None:
    code, out, _ = cli("init", "--name", "reviews")
    assert code == 0
    assert (tmp_path / "tuneloop.yaml").read_text() == "name: reviews\n"
    assert "project reviews" in out


def test_default_database_is_sqlite_under_project(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tuneloop.cli.main import main

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "hi", "response": "hello"}) + "\n")
    assert main(["data", "import", str(data), "--task", "instruction"]) == 0
    assert (tmp_path / ".tuneloop" / "tuneloop.db").exists()
    assert f"database: sqlite:///{tmp_path}/.tuneloop/tuneloop.db" in capsys.readouterr().out


def test_usage_errors_exit_nonzero(cli: CLI) -> None:
    code, _, _ = cli("data", "import", "x.jsonl")  # --task missing
    assert code == 2
    code, _, err = cli("data", "stats", "nope")
    assert code == 1
    assert "no dataset 'nope' in project 'default'" in err


@pytest.mark.network_pip
def test_examples_list_and_import(cli: CLI) -> None:
    code, out, _ = cli("examples", "list")
    assert code == 0
    for name in (
        "rotten-tomatoes",
        "boolq",
        "disflqa",
        "mts-dialog",
        "xsum",
        "nq-open-judgements",
        "pyrit-ratings",
        "advbench",
        "bastion-injections",
    ):
        assert name in out
    code, out, err = cli("examples", "import", "bastion-injections", "--gold", "20")
    assert code == 0, err
    assert "into bastion-injections@1" in out
    code, out, _ = cli("data", "stats", "bastion-injections", "--json")
    info = json.loads(out)
    assert info["splits"]["gold"] == 20
    assert info["licence"] == "MIT"
    assert info["provenance"]["files"][0]["package"] == "bastioncorpus"
    assert len(info["provenance"]["files"][0]["sha256"]) == 64


@pytest.mark.network_pip
@pytest.mark.slow
def test_demo_quick_runs_and_reuses(cli: CLI, store: Store) -> None:
    pytest.importorskip("llama_cpp", reason="the demo's annotator runs on llama-cpp-python")
    code, out, err = cli("demo", "--quick")
    assert code == 0, err
    assert "[1/8] data: importing rotten-tomatoes" in out
    assert "demo-rotten-tomatoes-1000@1" in out and "gold" in out and "database: " in out
    assert "[2/8] eyeball: sentiment@1 by qwen2.5-coder-0.5b-instruct on 4 records" in out
    assert "[3/8] evaluate: sentiment@1 on 40 seeded records" in out
    assert "[4/8] evaluate: sentiment@2 on 40 seeded records" in out
    assert "compare: accuracy difference (v2 - v1)" in out
    assert "[5/8] apply: sentiment@" in out and "labelled 40 training records" in out
    assert "[6/8] fine-tune: smollm2-135m-instruct with LoRA" in out and "trained demo-" in out
    assert "[7/8] gold: base smollm2-135m-instruct" in out
    assert "[8/8] review: the 10 validation records (of a sample of 50)" in out
    assert "demo-rotten-tomatoes-1000-student vs qwen2.5-coder-0.5b-instruct: accuracy" in out
    first_report = _report_of(out)
    html = first_report.read_text(encoding="utf-8")
    assert plots_of(html) == DEMO_PLOTS
    assert_self_contained(html)
    code, out, _ = cli("data", "stats", "demo-rotten-tomatoes-1000", "--json")
    info = json.loads(out)
    assert info["splits"]["gold"] == 100
    assert set(info["labels"]) == {"fresh", "rotten"}
    assert 800 <= info["records"] <= 1200
    with store.transaction() as s:
        annotations = s.scalars(select(Run).where(Run.kind == "annotate")).all()
        applied = [r for r in annotations if r.config["limit"] == 40]
        assert len(applied) == 1  # the others label evaluation samples
        run = applied[0]
        labels = s.scalars(select(Label).where(Label.run_id == run.id)).all()
        assert len(labels) == 40
        assert all(lab.value in {"fresh", "rotten"} and lab.confidence for lab in labels)
        splits = set(
            s.scalars(select(Record.split).where(Record.id.in_([x.record_id for x in labels])))
        )
        assert splits == {"train"}
        evaluations = s.scalars(select(Run).where(Run.kind == "evaluate").order_by(Run.id)).all()
        assert len(evaluations) == 5 and all(r.status == "finished" for r in evaluations)
        sample = s.scalars(select(EvalItem).where(EvalItem.run_id == evaluations[0].id)).all()
        assert len(sample) == 40
        sample_ids = [i.record_id for i in sample]
        in_sample = set(s.scalars(select(Record.split).where(Record.id.in_(sample_ids))))
        assert "gold" not in in_sample
        on_gold = s.scalars(select(EvalItem).where(EvalItem.run_id == evaluations[-1].id)).all()
        assert len(on_gold) == 100
        gold_ids = [i.record_id for i in on_gold]
        assert set(s.scalars(select(Record.split).where(Record.id.in_(gold_ids)))) == {"gold"}
        calls = s.scalar(select(func.count()).select_from(LLMCall))
    code, out, _ = cli("demo", "--quick")
    assert code == 0 and "reusing demo-rotten-tomatoes-1000@1" in out
    assert "reused run" in out and "reused 40 training records" in out
    assert "fine-tune: reusing demo-rotten-tomatoes-1000-student" in out
    with store.transaction() as s:
        assert s.scalar(select(func.count()).select_from(LLMCall)) == calls  # nothing new
        demos = s.scalars(select(Run).where(Run.kind == "demo").order_by(Run.id)).all()
        assert [d.status for d in demos] == ["finished", "finished"]
        accuracy = evaluations[-1].stats["metrics"]["accuracy"]["value"]
    second_report = _report_of(out)
    assert second_report != first_report and second_report.name == f"demo-run-{demos[1].id}.html"
    html = second_report.read_text(encoding="utf-8")
    assert plots_of(html) == DEMO_PLOTS and f"{accuracy:.3f} [" in html  # the student on gold


def _report_of(out: str) -> Path:
    """The report the demo wrote (its path is the last line of its output)."""
    line = out.strip().splitlines()[-1]
    assert line.startswith("report: "), line
    path = Path(line.removeprefix("report: "))
    assert path.is_file() and path.parent.name == "reports"
    return path
