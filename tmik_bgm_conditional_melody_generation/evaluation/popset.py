"""The contemporary development set: programmed band arrangements with drums, rendered to audio.

Run ``python -m tmik_bgm_conditional_melody_generation.evaluation.popset [--out DIR]`` to
(re)build it. Every piece is an arrangement programmed here, in the style of contemporary
instrumentals: a GM drum kit, bass, comping (guitar, piano, clavinet, synth stabs), an
optional pad and an instrumental lead line, over a verse/chorus form, rendered with FluidSynth
and a General-MIDI soundfont (:func:`.render.render_midi`). The truth files
(``popset/<id>.json``, the same format as :mod:`.devset`'s, plus ``style``, ``held_out`` and
``sections``) are committed; MIDI and WAV go to a cache folder (``$POPSET_CACHE_DIR``, else
``$DEVSET_CACHE_DIR/popset``, else ``<repo>/.cache/popset``) and are rebuilt,
deterministically, whenever they are missing or the generator's source changed. The
material is programmed: Debian's MIDI packages ship no multi-track pop/rock songs (``mma``
generates accompaniment from its own groove library), and PyPI's large scraped-MIDI
collections were not used, their licences being unclear.

Styles (see :data:`DRUMS` for the grooves): pop, rock (kick on 1 and 3, snare on 2 and 4,
hi-hat 8ths), punk (150-180 BPM), four-on-the-floor EDM and disco, hip-hop (syncopated kick,
swung 16ths), ballad (60-75 BPM, sparse), reggae one-drop (kick and rim on 3 only), shuffle
and swing (swung 8ths, still 4/4), half-time feel (snare on 3), funk (16th hats, ghost
notes), game-soundtrack electronica with 16th arpeggios, drum and bass; 4/4 mostly, some
3/4, 6/8 and 12/8; 60-180 BPM.

Conventions of the truth:

* The beat is the level a listener taps: the quarter note in 4/4 and 3/4, the dotted
  quarter in 6/8 and 12/8 (so a 6/8 bar has 2 beats, a 12/8 bar 4, and their tempo is in
  dotted quarters per minute). ``tempo`` is the BPM at that level (the median of the beat
  spacing; every piece here holds a steady tempo).
* Half-time feel: the tempo is the notated one and the beat is its quarter note (hi-hats and
  bass move in its 8ths; only the snare, on beat 3, plays at half speed). A 140 BPM half-time
  piece is 140 BPM in 4/4 with four beats a bar, not 70.
* Swing and shuffle warp the off-beats (:func:`swing_position`) but never the beats: a
  shuffle is 4/4, a 12/8 piece sounds all three eighths of its beats evenly (piano triplets).
* Downbeats are the first beat of every bar, including drum-only intro bars. A drum pickup
  (a fill before the first bar) has beats but no downbeat.
* Chords: the programmed progression as Harte labels (exact), ``N`` over drum-only bars and
  the silence around the music. In pop, rock, punk, funk, disco and half-time pieces the
  band anticipates some chord changes by an 8th (:func:`push_points`: comping and bass hit
  the next bar's chord on the last 8th and hold it over the bar line, as bands do); the
  chord truth starts where the change sounds, the downbeat stays on the bar line. EDM verses
  end in a two-bar build (groove out, snare roll). Key: the key the progression was
  written in (the last bar is its tonic chord); ``key_evidence`` records music21's
  Krumhansl-Schmuckler ranking of the notes as a check: 29 of 33 pieces rank the truth first,
  four vamps (i-VI, I-IV-V-IV, I-bVII-IV, i-VI-III-VII) rank it 2nd or 3rd, the ambiguity
  such songs have.
* Game-soundtrack pieces (``game``) run a 16th-note synth arpeggio over the band, as
  chiptune and electronic game music does; ``dnb`` is drum and bass (kick on 1 and the
  "and" of 3, snare on 2 and 4, 170-175 BPM, counted at that tempo).
* Humanisation: note onsets move by a few milliseconds (Gaussian, 4 ms, clipped at 10 ms;
  drums 3 ms) and velocities vary by a few steps, deterministically from the piece's id.
  The truth stays on the programmed grid.

Split: :func:`held_out` marks every third piece of :data:`PIECES` (list positions 2, 5,
8, ...) as held out; the list is ordered so that the held-out third spans the styles and
meters. Tune on the ``pop-dev`` part only; report both.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pretty_midi

from .devset import (
    EPS,
    REPO_ROOT,
    ROMAN,
    TAIL,
    BuiltPiece,
    ChordSpan,
    NoteEvent,
    TempoMap,
    analysed_keys,
    bass_pitch,
    cached_piece,
    chord_pcs,
    clip_spans,
    ensure_pieces,
    key_flats,
    key_pc,
    merge_spans,
    pc_name,
    span_at,
    truth_digest,
    voice_chord,
)

log = logging.getLogger(__name__)

TRUTH_DIR = Path(__file__).resolve().parent / "popset"
# Bump when the generator changes in a way that changes audio or truth.
GENERATOR_VERSION = 1

# (beat length, bar length, pattern slot length), in quarter notes. Simple meters are
# programmed on a 16th grid, compound meters on an 8th grid.
POP_METERS: dict[str, tuple[float, float, float]] = {
    "4/4": (1.0, 4.0, 0.25), "3/4": (1.0, 3.0, 0.25), "6/8": (1.5, 3.0, 0.5), "12/8": (1.5, 6.0, 0.5),
}

# General MIDI drum keys.
KICK, SIDESTICK, SNARE, CLAP, CLOSED_HAT, PEDAL_HAT, OPEN_HAT = 36, 37, 38, 39, 42, 44, 46
CRASH, RIDE = 49, 51
LOW_TOM, MID_TOM, HIGH_TOM = 45, 47, 50
# Pattern letters: velocity of a hit; "." is no hit.
HIT_VELOCITY = {"X": 112, "x": 96, "o": 76, "g": 42}

# Drum grooves, one string per instrument, one character per slot of a bar (16ths in simple
# meters, 8ths in compound ones). ``kit`` is the GM drum-kit program.
DRUMS: dict[str, dict[int, str]] = {
    "pop": {KICK: "x.....o.x.......", SNARE: "....x.......x...", CLOSED_HAT: "x.o.x.o.x.o.x.o."},
    "rock": {KICK: "x.......x.o.....", SNARE: "....x.......x...", CLOSED_HAT: "x.o.x.o.x.o.x.o."},
    "punk": {KICK: "x.......x.......", SNARE: "....X.......X...", CLOSED_HAT: "x.x.x.x.x.x.x.x."},
    "edm": {KICK: "X...X...X...X...", CLAP: "....x.......x...", OPEN_HAT: "..o...o...o...o.",
            CLOSED_HAT: "g...g...g...g..."},
    "disco": {KICK: "x...x...x...x...", SNARE: "....x.......x...", OPEN_HAT: "..o...o...o...o.",
              CLOSED_HAT: "xg.gxg.gxg.gxg.g"},
    "hiphop": {KICK: "x.....x...x..o..", SNARE: "....X.......X...", CLOSED_HAT: "ogogogogogogogog"},
    "ballad": {KICK: "o.......g.......", SIDESTICK: "....o.......o...", CLOSED_HAT: "o.g.o.g.o.g.o.g."},
    "reggae": {KICK: "........x.......", SIDESTICK: "........x.......", CLOSED_HAT: "o.g.o.g.o.g.o.g."},
    "shuffle": {KICK: "x.......x.......", SNARE: "....x.......x...", CLOSED_HAT: "x.o.x.o.x.o.x.o."},
    "swing": {KICK: "o.......g.......", RIDE: "x...x.o.x...x.o.", PEDAL_HAT: "....o.......o...",
              SNARE: "..........g....."},
    "halftime": {KICK: "x.....o...x.....", SNARE: "........X.......", CLOSED_HAT: "x.o.x.o.x.o.x.o."},
    "funk": {KICK: "x..o..o...x..o..", SNARE: "....x..g.g..x..g", CLOSED_HAT: "xgogxgogxgogxgog"},
    "game": {KICK: "x.....x.x.......", SNARE: "....x.......x...", CLOSED_HAT: "x.x.x.x.x.x.x.x."},
    "dnb": {KICK: "x.........x.....", SNARE: "....x..g.g..x...", CLOSED_HAT: "x.o.x.o.x.o.x.o."},
    "waltz": {KICK: "x...........", SNARE: "....o...o...", CLOSED_HAT: "x.o.x.o.x.o."},
    "pop34": {KICK: "x.........o.", SNARE: "........x...", CLOSED_HAT: "x.o.x.o.x.o."},
    "ballad68": {KICK: "x.....", SNARE: "...x..", CLOSED_HAT: "oggogg"},
    "rock68": {KICK: "x....o", SNARE: "...x..", CLOSED_HAT: "xooxoo"},
    "blues128": {KICK: "x.....x.....", SNARE: "...x.....x..", CLOSED_HAT: "xggxggxggxgg"},
    "doowop128": {KICK: "x.....o.....", SNARE: "...x.....x..", CLOSED_HAT: "oggoggoggogg"},
}
DRUM_KIT = {"rock": 16, "punk": 16, "edm": 25, "hiphop": 25, "swing": 32, "ballad": 40, "game": 24, "dnb": 24}
# Bass lines: r root, t third, f fifth, s sixth, b flat seventh, o octave; a note lasts to
# the next onset.
BASS = {
    "pop": "r.....r.r...f...", "rock": "r.r.r.r.r.r.r.r.", "punk": "r.r.r.r.r.r.r.r.",
    "edm": "..r...r...r...r.", "disco": "r.o.r.o.r.o.r.o.", "hiphop": "r.....r...r..f..",
    "ballad": "r.......f.......", "reggae": "r..r..f.....o.f.", "shuffle": "r.t.f.s.o.s.f.t.",
    "swing": "r...t...f...s...", "halftime": "r.........r.....", "funk": "r..r..o.r.b.r..o",
    "game": "r.o.r.o.r.o.r.o.", "dnb": "r.........r.....",
    "waltz": "r...........", "pop34": "r.......f...", "ballad68": "r..f..", "rock68": "r..r..",
    "blues128": "r..t..f..s..", "doowop128": "r.....f.....",
}
STACCATO_BASS = frozenset({"edm", "funk"})  # bass notes last at most an 8th
# Comping: x a short chord, X a chord held to the next onset, a one note of an arpeggio.
COMP = {
    "pop": "X.......X...x...", "rock": "X.x.X.x.X.x.X.x.", "punk": "x.x.x.x.x.x.x.x.",
    "edm": "..x...x...x...x.", "disco": "x.x.x.x.x.x.x.x.", "hiphop": "X.......X.......",
    "ballad": "a.a.a.a.a.a.a.a.", "reggae": "....x.......x...", "shuffle": "x.x.x.x.x.x.x.x.",
    "swing": "x...x...x...x...", "halftime": "X.......X.......", "funk": "x..x.x..x..x.x..",
    "game": "aaaaaaaaaaaaaaaa", "dnb": "X.......X.......",
    "waltz": "....x...x...", "pop34": "a.a.a.a.a.a.", "ballad68": "aaaaaa", "rock68": "X..x..",
    "blues128": "xxxxxxxxxxxx", "doowop128": "xxxxxxxxxxxx",
}
# Styles whose verse ends in a two-bar build (groove out, snare roll in 8ths then 16ths).
BUILD_STYLES = frozenset({"edm"})
# Styles whose band anticipates some chord changes by an 8th (see push_points).
PUSH_STYLES = frozenset({"pop", "rock", "punk", "funk", "disco", "halftime", "rock68"})
# Lead rhythm cells per bar length in slots: n an onset, - held, . rest.
LEAD_CELLS: dict[str, tuple[str, ...]] = {
    "4/4": ("n-n-n-n-n---....", "n--n--n-n-------", "..n-n-n-n---n-n-", "n-----n-n-n-n---",
         "n---n---n-------", "..n-n---n--n-n--", "n-n-n-n-n-n-n---", "n--n--n---n-n---",
         "n-n--n--n-n--n--", "..n--n--n---n---"),
    "3/4": ("n---n---n---", "n-n-n-n-n---", "n-----n-n---", "..n-n-n-----"),
    "6/8": ("n-nn-n", "n--n--", "n-nn--", "n-n-n-"),
    "12/8": ("n-nn-nn--n--", "n--n--n-nn--", "n-----n--n--", "n-nn-nn-n---"),
}
LEAD_CADENCE: dict[str, str] = {"4/4": "n---n-------n-n-", "3/4": "n-------n-n-", "6/8": "n----n",
                                "12/8": "n--n--n----n"}
# Extra Roman numerals beyond devset's (blues dominants, minor sevenths, borrowed chords).
EXTRA_ROMAN: dict[str, tuple[int, str]] = {
    "I7": (0, "7"), "IV7": (5, "7"), "i7": (0, "min7"), "iv7": (5, "min7"), "bIII": (3, "maj"),
    "bVI": (8, "maj"), "bVII": (10, "maj"), "V": (7, "maj"), "ii": (2, "min"), "IVmaj7": (5, "maj7"),
    "v": (7, "min"), "sus4": (0, "sus4"), "Vsus4": (7, "sus4"),
}
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}


@dataclass(frozen=True)
class PopSpec:
    """How to program one piece.

    ``bpm`` is the tapped-beat tempo (dotted quarters in 6/8 and 12/8). ``programs`` are GM
    programs for lead, comping, bass and pad (``None``: no pad). ``verse`` and ``chorus``
    are Roman-numeral progressions, one numeral per chord slot (``chords_per_bar`` slots a
    bar), cycled over each section. ``intro_bars`` are drum-only bars; ``pickup_beats`` a
    drum fill before the first bar. ``swing`` is where the off-beat falls inside its pair
    (0.5 straight, 2/3 shuffle) at the ``swing_level`` ("8" or "16") subdivision.
    """

    id: str
    style: str
    key: str
    meter: str
    bpm: float
    verse: tuple[str, ...]
    chorus: tuple[str, ...]
    programs: tuple[int, int, int, int | None]
    seconds: float = 32.0
    chords_per_bar: int = 1
    intro_bars: int = 0
    pickup_beats: int = 0
    swing: float = 0.5
    swing_level: str = "8"
    title: str = ""


PIECES: tuple[PopSpec, ...] = (
    PopSpec("pop_anthem_118", "pop", "C major", "4/4", 118, ("I", "V", "vi", "IV"), ("IV", "I", "V", "vi"),
            (81, 0, 33, 89), intro_bars=1, title="pop, I-V-vi-IV"),
    PopSpec("rock_drive_128", "rock", "E major", "4/4", 128, ("I", "bVII", "IV", "I"), ("IV", "V", "I", "vi"),
            (29, 30, 34, None), title="rock, I-bVII-IV"),
    PopSpec("pop_bright_108", "pop", "D major", "4/4", 108, ("I", "vi", "IV", "V"), ("IV", "V", "iii", "vi"),
            (80, 25, 33, 48), pickup_beats=1, title="bright pop, 108 BPM"),
    PopSpec("edm_club_128", "edm", "F minor", "4/4", 128, ("i", "VI", "III", "VII"), ("VI", "VII", "i", "i"),
            (81, 90, 38, 89), intro_bars=2, title="four-on-the-floor EDM"),
    PopSpec("hiphop_boom_90", "hiphop", "C minor", "4/4", 90, ("i7", "iv7"), ("VI", "VII", "i7", "i7"),
            (73, 4, 38, None), swing=0.6, swing_level="16", title="hip-hop, swung 16ths"),
    PopSpec("rock_heavy_160", "rock", "B minor", "4/4", 160, ("i", "VI", "VII", "i"), ("VI", "VII", "i", "i"),
            (30, 30, 34, None), pickup_beats=2, seconds=30, title="fast rock, 160 BPM"),
    PopSpec("ballad_piano_68", "ballad", "Eb major", "4/4", 68, ("I", "V", "vi", "IV"), ("IV", "V", "I", "I"),
            (40, 0, 32, 48), seconds=34, title="piano ballad"),
    PopSpec("punk_fast_172", "punk", "D major", "4/4", 172, ("I", "IV", "V", "IV"), ("I", "V", "vi", "IV"),
            (29, 30, 34, None), pickup_beats=1, seconds=30, title="punk, 172 BPM"),
    PopSpec("edm_trance_138", "edm", "D minor", "4/4", 138, ("i", "VII", "VI", "VII"), ("VI", "III", "VII", "i"),
            (81, 81, 38, 90), intro_bars=1, title="trance, 138 BPM"),
    PopSpec("reggae_one_drop_76", "reggae", "G major", "4/4", 76, ("I", "IV"), ("I", "V", "IV", "I"),
            (56, 27, 33, 16), swing=0.58, seconds=36, title="reggae one-drop"),
    PopSpec("shuffle_blues_112", "shuffle", "E major", "4/4", 112, ("I7", "IV7", "I7", "V7"),
            ("IV7", "IV7", "I7", "V7"), (65, 0, 33, None), swing=2 / 3, title="shuffle blues"),
    PopSpec("hiphop_lofi_84", "hiphop", "Eb major", "4/4", 84, ("Imaj7", "vi7", "ii7", "V7"), ("IVmaj7", "V7"),
            (11, 4, 33, 89), swing=0.62, swing_level="16", pickup_beats=2, title="lo-fi hip-hop"),
    PopSpec("halftime_140", "halftime", "C# minor", "4/4", 140, ("i", "VI", "III", "VII"), ("VI", "VII", "i", "i"),
            (81, 30, 38, 89), intro_bars=1, title="half-time feel, 140 BPM"),
    PopSpec("funk_clav_104", "funk", "E minor", "4/4", 104, ("i7", "IV7"), ("iv7", "i7", "VII", "i7"),
            (61, 7, 36, None), title="funk, 16th hats"),
    PopSpec("ballad_slow_62", "ballad", "F major", "4/4", 62, ("I", "iii", "IV", "V"), ("vi", "IV", "I", "V"),
            (73, 0, 32, 49), seconds=34, title="slow ballad, 62 BPM"),
    PopSpec("waltz_pop_144", "waltz", "D major", "3/4", 144, ("I", "IV", "V", "I"), ("vi", "IV", "V", "I"),
            (73, 0, 32, 48), title="3/4 pop waltz"),
    PopSpec("ballad68_64", "ballad68", "Bb major", "6/8", 64, ("I", "vi", "IV", "V"), ("IV", "V", "I", "I"),
            (71, 0, 33, 48), seconds=34, title="6/8 ballad"),
    PopSpec("reggae_82", "reggae", "A minor", "4/4", 82, ("i", "iv"), ("VI", "VII", "i", "i"),
            (16, 27, 33, None), swing=0.6, intro_bars=1, title="reggae, organ lead"),
    PopSpec("blues128_66", "blues128", "C major", "12/8", 66, ("I7", "IV7", "I7", "V7"), ("IV7", "I7", "V7", "I7"),
            (66, 0, 32, None), seconds=36, title="12/8 slow blues"),
    PopSpec("pop_minor_96", "pop", "A minor", "4/4", 96, ("i", "VI", "III", "VII"), ("VI", "VII", "i", "i"),
            (65, 4, 34, 50), title="minor pop"),
    PopSpec("halftime_152", "halftime", "F major", "4/4", 152, ("I", "V", "vi", "IV"), ("IV", "V", "vi", "I"),
            (80, 4, 38, 89), title="half-time pop, 152 BPM"),
    PopSpec("disco_124", "disco", "G major", "4/4", 124, ("Imaj7", "vi7", "ii7", "V7"), ("IV", "V", "iii", "vi"),
            (62, 28, 38, 49), intro_bars=1, title="disco, four on the floor"),
    PopSpec("rock_punk_180", "punk", "A major", "4/4", 180, ("I", "V", "vi", "IV"), ("IV", "I", "V", "V"),
            (30, 30, 34, None), intro_bars=2, seconds=28, title="punk, 180 BPM"),
    PopSpec("waltz_folk_pop_120", "waltz", "G major", "3/4", 120, ("I", "V", "IV", "I"), ("vi", "IV", "I", "V"),
            (22, 25, 32, None), title="3/4 folk-pop"),
    PopSpec("game_chip_150", "game", "E minor", "4/4", 150, ("i", "VI", "VII", "i"), ("iv", "VII", "III", "V"),
            (80, 81, 38, None), intro_bars=1, title="chiptune game theme, 16th arpeggios"),
    PopSpec("dnb_172", "dnb", "F# minor", "4/4", 172, ("i", "VI"), ("VI", "VII", "i", "i"),
            (81, 89, 38, 91), seconds=30, title="drum and bass, 172 BPM"),
    PopSpec("game_arp_120", "game", "C major", "4/4", 120, ("I", "V", "vi", "IV"), ("vi", "IV", "I", "V"),
            (80, 81, 39, 89), pickup_beats=1, title="electronic game loop, 16th arpeggios"),
    PopSpec("swing_132", "swing", "Bb major", "4/4", 132, ("I", "vi7", "ii7", "V7"), ("IVmaj7", "IV7", "I", "V7"),
            (66, 0, 32, None), swing=2 / 3, title="swing, ride cymbal"),
    PopSpec("funk_96", "funk", "G minor", "4/4", 96, ("i7", "i7", "iv7", "i7"), ("VI", "VII", "i7", "i7"),
            (56, 28, 36, 61), title="funk, horns"),
    PopSpec("rock68_90", "rock68", "E minor", "6/8", 90, ("i", "VI", "VII", "i"), ("VI", "VII", "III", "V"),
            (29, 27, 34, None), title="6/8 rock"),
    PopSpec("pop34_ballad_96", "pop34", "A minor", "3/4", 96, ("i", "VI", "III", "VII"), ("iv", "i", "V", "i"),
            (68, 0, 33, 48), title="3/4 pop ballad"),
    PopSpec("shuffle_rock_126", "shuffle", "A major", "4/4", 126, ("I", "IV", "I", "V"), ("IV", "IV", "I", "V"),
            (29, 27, 34, None), swing=0.64, intro_bars=1, title="shuffle rock"),
    PopSpec("doowop128_74", "doowop128", "G major", "12/8", 74, ("I", "vi", "IV", "V"), ("I", "vi", "ii", "V"),
            (65, 0, 32, 52), seconds=34, title="12/8 doo-wop"),
)


def held_out(spec: PopSpec) -> bool:
    """The fixed split: every third piece of :data:`PIECES` (positions 2, 5, 8, ...)."""
    return [s.id for s in PIECES].index(spec.id) % 3 == 2


def spec_by_id(piece_id: str) -> PopSpec:
    """The spec with this id (KeyError if there is none)."""
    for s in PIECES:
        if s.id == piece_id:
            return s
    raise KeyError(piece_id)


def split_ids(part: str) -> list[str]:
    """Ids of the ``dev`` half, the ``held-out`` third or ``all`` pieces, in list order."""
    if part not in ("dev", "held-out", "all"):
        raise ValueError(f"unknown part {part!r}: dev, held-out or all")
    return [s.id for s in PIECES if part == "all" or held_out(s) == (part == "held-out")]


# --------------------------------------------------------------------------------------
# Programming the arrangement (score time, quarter notes)
# --------------------------------------------------------------------------------------


def swing_position(q: float, beat_q: float, ratio: float, level: str) -> float:
    """Where a straight position ``q`` (quarters) sounds when swung.

    Inside each pair of subdivisions (8ths of a quarter, or 16ths of an 8th with ``level``
    "16") the second one moves from half way to ``ratio`` of the pair; positions in between
    are warped linearly, so beats and pair starts never move. Compound meters already divide
    in three and are not swung.
    """
    if abs(ratio - 0.5) < EPS or beat_q != 1.0:
        return q
    pair = 1.0 if level == "8" else 0.5
    k = math.floor(q / pair + EPS)
    f = q / pair - k
    f = max(0.0, min(1.0, f))
    warped = f / 0.5 * ratio if f < 0.5 else ratio + (f - 0.5) / 0.5 * (1.0 - ratio)
    return (k + warped) * pair


def chord_span(numeral: str, tonic: int, q0: float, q1: float, flats: bool) -> ChordSpan:
    """A chord span for a Roman numeral (devset's table plus :data:`EXTRA_ROMAN`)."""
    degree, quality = ROMAN.get(numeral) or EXTRA_ROMAN[numeral]
    root = (tonic + degree) % 12
    return ChordSpan(q0, q1, f"{pc_name(root, flats)}:{quality}", root, chord_pcs(root, quality))


@dataclass(frozen=True)
class Section:
    """A stretch of bars: ``intro`` (drums only), ``verse`` or ``chorus``, in quarters."""

    name: str
    q0: float
    q1: float


def form(spec: PopSpec) -> list[Section]:
    """Intro (drum-only bars), then verse and chorus alternating, about ``spec.seconds`` long.

    Sections are 8 bars, or 4 where 8 bars would last over 20 s (the last one may be
    shorter); the music has an even number of bars, the one nearest to ``seconds``.
    """
    beat_q, bar_q, _ = POP_METERS[spec.meter]
    bar_s = bar_q / beat_q * 60.0 / spec.bpm
    section_bars = 8 if 8 * bar_s <= 20.0 else 4
    music_bars = max(2, round((spec.seconds - spec.intro_bars * bar_s) / bar_s / 2) * 2)
    sections = []
    q = 0.0
    if spec.intro_bars:
        sections.append(Section("intro", 0.0, spec.intro_bars * bar_q))
        q = spec.intro_bars * bar_q
    left, index = music_bars, 0
    while left > 0:
        n = min(section_bars, left)
        sections.append(Section("verse" if index % 2 == 0 else "chorus", q, q + n * bar_q))
        q += n * bar_q
        left -= n
        index += 1
    return sections


def piece_chords(spec: PopSpec, sections: Sequence[Section]) -> list[ChordSpan]:
    """The progression of every verse and chorus as chord spans (``N`` over the intro).

    The last bar is the tonic chord, as a song's last section ends at home.
    """
    _, bar_q, _ = POP_METERS[spec.meter]
    tonic, mode = key_pc(spec.key)
    flats = key_flats(spec.key)
    slot = bar_q / spec.chords_per_bar
    spans: list[ChordSpan] = []
    for sec in sections:
        if sec.name == "intro":
            spans.append(ChordSpan(sec.q0, sec.q1, "N"))
            continue
        prog = spec.verse if sec.name == "verse" else spec.chorus
        n = round((sec.q1 - sec.q0) / slot)
        for i in range(n):
            a = sec.q0 + i * slot
            spans.append(chord_span(prog[i % len(prog)], tonic, a, a + slot, flats))
    home = "I" if mode == "major" else "i"
    last_bar = sections[-1].q1 - bar_q
    spans = [chord_span(home, tonic, c.q0, c.q1, flats) if c.q0 >= last_bar - EPS else c for c in spans]
    return merge_spans(spans)


PUSH_Q = 0.5  # an anticipated chord change comes this much (an 8th) before its bar line


def push_points(spec: PopSpec, sections: Sequence[Section], chords: Sequence[ChordSpan]) -> list[float]:
    """Bar lines whose chord change the band anticipates by an 8th (styles in :data:`PUSH_STYLES`).

    Every change of chord at the start of a section's 3rd, 5th, 7th ... bar is pushed; section
    starts (with their fill and crash) are not.
    """
    if spec.style not in PUSH_STYLES:
        return []
    _, bar_q, _ = POP_METERS[spec.meter]
    starts = {round(c.q0, 6): c for c in chords}
    points = []
    for sec in sections:
        if sec.name == "intro":
            continue
        for k in range(2, round((sec.q1 - sec.q0) / bar_q), 2):
            q = sec.q0 + k * bar_q
            new = starts.get(round(q, 6))
            old = span_at(chords, q - PUSH_Q)
            if new is not None and old is not None and old.label != new.label:
                points.append(q)
    return points


def push_chords(chords: Sequence[ChordSpan], points: Sequence[float]) -> list[ChordSpan]:
    """The chord spans with each change at ``points`` moved :data:`PUSH_Q` earlier."""
    out = list(chords)
    for p in points:
        for i, c in enumerate(out):
            if abs(c.q0 - p) < EPS and i > 0:
                out[i - 1] = replace(out[i - 1], q1=p - PUSH_Q)
                out[i] = replace(c, q0=p - PUSH_Q)
    return out


def pattern_hits(pattern: str, bar_start: float, slot_q: float) -> list[tuple[float, str]]:
    """(position, letter) of every non-rest character of a one-bar pattern."""
    return [(bar_start + i * slot_q, c) for i, c in enumerate(pattern) if c != "."]


def bar_starts(sections: Sequence[Section], bar_q: float) -> list[float]:
    """Start of every bar of the piece (quarters)."""
    end = sections[-1].q1
    return [i * bar_q for i in range(round(end / bar_q))]


def drum_part(spec: PopSpec, sections: Sequence[Section], part: int) -> list[NoteEvent]:
    """The groove of ``spec.style`` on every bar, with fills into sections and crashes.

    The last bar before a new section ends in a snare-and-tom fill (its last two beats in
    4/4, last beat otherwise); a section's first downbeat gets a crash (and the chorus
    rides or plays louder). A pickup is a snare fill before bar 1. In :data:`BUILD_STYLES`
    a verse's last two bars are a build instead: no groove, a snare roll in 8ths, then 16ths.
    """
    beat_q, bar_q, slot_q = POP_METERS[spec.meter]
    groove = DRUMS[spec.style]
    notes: list[NoteEvent] = []
    starts = {round(s.q0, 6) for s in sections if s.name != "intro"}
    fill_bars = {round(s.q0 - bar_q, 6) for s in sections[1:]}
    fill_beats = 2 if spec.meter == "4/4" else 1
    soft = spec.style in ("ballad", "ballad68", "doowop128", "swing")
    # Fills in 16ths up to 130 BPM, in 8ths above (and in compound meters).
    fill_step = 0.25 if slot_q == 0.25 and spec.bpm <= 130 else 0.5
    # Bar start -> bars left in the verse, for the builds (not after the last section).
    builds = {round(s.q1 - k * bar_q, 6): k for s in sections[:-1] if s.name == "verse" for k in (1, 2)} \
        if spec.style in BUILD_STYLES else {}
    for b in bar_starts(sections, bar_q):
        sec = next(s for s in sections if s.q0 - EPS <= b < s.q1 - EPS)
        loud = 8 if sec.name == "chorus" else 0
        if round(b, 6) in builds:
            # EDM build: the groove stops, a snare roll in 8ths, then in 16ths.
            k = builds[round(b, 6)]
            step = 2 * slot_q / 2 ** (2 - k)
            n_hits = round(bar_q / step)
            notes += [NoteEvent(b + i * step, step, SNARE, part, 50 + round(40 * ((2 - k) + i / n_hits) / 2))
                      for i in range(n_hits)]
            continue
        fill_from = b + bar_q - fill_beats * beat_q if round(b, 6) in fill_bars else None
        for inst, pat in groove.items():
            if inst == CLOSED_HAT and sec.name == "chorus" and spec.style in ("rock", "pop", "punk", "halftime"):
                inst = RIDE
            for q, c in pattern_hits(pat, b, slot_q):
                if fill_from is not None and (q >= fill_from + EPS or (q >= fill_from - EPS and inst != KICK)):
                    continue
                notes.append(NoteEvent(q, slot_q, inst, part, min(127, HIT_VELOCITY[c] + loud)))
        if fill_from is not None:
            notes += fill(fill_from, b + bar_q, fill_step, part, soft)
        if round(b, 6) in starts or (b == 0 and spec.pickup_beats):
            notes.append(NoteEvent(b, 2.0, CRASH, part, 70 if soft else 100))
            if not any(n.pitch == KICK and abs(n.q - b) < EPS for n in notes):
                notes.append(NoteEvent(b, slot_q, KICK, part, 100))
    if spec.pickup_beats:
        notes += fill(-spec.pickup_beats * beat_q, 0.0, fill_step, part, soft)
    return notes


def fill(q0: float, q1: float, step: float, part: int, soft: bool) -> list[NoteEvent]:
    """A crescendo snare-then-toms fill of ``step``-long hits from ``q0`` to ``q1``."""
    n = max(1, round((q1 - q0) / step))
    order = [SNARE] * (n - n // 2) + [HIGH_TOM, MID_TOM, LOW_TOM] * n
    base = 55 if soft else 78
    return [NoteEvent(q0 + i * step, step, order[i], part, min(127, base + round(30 * i / n))) for i in range(n)]


def _degree_pitch(span: ChordSpan, letter: str) -> int:
    """Bass pitch (A1 to G#2, an octave up for ``o``) of a pattern letter over a chord."""
    root = span.root if span.root is not None else 0
    third = span.pcs[1] if len(span.pcs) > 1 else root
    fifth = span.pcs[2] if len(span.pcs) > 2 else (root + 7) % 12
    pc = {"r": root, "t": third, "f": fifth, "s": (root + 9) % 12, "b": (root + 10) % 12, "o": root}[letter]
    return bass_pitch(pc, low=33) + (12 if letter == "o" else 0)


def band_parts(spec: PopSpec, sections: Sequence[Section], chords: Sequence[ChordSpan],
               pushes: Sequence[float] = ()) -> list[NoteEvent]:
    """Bass (part 2), comping (part 1) and pad (part 3) from the style's patterns.

    At each of ``pushes`` (bar lines; ``chords`` already anticipated) comping and bass hit
    the new chord an 8th early and hold it over the bar line instead of playing there.
    """
    _, bar_q, slot_q = POP_METERS[spec.meter]
    played = [c for c in chords if c.root is not None]
    notes: list[NoteEvent] = []

    def pushed(q: float) -> bool:
        return any(p - PUSH_Q - EPS <= q < p + PUSH_Q - EPS for p in pushes)

    for p in pushes:
        s = span_at(played, p)
        if s is None:
            continue
        notes.append(NoteEvent(p - PUSH_Q, 2 * PUSH_Q * 0.95, _degree_pitch(s, "r"), 2, 92))
        for pitch in voice_chord(s.pcs, low=55):
            notes.append(NoteEvent(p - PUSH_Q, 2 * PUSH_Q * 0.95, pitch, 1, 70))
    for b in bar_starts(sections, bar_q):
        sec = next(s for s in sections if s.q0 - EPS <= b < s.q1 - EPS)
        if sec.name == "intro":
            continue
        loud = 6 if sec.name == "chorus" else 0
        bass_hits = pattern_hits(BASS[spec.style], b, slot_q)
        for i, (q, letter) in enumerate(bass_hits):
            s = span_at(played, q)
            if s is None or pushed(q):
                continue
            nxt = bass_hits[i + 1][0] if i + 1 < len(bass_hits) else b + bar_q
            if spec.style in STACCATO_BASS:
                nxt = min(nxt, q + 2 * slot_q)
            vel = (94 if abs(q - b) < EPS else 82) + loud
            notes.append(NoteEvent(q, (nxt - q) * 0.9, _degree_pitch(s, letter), 2, vel))
        comp_hits = pattern_hits(COMP[spec.style], b, slot_q)
        arp = 0
        for i, (q, letter) in enumerate(comp_hits):
            s = span_at(played, q)
            if s is None or pushed(q):
                continue
            nxt = comp_hits[i + 1][0] if i + 1 < len(comp_hits) else b + bar_q
            voicing = voice_chord(s.pcs, low=55)
            accent = 8 if abs(q - b) < EPS else 0
            if letter == "a":
                tones = voicing + [voicing[0] + 12]
                pattern = tones + tones[-2:0:-1]
                notes.append(NoteEvent(q, (nxt - q) * 1.8, pattern[arp % len(pattern)], 1, 66 + accent + loud))
                arp += 1
                continue
            dur = (nxt - q) * 0.9 if letter == "X" else min(nxt - q, 2 * slot_q) * 0.7
            for p in voicing:
                notes.append(NoteEvent(q, dur, p, 1, 60 + accent + loud))
    if spec.programs[3] is not None:
        for s in played:
            for p in voice_chord(s.pcs, low=52):
                notes.append(NoteEvent(s.q0, s.q1 - s.q0, p, 3, 44))
    return notes


def lead_part(spec: PopSpec, sections: Sequence[Section], chords: Sequence[ChordSpan],
              rng: np.random.Generator) -> list[NoteEvent]:
    """An instrumental lead line (part 0): two-bar phrases, chord tones on beats, steps between.

    Each phrase's first bar takes a rhythm cell at random, its second ends on a long note;
    the chorus sits a few semitones higher than the verse.
    """
    beat_q, bar_q, slot_q = POP_METERS[spec.meter]
    cells, cadence = LEAD_CELLS[spec.meter], LEAD_CADENCE[spec.meter]
    tonic, mode = key_pc(spec.key)
    scale = sorted(p for p in range(55, 92) if (p - tonic) % 12 in SCALES[mode])
    played = [c for c in chords if c.root is not None]
    notes: list[NoteEvent] = []
    prev: int | None = None
    for sec in sections:
        if sec.name == "intro":
            continue
        centre = 72 if sec.name == "verse" else 77
        n_bars = round((sec.q1 - sec.q0) / bar_q)
        for k in range(n_bars):
            b = sec.q0 + k * bar_q
            cell = cadence if k % 2 == 1 else cells[int(rng.integers(len(cells)))]
            onsets = [i for i, c in enumerate(cell) if c == "n"]
            for j, i in enumerate(onsets):
                q = b + i * slot_q
                length = 1
                while i + length < len(cell) and cell[i + length] == "-":
                    length += 1
                s = span_at(played, q)
                if s is None:
                    continue
                on_beat = abs((q - b) / beat_q - round((q - b) / beat_q)) < EPS
                if on_beat or prev is None:
                    tones = [p for p in scale if p % 12 in s.pcs[:3]] or \
                        [p for p in range(55, 92) if p % 12 in s.pcs[:3]]
                    ref = centre if prev is None else prev
                    pitch = min(tones, key=lambda p: (abs(p - ref) + 0.3 * abs(p - centre), p))
                else:
                    idx = min(range(len(scale)), key=lambda i: abs(scale[i] - prev))
                    step = int(rng.choice([-2, -1, -1, 1, 1, 2]))
                    if prev > centre + 5:
                        step = -abs(step)
                    elif prev < centre - 5:
                        step = abs(step)
                    pitch = scale[max(0, min(len(scale) - 1, idx + step))]
                prev = pitch
                vel = 92 if on_beat else 80
                notes.append(NoteEvent(q, length * slot_q * 0.92, pitch, 0, vel))
    return notes


@dataclass
class Arrangement:
    """A programmed piece in score time: notes (swung), sections, chords (anticipations applied)."""

    spec: PopSpec
    notes: list[NoteEvent]
    sections: list[Section]
    chords: list[ChordSpan]
    q_start: float
    q_end: float
    programs: list[tuple[int, bool]] = field(default_factory=list)
    pushes: list[float] = field(default_factory=list)  # bar lines whose chord change is anticipated


def rng_for(spec: PopSpec) -> np.random.Generator:
    """The piece's own deterministic random generator (seeded by its id)."""
    return np.random.default_rng(zlib.crc32(spec.id.encode()))


def arrange(spec: PopSpec, rng: np.random.Generator | None = None) -> Arrangement:
    """Program the whole piece: lead 0, comping 1, bass 2, pad 3, drums 4 (score time)."""
    if spec.meter not in POP_METERS:
        raise ValueError(f"{spec.id}: meter {spec.meter} not supported")
    rng = rng or rng_for(spec)
    beat_q, _, _ = POP_METERS[spec.meter]
    sections = form(spec)
    chords = piece_chords(spec, sections)
    pushes = push_points(spec, sections, chords)
    chords = push_chords(chords, pushes)
    notes = lead_part(spec, sections, chords, rng) + band_parts(spec, sections, chords, pushes)
    notes += drum_part(spec, sections, 4)
    swung = []
    for n in notes:
        a = swing_position(n.q, beat_q, spec.swing, spec.swing_level)
        e = swing_position(n.q + n.dur, beat_q, spec.swing, spec.swing_level)
        swung.append(NoteEvent(a, max(e - a, 0.05), n.pitch, n.part, n.velocity))
    lead, comp, bass, pad = spec.programs
    programs = [(lead, False), (comp, False), (bass, False), (pad if pad is not None else 0, False),
                (DRUM_KIT.get(spec.style, 0), True)]
    return Arrangement(spec, swung, sections, chords, -spec.pickup_beats * beat_q, sections[-1].q1, programs,
                       pushes)


# --------------------------------------------------------------------------------------
# From score time to audio time: MIDI and truth
# --------------------------------------------------------------------------------------

JITTER_SD = 0.004  # seconds, pitched parts
DRUM_JITTER_SD = 0.003
JITTER_MAX = 0.010
VELOCITY_SPREAD = 5
# GM synth leads and pads (programs 80-103) sound far louder than acoustic ones at the same
# velocity in FluidR3; they play this much softer so the mix does not clip.
SYNTH_PROGRAMS = range(80, 104)
SYNTH_GAIN = 0.7


def metrical_grid(arr: Arrangement) -> tuple[list[float], list[float]]:
    """Beats (from the pickup on) and downbeats (every bar start) in quarters."""
    beat_q, bar_q, _ = POP_METERS[arr.spec.meter]
    n_beats = round((arr.q_end - arr.q_start) / beat_q)
    beats = [arr.q_start + i * beat_q for i in range(n_beats)]
    downbeats = [i * bar_q for i in range(round(arr.q_end / bar_q))]
    return beats, downbeats


def key_evidence(arr: Arrangement) -> dict:
    """music21's Krumhansl-Schmuckler ranking of the pitched notes, as a check of the key truth.

    The truth is the key the progression was written in; a short vamp (i-VI, I-IV) may rank
    its relative or dominant key first, which says how ambiguous the piece is.
    """
    pitched = [n for n in arr.notes if not arr.programs[n.part][1]]
    analysed = analysed_keys(pitched, 0.0, arr.q_end)
    names = [a for a, _ in analysed]
    rank = next((i + 1 for i, a in enumerate(names) if key_pc(a) == key_pc(arr.spec.key)), None)
    return {"generated": True, "music21": [list(a) for a in analysed[:3]], "music21_rank": rank}


def realise(arr: Arrangement, rng: np.random.Generator | None = None) -> tuple[pretty_midi.PrettyMIDI, dict]:
    """Apply the tempo map and humanisation: the MIDI to render and the truth (seconds)."""
    spec = arr.spec
    rng = rng or np.random.default_rng(zlib.crc32(spec.id.encode()) + 1)
    beat_q, _, _ = POP_METERS[spec.meter]
    tmap = TempoMap.build(arr.q_start, arr.q_end, beat_q, spec.bpm, "none")
    pm = pretty_midi.PrettyMIDI(initial_tempo=spec.bpm * beat_q)
    num, den = (int(x) for x in spec.meter.split("/"))
    pm.time_signature_changes = [pretty_midi.TimeSignature(num, den, 0.0)]
    instruments = [pretty_midi.Instrument(program=p, is_drum=d) for p, d in arr.programs]
    seen: set[tuple[int, int, int]] = set()
    for n in sorted(arr.notes, key=lambda n: (n.part, n.q, n.pitch)):
        drum = arr.programs[n.part][1]
        sd = DRUM_JITTER_SD if drum else JITTER_SD
        jitter = float(np.clip(rng.normal(0.0, sd), -JITTER_MAX, JITTER_MAX))
        start = float(tmap.seconds(n.q)) + jitter
        end = float(tmap.seconds(n.q + n.dur)) + jitter
        key = (n.part, n.pitch, round(start * 1000))
        if key in seen:
            continue
        seen.add(key)
        gain = SYNTH_GAIN if not drum and arr.programs[n.part][0] in SYNTH_PROGRAMS else 1.0
        vel = int(np.clip(n.velocity * gain + rng.integers(-VELOCITY_SPREAD, VELOCITY_SPREAD + 1), 1, 127))
        instruments[n.part].notes.append(pretty_midi.Note(vel, n.pitch, max(0.0, start), max(start + 0.03, end)))
    pm.instruments = [i for i in instruments if i.notes]

    beats_q, down_q = metrical_grid(arr)
    end_s = float(tmap.seconds(arr.q_end))
    duration = round(end_s + TAIL, 3)
    beats = [round(float(t), 4) for t in tmap.seconds(beats_q)]
    downbeats = [round(float(t), 4) for t in tmap.seconds(down_q)]
    chords: list[list] = [[0.0, round(float(tmap.seconds(0.0)), 4), "N"]]
    def sounding(q: float) -> float:  # a chord boundary where the (swung) band plays it
        return round(float(tmap.seconds(swing_position(q, beat_q, spec.swing, spec.swing_level))), 4)

    for s in clip_spans(arr.chords, 0.0, arr.q_end):
        chords.append([sounding(s.q0), sounding(s.q1), s.label])
    chords.append([round(end_s, 4), duration, "N"])
    merged: list[list] = []
    for c in chords:
        if c[1] - c[0] <= 1e-4:
            continue
        if merged and merged[-1][2] == c[2]:
            merged[-1][1] = c[1]
        else:
            merged.append(c)
    tempo = float(np.median(60.0 / np.diff(beats)))
    truth = {
        "id": spec.id,
        "title": spec.title,
        "source": "programmed",
        "kind": "pop",
        "style": spec.style,
        "meter": spec.meter,
        "tempo": round(tempo, 2),
        "duration": duration,
        "beats": beats,
        "downbeats": downbeats,
        "key": spec.key,
        "chords": merged,
        "chord_truth": "programmed",
        "drift": False,
        "drift_kind": "none",
        "drums": True,
        "swing": round(spec.swing, 3),
        "pushed_changes": len(arr.pushes),
        "held_out": held_out(spec),
        "sections": [[round(float(tmap.seconds(s.q0)), 4), round(float(tmap.seconds(s.q1)), 4), s.name]
                     for s in arr.sections],
        "key_evidence": key_evidence(arr),
        "generator_version": GENERATOR_VERSION,
    }
    return pm, truth


def build_piece(spec: PopSpec) -> tuple[pretty_midi.PrettyMIDI, dict]:
    """The MIDI and truth of one spec (deterministic)."""
    return realise(arrange(spec))


# --------------------------------------------------------------------------------------
# Files: committed truth, cached MIDI/WAV
# --------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$POPSET_CACHE_DIR``, else ``$DEVSET_CACHE_DIR/popset``, else ``<repo>/.cache/popset``."""
    env = os.environ.get("POPSET_CACHE_DIR", "").strip()
    if env:
        return Path(env)
    dev = os.environ.get("DEVSET_CACHE_DIR", "").strip()
    return Path(dev) / "popset" if dev else REPO_ROOT / ".cache" / "popset"


def _source_digest() -> str:
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for module in ("popset.py", "devset.py", "render.py"):
        h.update((here / module).read_bytes())
    return h.hexdigest()


SOURCE_DIGEST = _source_digest()


def cache_stamp(truth: dict) -> str:
    """What cached audio was made for: the truth and the generators' source code."""
    return hashlib.sha256((truth_digest(truth) + SOURCE_DIGEST).encode()).hexdigest()[:16]


def ensure_piece(spec: PopSpec, truth_dir: Path = TRUTH_DIR, cache: Path | None = None,
                 update_truth: bool = False, force: bool = False) -> BuiltPiece:
    """Make sure the WAV of ``spec`` is cached and matches its truth; return both (see
    :func:`.devset.cached_piece`)."""
    return cached_piece(spec.id, lambda: build_piece(spec), cache_stamp, truth_dir, cache or cache_dir(),
                        update_truth, force, module="popset")


def _ensure_one(args: tuple[str, str, str, bool, bool]) -> BuiltPiece:
    piece_id, truth_dir, cache, update, force = args
    return ensure_piece(spec_by_id(piece_id), Path(truth_dir), Path(cache), update, force)


def ensure_popset(ids: Sequence[str] | None = None, truth_dir: Path = TRUTH_DIR, cache: Path | None = None,
                  update_truth: bool = False, force: bool = False, workers: int | None = None,
                  on_piece: Callable[[BuiltPiece], None] | None = None) -> list[BuiltPiece]:
    """Render whatever is missing (in parallel) and return the pieces in ``ids`` order."""
    ids = [spec_by_id(i).id for i in ids] if ids else [s.id for s in PIECES]
    return ensure_pieces(_ensure_one, ids, truth_dir, cache or cache_dir(), update_truth, force, workers, on_piece)


def main(argv: Sequence[str] | None = None) -> int:
    """Build (or check) the contemporary set and print one line per piece."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="cache folder for MIDI/WAV (see cache_dir)")
    parser.add_argument("--truth-dir", type=Path, default=TRUTH_DIR, help="where the truth JSON files go")
    parser.add_argument("--only", nargs="+", metavar="ID", help="build only these pieces")
    parser.add_argument("--check", action="store_true", help="do not rewrite committed truth")
    parser.add_argument("--force", action="store_true", help="rebuild even what the cache holds")
    parser.add_argument("--workers", type=int, default=None, help="parallel processes (default 2)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()

    def show(b: BuiltPiece) -> None:
        t = b.truth
        print(f"{b.id:22s} {t['style']:9s} {t['meter']:4s} {t['tempo']:6.1f} BPM {t['key']:9s} "
              f"{'held-out' if t['held_out'] else 'dev     '} {t['duration']:5.1f} s "
              f"{'built' if b.rebuilt else 'cached'} {b.seconds:5.1f} s", flush=True)

    built = ensure_popset(args.only, args.truth_dir, args.out, update_truth=not args.check,
                          force=args.force, workers=args.workers, on_piece=show)
    total = sum(b.truth["duration"] for b in built)
    print(f"{len(built)} pieces, {total / 60:.1f} min of audio, in {time.perf_counter() - t0:.1f} s; "
          f"audio in {args.out or cache_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
