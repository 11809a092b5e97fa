"""Write a lead melody for an analysed background track: plain functions, no I/O but the MIDI writer.

:func:`compose` turns an :class:`..analysis.Analysis` into a :class:`Composition` (the
melody as a :class:`..getscore.Song` on the track's grid, with the timeline that places it
in seconds): timeline -> lead plan (range, key, harmony, phrases, lyrics, repetition) ->
GETDiff sampling -> notes with syllables. :func:`write_midi` writes ``melody.mid`` on the
audio's own timeline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tmik_common.lyrics import MELISMA, Lyrics

from .analysis import Analysis
from .checkpoint import LoadedModel, resolve_checkpoint
from .constraints import LeadPlan, build_plan
from .getscore import Song, decode_notes, song_to_midi
from .sampling import SamplerSettings, generate_lead
from .timeline import Timeline, timeline_from_analysis

log = logging.getLogger(__name__)

DEFAULT_RANGE = (57, 76)  # A3..E5: a comfortable range for most voices when no style is given
SAMPLING_STEPS = 40

ProgressCallback = Callable[[str, float], None]


@dataclass
class Composition:
    """A generated melody and where it sits in the recording."""

    song: Song
    timeline: Timeline
    plan: LeadPlan
    model: str
    seed: int
    randomness: float
    seconds: float
    info: dict = field(default_factory=dict)

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
            steps: int = SAMPLING_STEPS, previous: Sequence[tuple[float, float, int]] | None = None,
            regenerate: tuple[float, float] | None = None, progress: ProgressCallback | None = None) -> Composition:
    """Write a lead melody for an analysed background track.

    Parameters
    ----------
    analysis : the background's analysis (beats, meter, key, chords, sections).
    randomness : Creative Randomness, 0 (safe, most likely notes) .. 1 (adventurous).
    seed : the same seed, inputs and model give the same melody.
    lyrics : when given, every phrase gets one note per syllable of its line, and the
        notes carry the syllables.
    vocal_range : lowest and highest MIDI pitch the voice may sing.
    model : a loaded checkpoint (default: :func:`load_model`).
    steps : sampling steps per window.
    previous, regenerate : infilling: keep the notes of ``previous`` (``(start_s, end_s,
        pitch)``, e.g. from an earlier melody.json of the same track) outside the time span
        ``regenerate`` (seconds) and write only that span anew (say, one section).
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
    lines = list(lyrics.syllables_per_line) if lyrics is not None else None
    plan = build_plan(timeline, low=vocal_range[0], high=vocal_range[1], lyric_lines=lines,
                      randomness=randomness, rng=rng)
    settings = SamplerSettings.from_randomness(randomness, steps)
    grid = timeline.grid()
    keep = None
    if regenerate is not None:
        grid, keep = _keep_outside(timeline, previous or [], regenerate)
    report("generate", 0.0)
    out = generate_lead(model.denoiser, grid, plan, settings, seed + 1, window=model.max_window, keep=keep,
                        progress=lambda f: report("generate", f))
    song = timeline.song()
    song.notes = decode_notes(out)
    if lyrics is not None:
        song.lyrics = _syllables_for(song, plan, lyrics)
    report("generate", 1.0)
    info = {"notes": len(song.notes), "phrases": len(plan.phrases), "repeated_columns": len(plan.copy_from),
            "window": model.max_window, "steps": steps}
    return Composition(song, timeline, plan, model.name, seed, randomness, time.time() - t0, info)


def _keep_outside(timeline: Timeline, previous: Sequence[tuple[float, float, int]],
                  span: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The grid holding ``previous`` notes, and which columns to keep (all outside ``span``)."""
    start, end = span
    if not end > start:
        raise ValueError(f"the span to regenerate must end after it starts, got {start}..{end} s")
    times = timeline.column_times
    song = timeline.song()
    for s0, s1, pitch in previous:
        c = int(timeline.col_of_time(s0))
        length = max(1, int(timeline.col_of_time(s1)) - c)
        song.notes.append((c, length, int(pitch)))
    song.notes.sort()
    mids = (times[:-1] + times[1:]) / 2
    keep = (mids < start) | (mids >= end)
    return timeline.grid(song), keep


def _syllables_for(song: Song, plan: LeadPlan, lyrics: Lyrics) -> list[str]:
    """One syllable per note, in the order the plan gave lyric lines to phrases.

    A line spread over several phrases continues where the previous phrase stopped; a
    note beyond the line's syllables (only where a line did not fit) continues the last
    syllable (``-``).
    """
    by_phrase: dict[int, list[int]] = {}
    for i, (c, _, _) in enumerate(song.notes):
        by_phrase.setdefault(int(plan.phrase[c]), []).append(i)
    out = [MELISMA] * len(song.notes)
    sung_of_line: dict[int, int] = {}
    for p, idx in sorted(by_phrase.items()):
        line_no = plan.lines_of_phrase.get(p)
        if line_no is None:
            continue
        sylls = [s.text for s in lyrics.lines[line_no].syllables]
        start = sung_of_line.get(line_no, 0) if plan.lines_of_phrase.get(p - 1) == line_no else 0
        for k, i in enumerate(idx):
            if start + k < len(sylls):
                out[i] = sylls[start + k]
        sung_of_line[line_no] = start + len(idx)
    return out


def write_midi(composition: Composition, path: str | Path) -> None:
    """``melody.mid`` on the recording's own timeline (tempo map from the beats), with lyrics."""
    song_to_midi(composition.song, path, column_times=composition.timeline.column_times, chords_track=False)
