"""``make bench``: how long a 3-minute song's render takes with its takes (target: <= 20 s, 2 cores).

Run ``python -m tmik_make_vocal_mix.evaluation.bench_vocal [--runs N] [--track WAV] [--cores 2]
[--styles pop_bright,choir] [--takes 3]``. It takes the 3-minute benchmark track of
:func:`~tmik_bgm_conditional_melody_generation.evaluation.bench_analysis.bench_track`, writes a
melody for it once with the melody service (melody.json, as the job manager hands it on: the
default style's range, the benchmark lyrics of
:mod:`~tmik_bgm_conditional_melody_generation.evaluation.bench_melody`), renders it once to warm
up (model loading, numba, FFT plans, LibreSVIP's plugins, the recogniser: what a service task
process pays once) and then times :func:`..render.run_render` ``--runs`` times per style, stage
by stage (``RenderResult.seconds``): load; sing (every take) and check (each take's phrase pitch
and word checks), also per take; mix (the chosen take, with the MP3 encodes left at the end);
takes (the other takes' listening mixes and every take's files); export; qc. By default one style
per engine path is measured: the neural voice alone (``pop_bright``, the default), doubled
(``choir``) and re-sung by WORLD (``soft_breathy``; ``low_warm``, sung an octave up and moved back).
The end-to-end budget is 30 s for upload to finished mix: the melody (about 7 s) and the job's
overhead (about 2 s) leave the render about 20 s.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tmik_bgm_conditional_melody_generation.evaluation.bench_analysis import bench_track, limit_cores
from tmik_bgm_conditional_melody_generation.evaluation.bench_melody import LYRICS

from ..styles import DEFAULT_STYLE, STYLES

TARGET_SECONDS = 20.0
STAGE_NAMES = ("load", "sing", "check", "mix", "takes", "export", "qc")
BENCH_STYLES = (DEFAULT_STYLE, "choir", "soft_breathy", "low_warm")  # every engine path render.sing takes


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print; exit status 0 either way (a measurement, not a test)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--track", type=Path, default=None)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--styles", default=",".join(BENCH_STYLES))
    parser.add_argument("--takes", type=int, default=3)
    args = parser.parse_args(argv)
    pinned = limit_cores(args.cores)
    import torch

    torch.set_num_threads(max(1, args.cores))
    from tmik_bgm_conditional_melody_generation.generate import run_generation
    from tmik_common.lyrics import parse_lyrics

    from .. import export, qc
    from ..engines.world import start_workers
    from ..expression_metrics import warm_up as expression_warm_up
    from ..intelligibility import load_recogniser
    from ..render import run_render

    styles = [s for s in args.styles.split(",") if s]
    unknown = [s for s in styles if s not in STYLES]
    if unknown:
        parser.error(f"unknown style(s) {', '.join(unknown)}; choose from {', '.join(STYLES)}")
    track = args.track or bench_track()
    lyrics = parse_lyrics(LYRICS)
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-vocal-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        default = STYLES[DEFAULT_STYLE]  # choir has the same range
        analysis, comp = run_generation(track, work / "melody", lyrics=lyrics, seed=1,
                                        vocal_range=(default.low, default.high))
        melody_s = time.perf_counter() - t
        melody = work / "melody" / "melody.json"
        t = time.perf_counter()
        qc.warm_up()
        expression_warm_up()
        export.load_converters()
        load_recogniser()
        start_workers()  # the WORLD engine's worker processes, which a running service keeps
        run_render(track, melody, work / "warm", style=styles[0], seed=0, takes=1)
        warm_s = time.perf_counter() - t
        for style in styles:
            results[style] = []
            for i in range(max(1, args.runs)):
                t, c = time.perf_counter(), os.times()
                res = run_render(track, melody, work / f"{style}_{i}", style=style, seed=i, takes=args.takes)
                total, c2 = time.perf_counter() - t, os.times()
                row = {k: float(v) for k, v in res.seconds.items()}
                row["total"] = total
                # CPU seconds of this process and its encoders (not the WORLD workers): on a loaded machine
                # cpu / cores is the wall time the render would take alone
                row["cpu"] = sum(c2[k] - c[k] for k in range(4))
                row["wer"] = res.qc.get("word_error_rate") or float("nan")
                row["pitch"] = res.qc.get("pitch_accuracy") or float("nan")
                row["chosen"] = res.qc.get("take", 1)
                results[style].append(row)
    print(f"vocal render benchmark: {track.name}, {analysis.duration:.0f} s, {analysis.tempo:.0f} BPM; "
          f"{len(comp.song.notes)} notes; {args.takes} take(s); {pinned}")
    print(f"  melody (run_generation, once, not timed below) {melody_s:6.2f} s; warm-up (what a service task "
          f"process pays once) {warm_s:6.2f} s")
    print(f"  {'style':12s} " + " ".join(f"{n:>6s}" for n in STAGE_NAMES)
          + f" {'total':>7s} {'cpu':>6s}   per take sing/check (s)   chosen WER pitch   "
            f"(mean of {max(1, args.runs)} run(s))")
    verdicts = []
    for style, runs in results.items():
        mean = {k: float(np.mean([r.get(k, 0.0) for r in runs]))
                for k in (*STAGE_NAMES, "total", "cpu", "wer", "pitch")}
        per_take = " ".join(
            f"{np.mean([r.get(f'take{n}_sing', 0.0) for r in runs]):.1f}/"
            f"{np.mean([r.get(f'take{n}_check', 0.0) for r in runs]):.1f}" for n in range(1, args.takes + 1))
        worst = max(r["total"] for r in runs)
        verdicts.append(worst <= TARGET_SECONDS)
        print(f"  {style:12s} " + " ".join(f"{mean[n]:6.2f}" for n in STAGE_NAMES) + f" {mean['total']:7.2f} "
              f"{mean['cpu']:6.1f}   "
              f"{per_take:24s}  {runs[-1]['chosen']:>6.0f} {mean['wer']:.3f} {mean['pitch']:.3f}   worst {worst:.2f}")
    per_style = ", ".join(f"{s} {'met' if v else 'NOT met'}" for s, v in zip(results, verdicts, strict=True))
    print(f"  target: the render with {args.takes} takes <= {TARGET_SECONDS:.0f} s: "
          f"{'met' if all(verdicts) else 'NOT met'} ({per_style})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
