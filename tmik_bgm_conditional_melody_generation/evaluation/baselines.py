"""Two simple melody writers to compare the model with, on the same timeline and plan.

Both are plain functions of a :class:`..timeline.Timeline` (the analysed background's
grid: 16th-note columns, chords, key) and a :class:`..constraints.LeadPlan` (vocal range,
where notes may start and sound: phrases with breaths), and return a
:class:`..getscore.Song` on the timeline's grid, deterministic for a given ``rng`` seed.

* :func:`random_in_key`: onsets on the 8th grid where the plan allows them, each taken
  with a probability that gives about :data:`NOTES_PER_SECOND` notes per second (the
  model's typical density); pitches uniformly random among the in-key pitches of the range.
* :func:`rule_based`: a note on every beat, the chord tone nearest the previous note (a
  different pitch from it, ties towards the middle of the range); half the time an 8th-note
  passing note on the beat's last 8th, one scale step from the beat's note towards the
  next beat's.
"""

from __future__ import annotations

import numpy as np

from ..constraints import LeadPlan
from ..getscore import MAX_DURATION, Song, chord_tones, scale_pcs
from ..timeline import Timeline

NOTES_PER_SECOND = 2.0
EIGHTH_COLS = 2  # an 8th note in 16th-note columns (beats hold 4 or 6 columns)
REST_PROBABILITY = 0.2  # random_in_key: chance that a note stops halfway to the next one


def _in_key_pitches(timeline: Timeline, plan: LeadPlan) -> np.ndarray:
    scale = set(scale_pcs(timeline.tonic, timeline.mode))
    return np.array([p for p in range(plan.low, plan.high + 1) if p % 12 in scale], dtype=int)


def _with_durations(onsets: list[tuple[int, int]], plan: LeadPlan, n_cols: int,
                    shorten: np.ndarray | None = None) -> list[tuple[int, int, int]]:
    """``(column, pitch)`` onsets -> notes lasting to the next onset, never over a breath."""
    room = plan.max_duration()
    notes = []
    for i, (c, p) in enumerate(onsets):
        nxt = onsets[i + 1][0] if i + 1 < len(onsets) else n_cols
        d = min(nxt - c, int(room[c]), MAX_DURATION)
        if shorten is not None and shorten[i] and d >= 2 * EIGHTH_COLS:
            d = max(EIGHTH_COLS, (d // 2) // EIGHTH_COLS * EIGHTH_COLS)
        if d >= 1:
            notes.append((int(c), int(d), int(p)))
    return notes


def _eighth_onsets(timeline: Timeline, plan: LeadPlan) -> np.ndarray:
    cols = np.arange(timeline.n_cols)
    on_grid = (cols % timeline.beat_cols) % EIGHTH_COLS == 0
    return cols[on_grid & plan.onset_allowed[: timeline.n_cols]]


def random_in_key(timeline: Timeline, plan: LeadPlan, rng: np.random.Generator) -> Song:
    """Random rhythm on the 8th grid (about 2 notes/s), pitches uniformly random in key and range."""
    song = timeline.song("random_in_key")
    pitches = _in_key_pitches(timeline, plan)
    if not len(pitches):
        return song
    t = timeline.column_times
    onsets = []
    for c in _eighth_onsets(timeline, plan):
        seconds = float(t[min(c + EIGHTH_COLS, len(t) - 1)] - t[c])
        if rng.random() < float(np.clip(NOTES_PER_SECOND * seconds, 0.05, 0.95)):
            onsets.append((int(c), int(rng.choice(pitches))))
    shorten = rng.random(len(onsets)) < REST_PROBABILITY
    song.notes = _with_durations(onsets, plan, timeline.n_cols, shorten)
    return song


def _nearest(candidates: list[int], prev: int | None, centre: float) -> int:
    if prev is None:
        return min(candidates, key=lambda p: (abs(p - centre), p))
    moves = [p for p in candidates if p != prev] or candidates
    return min(moves, key=lambda p: (abs(p - prev), abs(p - centre), p))


def _scale_step(pitch: int, target: int, scale_pitches: np.ndarray) -> int | None:
    """The in-key pitch one scale step from ``pitch`` towards ``target`` (None when there is none)."""
    if target == pitch:
        return None
    side = scale_pitches[scale_pitches > pitch] if target > pitch else scale_pitches[scale_pitches < pitch][::-1]
    return int(side[0]) if len(side) else None


def rule_based(timeline: Timeline, plan: LeadPlan, rng: np.random.Generator) -> Song:
    """A chord tone on every beat (nearest the previous note), passing 8ths between beats half the time."""
    song = timeline.song("rule_based")
    centre = (plan.low + plan.high) / 2
    scale_pitches = _in_key_pitches(timeline, plan)
    beat = timeline.beat_cols
    beats: list[tuple[int, int]] = []
    prev: int | None = None
    for c in range(0, timeline.n_cols, beat):
        chord = timeline.chord_at(c)
        if chord is None or not plan.onset_allowed[c]:
            continue
        tones = set(chord_tones(*chord))
        candidates = [p for p in range(plan.low, plan.high + 1) if p % 12 in tones]
        if not candidates:
            continue
        prev = _nearest(candidates, prev, centre)
        beats.append((c, prev))
    onsets: list[tuple[int, int]] = []
    for i, (c, p) in enumerate(beats):
        onsets.append((c, p))
        if i + 1 >= len(beats) or beats[i + 1][0] != c + beat:
            continue
        passing_col = c + beat - EIGHTH_COLS  # the beat's last 8th
        if rng.random() >= 0.5 or not plan.onset_allowed[passing_col]:
            continue
        step = _scale_step(p, beats[i + 1][1], scale_pitches)
        if step is not None and step != beats[i + 1][1]:
            onsets.append((passing_col, step))
    song.notes = _with_durations(onsets, plan, timeline.n_cols)
    return song
