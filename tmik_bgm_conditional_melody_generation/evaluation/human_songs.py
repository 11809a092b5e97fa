"""Human melodies with English lyrics, read from music21's corpus, as sung notes with their grid.

The human reference of the lyric figures (:func:`.melody_metrics.lyric_metrics`): songs whose
scores carry English lyrics. music21's corpus (10.x) holds four (found by reading every
folder's scores for lyric-bearing parts; the rest are instrumental, German chorales and
Lieder, Latin or Italian polyphony, or Hawaiian): :data:`SONGS`. Each verse of a song is one
performance: the notes of the sung part with that verse's syllables (a note carrying only
one lyric, a refrain, sings it in every verse).

How a score becomes what :func:`lyric_metrics` reads:

* Times: one tempo for the whole song, the score's metronome mark (printed, or the playback
  tempo the file gives) or, where it has none, 100 quarter notes per minute
  (:data:`DEFAULT_QPM`); :attr:`Performance.tempo_source` says which.
* Beats from the time signature (a dotted quarter in 6/8, a quarter in 4/4), downbeats at
  the bar lines (an incomplete first bar is a pickup: its downbeat lies before the music).
* Tied notes are one note; a note without a syllable continues the previous syllable
  (a melisma); notes before the first syllable are left out.
* Stress: :func:`tmik_common.lyrics.word_stress` of each word (the score's hyphenation gives
  its syllables), the same lexical stress our melodies are set to.
* Lines (phrases): scores do not mark lyric lines, so a new line starts before a word that
  follows a notated rest; or that starts with a capital letter after a word that ended
  with punctuation; or that starts with a capital letter (other than "I" and a hymn's "Thee",
  :data:`ALWAYS_CAPITAL`) after a word that lasted at least a beat, is not a function word and
  ends a line of three syllables or more (so "Dear Father" stays together); or after
  a syllable held three beats or more (two in compound meters) once the line has four
  syllables. These are where the printed poems break their lines in these songs.
* Harmony for the chord-tone ratio: the chord symbols of a lead sheet, else the pitch
  classes sounding in the other parts (the accompaniment and the other voices) at each
  moment; the key from music21's key analysis of the whole score.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache

from tmik_common.lyrics import FUNCTION_WORDS, word_stress

from .melody_metrics import COMPOUND_METERS

log = logging.getLogger(__name__)

# (corpus path, index of the sung part): the corpus scores with English lyrics.
SONGS: tuple[tuple[str, int], ...] = (
    ("leadSheet/berlinAlexandersRagtime.mxl", 0),  # Irving Berlin, 1911: a Tin Pan Alley song
    ("leadSheet/fosterBrownHair.mxl", 0),  # Stephen Foster, 1854
    ("johnson_j_r/lift_every_voice.mxl", 0),  # J. Rosamond Johnson, 1900: soprano of the hymn
    ("beach/prayer_of_a_tired_child.musicxml", 0),  # Amy Beach: soprano I
)
DEFAULT_QPM = 100.0
# Words written with a capital anywhere in a line: "I", and the pronouns of hymns.
ALWAYS_CAPITAL = frozenset(("i", "i'm", "i'll", "i've", "i'd", "thee", "thou", "thy", "thine", "god", "lord"))
LINE_PUNCTUATION = ",;:.!?"
KEY_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


@dataclass
class Performance:
    """One verse of a song: sung notes (melody.json note dicts) on the score's grid, in seconds."""

    song: str
    verse: int
    notes: list[dict]
    beats: list[float]
    downbeats: list[float]
    meter: str
    qpm: float
    tempo_source: str
    key: str
    chords: list[tuple[float, float, frozenset[int] | str]] = field(default_factory=list)


def _grid(part, spq: float) -> tuple[list[float], list[float], str]:
    """Beats, downbeats (seconds) and the first meter of a part, from its bars and time signatures."""
    from music21 import meter as m21meter

    beats: list[float] = []
    downbeats: list[float] = []
    ts = None
    first_meter = None
    measures = list(part.getElementsByClass("Measure"))
    for i, m in enumerate(measures):
        found = m.getElementsByClass(m21meter.TimeSignature)
        if found:
            ts = found[0]
        if ts is None:
            ts = m21meter.TimeSignature("4/4")
        first_meter = first_meter or ts.ratioString
        bar = float(ts.barDuration.quarterLength)
        beat = float(ts.beatDuration.quarterLength)
        start = float(m.offset)
        length = float(m.duration.quarterLength)
        if i == 0 and 0 < length < bar - 1e-6:  # a pickup bar: its downbeat lies before the music
            start -= bar - length
        downbeats.append(start * spq)
        k = 0
        while k * beat < bar - 1e-6:
            beats.append((start + k * beat) * spq)
            k += 1
    if measures:
        last = measures[-1]
        beats.append(float(last.offset + last.duration.quarterLength) * spq)
    return beats, downbeats, first_meter or "4/4"


def _tempo(score) -> tuple[float, str]:
    """Quarter notes per minute and where the figure comes from."""
    from music21 import tempo

    for mark in score.recurse().getElementsByClass(tempo.MetronomeMark):
        if mark.number is not None:
            return float(mark.getQuarterBPM()), "printed metronome mark"
        if mark.numberSounding is not None:
            return float(mark.numberSounding) * float(mark.referent.quarterLength), "playback tempo of the file"
    return DEFAULT_QPM, f"no metronome mark: {DEFAULT_QPM:g} quarters per minute assumed"


def _lyric(n, verse: int):
    """The verse's lyric of a note, a refrain's only lyric, or None."""
    if not n.lyrics:
        return None
    for ly in n.lyrics:
        if ly.number == verse and (ly.text or "").strip():
            return ly
    if len(n.lyrics) == 1 and verse > 1 and (n.lyrics[0].text or "").strip():
        return n.lyrics[0]
    return None


def verse_count(part) -> int:
    """Number of verses the part's lyrics have."""
    return max((max((ly.number or 1) for ly in n.lyrics) for n in part.recurse().notes if n.lyrics), default=0)


def _sung_notes(part, verse: int, spq: float, beat_s: float, compound: bool) -> list[dict]:
    """The part's notes with one verse's syllables, words, stress, lines and melismas."""
    from music21 import harmony, note

    events = []  # (start_s, end_s, pitch | None for a rest, lyric)
    for el in part.stripTies().flatten().notesAndRests:
        if isinstance(el, harmony.ChordSymbol) or el.quarterLength <= 0:
            continue
        start = float(el.offset) * spq
        end = start + float(el.quarterLength) * spq
        if isinstance(el, note.Rest):
            events.append((start, end, None, None))
        else:
            pitch = el.pitch.midi if isinstance(el, note.Note) else max(p.midi for p in el.pitches)
            events.append((start, end, int(pitch), _lyric(el, verse)))

    # Syllables: (note indices, text, syllabic, rest_before)
    syllables: list[dict] = []
    notes: list[dict] = []
    rest_pending = False
    for start, end, pitch, ly in events:
        if pitch is None:
            rest_pending = True
            continue
        if ly is None:
            if not syllables:
                continue
            notes.append({"start": start, "end": end, "pitch": pitch, "melisma": True})
            syllables[-1]["notes"].append(len(notes) - 1)
            continue
        notes.append({"start": start, "end": end, "pitch": pitch, "melisma": False})
        syllables.append({"notes": [len(notes) - 1], "text": ly.text.strip(), "syllabic": ly.syllabic or "single",
                          "rest_before": rest_pending})
        rest_pending = False

    # Words from the hyphenation, then stress.
    words: list[list[int]] = []
    for i, s in enumerate(syllables):
        if not words or s["syllabic"] in ("single", "begin") or (words and syllables[words[-1][-1]]["syllabic"]
                                                                  in ("single", "end")):
            words.append([i])
        else:
            words[-1].append(i)
    for w in words:
        text = "".join(syllables[i]["text"] for i in w)
        clean = "".join(ch for ch in text if ch.isalnum() or ch == "'").strip("'")
        for i, st in zip(w, word_stress([syllables[i]["text"] for i in w], "en", word=clean), strict=True):
            syllables[i]["word"] = text
            syllables[i]["stress"] = st

    # Lines.
    long_held = (2.0 if compound else 3.0) * beat_s
    phrase, in_line = 0, 0
    prev_word: list[int] | None = None
    for w in words:
        first = syllables[w[0]]
        if prev_word is not None:
            last = syllables[prev_word[-1]]
            held = notes[last["notes"][-1]]["end"] - notes[last["notes"][0]]["start"]
            prev_text = "".join(syllables[i]["text"] for i in prev_word)
            capital = first["text"][:1].isupper()
            always = first["word"].lower().strip(LINE_PUNCTUATION) in ALWAYS_CAPITAL
            prev_key = prev_text.lower().strip(LINE_PUNCTUATION + "\"'")
            punctuated = prev_text.rstrip("\"'")[-1:] in LINE_PUNCTUATION
            if (first["rest_before"]
                    or (capital and punctuated)
                    or (capital and not always and prev_key not in FUNCTION_WORDS and held >= beat_s - 1e-6
                        and in_line >= 3)
                    or (held >= long_held - 1e-6 and in_line >= 4)):
                phrase += 1
                in_line = 0
        for i in w:
            for k in syllables[i]["notes"]:
                notes[k]["phrase"] = phrase
                notes[k]["word"] = syllables[i]["word"]
                notes[k]["syllable"] = syllables[i]["text"]
                notes[k]["stress"] = syllables[i]["stress"]
        in_line += len(w)
        prev_word = w
    return notes


def _chords(score, part_index: int, spq: float) -> list[tuple[float, float, frozenset[int] | str]]:
    """Chord symbols of a lead sheet, else the other parts' sounding pitch classes, in seconds."""
    from music21 import harmony, stream

    symbols = [cs for cs in score.recurse().getElementsByClass(harmony.ChordSymbol) if cs.pitches]
    if symbols:
        offs = [float(cs.getOffsetInHierarchy(score)) for cs in symbols]
        end = float(score.highestTime)
        out: list[tuple[float, float, frozenset[int] | str]] = []
        for cs, a, b in zip(symbols, offs, [*offs[1:], end], strict=True):
            if b > a:
                out.append((a * spq, b * spq, frozenset(p.pitchClass for p in cs.pitches)))
        return out
    others = stream.Score([p for i, p in enumerate(score.parts) if i != part_index])
    out = []
    for ch in others.chordify().flatten().notes:
        start = float(ch.offset) * spq
        out.append((start, start + float(ch.quarterLength) * spq, frozenset(p.pitchClass for p in ch.pitches)))
    return out


@lru_cache(maxsize=8)
def load_song(path: str, part_index: int = 0) -> tuple[Performance, ...]:
    """Every verse of a corpus song as a :class:`Performance`."""
    from music21 import corpus

    score = corpus.parse(path)
    part = score.parts[part_index]
    qpm, source = _tempo(score)
    spq = 60.0 / qpm
    beats, downbeats, meter = _grid(part, spq)
    compound = meter in COMPOUND_METERS
    beat_s = (1.5 if compound else 1.0) * spq
    k = score.analyze("key")
    key = f"{KEY_NAMES[k.tonic.pitchClass]} {k.mode}"
    chords = _chords(score, part_index, spq)
    name = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    out = []
    for verse in range(1, verse_count(part) + 1):
        notes = _sung_notes(part, verse, spq, beat_s, compound)
        if notes:
            out.append(Performance(name, verse, notes, beats, downbeats, meter, qpm, source, key, chords))
    return tuple(out)


def human_performances() -> list[Performance]:
    """All verses of all :data:`SONGS` (a song that cannot be read is logged and left out)."""
    out: list[Performance] = []
    for path, part in SONGS:
        try:
            out.extend(load_song(path, part))
        except Exception:  # one unreadable score must not stop the evaluation
            log.exception("could not read the human song %s", path)
    return out
