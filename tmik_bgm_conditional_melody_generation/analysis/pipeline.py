"""The analysis pipeline: audio in, :class:`Analysis` out."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soxr

from tmik_common.audio import Audio, load_audio
from tmik_common.tempo import tempo_override, time_signature_override

from .. import config as service_config
from . import beats as beats_mod
from .features import SAMPLE_RATE, Features, compute_features
from .harmony import analyse_harmony
from .meter import estimate_meter
from .result import Analysis
from .sections import find_sections

log = logging.getLogger(__name__)


# Called with (stage, fraction done 0..1). It may raise Cancelled to stop the analysis.
ProgressCallback = Callable[[str, float], None]

# Tempo an override asks for: automatic (None), beats per minute, or a level name.
TempoRequest = float | str | None


def check_tempo(tempo: object) -> TempoRequest:
    """Validate a tempo request: None, a BPM number within 30..300, or "half"/"double".

    Returns the request normalised (a float, a level name, or None); raises ``ValueError``
    naming the value and what is allowed (see :func:`tmik_common.tempo.tempo_override`).
    """
    return tempo_override(tempo, "tempo", text_numbers=False)


def check_time_signature(time_signature: object) -> str | None:
    """Validate a time-signature request: None (automatic) or one of :data:`TIME_SIGNATURES`."""
    return time_signature_override(time_signature, "time_signature")


def analyze(
    audio: Audio,
    sensitivity: float = 0.5,
    progress: ProgressCallback | None = None,
    *,
    tempo: TempoRequest = None,
    time_signature: str | None = None,
) -> Analysis:
    """Analyse decoded audio into an :class:`Analysis`.

    Parameters
    ----------
    audio : mono or multichannel audio at any rate (resampled to 22.05 kHz mono).
    sensitivity : Beat Detection Sensitivity, 0..1 (see :mod:`.beats`): how readily the
        beat tracker follows tempo changes and weak onsets rather than a steady grid.
    progress : called with (stage, fraction done) before each stage; it may raise
        :class:`Cancelled` to stop.
    tempo : None to choose the beat level automatically; a number of beats per minute
        (30..300) to track the beats at that tempo; "half" or "double" for half or twice
        the automatically chosen tempo. ``tempo_candidates`` always lists the automatic
        ranking.
    time_signature : None to estimate the meter, or one of :data:`TIME_SIGNATURES` to fix
        it (only where the bars start is then estimated). The beat of 6/8 and 12/8 is the
        dotted quarter.

    Raises ``ValueError`` for a sensitivity, tempo or time signature not allowed.
    """
    if not 0.0 <= float(sensitivity) <= 1.0:
        raise ValueError(f"sensitivity must be within 0..1, got {sensitivity}")
    tempo = check_tempo(tempo)
    time_signature = check_time_signature(time_signature)
    report = progress or (lambda stage, fraction: None)
    y = audio.samples if audio.samples.ndim == 1 else audio.samples.mean(axis=0)
    if audio.sample_rate != SAMPLE_RATE:
        y = soxr.resample(y, audio.sample_rate, SAMPLE_RATE, quality="HQ")
    y = np.ascontiguousarray(y, dtype=np.float32)
    duration = len(y) / SAMPLE_RATE

    report("features", 0.05)
    feats = compute_features(y, SAMPLE_RATE, tick=lambda f: report("features", 0.05 + 0.4 * f))
    report("beats", 0.45)
    act = beats_mod.beat_activation(feats, sensitivity)
    beat_times, candidates = track(feats, act, sensitivity, tempo)
    report("meter", 0.65)
    meter = estimate_meter(feats, beat_times, time_signature=time_signature)
    report("harmony", 0.75)
    key, chords = analyse_harmony(feats, beat_times, duration)
    report("sections", 0.9)
    sections = find_sections(feats, meter.downbeats, duration)
    bpm = 60.0 / float(np.median(np.diff(beat_times)))
    report("done", 1.0)
    return Analysis(
        duration=duration,
        tempo=bpm,
        time_signature=meter.time_signature,
        beats=[float(b) for b in beat_times],
        downbeats=[float(b) for b in meter.downbeats],
        key=key,
        chords=chords,
        sections=sections,
        tempo_candidates=[{"bpm": c.bpm, "score": c.score, "level": c.level} for c in candidates],
    )


# How many times the level may move by an octave from the periodicity's choice.
LEVEL_STEPS = 2


def track(
    feats: Features, act: np.ndarray, sensitivity: float, tempo: TempoRequest = None
) -> tuple[np.ndarray, list[beats_mod.TempoCandidate]]:
    """Beat times (seconds) at the level chosen automatically or by ``tempo``, and the
    automatic ranking of levels.

    The periodicity of the accents proposes a level, the beats are tracked there, and the
    drum pattern and the tempo prior may move the choice to its half or double
    (:func:`.beats.choose_level`), where the beats are tracked again (at most
    :data:`LEVEL_STEPS` times); beats locked onto a shuffle's off-beats are moved onto the
    drums (:func:`.beats.drum_phase`). A requested BPM is tracked within a few percent of
    itself; "half" and "double" are relative to the automatic level. ``act`` is the
    tracker's activation (:func:`.beats.beat_activation`).
    """
    fps = feats.onset_fps
    pulse = beats_mod.estimate_pulse(beats_mod.activation(feats.accent, fps, None), fps)
    beats = beats_mod.track_beats(act, fps, pulse.period, sensitivity)
    automatic = float(np.median(np.diff(beats))) if len(beats) > 2 else pulse.period
    candidates: list[beats_mod.TempoCandidate] = []
    # A level may be two octaves off (a bar-level pulse): look again after a move.
    for _ in range(LEVEL_STEPS):
        factor, found = beats_mod.choose_level(feats, beats, pulse.acf)
        candidates = found or candidates
        if factor == 1.0:
            break
        automatic /= factor
        beats = beats_mod.track_beats(act, fps, automatic, sensitivity)
        automatic = float(np.median(np.diff(beats))) if len(beats) > 2 else automatic
    period = automatic
    if tempo in ("half", "double"):
        period = automatic * (2.0 if tempo == "half" else 0.5)
        beats = beats_mod.track_beats(act, fps, period, sensitivity)
    elif tempo is not None:
        period = 60.0 / float(tempo)
        beats = beats_mod.track_beats(act, fps, period, sensitivity, spread=beats_mod.FIXED_TEMPO_SPREAD)
    if len(beats) < 2:
        # No pulse to follow (a drone, a pad): keep a steady grid at that tempo.
        return np.arange(0.0, feats.duration, period), candidates
    return beats_mod.drum_phase(feats, beats), candidates


def analyze_file(
    path: str | Path,
    sensitivity: float = 0.5,
    progress: ProgressCallback | None = None,
    *,
    tempo: TempoRequest = None,
    time_signature: str | None = None,
) -> Analysis:
    """Load a file with the service's length limits and analyse it (see :func:`analyze`).

    Raises AudioError on bad input and ValueError on a parameter not allowed (checked
    before the file is read).
    """
    tempo = check_tempo(tempo)
    time_signature = check_time_signature(time_signature)
    cfg = service_config.load()
    if progress is not None:
        progress("load", 0.0)
    audio = load_audio(
        path,
        sample_rate=SAMPLE_RATE,
        mono=True,
        min_seconds=cfg.min_audio_seconds,
        max_seconds=cfg.max_audio_seconds,
        tick=None if progress is None else (lambda fraction: progress("load", 0.05 * fraction)),
    )
    result = analyze(audio, sensitivity=sensitivity, progress=progress, tempo=tempo,
                     time_signature=time_signature)
    log.info(
        "analysed %s (%.1f s): %.1f BPM %s, %s, %d beats, %d chords, %d sections",
        Path(path).name,
        result.duration,
        result.tempo,
        result.time_signature,
        result.key,
        len(result.beats),
        len(result.chords),
        len(result.sections),
    )
    return result


def warm_up() -> float:
    """Pay one-off costs (numba compilation, FFT plans) now; return the seconds spent."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    y = (0.1 * rng.standard_normal(SAMPLE_RATE * 6)).astype(np.float32)
    analyze(Audio(y, SAMPLE_RATE, SAMPLE_RATE, 1, "synthetic"))
    return time.perf_counter() - t0
