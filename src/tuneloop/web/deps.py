"""What every request of the web app goes through: the store, the signed-in person (a session
cookie looked up server-side), their role, and the CSRF check of state-changing requests."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from starlette.datastructures import FormData
from starlette.templating import Jinja2Templates

from tuneloop.errors import Forbidden, UserError
from tuneloop.store.db import Store
from tuneloop.workflows.users import Actor, SessionInfo, session_for

SESSION_COOKIE = "tuneloop_session"
LOGIN_COOKIE = "tuneloop_login"  # the sign-in form's CSRF token (double submit)
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass
class WebState:
    store: Store
    templates: Jinja2Templates
    secure_cookies: bool | None  # None: Secure when the request came over https
    session_lifetime: timedelta


class LoginRequired(Exception):
    """No live session: pages redirect to the sign-in page, the API answers 401."""


class CsrfFailed(Exception):
    """A state-changing request without the session's CSRF token (403)."""


def web_state(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


def get_store(request: Request) -> Store:
    return web_state(request).store


StoreDep = Annotated[Store, Depends(get_store)]


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path == "/api"


def secure(request: Request) -> bool:
    configured = web_state(request).secure_cookies
    return configured if configured is not None else request.url.scheme == "https"


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=secure(request),
    )


def current_session(request: Request) -> SessionInfo:
    """The live session of the request's cookie (cached on the request)."""
    cached = getattr(request.state, "session", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    token = request.cookies.get(SESSION_COOKIE, "")
    info = session_for(get_store(request), token) if token else None
    if info is None:
        raise LoginRequired()
    request.state.session = info
    return info


SessionDep = Annotated[SessionInfo, Depends(current_session)]


def optional_session(request: Request) -> SessionInfo | None:
    try:
        return current_session(request)
    except LoginRequired:
        return None


async def _read_form(request: Request) -> FormData:
    """The request's form (Starlette parses it once and keeps it on the request)."""
    if "form" in request.headers.get("content-type", ""):
        return await request.form()
    return FormData()


async def form_data(request: Request) -> AsyncIterator[FormData]:
    """The request's form; its uploaded files are closed when the request is done."""
    form = await _read_form(request)
    try:
        yield form
    finally:
        await form.close()


FormDep = Annotated[FormData, Depends(form_data)]


def form_lists(form: FormData) -> dict[str, list[str]]:
    return {key: [v for v in form.getlist(key) if isinstance(v, str)] for key in form}


async def check_csrf(request: Request) -> AsyncIterator[None]:
    """Every state-changing request carries the session's CSRF token: the X-CSRF-Token header
    (API) or the csrf_token form field (pages). Safe methods pass. The session is checked
    before a form is read, and a form read here is closed when the request is done (also when
    the check fails and the route never runs)."""
    if request.method in SAFE_METHODS:
        yield
        return
    info = current_session(request)
    sent = request.headers.get(CSRF_HEADER)
    form = None
    if sent is None:
        form = await _read_form(request)
        sent_field = form.get(CSRF_FIELD)
        sent = sent_field if isinstance(sent_field, str) else None
    try:
        if not sent or not secrets.compare_digest(sent.encode(), info.csrf_token.encode()):
            raise CsrfFailed()
        yield
    finally:
        if form is not None:
            await form.close()


def _role(*roles: str) -> Any:
    def dependency(info: SessionDep) -> Actor:
        if info.actor.role not in roles:
            raise Forbidden(f"this needs the role {' or '.join(roles)}")
        return info.actor

    return Depends(dependency)


AnyUser = Annotated[Actor, _role("admin", "reviewer", "annotator")]
Reviewer = Annotated[Actor, _role("admin", "reviewer")]
Admin = Annotated[Actor, _role("admin")]


def status_of(exc: UserError) -> int:
    from tuneloop.errors import Conflict, NotFound
    from tuneloop.workflows.users import TooManyAttempts

    for cls, code in ((NotFound, 404), (Forbidden, 403), (Conflict, 409), (TooManyAttempts, 429)):
        if isinstance(exc, cls):
            return code
    return 400
