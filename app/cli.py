"""The whole pipeline in one process, no servers: ``python -m app.cli generate IN.wav --out DIR``.

It calls the same functions the two services run (the melody service's ``run_generation`` and
the vocal-mix service's ``run_render``), with the same defaults, and shows one progress bar
across both stages. As in the services, the stages run in a task process of their own, so a
crash there (a segfault, the out-of-memory killer) ends the command with a message naming the
stage and an exit status of 1, never silently. The melody goes to ``DIR/melody/`` (analysis.json, melody.mid, melody.json)
and the song to ``DIR/`` (mix.wav, mix.mp3, stems, exports, qc.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from tmik_common.audio import write_working_copy
from tmik_common.env import task_memory_limit_bytes
from tmik_common.errors import CodedError
from tmik_common.isolation import TaskCrashed, TaskFailed, TaskOutOfMemory, TaskProcess
from tmik_common.lyrics import LyricsError, parse_lyrics, read_lyrics_file
from tmik_common.tasks import TaskRequest, TaskType
from tmik_common.tempo import tempo_override, time_signature_override

log = logging.getLogger("app.cli")

STAGE_SPANS = {"melody": (0.0, 0.4), "vocal": (0.4, 1.0)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.cli",
                                     description="Background track in, finished song out, in this process.")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write, sing and mix a song over a background track",
                         epilog="Exit status: 0 on success, 2 when an input or option cannot be used, 1 when a stage "
                         "crashed, ran out of memory or could not write its files (the message says which).")
    gen.add_argument("input", type=Path, nargs="?", help="the background track (WAV, FLAC, MP3, OGG)")
    gen.add_argument("--out", type=Path, help="output folder (created; required)")
    gen.add_argument("--sensitivity", type=float, default=0.5, help="Beat Detection Sensitivity 0..1 (default 0.5)")
    gen.add_argument("--randomness", type=float, default=0.5, help="Creative Randomness 0..1 (default 0.5)")
    gen.add_argument("--seed", type=int, default=0, help="same seed, same song (default 0)")
    gen.add_argument("--tempo", metavar="BPM|half|double", help="the tempo a singer counts: 30..300 BPM, or half / "
                     "double the detected one; the analysis runs at that level (default: automatic)")
    gen.add_argument("--time-signature", metavar="N/D", help="the meter: 2/4, 3/4, 4/4, 6/8 or 12/8 (default: "
                     "automatic)")
    gen.add_argument("--lyrics-file", type=Path, help="lyrics (text, optional [Section] tags); none: a vocalise")
    gen.add_argument("--style", default="pop_bright", help="vocal style (see --list-styles; default pop_bright)")
    gen.add_argument("--target-lufs", type=float, default=-14.0, help="master loudness (default -14)")
    gen.add_argument("--checkpoint", type=Path, help="melody model checkpoint (default: MELODY_CHECKPOINT or the "
                     "shipped one)")
    gen.add_argument("--list-styles", action="store_true", help="print the vocal styles and exit")
    gen.add_argument("--no-progress", action="store_true", help="no progress bar (logs instead)")
    return parser


# Codes that mean "our fault or the machine's", not the input's: exit status 1, not 2.
_NOT_INPUT = {"internal_error", "task_crashed", "task_out_of_memory", "output_not_writable"}


def _stage_work(stage: str):
    """The ``prepare`` of one pipeline stage, run inside the task process (see :func:`pipeline_task_types`)."""

    def prepare(request: TaskRequest, data_dir: Path):
        p = request.params

        def work(progress) -> dict[str, str]:
            # Imported here: the two services' code (torch, onnxruntime, ...) loads only in the task process.
            from tmik_bgm_conditional_melody_generation import config as melody_config
            from tmik_bgm_conditional_melody_generation.checkpoint import CheckpointError
            from tmik_bgm_conditional_melody_generation.generate import checkpoint_from_env, run_generation
            from tmik_make_vocal_mix.render import run_render
            from tmik_make_vocal_mix.styles import get_style

            out = Path(p["out"])
            try:
                if stage == "melody":
                    lyrics = parse_lyrics(read_lyrics_file(Path(p["lyrics_file"]))) if p.get("lyrics_file") else None
                    limits = melody_config.load()  # every stage reads one capped copy (<= 48 kHz, <= 2 channels)
                    background = write_working_copy(Path(p["input"]), Path(p["work"]) / "background.wav",
                                                    name=p["input"], min_seconds=limits.min_audio_seconds,
                                                    max_seconds=limits.max_audio_seconds).path
                    style = get_style(p["style"])
                    checkpoint = Path(p["checkpoint"]) if p.get("checkpoint") else checkpoint_from_env()
                    run_generation(background, out / "melody", sensitivity=p["sensitivity"],
                                   randomness=p["randomness"], seed=p["seed"], lyrics=lyrics,
                                   vocal_range=(style.low, style.high), checkpoint=checkpoint, progress=progress,
                                   tempo=p.get("tempo"), time_signature=p.get("time_signature"))
                    return {"background": str(background)}
                # The voice sings melody.json: the words and syllables the melody stage set (no lyrics again).
                result = run_render(Path(p["background"]), out / "melody" / "melody.json", out,
                                    style=p["style"], seed=p["seed"], target_lufs=p["target_lufs"], progress=progress)
                return {name: str(path) for name, path in result.outputs.items()}
            except CheckpointError as exc:
                raise CodedError("checkpoint_error", str(exc)) from None
            except OSError as exc:
                raise CodedError("output_not_writable", f"could not write to {out}: {exc.strerror or exc}") from None

        return work

    return prepare


def pipeline_task_types() -> dict[str, TaskType]:
    """The two stages as task types: what the CLI's task process runs (``factory`` of its :class:`TaskProcess`)."""
    return {stage: TaskType(stage, _stage_work(stage)) for stage in ("melody", "vocal")}


def generate(args: argparse.Namespace) -> int:
    from tmik_make_vocal_mix.styles import StyleError, get_style, list_styles

    if args.list_styles:
        for s in list_styles():
            print(f"{s['name']:14s} {s['vocal_range'][0]}-{s['vocal_range'][1]}  {s['description']}")
        return 0
    if args.input is None or args.out is None:
        print("error: give the background track and --out DIR (python -m app.cli generate IN.wav --out DIR)",
              file=sys.stderr)
        return 2
    for name, value in (("sensitivity", args.sensitivity), ("randomness", args.randomness)):
        if not 0.0 <= value <= 1.0:
            print(f"error: --{name} must be from 0 to 1, got {value:g}", file=sys.stderr)
            return 2
    try:
        tempo = tempo_override(args.tempo, "--tempo")
        time_signature = time_signature_override(args.time_signature, "--time-signature")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        style = get_style(args.style)
        if args.lyrics_file:
            parse_lyrics(read_lyrics_file(args.lyrics_file))  # refused here, before anything starts
    except (LyricsError, StyleError) as exc:
        print(f"error: {exc.message} [{exc.code}]", file=sys.stderr)
        return 2
    bar = tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {elapsed}<{remaining}", disable=args.no_progress,
               file=sys.stderr)

    def progress(stage: str):
        lo, hi = STAGE_SPANS[stage]

        def report(step: str, fraction: float) -> None:
            value = round(100 * (lo + (hi - lo) * min(max(fraction, 0.0), 1.0)))
            bar.set_description(f"{stage}: {step}"[:28].ljust(28))
            if value > bar.n:
                bar.update(value - bar.n)
            if args.no_progress:
                log.info("%3d%% %s: %s", value, stage, step)

        return report

    started = time.perf_counter()
    # The stages run in a task process of their own, as in the services: a crash there (a segfault,
    # the kernel's out-of-memory killer) is reported here, with the stage it happened in.
    params = {"input": str(args.input.resolve()), "out": str(args.out.resolve()), "sensitivity": args.sensitivity,
              "randomness": args.randomness, "seed": args.seed, "style": style.name, "target_lufs": args.target_lufs,
              "tempo": tempo, "time_signature": time_signature,
              "lyrics_file": str(args.lyrics_file.resolve()) if args.lyrics_file else None,
              "checkpoint": str(args.checkpoint.resolve()) if args.checkpoint else None}
    stage = "melody"
    with tempfile.TemporaryDirectory(prefix="tmik-cli-") as work:
        process = TaskProcess("app-cli", "app.cli:pipeline_task_types", Path(work),
                              warm_up="tmik_common.warmup:warm_all", memory_limit_bytes=task_memory_limit_bytes())
        try:
            process.start()
            if not process.wait_ready(900):
                raise TaskCrashed("task_crashed", "the pipeline's process could not start (see the messages above)")
            first = process.run("melody", {"job_id": "cli", "type": "melody", "input": {},
                                           "params": {**params, "work": work}},
                                progress=progress("melody"), cancelled=lambda: False)
            stage = "vocal"
            outputs = process.run("vocal", {"job_id": "cli", "type": "vocal", "input": {},
                                            "params": {**params, "background": first["background"]}},
                                  progress=progress("vocal"), cancelled=lambda: False)
        except (TaskFailed, TaskCrashed, TaskOutOfMemory) as exc:
            bar.close()
            print(f"error: the {stage} stage failed: {exc.message} [{exc.code}]", file=sys.stderr)
            return 1 if exc.code in _NOT_INPUT else 2
        except KeyboardInterrupt:
            bar.close()
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            process.stop(timeout=2.0)
    bar.close()
    q = json.loads((args.out / "qc.json").read_text(encoding="utf-8"))
    warnings = [str(w) for w in q.get("warnings", [])]
    print(f"{args.out}: done in {time.perf_counter() - started:.1f} s; style {q['style']}, pitch accuracy "
          f"{q['pitch_accuracy']}, {q['integrated_lufs']:.1f} LUFS, true peak {q['true_peak_dbtp']:.1f} dBTP; "
          f"{len(outputs) + 3} files" + (f"; warnings: {'; '.join(warnings)}" if warnings else ""), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "no_progress", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    return generate(args)


if __name__ == "__main__":
    sys.exit(main())
