"""Every ``$ tuneloop ...`` command in README.md runs, in order, and prints what README shows.

Lines of shown output that start with ``imported``, ``wrote`` or ``error:`` must appear exactly;
a command whose shown output is an ``error:`` line must fail with exit code 1.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from tests.conftest import CLI
from tests.hosted_mock import HostedAPIs

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("imported ", "wrote ", "error: ")


def readme_commands() -> list[tuple[list[str], list[str]]]:
    text = (ROOT / "README.md").read_text()
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


def test_readme_has_commands() -> None:
    assert len(readme_commands()) >= 10


@pytest.mark.network_pip
@pytest.mark.slow
def test_readme_commands_run(cli: CLI, tmp_path: Path, hosted_apis: HostedAPIs) -> None:
    """Hosted models (OpenAI, Anthropic, Gemini) answer through the offline mock."""
    pytest.importorskip("llama_cpp", reason="README's annotate runs a packaged model")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    for args, shown in readme_commands():
        code, out, err = cli(*args)
        expect_error = any(s.startswith("error: ") for s in shown)
        assert code == (1 if expect_error else 0), (args, out, err)
        for line in shown:
            assert line in (err if line.startswith("error: ") else out).splitlines(), (args, line)
