"""The analysis development set: real public-domain compositions rendered to audio, with truth.

Run ``python -m tmik_bgm_conditional_melody_generation.evaluation.devset [--out DIR]`` to
(re)build it. Every piece is an excerpt (about 30-50 s) of a score that the ``music21``
package ships in its corpus, or one of a few generated pop backgrounds, rendered with
FluidSynth and a General-MIDI soundfont. The small truth files (``devset/<id>.json``) are
committed; the MIDI and WAV files go to a cache folder (``$DEVSET_CACHE_DIR``, default
``<repo>/.cache/devset``) and are rebuilt, deterministically, whenever they are missing.

How truth is made (see also :data:`PIECES`):

* Time. Every note, beat and downbeat is placed through one :class:`TempoMap`, a function
  from score position (quarter notes) to seconds, so the truth follows the audio exactly,
  including tempo drift. The first note of the excerpt sounds at ``LEAD_IN`` seconds.
* Beats and downbeats come from the score's measures (:func:`metrical_grid`): the beat is
  the quarter in 2/4, 3/4 and 4/4 and the dotted quarter in 6/8 (so a 6/8 tempo is in
  dotted-quarter BPM). Pickups are right-aligned and get no downbeat; bars shortened
  before a repeat are left-aligned. Where parts disagree about a measure's length (some
  corpus files omit rests), the longest part wins, and notes are placed by measure.
* Repeats: repeat signs are ignored (the music plays once, as written), the same for audio
  and truth. In one-part tunes first endings are left out so no bar is cut short; short
  tunes are looped whole (without the pickup when the tune has no short last bar).
* Chords, by kind of piece: ``symbols`` (Nottingham ABC, lead sheets): the chord symbols
  of the score, rendered as a bass + comping accompaniment, so exact; ``folk``: melodies
  without symbols, harmonised here by a small deterministic rule and rendered, so exact
  too; ``analysis`` (Bach chorales): the expert Roman-numeral analyses that music21 ships
  (``bach/choraleAnalyses``, Tymoczko et al.), converted to Harte labels; ``score``
  (quartets, piano music): derived per beat from the sounding notes by a duration-weighted
  template matcher (:func:`derive_chords`), which is an approximation; ``synthetic``: the
  generated progression.
* Key: the key signature gives a major key and its relative minor; the music's tonic
  picks one: the bass of the movement's final sonority (the opening bass where the file
  stops early, as K. 545's exposition does), a folk tune's final note, the longest-held
  chord of a chord-symbol tune, or the analyst's key for a chorale (where Baroque
  "Dorian" signatures, one flat short, are also accepted). Each spec states the key of
  the work's title; a disagreement stops the build rather than committing doubtful truth.
  music21's Krumhansl-Schmuckler ranking of the excerpt is recorded as a check
  (``key_evidence``; all pieces rank the truth first).
* Rendering: notes keep score durations (95 %, so repeated notes re-attack), a light
  metric accent (+8 velocity on downbeats, +3 on beats), and GM drums on the true grid
  for pieces marked ``drums``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pretty_midi

from .render import render_midi

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
TRUTH_DIR = Path(__file__).resolve().parent / "devset"
# Bump when the generator changes in a way that changes audio or truth: caches then rebuild.
GENERATOR_VERSION = 1

LEAD_IN = 0.5  # seconds of silence before the excerpt's first event
TAIL = 1.0  # seconds of release after the excerpt's end
EPS = 1e-6

# (beat length, bar length) in quarter notes, for the meters the set uses.
METERS: dict[str, tuple[float, float]] = {
    "2/4": (1.0, 2.0), "3/4": (1.0, 3.0), "4/4": (1.0, 4.0), "6/8": (1.5, 3.0),
}
SHARP_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
FLAT_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")

# Harte qualities by their interval sets above the root.
QUALITY_INTERVALS: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10), "dim": (0, 3, 6), "aug": (0, 4, 8), "sus4": (0, 5, 7),
    "hdim7": (0, 3, 6, 10), "dim7": (0, 3, 6, 9), "sus2": (0, 2, 7), "maj6": (0, 4, 7, 9),
    "min6": (0, 3, 7, 9), "minmaj7": (0, 3, 7, 11), "9": (0, 2, 4, 7, 10),
}
# The vocabulary the template matcher may answer with (the brief's list), in tie order.
DERIVED_QUALITIES = ("maj", "min", "7", "min7", "maj7", "dim", "sus4", "aug")

# General MIDI drum keys.
KICK, SNARE, SIDESTICK, CLOSED_HAT, CRASH = 36, 38, 37, 42, 49


# --------------------------------------------------------------------------------------
# Piece specifications
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PieceSpec:
    """How to make one development-set piece.

    ``kind`` is one of ``score``, ``analysis``, ``symbols``, ``folk``, ``synthetic``.
    ``bpm`` is the beat-level tempo at the excerpt's start (dotted quarters in 6/8).
    ``drift``: ``none``, ``accel`` (+12 % by the end), ``decel`` (-10 %), ``rit`` (steady,
    then -15 % over the last 30 %), ``wave`` (+-8 %, one cycle). ``programs`` are GM
    programs per part (cycled); for accompanied kinds: melody, comping, bass, pad.
    ``key`` is the key the work's title or catalogue states, used as a check.
    """

    id: str
    kind: str
    source: str
    key: str
    meter: str
    bpm: float
    drift: str = "none"
    drums: bool = False
    programs: tuple[int, ...] = (0,)
    seconds: float = 40.0
    number: int | None = None  # tune number inside a multi-tune ABC file
    analysis: str | None = None  # rntxt analysis in the corpus (kind "analysis")
    loops: int = 1  # play a short tune this many times (kinds symbols, folk)
    start_measure: int | None = None  # first measure number of the excerpt (default: first)
    # "signature": the score's key signature gives the major/minor pair; "stated": the file
    # has no signature (lead sheets write flats as accidentals), so the pair is the stated
    # key's and the chord symbols still have to confirm the tonic.
    key_source: str = "signature"
    progression: tuple[str, ...] = ()  # synthetic: one Roman numeral per chord slot
    chords_per_bar: int = 1  # synthetic
    title: str = ""


STRINGS = (40, 40, 41, 42)
PIANO = (0,)
ORGAN = (19,)
STRING_ENSEMBLE = (48, 48, 48, 48)

PIECES: tuple[PieceSpec, ...] = (
    # --- Bach chorales with expert Roman-numeral analyses (chords: analysis) ---
    PieceSpec("bach_bwv269", "analysis", "bach/bwv269.mxl", "G major", "3/4", 84,
              analysis="bach/choraleAnalyses/riemenschneider001.rntxt", programs=PIANO,
              title="Aus meines Herzens Grunde"),
    PieceSpec("bach_bwv347", "analysis", "bach/bwv347.mxl", "A major", "4/4", 72, drift="rit",
              analysis="bach/choraleAnalyses/riemenschneider002.rntxt", programs=ORGAN,
              title="Ach Gott, wie manches Herzeleid"),
    PieceSpec("bach_bwv40_8", "analysis", "bach/bwv40.8.mxl", "F minor", "4/4", 66,
              analysis="bach/choraleAnalyses/riemenschneider008.rntxt", programs=STRING_ENSEMBLE,
              title="Freuet euch, ihr Christen alle"),
    PieceSpec("bach_bwv65_2", "analysis", "bach/bwv65.2.mxl", "A minor", "3/4", 96,
              analysis="bach/choraleAnalyses/riemenschneider012.rntxt", programs=(6,),
              drums=False, title="Es ist das Heil uns kommen her"),
    PieceSpec("bach_bwv281", "analysis", "bach/bwv281.mxl", "F major", "4/4", 72, drift="wave",
              analysis="bach/choraleAnalyses/riemenschneider006.rntxt", programs=(0, 0, 48, 48),
              title="Christus, der ist mein Leben"),
    PieceSpec("bach_bwv351", "analysis", "bach/bwv351.mxl", "G minor", "4/4", 76,
              analysis="bach/choraleAnalyses/riemenschneider019.rntxt", programs=PIANO,
              drums=True, title="Ich hab mein Sach Gott heimgestellt"),
    PieceSpec("bach_bwv17_7", "analysis", "bach/bwv17.7.mxl", "A major", "3/4", 108,
              analysis="bach/choraleAnalyses/riemenschneider007.rntxt", programs=STRING_ENSEMBLE,
              title="Nun lob, mein Seel, den Herren"),
    # --- Tunes with chord symbols (chords: symbols, rendered as accompaniment) ---
    PieceSpec("nott_cuckoos_nest", "symbols", "nottingham-dataset/reelsa-c.abc", "D major", "4/4",
              112, number=80, loops=2, drums=True, programs=(73, 0, 33, 48),
              title="Cuckoo's Nest"),
    PieceSpec("nott_little_czech", "symbols", "nottingham-dataset/reelsa-c.abc", "A minor", "4/4",
              100, number=81, loops=2, drift="accel", programs=(21, 24, 32),
              title="Little Czech Number"),
    PieceSpec("lead_alexanders_ragtime", "symbols", "leadSheet/berlinAlexandersRagtime.mxl",
              "F major", "4/4", 132, programs=(56, 0, 33), drums=True, start_measure=2, key_source="stated",
              title="Alexander's Ragtime Band"),
    PieceSpec("lead_foster_brown_hair", "symbols", "leadSheet/fosterBrownHair.mxl", "F major",
              "4/4", 88, programs=(71, 24, 32, 48), start_measure=2, drift="decel", key_source="stated",
              title="Jeanie with the Light Brown Hair"),
    # --- Folk melodies, harmonised here (chords: generated, rendered) ---
    PieceSpec("folk_irish_washerwoman", "folk", "ryansMammoth/IrishWashWomanJig.abc", "G major",
              "6/8", 104, loops=2, drums=True, programs=(110, 0, 33), title="Irish Washerwoman"),
    PieceSpec("folk_haste_to_wedding", "folk", "ryansMammoth/HasteToTheWeddingJig.abc", "D major",
              "6/8", 92, loops=2, drift="wave", programs=(73, 24, 32), title="Haste to the Wedding"),
    PieceSpec("folk_lanigans_ball", "folk", "ryansMammoth/LanigansBallJig.abc", "E minor", "6/8",
              84, loops=2, drums=True, programs=(40, 25, 33, 48), title="Lanigan's Ball"),
    PieceSpec("folk_brisk_young_lads", "folk", "ryansMammoth/BriskYoungLadsJig.abc", "A minor",
              "6/8", 112, loops=2, programs=(21, 0, 32), title="Brisk Young Lads"),
    PieceSpec("folk_soldiers_joy", "folk", "ryansMammoth/SoldiersJoy.abc", "D major", "2/4", 116,
              loops=2, drums=True, programs=(40, 0, 33), drift="accel", title="Soldier's Joy"),
    PieceSpec("folk_devils_dream", "folk", "ryansMammoth/DevilsDreamReel.abc", "A major", "2/4",
              176, loops=3, programs=(72, 24, 32), title="Devil's Dream"),
    # --- Classical scores (chords: derived from the notes, per beat) ---
    PieceSpec("mozart_k458_1", "score", "mozart/k458/movement1.mxl", "Bb major", "6/8", 100,
              programs=STRINGS, title="String Quartet K. 458 'Hunt', I"),
    PieceSpec("haydn_op1no1_1", "score", "haydn/opus1no1/movement1.mxl", "Bb major", "6/8", 76,
              programs=PIANO, drift="decel", title="String Quartet Op. 1 No. 1, I"),
    PieceSpec("schumann_op41no1_2", "score", "schumann_robert/opus41no1/movement2.mxl", "A minor",
              "6/8", 96, programs=STRING_ENSEMBLE, drums=True,
              title="String Quartet Op. 41 No. 1, II (Scherzo)"),
    PieceSpec("cschumann_op17_3", "score", "schumann_clara/opus17/movement3.xml", "G major", "6/8",
              62, programs=(40, 42, 0, 0), title="Piano Trio Op. 17, III"),
    PieceSpec("beethoven_op18no1_1", "score", "beethoven/opus18no1/movement1.mxl", "F major",
              "3/4", 168, programs=STRINGS, title="String Quartet Op. 18 No. 1, I"),
    PieceSpec("schubert_lindenbaum", "score", "schubert/Lindenbaum.xml", "E major", "3/4", 90,
              programs=(68, 0, 0), drift="rit", title="Der Lindenbaum"),
    PieceSpec("joplin_maple_leaf", "score", "joplin/maple_leaf_rag.mxl", "Ab major", "2/4", 92,
              programs=PIANO, drums=True, title="Maple Leaf Rag"),
    PieceSpec("haydn_op74no1_4", "score", "haydn/opus74no1/movement4.mxl", "C major", "2/4", 150,
              programs=STRINGS, title="String Quartet Op. 74 No. 1, IV"),
    PieceSpec("mozart_k155_3", "score", "mozart/k155/movement3.mxl", "D major", "2/4", 126,
              programs=PIANO, drift="wave", title="String Quartet K. 155, III"),
    PieceSpec("mozart_k545_1", "score", "mozart/k545/movement1_exposition.mxl", "C major", "4/4",
              108, programs=PIANO, title="Piano Sonata K. 545, I (exposition)"),
    PieceSpec("beethoven_op18no4_1", "score", "beethoven/opus18no4.mxl", "C minor", "4/4", 128,
              programs=STRINGS, drums=True, title="String Quartet Op. 18 No. 4, I"),
    PieceSpec("mozart_k155_1", "score", "mozart/k155/movement1.mxl", "D major", "4/4", 104,
              programs=STRING_ENSEMBLE, drift="accel", title="String Quartet K. 155, I"),
    # --- Generated pop backgrounds (chords: generated) ---
    PieceSpec("synth_pop_e_major", "synthetic", "generated", "E major", "4/4", 96, drums=True,
              progression=("I", "V", "vi", "IV"), programs=(0, 33, 89), seconds=36,
              title="I-V-vi-IV pop"),
    PieceSpec("synth_minor_drive", "synthetic", "generated", "F# minor", "4/4", 128, drums=True,
              drift="accel", progression=("i", "VI", "III", "VII"), programs=(30, 34, 50),
              seconds=36, title="i-VI-III-VII rock"),
    PieceSpec("synth_ballad_68", "synthetic", "generated", "Bb major", "6/8", 66, drums=True,
              progression=("I", "vi7", "ii7", "V7", "I", "IV", "V", "I"), programs=(4, 32, 48),
              seconds=40, title="6/8 ballad"),
    PieceSpec("synth_waltz_34", "synthetic", "generated", "D minor", "3/4", 150, drums=True,
              drift="rit", progression=("i", "iv", "V7", "i", "VI", "ii", "V", "i"),
              programs=(21, 32, 49), seconds=36, title="minor waltz"),
    PieceSpec("synth_polka_24", "synthetic", "generated", "G major", "2/4", 120, drums=True,
              progression=("I", "I", "V7", "V7", "V7", "V7", "I", "I", "IV", "I", "V7", "I"),
              programs=(21, 33, 0), seconds=32, title="2/4 polka"),
)


# --------------------------------------------------------------------------------------
# Time: the tempo map
# --------------------------------------------------------------------------------------

DRIFT_KINDS = ("none", "accel", "decel", "rit", "wave")
TEMPO_STEP_Q = 1.0 / 48.0  # tempo is constant over steps this long (quarters)


def drift_factor(kind: str, progress: np.ndarray) -> np.ndarray:
    """Tempo multiplier at ``progress`` (0 = excerpt start, 1 = end) for a drift kind."""
    p = np.clip(np.asarray(progress, dtype=float), 0.0, 1.0)
    if kind == "none":
        return np.ones_like(p)
    if kind == "accel":
        return 1.0 + 0.12 * p
    if kind == "decel":
        return 1.0 - 0.10 * p
    if kind == "rit":
        return 1.0 - 0.15 * np.clip((p - 0.7) / 0.3, 0.0, 1.0) ** 2
    if kind == "wave":
        return 1.0 + 0.08 * np.sin(2.0 * np.pi * p)
    raise ValueError(f"unknown drift {kind!r}; expected one of {DRIFT_KINDS}")


@dataclass(frozen=True)
class TempoMap:
    """Score position (quarter notes) to seconds, with the tempo piecewise constant.

    The tempo is held constant over steps of ``TEMPO_STEP_Q`` quarters, so
    :meth:`seconds` is exact (a piecewise-linear function), and notes and beats placed
    with it agree to floating-point precision. Before ``q0`` and after the last step it
    continues at the edge tempo.
    """

    q0: float
    q1: float
    beat_q: float
    bpm: float
    drift: str
    lead_in: float = LEAD_IN
    grid: np.ndarray = field(default=None, repr=False, compare=False)  # type: ignore[assignment]
    times: np.ndarray = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    @classmethod
    def build(cls, q0: float, q1: float, beat_q: float, bpm: float, drift: str = "none",
              lead_in: float = LEAD_IN) -> TempoMap:
        """Make the map for an excerpt from ``q0`` to ``q1`` (quarters) at ``bpm`` beats/min."""
        if q1 <= q0:
            raise ValueError("empty excerpt")
        n = max(1, math.ceil((q1 - q0) / TEMPO_STEP_Q))
        grid = q0 + np.arange(n + 1) * TEMPO_STEP_Q
        mid = grid[:-1] + TEMPO_STEP_Q / 2.0
        factor = drift_factor(drift, (mid - q0) / (q1 - q0))
        sec_per_q = 60.0 / (bpm * factor * beat_q)
        times = lead_in + np.concatenate([[0.0], np.cumsum(sec_per_q * TEMPO_STEP_Q)])
        return cls(q0, q1, beat_q, bpm, drift, lead_in, grid, times)

    def _edge_rates(self) -> tuple[float, float]:
        first = (self.times[1] - self.times[0]) / TEMPO_STEP_Q
        last = (self.times[-1] - self.times[-2]) / TEMPO_STEP_Q
        return first, last

    def seconds(self, q: float | np.ndarray) -> np.ndarray:
        """Seconds at score position(s) ``q``."""
        q = np.asarray(q, dtype=float)
        first, last = self._edge_rates()
        out = np.interp(q, self.grid, self.times)
        out = np.where(q < self.grid[0], self.times[0] + (q - self.grid[0]) * first, out)
        return np.where(q > self.grid[-1], self.times[-1] + (q - self.grid[-1]) * last, out)

    def bpm_at(self, q: float | np.ndarray) -> np.ndarray:
        """Beat-level tempo (BPM) in force at score position(s) ``q``."""
        q = np.asarray(q, dtype=float)
        return self.bpm * drift_factor(self.drift, (q - self.q0) / (self.q1 - self.q0))


# --------------------------------------------------------------------------------------
# Musical material in score time
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoteEvent:
    """One note in score time; ``part`` indexes the piece's instrument list."""

    q: float
    dur: float
    pitch: int
    part: int
    velocity: int = 80


@dataclass(frozen=True)
class Bar:
    """One measure as written: start, actual length, nominal length, left padding."""

    q: float
    dur: float
    bar_q: float
    meter: str
    pad: float = 0.0
    number: int = 0


@dataclass(frozen=True)
class ChordSpan:
    """A chord in score time: Harte label plus the pitch classes to play (root first)."""

    q0: float
    q1: float
    label: str
    root: int | None = None
    pcs: tuple[int, ...] = ()
    bass: int | None = None


@dataclass
class Material:
    """Everything about a piece in score time, before the tempo map is applied."""

    notes: list[NoteEvent]
    bars: list[Bar]
    meter: str
    key: str
    programs: list[tuple[int, bool]]  # (GM program, is_drum) per part
    chords: list[ChordSpan]
    chord_truth: str
    q_start: float
    q_end: float
    evidence: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# Metrical grid and excerpt boundaries
# --------------------------------------------------------------------------------------


def metrical_grid(bars: Sequence[Bar], beat_q: float) -> tuple[list[float], list[float]]:
    """Beat and downbeat positions (quarters) of a sequence of measures.

    A full bar has its downbeat at its start. A short bar is a pickup (beats counted back
    from its end, no downbeat) when it opens the piece, has left padding, or completes the
    bar that a short bar before it left unfinished (the tail of a looped tune); otherwise it
    is a bar cut short before a repeat or ending (beats and downbeat from its start).
    """
    beats: list[float] = []
    downbeats: list[float] = []
    prev_short_dur: float | None = None
    for index, bar in enumerate(bars):
        end = bar.q + bar.dur
        short = bar.dur < bar.bar_q - EPS
        completes = prev_short_dur is not None and abs(prev_short_dur + bar.dur - bar.bar_q) < EPS
        if short and (index == 0 or bar.pad > EPS or completes):
            k = 1
            while end - k * beat_q >= bar.q - EPS:
                beats.append(end - k * beat_q)
                k += 1
        else:
            downbeats.append(bar.q)
            k = 0
            while bar.q + k * beat_q < end - EPS:
                beats.append(bar.q + k * beat_q)
                k += 1
        prev_short_dur = bar.dur if short and not completes else None
    return sorted({round(b, 9) for b in beats}), downbeats


def excerpt_end(bars: Sequence[Bar], downbeats: Sequence[float], q_start: float, beat_q: float,
                bpm: float, seconds: float) -> float:
    """The first downbeat at least ``seconds`` (at the nominal tempo) after ``q_start``.

    Stops early at a change of meter or at the end of the music.
    """
    meter = next((b.meter for b in bars if b.q >= q_start - EPS), bars[0].meter)
    music_end = bars[-1].q + bars[-1].dur
    for bar in bars:
        if bar.q > q_start + EPS and bar.meter != meter:
            music_end = min(music_end, bar.q)
            break
    need = q_start + seconds * bpm * beat_q / 60.0
    for d in downbeats:
        if d >= need - EPS and d <= music_end + EPS:
            return d
    return music_end


def _whole_bars(length: float, bar_q: float) -> bool:
    return abs(length / bar_q - round(length / bar_q)) < EPS


def loop_material(notes: list[NoteEvent], bars: list[Bar], chords: list[ChordSpan], loops: int
                  ) -> tuple[list[NoteEvent], list[Bar], list[ChordSpan], list[float]]:
    """Play a whole tune ``loops`` times back to back; also return where each pass ends.

    A tune whose pickup is not balanced by a short last bar repeats without its pickup,
    as players do, so the beat runs on unbroken. Anything else that is not whole bars is
    refused.
    """
    start, end = bars[0].q, bars[-1].q + bars[-1].dur
    if loops <= 1:
        return notes, bars, chords, [end]
    bar_q = bars[-1].bar_q
    body = start
    if not _whole_bars(end - start, bar_q):
        if len(bars) > 1 and bars[0].dur < bar_q - EPS and _whole_bars(end - bars[1].q, bar_q):
            body = bars[1].q
        else:
            raise ValueError(f"a tune of {end - start} quarters is not whole {bar_q}-quarter bars; "
                             "looping it would break the beat")
    out_n, out_b, out_c, ends = list(notes), list(bars), list(chords), [end]
    cursor = end
    for _ in range(1, loops):
        shift = cursor - body
        out_n += [replace(n, q=n.q + shift) for n in notes if n.q >= body - EPS]
        out_b += [replace(b, q=b.q + shift) for b in bars if b.q >= body - EPS]
        out_c += [replace(c, q0=max(c.q0, body) + shift, q1=c.q1 + shift)
                  for c in chords if c.q1 > body + EPS]
        cursor += end - body
        ends.append(cursor)
    return out_n, out_b, out_c, ends


# --------------------------------------------------------------------------------------
# Harmony helpers
# --------------------------------------------------------------------------------------


def pc_name(pc: int, flats: bool) -> str:
    """Spelling of a pitch class for Harte labels and key names."""
    return (FLAT_NAMES if flats else SHARP_NAMES)[pc % 12]


def harte_label(root: int, pcs: Iterable[int], flats: bool = False) -> str:
    """Harte label for pitch classes ``pcs`` heard over ``root`` (inversions dropped).

    Exact interval sets map to their quality; anything else gets the best-fitting template
    of :func:`chord_scores` (so an augmented sixth reads as the dominant seventh it sounds).
    """
    intervals = tuple(sorted({(p - root) % 12 for p in pcs} | {0}))
    for quality, ivs in QUALITY_INTERVALS.items():
        if intervals == ivs:
            return f"{pc_name(root, flats)}:{quality}"
    # No exact quality (an augmented sixth, a chord missing its third, ...): the template
    # the notes fit best, with the named root as bass, says what it sounds like.
    hist = np.zeros(12)
    for p in set(pcs) | {root}:
        hist[p % 12] = 1.0
    if np.count_nonzero(hist) < 2:
        return f"{pc_name(root, flats)}:1"
    _, best_root, quality = chord_scores(hist, root)[0]
    return f"{pc_name(best_root, flats)}:{quality}"


def chord_pcs(root: int, quality: str) -> tuple[int, ...]:
    """Pitch classes of a chord, root first."""
    return tuple((root + i) % 12 for i in QUALITY_INTERVALS[quality])


def key_flats(key: str) -> bool:
    """Whether a key (mir_eval form, e.g. "Bb major") is written with flats."""
    tonic, mode = key.split()
    if "b" in tonic[1:]:
        return True
    if "#" in tonic:
        return False
    pc, _ = key_pc(key)
    major_pc = pc if mode == "major" else (pc + 3) % 12
    sharps = (major_pc * 7 + 5) % 12 - 5  # position on the circle of fifths, -5..6
    return sharps < 0


def relative_pair(key: str) -> tuple[str, str]:
    """(major, relative minor) sharing the key signature of ``key``."""
    pc, mode = key_pc(key)
    flats = key_flats(key)
    major_pc = pc if mode == "major" else (pc + 3) % 12
    return f"{pc_name(major_pc, flats)} major", f"{pc_name(major_pc + 9, flats)} minor"


def key_pc(key: str) -> tuple[int, str]:
    """(tonic pitch class, mode) of a key in mir_eval form."""
    tonic, mode = key.split()
    pc = SHARP_NAMES.index(tonic) if tonic in SHARP_NAMES else FLAT_NAMES.index(tonic)
    return pc, mode


def pc_histogram(notes: Iterable[NoteEvent], q0: float, q1: float) -> tuple[np.ndarray, int | None]:
    """Duration-weighted pitch-class histogram of ``notes`` within [q0, q1), and its bass pc.

    The bass is the lowest note that sounds for at least a quarter of the span.
    """
    hist = np.zeros(12)
    bass_pitch = None
    span = q1 - q0
    for n in notes:
        overlap = min(n.q + n.dur, q1) - max(n.q, q0)
        if overlap <= EPS:
            continue
        hist[n.pitch % 12] += overlap
        if overlap >= 0.25 * span and (bass_pitch is None or n.pitch < bass_pitch):
            bass_pitch = n.pitch
    return hist, (None if bass_pitch is None else bass_pitch % 12)


def chord_scores(hist: np.ndarray, bass: int | None) -> list[tuple[float, int, str]]:
    """Template scores (score, root, quality) for a pitch-class histogram, best first.

    Score = weight inside the template - weight outside - 0.15 per template tone that is
    absent (< 3 % of the weight) + 0.1 when the bass is the root. The absent-tone penalty
    keeps a triad with a passing tone from becoming a seventh chord.
    """
    total = hist.sum()
    w = hist / total
    out = []
    for order, quality in enumerate(DERIVED_QUALITIES):
        ivs = QUALITY_INTERVALS[quality]
        for root in range(12):
            tones = [(root + i) % 12 for i in ivs]
            inside = float(w[tones].sum())
            missing = sum(1 for t in tones if w[t] < 0.03)
            score = inside - (1.0 - inside) - 0.15 * missing + (0.1 if bass == root else 0.0)
            out.append((score - 1e-4 * order, root, quality))
    out.sort(key=lambda s: -s[0])
    return out


def derive_chords(notes: Sequence[NoteEvent], bounds: Sequence[float], flats: bool,
                  hysteresis: float = 0.05) -> list[ChordSpan]:
    """Chord per segment (consecutive ``bounds``) from the sounding notes; merged runs.

    A segment keeps the previous chord when that chord scores within ``hysteresis`` of the
    best, so passing harmonies do not flicker. Silent segments are ``N``.
    """
    spans: list[ChordSpan] = []
    prev: tuple[int, str] | None = None
    for q0, q1 in itertools.pairwise(bounds):
        hist, bass = pc_histogram(notes, q0, q1)
        if hist.sum() < 0.05 * (q1 - q0):
            prev = None
            spans.append(ChordSpan(q0, q1, "N"))
            continue
        ranked = chord_scores(hist, bass)
        best_score, root, quality = ranked[0]
        if prev is not None:
            prev_score = next(s for s, r, qu in ranked if (r, qu) == prev)
            if prev_score >= best_score - hysteresis:
                root, quality = prev
        prev = (root, quality)
        spans.append(ChordSpan(q0, q1, f"{pc_name(root, flats)}:{quality}", root,
                               chord_pcs(root, quality), bass))
    return merge_spans(spans)


def merge_spans(spans: Sequence[ChordSpan]) -> list[ChordSpan]:
    """Join consecutive spans with the same label."""
    out: list[ChordSpan] = []
    for s in spans:
        if out and out[-1].label == s.label and abs(out[-1].q1 - s.q0) < EPS:
            out[-1] = replace(out[-1], q1=s.q1)
        else:
            out.append(s)
    return out


def clip_spans(spans: Sequence[ChordSpan], q0: float, q1: float) -> list[ChordSpan]:
    """Spans cut to [q0, q1], gaps filled with ``N``."""
    out: list[ChordSpan] = []
    cursor = q0
    for s in sorted(spans, key=lambda s: s.q0):
        a, b = max(s.q0, q0), min(s.q1, q1)
        if b - a <= EPS:
            continue
        if a > cursor + EPS:
            out.append(ChordSpan(cursor, a, "N"))
        out.append(replace(s, q0=a, q1=b))
        cursor = b
    if cursor < q1 - EPS:
        out.append(ChordSpan(cursor, q1, "N"))
    return merge_spans(out)


# Degree (semitones above the tonic) and quality of Roman numerals, for harmonising and
# for the synthetic progressions.
ROMAN: dict[str, tuple[int, str]] = {
    "I": (0, "maj"), "ii": (2, "min"), "iii": (4, "min"), "IV": (5, "maj"), "V": (7, "maj"),
    "vi": (9, "min"), "vii": (11, "dim"), "i": (0, "min"), "III": (3, "maj"), "iv": (5, "min"),
    "VI": (8, "maj"), "VII": (10, "maj"), "V7": (7, "7"), "ii7": (2, "min7"), "vi7": (9, "min7"),
    "IVmaj7": (5, "maj7"), "Imaj7": (0, "maj7"),
}
FOLK_CHORDS = {
    "major": (("I", 0.12), ("V", 0.08), ("IV", 0.06), ("vi", 0.0), ("ii", 0.0)),
    "minor": (("i", 0.12), ("V", 0.08), ("iv", 0.06), ("III", 0.02), ("VII", 0.02), ("VI", 0.0)),
}


def roman_span(numeral: str, tonic: int, q0: float, q1: float, flats: bool) -> ChordSpan:
    """A ChordSpan for a Roman numeral in a key with tonic pitch class ``tonic``."""
    degree, quality = ROMAN[numeral]
    root = (tonic + degree) % 12
    return ChordSpan(q0, q1, f"{pc_name(root, flats)}:{quality}", root, chord_pcs(root, quality))


def melody_weights(notes: Sequence[NoteEvent], q0: float, q1: float, beats: Sequence[float]) -> np.ndarray:
    """Pitch-class weights of a melody in [q0, q1): duration, doubled for notes on a beat."""
    beat_set = {round(b, 6) for b in beats}
    w = np.zeros(12)
    for n in notes:
        overlap = min(n.q + n.dur, q1) - max(n.q, q0)
        if overlap > EPS:
            w[n.pitch % 12] += overlap * (2.0 if round(n.q, 6) in beat_set else 1.0)
    return w


def best_folk_chord(w: np.ndarray, tonic: int, mode: str) -> tuple[float, str]:
    """(score, numeral) of the best-fitting diatonic chord for melody weights ``w``."""
    total = w.sum()
    best = (-1.0, FOLK_CHORDS[mode][0][0])
    for numeral, prior in FOLK_CHORDS[mode]:
        degree, quality = ROMAN[numeral]
        tones = [(tonic + i + degree) % 12 for i in QUALITY_INTERVALS[quality]]
        cover = float(w[tones].sum() / total) if total > 0 else 0.0
        if cover + prior > best[0] + EPS:
            best = (cover + prior, numeral)
    return best


def harmonise_melody(notes: Sequence[NoteEvent], bars: Sequence[Bar], beats: Sequence[float],
                     downbeats: Sequence[float], key: str, tune_ends: Iterable[float]) -> list[ChordSpan]:
    """Deterministic accompaniment chords for a melody: one per bar, or two per bar.

    For each bar, the diatonic chord (I V IV vi ii; minor: i V iv III VII VI) covering most
    of the melody's duration-and-beat-weighted pitch classes wins, with small priors for the
    primary chords; a 6/8 or 4/4 bar splits into halves when that covers at least 0.2 more.
    The dominant becomes V7 when the melody dwells on its seventh. The last bar of each pass
    through the tune is the tonic. Pickup bars get no chord.
    """
    tonic, mode = key_pc(key)
    flats = key_flats(key)
    ends = sorted(tune_ends)
    spans: list[ChordSpan] = []
    down = sorted(downbeats)
    for i, d in enumerate(down):
        bar = next(b for b in bars if abs(b.q - d) < EPS)
        q1 = down[i + 1] if i + 1 < len(down) else bar.q + bar.dur
        last_of_tune = any(d < e - EPS and e <= q1 + EPS for e in ends)
        if last_of_tune:
            spans.append(roman_span("I" if mode == "major" else "i", tonic, d, q1, flats))
            continue
        w = melody_weights(notes, d, q1, beats)
        score, numeral = best_folk_chord(w, tonic, mode)
        halves = None
        if bar.meter in ("6/8", "4/4") and q1 - d > bar.bar_q / 2 + EPS:
            mid = d + bar.bar_q / 2
            s1, n1 = best_folk_chord(melody_weights(notes, d, mid, beats), tonic, mode)
            s2, n2 = best_folk_chord(melody_weights(notes, mid, q1, beats), tonic, mode)
            if n1 != n2 and (s1 + s2) / 2 >= score + 0.2:
                halves = ((d, mid, n1), (mid, q1, n2))
        parts = halves or ((d, q1, numeral),)
        for a, b, num in parts:
            if num == "V":
                seventh = (tonic + 5) % 12
                ww = melody_weights(notes, a, b, beats)
                if ww.sum() > 0 and ww[seventh] / ww.sum() >= 0.15:
                    num = "V7"
            spans.append(roman_span(num, tonic, a, b, flats))
    return merge_spans(spans)


# --------------------------------------------------------------------------------------
# Accompaniment and drums (score time)
# --------------------------------------------------------------------------------------


def voice_chord(pcs: Sequence[int], low: int = 55, high: int = 67) -> list[int]:
    """Close-position voicing of pitch classes (at most 4) within [low, high + 11]."""
    pitches = []
    for pc in list(pcs)[:4]:
        p = low + (pc - low) % 12
        pitches.append(p)
    return sorted(pitches)


def bass_pitch(pc: int, low: int = 36) -> int:
    """The pitch class ``pc`` in the bass octave starting at ``low`` (C2 by default)."""
    return low + (pc - low) % 12


def span_at(spans: Sequence[ChordSpan], q: float) -> ChordSpan | None:
    """The chord span sounding at ``q``."""
    for s in spans:
        if s.q0 - EPS <= q < s.q1 - EPS:
            return s
    return None


def accompaniment(spans: Sequence[ChordSpan], beats: Sequence[float], downbeats: Sequence[float],
                  meter: str, parts: dict[str, int]) -> list[NoteEvent]:
    """Bass, comping and pad notes that play ``spans`` on the metrical grid.

    ``parts`` maps role (``comp``, ``bass``, ``pad``) to part index (absent roles are not
    played). Bass: root on every downbeat and chord change on a beat, the fifth on the
    bar's middle beat. Comping: 4/4 and 2/4 every beat, 3/4 beats 2 and 3, 6/8 the 1st
    and 3rd eighths of each beat. Pad: the chord held for its whole span.
    """
    beat_q, _bar_q = METERS[meter]
    down_set = {round(d, 6) for d in downbeats}
    notes: list[NoteEvent] = []
    mid_index = {"2/4": 1, "3/4": None, "4/4": 2, "6/8": 1}[meter]
    played = [s for s in spans if s.root is not None]
    for b in beats:
        s = span_at(played, b)
        if s is None:
            continue
        bar_start = max((d for d in downbeats if d <= b + EPS), default=None)
        index = None if bar_start is None else round((b - bar_start) / beat_q)
        is_down = round(b, 6) in down_set
        changed = abs(s.q0 - b) < EPS
        if "bass" in parts and (is_down or changed or index == mid_index):
            pc = s.bass if s.bass is not None and (is_down or changed) else s.root
            if index == mid_index and not (is_down or changed):
                pc = s.pcs[2] if len(s.pcs) > 2 else s.root  # the fifth
            notes.append(NoteEvent(b, beat_q * 0.9, bass_pitch(pc), parts["bass"],
                                   92 if is_down else 80))
        if "comp" in parts:
            if meter == "6/8":
                # The jig vamp: chord with the bass, then again on the third eighth
                # (long-short), so the dotted-quarter pulse stays audible.
                hits = [b, b + 1.0]
                dur = 0.4
            elif meter == "3/4":
                hits = [] if is_down else [b]
                dur = 0.6
            else:
                hits = [b]
                dur = 0.45
            for h in hits:
                hs = span_at(played, h)
                if hs is None:
                    continue
                for p in voice_chord(hs.pcs):
                    notes.append(NoteEvent(h, dur, p, parts["comp"], 62))
    if "pad" in parts:
        for s in played:
            for p in voice_chord(s.pcs, low=52):
                notes.append(NoteEvent(s.q0, s.q1 - s.q0, p, parts["pad"], 42))
    return notes


def drum_pattern(beats: Sequence[float], downbeats: Sequence[float], meter: str, q_end: float,
                 part: int) -> list[NoteEvent]:
    """A GM drum groove on the true grid, from the first downbeat to ``q_end``.

    4/4: kick 1 and 3, snare 2 and 4, hi-hat eighths; 2/4: kick 1, snare 2, hat eighths;
    3/4: kick 1, side stick 2 and 3, hat on beats; 6/8: kick on beat 1, snare on beat 2,
    hi-hat on every eighth. A crash marks the first downbeat.
    """
    beat_q, _ = METERS[meter]
    if not downbeats:
        return []
    first = downbeats[0]
    out: list[NoteEvent] = [NoteEvent(first, 1.0, CRASH, part, 90)]
    for b in beats:
        if b < first - EPS or b >= q_end - EPS:
            continue
        bar_start = max(d for d in downbeats if d <= b + EPS)
        index = round((b - bar_start) / beat_q)
        if meter == "4/4":
            inst, vel = (KICK, 100) if index in (0, 2) else (SNARE, 90)
            subs = [0.0, 0.5]
        elif meter == "2/4":
            inst, vel = (KICK, 100) if index == 0 else (SNARE, 90)
            subs = [0.0, 0.5]
        elif meter == "3/4":
            inst, vel = (KICK, 100) if index == 0 else (SIDESTICK, 75)
            subs = [0.0]
        else:
            inst, vel = (KICK, 100) if index == 0 else (SNARE, 88)
            subs = [0.0, 0.5, 1.0]
        out.append(NoteEvent(b, 0.25, inst, part, vel))
        for k, sub in enumerate(subs):
            if b + sub < q_end - EPS:
                out.append(NoteEvent(b + sub, 0.25, CLOSED_HAT, part, 70 if k == 0 else 52))
    return out


# --------------------------------------------------------------------------------------
# Reading music21 scores
# --------------------------------------------------------------------------------------


def _m21():
    """Import music21 lazily (it is slow to import) and keep its warnings quiet."""
    warnings.filterwarnings("ignore", module=r"music21(\..*)?")
    import music21

    return music21


def parse_corpus(source: str, number: int | None = None):
    """Parse a corpus work (one tune of a multi-tune ABC file when ``number`` is given)."""
    m21 = _m21()
    work = m21.corpus.parse(source, number=number) if number is not None else m21.corpus.parse(source)
    if isinstance(work, m21.stream.Opus):
        work = work.scores[0]
    return work


def read_bars(part) -> list[Bar]:
    """The measures of a music21 part as :class:`Bar` records."""
    m21 = _m21()
    bars = []
    ts = None
    for m in part.getElementsByClass(m21.stream.Measure):
        if m.timeSignature is not None:
            ts = m.timeSignature
        if ts is None:
            ts = m.getContextByClass(m21.meter.TimeSignature)
        meter = ts.ratioString if ts is not None else "4/4"
        bar_q = float(ts.barDuration.quarterLength) if ts is not None else 4.0
        dur = float(m.duration.quarterLength)
        bars.append(Bar(float(m.getOffsetInHierarchy(part)), dur, bar_q, meter,
                        float(m.paddingLeft or 0.0), int(m.number or 0)))
    return bars


def symbol_spans(found: Sequence[tuple[float, object]], flats: bool, end: float) -> list[ChordSpan]:
    """Chord spans from (position, music21 ChordSymbol) pairs; each lasts until the next."""
    found = sorted(found, key=lambda f: f[0])
    spans = []
    for i, (q, cs) in enumerate(found):
        q1 = found[i + 1][0] if i + 1 < len(found) else end
        root = cs.root().pitchClass
        pcs = (root,) + tuple(p for p in dict.fromkeys(x.pitchClass for x in cs.pitches) if p != root)
        if q1 - q > EPS:
            spans.append(ChordSpan(q, q1, harte_label(root, pcs, flats), root, pcs, cs.bass().pitchClass))
    return spans


def non_final_endings(part) -> set[int]:
    """Indices of the measures in first (non-final) endings of a part's repeat brackets."""
    m21 = _m21()
    measures = list(part.getElementsByClass(m21.stream.Measure))
    index = {id(m): i for i, m in enumerate(measures)}
    brackets = list(part.recurse().getElementsByClass(m21.spanner.RepeatBracket))

    def top(rb) -> int:  # "1", "2" or "1, 2": the highest pass the bracket is for
        return max((int(x) for x in re.findall(r"\d+", str(rb.number or "1"))), default=1)

    last = max((top(rb) for rb in brackets), default=1)
    drop = set()
    for rb in brackets:
        if top(rb) < last:
            drop |= {index[id(m)] for m in rb.getSpannedElements() if id(m) in index}
    return drop


def read_tune(part, flats: bool) -> tuple[list[Bar], list[NoteEvent], list[ChordSpan]]:
    """Bars, notes and chord symbols of a one-part tune, played once through as written.

    Repeat signs are ignored, and first endings are left out (the last ending is kept), so
    the tune reads like its final pass and no bar is cut short by a bracket.
    """
    m21 = _m21()
    drop = non_final_endings(part)
    flat = part.stripTies()
    all_bars = read_bars(flat)
    bars: list[Bar] = []
    notes: list[NoteEvent] = []
    found: list[tuple[float, object]] = []
    cursor = all_bars[0].q if all_bars else 0.0
    for i, m in enumerate(flat.getElementsByClass(m21.stream.Measure)):
        if i in drop:
            continue
        bars.append(replace(all_bars[i], q=cursor))
        for n in m.recurse().notes:
            q = cursor + float(n.getOffsetInHierarchy(m))
            if isinstance(n, m21.harmony.ChordSymbol):
                if not isinstance(n, m21.harmony.NoChord):
                    found.append((q, n))
                continue
            if isinstance(n, m21.harmony.Harmony) or n.duration.isGrace or n.duration.quarterLength <= 0:
                continue
            for p in n.pitches:
                notes.append(NoteEvent(q, float(n.duration.quarterLength), round(p.ps), 0, 88))
        cursor += all_bars[i].dur
    return bars, notes, symbol_spans(found, flats, cursor)


def read_roman_analysis(source: str, bars: Sequence[Bar], flats: bool) -> tuple[list[ChordSpan], str]:
    """Chord spans and opening key from a music21 ``rntxt`` analysis of a score.

    Each numeral is placed by its measure number and beat in the score's own measures
    (the analyses share the score's numbering and pickup), and lasts until the next one.
    """
    m21 = _m21()
    analysis = m21.corpus.parse(source)
    by_number = {}
    for b in bars:
        by_number.setdefault(b.number, b)
    found = []
    first_key = None
    for rn in analysis.recurse().getElementsByClass(m21.roman.RomanNumeral):
        bar = by_number.get(rn.measureNumber)
        if bar is None:
            continue
        # Beats count from the bar line even in a padded pickup bar; in 3/4 and 4/4 a beat
        # is a quarter note.
        q = bar.q + (float(rn.beat) - 1.0) - bar.pad
        if first_key is None:
            first_key = rn.key
        pcs = [p.pitchClass for p in rn.pitches]
        root = rn.root().pitchClass
        ordered = (root,) + tuple(p for p in dict.fromkeys(pcs) if p != root)
        found.append((q, root, ordered, rn.bass().pitchClass))
    found.sort(key=lambda f: f[0])
    spans = []
    for i, (q, root, pcs, bass) in enumerate(found):
        q1 = found[i + 1][0] if i + 1 < len(found) else bars[-1].q + bars[-1].dur
        if q1 - q > EPS:
            spans.append(ChordSpan(q, q1, harte_label(root, pcs, flats), root, pcs, bass))
    key = m21_key_name(first_key)
    return merge_spans(spans), key


def m21_key_name(k) -> str:
    """A music21 Key as mir_eval's "Bb major"."""
    return f"{k.tonic.name.replace('-', 'b')} {k.mode}"


def signature_keys(score) -> tuple[str, str, int]:
    """(major key, relative minor key, sharps) of the score's first key signature."""
    m21 = _m21()
    ks = score.parts[0].recurse().getElementsByClass(m21.key.KeySignature).first()
    sharps = ks.sharps if ks is not None else 0
    sig = m21.key.KeySignature(sharps)
    return m21_key_name(sig.asKey("major")), m21_key_name(sig.asKey("minor")), sharps


def main_root(spans: Sequence[ChordSpan]) -> int:
    """Root of the chord that sounds longest in total: the tonic of a chord-symbol tune."""
    totals: dict[int, float] = {}
    for sp in spans:
        if sp.root is not None:
            totals[sp.root] = totals.get(sp.root, 0.0) + sp.q1 - sp.q0
    return max(sorted(totals), key=lambda r: totals[r])


def final_bass_pc(notes: Sequence[NoteEvent]) -> int:
    """Pitch class of the lowest note still sounding in the music's last half quarter."""
    end = max(n.q + n.dur for n in notes)
    sounding = [n for n in notes if n.q + n.dur > end - 0.5]
    return min(sounding, key=lambda n: n.pitch).pitch % 12


def opening_bass_pc(notes: Sequence[NoteEvent], downbeat: float, beat_q: float) -> int | None:
    """Pitch class of the lowest note sounding in the first beat of the first full bar."""
    sounding = [n for n in notes if n.q < downbeat + beat_q - EPS and n.q + n.dur > downbeat + EPS]
    return min(sounding, key=lambda n: n.pitch).pitch % 12 if sounding else None


def analysed_keys(notes: Sequence[NoteEvent], q0: float, q1: float) -> list[tuple[str, float]]:
    """music21's Krumhansl-Schmuckler keys for the notes in [q0, q1), best first."""
    m21 = _m21()
    s = m21.stream.Stream()
    for n in notes:
        overlap = min(n.q + n.dur, q1) - max(n.q, q0)
        if overlap > EPS:
            note = m21.note.Note(n.pitch, quarterLength=overlap)
            s.insert(max(n.q, q0), note)
    k = s.analyze("key")
    keys = [k] + list(k.alternateInterpretations)
    return [(m21_key_name(x), round(float(x.correlationCoefficient), 3)) for x in keys]


def dorian_minor(sig_major: str) -> str:
    """The minor key that Baroque "Dorian" notation writes with this signature.

    Bach often wrote minor keys with one flat fewer than modern practice (G minor with one
    flat); that tonic is the major key's second degree.
    """
    pc, _ = key_pc(sig_major)
    return f"{pc_name(pc + 2, key_flats(sig_major))} minor"


def decide_key(candidates: Sequence[str], tonics: Sequence[tuple[str, int | None]], stated: str,
               analysed: Sequence[tuple[str, float]]) -> tuple[str, dict]:
    """Key truth: the candidate (from the key signature) whose tonic the music confirms.

    ``tonics`` are (name, pitch class) pieces of tonic evidence in order of trust (the
    final bass of the movement, then the opening bass for files that stop before the
    end, such as an exposition); the first that picks exactly one candidate decides.
    Raises ValueError when none does, or when the result contradicts the key that the
    work's title states: such a piece needs a human look, not a guess.
    """
    names = [a for a, _ in analysed]
    evidence: dict = {"candidates": list(candidates),
                      "tonic_evidence": {k: (None if v is None else SHARP_NAMES[v]) for k, v in tonics},
                      "music21": [list(a) for a in analysed[:3]],
                      "music21_rank": names.index(stated) + 1 if stated in names else None}
    key = None
    for name, pc in tonics:
        matches = [k for k in candidates if pc is not None and key_pc(k)[0] == pc]
        if len(matches) == 1:
            key, evidence["tonic_from"] = matches[0], name
            break
    if key is None:
        raise ValueError(f"no tonic evidence {evidence['tonic_evidence']} picks one of {candidates}")
    if key_pc(key) != key_pc(stated):
        raise ValueError(f"signature and tonic say {key}, the title says {stated}")
    if evidence["music21_rank"] not in (1, 2):
        log.warning("music21 ranks the key %s of this excerpt %s (%s)", stated,
                    evidence["music21_rank"], analysed[:3])
    return stated, evidence


# --------------------------------------------------------------------------------------
# Building each kind of piece
# --------------------------------------------------------------------------------------


def _excerpt_bounds(spec: PieceSpec, bars: list[Bar], beat_q: float) -> tuple[float, float, list[Bar]]:
    """Excerpt start and end (quarters) and the bars it covers."""
    if spec.start_measure is not None:
        q_start = next(b.q for b in bars if b.number >= spec.start_measure)
    else:
        q_start = bars[0].q
    _, downbeats = metrical_grid(bars, beat_q)
    q_end = excerpt_end(bars, downbeats, q_start, beat_q, spec.bpm, spec.seconds)
    inside = [b for b in bars if b.q >= q_start - EPS and b.q < q_end - EPS]
    return q_start, q_end, inside


def _programs(spec: PieceSpec, n: int) -> list[tuple[int, bool]]:
    return [(spec.programs[i % len(spec.programs)], False) for i in range(n)]


def content_length(measure) -> float:
    """Where the notes and rests of a measure end (its written length can be wrong)."""
    ends = [float(n.getOffsetInHierarchy(measure) + n.duration.quarterLength)
            for n in measure.recurse().notesAndRests]
    return max(ends, default=float(measure.duration.quarterLength))


def score_bars(score) -> list[Bar]:
    """The measures of a score, with lengths all parts agree on.

    Some corpus files leave rests out of a part, so its measure looks short (Haydn
    Op. 74/1/IV), or give one part a longer pickup than the others (K. 155/III: 1.5
    quarters in the first violin, an eighth elsewhere). A bar is as long as its longest
    part, except an opening pickup, which is as short as its shortest part's notes and
    rests; positions are then re-added from the start.
    """
    m21 = _m21()
    bars = read_bars(score.parts[0])
    others = [list(p.getElementsByClass(m21.stream.Measure)) for p in score.parts[1:]]
    out: list[Bar] = []
    for i, bar in enumerate(bars):
        measures = [ms[i] for ms in others if i < len(ms)]
        if i == 0 and bar.dur < bar.bar_q - EPS:
            first = score.parts[0].getElementsByClass(m21.stream.Measure).first()
            dur = min([content_length(m) for m in [first, *measures]])
            dur = dur if dur > EPS else bar.dur
            bar = replace(bar, dur=dur, pad=bar.bar_q - dur)
        else:
            bar = replace(bar, dur=max([bar.dur] + [float(m.duration.quarterLength) for m in measures]))
        out.append(replace(bar, q=out[-1].q + out[-1].dur if out else bar.q))
    return out


def notes_of_bars(score, bars: Sequence[Bar], i0: int, i1: int) -> list[NoteEvent]:
    """Sounding notes of measures ``i0`` to ``i1 - 1`` (indices), all parts.

    Each note is placed by its own part's measure index and offset within that measure,
    on the first part's bar positions: some corpus files disagree between parts about a
    pickup's length, and placing by bar keeps the parts together (pickups right-aligned).
    Slicing first keeps big multi-movement files (a whole quartet) fast to read.
    """
    m21 = _m21()
    sub = score.measures(i0, i1, indicesNotNumbers=True).toSoundingPitch()
    notes: list[NoteEvent] = []
    for index, part in enumerate(sub.parts):
        flat = part.stripTies()
        for j, m in enumerate(flat.getElementsByClass(m21.stream.Measure)):
            if i0 + j >= len(bars):
                break
            bar = bars[i0 + j]
            pickup = bar.dur < bar.bar_q - EPS and (i0 + j == 0 or bar.pad > EPS)
            base = bar.q + bar.dur - content_length(m) if pickup else bar.q
            for n in m.recurse().notes:
                if isinstance(n, m21.harmony.Harmony) or n.duration.isGrace:
                    continue
                dur = float(n.duration.quarterLength)
                if dur <= 0:
                    continue
                q = base + float(n.getOffsetInHierarchy(m))
                for p in n.pitches:
                    notes.append(NoteEvent(q, dur, round(p.ps), index, 80))
    return notes


def build_score(spec: PieceSpec) -> Material:
    """Kinds ``score`` and ``analysis``: all parts of the score; chords derived or analysed."""
    score = parse_corpus(spec.source)
    beat_q, _ = METERS[spec.meter]
    bars = score_bars(score)
    q_start, q_end, inside = _excerpt_bounds(spec, bars, beat_q)
    meters = {b.meter for b in inside}
    if meters != {spec.meter}:
        raise ValueError(f"{spec.id}: excerpt meters {meters}, expected {spec.meter}")
    i0 = bars.index(inside[0])
    notes = notes_of_bars(score, bars, i0, i0 + len(inside))
    notes = [replace(n, dur=min(n.dur, q_end - n.q)) for n in notes if q_start - EPS <= n.q < q_end - EPS]
    final_notes: list[NoteEvent] = []
    for back in (2, 8):  # the last bars may hold only rests or tied tails
        final_notes = final_notes or notes_of_bars(score, bars, max(0, len(bars) - back), len(bars))
    sig_major, sig_minor, _ = signature_keys(score)
    candidates = [sig_major, sig_minor]
    analysed = analysed_keys(notes, q_start, q_end)
    flats = key_flats(spec.key)
    _, downbeats = metrical_grid(bars, beat_q)
    first_down = next(d for d in downbeats if d >= q_start - EPS)
    opening = ("opening_bass", opening_bass_pc(notes, first_down, beat_q))
    final = ("final_bass", final_bass_pc(final_notes))
    if spec.kind == "analysis":
        chords, analyst_key = read_roman_analysis(spec.analysis, bars, flats)
        candidates.append(dorian_minor(sig_major))
        key, evidence = decide_key(candidates, [("analyst", key_pc(analyst_key)[0])], spec.key,
                                   analysed)
        evidence["analyst_key"] = analyst_key
        evidence["tonic_evidence"].update({k: SHARP_NAMES[v] for k, v in (final, opening) if v is not None})
        chord_truth = "analysis"
    else:
        key, evidence = decide_key(candidates, [final, opening], spec.key, analysed)
        beats, _ = metrical_grid(bars, beat_q)
        grid = sorted({b for b in beats if q_start - EPS <= b < q_end - EPS} | {q_start, q_end})
        chords = derive_chords(notes, grid, flats)
        chord_truth = "derived"
    return Material(notes, inside, spec.meter, key, _programs(spec, len(score.parts)), chords,
                    chord_truth, q_start, q_end, evidence)


def build_tune(spec: PieceSpec) -> Material:
    """Kinds ``symbols`` and ``folk``: a melody plus an accompaniment rendered from chords."""
    score = parse_corpus(spec.source, spec.number)
    beat_q, _ = METERS[spec.meter]
    flats = key_flats(spec.key)
    bars, tune_notes, symbols = read_tune(score.parts[0], flats)
    sig_major, sig_minor, _ = signature_keys(score)
    if spec.kind == "symbols":
        tonic, source = main_root(symbols), "main_chord"
        if spec.key_source == "stated":
            sig_major, sig_minor = relative_pair(spec.key)
    else:
        tonic, source = tune_notes[-1].pitch % 12, "final_note"
    analysed = analysed_keys(tune_notes, bars[0].q, bars[-1].q + bars[-1].dur)
    key, evidence = decide_key([sig_major, sig_minor], [(source, tonic)], spec.key, analysed)
    notes, bars, symbols, ends = loop_material(tune_notes, bars, symbols, spec.loops)
    beats, downbeats = metrical_grid(bars, beat_q)
    if spec.kind == "symbols":
        chords, chord_truth = symbols, "symbols"
    else:
        chords = harmonise_melody(notes, bars, beats, downbeats, key, ends)
        chord_truth = "harmonised"
    q_start, q_end, inside = _excerpt_bounds(spec, bars, beat_q)
    notes = [replace(n, dur=min(n.dur, q_end - n.q)) for n in notes if q_start - EPS <= n.q < q_end - EPS]
    chords = clip_spans(chords, q_start, q_end)
    roles = {"comp": 1, "bass": 2}
    if len(spec.programs) > 3:
        roles["pad"] = 3
    ex_beats = [b for b in beats if q_start - EPS <= b < q_end - EPS]
    ex_down = [d for d in downbeats if q_start - EPS <= d < q_end - EPS]
    notes += accompaniment(chords, ex_beats, ex_down, spec.meter, roles)
    programs = _programs(spec, max(roles.values()) + 1)
    return Material(notes, inside, spec.meter, key, programs, chords, chord_truth, q_start, q_end,
                    evidence)


def build_synthetic(spec: PieceSpec) -> Material:
    """Kind ``synthetic``: a pop background (comping, bass, pad, drums) from a progression."""
    beat_q, bar_q = METERS[spec.meter]
    n_bars = max(2, math.ceil(spec.seconds * spec.bpm / 60.0 / (bar_q / beat_q)))
    bars = [Bar(i * bar_q, bar_q, bar_q, spec.meter, 0.0, i + 1) for i in range(n_bars)]
    tonic, _ = key_pc(spec.key)
    flats = key_flats(spec.key)
    slot = bar_q / spec.chords_per_bar
    chords = [roman_span(spec.progression[i % len(spec.progression)], tonic, i * slot,
                         (i + 1) * slot, flats) for i in range(n_bars * spec.chords_per_bar)]
    # End on the tonic, as a song section would.
    home = "I" if key_pc(spec.key)[1] == "major" else "i"
    chords[-1] = roman_span(home, tonic, chords[-1].q0, chords[-1].q1, flats)
    chords = merge_spans(chords)
    beats, downbeats = metrical_grid(bars, beat_q)
    q_end = n_bars * bar_q
    notes = accompaniment(chords, beats, downbeats, spec.meter, {"comp": 0, "bass": 1, "pad": 2})
    # A broken-chord figure on top gives the harmony a moving voice, as backgrounds have.
    step = 0.5
    q = 0.0
    while q < q_end - EPS:
        s = span_at(chords, q)
        pitches = voice_chord(s.pcs, low=67)
        k = round(q / step)
        notes.append(NoteEvent(q, step * 0.9, pitches[k % len(pitches)], 0, 55))
        q += step
    return Material(notes, bars, spec.meter, spec.key, _programs(spec, 3), chords, "generated",
                    0.0, q_end, {"generated": True})


def build_material(spec: PieceSpec) -> Material:
    """Score-time material for any spec."""
    if spec.meter not in METERS:
        raise ValueError(f"{spec.id}: meter {spec.meter} not supported")
    if spec.kind in ("score", "analysis"):
        return build_score(spec)
    if spec.kind in ("symbols", "folk"):
        return build_tune(spec)
    if spec.kind == "synthetic":
        return build_synthetic(spec)
    raise ValueError(f"{spec.id}: unknown kind {spec.kind!r}")


# --------------------------------------------------------------------------------------
# From score time to audio time: MIDI and truth
# --------------------------------------------------------------------------------------


def metric_accent(q: float, downbeats: Sequence[float], beats: Sequence[float]) -> int:
    """Velocity added to a note: players lean on downbeats a little, on beats less."""
    r = round(q, 6)
    if any(abs(r - d) < 1e-4 for d in downbeats):
        return 8
    if any(abs(r - b) < 1e-4 for b in beats):
        return 3
    return 0


def realise(spec: PieceSpec, mat: Material) -> tuple[pretty_midi.PrettyMIDI, dict]:
    """Apply the tempo map: the MIDI to render and the truth dictionary (seconds)."""
    beat_q, _ = METERS[mat.meter]
    tmap = TempoMap.build(mat.q_start, mat.q_end, beat_q, spec.bpm, spec.drift)
    all_beats, all_down = metrical_grid(mat.bars, beat_q)
    beats_q = [b for b in all_beats if mat.q_start - EPS <= b < mat.q_end - EPS]
    down_q = [d for d in all_down if mat.q_start - EPS <= d < mat.q_end - EPS]
    notes = list(mat.notes)
    programs = list(mat.programs)
    if spec.drums:
        programs.append((0, True))
        notes += drum_pattern(beats_q, down_q, mat.meter, mat.q_end, len(programs) - 1)

    pm = pretty_midi.PrettyMIDI(initial_tempo=spec.bpm * beat_q)
    instruments = [pretty_midi.Instrument(program=p, is_drum=d) for p, d in programs]
    seen: set[tuple[int, int, int]] = set()
    for n in sorted(notes, key=lambda n: (n.part, n.q, n.pitch)):
        start = float(tmap.seconds(n.q))
        # Slightly detached, so repeated notes re-attack instead of merging.
        end = float(tmap.seconds(n.q + max(n.dur * 0.95, min(n.dur, 0.05))))
        tick_key = (n.part, n.pitch, round(start * 1000))
        if tick_key in seen:  # unison doublings of one part play once
            continue
        seen.add(tick_key)
        vel = n.velocity + (0 if programs[n.part][1] else metric_accent(n.q, down_q, beats_q))
        instruments[n.part].notes.append(pretty_midi.Note(int(min(127, vel)), n.pitch, start, end))
    pm.instruments = [i for i in instruments if i.notes]

    end_s = float(tmap.seconds(mat.q_end))
    duration = round(end_s + TAIL, 3)
    beats = [round(float(t), 4) for t in tmap.seconds(beats_q)]
    downbeats = [round(float(t), 4) for t in tmap.seconds(down_q)]
    chords = [[0.0, round(LEAD_IN, 4), "N"]]
    for s in clip_spans(mat.chords, mat.q_start, mat.q_end):
        chords.append([round(float(tmap.seconds(s.q0)), 4), round(float(tmap.seconds(s.q1)), 4), s.label])
    chords.append([round(end_s, 4), duration, "N"])
    merged: list[list] = []
    for c in chords:
        if c[1] - c[0] <= 1e-4:
            continue
        if merged and merged[-1][2] == c[2]:
            merged[-1][1] = c[1]
        else:
            merged.append(c)
    chords = merged
    tempo = float(np.median(60.0 / np.diff(beats))) if len(beats) > 1 else spec.bpm
    truth = {
        "id": spec.id,
        "title": spec.title,
        "source": spec.source if spec.number is None else f"{spec.source}#{spec.number}",
        "kind": spec.kind,
        "meter": mat.meter,
        "tempo": round(tempo, 2),
        "duration": duration,
        "beats": beats,
        "downbeats": downbeats,
        "key": mat.key,
        "chords": chords,
        "chord_truth": mat.chord_truth,
        "drift": spec.drift != "none",
        "drift_kind": spec.drift,
        "drums": spec.drums,
        "key_evidence": mat.evidence,
        "generator_version": GENERATOR_VERSION,
    }
    return pm, truth


def build_piece(spec: PieceSpec) -> tuple[pretty_midi.PrettyMIDI, dict]:
    """The MIDI and truth of one spec (deterministic)."""
    return realise(spec, build_material(spec))


# --------------------------------------------------------------------------------------
# Files: committed truth, cached MIDI/WAV
# --------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where rendered MIDI and WAV files live (``$DEVSET_CACHE_DIR`` or ``.cache/devset``)."""
    env = os.environ.get("DEVSET_CACHE_DIR", "").strip()
    return Path(env) if env else REPO_ROOT / ".cache" / "devset"


def truth_digest(truth: dict) -> str:
    """Stable digest of a truth dictionary."""
    return hashlib.sha256(json.dumps(truth, sort_keys=True).encode()).hexdigest()[:16]


def _source_digest() -> str:
    """Digest of the generator's source as imported (not as it may be edited later)."""
    h = hashlib.sha256()
    for module in ("devset.py", "render.py"):
        h.update((Path(__file__).resolve().parent / module).read_bytes())
    return h.hexdigest()


SOURCE_DIGEST = _source_digest()


def cache_stamp(truth: dict) -> str:
    """What cached audio was made for: the truth and the generator's own source code.

    Hashing the source means any change to the generator re-renders the audio, even one
    that leaves the truth alone (a new comping pattern, another instrument).
    """
    return hashlib.sha256((truth_digest(truth) + SOURCE_DIGEST).encode()).hexdigest()[:16]


def write_json(path: Path, data: dict) -> None:
    """Write compact-but-readable JSON atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def load_truth(piece_id: str, truth_dir: Path = TRUTH_DIR) -> dict:
    """The committed truth of one piece."""
    return json.loads((truth_dir / f"{piece_id}.json").read_text())


def spec_by_id(piece_id: str) -> PieceSpec:
    """The spec with this id (KeyError if there is none)."""
    for s in PIECES:
        if s.id == piece_id:
            return s
    raise KeyError(piece_id)


@dataclass
class BuiltPiece:
    """A rendered piece: its truth and where its audio is."""

    id: str
    truth: dict
    wav: Path
    rebuilt: bool
    seconds: float


def cached_piece(piece_id: str, build: Callable[[], tuple[pretty_midi.PrettyMIDI, dict]],
                 stamp_of: Callable[[dict], str], truth_dir: Path, cache: Path, update_truth: bool = False,
                 force: bool = False, module: str = "devset") -> BuiltPiece:
    """Make sure the WAV of one piece is in ``cache`` and matches its truth; return both.

    The cache is trusted when ``<id>.stamp`` holds ``stamp_of(truth)`` for the truth the audio
    was made for (``force`` rebuilds regardless). Otherwise ``build()`` makes the MIDI and
    truth again and the audio is rendered; if the rebuilt truth differs from the committed
    file, the committed file is replaced when ``update_truth`` is set, else a warning is
    logged and the rebuilt truth (which matches the audio) is returned. Shared by every
    evaluation set (``module`` names the one to run to update its truth).
    """
    t0 = time.perf_counter()
    truth_path = truth_dir / f"{piece_id}.json"
    wav = cache / f"{piece_id}.wav"
    stamp = cache / f"{piece_id}.stamp"
    committed = json.loads(truth_path.read_text()) if truth_path.is_file() else None
    if committed is not None and wav.is_file() and stamp.is_file() \
            and stamp.read_text().strip() == stamp_of(committed) and not force:
        return BuiltPiece(piece_id, committed, wav, False, time.perf_counter() - t0)
    pm, truth = build()
    cache.mkdir(parents=True, exist_ok=True)
    # Atomic writes: another evaluation may be reading the cache at the same time.
    tmp_mid = cache / f".{piece_id}.{os.getpid()}.mid"
    pm.write(str(tmp_mid))
    tmp_mid.replace(cache / f"{piece_id}.mid")
    render_midi(pm, wav, duration=truth["duration"])
    if committed is None or (update_truth and truth_digest(committed) != truth_digest(truth)):
        write_json(truth_path, truth)
    elif truth_digest(committed) != truth_digest(truth):
        log.warning("%s: rebuilt truth differs from the committed %s (music21 or generator "
                    "changed?); using the rebuilt one. Run the %s module to update it.",
                    piece_id, truth_path.name, module)
    tmp_stamp = stamp.with_name(f".{stamp.name}.{os.getpid()}")
    tmp_stamp.write_text(stamp_of(truth) + "\n")
    tmp_stamp.replace(stamp)
    return BuiltPiece(piece_id, truth, wav, True, time.perf_counter() - t0)


def ensure_piece(spec: PieceSpec, truth_dir: Path = TRUTH_DIR, cache: Path | None = None,
                 update_truth: bool = False, force: bool = False) -> BuiltPiece:
    """:func:`cached_piece` for one piece of this set."""
    return cached_piece(spec.id, lambda: build_piece(spec), cache_stamp, truth_dir, cache or cache_dir(),
                        update_truth, force)


def _ensure_one(args: tuple[str, str, str, bool, bool]) -> BuiltPiece:
    piece_id, truth_dir, cache, update, force = args
    return ensure_piece(spec_by_id(piece_id), Path(truth_dir), Path(cache), update, force)


def ensure_pieces(ensure_one: Callable[[tuple[str, str, str, bool, bool]], BuiltPiece], ids: Sequence[str],
                  truth_dir: Path, cache: Path, update_truth: bool = False, force: bool = False,
                  workers: int | None = None, on_piece: Callable[[BuiltPiece], None] | None = None
                  ) -> list[BuiltPiece]:
    """Run ``ensure_one((id, truth_dir, cache, update_truth, force))`` for each id, in parallel
    processes (``ensure_one`` must be a module-level function), and return the pieces in ``ids`` order."""
    workers = workers or min(2, os.cpu_count() or 1)
    jobs = [(i, str(truth_dir), str(cache), update_truth, force) for i in ids]
    results: dict[str, BuiltPiece] = {}
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            results[job[0]] = ensure_one(job)
            if on_piece:
                on_piece(results[job[0]])
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for built in pool.map(ensure_one, jobs):
                results[built.id] = built
                if on_piece:
                    on_piece(built)
    return [results[i] for i in ids]


def ensure_devset(ids: Sequence[str] | None = None, truth_dir: Path = TRUTH_DIR,
                  cache: Path | None = None, update_truth: bool = False, force: bool = False,
                  workers: int | None = None, on_piece: Callable[[BuiltPiece], None] | None = None
                  ) -> list[BuiltPiece]:
    """Render whatever is missing (in parallel) and return the pieces in spec order."""
    ids = [spec_by_id(i).id for i in ids] if ids else [s.id for s in PIECES]
    return ensure_pieces(_ensure_one, ids, truth_dir, cache or cache_dir(), update_truth, force, workers, on_piece)


def main(argv: Sequence[str] | None = None) -> int:
    """Build (or check) the development set and print one line per piece."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="cache folder for MIDI/WAV (default $DEVSET_CACHE_DIR or .cache/devset)")
    parser.add_argument("--truth-dir", type=Path, default=TRUTH_DIR, help="where the truth JSON files go")
    parser.add_argument("--only", nargs="+", metavar="ID", help="build only these pieces")
    parser.add_argument("--check", action="store_true",
                        help="do not rewrite committed truth; warn where a rebuild differs")
    parser.add_argument("--force", action="store_true", help="rebuild even what the cache holds")
    parser.add_argument("--workers", type=int, default=None, help="parallel processes (default 2)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()

    def show(b: BuiltPiece) -> None:
        t = b.truth
        print(f"{b.id:26s} {t['meter']:4s} {t['tempo']:6.1f} BPM {t['key']:9s} "
              f"{'drift' if t['drift'] else '     '} {'drums' if t['drums'] else '     '} "
              f"{t['duration']:5.1f} s {t['chord_truth']:10s} "
              f"{'built' if b.rebuilt else 'cached'} {b.seconds:5.1f} s", flush=True)

    built = ensure_devset(args.only, args.truth_dir, args.out, update_truth=not args.check,
                          force=args.force, workers=args.workers, on_piece=show)
    total = sum(b.truth["duration"] for b in built)
    print(f"{len(built)} pieces, {total / 60:.1f} min of audio, in {time.perf_counter() - t0:.1f} s; "
          f"audio in {args.out or cache_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
