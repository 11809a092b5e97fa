"""``make bench``: how long the analysis takes on a 3-minute track (target: <= 5 s warm, 2 cores).

Run ``python -m tmik_bgm_conditional_melody_generation.evaluation.bench_analysis [--runs N]
[--track WAV] [--cores 2]``. Without ``--track`` it renders (once, then cached next to the
development set) a 3:00, 44.1 kHz stereo pop background from the development set's
generator. It then measures:

1. the one-off warm-up (:func:`~tmik_bgm_conditional_melody_generation.analysis.warm_up`) in a
   fresh Python process, with the import time, as a service pays it at start: once with
   an empty numba cache (a machine's first start) and once with numba's disk cache;
2. ``analyze_file`` on the track ``--runs`` times after warming up in this process, with
   the time of each stage (from one progress-callback stage to the next, ``load`` included).

By default the process is pinned to 2 CPU cores, the deployment target, when it has more.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from .devset import build_piece, cache_dir, cache_stamp, spec_by_id
from .render import render_midi

TARGET_SECONDS = 5.0
TRACK_SECONDS = 180.0
BENCH_BASE = "synth_pop_e_major"  # the spec whose generator makes the benchmark track


def limit_cores(cores: int) -> str:
    """Pin this process (and the threads it starts) to the first ``cores`` CPUs it may use."""
    if cores <= 0 or not hasattr(os, "sched_setaffinity"):
        return f"{os.cpu_count()} cores (not pinned)"
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) > cores:
        os.sched_setaffinity(0, allowed[:cores])
        return f"pinned to {cores} of {len(allowed)} cores"
    return f"{len(allowed)} cores"


def bench_track(seconds: float = TRACK_SECONDS, cache: Path | None = None) -> Path:
    """The benchmark WAV (stereo, 44.1 kHz, exactly ``seconds`` long), rendered if missing.

    It is the development set's pop background (tempo, progression, drums) made long
    enough; like the set, it is re-rendered when the generator's code changes.
    """
    cache = cache or cache_dir()
    name = f"bench_{int(seconds)}s"
    wav, stamp = cache / f"{name}.wav", cache / f"{name}.stamp"
    spec = replace(spec_by_id(BENCH_BASE), id=name, seconds=seconds, drift="none")
    pm, truth = build_piece(spec)
    if wav.is_file() and stamp.is_file() and stamp.read_text().strip() == cache_stamp(truth):
        return wav
    render_midi(pm, wav, duration=seconds)
    stamp.write_text(cache_stamp(truth) + "\n")
    return wav


def stage_times(events: Sequence[tuple[str, float]], start: float, end: float) -> list[tuple[str, float]]:
    """Seconds per stage from (stage, time) progress events.

    A stage runs from the first event with its name until the next stage's first event;
    repeated reports of one stage (fractions) do not split it. Time before the first
    event is ``(setup)``; ``done`` ends the last stage.
    """
    marks: list[tuple[str, float]] = []
    for name, t in events:
        if not marks or marks[-1][0] != name:
            marks.append((name, t))
    out: list[tuple[str, float]] = []
    if marks and marks[0][1] - start > 0.005:
        out.append(("(setup)", marks[0][1] - start))
    for i, (name, t) in enumerate(marks):
        if name == "done":
            continue
        nxt = marks[i + 1][1] if i + 1 < len(marks) else end
        out.append((name, nxt - t))
    return out


def timed_run(path: Path) -> tuple[float, list[tuple[str, float]]]:
    """One ``analyze_file`` call: total seconds and seconds per stage."""
    from ..analysis import analyze_file

    events: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    analyze_file(path, progress=lambda stage, frac: events.append((stage, time.perf_counter())))
    t1 = time.perf_counter()
    return t1 - t0, stage_times(events, t0, t1)


WARM_UP_SNIPPET = (
    "import json, time; t0 = time.perf_counter(); "
    "from tmik_bgm_conditional_melody_generation.analysis import warm_up; "
    "t1 = time.perf_counter(); s = warm_up(); "
    "print(json.dumps({'import': t1 - t0, 'warm_up': s, 'total': time.perf_counter() - t0}))"
)


def fresh_warm_up(cold: bool = False) -> dict:
    """Import + warm_up() seconds in a new interpreter (it inherits this one's pinning).

    ``cold`` gives it an empty numba cache folder, so every jitted function compiles, as
    on a machine's very first start; otherwise numba's on-disk cache is used as usual.
    """
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryDirectory(prefix="numba-cold-") as empty:
        if cold:
            env["NUMBA_CACHE_DIR"] = empty
        proc = subprocess.run([sys.executable, "-c", WARM_UP_SNIPPET], capture_output=True,
                              text=True, env=env, cwd=root, timeout=900, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"warm-up process failed: {proc.stderr.strip()[-800:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def stage_table(runs: Sequence[tuple[float, list[tuple[str, float]]]]) -> str:
    """Stages as rows, runs as columns, with the mean."""
    order: list[str] = []
    for _, stages in runs:
        for name, _ in stages:
            if name not in order:
                order.append(name)
    head = f"{'stage':12s}" + "".join(f"{'run ' + str(i + 1):>9s}" for i in range(len(runs))) + f"{'mean':>9s}"
    lines = [head, "-" * len(head)]
    for name in order:
        vals = [sum(s for n, s in stages if n == name) for _, stages in runs]
        lines.append(f"{name:12s}" + "".join(f"{v:9.2f}" for v in vals) + f"{np.mean(vals):9.2f}")
    totals = [t for t, _ in runs]
    lines.append("-" * len(head))
    lines.append(f"{'total':12s}" + "".join(f"{v:9.2f}" for v in totals) + f"{np.mean(totals):9.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print; exit status 0 either way (it is a measurement, not a test)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="warm analyze_file runs (default 3)")
    parser.add_argument("--track", type=Path, help="analyse this file instead of the 3-minute track")
    parser.add_argument("--cores", type=int, default=2, help="pin to this many cores (0: no pinning)")
    parser.add_argument("--no-fresh", action="store_true", help="skip the fresh-process warm-up")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the figures to this file")
    args = parser.parse_args(argv)

    cpu = limit_cores(args.cores)
    track = args.track or bench_track()
    import soundfile as sf

    info = sf.info(str(track))
    print(f"track: {track} ({info.duration:.1f} s, {info.samplerate} Hz, {info.channels} ch); {cpu}")

    fresh = {}
    if not args.no_fresh:
        for label, cold in (("cold (empty numba cache)", True), ("fresh process", False)):
            f = fresh[label] = fresh_warm_up(cold)
            print(f"one-off cost, {label}: import {f['import']:.2f} s + warm_up() "
                  f"{f['warm_up']:.2f} s = {f['total']:.2f} s")
    from ..analysis import warm_up

    here = warm_up()
    print(f"warm_up() in this process: {here:.2f} s")

    runs = [timed_run(track) for _ in range(max(1, args.runs))]
    print()
    print(stage_table(runs))
    mean = float(np.mean([t for t, _ in runs]))
    worst = float(max(t for t, _ in runs))
    verdict = "PASS" if worst <= TARGET_SECONDS else "over"
    print(f"\nwarm analyze_file on {info.duration / 60:.1f} min: mean {mean:.2f} s, worst {worst:.2f} s; "
          f"target <= {TARGET_SECONDS:.0f} s warm on 2 cores: {verdict}")
    if args.json:
        args.json.write_text(json.dumps({
            "track": str(track), "cpu": cpu, "fresh_warm_up": fresh, "warm_up_here": here,
            "runs": [{"total": t, "stages": dict(s)} for t, s in runs], "mean": mean, "worst": worst,
            "target": TARGET_SECONDS}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
