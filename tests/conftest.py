"""Shared fixtures: a fresh database per test, on SQLite and (when configured) PostgreSQL.

CI sets TUNELOOP_TEST_POSTGRES_URL and TUNELOOP_REQUIRE_POSTGRES=1: then every database test
also runs on a real PostgreSQL server, and a missing server fails the run instead of skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

os.environ["COLUMNS"] = "250"  # before rich consoles are made: no wrapping in captured output

from tests.hosted_mock import hosted_apis  # noqa: F401 (a fixture: OpenAI, Anthropic, Gemini offline)
from tuneloop.cli.main import main, state
from tuneloop.store.db import Store, normalize_url, open_store

PG_URL = os.environ.get("TUNELOOP_TEST_POSTGRES_URL")
REQUIRE_PG = os.environ.get("TUNELOOP_REQUIRE_POSTGRES") == "1"


def _backends() -> list[object]:
    pg_marks = [pytest.mark.postgres]
    if not PG_URL and not REQUIRE_PG:
        pg_marks.append(pytest.mark.skip(reason="TUNELOOP_TEST_POSTGRES_URL is not set"))
    return ["sqlite", pytest.param("postgresql", marks=pg_marks)]


def _fresh_postgres() -> str:
    """An empty schema of this test process (``test_<pid>``), first on the search path: test
    runs sharing one server (a developer's and CI's) never see each other's tables."""
    if not PG_URL:
        pytest.fail("TUNELOOP_REQUIRE_POSTGRES=1 but TUNELOOP_TEST_POSTGRES_URL is not set")
    schema = f"test_{os.getpid()}"
    engine = create_engine(normalize_url(PG_URL))
    try:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    except Exception as exc:  # the server is not there
        pytest.fail(f"PostgreSQL at {PG_URL} is not usable: {exc}")
    finally:
        engine.dispose()
    separator = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{separator}options=-csearch_path%3D{schema}"


@pytest.fixture(params=_backends())
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty database: a SQLite file, or a wiped PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tuneloop.db'}"
    return _fresh_postgres()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    yield s
    s.dispose()


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test in its own directory with no stray project or database settings."""
    monkeypatch.chdir(tmp_path)
    for var in ("TUNELOOP_DB", "TUNELOOP_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    # no hosted model is configured unless a test says so (and none reaches the network)
    for var in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    # commands run in-process: no project or database chosen by an earlier test's options
    monkeypatch.setattr(state, "project_path", None)
    monkeypatch.setattr(state, "db", None)


class CLI:
    """Runs ``tuneloop`` in-process against one database; returns (exit code, stdout, stderr)."""

    def __init__(self, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.db_url = db_url
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(["--db", self.db_url, *args])
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def cli(db_url: str, capsys: pytest.CaptureFixture[str]) -> CLI:
    return CLI(db_url, capsys)


# --- headless Chromium (Debian's package driven by playwright; never `playwright install`) ---

CHROMIUM = os.environ.get("TUNELOOP_CHROMIUM", "/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("TUNELOOP_REQUIRE_BROWSER") == "1"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    """A headless Chromium browser (playwright ``Browser``), shared by the session.

    Skips when the browser is absent, unless CI set TUNELOOP_REQUIRE_BROWSER=1: then it fails.
    Use ``browser.new_page()`` per test and close it.
    """
    if not Path(CHROMIUM).exists():
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if REQUIRE_BROWSER:
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face folder with the tiny llama and its ChatML character tokenizer."""
    from tests.tiny import tiny_llama, tiny_tokenizer

    folder = tmp_path_factory.mktemp("tiny-base")
    tok = tiny_tokenizer()
    tiny_llama(len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
