"""How singable and how well-fitting a melody is: plain functions on notes in seconds.

Two families: :func:`melody_metrics` (pitch, harmony and grid figures of ``(start_s, end_s,
pitch)`` notes, below) and :func:`lyric_metrics` (how the words are set: syllable rate,
stress on strong positions, pickups, breaths, syncopation; on melody.json notes with their
syllables, see the comment above :data:`LYRIC_METRIC_NAMES`).

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

    ``notes_sec``: ``(start_s, end_s, midi_pitch)``; ``chords_sec``: ``(start_s, end_s, harte_label)``
    (or a frozenset of the chord's pitch classes in place of the label);
    ``key``: ``"G major"``; ``meter`` decides whether beats split into 2 or 3 8ths (default simple).
    ``downbeats`` give the bar length for ``section_repeat_shifted``.
    """
    notes = sorted((float(s), float(e), int(p)) for s, e, p in notes_sec)
    beats_arr = np.asarray(sorted(float(b) for b in beats), dtype=float)
    chords = sorted(((float(s), float(e), lab if isinstance(lab, frozenset) else label_pcs(str(lab)))
                     for s, e, lab, *_ in chords_sec), key=lambda c: (c[0], c[1]))
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


def mean_metrics(rows: Sequence[dict], names: Sequence[str] = METRIC_NAMES) -> dict:
    """Mean of each figure (``names``) over rows, ignoring None; None where no row has it."""
    out = {}
    for m in names:
        vals = [r[m] for r in rows if r.get(m) is not None and not (isinstance(r[m], float) and math.isnan(r[m]))]
        out[m] = float(np.mean(vals)) if vals else None
    return out


# --------------------------------------------------------------------------------------
# Lyrics set to the music: prosody, phrasing and rhythm of a sung melody
# --------------------------------------------------------------------------------------
#
# These figures read *sung notes*: melody.json note dicts (the contract of DESIGN.md)
# ``{"start": s, "end": s, "pitch": midi, "word": "City", "syllable": "Ci", "stress": 1,
# "phrase": 0, "melisma": False}``, where a ``melisma`` note continues the previous note's
# syllable, ``stress`` is the syllable's lexical stress (1 primary, 2 secondary, 0 none,
# None unknown) and ``phrase`` numbers the sung lines (one lyric line is one phrase).
# Times are seconds on the recording; ``beats`` and ``downbeats`` (seconds) give the grid.
#
# Metrical weight of an onset (:func:`metrical_weight`): the onset is placed on the
# finest grid (16ths: four per beat in simple meters, six per dotted-quarter beat in
# compound ones) and ranked DOWNBEAT 4 > MID_BAR 3 (the middle beat of a bar of 4 or 6
# beats: beat 3 of 4/4) > BEAT 2 > EIGHTH 1 (the 8th off-beats) > SIXTEENTH 0 > OFF_GRID
# -1 (further than 0.3 of a 16th from every grid point: triplets, rubato).
#
# Definitions (``None`` where undefined):
#
# * ``syllables_per_second_lines``: syllables divided by the time the lines take (each line
#   from its first onset to its last note's end, summed); ``syllables_per_second_overall``:
#   syllables divided by the whole sung span (first onset to last end, rests included).
# * ``stress_on_strong``: of the primary-stressed syllables (stress 1) with at least one
#   unstressed (stress 0) neighbour in the same line, the share whose onset's metrical
#   weight is higher than each unstressed neighbour's (strict).
#   ``stress_on_strong_in_word``: the same with neighbours only inside the same word (so
#   only words of two or more syllables count).
# * ``stressed_longer``: of the same syllables, the share that last at least as long as each
#   unstressed neighbour (a syllable lasts from its onset to the end of its last note; lengths
#   in beats, equal within a quarter of a 16th, :data:`LENGTH_TOLERANCE`).
# * ``pickup_ratio``: share of lines whose first onset is not on a downbeat and which go on
#   sounding at or past the next downbeat (an anacrusis); ``downbeat_start_ratio``: share of
#   lines that start on a downbeat.
# * ``breaths_per_line``: share of lines (all but the last) followed by a rest of at least
#   one beat or 0.3 s, whichever is shorter, before the next line.
# * ``longest_run_s``: the longest stretch of notes without such a rest between two of them.
# * ``onsets_on_beat`` / ``onsets_on_8th_offbeat`` / ``onsets_on_16th`` / ``onsets_off_grid``:
#   shares of note onsets at each grid level (beats include downbeats and mid-bar beats).
# * ``anticipation_ratio``: share of notes that start on an off-beat (8th or 16th) and are
#   still sounding a 16th past the next beat (held across it).
# * ``median_note_beats``: median note length in beats.
# * ``function_words_weak``: of the unstressed one-syllable words (the contract gives
#   monosyllabic function words stress 0: *the, a, to, of, and*), the share whose onset is
#   on a weak position: not a downbeat nor a mid-bar beat.
# * ``melisma_stressed_or_final``: of the syllables sung on more than one note, the share
#   that are stressed (1 or 2) or the last syllable of their line.

DOWNBEAT, MID_BAR, BEAT, EIGHTH, SIXTEENTH, OFF_GRID = 4, 3, 2, 1, 0, -1
BREATH_BEATS = 1.0  # a rest of one beat ...
BREATH_SECONDS = 0.3  # ... or of 0.3 s (whichever is shorter) is a breath
LENGTH_TOLERANCE = 1 / 16  # beats: a syllable this much shorter (a quarter of a 16th) is not heard as shorter
GRID_SNAP = 0.3  # an onset within 0.3 of a 16th of a grid point sits on it (a triplet 8th, 1/3 off, does not)

LYRIC_METRIC_NAMES = ("n_syllables", "syllables_per_second_lines", "syllables_per_second_overall",
                      "stress_on_strong", "stress_on_strong_in_word", "stressed_longer", "pickup_ratio",
                      "downbeat_start_ratio", "breaths_per_line", "longest_run_s", "onsets_on_beat",
                      "onsets_on_8th_offbeat", "onsets_on_16th", "onsets_off_grid", "anticipation_ratio",
                      "median_note_beats", "function_words_weak", "melisma_stressed_or_final")


def _grid(beats: Sequence[float], downbeats: Sequence[float], meter: str | None) -> tuple[np.ndarray, int, int, int]:
    """Sorted beats, 16ths per beat, beats per bar, and the beat index of a downbeat."""
    b = np.asarray(sorted(float(x) for x in beats), dtype=float)
    fine = 6 if meter in COMPOUND_METERS else 4
    bpb = beats_per_bar(b, downbeats, meter)
    if len(downbeats):
        first = round(float(beat_position(min(downbeats), b)))
    else:
        first = 0
    return b, fine, bpb, first


def metrical_weight(times: Sequence[float] | np.ndarray, beats: Sequence[float], downbeats: Sequence[float] = (),
                    meter: str | None = None) -> np.ndarray:
    """Metrical weight (DOWNBEAT 4 ... OFF_GRID -1, see above) of onsets in seconds."""
    b, fine, bpb, first = _grid(beats, downbeats, meter)
    pos = beat_position(np.asarray(times, dtype=float), b) * fine
    q = np.round(pos)
    out = np.full(len(pos), OFF_GRID, dtype=int)
    on = np.abs(pos - q) <= GRID_SNAP + 1e-9
    k = np.mod(q, fine).astype(int)
    beat_no = np.floor_divide(q, fine).astype(int)
    in_bar = np.mod(beat_no - first, bpb)
    mid = bpb // 2 if bpb >= 4 and bpb % 2 == 0 else -1
    level = np.where(k == 0, np.where(in_bar == 0, DOWNBEAT, np.where(in_bar == mid, MID_BAR, BEAT)),
                     np.where(k % 2 == 0, EIGHTH, SIXTEENTH))
    out[on] = level[on]
    return out


def _syllable_groups(notes: Sequence[dict]) -> list[dict]:
    """Sung syllables: a note that starts one plus the melisma notes that continue it.

    Each is ``{"start", "end", "stress", "phrase", "word", "notes"}`` where ``word`` numbers the words
    (a word ends once its syllables spell the note's ``word``; a new phrase starts a new word).
    """
    groups: list[dict] = []
    word_no, spelled = -1, ""
    prev: dict = {}
    for n in notes:
        if n.get("melisma") and groups:
            groups[-1]["end"] = max(groups[-1]["end"], float(n["end"]))
            groups[-1]["notes"] += 1
            continue
        text = _letters(n.get("syllable") or "")
        target = _letters(n.get("word") or n.get("syllable") or "")
        if (not spelled or n.get("phrase") != prev.get("phrase") or n.get("word") != prev.get("word")
                or not target.startswith(spelled + text)):
            word_no += 1
            spelled = ""
        spelled += text
        prev = n
        groups.append({"start": float(n["start"]), "end": float(n["end"]), "stress": n.get("stress"),
                       "phrase": n.get("phrase"), "word": word_no, "notes": 1})
        if len(spelled) >= len(target):
            spelled = ""  # the word is complete: the next syllable starts another
    return groups


def _letters(text: str) -> str:
    return "".join(ch for ch in str(text).lower() if ch.isalnum())


def _lines(notes: Sequence[dict]) -> list[list[dict]]:
    """Notes grouped by consecutive ``phrase`` numbers (sorted by onset)."""
    out: list[list[dict]] = []
    for n in notes:
        if out and out[-1][0].get("phrase") == n.get("phrase"):
            out[-1].append(n)
        else:
            out.append([n])
    return out


def _beat_time(index: float, beats: np.ndarray) -> float:
    """Time (s) of a fractional beat index, extrapolated linearly beyond both ends of the beats."""
    if index < 0:
        return float(beats[0] + index * (beats[1] - beats[0]))
    if index > len(beats) - 1:
        return float(beats[-1] + (index - len(beats) + 1) * (beats[-1] - beats[-2]))
    return float(np.interp(index, np.arange(len(beats)), beats))


def breath_threshold(t: float, beats: Sequence[float]) -> float:
    """Shortest rest (s) that counts as a breath at time ``t``: one local beat or 0.3 s, whichever is shorter."""
    b = np.asarray(beats, dtype=float)
    if len(b) < 2:
        return BREATH_SECONDS
    j = int(np.clip(np.searchsorted(b, t) - 1, 0, len(b) - 2))
    return min(BREATH_BEATS * float(b[j + 1] - b[j]), BREATH_SECONDS)


def _prosody(groups: list[dict], weights: np.ndarray, lengths: np.ndarray, scope: str
             ) -> tuple[float | None, float | None]:
    """(stress_on_strong, stressed_longer) of syllable groups with onset ``weights`` and ``lengths`` in beats."""
    strong = longer = counted = 0
    for i, g in enumerate(groups):
        if g["stress"] != 1:
            continue
        nbrs = [j for j in (i - 1, i + 1) if 0 <= j < len(groups) and groups[j]["stress"] == 0
                and groups[j]["phrase"] == g["phrase"] and (scope == "line" or groups[j]["word"] == g["word"])]
        if not nbrs:
            continue
        counted += 1
        strong += all(weights[i] > weights[j] for j in nbrs)
        longer += all(lengths[i] >= lengths[j] - LENGTH_TOLERANCE for j in nbrs)
    if not counted:
        return None, None
    return strong / counted, longer / counted


def lyric_metrics(notes: Sequence[dict], *, beats: Sequence[float], downbeats: Sequence[float] = (),
                  meter: str | None = None) -> dict:
    """Prosody, phrasing and rhythm figures of sung notes (melody.json note dicts; see above).

    ``beats``/``downbeats`` in seconds (at least two beats); ``meter`` (``"6/8"``) decides
    whether a beat holds two 8ths or three. Notes without ``stress`` (None) take no part in
    the stress figures; notes without ``phrase`` form one line.
    """
    ns = sorted(notes, key=lambda n: float(n["start"]))
    out: dict = {m: None for m in LYRIC_METRIC_NAMES}
    b = np.asarray(sorted(float(x) for x in beats), dtype=float)
    groups = _syllable_groups(ns)
    out["n_syllables"] = len(groups)
    if not ns or len(b) < 2:
        return out
    onsets = np.array([float(n["start"]) for n in ns])
    ends = np.array([float(n["end"]) for n in ns])
    lines = _lines(ns)

    n_syl = len(groups)
    line_time = sum(max(float(n["end"]) for n in ln) - float(ln[0]["start"]) for ln in lines)
    out["syllables_per_second_lines"] = n_syl / line_time if line_time > 0 else None
    span = float(ends.max() - onsets.min())
    out["syllables_per_second_overall"] = n_syl / span if span > 0 else None

    g_weights = metrical_weight([g["start"] for g in groups], b, downbeats, meter) if groups else np.zeros(0)
    g_lengths = (beat_position([g["end"] for g in groups], b) - beat_position([g["start"] for g in groups], b)
                 if groups else np.zeros(0))
    out["stress_on_strong"], out["stressed_longer"] = _prosody(groups, g_weights, g_lengths, "line")
    out["stress_on_strong_in_word"], _ = _prosody(groups, g_weights, g_lengths, "word")

    _, fine, bpb, first = _grid(b, downbeats, meter)
    starts = [float(ln[0]["start"]) for ln in lines]
    start_w = metrical_weight(starts, b, downbeats, meter)
    pickups = 0
    for ln, s, w in zip(lines, starts, start_w, strict=True):
        if w == DOWNBEAT:
            continue
        beat_no = math.floor(float(beat_position(s, b)) + 1e-6)
        to_next = (first - beat_no) % bpb or bpb  # beats from the start's beat to the next downbeat
        pickups += max(float(n["end"]) for n in ln) > _beat_time(beat_no + to_next, b) + 1e-3
    out["pickup_ratio"] = pickups / len(lines)
    out["downbeat_start_ratio"] = float(np.mean(start_w == DOWNBEAT))

    if len(lines) > 1:
        breaths = 0
        for ln, nxt in itertools.pairwise(lines):
            end = max(float(n["end"]) for n in ln)
            breaths += float(nxt[0]["start"]) - end >= breath_threshold(end, b) - 1e-6
        out["breaths_per_line"] = breaths / (len(lines) - 1)

    longest, run_start, run_end = 0.0, onsets[0], ends[0]
    for s, e in zip(onsets[1:], ends[1:], strict=True):
        if s - run_end >= breath_threshold(run_end, b) - 1e-6:
            longest = max(longest, run_end - run_start)
            run_start = s
        run_end = max(run_end, e)
    out["longest_run_s"] = float(max(longest, run_end - run_start))

    w = metrical_weight(onsets, b, downbeats, meter)
    out["onsets_on_beat"] = float(np.mean(w >= BEAT))
    out["onsets_on_8th_offbeat"] = float(np.mean(w == EIGHTH))
    out["onsets_on_16th"] = float(np.mean(w == SIXTEENTH))
    out["onsets_off_grid"] = float(np.mean(w == OFF_GRID))
    start_pos, end_pos = beat_position(onsets, b), beat_position(ends, b)
    held = end_pos >= np.floor(start_pos + 1e-6) + 1 + 1 / fine - 1e-6
    out["anticipation_ratio"] = float(np.mean(((w == EIGHTH) | (w == SIXTEENTH)) & held))
    out["median_note_beats"] = float(np.median(end_pos - start_pos))

    words: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        words.setdefault(g["word"], []).append(i)
    function = [idx[0] for idx in words.values() if len(idx) == 1 and groups[idx[0]]["stress"] == 0]
    if function:
        out["function_words_weak"] = float(np.mean([g_weights[i] <= BEAT for i in function]))
    sustained = [i for i, g in enumerate(groups) if g["notes"] > 1]
    if sustained:
        final = {i for i, g in enumerate(groups) if i + 1 == len(groups) or groups[i + 1]["phrase"] != g["phrase"]}
        out["melisma_stressed_or_final"] = float(np.mean([groups[i]["stress"] in (1, 2) or i in final
                                                          for i in sustained]))
    return out
