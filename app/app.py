"""The app process: the REST API (Flask, under ``/api``) and the web UI (Gradio) on one port.

``python -m app.app`` migrates the database (``alembic upgrade head``), then serves both with
uvicorn on ``APP_HOST:APP_PORT`` (default 127.0.0.1:8080). A small ASGI dispatcher sends every
path that starts with ``/api`` unchanged to the Flask app (through ``a2wsgi``) and everything else
to the Gradio UI, mounted at ``/`` on a FastAPI app. Exit status 2 when the configuration or the
database cannot be used (the message says which and why).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


from tmik_common.env import start_process

from . import config as app_config
from . import db
from .context import AppContext, create_context

log = logging.getLogger("app")

API_PREFIX = "/api"


def _is_api(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def create_asgi(ctx: AppContext, api_app: Any = None):
    """The app's ASGI callable: ``/api...`` to Flask (``api_app``, default ``create_api(ctx)``), the rest
    to the Gradio UI."""
    import gradio as gr
    from a2wsgi import WSGIMiddleware
    from fastapi import FastAPI

    from . import ui

    if api_app is None:
        from .api import create_api

        api_app = create_api(ctx)
    api = WSGIMiddleware(api_app)

    auth = ui.KeyAuth(ctx) if ctx.keys_required else None
    blocks = ui.build_ui(ctx, auth)
    shared = ctx.cfg.shared_data_dir
    # Only the job folders are served (never the SQLite file that may sit in the same folder).
    allowed = [str(shared / sub) for sub in ("input", "melody_results", "vocal_results")]
    blocked = [str(shared / name) for name in ("jobs.db", "jobs.db-wal", "jobs.db-shm")]
    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                           font_mono=["ui-monospace", "monospace"])  # no web fonts: works offline
    web = FastAPI(title="TMIK web UI", docs_url=None, redoc_url=None, openapi_url=None)
    web = gr.mount_gradio_app(web, blocks, path="/", allowed_paths=allowed, blocked_paths=blocked,
                              auth=auth, auth_message=ui.AUTH_MESSAGE if auth else None,
                              max_file_size=ctx.cfg.max_upload_bytes, ssr_mode=False, theme=theme, css=ui.CSS,
                              footer_links=["gradio", "settings"], mcp_server=False)

    async def app(scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket") and _is_api(scope.get("path", "")):
            await api(scope, receive, send)
        else:
            await web(scope, receive, send)  # also the lifespan events, which start Gradio's queue

    return app


def main(argv: list[str] | None = None) -> int:
    del argv
    cfg = start_process("app", app_config.load)
    if cfg is None:
        return 2
    try:
        ctx = create_context(cfg)
    except db.DatabaseError as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:  # an unusable data folder
        log.error("cannot use SHARED_DATA_DIR=%s: %s", cfg.shared_data_dir, exc)
        return 2
    asgi = create_asgi(ctx)
    log.info("serving the web UI at http://%s:%d/ and the REST API under /api", cfg.host, cfg.port)
    _Server(uvicorn.Config(asgi, host=cfg.host, port=cfg.port, log_level=cfg.log_level.lower(), access_log=False,
                           timeout_graceful_shutdown=5)).run()
    return 0


class _Server(uvicorn.Server):
    """uvicorn's server, except that a stop asked for with SIGINT/SIGTERM ends with exit status 0:
    uvicorn re-raises the signal after its graceful shutdown, which operators would read as a crash
    (exit -15 in the launcher's log, 143 in docker)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
