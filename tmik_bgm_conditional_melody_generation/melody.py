"""Write a lead melody for an analysed background track: plain functions, no I/O but the MIDI writer.

:func:`compose` turns an :class:`..analysis.Analysis` into a :class:`Composition` (the
melody as a :class:`..getscore.Song` on the track's grid, with the timeline that places it
in seconds): timeline -> rhythm (:mod:`.rhythm`: the lyrics' syllables, or a vocalise's,
set to the meter and tempo as phrases) -> lead plan (range, key, harmony, repetition) ->
GETDiff sampling of the pitches on that rhythm -> notes with their syllables
(:class:`NoteLabel`: word, syllable, stress, phrase, melisma). :func:`write_midi` writes
``melody.mid`` on the audio's own timeline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from tmik_common.lyrics import MELISMA, Lyrics

from .analysis import Analysis
from .checkpoint import LoadedModel, resolve_checkpoint
from .constraints import LeadPlan, build_plan, singable_columns
from .getscore import Song, decode_notes, song_to_midi
from .rhythm import Rhythm, plan_rhythm
from .sampling import SamplerSettings, generate_lead
from .timeline import Timeline, timeline_from_analysis

log = logging.getLogger(__name__)

DEFAULT_RANGE = (57, 76)  # A3..E5: a comfortable range for most voices when no style is given
SAMPLING_STEPS = 40

ProgressCallback = Callable[[str, float], None]


@dataclass(frozen=True)
class NoteLabel:
    """What a note sings: its ``word`` and ``syllable`` (None in a vocalise), the syllable's
    lexical ``stress`` (1 primary, 2 secondary, 0 none), its ``phrase`` (index into the
    plan's phrases; None outside any) and whether it continues the previous note's syllable
    (``melisma``; it then repeats that syllable's word, text and stress)."""

    word: str | None = None
    syllable: str | None = None
    stress: int = 0
    phrase: int | None = None
    melisma: bool = False

    def to_dict(self) -> dict:
        return {"word": self.word, "syllable": self.syllable, "stress": self.stress, "phrase": self.phrase,
                "melisma": self.melisma}


LABEL_KEYS = ("word", "syllable", "stress", "phrase", "melisma")


@dataclass
class Composition:
    """A generated melody and where it sits in the recording; ``labels`` has one :class:`NoteLabel` per note."""

    song: Song
    timeline: Timeline
    plan: LeadPlan
    model: str
    seed: int
    randomness: float
    seconds: float
    info: dict = field(default_factory=dict)
    labels: list[NoteLabel] = field(default_factory=list)
    rhythm: Rhythm | None = None

    def note_times(self) -> list[tuple[float, float, int]]:
        """Notes as ``(start_s, end_s, pitch)`` on the recording's timeline."""
        return self.timeline.note_times(self.song.notes)


def parse_range(text: str) -> tuple[int, int]:
    """``"A3-E5"`` or ``"57-76"`` -> MIDI (low, high)."""
    import librosa

    try:
        lo, hi = (p.strip() for p in text.replace("..", "-").split("-", 1))
        conv = [int(v) if v.lstrip("-").isdigit() else round(librosa.note_to_midi(v)) for v in (lo, hi)]
    except (ValueError, librosa.ParameterError):
        raise ValueError(f"vocal range {text!r}: write it as LOW-HIGH, e.g. A3-E5 or 57-76") from None
    return conv[0], conv[1]


_MODEL_CACHE: dict[str, LoadedModel] = {}


def load_model(checkpoint: str | Path | None = None) -> LoadedModel:
    """The denoiser to use (cached per checkpoint path); see :func:`..checkpoint.resolve_checkpoint`."""
    key = str(checkpoint or "")
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = resolve_checkpoint(checkpoint)
        log.info("loaded melody model %s from %s", _MODEL_CACHE[key].name, _MODEL_CACHE[key].path)
    return _MODEL_CACHE[key]


def compose(analysis: Analysis, *, randomness: float = 0.5, seed: int = 0, lyrics: Lyrics | None = None,
            vocal_range: tuple[int, int] = DEFAULT_RANGE, model: LoadedModel | None = None,
            steps: int = SAMPLING_STEPS, previous: Sequence[tuple] | None = None,
            regenerate: tuple[float, float] | None = None, progress: ProgressCallback | None = None) -> Composition:
    """Write a lead melody for an analysed background track.

    Parameters
    ----------
    analysis : the background's analysis (beats, meter, key, chords, sections).
    randomness : Creative Randomness, 0 (safe, most likely notes) .. 1 (adventurous).
    seed : the same seed, inputs and model give the same melody.
    lyrics : when given, every lyric line is a phrase with one note per syllable (more on
        a melisma), set to the meter by :func:`..rhythm.plan_rhythm`; without, a vocalise.
        Raises :class:`..tmik_common.lyrics.LyricsError` ``"lyrics_do_not_fit"`` when the
        track cannot hold them at a natural rate.
    vocal_range : lowest and highest MIDI pitch the voice may sing.
    model : a loaded checkpoint (default: :func:`load_model`).
    steps : sampling steps per window.
    previous, regenerate : infilling: keep the notes of ``previous`` (``(start_s, end_s,
        pitch)``, optionally with a fourth item, the note's melody.json dict whose
        :data:`LABEL_KEYS` it keeps) outside the time span ``regenerate`` (seconds; with
        lyrics widened to the whole phrases it touches, old and new, so no line is cut or
        sung twice) and write only that span anew (say, one section).
    progress : ``progress(stage, fraction)``; may raise to cancel.
    """
    t0 = time.time()
    if not 0.0 <= randomness <= 1.0:
        raise ValueError(f"randomness {randomness} must be between 0 and 1")
    model = model or load_model()
    report = progress or (lambda stage, frac: None)
    report("plan", 0.0)
    timeline = timeline_from_analysis(analysis)
    rng = np.random.default_rng(seed)
    rhythm = plan_rhythm(timeline, lyrics, singable_columns(timeline), seed=seed, randomness=randomness)
    plan = build_plan(timeline, low=vocal_range[0], high=vocal_range[1], randomness=randomness, rng=rng,
                      rhythm=rhythm)
    settings = SamplerSettings.from_randomness(randomness, steps)
    grid = timeline.grid()
    keep = None
    if regenerate is not None:
        # With lyrics a line is never cut by the edit: the span grows to the phrases it touches.
        span = _whole_phrases(timeline, plan, regenerate, previous or []) if lyrics is not None else regenerate
        grid, keep = _keep_outside(timeline, previous or [], span)
    report("generate", 0.0)
    out = generate_lead(model.denoiser, grid, plan, settings, seed + 1, window=model.max_window, keep=keep,
                        progress=lambda f: report("generate", f))
    song = timeline.song()
    song.notes = decode_notes(out)
    labels = _labels(song, timeline, rhythm, keep, previous or [])
    if lyrics is not None:
        song.lyrics = [MELISMA if lab.melisma else (lab.syllable or MELISMA) for lab in labels]
    report("generate", 1.0)
    info = {"notes": len(song.notes), "phrases": len(plan.phrases), "repeated_columns": len(plan.copy_from),
            "window": model.max_window, "steps": steps, "lyrics_repeats": rhythm.info.get("lyrics_repeats", 0.0)}
    return Composition(song, timeline, plan, model.name, seed, randomness, time.time() - t0, info, labels, rhythm)


def _whole_phrases(timeline: Timeline, plan: LeadPlan, span: tuple[float, float],
                   previous: Sequence[tuple] = ()) -> tuple[float, float]:
    """``span`` (seconds) widened to the phrases it touches, the new plan's and the previous
    melody's (its notes' ``phrase`` labels), so no line is cut or sung twice by the edit."""
    start, end = span
    if not end > start:
        raise ValueError(f"the span to regenerate must end after it starts, got {start}..{end} s")
    t = timeline.column_times
    extents = [(float(t[c0]), float(t[min(c1, len(t) - 1)])) for c0, c1 in plan.phrases]
    old: dict[object, list[float]] = {}
    for item in previous:
        label = item[3].get("phrase") if len(item) > 3 and isinstance(item[3], dict) else None
        if label is not None:
            ext = old.setdefault(label, [float(item[0]), float(item[1])])
            ext[0], ext[1] = min(ext[0], float(item[0])), max(ext[1], float(item[1]))
    extents += [(a, b) for a, b in old.values()]
    changed = True
    while changed:
        changed = False
        for a, b in extents:
            if a < end and b > start and (a < start or b > end):
                start, end = min(start, a), max(end, b)
                changed = True
    return start, end


def _keep_outside(timeline: Timeline, previous: Sequence[tuple],
                  span: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The grid holding ``previous`` notes, and which columns to keep (all outside ``span``)."""
    start, end = span
    if not end > start:
        raise ValueError(f"the span to regenerate must end after it starts, got {start}..{end} s")
    times = timeline.column_times
    song = timeline.song()
    for s0, s1, pitch, *_ in previous:
        c = int(timeline.col_of_time(s0))
        length = max(1, int(timeline.col_of_time(s1)) - c)
        song.notes.append((c, length, int(pitch)))
    song.notes.sort()
    mids = (times[:-1] + times[1:]) / 2
    keep = (mids < start) | (mids >= end)
    return timeline.grid(song), keep


def _labels(song: Song, timeline: Timeline, rhythm: Rhythm, keep: np.ndarray | None,
            previous: Sequence[tuple]) -> list[NoteLabel]:
    """One label per note: from the rhythm where it was written, from ``previous`` where it was kept."""
    by_col: dict[int, NoteLabel] = {}
    for p, ph in enumerate(rhythm.phrases):
        for note in ph.notes:
            syl = ph.syllables[note.syllable]
            by_col[note.col] = NoteLabel(syl.word, syl.text, int(syl.stress), p, note.melisma)
    kept: dict[int, NoteLabel] = {}
    for item in previous:
        if len(item) > 3 and isinstance(item[3], dict):
            d = item[3]
            kept[int(timeline.col_of_time(item[0]))] = NoteLabel(
                d.get("word"), d.get("syllable"), int(d.get("stress") or 0), d.get("phrase"), bool(d.get("melisma")))
    out = []
    last = -1
    for c, _, _ in song.notes:
        if keep is not None and keep[c]:
            label = kept.get(c) or by_col.get(c) or NoteLabel()
        else:
            label = by_col.get(c) or NoteLabel()
        if label.phrase is not None:  # phrases never go back in time (kept and new notes mixed by an edit)
            if label.phrase < last:
                label = replace(label, phrase=last)
            last = label.phrase
        out.append(label)
    return out


def write_midi(composition: Composition, path: str | Path) -> None:
    """``melody.mid`` on the recording's own timeline (tempo map from the beats), with lyrics."""
    song_to_midi(composition.song, path, column_times=composition.timeline.column_times, chords_track=False)
