"""The vocal-mix service's HTTP edge: :func:`tmik_common.http.create_task_app` with the ``render`` task.

Run it with ``python -m tmik_make_vocal_mix.service`` (waitress, on
VOCAL_SERVICE_HOST:VOCAL_SERVICE_PORT). All paths are relative to SHARED_DATA_DIR.

Endpoints (JSON in, JSON out; errors are always ``{"error": {"code", "message"}}``):

``GET /health``
    200 ``{"status": "ok", "model": "hibari-heart+world", "version", "warm", "task_types"}``.
    ``warm`` turns true once the background warm-up (building the controllable neural voice
    model, cached on disk) is over; tasks are accepted before that, they are only slower.
``GET /v1/styles``
    200 ``{"styles": [{"name", "description", "vocal_range": [low, high]}, ...]}``: the vocal
    styles a ``render`` accepts (give the melody service the chosen one's range).
``POST /v1/tasks``
    body ``{"job_id", "type": "render", "input": {...}, "params": {...}}`` -> 202 with the task
    and a ``Location`` header.
    ``render``: ``input = {"background": "input/<job>/background.wav", "melody":
    "melody_results/<job>/melody.json", "lyrics": "input/<job>/lyrics.txt" (optional)}``,
    ``params = {"style" (see /v1/styles; default pop_bright), "seed" (0..2**31-1), "lyrics"
    (text, instead of the file), "target_lufs" (-30..-6; default TARGET_LUFS)}``, all optional
    -> outputs: every file :func:`.render.run_render` writes, keyed by its name (``mix``,
    ``mix_mp3``, ``vocal``, ``vocal_fx``, ``instrumental``, ``qc``, the exports ...), as paths
    under ``vocal_results/<job_id>/``. ``melody`` is the melody service's melody.json: the voice
    sings its notes with their syllables, words, stress and phrases (the lyrics were parsed once,
    by the melody service, so no lyrics are needed). A ``.mid`` file is accepted as a fallback:
    its lyric events are sung, or the given lyrics are spread over its phrases.
    400: malformed JSON or fields, unsafe ``job_id``, absolute or ``..`` paths; 404: an input
    file missing; 422: unknown ``type``, a bad parameter (``unknown_style`` lists the styles,
    bad lyrics keep the lyrics codes), a melody.json that fails its checks (its code, below);
    503: backlog full / shutting down.
``GET /v1/tasks/<task_id>``, ``DELETE /v1/tasks/<task_id>``, ``GET /v1/tasks[?job_id&state]``
    as in :mod:`tmik_common.http`. melody.json's codes (422 at submission): ``melody_not_json``,
    ``melody_too_large``, ``melody_missing_notes``, ``empty_melody``, ``melody_bad_field``,
    ``melody_overlapping_notes``. A failed render's ``error.code`` is the loader's for bad
    audio, ``corrupt_midi``/``empty_melody`` for a melody.mid, ``melody_out_of_range``,
    ``melody_longer_than_background``, or ``internal_error`` for our faults. A cancelled render
    stops at its next checkpoint (well under 2 s).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify

from tmik_common.env import start_process
from tmik_common.http import create_task_app, serve
from tmik_common.procs import private_tmpdir
from tmik_common.tasks import (
    InvalidParams,
    InvalidRequest,
    ProgressCallback,
    TaskRequest,
    TaskRunner,
    TaskType,
    Work,
    check_keys,
    lyrics_param,
    number_param,
    output_path,
    resolve_input,
    seed_param,
)
from tmik_common.warmup import cache_lock

from . import __version__, qc, render
from . import config as service_config
from .score import MIDI_SUFFIXES, ScoreError, read_melody_json
from .styles import StyleError, get_style, list_styles

# Under ``python -m`` __name__ is "__main__"; log under the module's real name regardless.
log = logging.getLogger(__spec__.name if __spec__ else __name__)

__all__ = ["EXTENSION", "MODEL", "create_app", "main", "render_task_type", "task_types", "warm_up_worker"]

EXTENSION = "vocal_service"
_MODULE = "tmik_make_vocal_mix.service"
MODEL = "hibari-heart+world"
RESULTS = "vocal_results"


def _relative(path: Path, data_dir: Path) -> str:
    return Path(path).resolve().relative_to(data_dir).as_posix()


def render_task_type(*, target_lufs: float = -14.0, true_peak_db: float = -1.0,
                     intelligibility_seconds: float = 20.0) -> TaskType:
    """The ``render`` task type, with the service's default loudness and peak ceiling."""

    def prepare(request: TaskRequest, data_dir: Path) -> Work:
        check_keys(request.input, {"background", "melody", "lyrics"}, "input", InvalidRequest)
        check_keys(request.params, {"style", "seed", "lyrics", "target_lufs"}, "params")
        for name, example in (("background", "input/<job_id>/background.wav"),
                              ("melody", "melody_results/<job_id>/melody.json")):
            if name not in request.input:
                raise InvalidRequest("missing_field", f"input.{name} is required (a path relative to the "
                                     f"shared data folder, e.g. {example}).")
        background = resolve_input(data_dir, request.input["background"], "background")
        melody = resolve_input(data_dir, request.input["melody"], "melody")
        if melody.suffix.lower() not in MIDI_SUFFIXES:
            try:  # melody.json is checked here (cheap), so a bad one is refused at once with its code
                read_melody_json(melody)
            except ScoreError as exc:
                raise InvalidParams(exc.code, exc.message) from None
        style = request.params.get("style")
        if style is not None and not isinstance(style, str):
            raise InvalidParams("invalid_param", "params.style must be a style name (see GET /v1/styles)")
        try:
            style_name = get_style(style).name
        except StyleError as exc:
            raise InvalidParams(exc.code, exc.message) from None
        seed = seed_param(request.params)
        lufs = number_param(request.params, "target_lufs", target_lufs, -30.0, -6.0)
        lyrics = lyrics_param(request, data_dir)
        out_dir, _ = output_path(data_dir, RESULTS, request.job_id)
        base = Path(data_dir).resolve()

        def work(progress: ProgressCallback) -> dict[str, str]:
            # Looked up at call time, so tests can substitute the render.
            result = render.run_render(background, melody, out_dir, lyrics=lyrics, style=style_name, seed=seed,
                                       target_lufs=lufs, true_peak_db=true_peak_db,
                                       intelligibility_seconds=intelligibility_seconds, progress=progress)
            return {name: _relative(path, base) for name, path in result.outputs.items()}

        return work

    return TaskType(name="render", prepare=prepare)


def task_types() -> dict[str, TaskType]:
    """The ``render`` task type with the service's configured defaults (each task process builds it once)."""
    cfg = service_config.load()
    task = render_task_type(target_lufs=cfg.target_lufs, true_peak_db=cfg.true_peak_db,
                            intelligibility_seconds=cfg.intelligibility_seconds)
    return {task.name: task}


def warm_up_worker() -> dict[str, Any]:
    """A task process' one-off costs: the controllable neural voice (built once, cached on disk) and
    numba's compiled code (under the machine-wide compile lock)."""
    from .engines import neural  # onnx and onnxruntime load here, not at import

    path = neural.build_controllable_model()
    log.info("neural voice model ready: %s", path)
    with cache_lock():
        qc.warm_up()
    return {}


def _extra_routes(app: Flask) -> None:
    @app.get("/v1/styles")
    def styles() -> Response:
        return jsonify(styles=list_styles())


def _health(runner: TaskRunner) -> dict[str, Any]:
    return {"model": MODEL}


def create_app(
    config: service_config.Config | None = None,
    *,
    task_types: Mapping[str, TaskType] | None = None,
    warm_up: bool = True,
    isolation: str = "process",
) -> Flask:
    """Build the service's WSGI app, with its own task runner (``app.extensions["vocal_service"]``).

    ``isolation="process"`` (the default) renders in task processes that pay the warm-up
    (:func:`warm_up_worker`) once, so a crash in a render never takes the service down;
    ``isolation="thread"`` renders in this process (for tests that substitute functions), the
    warm-up then running in a background thread.
    """
    cfg = config or service_config.load()
    if task_types is None:
        task = render_task_type(target_lufs=cfg.target_lufs, true_peak_db=cfg.true_peak_db,
                                intelligibility_seconds=cfg.intelligibility_seconds)
        task_types = {task.name: task}
    if isolation == "process":
        warm: Any = f"{_MODULE}:warm_up_worker" if warm_up else None
    else:
        warm = warm_up_worker if warm_up else None
    return create_task_app(
        name="vocal-mix-service", task_types=task_types, data_dir=cfg.shared_data_dir, workers=cfg.task_workers,
        version=__version__, health=_health, warm_up=warm, isolation=isolation, factory=f"{_MODULE}:task_types",
        memory_limit_bytes=cfg.task_memory_limit_bytes, log_level=cfg.log_level, extra_routes=_extra_routes,
        extension=EXTENSION, import_name=__name__)


def main() -> int:
    """Serve the app with waitress until Ctrl-C or SIGTERM; return the exit status."""
    cfg = start_process("vocal-mix-service", service_config.load)
    if cfg is None:
        return 2
    private_tmpdir("vocal-mix-service")  # what a killed predecessor left in its temp folder goes now
    app = create_app(cfg)
    log.info("vocal-mix service %s on http://%s:%d, data in %s, %d worker(s), %g LUFS / %g dBTP",
             __version__, cfg.host, cfg.port, cfg.shared_data_dir, cfg.task_workers, cfg.target_lufs,
             cfg.true_peak_db)
    return serve(app, cfg.host, cfg.port, "vocal-mix-service")


if __name__ == "__main__":
    sys.exit(main())
