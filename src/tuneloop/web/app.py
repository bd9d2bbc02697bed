"""The web app: ``create_app(store_or_url)`` builds a FastAPI app of server-rendered pages
(Jinja2 templates, one small script for keyboard shortcuts, assets inside the package) and a
JSON API under /api. Both are thin shells over the same workflow functions, which check who
may see and do what; the routes check the role again."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import jinja2
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from tuneloop.errors import UserError
from tuneloop.questions import describe
from tuneloop.store.db import Store, open_store
from tuneloop.web.deps import (
    CsrfFailed,
    LoginRequired,
    WebState,
    is_api,
    optional_session,
    status_of,
)
from tuneloop.workflows.users import SESSION_LIFETIME

HERE = Path(__file__).parent
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


def templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["answer"] = lambda value, question: describe(question, value)
    env.filters["num"] = _num
    return Jinja2Templates(env=env)


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or math.isnan(value):
        return "undefined"
    return f"{value:.{digits}f}"


def create_app(
    store: Store | str,
    *,
    secure_cookies: bool | None = None,
    session_lifetime: timedelta = SESSION_LIFETIME,
) -> FastAPI:
    """The app over an open store (the caller closes it) or a database URL (the app opens it
    and closes it at shutdown). ``secure_cookies``: None marks cookies Secure only on https."""
    from tuneloop.web import api, pages, reports

    owned = isinstance(store, str)
    the_store = open_store(store) if isinstance(store, str) else store

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owned:
                the_store.dispose()

    app = FastAPI(
        title="tuneloop", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.web = WebState(the_store, templates(), secure_cookies, session_lifetime)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(pages.router)
    app.include_router(api.router)
    app.include_router(reports.router)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, _exc: LoginRequired) -> Response:
        if is_api(request):
            return JSONResponse({"error": "sign in first"}, status_code=401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        from urllib.parse import quote

        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)

    @app.exception_handler(CsrfFailed)
    async def csrf_failed(request: Request, _exc: CsrfFailed) -> Response:
        message = "missing or wrong CSRF token (reload the page and try again)"
        return error_response(request, message, 403)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> Response:
        response = error_response(request, str(exc), status_of(exc))
        retry = getattr(exc, "retry_after", None)
        if retry is not None:
            response.headers["Retry-After"] = str(retry)
        return response

    return app


def error_response(request: Request, message: str, status: int) -> Response:
    if is_api(request):
        return JSONResponse({"error": message}, status_code=status)
    info = optional_session(request)
    state: WebState = request.app.state.web
    return state.templates.TemplateResponse(
        request,
        "error.html",
        {
            "user": info.actor if info else None,
            "csrf": info.csrf_token if info else "",
            "message": message,
            "status": status,
        },
        status_code=status,
    )
