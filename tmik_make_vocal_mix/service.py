"""The vocal-mix service's HTTP edge: :func:`tmik_common.http.create_task_app` with the ``render`` and
``select_take`` tasks.

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
    (text, instead of the file), "target_lufs" (-30..-6; default TARGET_LUFS), "takes" (1..5;
    default TAKES, 3)}``, all optional -> outputs: every file :func:`.render.run_render` writes,
    keyed by its name (``mix``, ``mix_mp3``, ``vocal``, ``vocal_fx``, ``instrumental``, ``qc``, the
    exports, ``takes`` = takes.json, ``take<n>_vocal``, ``take<n>_mix_mp3`` ...), as paths under
    ``vocal_results/<job_id>/``. The chosen take's files are the top-level ones.
    ``select_take``: ``input = {"background", "melody" (as for its render), "takes":
    "vocal_results/<job_id>/takes.json"}``, ``params = {"take": n, "style", "target_lufs"}`` ->
    take n of that render becomes the result (mixed again, exports and qc.json rewritten, takes.json
    ``chosen_by`` "user"); outputs as for ``render``. 422 ``take_not_found`` when the render has no
    take n, ``takes_not_found`` when takes.json is unreadable, ``invalid_param`` for a bad take. ``melody`` is the melody service's melody.json: the voice
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

from . import __version__, export, qc, render
from . import config as service_config
from .score import MIDI_SUFFIXES, ScoreError, read_melody_json
from .styles import StyleError, get_style, list_styles

# Under ``python -m`` __name__ is "__main__"; log under the module's real name regardless.
log = logging.getLogger(__spec__.name if __spec__ else __name__)

__all__ = ["EXTENSION", "MODEL", "create_app", "main", "render_task_type", "select_take_task_type", "task_types",
           "warm_up_worker"]

EXTENSION = "vocal_service"
_MODULE = "tmik_make_vocal_mix.service"
MODEL = "hibari-heart+world"
RESULTS = "vocal_results"


def _relative(path: Path, data_dir: Path) -> str:
    return Path(path).resolve().relative_to(data_dir).as_posix()


def _takes_param(params: Mapping[str, Any], default: int) -> int:
    value = params.get("takes")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= render.MAX_TAKES:
        raise InvalidParams("invalid_param", f"params.takes must be a whole number 1..{render.MAX_TAKES}, "
                            f"got {value!r}")
    return value


def _inputs(request: TaskRequest, data_dir: Path, names: tuple[str, ...]) -> dict[str, Path]:
    """The task's input files (background, melody, ...), resolved under the data folder; melody.json checked."""
    examples = {"background": "input/<job_id>/background.wav", "melody": "melody_results/<job_id>/melody.json",
                "takes": f"{RESULTS}/<job_id>/takes.json"}
    for name in names:
        if name not in request.input:
            raise InvalidRequest("missing_field", f"input.{name} is required (a path relative to the "
                                 f"shared data folder, e.g. {examples[name]}).")
    files = {name: resolve_input(data_dir, request.input[name], name) for name in names}
    melody = files["melody"]
    if melody.suffix.lower() not in MIDI_SUFFIXES:
        try:  # melody.json is checked here (cheap), so a bad one is refused at once with its code
            read_melody_json(melody)
        except ScoreError as exc:
            raise InvalidParams(exc.code, exc.message) from None
    return files


def _style_param(params: Mapping[str, Any]) -> str:
    style = params.get("style")
    if style is not None and not isinstance(style, str):
        raise InvalidParams("invalid_param", "params.style must be a style name (see GET /v1/styles)")
    try:
        return get_style(style).name
    except StyleError as exc:
        raise InvalidParams(exc.code, exc.message) from None


def render_task_type(*, target_lufs: float = -14.0, true_peak_db: float = -1.0,
                     intelligibility_seconds: float = qc.INTELLIGIBILITY_SECONDS,
                     takes: int = render.DEFAULT_TAKES) -> TaskType:
    """The ``render`` task type, with the service's default loudness, peak ceiling and number of takes."""

    def prepare(request: TaskRequest, data_dir: Path) -> Work:
        check_keys(request.input, {"background", "melody", "lyrics"}, "input", InvalidRequest)
        check_keys(request.params, {"style", "seed", "lyrics", "target_lufs", "takes"}, "params")
        files = _inputs(request, data_dir, ("background", "melody"))
        style_name = _style_param(request.params)
        seed = seed_param(request.params)
        lufs = number_param(request.params, "target_lufs", target_lufs, -30.0, -6.0)
        n_takes = _takes_param(request.params, takes)
        lyrics = lyrics_param(request, data_dir)
        out_dir, _ = output_path(data_dir, RESULTS, request.job_id)
        base = Path(data_dir).resolve()

        def work(progress: ProgressCallback) -> dict[str, str]:
            # Looked up at call time, so tests can substitute the render.
            result = render.run_render(files["background"], files["melody"], out_dir, lyrics=lyrics,
                                       style=style_name, seed=seed, target_lufs=lufs, true_peak_db=true_peak_db,
                                       intelligibility_seconds=intelligibility_seconds, takes=n_takes,
                                       progress=progress)
            return {name: _relative(path, base) for name, path in result.outputs.items()}

        return work

    return TaskType(name="render", prepare=prepare)


def select_take_task_type(*, target_lufs: float = -14.0, true_peak_db: float = -1.0) -> TaskType:
    """The ``select_take`` task type: make another take of a finished render the result."""

    def prepare(request: TaskRequest, data_dir: Path) -> Work:
        check_keys(request.input, {"background", "melody", "takes"}, "input", InvalidRequest)
        check_keys(request.params, {"take", "style", "target_lufs"}, "params")
        files = _inputs(request, data_dir, ("background", "melody", "takes"))
        out_dir, rel = output_path(data_dir, RESULTS, request.job_id)
        if files["takes"].resolve() != (out_dir / render.TAKES_FILE).resolve():
            raise InvalidRequest("invalid_field", f"input.takes must be this job's {rel}/{render.TAKES_FILE}")
        take = request.params.get("take")
        if isinstance(take, bool) or not isinstance(take, int):
            raise InvalidParams("invalid_param", f"params.take must be a take number, got {take!r}")
        try:
            rows = render.read_takes(out_dir)["takes"]
        except render.RenderError as exc:
            raise InvalidParams(exc.code, exc.message) from None
        numbers = sorted(int(r["take"]) for r in rows)
        if take not in numbers:
            raise InvalidParams("take_not_found", f"take {take} is not one of this render's takes "
                                f"({', '.join(map(str, numbers))})")
        style_name = _style_param(request.params)
        lufs = number_param(request.params, "target_lufs", target_lufs, -30.0, -6.0)
        base = Path(data_dir).resolve()

        def work(progress: ProgressCallback) -> dict[str, str]:
            result = render.select_take(files["background"], files["melody"], out_dir, take, style=style_name,
                                        target_lufs=lufs, true_peak_db=true_peak_db, progress=progress)
            return {name: _relative(path, base) for name, path in result.outputs.items()}

        return work

    return TaskType(name="select_take", prepare=prepare)


def _task_types(cfg: service_config.Config) -> dict[str, TaskType]:
    tasks = (render_task_type(target_lufs=cfg.target_lufs, true_peak_db=cfg.true_peak_db,
                              intelligibility_seconds=cfg.intelligibility_seconds, takes=cfg.takes),
             select_take_task_type(target_lufs=cfg.target_lufs, true_peak_db=cfg.true_peak_db))
    return {task.name: task for task in tasks}


def task_types() -> dict[str, TaskType]:
    """The ``render`` and ``select_take`` task types with the service's configured defaults (each task
    process builds them once)."""
    return _task_types(service_config.load())


def warm_up_worker() -> dict[str, Any]:
    """A task process' one-off costs: the controllable neural voice (built once, cached on disk),
    numba's compiled code (under the machine-wide compile lock), LibreSVIP's plugins and the speech model."""
    from .engines import neural  # onnx and onnxruntime load here, not at import

    path = neural.build_controllable_model()
    log.info("neural voice model ready: %s", path)
    export.load_converters()  # LibreSVIP's plugins: about 3 s to import, once per process, not per render
    with cache_lock():
        qc.warm_up()
        try:  # the expression figures' first YIN call (about 2 s)
            from . import expression_metrics

            expression_metrics.warm_up()
        except (ImportError, AttributeError):
            pass
    try:
        from .intelligibility import RecogniserMissing, load_recogniser

        load_recogniser()  # the speech model each take's word check uses
    except RecogniserMissing as exc:
        log.warning("word checks will not be measured: %s", exc)
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
        task_types = _task_types(cfg)
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
