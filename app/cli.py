"""The whole pipeline in one process, no servers: ``python -m app.cli generate IN.wav --out DIR``.

It calls the same functions the two services run (the melody service's ``run_generation`` and
the vocal-mix service's ``run_render``), with the same defaults, and shows one progress bar
across both stages. The melody goes to ``DIR/melody/`` (analysis.json, melody.mid, melody.json)
and the song to ``DIR/`` (mix.wav, mix.mp3, stems, exports, qc.json).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from tqdm import tqdm

from tmik_common.audio import AudioError
from tmik_common.lyrics import LyricsError, parse_lyrics, read_lyrics_file

log = logging.getLogger("app.cli")

STAGE_SPANS = {"melody": (0.0, 0.4), "vocal": (0.4, 1.0)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.cli",
                                     description="Background track in, finished song out, in this process.")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write, sing and mix a song over a background track",
                         epilog="Exit status: 0 on success, 2 when an input or option cannot be used.")
    gen.add_argument("input", type=Path, nargs="?", help="the background track (WAV, FLAC, MP3, OGG)")
    gen.add_argument("--out", type=Path, help="output folder (created; required)")
    gen.add_argument("--sensitivity", type=float, default=0.5, help="Beat Detection Sensitivity 0..1 (default 0.5)")
    gen.add_argument("--randomness", type=float, default=0.5, help="Creative Randomness 0..1 (default 0.5)")
    gen.add_argument("--seed", type=int, default=0, help="same seed, same song (default 0)")
    gen.add_argument("--lyrics-file", type=Path, help="lyrics (text, optional [Section] tags); none: a vocalise")
    gen.add_argument("--style", default="pop_bright", help="vocal style (see --list-styles; default pop_bright)")
    gen.add_argument("--target-lufs", type=float, default=-14.0, help="master loudness (default -14)")
    gen.add_argument("--checkpoint", type=Path, help="melody model checkpoint (default: MELODY_CHECKPOINT or the "
                     "shipped one)")
    gen.add_argument("--list-styles", action="store_true", help="print the vocal styles and exit")
    gen.add_argument("--no-progress", action="store_true", help="no progress bar (logs instead)")
    return parser


def generate(args: argparse.Namespace) -> int:
    # Imported here: the two services' code (torch, onnxruntime, ...) loads only for this command.
    from tmik_bgm_conditional_melody_generation.checkpoint import CheckpointError
    from tmik_bgm_conditional_melody_generation.generate import GenerationError, checkpoint_from_env, run_generation
    from tmik_make_vocal_mix.render import RenderError, run_render
    from tmik_make_vocal_mix.score import ScoreError
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
    try:
        style = get_style(args.style)
        lyrics = parse_lyrics(read_lyrics_file(args.lyrics_file)) if args.lyrics_file else None
        melody_dir = args.out / "melody"
        run_generation(args.input, melody_dir, sensitivity=args.sensitivity, randomness=args.randomness,
                       seed=args.seed, lyrics=lyrics, vocal_range=(style.low, style.high),
                       checkpoint=args.checkpoint or checkpoint_from_env(), progress=progress("melody"))
        result = run_render(args.input, melody_dir / "melody.mid", args.out, lyrics=lyrics, style=style.name,
                            seed=args.seed, target_lufs=args.target_lufs, progress=progress("vocal"))
    except (AudioError, LyricsError, GenerationError, RenderError, ScoreError, StyleError) as exc:
        bar.close()
        print(f"error: {exc.message} [{exc.code}]", file=sys.stderr)
        return 2
    except CheckpointError as exc:
        bar.close()
        print(f"error: {exc} [checkpoint_error]", file=sys.stderr)
        return 2
    except OSError as exc:
        bar.close()
        print(f"error: could not write to {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        bar.close()
        print("interrupted", file=sys.stderr)
        return 130
    bar.close()
    q = result.qc
    print(f"{args.out}: done in {time.perf_counter() - started:.1f} s; style {q['style']}, pitch accuracy "
          f"{q['pitch_accuracy']}, {q['integrated_lufs']:.1f} LUFS, true peak {q['true_peak_dbtp']:.1f} dBTP; "
          f"{len(result.outputs) + 3} files" + (f"; warnings: {'; '.join(result.warnings)}" if result.warnings else ""),
          file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "no_progress", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    return generate(args)


if __name__ == "__main__":
    sys.exit(main())
