"""The melody service's HTTP edge: :func:`tmik_common.http.create_task_app` with the melody task types.

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
    ``params = {"sensitivity": 0..1, "tempo", "time_signature"}`` -> outputs
    ``{"analysis": "melody_results/<job_id>/analysis.json"}``. ``tempo`` (BPM 30..300, or
    ``"half"``/``"double"`` the detected tempo) and ``time_signature`` (``"2/4"``, ``"3/4"``,
    ``"4/4"``, ``"6/8"``, ``"12/8"``) run the analysis at that level; left out: automatic.
    ``generate``: ``input = {"audio", "lyrics" (optional file)}``, ``params = {"sensitivity",
    "randomness", "seed", "lyrics" (text), "vocal_range", "regenerate", "tempo",
    "time_signature"}`` -> outputs ``{"analysis", "melody", "melody_json"}`` (see :mod:`.generate`).
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
import sys
from collections.abc import Mapping
from typing import Any

from flask import Flask

from tmik_common.env import start_process
from tmik_common.http import MAX_REQUEST_BYTES, TaskService, create_task_app, serve
from tmik_common.procs import private_tmpdir
from tmik_common.tasks import TaskRunner, TaskType
from tmik_common.warmup import cache_lock

from . import __version__, analysis, analyze, generate, melody
from . import config as service_config

# Under ``python -m`` __name__ is "__main__"; log under the module's real name regardless.
log = logging.getLogger(__spec__.name if __spec__ else __name__)

__all__ = ["EXTENSION", "MAX_REQUEST_BYTES", "TASK_TYPES", "ServiceState", "create_app", "main", "task_types",
           "warm_up_worker"]

TASK_TYPES: dict[str, TaskType] = {t.name: t for t in (analyze.TASK_TYPE, generate.TASK_TYPE)}
EXTENSION = "melody_service"
ServiceState = TaskService  # what ``app.extensions[EXTENSION]`` holds: ``.runner``, ``.warm``
_MODULE = "tmik_bgm_conditional_melody_generation.service"


def task_types() -> dict[str, TaskType]:
    """The melody task types (what each task process builds once; ``factory`` of the runner)."""
    return dict(TASK_TYPES)


def warm_up_worker() -> dict[str, Any]:
    """A task process' one-off costs: numba compilation, the melody checkpoint. Returns what
    ``/health`` reports: ``model`` (the checkpoint loaded) or ``model_error`` (why none could be).

    Looked up on the package at call time, so tests can substitute it. A checkpoint that cannot
    be loaded leaves ``analyze`` working; ``generate`` tasks then fail with the reason.
    """
    with cache_lock():  # numba's caches are written safely by one process at a time
        seconds = analysis.warm_up()
    info: dict[str, Any] = {"model": "not loaded", "model_error": None}
    try:
        info["model"] = melody.load_model(generate.checkpoint_from_env()).name
    except Exception as exc:  # noqa: BLE001 - reported by /health, and by each generate task
        info["model_error"] = str(exc)
        log.error("melody model unavailable: %s", exc)
    log.info("analysis warm-up took %.1f s (model: %s)", seconds, info["model"])
    return info


def _health(runner: TaskRunner) -> dict[str, Any]:
    info = runner.worker_info
    return {"model": info.get("model", "not loaded"), "model_error": info.get("model_error")}


def create_app(
    config: service_config.Config | None = None,
    *,
    task_types: Mapping[str, TaskType] | None = None,
    warm_up: bool = True,
    isolation: str = "process",
) -> Flask:
    """Build the service's WSGI app, with its own task runner (``app.extensions["melody_service"]``).

    ``isolation="process"`` (the default) runs each task in a task process that pays the warm-up
    (:func:`warm_up_worker`) once, so a crash in a task never takes the service down.
    ``isolation="thread"`` runs tasks in this process (tests that substitute functions use it);
    ``warm_up`` then runs in a background thread, and ``warm_up=False`` skips it (``warm`` stays false).
    """
    cfg = config or service_config.load()
    types = task_types if task_types is not None else TASK_TYPES
    if isolation == "process":
        warm: Any = f"{_MODULE}:warm_up_worker" if warm_up else None
    else:
        warm = warm_up_worker if warm_up else None
    app = create_task_app(
        name="melody-service", task_types=types, data_dir=cfg.shared_data_dir, workers=cfg.task_workers,
        version=__version__, health=_health, warm_up=warm, isolation=isolation,
        factory=f"{_MODULE}:task_types", memory_limit_bytes=cfg.task_memory_limit_bytes, log_level=cfg.log_level,
        extension=EXTENSION, import_name=__name__)
    if not warm_up:
        app.extensions[EXTENSION].warm.clear()  # "warm" only after a real warm-up
    return app


def main() -> int:
    """Serve the app with waitress until Ctrl-C or SIGTERM; return the exit status."""
    cfg = start_process("melody-service", service_config.load)
    if cfg is None:
        return 2
    private_tmpdir("melody-service")  # what a killed predecessor left in its temp folder goes now
    app = create_app(cfg)
    log.info("melody service %s on http://%s:%d, data in %s, %d worker(s)",
             __version__, cfg.host, cfg.port, cfg.shared_data_dir, cfg.task_workers)
    return serve(app, cfg.host, cfg.port, "melody-service")


if __name__ == "__main__":
    sys.exit(main())
