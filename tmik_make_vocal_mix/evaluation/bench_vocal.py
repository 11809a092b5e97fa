"""``make bench``: how long singing and mixing take for a 3-minute song (target: <= 10 s, 2 cores).

Run ``python -m tmik_make_vocal_mix.evaluation.bench_vocal [--runs N] [--track WAV] [--cores 2]
[--styles pop_bright,choir]``. It takes the 3-minute benchmark track of
:func:`~tmik_bgm_conditional_melody_generation.evaluation.bench_analysis.bench_track`, writes a
melody for it once with the melody service (the default style's range, the benchmark lyrics of
:mod:`~tmik_bgm_conditional_melody_generation.evaluation.bench_melody`), renders it once to warm
up (model loading, numba, FFT plans) and then times :func:`..render.run_render` ``--runs`` times
per style, stage by stage (``RenderResult.seconds``: load, sing, mix, export, qc). By default one
style per engine path is measured: the neural voice alone (``pop_bright``, the default), doubled
(``choir``) and re-sung by WORLD (``soft_breathy``; ``low_warm``, sung an octave up and moved back).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tmik_bgm_conditional_melody_generation.evaluation.bench_analysis import bench_track, limit_cores
from tmik_bgm_conditional_melody_generation.evaluation.bench_melody import LYRICS

from ..styles import DEFAULT_STYLE, STYLES

TARGET_SECONDS = 10.0
STAGE_NAMES = ("load", "sing", "mix", "export", "qc")
BENCH_STYLES = (DEFAULT_STYLE, "choir", "soft_breathy", "low_warm")  # every engine path render.sing takes


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print; exit status 0 either way (a measurement, not a test)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--track", type=Path, default=None)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--styles", default=",".join(BENCH_STYLES))
    args = parser.parse_args(argv)
    pinned = limit_cores(args.cores)
    import torch

    torch.set_num_threads(max(1, args.cores))
    from tmik_bgm_conditional_melody_generation.generate import run_generation
    from tmik_common.lyrics import parse_lyrics

    from ..engines.world import start_workers
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
        melody = work / "melody" / "melody.mid"
        t = time.perf_counter()
        run_render(track, melody, work / "warm", lyrics=lyrics, style=styles[0], seed=0)
        start_workers()  # the WORLD engine's worker processes, which a running service keeps
        warm_s = time.perf_counter() - t
        for style in styles:
            results[style] = []
            for i in range(max(1, args.runs)):
                t = time.perf_counter()
                res = run_render(track, melody, work / f"{style}_{i}", lyrics=lyrics, style=style, seed=i)
                total = time.perf_counter() - t
                results[style].append({**{k: float(res.seconds.get(k, 0.0)) for k in STAGE_NAMES}, "total": total})
    print(f"vocal render benchmark: {track.name}, {analysis.duration:.0f} s, {analysis.tempo:.0f} BPM; "
          f"{len(comp.song.notes)} notes; {pinned}")
    print(f"  melody (run_generation, once, not timed below) {melody_s:6.2f} s; first render (warm-up, "
          f"{styles[0]}) {warm_s:6.2f} s")
    print(f"  {'style':12s} " + " ".join(f"{n:>7s}" for n in STAGE_NAMES)
          + f" {'sing+mix':>9s} {'total':>7s}   (mean of {max(1, args.runs)} run(s), seconds)")
    verdicts = []
    for style, runs in results.items():
        mean = {k: float(np.mean([r[k] for r in runs])) for k in (*STAGE_NAMES, "total")}
        worst_sm = max(r["sing"] + r["mix"] for r in runs)
        verdicts.append(worst_sm <= TARGET_SECONDS)
        print(f"  {style:12s} " + " ".join(f"{mean[n]:7.2f}" for n in STAGE_NAMES)
              + f" {mean['sing'] + mean['mix']:9.2f} {mean['total']:7.2f}   worst sing+mix {worst_sm:.2f}")
    per_style = ", ".join(f"{s} {'met' if v else 'NOT met'}" for s, v in zip(results, verdicts, strict=True))
    print(f"  target: singing + mixing <= {TARGET_SECONDS:.0f} s: {'met' if all(verdicts) else 'NOT met'} "
          f"({per_style})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
