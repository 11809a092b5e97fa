"""The vocal score: the notes to sing, in seconds, each with its syllable, grouped in phrases.

Plain data read from the melody service's ``melody.json`` (:func:`read_melody_json`, the
contract between the two services: per note its times, pitch, word, syllable, lexical stress,
phrase and whether it continues a melisma), or, for someone who has only a MIDI file, from a
``melody.mid`` (:func:`read_melody`: one tempo map on the recording's timeline, one monophonic
lead track, a lyric event per note). :func:`load_score` picks the reader by the file name.
Engines, exports and checks all work from a :class:`VocalScore`.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

MELISMA = "-"  # the syllable of a note that continues the previous note's vowel
PHRASE_GAP = 0.1  # seconds of rest that end a phrase where the file does not say (the melody writes a breath)
OVERLAP_TOLERANCE = 1e-3  # seconds two neighbouring notes may overlap (rounding) before the file is refused
MAX_JSON_BYTES = 20_000_000  # a 3-minute song's melody.json is about 100 kB
MIDI_SUFFIXES = (".mid", ".midi", ".kar")


class ScoreError(ValueError):
    """The melody cannot be sung: missing, corrupt, empty, malformed, or with overlapping notes.

    ``code`` is stable: ``melody_not_found``, ``corrupt_midi``, ``empty_melody`` (both formats);
    for melody.json ``melody_not_json``, ``melody_too_large``, ``melody_missing_notes``,
    ``melody_bad_field`` and ``melody_overlapping_notes``.
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SungNote:
    """One note: start and end in seconds, MIDI pitch, and its syllable ("-" = melisma, "" = vocalise).

    From melody.json also the ``word`` the syllable belongs to, its lexical ``stress`` (1 primary,
    2 secondary, 0 none; None where unknown) and ``word_start`` (True on a word's first syllable,
    False on the others, None where the file does not say, as in MIDI lyrics).
    """

    start: float
    end: float
    pitch: int
    syllable: str = ""
    word: str = ""
    stress: int | None = None
    word_start: bool | None = None


@dataclass
class TempoInfo:
    """What the project exports need to rebuild the musical grid: ticks, tempo changes, meter."""

    ticks_per_beat: int = 480
    tempos: list[tuple[int, float]] = field(default_factory=lambda: [(0, 120.0)])  # (tick, bpm)
    time_signature: tuple[int, int] = (4, 4)
    note_ticks: list[tuple[int, int]] = field(default_factory=list)  # (start_tick, end_tick) per note


@dataclass
class VocalScore:
    """Notes in time order, phrases as lists of note indices, and the tempo map they came with."""

    notes: list[SungNote]
    phrases: list[list[int]]
    tempo: TempoInfo = field(default_factory=TempoInfo)

    @property
    def duration(self) -> float:
        """Seconds from the recording's start to the last note's end."""
        return self.notes[-1].end if self.notes else 0.0

    @property
    def has_words(self) -> bool:
        """True when the notes say where words start (melody.json), so no word boundary is guessed."""
        return any(n.word_start is not None for n in self.notes)

    def with_syllables(self, syllables: list[str]) -> VocalScore:
        """The same notes carrying ``syllables`` (one per note); words and stress are dropped with the old text."""
        if len(syllables) != len(self.notes):
            raise ValueError(f"{len(syllables)} syllables for {len(self.notes)} notes")
        notes = [SungNote(n.start, n.end, n.pitch, s) for n, s in zip(self.notes, syllables, strict=True)]
        return VocalScore(notes, self.phrases, self.tempo)

    def transposed(self, semitones: int) -> VocalScore:
        """The same score ``semitones`` higher (lower when negative); words, stress and phrases kept."""
        if not semitones:
            return self
        return VocalScore([replace(n, pitch=n.pitch + semitones) for n in self.notes], self.phrases, self.tempo)

    def lines(self) -> list[str] | None:
        """One text per phrase, its words as the melody service wrote them; None without words."""
        if not self.has_words:
            return None
        return [" ".join(self.notes[i].word for i in phrase if self.notes[i].word_start) for phrase in self.phrases]


def phrases_of(notes: list[SungNote], gap: float = PHRASE_GAP) -> list[list[int]]:
    """Indices of notes grouped into phrases: a rest of at least ``gap`` seconds ends one."""
    phrases: list[list[int]] = []
    for i, n in enumerate(notes):
        if not phrases or n.start - notes[i - 1].end >= gap:
            phrases.append([])
        phrases[-1].append(i)
    return phrases


def load_score(path: str | Path) -> VocalScore:
    """The score in ``path``: a MIDI file (``.mid``/``.midi``/``.kar``) by :func:`read_melody`, else melody.json."""
    if Path(path).suffix.lower() in MIDI_SUFFIXES:
        return read_melody(path)
    return read_melody_json(path)


# ---------------------------------------------------------------------------- melody.json


def _bad(index: int | None, name: str, why: str) -> ScoreError:
    where = f"note {index}" if index is not None else "the file"
    return ScoreError("melody_bad_field", f"melody.json: {where}: {name!r} {why}")


def _number(raw: dict, name: str, index: int | None) -> float:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(index, name, f"must be a number (seconds), got {json.dumps(value)[:40]}")
    return float(value)


def _optional_text(raw: dict, name: str, index: int) -> str:
    value = raw.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad(index, name, f"must be text or null, got {json.dumps(value)[:40]}")
    return value.strip()


def _spelling(text: str) -> str:
    """Letters and digits only, case-folded: how syllables are compared with their word."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).casefold() if ch.isalnum())


def _meter(value: Any) -> tuple[int, int]:
    if value is None:
        return (4, 4)
    m = re.fullmatch(r"\s*(\d{1,2})\s*/\s*(\d{1,2})\s*", value) if isinstance(value, str) else None
    if not m or int(m[1]) < 1 or int(m[2]) not in (1, 2, 4, 8, 16, 32):
        raise _bad(None, "time_signature", f"must be like \"4/4\" or \"6/8\", got {json.dumps(value)[:40]}")
    return (int(m[1]), int(m[2]))


def _tempo_info(record: dict) -> TempoInfo:
    """The grid for the exports: ``tempo_map`` ([[tick, bpm], ...] at 480 per quarter) or the constant ``tempo``."""
    meter = _meter(record.get("time_signature"))
    tempo_map = record.get("tempo_map")
    if tempo_map is not None:
        ok = isinstance(tempo_map, list) and tempo_map and all(
            isinstance(e, list) and len(e) == 2 and isinstance(e[0], int) and not isinstance(e[0], bool)
            and e[0] >= 0 and isinstance(e[1], int | float) and not isinstance(e[1], bool) and 1.0 <= e[1] <= 1000.0
            for e in tempo_map)
        if not ok:
            raise _bad(None, "tempo_map", "must be a list of [tick, bpm] pairs (480 ticks per quarter, bpm 1..1000)")
        return TempoInfo(480, sorted((int(t), float(b)) for t, b in tempo_map), meter)
    tempo = record.get("tempo")
    if tempo is None:
        return TempoInfo(480, [(0, 120.0)], meter)
    if isinstance(tempo, bool) or not isinstance(tempo, int | float) or not 1.0 <= tempo <= 1000.0:
        raise _bad(None, "tempo", f"must be beats per minute (1..1000), got {json.dumps(tempo)[:40]}")
    return TempoInfo(480, [(0, float(tempo))], meter)


def read_melody_json(path: str | Path) -> VocalScore:
    """Read and check ``melody.json`` (format in the README's services section and DESIGN.md).

    Each note needs ``start`` and ``end`` (seconds on the recording's timeline, ``end > start``,
    in time order, not overlapping) and ``pitch`` (MIDI 0..127); it may carry ``syllable`` (text;
    null or "" is sung as a vocalise), ``word``, ``stress`` (0, 1 or 2), ``phrase`` (an index that
    never decreases; null: none) and ``melisma`` (true: the note continues the previous note's
    vowel, whatever its syllable text). Files that predate the fields (notes with start, end, pitch,
    syllable) load: ``"-"`` marks a melisma and a rest of :data:`PHRASE_GAP` ends a phrase where no
    phrase index is given. Raises ScoreError.
    """
    path = Path(path)
    if not path.is_file():
        raise ScoreError("melody_not_found", f"the melody file {path} does not exist")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ScoreError("melody_too_large", f"{path.name} is larger than {MAX_JSON_BYTES // 1_000_000} MB; "
                         "a melody.json from the melody service is far smaller")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ScoreError("melody_not_json", f"{path.name} is not a JSON file ({exc}); give the melody.json the "
                         "melody service wrote, or a melody.mid") from None
    if not isinstance(record, dict) or "notes" not in record:
        raise ScoreError("melody_missing_notes", f"{path.name} has no \"notes\" list: it is not a melody.json "
                         "written by the melody service")
    raw_notes = record["notes"]
    if not isinstance(raw_notes, list):
        raise ScoreError("melody_missing_notes", f"{path.name}: \"notes\" must be a list of notes")
    if not raw_notes:
        raise ScoreError("empty_melody", f"{path.name} has no notes to sing")
    notes, phrase_ids = _notes_of(raw_notes)
    phrases = _phrases(notes, phrase_ids)
    notes = _with_word_starts(notes, phrases)
    return VocalScore(notes, phrases, _tempo_info(record))


def _phrases(notes: list[SungNote], phrase_ids: list[int | None]) -> list[list[int]]:
    """Notes grouped by their ``phrase`` index; notes without one (null) by rests of :data:`PHRASE_GAP`."""
    phrases: list[list[int]] = []
    last: int | None = None
    for i, p in enumerate(phrase_ids):
        if p is not None and last is not None and p < last:
            raise _bad(i, "phrase", f"goes back from {last} to {p}: phrases follow each other in time")
        if p is None:
            new = not i or phrase_ids[i - 1] is not None or notes[i].start - notes[i - 1].end >= PHRASE_GAP
        else:
            new = not i or p != phrase_ids[i - 1]
            last = p
        if new:
            phrases.append([])
        phrases[-1].append(i)
    return phrases


def _notes_of(raw_notes: list) -> tuple[list[SungNote], list[int | None]]:
    """The notes, checked one by one, and each note's phrase index (None where not given)."""
    notes: list[SungNote] = []
    phrase_ids: list[int | None] = []
    for i, raw in enumerate(raw_notes):
        if not isinstance(raw, dict):
            raise _bad(i, "note", "must be an object with start, end and pitch")
        for name in ("start", "end", "pitch"):
            if name not in raw:
                raise _bad(i, name, "is missing")
        start, end = _number(raw, "start", i), _number(raw, "end", i)
        if start < 0 or end <= start:
            raise _bad(i, "end", f"must come after start and start must not be negative (got {start}-{end} s)")
        pitch = raw["pitch"]
        if isinstance(pitch, bool) or not isinstance(pitch, int | float) or pitch != int(pitch) \
                or not 0 <= pitch <= 127:
            raise _bad(i, "pitch", f"must be a MIDI note number 0..127, got {json.dumps(pitch)[:40]}")
        syllable, word = _optional_text(raw, "syllable", i), _optional_text(raw, "word", i)
        stress = raw.get("stress")
        if stress is not None and (isinstance(stress, bool) or stress not in (0, 1, 2)):
            raise _bad(i, "stress", f"must be 0, 1 or 2 (or null), got {json.dumps(stress)[:40]}")
        melisma = raw.get("melisma", False)
        if not isinstance(melisma, bool):
            raise _bad(i, "melisma", f"must be true or false, got {json.dumps(melisma)[:40]}")
        phrase = raw.get("phrase")
        if phrase is not None and (isinstance(phrase, bool) or not isinstance(phrase, int) or phrase < 0):
            raise _bad(i, "phrase", f"must be a phrase index 0, 1, 2, ..., got {json.dumps(phrase)[:40]}")
        if notes and start < notes[-1].end - OVERLAP_TOLERANCE:
            prev = notes[-1]
            raise ScoreError("melody_overlapping_notes", f"melody.json: note {i} ({start:.3f}-{end:.3f} s) starts "
                             f"before note {i - 1} ({prev.start:.3f}-{prev.end:.3f} s) ends; a sung melody has one "
                             "note at a time, in time order")
        if notes and start < notes[-1].end:
            notes[-1] = replace(notes[-1], end=start)  # rounding: a millisecond's overlap is cut
        if melisma or syllable == MELISMA:
            syllable = MELISMA
        notes.append(SungNote(start, end, int(pitch), syllable, word, None if stress is None else int(stress)))
        phrase_ids.append(phrase)
    return notes, phrase_ids


def _with_word_starts(notes: list[SungNote], phrases: list[list[int]]) -> list[SungNote]:
    """Mark each sung syllable that begins a word, from the notes' words.

    A syllable begins a word at a phrase's start, where its word differs from the previous
    syllable's, or where the syllables since the last word start already spell the word (so
    "la la" is two words). A melisma note or a vocalise is no syllable (None), nor is a note without a word.
    """
    out = list(notes)
    for phrase in phrases:
        word, spelled = "", ""
        for i in phrase:
            n = notes[i]
            if n.syllable in (MELISMA, "") or not n.word:
                if n.syllable not in (MELISMA,):
                    word, spelled = "", ""  # a vocalise or an unknown word ends the word before it
                continue
            target = _spelling(n.word)
            starts = not word or target != word or (spelled and spelled == word) or \
                not word.startswith(spelled + _spelling(n.syllable))
            if starts:
                word, spelled = target, ""
            spelled += _spelling(n.syllable)
            out[i] = replace(n, word_start=bool(starts))
    return out


# ---------------------------------------------------------------------------- melody.mid (fallback)


def read_melody(path: str | Path) -> VocalScore:
    """Read ``melody.mid``: the lead track's notes (highest wins where notes overlap) and lyrics.

    For people with only a MIDI file; the services sing from melody.json (:func:`read_melody_json`).
    Phrases are the rests of at least :data:`PHRASE_GAP`; word boundaries are not known.
    """
    import mido
    import pretty_midi

    path = Path(path)
    if not path.is_file():
        raise ScoreError("melody_not_found", f"the melody file {path} does not exist")
    try:
        pm = pretty_midi.PrettyMIDI(str(path))
        raw = mido.MidiFile(str(path), charset="utf-8")  # lyrics are written as UTF-8
    except Exception as exc:  # noqa: BLE001 - any parse failure means an unusable file
        raise ScoreError("corrupt_midi", f"{path.name} is not a readable MIDI file ({type(exc).__name__}); "
                         "use the melody.mid the melody service wrote") from None
    pitched = [i for i in pm.instruments if not i.is_drum and i.notes]
    if not pitched:
        raise ScoreError("empty_melody", f"{path.name} has no notes to sing")
    lead = next((i for i in pitched if i.name.strip().lower() == "lead"), pitched[0])
    ordered = sorted(lead.notes, key=lambda n: (n.start, -n.pitch))
    notes: list[SungNote] = []
    for n in ordered:
        if notes and n.start < notes[-1].start + 1e-4:
            continue  # a chord: the top note is the melody
        if notes and n.start < notes[-1].end:
            notes[-1] = SungNote(notes[-1].start, n.start, notes[-1].pitch)  # one voice: cut the overlap
        notes.append(SungNote(float(n.start), float(n.end), int(n.pitch)))
    lyrics = {round(float(pm.tick_to_time(ly.time)), 3): ly.text for ly in _lyrics(raw)}
    notes = [SungNote(n.start, n.end, n.pitch, lyrics.get(round(n.start, 3), "")) for n in notes]
    tempos = []
    for tick, bpm in _tempos(raw):
        if not tempos or abs(tempos[-1][1] - bpm) > 1e-6:
            tempos.append((tick, bpm))
    ts = pm.time_signature_changes[0] if pm.time_signature_changes else None
    info = TempoInfo(pm.resolution, tempos or [(0, 120.0)], (ts.numerator, ts.denominator) if ts else (4, 4),
                     [(int(pm.time_to_tick(n.start)), int(pm.time_to_tick(n.end))) for n in notes])
    return VocalScore(notes, phrases_of(notes), info)


def _lyrics(midi) -> list:
    out = []
    for track in midi.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "lyrics":
                out.append(type("Lyric", (), {"time": tick, "text": msg.text})())
    return out


def _tempos(midi) -> list[tuple[int, float]]:
    import mido

    out = []
    for track in midi.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "set_tempo":
                out.append((tick, float(mido.tempo2bpm(msg.tempo))))
    return sorted(out)
