"""``make eval``: analysis accuracy on each development set, ours against a naive librosa baseline.

Run ``python -m tmik_bgm_conditional_melody_generation.evaluation.eval_analysis
[--set NAME ...] [--only ID ...] [--no-baseline | --quick] [--json OUT]``. It renders whatever
is missing of the sets it evaluates, runs
:func:`tmik_bgm_conditional_melody_generation.analysis.analyze_file` and the baseline on every
piece, and prints mir_eval figures per piece and their means against the targets, one
report per set, then the means of all sets side by side. The sets (``--set``, default all):

* ``devset``: the classical/folk development set (:mod:`.devset`);
* ``pop-dev``: the contemporary set with drums (:mod:`.popset`), its development part: tune
  on this one;
* ``pop-held-out``: the contemporary set's held-out third: report, never tune;
* ``pop`` means both contemporary parts, ``all`` all three.

``--quick`` skips the baseline and prints only the per-piece tempo, meter, beat and downbeat
figures with the means, for fast iteration, e.g. ``--set pop-dev --quick``.

Figures (all mir_eval, beats and downbeats trimmed to t >= 5 s as mir_eval does):
beat F-measure (70 ms), CMLt and AMLt (continuity), downbeat F-measure (70 ms),
tempo (1 when within 4 % of the truth or of twice/half of it, and for 6/8 and 12/8 also of
three times/a third of it), strict tempo ``tempo=`` (1 only within 4 % of the truth itself:
the level a listener taps, no octave error), meter (1 when the time signature equals the
truth's; the baseline always says 4/4), key weighted score, chord root and majmin
(duration-weighted).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import popset
from .devset import PIECES, BuiltPiece, ensure_devset

log = logging.getLogger(__name__)

METRICS = ("beat_f", "cmlt", "amlt", "downbeat_f", "tempo", "tempo_strict", "meter", "key", "chord_root",
           "chord_majmin")
QUICK_METRICS = ("beat_f", "downbeat_f", "tempo", "tempo_strict", "meter")
SHORT = {"beat_f": "beatF", "cmlt": "CMLt", "amlt": "AMLt", "downbeat_f": "dbF", "tempo": "tempo",
         "tempo_strict": "tempo=", "meter": "meter", "key": "key", "chord_root": "root",
         "chord_majmin": "majmin"}
TARGETS = {"beat_f": 0.95, "downbeat_f": 0.85, "key": 0.90, "chord_majmin": 0.85, "tempo": 0.95}
# The contemporary set's targets (issue 13): the level a listener taps, the bar, the meter.
POP_TARGETS = {"beat_f": 0.90, "downbeat_f": 0.80, "tempo_strict": 0.95, "meter": 0.90,
               "key": 0.90, "chord_majmin": 0.85}
SETS = ("devset", "pop-dev", "pop-held-out")
SET_TITLES = {"devset": "classical/folk development set", "pop-dev": "contemporary set, development part",
              "pop-held-out": "contemporary set, held-out part (report only, do not tune on it)"}
SET_TARGETS = {"devset": TARGETS, "pop-dev": POP_TARGETS, "pop-held-out": POP_TARGETS}
SET_ALIASES = {"pop": ("pop-dev", "pop-held-out"), "all": SETS}
TEMPO_TOLERANCE = 0.04

# Krumhansl-Kessler key profiles (C major, C minor), for the baseline.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
PITCHES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


@dataclass
class Estimate:
    """What an analyser said about one piece (the fields the metrics use)."""

    tempo: float
    beats: list[float]
    downbeats: list[float]
    key: str
    chords: list[tuple[float, float, str]]
    seconds: float = 0.0
    error: str | None = None
    time_signature: str = ""


# --------------------------------------------------------------------------------------
# The naive baseline
# --------------------------------------------------------------------------------------


def krumhansl_key(chroma_mean: np.ndarray) -> str:
    """Key whose rotated Krumhansl-Kessler profile correlates best with a mean chroma."""
    best, name = -np.inf, "C major"
    for tonic in range(12):
        for profile, mode in ((KK_MAJOR, "major"), (KK_MINOR, "minor")):
            r = np.corrcoef(np.roll(profile, tonic), chroma_mean)[0, 1]
            if r > best:
                best, name = r, f"{PITCHES[tonic]} {mode}"
    return name


def template_chords(chroma: np.ndarray) -> list[str]:
    """Nearest (cosine) major/minor triad template per chroma column, as Harte labels."""
    templates, labels = [], []
    for root in range(12):
        for ivs, quality in (((0, 4, 7), "maj"), ((0, 3, 7), "min")):
            t = np.zeros(12)
            t[[(root + i) % 12 for i in ivs]] = 1.0
            templates.append(t / np.linalg.norm(t))
            labels.append(f"{PITCHES[root]}:{quality}")
    norms = np.linalg.norm(chroma, axis=0) + 1e-9
    best = np.argmax(np.stack(templates) @ (chroma / norms), axis=0)
    return [labels[i] if n > 1e-6 else "N" for i, n in zip(best, norms, strict=True)]


def baseline_analysis(path: Path) -> Estimate:
    """Naive librosa analysis: beat_track, every 4th beat a downbeat, Krumhansl key on the
    mean chroma_cqt, nearest major/minor template on beat-synchronous chroma."""
    import librosa

    t0 = time.perf_counter()
    y, sr = librosa.load(str(path), sr=22050, mono=True)
    duration = len(y) / sr
    tempo, beat_frames = librosa.beat.beat_track(y=y, sr=sr)
    beats = librosa.frames_to_time(beat_frames, sr=sr)
    chroma = librosa.feature.chroma_cqt(y=y, sr=sr)
    key = krumhansl_key(chroma.mean(axis=1))
    bounds = librosa.util.fix_frames(beat_frames, x_min=0, x_max=chroma.shape[1])
    sync = librosa.util.sync(chroma, bounds, aggregate=np.median)
    labels = template_chords(sync)
    times = list(librosa.frames_to_time(bounds, sr=sr))
    times[-1] = max(times[-1], duration)
    chords = [(float(a), float(b), lab) for a, b, lab in zip(times[:-1], times[1:], labels, strict=False)
              if b > a]
    return Estimate(float(np.atleast_1d(tempo)[0]), [float(b) for b in beats],
                    [float(b) for b in beats[::4]], key, chords, time.perf_counter() - t0,
                    time_signature="4/4")


def ours_analysis(path: Path) -> Estimate:
    """The project's analysis (whatever :func:`analyze_file` currently does)."""
    from ..analysis import analyze_file

    t0 = time.perf_counter()
    result = analyze_file(path)
    return Estimate(float(result.tempo), list(result.beats), list(result.downbeats), result.key,
                    [(float(s), float(e), str(lab)) for s, e, lab in result.chords],
                    time.perf_counter() - t0, time_signature=str(result.time_signature))


def run_safely(fn: Callable[[Path], Estimate], path: Path) -> Estimate:
    """Run an analyser; an exception becomes an empty estimate that scores zero."""
    t0 = time.perf_counter()
    try:
        return fn(path)
    except Exception as exc:  # one failing piece must not stop the evaluation
        log.exception("analysis of %s failed", path.name)
        return Estimate(0.0, [], [], "", [], time.perf_counter() - t0, f"{type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


def tempo_ok(estimated: float, truth: float, meter: str) -> float:
    """1.0 when the tempo is within 4 % of the truth or of an allowed metrical multiple."""
    factors = [1.0, 2.0, 0.5] + ([3.0, 1.0 / 3.0] if meter in ("6/8", "12/8") else [])
    if not estimated or not math.isfinite(estimated):
        return 0.0
    return float(any(abs(estimated - truth * f) <= TEMPO_TOLERANCE * truth * f for f in factors))


def tempo_strict(estimated: float, truth: float) -> float:
    """1.0 when the tempo is within 4 % of the truth itself (the tapped level; no octave errors)."""
    if not estimated or not math.isfinite(estimated):
        return 0.0
    return float(abs(estimated - truth) <= TEMPO_TOLERANCE * truth)


def meter_ok(estimated: str, truth: str) -> float:
    """1.0 when the estimated time signature is the truth's ("4/4" == "4/4")."""
    return float(estimated.strip() == truth.strip())


def beat_scores(ref: Sequence[float], est: Sequence[float]) -> dict[str, float]:
    """Beat F-measure, CMLt and AMLt after mir_eval's usual 5-second trim."""
    import mir_eval

    r = mir_eval.beat.trim_beats(np.asarray(ref, float))
    e = mir_eval.beat.trim_beats(np.asarray(sorted(est), float))
    if len(r) < 2 or len(e) < 2:
        return {"beat_f": 0.0, "cmlt": 0.0, "amlt": 0.0}
    _, cmlt, _, amlt = mir_eval.beat.continuity(r, e)
    return {"beat_f": float(mir_eval.beat.f_measure(r, e)), "cmlt": float(cmlt), "amlt": float(amlt)}


def downbeat_f(ref: Sequence[float], est: Sequence[float]) -> float:
    """F-measure (70 ms) of downbeats, trimmed like beats."""
    import mir_eval

    r = mir_eval.beat.trim_beats(np.asarray(ref, float))
    e = mir_eval.beat.trim_beats(np.asarray(sorted(est), float))
    if len(r) == 0 or len(e) == 0:
        return 0.0
    return float(mir_eval.beat.f_measure(r, e))


def key_score(ref: str, est: str) -> float:
    """mir_eval's weighted key score; an unreadable estimate scores 0."""
    import mir_eval

    try:
        return float(mir_eval.key.weighted_score(ref, est))
    except (ValueError, TypeError):
        return 0.0


def chord_scores(ref: Sequence[Sequence], est: Sequence[Sequence], duration: float) -> dict[str, float]:
    """Duration-weighted chord root and majmin accuracy over the truth's time span."""
    import mir_eval

    ref_int = np.array([[float(s), float(e)] for s, e, _ in ref])
    ref_lab = [str(lab) for _, _, lab in ref]
    est = [(float(s), float(e), str(lab)) for s, e, lab in est if float(e) > float(s)]
    if not est:
        est = [(0.0, duration, "N")]
    est_int = np.array([[s, e] for s, e, _ in est])
    est_lab = [lab for _, _, lab in est]
    try:
        scores = mir_eval.chord.evaluate(ref_int, ref_lab, est_int, est_lab)
    except (ValueError, mir_eval.chord.InvalidChordException) as exc:
        log.warning("chord evaluation failed: %s", exc)
        return {"chord_root": 0.0, "chord_majmin": 0.0}
    return {"chord_root": float(scores["root"]), "chord_majmin": float(scores["majmin"])}


def score_piece(truth: dict, est: Estimate) -> dict[str, float]:
    """All figures of one estimate against one truth."""
    out = beat_scores(truth["beats"], est.beats)
    out["downbeat_f"] = downbeat_f(truth["downbeats"], est.downbeats)
    out["tempo"] = tempo_ok(est.tempo, truth["tempo"], truth["meter"])
    out["tempo_strict"] = tempo_strict(est.tempo, truth["tempo"])
    out["meter"] = meter_ok(est.time_signature, truth["meter"])
    out["key"] = key_score(truth["key"], est.key)
    out.update(chord_scores(truth["chords"], est.chords, truth["duration"]))
    return out


def mean_scores(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over pieces."""
    return {m: float(np.mean([r[m] for r in rows])) if rows else float("nan") for m in METRICS}


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def _pair(a: float | None, b: float | None) -> str:
    fa = "  -  " if a is None else f"{a:4.2f}"
    fb = "" if b is None else f"/{b:4.2f}"
    return fa + fb


def piece_table(results: Sequence[dict], baseline: bool, metrics: Sequence[str] = METRICS) -> str:
    """Per-piece lines: each metric as ours/baseline, then our tempo and meter against the truth."""
    width = 10 if baseline else 7
    head = (f"{'piece':26s} {'meter':5s} " + "".join(f"{SHORT[m]:>{width}s}" for m in metrics)
            + "   ours s  ours tempo/truth  ours meter")
    lines = [head, "-" * len(head)]
    for r in results:
        cells = "".join(
            f"{_pair(r['ours'][m], r['baseline'][m] if baseline else None):>{width}s}" for m in metrics)
        est = r["estimates"]["ours"]
        said = f"{est['tempo']:6.1f}/{r['truth']['tempo']:6.1f}  {est['time_signature'] or '-':5s}"
        err = f"  ERROR {r['errors']['ours']}" if r["errors"].get("ours") else ""
        lines.append(f"{r['id']:26s} {r['meter']:5s} {cells} {r['seconds']['ours']:7.1f}  {said}{err}")
    return "\n".join(lines)


def mean_table(ours: dict[str, float], base: dict[str, float] | None, targets: dict[str, float] | None = None,
               metrics: Sequence[str] = METRICS) -> str:
    """Means against targets, marked PASS or below."""
    targets = TARGETS if targets is None else targets
    lines = [f"{'metric':14s} {'ours':>7s} {'baseline':>9s} {'target':>8s}  verdict",
             "-" * 50]
    for m in metrics:
        target = targets.get(m)
        verdict = "" if target is None else ("PASS" if ours[m] >= target else "below")
        b = f"{base[m]:9.3f}" if base else f"{'-':>9s}"
        t = f"{'>= ' + format(target, '.2f'):>8s}" if target is not None else f"{'':8s}"
        lines.append(f"{SHORT[m]:14s} {ours[m]:7.3f} {b} {t}  {verdict}")
    return "\n".join(lines)


def group_table(results: Sequence[dict], key: str, metrics: Sequence[str], baseline: bool) -> str:
    """Means of some metrics per group (meter, style, or how chord truth was made)."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(r[key], []).append(r)
    lines = []
    for name in sorted(groups):
        rows = groups[name]
        cells = "  ".join(
            f"{SHORT[m]} {np.mean([x['ours'][m] for x in rows]):.2f}"
            + (f"/{np.mean([x['baseline'][m] for x in rows]):.2f}" if baseline else "")
            for m in metrics)
        lines.append(f"  {name:11s} n={len(rows):2d}  {cells}")
    return "\n".join(lines)


def sets_table(means: dict[str, dict], metrics: Sequence[str] = METRICS) -> str:
    """One row per metric, one ours/baseline column per evaluated set."""
    names = list(means)
    width = 16
    lines = [f"{'metric':10s}" + "".join(f"{n:>{width}s}" for n in names),
             f"{'':10s}" + "".join(f"{'(n=' + str(means[n]['n']) + ')':>{width}s}" for n in names)]
    lines.append("-" * len(lines[0]))
    for m in metrics:
        cells = "".join(
            f"{_pair(means[n]['ours'][m], means[n]['baseline'][m] if means[n]['baseline'] else None):>{width}s}"
            for n in names)
        lines.append(f"{SHORT[m]:10s}{cells}")
    return "\n".join(lines)


def evaluate(pieces: Sequence[BuiltPiece], with_baseline: bool = True,
             on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Run both analysers on every piece; one result dictionary per piece."""
    results = []
    for p in pieces:
        truth = p.truth
        ours = run_safely(ours_analysis, p.wav)
        base = run_safely(baseline_analysis, p.wav) if with_baseline else None
        r = {
            "id": p.id, "meter": truth["meter"], "kind": truth["kind"], "style": truth.get("style", truth["kind"]),
            "chord_truth": truth["chord_truth"], "drift": truth["drift"], "drums": truth["drums"],
            "ours": score_piece(truth, ours),
            "baseline": score_piece(truth, base) if base else None,
            "estimates": {"ours": {"tempo": ours.tempo, "key": ours.key, "time_signature": ours.time_signature},
                          "baseline": {"tempo": base.tempo, "key": base.key,
                                       "time_signature": base.time_signature} if base else None},
            "truth": {"tempo": truth["tempo"], "key": truth["key"], "meter": truth["meter"]},
            "seconds": {"ours": ours.seconds, "baseline": base.seconds if base else None},
            "errors": {"ours": ours.error, "baseline": base.error if base else None},
        }
        results.append(r)
        if on_result:
            on_result(r)
    return results


def set_ids(name: str) -> list[str]:
    """Piece ids of one evaluation set, in its list order."""
    if name == "devset":
        return [s.id for s in PIECES]
    if name == "pop-dev":
        return popset.split_ids("dev")
    if name == "pop-held-out":
        return popset.split_ids("held-out")
    raise ValueError(f"unknown set {name!r}; known: {', '.join(SETS)}")


def load_set(name: str, ids: Sequence[str], workers: int | None = None) -> list[BuiltPiece]:
    """Render what is missing of ``ids`` (all in set ``name``) and return the pieces."""
    if name == "devset":
        return ensure_devset(list(ids), workers=workers)
    return popset.ensure_popset(list(ids), workers=workers)


def resolve_sets(names: Sequence[str]) -> list[str]:
    """Set names with the aliases ``pop`` and ``all`` expanded, in report order, once each."""
    wanted = {s for n in names for s in SET_ALIASES.get(n, (n,))}
    return [s for s in SETS if s in wanted]


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate and print the tables; 0 even when targets are missed (it is a measurement)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", dest="sets", nargs="+", default=["all"], metavar="NAME",
                        choices=[*SETS, *SET_ALIASES],
                        help=f"sets to evaluate: {', '.join([*SETS, *SET_ALIASES])} (default all)")
    parser.add_argument("--only", nargs="+", metavar="ID", help="evaluate only these pieces (of any set)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the librosa baseline")
    parser.add_argument("--quick", action="store_true",
                        help="no baseline; only tempo, meter, beat and downbeat figures")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every figure to this file")
    parser.add_argument("--workers", type=int, default=None, help="processes for rendering (default 2)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", module=r"mir_eval(\..*)?")
    sets = resolve_sets(args.sets)
    members = {name: set_ids(name) for name in sets}
    if args.only:
        known = {i for name in SETS for i in set_ids(name)}
        unknown = [i for i in args.only if i not in known]
        if unknown:
            parser.error(f"unknown piece id(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        members = {name: [i for i in ids if i in args.only] for name, ids in members.items()}
    members = {name: ids for name, ids in members.items() if ids}
    if not members:
        parser.error(f"none of the pieces given is in the set(s) {', '.join(sets)}")
    with_baseline = not (args.no_baseline or args.quick)
    metrics = QUICK_METRICS if args.quick else METRICS

    def progress(r: dict) -> None:
        o, est = r["ours"], r["estimates"]["ours"]
        print(f"  {r['id']:26s} beatF {o['beat_f']:.2f} dbF {o['downbeat_f']:.2f} "
              f"tempo {est['tempo']:6.1f} (truth {r['truth']['tempo']:6.1f}) meter {est['time_signature'] or '-':4s} "
              f"(truth {r['meter']:4s}) key {o['key']:.2f} majmin {o['chord_majmin']:.2f} ({r['seconds']['ours']:.1f} s)",
              flush=True)

    report: dict[str, dict] = {}
    for name, ids in members.items():
        targets = SET_TARGETS[name]
        print(f"\n=== {name}: {SET_TITLES[name]} ===", flush=True)
        t0 = time.perf_counter()
        pieces = load_set(name, ids, args.workers)
        t_render = time.perf_counter() - t0
        rebuilt = sum(p.rebuilt for p in pieces)
        print(f"{len(pieces)} pieces ready in {t_render:.1f} s ({rebuilt} rendered now)", flush=True)
        t1 = time.perf_counter()
        results = evaluate(pieces, with_baseline, progress)
        t_eval = time.perf_counter() - t1
        ours_mean = mean_scores([r["ours"] for r in results])
        base_mean = mean_scores([r["baseline"] for r in results]) if with_baseline else None

        print()
        print(f"Per piece, {name}" + (" (ours/baseline)" if with_baseline else "") + ":")
        print(piece_table(results, with_baseline, metrics))
        print()
        print("By meter:")
        print(group_table(results, "meter", ("beat_f", "downbeat_f", "tempo", "tempo_strict", "meter"),
                          with_baseline))
        if name == "devset":
            if not args.quick:
                print("By chord truth:")
                print(group_table(results, "chord_truth", ("chord_root", "chord_majmin", "key"), with_baseline))
        else:
            print("By style:")
            print(group_table(results, "style", ("beat_f", "downbeat_f", "tempo_strict", "meter"), with_baseline))
        ours_time = sum(r["seconds"]["ours"] for r in results)
        audio = sum(p.truth["duration"] for p in pieces)
        print(f"\nAnalysis time (ours): {ours_time:.1f} s for {audio / 60:.1f} min of audio; "
              f"whole evaluation {t_eval:.1f} s.")
        failed = [r["id"] for r in results if r["errors"]["ours"]]
        if failed:
            print(f"Our analysis FAILED on: {', '.join(failed)} (scored 0)")
        print(f"\nMean over {len(results)} pieces of {name}:")
        print(mean_table(ours_mean, base_mean, targets, metrics))
        report[name] = {"pieces": results, "n": len(results), "ours": ours_mean, "baseline": base_mean,
                        "targets": targets, "seconds": {"render": t_render, "evaluate": t_eval}}

    print("\n=== Means per set" + (" (ours/baseline)" if with_baseline else "") + " ===")
    print(sets_table(report, metrics))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"sets": report}, indent=1))
        print(f"\nWrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
