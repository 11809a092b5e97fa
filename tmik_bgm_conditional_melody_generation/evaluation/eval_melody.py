"""``make eval`` (second part): melody quality on the development set, ours against baselines and humans.

Run ``python -m tmik_bgm_conditional_melody_generation.evaluation.eval_melody [--pieces ID ...]
[--seeds N] [--no-model] [--json OUT]``. For every development piece (see :mod:`.devset`):

1. our analysis of its audio (:func:`..analysis.analyze_file`, cached in
   ``.cache/eval/analysis/<id>.json`` while the audio and the analysis code are unchanged);
2. the timeline and lead plan of that analysis (vocal range A3-E5, MIDI 57..76);
3. melodies: ours (:func:`..melody.compose`, seeds 0..N-1), the two baselines of
   :mod:`.baselines` (same seeds), and the human melody where the piece has one, read from
   the rendered MIDI: the tune of ``folk`` and ``symbols`` pieces, the soprano of the
   ``analysis`` pieces (Bach chorales); both are the first instrument devset writes. The
   top voice of ``score`` pieces is instrumental, not a song melody, and ``synthetic``
   pieces have no melody, so they have no human column. Human melodies are not
   transposed: their ``in_vocal_range`` shows how far real tunes leave a singer's range;
4. :func:`.melody_metrics.melody_metrics` of each against the piece's *true* chords, key
   and beats (sections come from our analysis: the truth has none).

It prints one table (rows: figures; columns: human mean over the pieces that have one, ours,
random-in-key, rule-based, the issue's target and ours' verdict), the chord-tone ratio per
kind of piece, and writes everything to ``.cache/eval/melody.json``. Without a trained
checkpoint (or with ``--no-model``) the "ours" column is left out and the rest still runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..analysis import Analysis
from ..constraints import build_plan
from ..getscore import Song
from ..timeline import Timeline, timeline_from_analysis
from .baselines import random_in_key, rule_based
from .devset import PIECES, REPO_ROOT, BuiltPiece, cache_dir, ensure_devset
from .melody_metrics import METRIC_NAMES, mean_metrics, melody_metrics

log = logging.getLogger(__name__)

VOCAL_RANGE = (57, 76)  # A3..E5
RANDOMNESS = 0.5
HUMAN_KINDS = ("folk", "symbols", "analysis")
SYSTEMS = ("human", "ours", "random_in_key", "rule_based")
COLUMN = {"human": "human", "ours": "ours", "random_in_key": "random", "rule_based": "rule"}
EVAL_DIR = REPO_ROOT / ".cache" / "eval"
ANALYSIS_CACHE = EVAL_DIR / "analysis"
PACKAGE_DIR = Path(__file__).resolve().parents[1]

# The targets: (lowest, highest) allowed value, None = unbounded.
TARGETS: dict[str, tuple[float | None, float | None]] = {
    "chord_tone_ratio": (0.70, None),
    "in_key_ratio": (0.95, None),
    "step_ratio": (0.60, 0.85),
    "mean_abs_interval": (None, 3.0),
    "onset_on_8th_grid": (0.90, None),
    "in_vocal_range": (1.0, None),
    "section_self_similarity": (0.50, None),  # "repeated sections recognisably repeated"
}
LABELS = {
    "n_notes": "notes", "chord_tone_ratio": "chord-tone ratio", "strong_beat_chord_tone": "chord tone on beats",
    "in_key_ratio": "in key", "range": "range (semitones)", "in_vocal_range": "inside A3-E5",
    "mean_abs_interval": "mean |interval|", "step_ratio": "step ratio", "leap_ratio": "leap ratio (>=3)",
    "large_leap_ratio": "large leaps (>7)", "repeated_ratio": "repeated notes", "notes_per_second": "notes / second",
    "onset_on_8th_grid": "onsets on 8th grid", "section_self_similarity": "section self-similarity",
    "section_repeat_shifted": "  same, +-2 bars shift",
}


# --------------------------------------------------------------------------------------
# Inputs: analysis (cached), human melody, notes in seconds
# --------------------------------------------------------------------------------------


def _analysis_code_digest() -> str:
    h = hashlib.sha256()
    for path in sorted((PACKAGE_DIR / "analysis").glob("*")):
        if path.suffix in (".py", ".npz"):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def cached_analysis(piece: BuiltPiece, refresh: bool = False, cache: Path | None = None) -> Analysis:
    """Our analysis of a piece's audio, reused while the audio and the analysis code are unchanged."""
    from ..analysis import analyze_file

    cache = cache or ANALYSIS_CACHE
    path = cache / f"{piece.id}.json"
    stamp_file = piece.wav.with_suffix(".stamp")
    audio_stamp = stamp_file.read_text().strip() if stamp_file.is_file() else str(piece.wav.stat().st_mtime)
    stamp = f"{audio_stamp}:{_analysis_code_digest()}"
    if path.is_file() and not refresh:
        try:
            data = json.loads(path.read_text())
            if data.get("stamp") == stamp:
                return Analysis.from_dict(data["analysis"])
        except (ValueError, KeyError, TypeError):
            pass
    result = analyze_file(piece.wav)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"stamp": stamp, "analysis": result.to_dict()}))
    tmp.replace(path)
    return result


def human_melody(piece_id: str, kind: str, midi_dir: Path | None = None) -> list[tuple[float, float, int]] | None:
    """The melody of a rendered dev piece, ``(start_s, end_s, pitch)``, monophonic; None where it has none.

    ``folk``/``symbols``: the tune; ``analysis`` (chorales): the soprano. Both are the first
    (non-drum) instrument of the MIDI file devset writes (its parts keep score order).
    """
    if kind not in HUMAN_KINDS:
        return None
    import pretty_midi

    path = (midi_dir or cache_dir()) / f"{piece_id}.mid"
    pm = pretty_midi.PrettyMIDI(str(path))
    parts = [i for i in pm.instruments if not i.is_drum and i.notes]
    if not parts:
        return None
    notes = sorted(parts[0].notes, key=lambda n: (n.start, -n.pitch))
    out: list[tuple[float, float, int]] = []
    for n in notes:
        if out and n.start - out[-1][0] < 0.01:  # a chord: keep the top note
            continue
        if out and out[-1][1] > n.start:  # one voice: the previous note stops here
            out[-1] = (out[-1][0], float(n.start), out[-1][2])
        out.append((float(n.start), float(n.end), int(n.pitch)))
    return out


def song_notes_sec(song: Song, timeline: Timeline) -> list[tuple[float, float, int]]:
    """A Song's notes as ``(start_s, end_s, pitch)`` on the timeline's recording."""
    return timeline.note_times(song.notes)


def score(notes: Sequence[tuple[float, float, int]], truth: dict, analysis: Analysis | None) -> dict:
    """Figures of one melody against a piece's truth."""
    return melody_metrics(notes, truth["chords"], truth["key"], beats=truth["beats"], downbeats=truth["downbeats"],
                          vocal_range=VOCAL_RANGE, sections=analysis.sections if analysis else None,
                          meter=truth["meter"])


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------


def load_ours():
    """The trained model, or ``(None, reason)`` when it cannot be used (not trained yet, broken import)."""
    try:
        from ..melody import load_model

        return load_model(), None
    except Exception as exc:  # noqa: BLE001 - a missing checkpoint must not stop the baselines
        return None, f"{type(exc).__name__}: {exc}"


def evaluate_piece(piece: BuiltPiece, *, seeds: Sequence[int] = (0, 1), model=None, analysis: Analysis | None = None,
                   refresh_analysis: bool = False) -> dict:
    """All systems' figures on one dev piece.

    ``model``: a loaded checkpoint (:func:`..melody.load_model`), or None to leave "ours" out.
    Per system the figures are the mean over ``seeds`` (``per_seed`` keeps each run).
    """
    truth = piece.truth
    r: dict = {"id": piece.id, "kind": truth["kind"], "meter": truth["meter"], "systems": {}, "per_seed": {},
               "seconds": {}, "errors": {}}
    t0 = time.perf_counter()
    try:
        analysis = analysis or cached_analysis(piece, refresh_analysis)
    except Exception as exc:  # one piece must not stop the evaluation
        log.exception("analysis of %s failed", piece.id)
        r["errors"]["analysis"] = f"{type(exc).__name__}: {exc}"
        analysis = None
    r["seconds"]["analysis"] = time.perf_counter() - t0
    r["analysis"] = None if analysis is None else {
        "key": analysis.key, "meter": analysis.time_signature, "tempo": analysis.tempo,
        "sections": [list(s) for s in analysis.sections]}

    human = human_melody(piece.id, truth["kind"], piece.wav.parent)
    r["systems"]["human"] = score(human, truth, analysis) if human is not None else None

    def run(name: str, make: Callable[[int], list[tuple[float, float, int]]]) -> None:
        t = time.perf_counter()
        rows = []
        try:
            for seed in seeds:
                rows.append(score(make(seed), truth, analysis))
        except Exception as exc:  # one system failing must not stop the others
            log.exception("%s on %s failed", name, piece.id)
            r["errors"][name] = f"{type(exc).__name__}: {exc}"
        r["per_seed"][name] = rows
        r["systems"][name] = mean_metrics(rows) if rows else None
        r["seconds"][name] = time.perf_counter() - t

    if analysis is not None:
        if model is not None:
            from ..melody import compose

            def ours(seed: int) -> list[tuple[float, float, int]]:
                comp = compose(analysis, randomness=RANDOMNESS, seed=seed, vocal_range=VOCAL_RANGE, model=model)
                return song_notes_sec(comp.song, comp.timeline)

            run("ours", ours)
        else:
            r["systems"]["ours"] = None
        for name, writer in (("random_in_key", random_in_key), ("rule_based", rule_based)):
            def baseline(seed: int, writer=writer) -> list[tuple[float, float, int]]:
                timeline = timeline_from_analysis(analysis)
                plan = build_plan(timeline, low=VOCAL_RANGE[0], high=VOCAL_RANGE[1], randomness=RANDOMNESS,
                                  rng=np.random.default_rng(seed))
                return song_notes_sec(writer(timeline, plan, np.random.default_rng(seed)), timeline)

            run(name, baseline)
    return r


def summarise(results: Sequence[dict]) -> dict:
    """Means per system over the pieces that have it, and the chord-tone ratio per kind of piece."""
    mean, count = {}, {}
    for s in SYSTEMS:
        rows = [r["systems"][s] for r in results if r["systems"].get(s)]
        mean[s] = mean_metrics(rows) if rows else None
        count[s] = len(rows)
    by_kind: dict[str, dict] = {}
    for kind in sorted({r["kind"] for r in results}):
        rows = [r for r in results if r["kind"] == kind]
        cell = {"n": len(rows)}
        for s in SYSTEMS:
            vals = [r["systems"][s]["chord_tone_ratio"] for r in rows
                    if r["systems"].get(s) and r["systems"][s]["chord_tone_ratio"] is not None]
            cell[s] = float(np.mean(vals)) if vals else None
        by_kind[kind] = cell
    verdicts = {m: verdict(m, mean["ours"][m]) if mean["ours"] else None for m in TARGETS}
    return {"mean": mean, "pieces": count, "by_kind": by_kind, "targets": {m: list(t) for m, t in TARGETS.items()},
            "verdict_ours": verdicts}


def verdict(metric: str, value: float | None) -> str | None:
    """PASS / below / above for a figure with a target."""
    if metric not in TARGETS or value is None:
        return None
    lo, hi = TARGETS[metric]
    if lo is not None and value < lo - 1e-9:
        return "below"
    if hi is not None and value > hi + 1e-9:
        return "above"
    return "PASS"


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def _fmt(v: float | None, metric: str = "") -> str:
    if v is None:
        return "-"
    if metric in ("n_notes", "range", "mean_abs_interval", "notes_per_second"):
        return f"{v:.1f}"
    return f"{v:.2f}"


def _target_text(metric: str) -> str:
    if metric not in TARGETS:
        return ""
    lo, hi = TARGETS[metric]
    if lo is not None and hi is not None:
        return f"{lo:.2f}-{hi:.2f}"
    return f">= {lo:.2f}" if lo is not None else f"<= {hi:.2f}" if hi is not None else ""


def mean_table(summary: dict) -> str:
    """Rows: figures; columns: systems, target, ours' verdict."""
    mean, count = summary["mean"], summary["pieces"]
    head = f"{'metric':24s}" + "".join(f"{COLUMN[s] + ' (' + str(count[s]) + ')':>13s}" for s in SYSTEMS) \
        + f"{'target':>13s}  ours"
    lines = [head, "-" * len(head)]
    for m in METRIC_NAMES:
        cells = "".join(f"{_fmt(mean[s][m] if mean[s] else None, m):>13s}" for s in SYSTEMS)
        v = summary["verdict_ours"].get(m) if m in TARGETS else None
        lines.append(f"{LABELS[m]:24s}{cells}{_target_text(m):>13s}  {v or ''}")
    return "\n".join(lines)


def kind_table(summary: dict) -> str:
    """Chord-tone ratio per kind of piece."""
    head = f"{'kind':12s}{'n':>4s}" + "".join(f"{COLUMN[s]:>10s}" for s in SYSTEMS)
    lines = [head, "-" * len(head)]
    for kind, cell in summary["by_kind"].items():
        lines.append(f"{kind:12s}{cell['n']:4d}" + "".join(f"{_fmt(cell[s]):>10s}" for s in SYSTEMS))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate and print; 0 even when targets are missed (it is a measurement)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pieces", nargs="+", metavar="ID", help="evaluate only these pieces")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per generator: 0..N-1 (default 2)")
    parser.add_argument("--no-model", action="store_true", help="leave our model out (human and baselines only)")
    parser.add_argument("--refresh-analysis", action="store_true", help="re-analyse even what the cache holds")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for generation (default: torch's)")
    parser.add_argument("--json", type=Path, default=EVAL_DIR / "melody.json", help="where to write every figure")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", module=r"mir_eval(\..*)?")
    known = {s.id for s in PIECES}
    unknown = [i for i in args.pieces or [] if i not in known]
    if unknown:
        parser.error(f"unknown piece id(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")

    t0 = time.perf_counter()
    pieces = ensure_devset(args.pieces)
    print(f"development set: {len(pieces)} pieces ready in {time.perf_counter() - t0:.1f} s", flush=True)
    model, reason = (None, "--no-model") if args.no_model else load_ours()
    if model is not None:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(f"model: {getattr(model, 'name', '?')} ({getattr(model, 'path', '')})", flush=True)
    else:
        print(f"model: NOT EVALUATED ({reason}); human and baselines only", flush=True)

    seeds = tuple(range(args.seeds))
    results = []
    t1 = time.perf_counter()
    for p in pieces:
        r = evaluate_piece(p, seeds=seeds, model=model, refresh_analysis=args.refresh_analysis)
        results.append(r)
        cells = "  ".join(f"{COLUMN[s]} {_fmt(r['systems'][s]['chord_tone_ratio'])}"
                          for s in SYSTEMS if r["systems"].get(s))
        errs = f"  ERRORS {r['errors']}" if r["errors"] else ""
        print(f"  {p.id:26s} {r['kind']:9s} chord tones: {cells} "
              f"({sum(r['seconds'].values()):.1f} s){errs}", flush=True)
    t_eval = time.perf_counter() - t1
    summary = summarise(results)

    print(f"\nMelody figures, mean over pieces (n per column), against the true chords/key/beats; "
          f"seeds {list(seeds)}:")
    print(mean_table(summary))
    print("\nChord-tone ratio by kind of piece:")
    print(kind_table(summary))
    if model is None:
        print(f"\n(ours not evaluated: {reason})")
    print(f"\nWhole evaluation {t_eval:.1f} s.")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "summary": summary, "pieces": results, "seeds": list(seeds), "vocal_range": list(VOCAL_RANGE),
        "model": None if model is None else {"name": getattr(model, "name", None), "path": str(model.path)},
        "model_missing_reason": reason, "seconds": t_eval,
    }, indent=1, default=str))
    print(f"Wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
