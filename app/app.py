"""The app process: the REST API (Flask, under ``/api``) and the web UI (Gradio) on one port.

``python -m app.app`` migrates the database (``alembic upgrade head``), then serves both with
uvicorn on ``APP_HOST:APP_PORT`` (default 127.0.0.1:8080). A small ASGI dispatcher sends every
path that starts with ``/api`` unchanged to the Flask app (through ``a2wsgi``) and everything else
to the Gradio UI, mounted at ``/`` on a FastAPI app. Exit status 2 when the configuration or the
database cannot be used (the message says which and why).

What this module adds around the two apps, for safety:

- Gradio's check on the files an event names is on (it is skipped for mounted apps): an event
  may only name a file uploaded through Gradio's upload route, never a server path. The UI then
  binds each upload to the session that sent it (:class:`app.ui.Uploads`).
- Gradio serves no file of ``SHARED_DATA_DIR``: the UI's players and downloads are signed links to
  the API's own, per-key checked file route (:mod:`app.access`).
- Failed UI logins count with failed API keys per client address: 429 with Retry-After.
- Chunked request bodies reach Flask (bounded by ``MAX_UPLOAD_MB``) instead of arriving empty.
- A loud warning at start when the app listens beyond this machine with ``API_KEYS`` unset.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import secrets
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
from .access import FailureLimiter
from .context import AppContext, create_context
from .submit import start_upload_sweeper

log = logging.getLogger("app")

API_PREFIX = "/api"
LOGIN_PATHS = ("/login", "/login/")  # Gradio's login form posts here


def _is_api(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def _terminated_input(wsgi_app: Any) -> Any:
    """Tell Flask that the request body ends where the client's does. a2wsgi delivers exactly the
    ASGI body, so a chunked upload (no Content-Length) can be read, up to MAX_CONTENT_LENGTH (then
    413); without this werkzeug reads such a body as empty and the upload looks like "no file"."""
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        environ["wsgi.input_terminated"] = True
        return wsgi_app(environ, start_response)
    return app


def _client(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _limit_logins(web: Any, limiter: FailureLimiter) -> Any:
    """Gradio's login route, counted with the API's failed keys: a refused login (400) is a failure;
    an address over the limit gets 429 with Retry-After before its password is looked at."""
    async def app(scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in LOGIN_PATHS:
            await web(scope, receive, send)
            return
        client = _client(scope)
        wait = limiter.retry_after(client)
        if wait is not None:
            body = json.dumps({"detail": f"too many failed logins from your address; try again in {wait} s"}).encode()
            await send({"type": "http.response.start", "status": 429,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", str(wait).encode()),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        status: list[int] = []

        async def watch(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await web(scope, receive, watch)
        if status and status[0] == 400:  # Gradio's answer to wrong credentials
            limiter.failed(client, "failed web UI login")
    return app


def _record_uploads(web: Any, uploads: Any) -> Any:
    """Give every browser a session cookie (``ui.SESSION_COOKIE``: random, HttpOnly) and note which
    files Gradio's upload route stored for which session (its answer lists their paths), so the UI
    can refuse a track its session did not upload. Upload requests carry no session of Gradio's own."""
    from . import ui

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            await web(scope, receive, send)
            return
        cookie = b"; ".join(v for k, v in scope.get("headers", []) if k == b"cookie").decode("latin-1")
        session = ui.session_of(cookie)
        fresh = session is None
        if fresh:
            session = secrets.token_urlsafe(24)
        upload = scope.get("method") == "POST" and scope.get("path") in ui.UPLOAD_PATHS
        status: list[int] = []
        body: list[bytes] = []

        async def watch(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                if fresh:
                    value = f"{ui.SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Lax"
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (b"set-cookie", value.encode("latin-1"))]}
            elif upload and message["type"] == "http.response.body" and status and status[0] == 200:
                body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    try:
                        stored = json.loads(b"".join(body))
                    except ValueError:
                        stored = None
                    if isinstance(stored, list):
                        uploads.record(session, stored)
                    else:
                        log.warning("Gradio's upload route answered something unexpected; its files stay unusable")
            await send(message)

        await web(scope, receive, watch)
    return app


def exposure_warning(host: str, keys_required: bool) -> str | None:
    """The warning to log when the app is reachable beyond this machine and needs no key, else None."""
    if keys_required:
        return None
    name = host.strip().strip("[]").lower()
    try:
        loopback = name == "localhost" or ipaddress.ip_address(name).is_loopback
    except ValueError:
        loopback = False  # a host name: it may well be reachable by others
    if loopback:
        return None
    return (f"APP_HOST={host} makes the app reachable from other machines, and API_KEYS is not set: ANYONE who "
            "can reach this port can upload tracks, see, download and cancel every job. Set API_KEYS "
            "(comma-separated keys), or listen on 127.0.0.1 (docker: publish the port on 127.0.0.1 only).")


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
    api = WSGIMiddleware(_terminated_input(api_app))

    auth = ui.KeyAuth(ctx) if ctx.keys_required else None
    uploads = ui.Uploads()
    blocks = ui.build_ui(ctx, auth, uploads)
    # Gradio serves nothing of the shared data (the players and downloads are signed links to the API's
    # file route); the blocked path also stops a result from ever being copied into Gradio's cache.
    blocked = [str(ctx.cfg.shared_data_dir)]
    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                           font_mono=["ui-monospace", "monospace"])  # no web fonts: works offline
    web = FastAPI(title="TMIK web UI", docs_url=None, redoc_url=None, openapi_url=None)
    web = gr.mount_gradio_app(web, blocks, path="/", blocked_paths=blocked,
                              auth=auth, auth_message=ui.AUTH_MESSAGE if auth else None,
                              max_file_size=ctx.cfg.max_upload_bytes, ssr_mode=False, theme=theme, css=ui.CSS,
                              footer_links=["gradio", "settings"], mcp_server=False)
    # Gradio checks the files an event names (only files in its upload folder; before reading them)
    # only once its Blocks "has launched", which launch() sets and mount_gradio_app does not: without
    # this, any server path (/etc/passwd, jobs.db, /dev/zero, a FIFO) given to any input component is
    # read and copied into Gradio's cache on the event loop. tests/test_ui.py attacks it directly.
    blocks.has_launched = True
    web = _limit_logins(_record_uploads(web, uploads), ctx.auth_failures)

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
    start_upload_sweeper(cfg, ctx.sessions)  # input folders of uploads a crash interrupted: now and every 10 min
    asgi = create_asgi(ctx)
    warning = exposure_warning(cfg.host, ctx.keys_required)
    if warning:
        log.warning("%s\n%s\n%s", "!" * 100, warning, "!" * 100)
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
