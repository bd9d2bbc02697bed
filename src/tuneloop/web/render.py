"""Rendering helpers of the pages (templates with the person and the CSRF token)."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from fastapi.responses import RedirectResponse

from tuneloop.questions import RATINGS
from tuneloop.web.deps import web_state
from tuneloop.workflows.users import SessionInfo

NOTICES = {
    "undone": "Your last answer was taken back: change it and submit again.",
    "nothing-to-undo": "Nothing to undo.",
    "skipped": "Skipped.",
    "skips-reset": "Your skipped items are back in the queue.",
    "saved": "Saved.",
    "added": "Added.",
    "created": "Queue created.",
}


def render(
    request: Request,
    name: str,
    info: SessionInfo | None,
    status: int = 200,
    **context: Any,
) -> Response:
    context.setdefault("notice", NOTICES.get(request.query_params.get("notice", ""), ""))
    queue = context.get("queue")
    if queue is not None and info is not None:
        context.setdefault("member", info.actor.username in queue.members)
    return web_state(request).templates.TemplateResponse(
        request,
        name,
        {
            "user": info.actor if info else None,
            "csrf": info.csrf_token if info else "",
            "ratings": RATINGS,
            **context,
        },
        status_code=status,
    )


def redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


def safe_next(target: str | None) -> str:
    """Only a path on this site (no //host, no scheme) may follow the sign-in."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/queues"
    return target


def field(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""
