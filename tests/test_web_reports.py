"""Reports in the web app: reviewers and admins list the runs that have a report and open the
same page `tuneloop report` writes; annotators get neither."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import CLI
from tests.people import PASSWORD, add_people, fast_hashing  # noqa: F401
from tests.test_report import V1, _import, assert_self_contained, fake, plots_of
from tests.test_web import login
from tuneloop.store.db import Store
from tuneloop.web.app import create_app
from tuneloop.workflows.evaluate import EvaluateOptions, evaluate
from tuneloop.workflows.prompts import PromptSpec, create_prompt
from tuneloop.workflows.report import render_report

pytestmark = pytest.mark.usefixtures("fast_hashing")


def test_reviewers_see_reports_annotators_do_not(cli: CLI, store: Store, tmp_path: Path) -> None:
    _import(cli, tmp_path, n=40)
    create_prompt(store, "default", "sentiment", PromptSpec(task="classification", user=V1))
    opts = EvaluateOptions("sentiment", "reviews", n=20, resamples=100)
    run_id = evaluate(store, opts, fake(store, "fake:qwen", "qwen")).run_id
    add_people(store)
    with TestClient(create_app(store)) as reviewer, TestClient(create_app(store)) as annotator:
        login(reviewer, "rita", PASSWORD)
        listing = reviewer.get("/reports")
        assert listing.status_code == 200
        assert f'href="/reports/{run_id}"' in listing.text and "reviews@1" in listing.text
        assert "sentiment@1 by fake:qwen, accuracy" in listing.text
        assert 'href="/reports"' in reviewer.get("/queues").text  # in the navigation

        page = reviewer.get(f"/reports/{run_id}")
        assert page.status_code == 200
        assert page.text == render_report(store, run_id)  # the same page as the CLI's
        assert plots_of(page.text) == ["confusion", "slices"]
        assert_self_contained(page.text)
        csp = page.headers["content-security-policy"]
        assert "style-src 'unsafe-inline'" in csp and "script-src" not in csp
        assert "default-src 'none'" in csp
        assert reviewer.get("/reports/999999").status_code == 404

        login(annotator, "alice", PASSWORD)
        assert annotator.get("/reports").status_code == 403
        assert annotator.get(f"/reports/{run_id}").status_code == 403
        assert 'href="/reports"' not in annotator.get("/queues").text
    with TestClient(create_app(store)) as anonymous:
        response = anonymous.get(f"/reports/{run_id}", follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login")
