"""GETScore: a song as a grid of tokens, tracks by rows and time by columns.

Our GETScore follows the GETMusic paper's idea (one column per grid step, a pitch row and
a duration row per track, a note sits in the column of its onset) with the rows a sung
lead melody needs:

=============  ==================================================================
row            tokens
=============  ==================================================================
lead_pitch     ``PAD`` (no onset here) or a MIDI pitch 36..96
lead_duration  ``PAD`` or a length of 1..16 columns (longer notes are capped)
chord_root     ``N`` or one of 12 roots, in every column the chord covers
chord_quality  ``N`` or maj, min, 7, maj7, min7, dim, sus4 (the analysis' vocabulary)
key            one of 24 keys, in every column
meter          (meter, position of the column in its bar): the metrical grid
=============  ==================================================================

The grid step is a 16th note (:data:`COLS_PER_QUARTER`); in compound meters a beat is six
columns. The key and meter rows are the compact summary of the accompaniment that the
audio analysis gives, alongside the chords; the official GETMusic layout (14 rows, its
own vocabulary) is handled by :mod:`.official`.

Each row has its own small vocabulary (ids ``0..size-1``); the model adds one more id per
row, the diffusion's mask (:func:`mask_ids`). Everything here is plain data: a
:class:`Song` (notes and chords in grid columns) and numpy ``int64`` arrays of shape
``(len(ROWS), n_cols)``. MIDI reading and writing (:func:`song_from_midi`,
:func:`song_to_midi`) use one tempo map per file, so the same writer puts a melody on a
recording's own timeline (:func:`column_times` come from the detected beats).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

COLS_PER_QUARTER = 4
TICKS_PER_QUARTER = 480
TICKS_PER_COL = TICKS_PER_QUARTER // COLS_PER_QUARTER

# meter -> (beat length, bar length) in columns
METER_GRID: dict[str, tuple[int, int]] = {
    "2/4": (4, 8), "3/4": (4, 12), "4/4": (4, 16), "6/8": (6, 12), "9/8": (6, 18), "12/8": (6, 24),
}
QUALITIES = ("maj", "min", "7", "maj7", "min7", "dim", "sus4")
QUALITY_TONES: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10), "dim": (0, 3, 6), "sus4": (0, 5, 7),
}
PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
# Natural minor plus the raised 6th and 7th (melodic/harmonic minor), all common in tunes.
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 9, 10, 11)

LOW_PITCH, HIGH_PITCH = 36, 96
MAX_DURATION = 16
PAD = 0  # lead rows: nothing starts here; chord rows: no chord (N)

ROWS = ("lead_pitch", "lead_duration", "chord_root", "chord_quality", "key", "meter")
LEAD_PITCH, LEAD_DURATION, CHORD_ROOT, CHORD_QUALITY, KEY, METER = range(len(ROWS))
METER_TOKENS: tuple[tuple[str, int], ...] = tuple(
    (m, p) for m, (_, bar) in METER_GRID.items() for p in range(bar))
_METER_INDEX = {t: i for i, t in enumerate(METER_TOKENS)}
ROW_SIZES = (1 + HIGH_PITCH - LOW_PITCH + 1, 1 + MAX_DURATION, 13, 1 + len(QUALITIES), 24, len(METER_TOKENS))


def mask_ids() -> np.ndarray:
    """The mask token of each row: one past the row's last real token."""
    return np.array(ROW_SIZES, dtype=np.int64)


@dataclass
class Song:
    """A lead melody with its chords, key and meter, on the 16th-note grid.

    ``notes`` are ``(column, length, midi_pitch)``, monophonic, sorted; ``chords`` are
    ``(start_column, end_column, root_pitch_class, quality)``. ``first_downbeat`` is the
    column of the first bar line (a pickup comes before it).
    """

    id: str
    meter: str
    n_cols: int
    first_downbeat: int
    tonic: int
    mode: str  # "major" | "minor"
    notes: list[tuple[int, int, int]] = field(default_factory=list)
    chords: list[tuple[int, int, int, str]] = field(default_factory=list)
    source: str = ""
    split: str = "train"
    lyrics: list[str] | None = None  # one syllable per note, when known

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Song:
        d = dict(d)
        d["notes"] = [tuple(n) for n in d.get("notes", [])]
        d["chords"] = [tuple(c) for c in d.get("chords", [])]
        return cls(**d)

    @property
    def key_name(self) -> str:
        return f"{PITCH_NAMES[self.tonic]} {self.mode}"


# --------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------


def pitch_token(pitch: int) -> int:
    return pitch - LOW_PITCH + 1


def token_pitch(token: int) -> int:
    return int(token) + LOW_PITCH - 1


def key_token(tonic: int, mode: str) -> int:
    return tonic % 12 + (12 if mode == "minor" else 0)


def token_key(token: int) -> tuple[int, str]:
    return int(token) % 12, ("minor" if token >= 12 else "major")


def meter_row(meter: str, n_cols: int, first_downbeat: int) -> np.ndarray:
    """The meter row: each column's (meter, position in bar) token."""
    if meter not in METER_GRID:
        raise ValueError(f"meter {meter!r} is not modelled; use one of {', '.join(METER_GRID)}")
    bar = METER_GRID[meter][1]
    pos = (np.arange(n_cols) - first_downbeat) % bar
    base = _METER_INDEX[(meter, 0)]
    return base + pos


def chord_tones(root: int, quality: str) -> tuple[int, ...]:
    return tuple((root + i) % 12 for i in QUALITY_TONES[quality])


def scale_pcs(tonic: int, mode: str) -> tuple[int, ...]:
    """Pitch classes a melody in this key uses (minor includes raised 6th and 7th)."""
    return tuple((tonic + i) % 12 for i in (MAJOR_SCALE if mode == "major" else MINOR_SCALE))


def encode(song: Song) -> np.ndarray:
    """The GETScore grid of a song, shape ``(len(ROWS), song.n_cols)``."""
    n = song.n_cols
    grid = np.zeros((len(ROWS), n), dtype=np.int64)
    for col, length, pitch in song.notes:
        if not 0 <= col < n:
            continue
        if not LOW_PITCH <= pitch <= HIGH_PITCH:
            raise ValueError(f"pitch {pitch} outside the GETScore range {LOW_PITCH}..{HIGH_PITCH}")
        grid[LEAD_PITCH, col] = pitch_token(pitch)
        grid[LEAD_DURATION, col] = min(max(1, length), MAX_DURATION)
    for c0, c1, root, quality in song.chords:
        c0, c1 = max(0, c0), min(n, c1)
        grid[CHORD_ROOT, c0:c1] = root % 12 + 1
        grid[CHORD_QUALITY, c0:c1] = QUALITIES.index(quality) + 1
    grid[KEY, :] = key_token(song.tonic, song.mode)
    grid[METER, :] = meter_row(song.meter, n, song.first_downbeat)
    return grid


def decode_notes(grid: np.ndarray) -> list[tuple[int, int, int]]:
    """Monophonic notes ``(column, length, pitch)`` of a grid's lead rows.

    A note lasts its duration token, cut at the next onset (one voice sings it).
    """
    cols = np.flatnonzero((grid[LEAD_PITCH] > PAD) & (grid[LEAD_PITCH] < ROW_SIZES[LEAD_PITCH]))
    notes = []
    n = grid.shape[1]
    for i, c in enumerate(cols):
        d = int(grid[LEAD_DURATION, c])
        d = d if 1 <= d <= MAX_DURATION else 1
        nxt = cols[i + 1] if i + 1 < len(cols) else n
        notes.append((int(c), int(min(d, nxt - c, n - c)), token_pitch(grid[LEAD_PITCH, c])))
    return notes


def decode_chords(grid: np.ndarray) -> list[tuple[int, int, int, str]]:
    """Chord spans of a grid's chord rows (runs of equal root and quality; N left out)."""
    root, qual = grid[CHORD_ROOT], grid[CHORD_QUALITY]
    spans: list[tuple[int, int, int, str]] = []
    start = 0
    n = grid.shape[1]
    for c in range(1, n + 1):
        if c == n or root[c] != root[start] or qual[c] != qual[start]:
            if 0 < root[start] <= 12 and 0 < qual[start] <= len(QUALITIES):
                spans.append((start, c, int(root[start]) - 1, QUALITIES[int(qual[start]) - 1]))
            start = c
    return spans


def decode(grid: np.ndarray, template: Song) -> Song:
    """A Song from a grid; id, meter, downbeat and key from ``template``."""
    tonic, mode = token_key(grid[KEY, 0]) if grid.shape[1] else (template.tonic, template.mode)
    return Song(template.id, template.meter, grid.shape[1], template.first_downbeat, tonic, mode,
                decode_notes(grid), decode_chords(grid), template.source, template.split)


def transpose(grid: np.ndarray, semitones: int) -> np.ndarray | None:
    """The grid moved by ``semitones``; None when a lead note would leave the pitch range."""
    out = grid.copy()
    if semitones == 0:
        return out
    lead = grid[LEAD_PITCH]
    onset = (lead > PAD) & (lead < ROW_SIZES[LEAD_PITCH])
    moved = lead[onset] + semitones
    if moved.size and (moved.min() < 1 or moved.max() > HIGH_PITCH - LOW_PITCH + 1):
        return None
    out[LEAD_PITCH, onset] = moved
    root = grid[CHORD_ROOT]
    has = (root > 0) & (root <= 12)
    out[CHORD_ROOT, has] = (root[has] - 1 + semitones) % 12 + 1
    key = grid[KEY]
    out[KEY] = (key % 12 + semitones) % 12 + (key // 12) * 12
    return out


# --------------------------------------------------------------------------------------
# MIDI
# --------------------------------------------------------------------------------------


def chord_label(root: int, quality: str) -> str:
    """Harte label, e.g. ``G:maj``."""
    return f"{PITCH_NAMES[root % 12]}:{quality}"


def parse_chord_label(label: str) -> tuple[int, str] | None:
    """(root, quality) of a Harte label in our vocabulary; None for ``N`` and others."""
    if not label or label == "N" or ":" not in label:
        return None
    name, quality = label.split(":", 1)
    quality = quality.split("/", 1)[0]
    names = {n: i for i, n in enumerate(PITCH_NAMES)} | {
        "Db": 1, "D#": 3, "Gb": 6, "G#": 8, "A#": 10, "Cb": 11, "B#": 0, "E#": 5, "Fb": 4}
    if name not in names or quality not in QUALITY_TONES:
        return None
    return names[name], quality


def _tempo_events(column_times: np.ndarray | None, bpm: float, meter: str) -> list[tuple[int, float]]:
    """(tick, bpm) tempo changes so that column ``c`` sounds at ``column_times[c]``."""
    if column_times is None:
        return [(0, float(bpm))]
    beat = METER_GRID[meter][0] if meter in METER_GRID else COLS_PER_QUARTER
    events = []
    times = np.asarray(column_times, dtype=float)
    for c in range(0, len(times) - 1, beat):
        c1 = min(c + beat, len(times) - 1)
        sec = times[c1] - times[c]
        if sec <= 0:
            continue
        quarters = (c1 - c) / COLS_PER_QUARTER
        q_bpm = 60.0 * quarters / sec
        if not events or abs(events[-1][1] - q_bpm) > 1e-3:
            events.append((c * TICKS_PER_COL, q_bpm))
    return events or [(0, float(bpm))]


def midi_tempo_map(column_times: Sequence[float] | None, meter: str,
                   bpm: float = 120.0) -> tuple[int, list[tuple[int, float]]]:
    """The grid :func:`song_to_midi` writes: (lead-in columns, ``(tick, bpm)`` tempo changes at 480 per quarter).

    Column ``c`` sounds at ``column_times[c]`` seconds and tick 0 at 0 s: the audio before the grid
    becomes whole beats of lead-in rest (the returned number of columns). Without ``column_times``
    one tempo, ``bpm``, and no lead-in. melody.json carries the same map as ``tempo_map``.
    """
    times = None if column_times is None else np.asarray(column_times, dtype=float)
    offset = 0
    if times is not None and times[0] > 1e-3:
        # The audio before the grid becomes whole beats of lead-in rest, so tick 0 is 0 s.
        beat = METER_GRID[meter][0]
        k = min(beat, len(times) - 1)
        sec_per_col = max((times[k] - times[0]) / max(k, 1), 1e-3)
        offset = max(1, math.ceil(times[0] / sec_per_col / beat)) * beat
        times = np.concatenate([times[0] * np.arange(offset) / offset, times])
    return offset, _tempo_events(times, bpm, meter)


def song_to_midi(song: Song, path: str | Path, *, column_times: Sequence[float] | None = None,
                 bpm: float = 120.0, chords_track: bool = True) -> None:
    """Write a Song as a standard MIDI file (480 ticks per quarter).

    With ``column_times`` (seconds of each grid column, one more than ``n_cols`` for the
    end) the tempo map puts every note where it sounds in the recording, and the music
    before the first column is a lead-in rest. The lead is track 1 ("lead"), one note at a
    time, with a lyric meta event per note when ``song.lyrics`` is set; chords are markers
    (Harte labels) and, with ``chords_track``, block chords on a second track.
    """
    import miditoolkit
    from miditoolkit.midi.containers import Instrument, KeySignature, Lyric, Marker, Note, TempoChange, TimeSignature

    offset, tempos = midi_tempo_map(column_times, song.meter, bpm)
    midi = miditoolkit.MidiFile(ticks_per_beat=TICKS_PER_QUARTER)
    for tick, q_bpm in tempos:
        midi.tempo_changes.append(TempoChange(q_bpm, tick))
    num, den = (int(x) for x in song.meter.split("/"))
    # The first bar line sits at the first downbeat; a pickup before it keeps its length.
    midi.time_signature_changes.append(TimeSignature(num, den, 0))
    key_name = PITCH_NAMES[song.tonic] + ("m" if song.mode == "minor" else "")
    midi.key_signature_changes.append(KeySignature(key_name, 0))
    lead = Instrument(program=0, is_drum=False, name="lead")
    for i, (col, length, pitch) in enumerate(song.notes):
        start = (col + offset) * TICKS_PER_COL
        lead.notes.append(Note(velocity=96, pitch=int(pitch), start=start, end=start + length * TICKS_PER_COL))
        if song.lyrics and i < len(song.lyrics) and song.lyrics[i]:
            midi.lyrics.append(Lyric(song.lyrics[i], start))
    midi.instruments.append(lead)
    if song.chords:
        comp = Instrument(program=0, is_drum=False, name="chords")
        for c0, c1, root, quality in song.chords:
            midi.markers.append(Marker(chord_label(root, quality), (c0 + offset) * TICKS_PER_COL))
            for pc in chord_tones(root, quality):
                comp.notes.append(Note(velocity=60, pitch=48 + pc, start=(c0 + offset) * TICKS_PER_COL,
                                       end=(c1 + offset) * TICKS_PER_COL))
        if chords_track:
            midi.instruments.append(comp)
    midi.markers.append(Marker(f"downbeat:{song.first_downbeat + offset}", 0))
    midi.max_tick = (song.n_cols + offset) * TICKS_PER_COL
    midi.dump(str(path), charset="utf-8")


def song_from_midi(path: str | Path, *, song_id: str = "") -> Song:
    """Read a MIDI file into a Song on the 16th-note grid.

    The lead is the track named "lead" (else the first non-drum track); when several
    notes start together the highest is kept and each note is cut at the next onset.
    Chords come from Harte-label markers when the file has them (as :func:`song_to_midi`
    writes), else from the other tracks (best-matching chord per beat). Meter and key come
    from the first time and key signatures (key estimated from the notes when absent).
    """
    import miditoolkit

    midi = miditoolkit.MidiFile(str(path))
    scale = COLS_PER_QUARTER / midi.ticks_per_beat
    ts = midi.time_signature_changes[0] if midi.time_signature_changes else None
    meter = f"{ts.numerator}/{ts.denominator}" if ts else "4/4"
    meter = {"2/2": "4/4"}.get(meter, meter)
    if meter not in METER_GRID:
        raise ValueError(f"{path}: meter {meter} is not modelled ({', '.join(METER_GRID)})")
    pitched = [i for i in midi.instruments if not i.is_drum and i.notes]
    if not pitched:
        raise ValueError(f"{path}: no pitched track to read a melody from")
    lead = next((i for i in pitched if i.name.strip().lower() == "lead"), pitched[0])
    onsets: dict[int, tuple[int, int]] = {}
    for n in sorted(lead.notes, key=lambda n: (n.start, -n.pitch)):
        c = round(n.start * scale)
        if c not in onsets:
            onsets[c] = (max(1, round((n.end - n.start) * scale)), n.pitch)
    downbeat = 0
    for m in midi.markers:
        if m.text.startswith("downbeat:"):
            downbeat = int(m.text.split(":", 1)[1])
    end_tick = max(n.end for i in pitched for n in i.notes)
    n_cols = max(1, math.ceil(end_tick * scale - 1e-6))
    cols = sorted(onsets)
    notes = []
    for i, c in enumerate(cols):
        d, p = onsets[c]
        nxt = cols[i + 1] if i + 1 < len(cols) else n_cols
        notes.append((c, min(d, nxt - c), p))
    chords: list[tuple[int, int, int, str]] = []
    labelled = sorted((round(m.time * scale), parse_chord_label(m.text)) for m in midi.markers
                      if ":" in m.text and not m.text.startswith("downbeat:"))
    if labelled:
        for j, (c, rq) in enumerate(labelled):
            c1 = labelled[j + 1][0] if j + 1 < len(labelled) else n_cols
            comp = [i for i in pitched if i is not lead]
            if comp:  # the span ends where the written chord ends
                ends = [round(n.end * scale) for i in comp for n in i.notes if round(n.start * scale) == c]
                c1 = min(c1, max(ends)) if ends else c1
            if rq is not None and c1 > c:
                chords.append((c, c1, rq[0], rq[1]))
    else:
        chords = _infer_chords([n for i in pitched if i is not lead for n in i.notes], scale, n_cols,
                               METER_GRID[meter][0])
    tonic, mode = _key_from_midi(midi, notes, chords)
    by_onset = {round(ly.time * scale): ly.text for ly in midi.lyrics}
    lyrics = [by_onset.get(c, "") for c, _, _ in notes] if by_onset else None
    return Song(song_id or Path(path).stem, meter, n_cols, downbeat, tonic, mode, notes, chords,
                source=str(path), lyrics=lyrics)


def _infer_chords(notes, scale: float, n_cols: int, beat: int) -> list[tuple[int, int, int, str]]:
    spans: list[tuple[int, int, int, str]] = []
    for c0 in range(0, n_cols, beat):
        c1 = min(n_cols, c0 + beat)
        hist = np.zeros(12)
        for n in notes:
            s, e = n.start * scale, n.end * scale
            hist[n.pitch % 12] += max(0.0, min(e, c1) - max(s, c0))
        if hist.sum() <= 0:
            continue
        best = max(((hist[list(chord_tones(r, q))].sum() - 0.3 * hist.sum() * (len(QUALITY_TONES[q]) > 3), -k, r, q)
                    for k, q in enumerate(QUALITIES) for r in range(12)))
        _, _, r, q = best
        if spans and spans[-1][1] == c0 and spans[-1][2:] == (r, q):
            spans[-1] = (spans[-1][0], c1, r, q)
        else:
            spans.append((c0, c1, r, q))
    return spans


def _key_from_midi(midi, notes, chords) -> tuple[int, str]:
    if midi.key_signature_changes:
        name = midi.key_signature_changes[0].key_name
        minor = name.endswith("m")
        tonic_name = name[:-1] if minor else name
        names = {n: i for i, n in enumerate(PITCH_NAMES)} | {"Db": 1, "D#": 3, "Gb": 6, "G#": 8, "A#": 10,
                                                              "Cb": 11}
        if tonic_name in names:
            return names[tonic_name], ("minor" if minor else "major")
    return estimate_key([p for _, _, p in notes], [d for _, d, _ in notes])


def estimate_key(pitches: Sequence[int], weights: Sequence[float]) -> tuple[int, str]:
    """Krumhansl-Kessler key of weighted pitches (used only when a MIDI file has no key)."""
    major = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
    minor = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
    hist = np.zeros(12)
    for p, w in zip(pitches, weights, strict=True):
        hist[p % 12] += w
    best = (-np.inf, 0, "major")
    for t in range(12):
        for prof, mode in ((major, "major"), (minor, "minor")):
            r = np.corrcoef(hist, np.roll(prof, t))[0, 1] if hist.std() > 0 else 0.0
            if r > best[0]:
                best = (r, t, mode)
    return best[1], best[2]
