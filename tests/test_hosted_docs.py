"""Every ``$ tuneloop ...`` command of README's hosted-LLM section runs, in order, against
OpenAI, Anthropic and Google's Gemini API played offline (the ``hosted_apis`` fixture), after
the README commands it builds on (fast; the whole README runs in tests/test_readme.py);
shown ``imported``, ``wrote`` and ``error:`` lines appear exactly, and a command shown failing
fails."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

from tests.conftest import CLI
from tests.hosted_mock import HostedAPIs

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Hosted LLMs"
CHECKED = ("imported ", "wrote ", "error: ")
# what the README has made by the time the section runs
BEFORE = [
    "init --name movies",
    "data import examples/reviews.jsonl --task classification --map text=review "
    "--map label=sentiment --split 0.5,0.25,0.25 --gold 4",
    "prompt new sentiment --from sentiment-v1",
    "data import examples/notes.jsonl --task summarization",
    "prompt new note --from conversation-summary",
]


def commands(text: str) -> list[tuple[list[str], list[str]]]:
    steps: list[tuple[list[str], list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                args = shlex.split(line[2:])
                assert args[0] == "tuneloop", line
                steps.append((args[1:], []))
            elif steps and line.startswith(CHECKED):
                steps[-1][1].append(line)
    return steps


def test_hosted_section_runs(cli: CLI, tmp_path: Path, hosted_apis: HostedAPIs) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    for line in BEFORE:
        code, out, err = cli(*shlex.split(line))
        assert code == 0, (line, out, err)
    readme = (ROOT / "README.md").read_text()
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    steps = commands(section)
    assert len(steps) >= 8
    for args, shown in steps:
        code, out, err = cli(*args)
        expect_error = any(s.startswith("error: ") for s in shown)
        assert code == (1 if expect_error else 0), (args, out, err)
        for line in shown:
            assert line in (err if line.startswith("error: ") else out).splitlines(), (args, line)
    hosts = {r.url.host for r in hosted_apis.requests}
    assert hosts == {"api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com"}
