"""The humans-in-the-loop web app (``tuneloop web``): FastAPI, server-rendered pages, a JSON
API. Build it with ``tuneloop.web.app.create_app``."""
