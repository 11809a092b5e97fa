"""The melody capability's entry points: one function, the service's task type, and the CLI.

CLI::

    python -m tmik_bgm_conditional_melody_generation.generate IN.wav --out DIR [--sensitivity 0..1]
        [--randomness 0..1] [--seed N] [--lyrics-file F] [--range A3-E5] [--checkpoint PATH]
        [--regenerate START-END] [--tempo BPM|half|double] [--time-signature 2/4|3/4|4/4|6/8|12/8]

writes ``DIR/analysis.json``, ``DIR/melody.mid`` (on the recording's timeline, lyrics as
lyric events) and ``DIR/melody.json`` (the notes in seconds with their syllables, and how
they were made: model, seed, randomness, range). Exit status 0; 2 for input it cannot use
(audio, lyrics, arguments, checkpoint), with the reason on stderr.

Service task ``generate``: ``input = {"audio": "input/<job>/background.wav",
"lyrics": "input/<job>/lyrics.txt" (optional)}``, ``params = {"sensitivity", "randomness",
"seed", "lyrics" (text, instead of the file), "vocal_range" ([low, high] MIDI or
"A3-E5"), "regenerate" ([start, end] seconds: rewrite only that span of the job's existing
melody), "tempo" (BPM 30..300, "half" or "double": the analysis runs at that level),
"time_signature" ("2/4", "3/4", "4/4", "6/8", "12/8")}``, all optional; outputs
``{"analysis", "melody", "melody_json"}`` under ``melody_results/<job_id>/``. The CLI and the service call the same :func:`run_generation`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from tmik_common.audio import AudioError
from tmik_common.lyrics import Lyrics, LyricsError, parse_lyrics, read_lyrics_file
from tmik_common.tasks import (
    InvalidParams,
    InvalidRequest,
    ProgressCallback,
    TaskRequest,
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

from . import analysis, config
from .analyze import DEFAULT_SENSITIVITY, SENSITIVITY_HELP, _unit_interval, add_meter_arguments, meter_params, summarize
from .checkpoint import CheckpointError
from .getscore import HIGH_PITCH, LOW_PITCH, midi_tempo_map
from .melody import DEFAULT_RANGE, Composition, NoteLabel, compose, load_model, parse_range, write_midi
from .timeline import TimelineError

log = logging.getLogger(__name__)

DEFAULT_RANDOMNESS = 0.5
_ANALYSIS_SHARE = 0.35  # of the progress bar; generation is the rest


class GenerationError(ValueError):
    """Inputs that cannot make a melody (bad lyrics, no beat grid, bad range)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def checkpoint_from_env() -> str | None:
    return config.melody_checkpoint()


def run_generation(audio_path: str | Path, out_dir: str | Path, *, sensitivity: float = DEFAULT_SENSITIVITY,
                   randomness: float = DEFAULT_RANDOMNESS, seed: int = 0, lyrics: Lyrics | None = None,
                   vocal_range: tuple[int, int] = DEFAULT_RANGE, checkpoint: str | Path | None = None,
                   regenerate: tuple[float, float] | None = None,
                   progress: ProgressCallback | None = None, tempo: float | str | None = None,
                   time_signature: str | None = None) -> tuple[analysis.Analysis, Composition]:
    """Analyse ``audio_path``, write a melody for it, and write the three files into ``out_dir``.

    ``regenerate`` (start, end seconds): rewrite only that span of the melody already in
    ``out_dir/melody.json`` (made from the same track), keeping the rest note for note.
    ``tempo`` (BPM, or ``"half"``/``"double"`` the detected tempo) and ``time_signature`` override
    the analysis' level and meter (None: automatic; see :mod:`tmik_common.tempo`).

    Raises :class:`AudioError` (bad audio), :class:`GenerationError` (no beat grid, bad
    range), :class:`CheckpointError` (model), and whatever ``progress`` raises (cancel).
    """
    report = progress or (lambda stage, fraction: None)
    low, high = vocal_range
    if not (LOW_PITCH <= low and high <= HIGH_PITCH and high - low >= 7):
        raise GenerationError("bad_vocal_range", f"vocal range {low}..{high} must span at least a fifth (7 "
                              f"semitones) inside MIDI {LOW_PITCH}..{HIGH_PITCH}")
    model = load_model(checkpoint)  # fail before the analysis when the model is unusable
    out_dir = Path(out_dir)
    previous = _previous_notes(out_dir / "melody.json") if regenerate is not None else None
    out_dir.mkdir(parents=True, exist_ok=True)
    result = analysis.analyze_file(audio_path, sensitivity=sensitivity,
                                   progress=lambda s, f: report(s, f * _ANALYSIS_SHARE), tempo=tempo,
                                   time_signature=time_signature)
    result.write_json(out_dir / "analysis.json")

    def scaled(stage: str, fraction: float) -> None:
        report(stage, _ANALYSIS_SHARE + fraction * (0.98 - _ANALYSIS_SHARE))

    try:
        comp = compose(result, randomness=randomness, seed=seed, lyrics=lyrics, vocal_range=(low, high),
                       model=model, previous=previous, regenerate=regenerate, progress=scaled)
    except TimelineError as exc:
        raise GenerationError(exc.code, str(exc)) from None
    report("writing", 0.98)
    _write_atomic(out_dir / "melody.mid", lambda p: write_midi(comp, p))
    _write_atomic(out_dir / "melody.json",
                  lambda p: Path(p).write_text(json.dumps(melody_record(result, comp), indent=1) + "\n"))
    return result, comp


def _previous_notes(path: Path) -> list[tuple[float, float, int, dict]]:
    """The notes of an earlier melody.json (start, end, pitch, and the note itself for its syllable),
    to keep around a regenerated span."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return [(float(n["start"]), float(n["end"]), int(n["pitch"]), n) for n in record["notes"]]
    except FileNotFoundError:
        raise GenerationError("no_previous_melody", f"there is no melody to regenerate a part of ({path} is "
                              "missing); generate the whole melody first") from None
    except (ValueError, KeyError, TypeError):
        raise GenerationError("no_previous_melody", f"{path} is not a melody.json written by generate") from None


def parse_span(text: str) -> tuple[float, float]:
    """``"30-45.5"`` (seconds) -> ``(30.0, 45.5)``."""
    try:
        start, end = (float(v) for v in text.split("-", 1))
    except ValueError:
        raise ValueError(f"span {text!r}: write it as START-END in seconds, e.g. 30-45.5") from None
    if not 0 <= start < end:
        raise ValueError(f"span {text!r}: START must be >= 0 and before END")
    return start, end


def _write_atomic(path: Path, writer) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        writer(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def melody_record(result: analysis.Analysis, comp: Composition) -> dict[str, Any]:
    """melody.json, the contract with the vocal-mix service: the notes in seconds, and how they were made.

    Each note is ``{"start", "end" (s), "pitch" (MIDI), "word", "syllable" (None without
    lyrics), "stress" (1 primary, 2 secondary, 0 none), "phrase" (index into "phrases"),
    "melisma" (True: the note continues the previous note's syllable, whose word, syllable
    and stress it repeats)}``; ``tempo_map`` is melody.mid's ``[[tick, bpm], ...]`` at 480 per quarter;
    ``lyrics_repeats`` how many times the lyrics were sung again to fill the track (0: once; lyrics
    shorter than the track start again, see :mod:`.rhythm`).
    """
    labels = comp.labels if len(comp.labels) == len(comp.song.notes) else [NoteLabel()] * len(comp.song.notes)
    notes = [{"start": round(s, 4), "end": round(e, 4), "pitch": p, **label.to_dict()}
             for (s, e, p), label in zip(comp.note_times(), labels, strict=True)]
    return {"key": result.key, "time_signature": result.time_signature, "tempo": result.tempo,
            "model": comp.model, "seed": comp.seed, "randomness": comp.randomness,
            "vocal_range": [comp.plan.low, comp.plan.high], "seconds": round(comp.seconds, 3),
            "phrases": [[round(float(comp.timeline.column_times[a]), 4),
                         round(float(comp.timeline.column_times[b]), 4)] for a, b in comp.plan.phrases],
            # melody.mid's grid, so the voice's exports put their bars and beats where it has them
            "tempo_map": [[tick, bpm] for tick, bpm in midi_tempo_map(comp.timeline.column_times, comp.song.meter)[1]],
            "lyrics_repeats": comp.info.get("lyrics_repeats", 0.0),
            "notes": notes}


def _range_param(value: Any) -> tuple[int, int]:
    if isinstance(value, str):
        try:
            return parse_range(value)
        except ValueError as exc:
            raise InvalidParams("invalid_param", str(exc)) from None
    if (isinstance(value, list | tuple) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        return int(value[0]), int(value[1])
    raise InvalidParams("invalid_param", "params.vocal_range must be [low, high] MIDI numbers or a string "
                        "like 'A3-E5'")


def _prepare(request: TaskRequest, data_dir: Path) -> Work:
    """Validate a ``generate`` request and return its work (see the module docstring)."""
    check_keys(request.input, {"audio", "lyrics"}, "input", InvalidRequest)
    check_keys(request.params, {"sensitivity", "randomness", "seed", "lyrics", "vocal_range", "regenerate", "tempo",
                                "time_signature"}, "params")
    if "audio" not in request.input:
        raise InvalidRequest("missing_field", "input.audio is required (a path relative to the "
                             "shared data folder, e.g. input/<job_id>/background.wav).")
    audio_path = resolve_input(data_dir, request.input["audio"], "audio")
    sensitivity = number_param(request.params, "sensitivity", DEFAULT_SENSITIVITY, 0.0, 1.0)
    randomness = number_param(request.params, "randomness", DEFAULT_RANDOMNESS, 0.0, 1.0)
    seed = seed_param(request.params)
    tempo, time_signature = meter_params(request.params)
    vocal_range = _range_param(request.params["vocal_range"]) if "vocal_range" in request.params else DEFAULT_RANGE
    regenerate = request.params.get("regenerate")
    if regenerate is not None:
        if not (isinstance(regenerate, list) and len(regenerate) == 2
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in regenerate)
                and 0 <= regenerate[0] < regenerate[1]):
            raise InvalidParams("invalid_param", "params.regenerate must be [start, end] in seconds, start < end")
        regenerate = (float(regenerate[0]), float(regenerate[1]))
    lyrics = lyrics_param(request, data_dir)
    out_abs, out_rel = output_path(data_dir, "melody_results", request.job_id, "analysis.json")
    out_dir = out_abs.parent
    rel_dir = out_rel.rsplit("/", 1)[0]

    def work(progress: ProgressCallback) -> dict[str, str]:
        run_generation(audio_path, out_dir, sensitivity=sensitivity, randomness=randomness, seed=seed,
                       lyrics=lyrics, vocal_range=vocal_range, checkpoint=checkpoint_from_env(),
                       regenerate=regenerate, progress=progress, tempo=tempo, time_signature=time_signature)
        return {"analysis": out_rel, "melody": f"{rel_dir}/melody.mid", "melody_json": f"{rel_dir}/melody.json"}

    return work


TASK_TYPE = TaskType(name="generate", prepare=_prepare)


# -- CLI ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tmik_bgm_conditional_melody_generation.generate",
        description="Write a sung lead melody for a background track: analysis.json, melody.mid (on the "
                    "track's own timeline, with lyrics) and melody.json.",
        epilog="Exit status: 0 on success, 2 when an input (audio, lyrics, argument, checkpoint) cannot be used.")
    parser.add_argument("input", metavar="IN", type=Path, help="background track (WAV, FLAC, OGG, MP3, ...)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (created)")
    parser.add_argument("--sensitivity", type=_unit_interval, default=DEFAULT_SENSITIVITY, metavar="0..1",
                        help=SENSITIVITY_HELP)
    parser.add_argument("--randomness", type=_unit_interval, default=DEFAULT_RANDOMNESS, metavar="0..1",
                        help="Creative Randomness: 0 = safest, most likely notes; 1 = adventurous "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same melody (default: %(default)s)")
    parser.add_argument("--lyrics-file", type=Path, metavar="F",
                        help="UTF-8 text, one sung line per line; [Chorus]-style tags and blank lines allowed")
    parser.add_argument("--range", default=None, metavar="LOW-HIGH",
                        help="the voice's range, e.g. A3-E5 or 57-76 (default: A3-E5)")
    parser.add_argument("--checkpoint", type=Path, default=None, metavar="PATH",
                        help="GETDiff checkpoint (ours, or an official GETMusic one with dict.txt beside it); "
                             "default: MELODY_CHECKPOINT, an official checkpoint in checkpoints/, else the default")
    parser.add_argument("--regenerate", default=None, metavar="START-END",
                        help="rewrite only this span (seconds) of the melody already in DIR (from the same track), "
                             "e.g. 30-45.5; the rest stays note for note")
    add_meter_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")

    def progress(stage: str, fraction: float) -> None:
        log.info("%3.0f%% %s", 100 * fraction, stage)

    try:
        vocal_range = parse_range(args.range) if args.range else DEFAULT_RANGE
        regenerate = parse_span(args.regenerate) if args.regenerate else None
        lyrics = parse_lyrics(read_lyrics_file(args.lyrics_file)) if args.lyrics_file else None
        with cache_lock():  # numba's first use on a machine must not overlap another process' (numba#10128)
            analysis.warm_up()
        result, comp = run_generation(args.input, args.out, sensitivity=args.sensitivity,
                                      randomness=args.randomness, seed=args.seed, lyrics=lyrics,
                                      vocal_range=vocal_range, checkpoint=args.checkpoint or checkpoint_from_env(),
                                      regenerate=regenerate, progress=progress, tempo=args.tempo,
                                      time_signature=args.time_signature)
    except (AudioError, LyricsError, GenerationError) as exc:
        print(f"error: {exc.message} [{exc.code}]", file=sys.stderr)
        return 2
    except CheckpointError as exc:
        print(f"error: {exc} [checkpoint_error]", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: could not write to {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"{args.input.name}: {summarize(result)}; melody: {len(comp.song.notes)} notes, "
          f"{comp.seconds:.1f} s ({comp.model}) -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
