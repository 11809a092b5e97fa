"""The background track's analysis as a GETScore grid on the recording's own timeline.

Each detected beat is split into equal grid steps (four 16ths; six in compound meters,
whose beat is a dotted quarter), so a tempo that drifts moves the grid with it, and the
melody written on the grid lands on the audio. Columns carry the analysis' chords, key,
meter position (counted from the detected downbeats) and section.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from .analysis import Analysis
from .getscore import (
    METER,
    METER_GRID,
    METER_TOKENS,
    QUALITIES,
    Song,
    encode,
    parse_chord_label,
)

_METER_INDEX = {t: i for i, t in enumerate(METER_TOKENS)}
_KEY_NAMES = {n: i for i, n in enumerate(("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"))} | {
    "Db": 1, "D#": 3, "Gb": 6, "G#": 8, "A#": 10, "Cb": 11, "E#": 5, "Fb": 4, "B#": 0}


class TimelineError(ValueError):
    """The analysis gives too little to write a melody on (e.g. fewer than two beats)."""

    code = "no_beat_grid"


def parse_key(name: str) -> tuple[int, str]:
    """``"G major"`` -> ``(7, "major")``."""
    try:
        tonic, mode = name.split()
        return _KEY_NAMES[tonic], {"major": "major", "minor": "minor"}[mode]
    except (ValueError, KeyError):
        raise ValueError(f"key {name!r} is not of the form 'G major' / 'E minor'") from None


@dataclass
class Timeline:
    """The grid of a background track.

    ``column_times`` has ``n_cols + 1`` entries (the last is where the grid ends);
    ``bar_position`` is each column's position in its bar (0 = downbeat);
    ``chords`` are ``(start_col, end_col, root, quality)``; ``sections`` are
    ``(start_col, end_col, label)``; ``bar_starts`` are the downbeat columns.
    """

    meter: str
    n_cols: int
    column_times: np.ndarray
    bar_position: np.ndarray
    bar_starts: list[int]
    tonic: int
    mode: str
    chords: list[tuple[int, int, int, str]] = field(default_factory=list)
    sections: list[tuple[int, int, str]] = field(default_factory=list)

    @property
    def beat_cols(self) -> int:
        return METER_GRID[self.meter][0]

    @property
    def bar_cols(self) -> int:
        return METER_GRID[self.meter][1]

    @property
    def first_downbeat(self) -> int:
        return self.bar_starts[0] if self.bar_starts else 0

    def song(self, song_id: str = "melody") -> Song:
        """An empty Song (chords, key and meter, no notes) on this grid."""
        return Song(song_id, self.meter, self.n_cols, self.first_downbeat, self.tonic, self.mode, [],
                    list(self.chords))

    def grid(self, song: Song | None = None) -> np.ndarray:
        """GETScore grid of ``song`` (default: no melody) with this timeline's meter row."""
        g = encode(song or self.song())
        g[METER] = [_METER_INDEX[(self.meter, int(p))] for p in self.bar_position]
        return g

    def note_times(self, notes: list[tuple[int, int, int]]) -> list[tuple[float, float, int]]:
        """Grid notes ``(column, length, pitch)`` as ``(start_s, end_s, pitch)`` on the recording."""
        t = self.column_times
        return [(float(t[c]), float(t[min(c + d, len(t) - 1)]), int(p)) for c, d, p in notes]

    def chord_at(self, col: int) -> tuple[int, str] | None:
        for c0, c1, root, quality in self.chords:
            if c0 <= col < c1:
                return root, quality
        return None

    def col_of_time(self, seconds: float | np.ndarray) -> np.ndarray:
        """Nearest grid column of a time (clipped to the grid)."""
        t = self.column_times
        idx = np.clip(np.searchsorted(t, seconds), 1, len(t) - 1)
        left = t[idx - 1]
        right = t[idx]
        nearest = np.where(np.abs(np.asarray(seconds) - left) <= np.abs(right - np.asarray(seconds)), idx - 1, idx)
        return np.clip(nearest, 0, self.n_cols - 1)


def timeline_from_analysis(analysis: Analysis) -> Timeline:
    """The grid of an analysed background track."""
    meter = analysis.time_signature if analysis.time_signature in METER_GRID else "4/4"
    beat_cols, bar_cols = METER_GRID[meter]
    beats = np.asarray(sorted(analysis.beats), dtype=float)
    if len(beats) < 2:
        raise TimelineError("the track has fewer than two detected beats, so there is no grid to write a "
                            "melody on; use a track with a steady pulse (or raise Beat Detection Sensitivity)")
    # One more beat after the last, at the last interval, bounded by the end of the audio.
    last = beats[-1] + (beats[-1] - beats[-2])
    if last <= analysis.duration + 1e-6:
        beats = np.append(beats, last)
    times = [np.linspace(a, b, beat_cols, endpoint=False) for a, b in itertools.pairwise(beats)]
    column_times = np.append(np.concatenate(times), beats[-1])
    n_cols = len(column_times) - 1
    beat_index = np.arange(n_cols) // beat_cols
    down = {int(np.argmin(np.abs(beats - d))) for d in analysis.downbeats}
    down = sorted(b for b in down if b < len(beats) - 1)
    position = np.zeros(n_cols, dtype=np.int64)
    beats_per_bar = bar_cols // beat_cols
    if not down:
        down = [0]
    for c in range(n_cols):
        b = beat_index[c]
        prev = [d for d in down if d <= b]
        if prev:
            k = b - prev[-1]
        else:  # pickup before the first downbeat: count back from it
            k = beats_per_bar - ((down[0] - b) % beats_per_bar or beats_per_bar)
        position[c] = min(k * beat_cols + c % beat_cols, bar_cols - 1)
    bar_starts = [d * beat_cols for d in down]
    tonic, mode = parse_key(analysis.key)
    mids = (column_times[:-1] + column_times[1:]) / 2
    chords: list[tuple[int, int, int, str]] = []
    spans = sorted(analysis.chords)
    j = 0
    for c, t in enumerate(mids):
        while j + 1 < len(spans) and spans[j][1] <= t:
            j += 1
        rq = None
        if spans and spans[j][0] <= t < spans[j][1]:
            rq = parse_chord_label(spans[j][2])
        if rq is None or rq[1] not in QUALITIES:
            continue
        if chords and chords[-1][1] == c and chords[-1][2:] == rq:
            chords[-1] = (chords[-1][0], c + 1, *rq)
        else:
            chords.append((c, c + 1, *rq))
    sections = []
    for s, e, label in analysis.sections:
        c0, c1 = int(np.searchsorted(mids, s)), int(np.searchsorted(mids, e))
        if c1 > c0:
            sections.append((c0, c1, str(label)))
    return Timeline(meter, n_cols, column_times, position, bar_starts, tonic, mode, chords, sections)

