"""The HTTP edge both services share: a thin Flask layer over :class:`.tasks.TaskRunner`.

Each service's ``service.py`` names its task types, its health details and its warm-up, and
calls :func:`create_task_app`; :func:`serve` hosts the app with waitress. The contract
(shared/DESIGN.md, "Service HTTP"; all paths relative to SHARED_DATA_DIR):

Endpoints (JSON in, JSON out; errors are always ``{"error": {"code", "message"}}``). Every
``/v1/*`` request needs ``Authorization: Bearer <SERVICE_TOKEN>`` (401 ``unauthorized``
otherwise): only the job manager may use the services.

``GET /health``
    200 ``{"status": "ok", "version", "warm", "task_types", ...}`` plus the service's own
    fields (``model``, ...). ``warm`` turns true once the background warm-up is over; tasks
    are accepted before that, they are only slower.
``POST /v1/tasks``
    body ``{"job_id", "type", "input": {...}, "params": {...}}`` -> 202 with the task and a
    ``Location`` header. ``type`` is required (leaving it out is a 400 naming the known
    types); ``params`` may be omitted. Unknown fields are refused.
    400: malformed JSON or fields, unsafe ``job_id``, absolute or ``..`` paths; 404: input
    file missing; 422: unknown ``type``, a bad parameter; 503: backlog full / shutting down.
``GET /v1/tasks/<task_id>``
    200 with the task (``task_id, job_id, type, state, progress, stage, outputs, error,
    cancel_requested, created_at, updated_at``); 404 when unknown or pruned.
``DELETE /v1/tasks/<task_id>``
    200 with the task: a queued task is cancelled at once, a running one stops at its next
    checkpoint; a finished task is returned unchanged. 404 when unknown.
``GET /v1/tasks[?job_id=...&state=...]``
    200 ``{"tasks": [task, ...]}``, oldest first.

Werkzeug's own errors (404, 405, 413) and unhandled exceptions (500 ``internal_error``,
logged) are JSON too.
"""

from __future__ import annotations

import hmac
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request, url_for
from werkzeug.exceptions import HTTPException

from .secrets import service_token
from .tasks import (
    FINISHED_STATES,
    QUEUED,
    RUNNING,
    InputNotFound,
    InvalidParams,
    InvalidRequest,
    RunnerBusy,
    TaskRequest,
    TaskRequestError,
    TaskRunner,
    TaskType,
)

__all__ = ["MAX_REQUEST_BYTES", "TaskService", "create_task_app", "parse_task_request", "serve", "waitress_options"]

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024  # task requests carry paths and a few numbers, never audio
STATES = frozenset({QUEUED, RUNNING, *FINISHED_STATES})
_FIELDS = {"job_id", "type", "input", "params"}
_STATUS = {InvalidRequest: 400, InputNotFound: 404, InvalidParams: 422, RunnerBusy: 503}


class TaskService:
    """What an app holds between requests (``app.extensions[extension]``): the runner, and whether
    its warm-up has finished (``warm``, the runner's ``ready`` event)."""

    def __init__(self, name: str, runner: TaskRunner, version: str):
        self.name = name
        self.runner = runner
        self.version = version

    @property
    def warm(self) -> threading.Event:
        return self.runner.ready


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}}), status


def parse_task_request(body: Any, task_types: Mapping[str, TaskType] | list[str]) -> TaskRequest:
    """Check the request's JSON shape (not its values: the task type does that)."""
    if not isinstance(body, dict):
        raise InvalidRequest("invalid_json", "The request body must be a JSON object.")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidRequest("unknown_field", f"Unknown field(s) {', '.join(map(repr, unknown))}; "
                             f"accepted: {', '.join(sorted(_FIELDS))}.")
    for name in ("job_id", "type", "input"):
        if name not in body:
            hint = f" Known types: {', '.join(sorted(task_types))}." if name == "type" else ""
            raise InvalidRequest("missing_field", f"{name} is required.{hint}")
    if not isinstance(body["type"], str):
        raise InvalidRequest("invalid_field", "type must be a string.")
    params = body.get("params")
    if params is None:
        params = {}
    for name, value in (("input", body["input"]), ("params", params)):
        if not isinstance(value, Mapping):
            raise InvalidRequest("invalid_field", f"{name} must be a JSON object.")
    return TaskRequest(job_id=body["job_id"], type=body["type"], input=body["input"], params=params)


def create_task_app(
    *,
    name: str,
    task_types: Mapping[str, TaskType],
    data_dir: Path,
    workers: int,
    version: str,
    health: Callable[[TaskRunner], Mapping[str, Any]] | None = None,
    warm_up: str | Callable[[], Any] | None = None,
    isolation: str = "thread",
    factory: str | None = None,
    memory_limit_bytes: int = 0,
    log_level: str = "INFO",
    token: str | None = None,
    extra_routes: Callable[[Flask], None] | None = None,
    extension: str | None = None,
    import_name: str | None = None,
) -> Flask:
    """A Flask app serving the task routes over its own :class:`TaskRunner`.

    ``name``: the service's name (logs, the task folder ``tasks/<name>``); ``extension``: the key
    of its :class:`TaskService` in ``app.extensions`` (default ``name`` with ``-`` as ``_``).
    ``health(runner)`` returns the service's own ``/health`` fields (``model``, ...), merged over
    ``status``, ``version``, ``warm`` and ``task_types``. ``isolation``, ``factory``, ``warm_up``
    and ``memory_limit_bytes`` are the runner's (see :class:`TaskRunner`); ``warm`` turns true
    when the warm-up is over. ``token``: what ``/v1/*`` requires as ``Authorization: Bearer``
    (default: :func:`tmik_common.secrets.service_token`). ``extra_routes(app)`` adds the service's
    other endpoints; they are under the same token when their path starts with ``/v1/``.
    """
    runner = TaskRunner(task_types, data_dir, service=name, workers=workers, isolation=isolation, factory=factory,
                        warm_up=warm_up, memory_limit_bytes=memory_limit_bytes, log_level=log_level)
    service = TaskService(name, runner, version)
    known_types = runner.task_types
    expected = (token or service_token(data_dir)).encode("utf-8")

    app = Flask(import_name or __name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.extensions[extension or name.replace("-", "_")] = service

    @app.before_request
    def require_token() -> tuple[Response, int] | None:
        # Only the job manager may use the task API: it holds the shared token.
        if not request.path.startswith("/v1/"):
            return None
        scheme, _, given = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("utf-8"), expected):
            log.warning("%s: refused %s %s from %s: missing or wrong service token", name, request.method,
                        request.path, request.remote_addr)
            return error_response(401, "unauthorized", "This service takes requests from the job manager only: "
                                  "send its token (SERVICE_TOKEN) as 'Authorization: Bearer <token>'.")
        return None

    @app.get("/health")
    def health_route() -> Response:
        body: dict[str, Any] = {"status": "ok", "version": version, "warm": service.warm.is_set(),
                                "task_types": known_types}
        if health is not None:
            body.update(health(runner))
        return jsonify(body)

    @app.post("/v1/tasks")
    def submit_task() -> tuple[Response, int, dict[str, str]] | tuple[Response, int]:
        try:
            task = runner.submit(parse_task_request(request.get_json(force=True, silent=True), known_types))
        except TaskRequestError as exc:
            return error_response(_STATUS.get(type(exc), 400), exc.code, exc.message)
        location = url_for("get_task", task_id=task["task_id"])
        return jsonify(task), 202, {"Location": location}

    @app.get("/v1/tasks")
    def list_tasks() -> Response | tuple[Response, int]:
        state_filter = request.args.get("state")
        if state_filter is not None and state_filter not in STATES:
            return error_response(400, "invalid_query", f"state must be one of {', '.join(sorted(STATES))}.")
        return jsonify(tasks=runner.list_tasks(job_id=request.args.get("job_id"), state=state_filter))

    def _task_not_found(task_id: str) -> tuple[Response, int]:
        return error_response(404, "task_not_found",
                              f"No task {task_id!r} (unknown, or finished over an hour ago).")

    @app.get("/v1/tasks/<task_id>")
    def get_task(task_id: str) -> Response | tuple[Response, int]:
        task = runner.get(task_id)
        if task is None:
            return _task_not_found(task_id)
        return jsonify(task)

    @app.delete("/v1/tasks/<task_id>")
    def cancel_task(task_id: str) -> Response | tuple[Response, int]:
        task = runner.cancel(task_id)
        if task is None:
            return _task_not_found(task_id)
        return jsonify(task)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        # Werkzeug's own errors (404, 405, 413, ...) as JSON, keeping headers such as Allow.
        response = exc.get_response()
        code = (exc.name or "error").lower().replace(" ", "_")
        response.set_data(jsonify(error={"code": code, "message": exc.description}).get_data())
        response.content_type = "application/json"
        return response

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> tuple[Response, int]:
        log.exception("%s: unhandled error on %s %s", name, request.method, request.path)
        return error_response(500, "internal_error", "An internal error occurred; it has been logged.")

    if extra_routes is not None:
        extra_routes(app)
    return app


def task_service(app: Flask) -> TaskService:
    """The app's :class:`TaskService` (whatever its extension key)."""
    for value in app.extensions.values():
        if isinstance(value, TaskService):
            return value
    raise LookupError("not an app made by create_task_app")


def waitress_options(name: str, threads: int = 8) -> dict[str, Any]:
    """How :func:`serve` runs waitress. Its own body limit sits above Flask's, so an oversize body gets
    Flask's JSON 413 (waitress would answer in plain text); waitress still stops a body far beyond it."""
    return {"threads": threads, "ident": name, "max_request_body_size": 16 * MAX_REQUEST_BYTES}


def serve(app: Flask, host: str, port: int, name: str, *, threads: int = 8) -> int:
    """Serve ``app`` with waitress until Ctrl-C or SIGTERM, then cancel its unfinished tasks; return 0."""
    import waitress  # only the process that serves needs it

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # containers stop with SIGTERM; leave the way Ctrl-C does

    signal.signal(signal.SIGTERM, stop)
    service = task_service(app)
    try:
        # Returns when interrupted: waitress handles KeyboardInterrupt itself.
        waitress.serve(app, host=host, port=port, **waitress_options(name, threads))
    except KeyboardInterrupt:
        pass
    finally:
        log.info("%s: stopping; running tasks are interrupted (their clients submit them again)", name)
        # Running tasks stop at their next checkpoint and are recorded as interrupted; queued ones
        # stay in the shared queue for the other replicas, or for this one after its restart.
        service.runner.close(cancel=True, wait=True, timeout=8.0)
    return 0
