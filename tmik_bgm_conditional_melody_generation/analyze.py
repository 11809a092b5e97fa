"""The analysis capability's entry points: one function, the service's task type, and the CLI.

CLI::

    python -m tmik_bgm_conditional_melody_generation.analyze IN.wav --out analysis.json [--sensitivity 0..1]
        [--tempo BPM|half|double] [--time-signature 2/4|3/4|4/4|6/8|12/8]

It writes analysis.json (see shared/DESIGN.md), prints a short summary to stderr and exits
0; on audio it cannot use it prints the reason and exits 2 (no traceback).

Service task ``analyze``: ``input = {"audio": "input/<job>/background.wav"}``,
``params = {"sensitivity": 0..1, "tempo": BPM 30..300 | "half" | "double", "time_signature":
"2/4" | "3/4" | "4/4" | "6/8" | "12/8"}`` (all optional: sensitivity 0.5, tempo and meter
automatic; see :mod:`tmik_common.tempo`); output
``{"analysis": "melody_results/<job_id>/analysis.json"}``. The CLI and the service call the
same :func:`run_analysis`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tmik_common.audio import AudioError
from tmik_common.tasks import (
    InvalidParams,
    InvalidRequest,
    ProgressCallback,
    TaskRequest,
    TaskType,
    Work,
    check_keys,
    number_param,
    output_path,
    resolve_input,
)
from tmik_common.tempo import TEMPO_RULE, TIME_SIGNATURE_RULE, tempo_override, time_signature_override
from tmik_common.warmup import cache_lock

from . import analysis

log = logging.getLogger(__name__)

DEFAULT_SENSITIVITY = 0.5
SENSITIVITY_HELP = (
    "how readily the beat tracker follows tempo changes and weak onsets; "
    "0 = steady grid, 1 = follows expressive timing (default: %(default)s)"
)
# The analysis gets this share of the progress bar; writing the file is the rest.
_ANALYSIS_SHARE = 0.98


def run_analysis(
    audio_path: str | Path,
    out_path: str | Path,
    sensitivity: float = DEFAULT_SENSITIVITY,
    progress: ProgressCallback | None = None,
    *,
    tempo: float | str | None = None,
    time_signature: str | None = None,
) -> analysis.Analysis:
    """Analyse ``audio_path`` and write analysis.json to ``out_path``; return the analysis.

    ``tempo`` (BPM, or ``"half"``/``"double"`` the detected tempo) and ``time_signature``
    (``"3/4"``, ...) override the tracker's choice of level and meter; None: automatic.

    Raises :class:`AudioError` for audio that cannot be used, ``ValueError`` for a
    sensitivity outside 0..1 or a tempo / time signature outside :mod:`tmik_common.tempo`'s
    rules, and whatever ``progress`` raises (``analysis.Cancelled``).
    """
    report = progress or (lambda stage, fraction: None)

    def scaled(stage: str, fraction: float) -> None:
        report(stage, fraction * _ANALYSIS_SHARE)

    # Looked up on the package at call time, so tests can substitute the analysis.
    result = analysis.analyze_file(audio_path, sensitivity=sensitivity, progress=scaled, tempo=tempo,
                                   time_signature=time_signature)
    report("writing", _ANALYSIS_SHARE)
    result.write_json(out_path)
    return result


def _prepare(request: TaskRequest, data_dir: Path) -> Work:
    """Validate an ``analyze`` request and return its work (see the module docstring)."""
    check_keys(request.input, {"audio"}, "input", InvalidRequest)
    check_keys(request.params, {"sensitivity", "tempo", "time_signature"}, "params")
    if "audio" not in request.input:
        raise InvalidRequest("missing_field", "input.audio is required (a path relative to the "
                             "shared data folder, e.g. input/<job_id>/background.wav).")
    audio_path = resolve_input(data_dir, request.input["audio"], "audio")
    sensitivity = number_param(request.params, "sensitivity", DEFAULT_SENSITIVITY, 0.0, 1.0)
    tempo, time_signature = meter_params(request.params)
    out_abs, out_rel = output_path(data_dir, "melody_results", request.job_id, "analysis.json")

    def work(progress: ProgressCallback) -> dict[str, str]:
        run_analysis(audio_path, out_abs, sensitivity, progress, tempo=tempo, time_signature=time_signature)
        return {"analysis": out_rel}

    return work


def meter_params(params: Mapping[str, Any]) -> tuple[float | str | None, str | None]:
    """``params.tempo`` and ``params.time_signature`` of a task request (absent or null: automatic);
    :class:`InvalidParams` naming the parameter, the value and what is allowed."""
    try:
        return (tempo_override(params.get("tempo"), "params.tempo", text_numbers=False),
                time_signature_override(params.get("time_signature"), "params.time_signature"))
    except ValueError as exc:
        raise InvalidParams("invalid_param", f"{exc}.") from None


TASK_TYPE = TaskType(name="analyze", prepare=_prepare)


# -- CLI ----------------------------------------------------------------------------------


def _unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number within 0..1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1, got {text}")
    return value


def _tempo_arg(text: str) -> float | str:
    try:
        value = tempo_override(text, "the tempo")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value is None:
        raise argparse.ArgumentTypeError(f"the tempo must be {TEMPO_RULE}; leave --tempo out for automatic")
    return value


def _meter_arg(text: str) -> str:
    try:
        value = time_signature_override(text, "the time signature")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value is None:
        raise argparse.ArgumentTypeError(f"the time signature must be {TIME_SIGNATURE_RULE}; leave "
                                         "--time-signature out for automatic")
    return value


def add_meter_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tempo`` and ``--time-signature``: the melody CLIs' override of the analysed level and meter."""
    parser.add_argument("--tempo", type=_tempo_arg, default=None, metavar="BPM|half|double",
                        help="the tempo a singer counts, 30..300 BPM, or half / double the detected one; the "
                             "analysis runs at that level (default: automatic)")
    parser.add_argument("--time-signature", type=_meter_arg, default=None, metavar="N/D",
                        help="the meter: 2/4, 3/4, 4/4, 6/8 or 12/8 (default: automatic)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tmik_bgm_conditional_melody_generation.analyze",
        description="Analyse a background track: tempo, beats, downbeats, meter, key, chords "
                    "and sections, written as analysis.json (times in seconds on the file's "
                    "own timeline).",
        epilog="Exit status: 0 on success, 2 when the audio (or an argument) cannot be used.",
    )
    parser.add_argument("input", metavar="IN", type=Path,
                        help="audio file (WAV, FLAC, OGG, MP3; other formats if ffmpeg is installed)")
    parser.add_argument("--out", required=True, type=Path, metavar="analysis.json",
                        help="where to write the analysis (folders are created)")
    parser.add_argument("--sensitivity", type=_unit_interval, default=DEFAULT_SENSITIVITY,
                        metavar="0..1", help=SENSITIVITY_HELP)
    add_meter_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return parser


def summarize(result: analysis.Analysis) -> str:
    """A short human summary of an analysis."""
    def count(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    return (
        f"{result.duration:.1f} s, {result.tempo:.1f} BPM, {result.time_signature}, {result.key}; "
        f"{count(len(result.beats), 'beat')}, {count(len(result.downbeats), 'downbeat')}, "
        f"{count(len(result.chords), 'chord')}, {count(len(result.sections), 'section')}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")

    def progress(stage: str, fraction: float) -> None:
        log.info("%3.0f%% %s", 100 * fraction, stage)

    try:
        with cache_lock():  # numba's first use on a machine must not overlap another process' (numba#10128)
            analysis.warm_up()
        result = run_analysis(args.input, args.out, args.sensitivity, progress, tempo=args.tempo,
                              time_signature=args.time_signature)
    except AudioError as exc:
        print(f"error: {exc.message} [{exc.code}]", file=sys.stderr)
        return 2
    except OSError as exc:
        # Reading the input is the loader's job (AudioError); this is writing the output.
        print(f"error: could not write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"{args.input.name}: {summarize(result)} -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
