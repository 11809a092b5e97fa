"""The vocal score: the notes to sing, in seconds, each with its syllable, grouped in phrases.

Plain data read from the melody service's ``melody.mid`` (one tempo map on the recording's
timeline, one monophonic lead track, a lyric event per note). Engines, exports and checks
all work from a :class:`VocalScore`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MELISMA = "-"  # the syllable of a note that continues the previous note's vowel
PHRASE_GAP = 0.1  # seconds of rest that end a phrase (the melody writes an 8th-note breath)


class ScoreError(ValueError):
    """melody.mid cannot be sung: missing, corrupt, empty, or not monophonic-ish."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SungNote:
    """One note: start and end in seconds, MIDI pitch, and its syllable ("-" = melisma, "" = vocalise)."""

    start: float
    end: float
    pitch: int
    syllable: str = ""


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
        return self.notes[-1].end if self.notes else 0.0

    def with_syllables(self, syllables: list[str]) -> VocalScore:
        """The same notes carrying ``syllables`` (one per note)."""
        if len(syllables) != len(self.notes):
            raise ValueError(f"{len(syllables)} syllables for {len(self.notes)} notes")
        notes = [SungNote(n.start, n.end, n.pitch, s) for n, s in zip(self.notes, syllables, strict=True)]
        return VocalScore(notes, self.phrases, self.tempo)


def phrases_of(notes: list[SungNote], gap: float = PHRASE_GAP) -> list[list[int]]:
    """Indices of notes grouped into phrases: a rest of at least ``gap`` seconds ends one."""
    phrases: list[list[int]] = []
    for i, n in enumerate(notes):
        if not phrases or n.start - notes[i - 1].end >= gap:
            phrases.append([])
        phrases[-1].append(i)
    return phrases


def read_melody(path: str | Path) -> VocalScore:
    """Read ``melody.mid``: the lead track's notes (highest wins where notes overlap) and lyrics."""
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
