"""How singable and how well-fitting a melody is: plain functions on notes in seconds.

:func:`melody_metrics` scores a melody given as ``(start_s, end_s, midi_pitch)`` notes on a
recording's timeline against that recording's *true* harmony, key and beats, so human
melodies, baselines and the model are all measured against the same real accompaniment
(not against whatever the analysis believed).

Definitions (``None`` where a figure is undefined, e.g. no notes or no intervals):

* ``chord_tone_ratio``: duration-weighted share of note time whose pitch class belongs to
  the chord sounding at that time. Time under ``N`` (or an unreadable label, or no chord
  at all) counts in neither numerator nor denominator. Chord labels are Harte labels read
  with ``mir_eval`` (extensions and an inverted bass count as chord tones).
* ``strong_beat_chord_tone``: of the notes that start within 70 ms of a beat (and sound
  over a chord), the share whose pitch class is in the chord at that beat.
* ``in_key_ratio``: share of notes (by count) whose pitch class is in the key's scale:
  major, or natural minor plus the raised 6th and 7th (:func:`..getscore.scale_pcs`).
* ``range``: highest minus lowest pitch, semitones.
* ``in_vocal_range``: share of notes with ``low <= pitch <= high`` (only with ``vocal_range``).
* Intervals between consecutive notes (onset order, rests ignored): ``mean_abs_interval``
  is the mean ``|interval|`` over all of them (repeats included, as 0);
  ``repeated_ratio`` is the share of intervals that are 0. Among the *moves* (non-zero
  intervals): ``step_ratio`` = share with ``|i|`` of 1 or 2 semitones, ``leap_ratio`` =
  share with ``|i| >= 3`` (so ``step_ratio + leap_ratio == 1``), ``large_leap_ratio`` =
  share with ``|i| > 7`` (wider than a fifth; hard to sing).
* ``notes_per_second``: notes divided by the music's span (first beat to one beat past the
  last; the notes' own span when there are fewer than two beats).
* ``onset_on_8th_grid``: share of onsets within 50 ms of an 8th-note grid point. The grid
  splits every beat into two 8ths, or three in compound meters (6/8, 9/8, 12/8: a
  dotted-quarter beat holds three 8ths), and extends one beat before the first and after
  the last beat.
* ``section_self_similarity``: for every section whose label occurred earlier, the Dice
  similarity ``2 |A & B| / (|A| + |B|)`` of the sets of ``(position, pitch)`` of the
  first occurrence's notes (A) and the repeat's (B), where position is the onset's
  distance from the section start in beats, rounded to the 8th (section starts snapped to
  the nearest beat, both sections cut to the shorter length); averaged over repeats.
  ``None`` when no label repeats (or neither occurrence holds a note).
* ``section_repeat_shifted``: the same, but each repeat is also tried with its start
  moved by up to two bars (whole beats, either way) and the best alignment counts: an
  analysis that puts a boundary a bar or two off still finds a tune that repeats.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from ..getscore import chord_tones, parse_chord_label, scale_pcs
from ..timeline import parse_key

BEAT_TOLERANCE = 0.070  # seconds: a note "on the beat"
GRID_TOLERANCE = 0.050  # seconds: an onset on the 8th grid
COMPOUND_METERS = ("6/8", "9/8", "12/8")
STEP_MAX = 2  # |interval| 1..2 semitones is a step
LEAP_MIN = 3  # |interval| >= 3 is a leap
LARGE_LEAP = 7  # |interval| > 7 is a large leap
SHIFT_BARS = 2  # section_repeat_shifted: how far (bars) a repeat may sit from the analysis' boundary

METRIC_NAMES = ("n_notes", "chord_tone_ratio", "strong_beat_chord_tone", "in_key_ratio", "range", "in_vocal_range",
                "mean_abs_interval", "step_ratio", "leap_ratio", "large_leap_ratio", "repeated_ratio",
                "notes_per_second", "onset_on_8th_grid", "section_self_similarity",
                "section_repeat_shifted")

Note = tuple[float, float, int]


@lru_cache(maxsize=4096)
def label_pcs(label: str) -> frozenset[int] | None:
    """Pitch classes of a Harte chord label; None for ``N``, ``X`` and labels that cannot be read."""
    label = str(label).strip()
    if not label or label in ("N", "X"):
        return None
    try:
        import mir_eval

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            root, bitmap, bass = mir_eval.chord.encode(label)
        if root < 0:
            return None
        pcs = {(root + i) % 12 for i in np.flatnonzero(np.asarray(bitmap) > 0)}
        if bass >= 0:
            pcs.add((root + bass) % 12)
        return frozenset(pcs)
    except Exception:  # noqa: BLE001 - fall back to our own vocabulary
        rq = parse_chord_label(label)
        return None if rq is None else frozenset(chord_tones(*rq))


def _chord_at(chords: Sequence[tuple[float, float, frozenset[int] | None]], t: float) -> frozenset[int] | None:
    for s, e, pcs in chords:
        if s <= t < e:
            return pcs
    return None


def _intervals(notes: Sequence[Note]) -> np.ndarray:
    pitches = np.array([p for _, _, p in notes], dtype=int)
    return np.diff(pitches) if len(pitches) > 1 else np.zeros(0, dtype=int)


def beat_position(times: np.ndarray | Sequence[float] | float, beats: Sequence[float]) -> np.ndarray:
    """Fractional beat index of times (beat k at ``beats[k]``), extrapolated linearly at both ends."""
    b = np.asarray(beats, dtype=float)
    t = np.asarray(times, dtype=float)
    if len(b) < 2:
        raise ValueError("need at least two beats")
    pos = np.interp(t, b, np.arange(len(b), dtype=float))
    first = (b[1] - b[0]) or 1e-9
    last = (b[-1] - b[-2]) or 1e-9
    pos = np.where(t < b[0], (t - b[0]) / first, pos)
    return np.where(t > b[-1], len(b) - 1 + (t - b[-1]) / last, pos)


def eighth_grid(beats: Sequence[float], meter: str | None = None) -> np.ndarray:
    """Times of the 8th-note grid: each beat split in 2 (3 in compound meters), one beat beyond each end."""
    b = np.asarray(sorted(beats), dtype=float)
    if len(b) < 2:
        return b
    sub = 3 if meter in COMPOUND_METERS else 2
    ext = np.concatenate([[b[0] - (b[1] - b[0])], b, [b[-1] + (b[-1] - b[-2])]])
    parts = [np.linspace(a, c, sub, endpoint=False) for a, c in itertools.pairwise(ext)]
    return np.append(np.concatenate(parts), ext[-1])


def section_similarity(notes: Sequence[Note], sections: Sequence[tuple[float, float, str]],
                       beats: Sequence[float], meter: str | None = None, max_shift_beats: int = 0) -> float | None:
    """Mean Dice similarity of repeated sections' melodies (see the module docstring).

    With ``max_shift_beats`` each repeat is also compared with its start moved by up to that
    many whole beats either way, and the best alignment counts (section boundaries that an
    analysis placed a bar or two off then still find the repeat).
    """
    if len(beats) < 2 or not sections:
        return None
    sub = 3 if meter in COMPOUND_METERS else 2
    onsets = np.array([s for s, _, _ in notes], dtype=float)
    pitches = [int(p) for _, _, p in notes]
    onset_pos = beat_position(onsets, beats) if len(onsets) else np.zeros(0)

    def events(start: float, length: float) -> set[tuple[int, int]]:
        out = set()
        for pos, p in zip(onset_pos, pitches, strict=True):
            rel = float(pos) - start
            if -0.5 / sub <= rel < length - 0.5 / sub:
                out.add((round(rel * sub), p))
        return out

    def bounds(s: float, e: float) -> tuple[float, float]:
        return float(np.round(beat_position(s, beats))), float(np.round(beat_position(e, beats)))

    first: dict[str, tuple[float, float]] = {}
    scores = []
    for s, e, label in sorted(sections):
        if label not in first:
            first[label] = bounds(s, e)
            continue
        a0, a1 = first[label]
        b0, b1 = bounds(s, e)
        length = min(a1 - a0, b1 - b0)
        if length <= 0:
            continue
        a = events(a0, length)
        best = None
        for shift in range(-max_shift_beats, max_shift_beats + 1):
            b = events(b0 + shift, length)
            if a or b:
                score = 2 * len(a & b) / (len(a) + len(b))
                best = score if best is None else max(best, score)
        if best is not None:
            scores.append(best)
    return float(np.mean(scores)) if scores else None


def beats_per_bar(beats: Sequence[float], downbeats: Sequence[float], meter: str | None = None) -> int:
    """Beats in a bar, from the downbeats (median), else 2 in compound meters and 4 otherwise."""
    if len(beats) >= 2 and len(downbeats) >= 2:
        gaps = np.diff(beat_position(sorted(downbeats), beats))
        if len(gaps) and np.median(gaps) >= 1:
            return round(float(np.median(gaps)))
    return 2 if meter in COMPOUND_METERS else 4


def melody_metrics(notes_sec: Sequence[Note], chords_sec: Sequence[tuple[float, float, str]], key: str, *,
                   beats: Sequence[float], downbeats: Sequence[float] = (), vocal_range: tuple[int, int] | None = None,
                   sections: Sequence[tuple[float, float, str]] | None = None, meter: str | None = None) -> dict:
    """All figures of one melody against the true chords, key and beats (see the module docstring).

    ``notes_sec``: ``(start_s, end_s, midi_pitch)``; ``chords_sec``: ``(start_s, end_s, harte_label)``;
    ``key``: ``"G major"``; ``meter`` decides whether beats split into 2 or 3 8ths (default simple).
    ``downbeats`` give the bar length for ``section_repeat_shifted``.
    """
    notes = sorted((float(s), float(e), int(p)) for s, e, p in notes_sec)
    beats_arr = np.asarray(sorted(float(b) for b in beats), dtype=float)
    chords = sorted((float(s), float(e), label_pcs(str(lab))) for s, e, lab, *_ in chords_sec)
    out: dict = {m: None for m in METRIC_NAMES}
    out["n_notes"] = len(notes)
    if not notes:
        return out

    # Harmony: duration-weighted chord tones, N excluded.
    covered = fit = 0.0
    for s, e, p in notes:
        for c0, c1, pcs in chords:
            overlap = min(e, c1) - max(s, c0)
            if overlap <= 0 or pcs is None:
                continue
            covered += overlap
            fit += overlap if p % 12 in pcs else 0.0
    out["chord_tone_ratio"] = fit / covered if covered > 0 else None

    if len(beats_arr):
        on_beat = hits = 0
        for s, _, p in notes:
            j = int(np.argmin(np.abs(beats_arr - s)))
            if abs(beats_arr[j] - s) > BEAT_TOLERANCE:
                continue
            pcs = _chord_at(chords, max(s, float(beats_arr[j])) + 1e-6)
            if pcs is None:
                continue
            on_beat += 1
            hits += p % 12 in pcs
        out["strong_beat_chord_tone"] = hits / on_beat if on_beat else None

    scale = set(scale_pcs(*parse_key(key)))
    out["in_key_ratio"] = sum(p % 12 in scale for _, _, p in notes) / len(notes)
    pitches = [p for _, _, p in notes]
    out["range"] = max(pitches) - min(pitches)
    if vocal_range is not None:
        lo, hi = vocal_range
        out["in_vocal_range"] = sum(lo <= p <= hi for p in pitches) / len(pitches)

    iv = np.abs(_intervals(notes))
    if len(iv):
        out["mean_abs_interval"] = float(iv.mean())
        out["repeated_ratio"] = float(np.mean(iv == 0))
        moves = iv[iv > 0]
        if len(moves):
            out["step_ratio"] = float(np.mean(moves <= STEP_MAX))
            out["leap_ratio"] = float(np.mean(moves >= LEAP_MIN))
            out["large_leap_ratio"] = float(np.mean(moves > LARGE_LEAP))

    if len(beats_arr) >= 2:
        span = beats_arr[-1] - beats_arr[0] + float(np.median(np.diff(beats_arr)))
    else:
        span = notes[-1][1] - notes[0][0]
    out["notes_per_second"] = len(notes) / span if span > 0 else None

    grid = eighth_grid(beats_arr, meter)
    if len(grid):
        onsets = np.array([s for s, _, _ in notes])
        dist = np.min(np.abs(onsets[:, None] - grid[None, :]), axis=1)
        out["onset_on_8th_grid"] = float(np.mean(dist <= GRID_TOLERANCE))

    if sections:
        out["section_self_similarity"] = section_similarity(notes, sections, beats_arr, meter)
        shift = SHIFT_BARS * beats_per_bar(beats_arr, downbeats, meter)
        out["section_repeat_shifted"] = section_similarity(notes, sections, beats_arr, meter, shift)
    return out


def mean_metrics(rows: Sequence[dict]) -> dict:
    """Mean of each figure over rows, ignoring None; None where no row has it."""
    out = {}
    for m in METRIC_NAMES:
        vals = [r[m] for r in rows if r.get(m) is not None and not (isinstance(r[m], float) and math.isnan(r[m]))]
        out[m] = float(np.mean(vals)) if vals else None
    return out
