"""``make bench``: how long melody generation takes for a 3-minute track (target: <= 8 s, 2 cores).

Run ``python -m tmik_bgm_conditional_melody_generation.evaluation.bench_melody [--runs N]
[--track WAV] [--cores 2] [--checkpoint PATH]``. It analyses the benchmark track of
:mod:`.bench_analysis` once (the analysis has its own benchmark), loads the checkpoint
(timed: a service pays it once at start), then times :func:`..melody.compose` ``--runs``
times (different seeds), without and with lyrics, and the whole ``generate`` (analysis +
melody + files) once.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .bench_analysis import bench_track, limit_cores

TARGET_SECONDS = 8.0
LYRICS = """[Verse]
I walked along the river in the morning light
The water sang a melody so bright
Every stone was shining like a star
I knew that I had travelled very far

[Chorus]
Sing it again, sing it again
All of the night until the rain
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print; exit status 0 either way (a measurement, not a test)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--track", type=Path, default=None)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--checkpoint", type=Path, default=None)
    args = parser.parse_args(argv)
    pinned = limit_cores(args.cores)
    import torch

    torch.set_num_threads(max(1, args.cores))
    from tmik_common.lyrics import parse_lyrics

    from .. import melody
    from ..analysis import analyze_file, warm_up
    from ..generate import run_generation

    track = args.track or bench_track()
    warm_up()
    analysis = analyze_file(track)
    t0 = time.perf_counter()
    model = melody.load_model(args.checkpoint)
    load_s = time.perf_counter() - t0
    melody.compose(analysis, seed=0, model=model)  # first call: torch's one-off setup
    plain, sung = [], []
    notes = 0
    lyrics = parse_lyrics(LYRICS)
    for i in range(args.runs):
        t = time.perf_counter()
        comp = melody.compose(analysis, seed=i + 1, model=model)
        plain.append(time.perf_counter() - t)
        notes = len(comp.song.notes)
        t = time.perf_counter()
        melody.compose(analysis, seed=i + 1, model=model, lyrics=lyrics)
        sung.append(time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        run_generation(track, out, seed=1, checkpoint=args.checkpoint)
        whole = time.perf_counter() - t
    print(f"melody generation benchmark: {track.name}, {analysis.duration:.0f} s, {analysis.tempo:.0f} BPM "
          f"{analysis.time_signature}; {pinned}; model {model.name} "
          f"({sum(p.numel() for p in model.denoiser.parameters()) / 1e6:.1f} M parameters)")
    print(f"  checkpoint load (once per process)  {load_s:6.2f} s")
    print(f"  compose, no lyrics   mean {np.mean(plain):6.2f} s  worst {max(plain):6.2f} s  ({notes} notes)")
    print(f"  compose, lyrics      mean {np.mean(sung):6.2f} s  worst {max(sung):6.2f} s")
    print(f"  generate (analysis + melody + files) {whole:6.2f} s")
    verdict = "met" if max(plain + sung) <= TARGET_SECONDS else "NOT met"
    print(f"  target <= {TARGET_SECONDS:.0f} s for the melody: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
