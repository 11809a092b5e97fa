"""``make eval`` (second part): melody quality on the development sets, ours against baselines and humans.

Run ``python -m tmik_bgm_conditional_melody_generation.evaluation.eval_melody [--quick]
[--sets devset popset] [--pieces ID ...] [--seeds N] [--no-model] [--json OUT]``. For every
piece of the classical/folk set (:mod:`.devset`) and the contemporary set (:mod:`.popset`):

1. our analysis of its audio (:func:`..analysis.analyze_file`, cached in
   ``.cache/eval/analysis/<id>.json`` while the audio and the analysis code are unchanged);
2. the timeline and lead plan of that analysis (vocal range A3-E5, MIDI 57..76);
3. melodies: ours (:func:`..melody.compose`, seeds 0..N-1) singing one of our lyric texts
   (``evaluation/lyrics/*.txt``, verses and choruses written for this; the pieces take them
   in turn; as many first lines as the track holds, :func:`fitting_lines`), the two baselines of :mod:`.baselines` (same seeds, no lyrics), and the human
   melody where the piece has one, read from the rendered MIDI: the tune of ``folk`` and
   ``symbols`` pieces, the soprano of the ``analysis`` pieces (Bach chorales); both are the
   first instrument devset writes. The top voice of ``score`` pieces is instrumental, not a
   song melody, and ``synthetic`` and pop pieces have no sung melody, so they have no human
   column. Human melodies are not transposed: their ``in_vocal_range`` shows how far real
   tunes leave a singer's range;
4. :func:`.melody_metrics.melody_metrics` of each against the piece's *true* chords, key
   and beats (sections come from our analysis: the truth has none), and
   :func:`.melody_metrics.lyric_metrics` of ours (its melody.json notes: syllables, words,
   stress, phrases) against the true beats, downbeats and meter.

It prints, per set, one table (rows: figures; columns: human mean over the pieces that have
one, ours, random-in-key, rule-based, the issue's target and ours' verdict) and the
chord-tone ratio per kind of piece; then the lyrics table: the lyric figures (syllables per
second, stress on strong positions, stressed syllables not shorter, pickups, breaths, the
longest sung run, where the onsets fall, anticipations, the median note) with chord tones
and in key, for ours on each set, for the human songs with English lyrics of music21's corpus
(:mod:`.human_songs`; each song's tempo source is printed), and the chart-pop figures the
issue quotes from the literature (quoted, not measured). ``--quick`` takes
:data:`QUICK_PIECES` and one seed. Everything goes to ``.cache/eval/melody.json``. Without a
trained checkpoint (or with ``--no-model``) the "ours" columns are left out and the rest
still runs.
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
from typing import TYPE_CHECKING, Any

import numpy as np

from tmik_common.lyrics import Lyrics, LyricsError, parse_lyrics

from ..analysis import Analysis
from ..constraints import build_plan
from ..getscore import Song
from ..timeline import Timeline, timeline_from_analysis
from . import popset
from .baselines import random_in_key, rule_based
from .devset import PIECES, REPO_ROOT, BuiltPiece, cache_dir, ensure_devset
from .human_songs import Performance, human_performances
from .melody_metrics import LYRIC_METRIC_NAMES, METRIC_NAMES, lyric_metrics, mean_metrics, melody_metrics

if TYPE_CHECKING:
    from ..melody import Composition

log = logging.getLogger(__name__)

VOCAL_RANGE = (57, 76)  # A3..E5
RANDOMNESS = 0.5
HUMAN_KINDS = ("folk", "symbols", "analysis")
SYSTEMS = ("human", "ours", "random_in_key", "rule_based")
COLUMN = {"human": "human", "ours": "ours", "random_in_key": "random", "rule_based": "rule"}
EVAL_DIR = REPO_ROOT / ".cache" / "eval"
ANALYSIS_CACHE = EVAL_DIR / "analysis"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
LYRICS_DIR = Path(__file__).resolve().parent / "lyrics"  # our own lyric texts, sung on every piece in turn
SETS = ("devset", "popset")
SET_TITLES = {"devset": "classical/folk set", "popset": "pop set"}
# --quick: a few pieces of each set (a chorale, a song, a jig, a synthetic pop piece; pop, ballad, hip-hop, 6/8), one seed.
QUICK_PIECES = {"devset": ("bach_bwv269", "lead_foster_brown_hair", "folk_soldiers_joy", "synth_pop_e_major"),
                "popset": ("pop_anthem_118", "ballad_piano_68", "hiphop_boom_90", "ballad68_64")}
# Figures of transcribed chart-pop melodies as the issue quotes them (literature, not measured here).
CHART_POP_QUOTED = {"stress_on_strong": 0.69, "onsets_on_beat": 0.45, "onsets_on_8th_offbeat": 0.42,
                    "median_note_beats": 0.5, "syllables_per_second_overall": 1.5}
# The rows of the lyrics table: lyric figures, then two harmony figures of melody_metrics.
LYRIC_ROWS = (*LYRIC_METRIC_NAMES, "chord_tone_ratio", "in_key_ratio")
SPREAD_ROWS = ("syllables_per_second_lines_min", "syllables_per_second_lines_max", "longest_run_s_max")
# Issue 13's targets for the lyrics table (lowest, highest); stress on strong: at least the chart-pop figure.
LYRIC_TARGETS: dict[str, tuple[float | None, float | None]] = {
    "syllables_per_second_lines": (1.5, 5.0), "stress_on_strong": (0.69, None),
    "breaths_per_line": (1.0, None), "longest_run_s": (None, 8.0), "onsets_on_beat": (0.35, 0.55),
    "onsets_on_8th_offbeat": (0.35, 0.50), "melisma_stressed_or_final": (1.0, None), "chord_tone_ratio": (0.75, None),
    "in_key_ratio": (0.95, None), "syllables_per_second_lines_min": (1.5, None),
    "syllables_per_second_lines_max": (None, 5.0), "longest_run_s_max": (None, 8.0),
}

# The targets: (lowest, highest) allowed value, None = unbounded.
TARGETS: dict[str, tuple[float | None, float | None]] = {
    "chord_tone_ratio": (0.75, None),  # issue 13: keep >= 0.75
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
    "n_syllables": "syllables", "syllables_per_second_lines": "syllables/s in lines",
    "syllables_per_second_overall": "syllables/s whole span", "stress_on_strong": "stress on strong (line)",
    "stress_on_strong_in_word": "  same, inside words", "stressed_longer": "stressed not shorter",
    "pickup_ratio": "lines with a pickup", "downbeat_start_ratio": "lines on the downbeat",
    "breaths_per_line": "breaths per line", "longest_run_s": "longest sung run (s)", "onsets_on_beat": "onsets on beats",
    "onsets_on_8th_offbeat": "onsets on 8th off-beats", "onsets_on_16th": "onsets on 16ths",
    "onsets_off_grid": "onsets off the grid", "anticipation_ratio": "anticipations", "median_note_beats":
    "median note (beats)", "function_words_weak": "function words weak", "melisma_stressed_or_final":
    "melismas stressed/final", "syllables_per_second_lines_min": "syl/s in lines, slowest",
    "syllables_per_second_lines_max": "syl/s in lines, fastest", "longest_run_s_max": "longest run, any (s)",
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


def eval_lyrics() -> list[tuple[str, Lyrics]]:
    """Our lyric texts (``evaluation/lyrics/*.txt``: verses and choruses written for this), parsed, by name."""
    return [(path.stem, parse_lyrics(path.read_text(encoding="utf-8"))) for path in sorted(LYRICS_DIR.glob("*.txt"))]


def sung_notes(analysis: Analysis, comp: Composition) -> list[dict]:
    """Our melody as melody.json notes (:func:`..generate.melody_record`: word, syllable, stress, phrase, melisma)."""
    from ..generate import melody_record

    return melody_record(analysis, comp)["notes"]


def fitting_lines(analysis: Analysis, lyrics: Lyrics, *, seed: int = 0, randomness: float = RANDOMNESS) -> int:
    """How many of the lyrics' first lines the track holds at a natural rate (at least one).

    A user whose lyrics do not fit is told so (``lyrics_do_not_fit``) and sings fewer lines;
    the evaluation does the same: the most first lines that :func:`..rhythm.plan_rhythm`
    accepts (a bisection; fitting is monotone in the number of lines).
    """
    from ..constraints import singable_columns
    from ..rhythm import plan_rhythm

    timeline = timeline_from_analysis(analysis)
    singable = singable_columns(timeline)

    def fits(n: int) -> bool:
        try:
            plan_rhythm(timeline, Lyrics(lines=lyrics.lines[:n]), singable, seed=seed, randomness=randomness)
            return True
        except LyricsError as exc:
            if exc.code != "lyrics_do_not_fit":
                raise
            return False

    n = len(lyrics.lines)
    if fits(n):
        return n
    lo, hi = 1, n - 1  # the answer lies in lo..hi (one line is sung even where it hardly fits)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def compose_fitting(analysis: Analysis, lyrics: Lyrics | None, *, seed: int = 0, randomness: float = RANDOMNESS,
                    **kw: Any) -> tuple[Composition, int]:
    """:func:`..melody.compose` singing as many of the lyrics' first lines as fit: ``(composition, lines sung)``."""
    from ..melody import compose

    if lyrics is None:
        return compose(analysis, seed=seed, randomness=randomness, **kw), 0
    n = fitting_lines(analysis, lyrics, seed=seed, randomness=randomness)
    return compose(analysis, lyrics=Lyrics(lines=lyrics.lines[:n]), seed=seed, randomness=randomness, **kw), n


def score_sung(notes: Sequence[dict], truth: dict) -> dict:
    """Lyric figures of sung notes against a piece's true beats, downbeats and meter."""
    return lyric_metrics(notes, beats=truth["beats"], downbeats=truth["downbeats"], meter=truth["meter"])


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
                   refresh_analysis: bool = False, lyrics: tuple[str, Lyrics] | None = None) -> dict:
    """All systems' figures on one dev piece.

    ``model``: a loaded checkpoint (:func:`..melody.load_model`), or None to leave "ours" out.
    ``lyrics``: ``(name, parsed lyrics)`` that our melody sets (the baselines have none); the
    lyric figures of ours are in ``r["lyric"]``. Per system the figures are the mean over
    ``seeds`` (``per_seed`` keeps each run).
    """
    truth = piece.truth
    r: dict = {"id": piece.id, "kind": truth.get("style") or truth["kind"], "meter": truth["meter"],
               "systems": {}, "per_seed": {}, "seconds": {}, "errors": {}, "lyric": None,
               "lyrics": lyrics[0] if lyrics else None}
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

    human = human_melody(piece.id, r["kind"], piece.wav.parent)
    r["systems"]["human"] = score(human, truth, analysis) if human is not None else None

    sung_rows: list[dict] = []

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
            def ours(seed: int) -> list[tuple[float, float, int]]:
                comp, n_lines = compose_fitting(analysis, lyrics[1] if lyrics else None, randomness=RANDOMNESS,
                                                seed=seed, vocal_range=VOCAL_RANGE, model=model)
                r["lyric_lines"] = n_lines
                sung_rows.append(score_sung(sung_notes(analysis, comp), truth))
                return song_notes_sec(comp.song, comp.timeline)

            run("ours", ours)
            r["per_seed"]["ours_lyric"] = sung_rows
            r["lyric"] = mean_metrics(sung_rows, LYRIC_METRIC_NAMES) if sung_rows else None
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


def verdict(metric: str, value: float | None, targets: dict[str, tuple[float | None, float | None]] = TARGETS
            ) -> str | None:
    """PASS / below / above for a figure with a target (in ``targets``)."""
    if metric not in targets or value is None:
        return None
    lo, hi = targets[metric]
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


def _target_text(metric: str, targets: dict[str, tuple[float | None, float | None]] = TARGETS) -> str:
    if metric not in targets:
        return ""
    lo, hi = targets[metric]
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


def evaluate_human_songs(performances: Sequence[Performance] | None = None) -> dict:
    """Lyric and harmony figures of the human songs: per song (mean over its verses) and the mean over songs."""
    performances = human_performances() if performances is None else performances
    songs: dict[str, list[dict]] = {}
    info: dict[str, dict] = {}
    for perf in performances:
        row = lyric_metrics(perf.notes, beats=perf.beats, downbeats=perf.downbeats, meter=perf.meter)
        harmony = melody_metrics([(n["start"], n["end"], n["pitch"]) for n in perf.notes], perf.chords, perf.key,
                                 beats=perf.beats, downbeats=perf.downbeats, meter=perf.meter)
        row.update({m: harmony[m] for m in ("chord_tone_ratio", "in_key_ratio")})
        songs.setdefault(perf.song, []).append(row)
        info[perf.song] = {"meter": perf.meter, "qpm": perf.qpm, "tempo_source": perf.tempo_source, "key": perf.key,
                           "verses": len(songs[perf.song])}
    per_song = {name: mean_metrics(rows, LYRIC_ROWS) for name, rows in songs.items()}
    return {"songs": per_song, "info": info,
            "mean": lyric_summary(list(per_song.values())) if per_song else None}


def lyric_summary(rows: Sequence[dict]) -> dict:
    """Means of the lyrics-table figures over rows (pieces or songs), with the slowest and fastest syllable
    rate within lines and the longest sung run of any row (the issue bounds them on every song)."""
    out = mean_metrics(rows, LYRIC_ROWS)
    rates = [r["syllables_per_second_lines"] for r in rows if r.get("syllables_per_second_lines") is not None]
    runs = [r["longest_run_s"] for r in rows if r.get("longest_run_s") is not None]
    out["syllables_per_second_lines_min"] = min(rates) if rates else None
    out["syllables_per_second_lines_max"] = max(rates) if rates else None
    out["longest_run_s_max"] = max(runs) if runs else None
    return out


def lyric_row(result: dict) -> dict:
    """One piece's row of the lyrics table: ours' lyric figures and its chord-tone ratio and in-key share."""
    row = dict(result["lyric"] or {})
    ours = result["systems"].get("ours") or {}
    row.update({m: ours.get(m) for m in ("chord_tone_ratio", "in_key_ratio")})
    return row


def lyric_table(columns: Sequence[tuple[str, dict | None]], ours: Sequence[int] = ()) -> str:
    """Rows: the lyric figures (and chord tones, in key); columns: ``(title, {figure: value})``, then the
    issue's target and, for the columns numbered in ``ours``, their verdicts."""
    width = max(14, *(len(t) + 2 for t, _ in columns))
    head = f"{'metric':26s}" + "".join(f"{t:>{width}s}" for t, _ in columns) + f"{'target':>13s}  verdicts"
    lines = [head, "-" * len(head)]
    for m in (*LYRIC_ROWS, *SPREAD_ROWS):
        label = LABELS.get(m, m)
        cells = "".join(f"{_fmt(col.get(m) if col else None, m):>{width}s}" for _, col in columns)
        verdicts = [verdict(m, (columns[i][1] or {}).get(m), LYRIC_TARGETS) for i in ours]
        lines.append(f"{label:26s}{cells}{_target_text(m, LYRIC_TARGETS):>13s}  "
                     + " ".join(v or "-" for v in verdicts) if m in LYRIC_TARGETS else f"{label:26s}{cells}")
    return "\n".join(lines)


def _evaluate_set(name: str, pieces: Sequence[BuiltPiece], *, seeds: Sequence[int], model, texts, refresh: bool
                  ) -> list[dict]:
    results = []
    for i, p in enumerate(pieces):
        lyrics = texts[i % len(texts)] if texts else None
        r = evaluate_piece(p, seeds=seeds, model=model, refresh_analysis=refresh, lyrics=lyrics)
        r["set"] = name
        results.append(r)
        cells = "  ".join(f"{COLUMN[s]} {_fmt(r['systems'][s]['chord_tone_ratio'])}"
                          for s in SYSTEMS if r["systems"].get(s))
        sung = r["lyric"] or {}
        lyric = (f" | {r['lyrics']} ({r.get('lyric_lines')} lines): "
                 f"{_fmt(sung.get('syllables_per_second_lines'))} syl/s, stress on strong "
                 f"{_fmt(sung.get('stress_on_strong'))}") if sung else ""
        errs = f"  ERRORS {r['errors']}" if r["errors"] else ""
        print(f"  {p.id:26s} {r['kind']:9s} chord tones: {cells}{lyric} "
              f"({sum(r['seconds'].values()):.1f} s){errs}", flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate and print; 0 even when targets are missed (it is a measurement)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pieces", nargs="+", metavar="ID", help="evaluate only these pieces (of either set)")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS), help="which sets (default both)")
    parser.add_argument("--quick", action="store_true",
                        help="a few pieces of each set and one seed (for iterating; see QUICK_PIECES)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per generator: 0..N-1 (default 2, quick 1)")
    parser.add_argument("--no-model", action="store_true", help="leave our model out (human and baselines only)")
    parser.add_argument("--refresh-analysis", action="store_true", help="re-analyse even what the cache holds")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for generation (default: torch's)")
    parser.add_argument("--json", type=Path, default=EVAL_DIR / "melody.json", help="where to write every figure")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", module=r"mir_eval(\..*)?")
    known = {"devset": [s.id for s in PIECES], "popset": [s.id for s in popset.PIECES]}
    unknown = [i for i in args.pieces or [] if not any(i in ids for ids in known.values())]
    if unknown:
        parser.error(f"unknown piece id(s): {', '.join(unknown)}; known: "
                     f"{', '.join(sorted(known['devset'] + known['popset']))}")
    seeds_n = args.seeds if args.seeds is not None else (1 if args.quick else 2)
    if seeds_n < 1:
        parser.error("--seeds must be at least 1")
    chosen: dict[str, list[str] | None] = {}
    for name in args.sets:
        ids = QUICK_PIECES[name] if args.quick else None
        if args.pieces:
            ids = [i for i in args.pieces if i in known[name]]
        if ids is None or ids:
            chosen[name] = list(ids) if ids is not None else None

    t0 = time.perf_counter()
    built = {}
    for name, ids in chosen.items():
        built[name] = ensure_devset(ids) if name == "devset" else popset.ensure_popset(ids)
        print(f"{SET_TITLES[name]}: {len(built[name])} pieces ready in {time.perf_counter() - t0:.1f} s", flush=True)
    model, reason = (None, "--no-model") if args.no_model else load_ours()
    if model is not None:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(f"model: {getattr(model, 'name', '?')} ({getattr(model, 'path', '')})", flush=True)
    else:
        print(f"model: NOT EVALUATED ({reason}); human and baselines only", flush=True)
    texts = eval_lyrics()
    print(f"lyrics sung by ours: {', '.join(n for n, _ in texts)} ({LYRICS_DIR}), one per piece in turn", flush=True)

    seeds = tuple(range(seeds_n))
    t1 = time.perf_counter()
    results: dict[str, list[dict]] = {}
    summaries: dict[str, dict] = {}
    for name, pieces in built.items():
        print(f"\n{SET_TITLES[name]}:", flush=True)
        results[name] = _evaluate_set(name, pieces, seeds=seeds, model=model, texts=texts,
                                      refresh=args.refresh_analysis)
        summaries[name] = summarise(results[name])
    human = evaluate_human_songs()
    t_eval = time.perf_counter() - t1

    for name, summary in summaries.items():
        print(f"\nMelody figures, {SET_TITLES[name]}, mean over pieces (n per column), against the true "
              f"chords/key/beats; seeds {list(seeds)}:")
        print(mean_table(summary))
        print(f"\nChord-tone ratio by kind of piece ({SET_TITLES[name]}):")
        print(kind_table(summary))

    lyric_means = {name: lyric_summary([lyric_row(r) for r in rows if r["lyric"]])
                   if any(r["lyric"] for r in rows) else None for name, rows in results.items()}
    columns = [(f"ours {SET_TITLES[n].split()[0]} ({sum(1 for r in results[n] if r['lyric'])})", lyric_means[n])
               for n in results]
    columns.append((f"human ({len(human['songs'])} songs)", human["mean"]))
    columns.append(("chart pop (quoted)*", CHART_POP_QUOTED))
    print("\nLyrics set to the music: ours sing our lyric texts, against the true beats/downbeats/meter; the human "
          "songs are music21's corpus songs with English lyrics:")
    print(lyric_table(columns, ours=range(len(results))))
    print("  * chart pop (quoted): figures of transcribed chart-pop melodies as issue 13 quotes them from the "
          "literature; NOT measured here.")
    print("  Human scores notate few rests between lines (singers breathe by shortening a held note), so their "
          "breaths and longest runs are those of the notation.")
    for song, info in human["info"].items():
        print(f"  human {song}: {info['verses']} verse(s), {info['meter']}, {info['key']}, {info['qpm']:g} quarters/min "
              f"({info['tempo_source']})")
    if model is None:
        print(f"\n(ours not evaluated: {reason})")
    print(f"\nWhole evaluation {t_eval:.1f} s.")

    main_set = "devset" if "devset" in summaries else next(iter(summaries), None)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "summary": summaries.get(main_set), "pieces": results.get(main_set, []),
        "sets": {n: {"summary": summaries[n], "pieces": results[n]} for n in summaries},
        "lyrics_table": {"ours": lyric_means, "human": human, "chart_pop_quoted": CHART_POP_QUOTED},
        "seeds": list(seeds), "vocal_range": list(VOCAL_RANGE), "quick": args.quick,
        "model": None if model is None else {"name": getattr(model, "name", None), "path": str(model.path)},
        "model_missing_reason": reason, "seconds": t_eval,
    }, indent=1, default=str))
    print(f"Wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
