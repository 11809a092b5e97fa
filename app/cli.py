"""The whole pipeline in one process, no servers: ``python -m app.cli generate IN.wav --out DIR``.

It calls the same functions the two services run (the melody service's ``run_generation`` and
the vocal-mix service's ``run_render``), with the same defaults, and shows one progress bar
across both stages. As in the services, the stages run in a task process of their own, so a
crash there (a segfault, the out-of-memory killer) ends the command with a message naming the
stage and an exit status of 1, never silently. The melody goes to ``DIR/melody/`` (analysis.json, melody.mid,
melody.json, and background.wav: the working copy of the track every stage read) and the song to ``DIR/``
(mix.wav, mix.mp3, stems, exports, qc.json; every take as take<n>_vocal.wav and take<n>_mix.mp3, and
takes.json: which take the checks chose, and why).

``python -m app.cli take DIR N`` makes take N of that folder the song (the service's ``select_take``):
take N's vocal is remixed over the kept background, nothing is sung again.

``python -m app.cli restyle DIR --style NAME --out DIR2`` makes a new version of that song that keeps its
melody: DIR/melody/ is copied to DIR2/melody/ unchanged and only the vocal stage runs, in the new style (and
loudness), into DIR2 (the REST API's ``POST /api/jobs/<id>/edits`` with kind restyle does the same for a job).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
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

STAGE_SPANS = {"melody": (0.0, 0.4), "vocal": (0.4, 1.0), "take": (0.0, 1.0)}
MIN_TAKES, MAX_TAKES = 1, 5
BACKGROUND = "background.wav"  # DIR/melody/background.wav: the working copy, kept for ``take``
# What ``restyle`` keeps of a song folder: its melody and the working copy it was written over.
MELODY_FILES = ("melody.json", "melody.mid", "analysis.json", BACKGROUND)


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
    gen.add_argument("--takes", type=int, help=f"how many takes to sing, {MIN_TAKES}..{MAX_TAKES}: the checks make "
                     "the best one the song, all are kept (default: the vocal service's, TAKES or 3)")
    gen.add_argument("--checkpoint", type=Path, help="melody model checkpoint (default: MELODY_CHECKPOINT or the "
                     "shipped one)")
    gen.add_argument("--list-styles", action="store_true", help="print the vocal styles and exit")
    gen.add_argument("--no-progress", action="store_true", help="no progress bar (logs instead)")
    take = sub.add_parser("take", help="make another take of a generated song the result (nothing is sung again)",
                          epilog="Exit status: 0 on success, 2 when the folder or the take cannot be used, 1 when "
                          "the remix crashed or could not write its files.")
    take.add_argument("out", type=Path, help="the output folder of an earlier 'generate'")
    take.add_argument("take", type=int, help="the take's number (takes.json lists them)")
    take.add_argument("--style", help="vocal style of the mix (default: the one the song was sung in)")
    take.add_argument("--target-lufs", type=float, help="master loudness (default: the song's)")
    take.add_argument("--no-progress", action="store_true", help="no progress bar (logs instead)")
    restyle = sub.add_parser("restyle", help="a new version of a generated song: the same melody sung in another "
                             "style (only the vocal stage runs)",
                             epilog="Exit status: 0 on success, 2 when the folder or an option cannot be used, 1 "
                             "when the vocal stage crashed or could not write its files.")
    restyle.add_argument("song", type=Path, help="the output folder of an earlier 'generate' (its melody/ is kept)")
    restyle.add_argument("--style", required=True, help="the new vocal style (see generate --list-styles)")
    restyle.add_argument("--target-lufs", type=float, help="master loudness (default: the song's)")
    restyle.add_argument("--out", type=Path, required=True, help="the new version's folder (created; not the song's)")
    restyle.add_argument("--no-progress", action="store_true", help="no progress bar (logs instead)")
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
            from tmik_make_vocal_mix import render
            from tmik_make_vocal_mix.styles import get_style

            out = Path(p["out"])
            try:
                if stage == "take":  # take N's vocal remixed over the kept background: what select_take does
                    result = render.select_take(Path(p["background"]), out / "melody" / "melody.json", out,
                                                p["take"], style=p["style"], target_lufs=p["target_lufs"],
                                                progress=progress)
                    return {name: str(path) for name, path in result.outputs.items()}
                if stage == "melody":
                    lyrics = parse_lyrics(read_lyrics_file(Path(p["lyrics_file"]))) if p.get("lyrics_file") else None
                    limits = melody_config.load()  # every stage reads one capped copy (<= 48 kHz, <= 2 channels)
                    # Kept beside the melody: ``take`` remixes another take over it later.
                    (out / "melody").mkdir(parents=True, exist_ok=True)
                    background = write_working_copy(Path(p["input"]), out / "melody" / BACKGROUND,
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
                takes = {"takes": p["takes"]} if p.get("takes") is not None else {}  # absent: the service default
                result = render.run_render(Path(p["background"]), out / "melody" / "melody.json", out,
                                           style=p["style"], seed=p["seed"], target_lufs=p["target_lufs"],
                                           progress=progress, **takes)
                return {name: str(path) for name, path in result.outputs.items()}
            except CheckpointError as exc:
                raise CodedError("checkpoint_error", str(exc)) from None
            except OSError as exc:
                raise CodedError("output_not_writable", f"could not write to {out}: {exc.strerror or exc}") from None

        return work

    return prepare


def pipeline_task_types() -> dict[str, TaskType]:
    """The stages as task types: what the CLI's task process runs (``factory`` of its :class:`TaskProcess`):
    melody and vocal (``generate``), take (``take``)."""
    return {stage: TaskType(stage, _stage_work(stage)) for stage in ("melody", "vocal", "take")}


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
    if args.takes is not None and not MIN_TAKES <= args.takes <= MAX_TAKES:
        print(f"error: --takes must be from {MIN_TAKES} to {MAX_TAKES}, got {args.takes}", file=sys.stderr)
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
    started = time.perf_counter()
    params = {"input": str(args.input.resolve()), "out": str(args.out.resolve()), "sensitivity": args.sensitivity,
              "randomness": args.randomness, "seed": args.seed, "style": style.name, "target_lufs": args.target_lufs,
              "tempo": tempo, "time_signature": time_signature, "takes": args.takes,
              "lyrics_file": str(args.lyrics_file.resolve()) if args.lyrics_file else None,
              "checkpoint": str(args.checkpoint.resolve()) if args.checkpoint else None}
    outputs = _run_stages([("melody", params), ("vocal", params)], args.no_progress)
    if isinstance(outputs, int):
        return outputs
    q = json.loads((args.out / "qc.json").read_text(encoding="utf-8"))
    warnings = [str(w) for w in q.get("warnings", [])]
    print(f"{args.out}: done in {time.perf_counter() - started:.1f} s; style {q['style']}, pitch accuracy "
          f"{q['pitch_accuracy']}, {q['integrated_lufs']:.1f} LUFS, true peak {q['true_peak_dbtp']:.1f} dBTP; "
          f"{len(outputs) + 4} files{_takes_line(args.out)}"
          + (f"; warnings: {'; '.join(warnings)}" if warnings else ""), file=sys.stderr)
    return 0


def _takes_line(out: Path) -> str:
    """The takes of a song folder in a few words (empty when it has no takes.json)."""
    try:
        record = json.loads((out / "takes.json").read_text(encoding="utf-8"))
        return (f"; take {record['chosen']} of {len(record['takes'])} chosen by {record.get('chosen_by', 'checks')}"
                f" ({record.get('reason', '')}); other takes: python -m app.cli take {out} N")
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _run_stages(stages: list[tuple[str, dict]], quiet: bool) -> dict[str, str] | int:
    """Run the stages one after the other in a task process of their own, as in the services: a crash
    there (a segfault, the kernel's out-of-memory killer) is reported here, with the stage it happened in.
    Each stage gets the outputs of the one before in its params. The last stage's outputs, or the exit
    status when one failed (its message printed)."""
    bar = tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {elapsed}<{remaining}", disable=quiet,
               file=sys.stderr)

    def progress(stage: str):
        lo, hi = STAGE_SPANS[stage]

        def report(step: str, fraction: float) -> None:
            value = round(100 * (lo + (hi - lo) * min(max(fraction, 0.0), 1.0)))
            bar.set_description(f"{stage}: {step}"[:28].ljust(28))
            if value > bar.n:
                bar.update(value - bar.n)
            if quiet:
                log.info("%3d%% %s: %s", value, stage, step)

        return report

    stage, outputs = stages[0][0], {}
    with tempfile.TemporaryDirectory(prefix="tmik-cli-") as work:
        process = TaskProcess("app-cli", "app.cli:pipeline_task_types", Path(work),
                              warm_up="tmik_common.warmup:warm_all", memory_limit_bytes=task_memory_limit_bytes())
        try:
            process.start()
            if not process.wait_ready(900):
                raise TaskCrashed("task_crashed", "the pipeline's process could not start (see the messages above)")
            for stage, params in stages:
                outputs = process.run(stage, {"job_id": "cli", "type": stage, "input": {},
                                              "params": {**params, **outputs}},
                                      progress=progress(stage), cancelled=lambda: False)
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
    return outputs


def take(args: argparse.Namespace) -> int:
    """Make take ``args.take`` of the song folder ``args.out`` its result."""
    out = args.out
    try:
        record = json.loads((out / "takes.json").read_text(encoding="utf-8"))
        numbers = [int(t["take"]) for t in record["takes"]]
        before = record.get("chosen")
    except FileNotFoundError:
        print(f"error: {out} has no takes.json; give the folder of a song made by 'python -m app.cli generate'",
              file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: cannot read {out / 'takes.json'}: {exc}", file=sys.stderr)
        return 2
    if args.take not in numbers:
        print(f"error: {out} has no take {args.take}; its takes are {', '.join(map(str, numbers))}", file=sys.stderr)
        return 2
    background = out / "melody" / BACKGROUND
    if not background.is_file() or not (out / "melody" / "melody.json").is_file():
        print(f"error: {out} has no melody/{BACKGROUND} and melody/melody.json to remix the take over; generate "
              "the song again", file=sys.stderr)
        return 2
    try:
        qc_before = json.loads((out / "qc.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        qc_before = {}
    style = args.style or qc_before.get("style") or "pop_bright"
    lufs = args.target_lufs if args.target_lufs is not None else float(qc_before.get("target_lufs", -14.0))
    started = time.perf_counter()
    params = {"out": str(out.resolve()), "background": str(background.resolve()), "take": args.take,
              "style": style, "target_lufs": lufs}
    outputs = _run_stages([("take", params)], args.no_progress)
    if isinstance(outputs, int):
        return outputs
    q = json.loads((out / "qc.json").read_text(encoding="utf-8"))
    print(f"{out}: take {args.take} is the song now (it was take {before}); done in "
          f"{time.perf_counter() - started:.1f} s; pitch accuracy {q.get('pitch_accuracy')}, word error rate "
          f"{q.get('word_error_rate')}, {float(q.get('integrated_lufs', float('nan'))):.1f} LUFS", file=sys.stderr)
    return 0


def restyle(args: argparse.Namespace) -> int:
    """A new version of the song folder ``args.song`` in ``args.out``: its melody copied unchanged, sung again
    in ``args.style`` with the song's seed and number of takes (from its takes.json)."""
    from tmik_make_vocal_mix.styles import StyleError, get_style

    song, out = args.song, args.out
    missing = [name for name in MELODY_FILES if not (song / "melody" / name).is_file()]
    if missing:
        print(f"error: {song} has no melody/{', melody/'.join(missing)}; give the folder of a song made by "
              "'python -m app.cli generate'", file=sys.stderr)
        return 2
    if out.resolve() == song.resolve():
        print("error: --out must be a new folder: the song is kept as it is", file=sys.stderr)
        return 2
    if args.target_lufs is not None and not -30.0 <= args.target_lufs <= -6.0:
        print(f"error: --target-lufs must be from -30 to -6, got {args.target_lufs:g}", file=sys.stderr)
        return 2
    try:
        style = get_style(args.style)
    except StyleError as exc:
        print(f"error: {exc.message} [{exc.code}]", file=sys.stderr)
        return 2
    try:
        qc_before = json.loads((song / "qc.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        qc_before = {}
    try:  # take 1 is sung with the song's seed; the song's number of takes is kept
        record = json.loads((song / "takes.json").read_text(encoding="utf-8"))
        seed, count = int(record["takes"][0]["seed"]), len(record["takes"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        seed, count = int(qc_before.get("seed", 0) or 0), None
    lufs = args.target_lufs if args.target_lufs is not None else float(qc_before.get("target_lufs", -14.0))
    (out / "melody").mkdir(parents=True, exist_ok=True)
    for name in MELODY_FILES:
        shutil.copyfile(song / "melody" / name, out / "melody" / name)
    started = time.perf_counter()
    params = {"out": str(out.resolve()), "background": str((out / "melody" / BACKGROUND).resolve()),
              "style": style.name, "seed": seed, "target_lufs": lufs, "takes": count}
    outputs = _run_stages([("vocal", params)], args.no_progress)
    if isinstance(outputs, int):
        return outputs
    try:
        q = json.loads((out / "qc.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        q = {}
    print(f"{out}: the melody of {song} sung as {style.name} in {time.perf_counter() - started:.1f} s; pitch "
          f"accuracy {q.get('pitch_accuracy')}, {float(q.get('integrated_lufs', float('nan'))):.1f} LUFS; "
          f"{len(outputs)} files{_takes_line(out)}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "no_progress", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    commands = {"take": take, "restyle": restyle, "generate": generate}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
