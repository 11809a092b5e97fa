"""The analysis capability's entry points: one function, the service's task type, and the CLI.

CLI::

    python -m tmik_bgm_conditional_melody_generation.analyze IN.wav --out analysis.json [--sensitivity 0..1]

It writes analysis.json (see shared/DESIGN.md), prints a short summary to stderr and exits
0; on audio it cannot use it prints the reason and exits 2 (no traceback).

Service task ``analyze``: ``input = {"audio": "input/<job>/background.wav"}``,
``params = {"sensitivity": 0..1}`` (optional, default 0.5); output
``{"analysis": "melody_results/<job_id>/analysis.json"}``. The CLI and the service call the
same :func:`run_analysis`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tmik_common.audio import AudioError
from tmik_common.tasks import (
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
) -> analysis.Analysis:
    """Analyse ``audio_path`` and write analysis.json to ``out_path``; return the analysis.

    Raises :class:`AudioError` for audio that cannot be used, ``ValueError`` for a
    sensitivity outside 0..1, and whatever ``progress`` raises (``analysis.Cancelled``).
    """
    report = progress or (lambda stage, fraction: None)

    def scaled(stage: str, fraction: float) -> None:
        report(stage, fraction * _ANALYSIS_SHARE)

    # Looked up on the package at call time, so tests can substitute the analysis.
    result = analysis.analyze_file(audio_path, sensitivity=sensitivity, progress=scaled)
    report("writing", _ANALYSIS_SHARE)
    result.write_json(out_path)
    return result


def _prepare(request: TaskRequest, data_dir: Path) -> Work:
    """Validate an ``analyze`` request and return its work (see the module docstring)."""
    check_keys(request.input, {"audio"}, "input", InvalidRequest)
    check_keys(request.params, {"sensitivity"}, "params")
    if "audio" not in request.input:
        raise InvalidRequest("missing_field", "input.audio is required (a path relative to the "
                             "shared data folder, e.g. input/<job_id>/background.wav).")
    audio_path = resolve_input(data_dir, request.input["audio"], "audio")
    sensitivity = number_param(request.params, "sensitivity", DEFAULT_SENSITIVITY, 0.0, 1.0)
    out_abs, out_rel = output_path(data_dir, "melody_results", request.job_id, "analysis.json")

    def work(progress: ProgressCallback) -> dict[str, str]:
        run_analysis(audio_path, out_abs, sensitivity, progress)
        return {"analysis": out_rel}

    return work


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
        result = run_analysis(args.input, args.out, args.sensitivity, progress)
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
