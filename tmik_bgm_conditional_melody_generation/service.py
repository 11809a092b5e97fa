"""The melody service's HTTP edge: a thin Flask layer over :class:`.tasks.TaskRunner`.

Run it with ``python -m tmik_bgm_conditional_melody_generation.service`` (waitress, on
MELODY_SERVICE_HOST:MELODY_SERVICE_PORT). All paths are relative to SHARED_DATA_DIR.

Endpoints (JSON in, JSON out; errors are always ``{"error": {"code", "message"}}``):

``GET /health``
    200 ``{"status": "ok", "model", "model_error", "version", "warm", "task_types"}``.
    ``warm`` turns true once the background warm-up (numba compilation, loading the melody
    checkpoint) is over; the service accepts tasks before that, they are only slower.
    ``model`` names the loaded checkpoint; ``model_error`` says why none could be loaded.
``POST /v1/tasks``
    body ``{"job_id", "type", "input": {...}, "params": {...}}`` -> 202 with the task
    (see below) and a ``Location`` header. ``type`` is **required**: the service runs more
    than one kind of task (``analyze`` now, ``generate`` next), and guessing one for a
    client that left it out would silently do the wrong work; leaving it out is a 400
    naming the known types. ``params`` may be omitted (defaults apply). Unknown fields,
    input names or params are refused, so a misspelling fails loudly.
    ``analyze``: ``input = {"audio": "input/<job>/background.wav"}``,
    ``params = {"sensitivity": 0..1}`` -> outputs ``{"analysis": "melody_results/<job_id>/analysis.json"}``.
    ``generate``: ``input = {"audio", "lyrics" (optional file)}``, ``params = {"sensitivity",
    "randomness", "seed", "lyrics" (text), "vocal_range"}`` -> outputs ``{"analysis", "melody",
    "melody_json"}`` (see :mod:`.generate`).
    400: malformed JSON or fields, unsafe ``job_id`` (letters, digits, ``-``, ``_``, at most
    128), absolute or ``..`` paths; 404: input file missing; 422: unknown ``type``, a
    parameter of the wrong type or out of range; 503: backlog full / shutting down.
``GET /v1/tasks/<task_id>``
    200 ``{"task_id", "job_id", "type", "state", "progress", "stage", "outputs", "error",
    "cancel_requested", "created_at", "updated_at"}``; state is queued|running|done|failed|
    cancelled; ``error`` is null or ``{"code", "message"}`` (the audio loader's codes for bad
    audio, ``internal_error`` for our faults). 404 when unknown or pruned (an hour after
    finishing).
``DELETE /v1/tasks/<task_id>``
    200 with the task: a queued task is cancelled at once, a running one has
    ``cancel_requested: true`` and stops at its next checkpoint (well under 2 s); a finished
    task is returned unchanged. 404 when unknown.
``GET /v1/tasks[?job_id=...&state=...]``
    200 ``{"tasks": [task, ...]}``, oldest first.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify, request, url_for
from werkzeug.exceptions import HTTPException

from tmik_common.tasks import (
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

from . import __version__, analysis, analyze, generate, melody
from . import config as service_config

# Under ``python -m`` __name__ is "__main__"; log under the module's real name regardless.
log = logging.getLogger(__spec__.name if __spec__ else __name__)

MAX_REQUEST_BYTES = 64 * 1024  # task requests carry paths and a few numbers, never audio
TASK_TYPES: dict[str, TaskType] = {t.name: t for t in (analyze.TASK_TYPE, generate.TASK_TYPE)}
_STATES = frozenset({QUEUED, RUNNING, *FINISHED_STATES})
_FIELDS = {"job_id", "type", "input", "params"}
_STATUS = {InvalidRequest: 400, InputNotFound: 404, InvalidParams: 422, RunnerBusy: 503}
EXTENSION = "melody_service"


class ServiceState:
    """What the app holds between requests: the runner and whether warm-up has finished."""

    def __init__(self, runner: TaskRunner):
        self.runner = runner
        self.warm = threading.Event()
        self.model = "not loaded"
        self.model_error: str | None = None


def _error(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}}), status


def _warm_up(state: ServiceState) -> None:
    try:
        # Looked up on the package at call time, so tests can substitute it.
        seconds = analysis.warm_up()
    except Exception:  # a failed warm-up only costs the first request some time
        log.exception("warm-up failed; the first analysis will be slower")
        return
    try:
        loaded = melody.load_model(generate.checkpoint_from_env())
        state.model = loaded.name
    except Exception as exc:  # noqa: BLE001 - generate tasks then fail with this reason; analyze still works
        state.model_error = str(exc)
        log.error("melody model unavailable: %s", exc)
    state.warm.set()
    log.info("warm-up done in %.1f s (model: %s)", seconds, state.model)


def _parse_task_request(body: Any) -> TaskRequest:
    """Check the request's JSON shape (not its values: the task type does that)."""
    if not isinstance(body, dict):
        raise InvalidRequest("invalid_json", "The request body must be a JSON object.")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidRequest("unknown_field", f"Unknown field(s) {', '.join(map(repr, unknown))}; "
                             f"accepted: {', '.join(sorted(_FIELDS))}.")
    for name in ("job_id", "type", "input"):
        if name not in body:
            hint = f" Known types: {', '.join(sorted(TASK_TYPES))}." if name == "type" else ""
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


def create_app(
    config: service_config.Config | None = None,
    *,
    task_types: Mapping[str, TaskType] | None = None,
    warm_up: bool = True,
) -> Flask:
    """Build the service's WSGI app, with its own task runner (``app.extensions["melody_service"]``).

    ``warm_up`` starts :func:`analysis.warm_up` in a background thread, so whichever server
    hosts the app, the first real request does not pay the compile cost.
    """
    cfg = config or service_config.load()
    runner = TaskRunner(task_types if task_types is not None else TASK_TYPES,
                        cfg.shared_data_dir, workers=cfg.task_workers)
    state = ServiceState(runner)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.extensions[EXTENSION] = state
    if warm_up:
        threading.Thread(target=_warm_up, args=(state,), name="melody-warm-up", daemon=True).start()

    @app.get("/health")
    def health() -> Response:
        return jsonify(status="ok", model=state.model, model_error=state.model_error, version=__version__,
                       warm=state.warm.is_set(), task_types=runner.task_types)

    @app.post("/v1/tasks")
    def submit_task() -> tuple[Response, int, dict[str, str]] | tuple[Response, int]:
        try:
            task = runner.submit(_parse_task_request(request.get_json(force=True, silent=True)))
        except TaskRequestError as exc:
            return _error(_STATUS.get(type(exc), 400), exc.code, exc.message)
        location = url_for("get_task", task_id=task["task_id"])
        return jsonify(task), 202, {"Location": location}

    @app.get("/v1/tasks")
    def list_tasks() -> Response | tuple[Response, int]:
        state_filter = request.args.get("state")
        if state_filter is not None and state_filter not in _STATES:
            return _error(400, "invalid_query", f"state must be one of {', '.join(sorted(_STATES))}.")
        return jsonify(tasks=runner.list_tasks(job_id=request.args.get("job_id"), state=state_filter))

    def _task_not_found(task_id: str) -> tuple[Response, int]:
        return _error(404, "task_not_found", f"No task {task_id!r} (unknown, or finished over an hour ago).")

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
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(500, "internal_error", "An internal error occurred; it has been logged.")

    return app


def main() -> int:
    """Serve the app with waitress until Ctrl-C or SIGTERM; return the exit status."""
    try:
        cfg = service_config.load()
    except ValueError as exc:
        print(f"melody-service: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import waitress  # only the process that serves needs it

    app = create_app(cfg)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # containers stop with SIGTERM; leave the way Ctrl-C does

    signal.signal(signal.SIGTERM, stop)
    log.info("melody service %s on http://%s:%d, data in %s, %d worker(s)",
             __version__, cfg.host, cfg.port, cfg.shared_data_dir, cfg.task_workers)
    try:
        # Returns when interrupted: waitress handles KeyboardInterrupt itself.
        waitress.serve(app, host=cfg.host, port=cfg.port, threads=8, ident="melody-service",
                       max_request_body_size=MAX_REQUEST_BYTES)
    except KeyboardInterrupt:
        pass
    finally:
        log.info("stopping; unfinished tasks are cancelled")
        # Running tasks stop at their next checkpoint, so the worker threads let us exit.
        app.extensions[EXTENSION].runner.close(cancel=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
