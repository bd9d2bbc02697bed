"""Reports in the web app (reviewers and admins): the list of runs that have one, and each run's
report, the same self-contained page ``tuneloop report RUN`` writes."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from tuneloop.web.deps import Reviewer, SessionDep, StoreDep
from tuneloop.web.render import render
from tuneloop.workflows.report import render_report, reportable_runs

router = APIRouter()
# a report has inline styles and inline SVG, and nothing else: no script, nothing fetched
REPORT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)


@router.get("/reports")
def reports_page(request: Request, store: StoreDep, info: SessionDep, _actor: Reviewer) -> Response:
    return render(request, "reports.html", info, runs=reportable_runs(store))


@router.get("/reports/{run_id}")
async def report_page(run_id: int, store: StoreDep, _actor: Reviewer) -> Response:
    html = await run_in_threadpool(render_report, store, run_id)  # plots take seconds
    return HTMLResponse(html, headers={"Content-Security-Policy": REPORT_CSP})
