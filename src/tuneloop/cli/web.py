"""``tuneloop web``: the humans-in-the-loop web app (FastAPI served by uvicorn)."""

from __future__ import annotations

from typing import Annotated

import typer

from tuneloop.cli.main import console, state


def web(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    secure_cookies: Annotated[
        bool | None,
        typer.Option(
            "--secure-cookies/--no-secure-cookies",
            help="Mark cookies Secure (default: when the request came over https, e.g. behind "
            "a TLS proxy started with --proxy-headers).",
        ),
    ] = None,
    proxy_headers: Annotated[
        bool,
        typer.Option(
            "--proxy-headers",
            help="Trust X-Forwarded-For/Proto from the proxy at --forwarded-allow-ips.",
        ),
    ] = False,
    forwarded_allow_ips: Annotated[
        str, typer.Option(help="Proxy addresses trusted with --proxy-headers.")
    ] = "127.0.0.1",
) -> None:
    """Serve the web app: people sign in, answer their assigned queues with the keyboard;
    reviewers see agreement and adjudicate; admins manage people and assignments."""
    import uvicorn

    from tuneloop.web.app import create_app

    app = create_app(state.store(), secure_cookies=secure_cookies)
    console.print(f"tuneloop web on http://{host}:{port} (Ctrl-C stops)")
    uvicorn.run(
        app,
        host=host,
        port=port,
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips,
        log_level="info",
    )
