"""The analysis pipeline: audio in, :class:`Analysis` out."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soxr

from tmik_common.audio import Audio, load_audio

from .. import config as service_config
from . import beats as beats_mod
from .features import SAMPLE_RATE, compute_features
from .harmony import analyse_harmony
from .meter import estimate_meter
from .result import Analysis
from .sections import find_sections

log = logging.getLogger(__name__)


# Called with (stage, fraction done 0..1). It may raise Cancelled to stop the analysis.
ProgressCallback = Callable[[str, float], None]


def analyze(audio: Audio, sensitivity: float = 0.5, progress: ProgressCallback | None = None) -> Analysis:
    """Analyse decoded audio into an :class:`Analysis`.

    Parameters
    ----------
    audio : mono or multichannel audio at any rate (resampled to 22.05 kHz mono).
    sensitivity : Beat Detection Sensitivity, 0..1 (see :mod:`.beats`): how readily the
        beat tracker follows tempo changes and weak onsets rather than a steady grid.
    progress : called with (stage, fraction done) before each stage; it may raise
        :class:`Cancelled` to stop.
    """
    if not 0.0 <= float(sensitivity) <= 1.0:
        raise ValueError(f"sensitivity must be within 0..1, got {sensitivity}")
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
    pulse = beats_mod.estimate_pulse(beats_mod.activation(feats.accent, feats.onset_fps, None), feats.onset_fps)
    beat_times = beats_mod.track_beats(act, feats.onset_fps, pulse.period, sensitivity)
    if len(beat_times) < 2:
        # No pulse to follow (a drone, a pad): keep a steady grid at the estimated tempo.
        beat_times = np.arange(0.0, duration, pulse.period)
    report("meter", 0.65)
    meter = estimate_meter(feats, beat_times)
    report("harmony", 0.75)
    key, chords = analyse_harmony(feats, beat_times, duration)
    report("sections", 0.9)
    sections = find_sections(feats, meter.downbeats, duration)
    tempo = 60.0 / float(np.median(np.diff(beat_times)))
    report("done", 1.0)
    return Analysis(
        duration=duration,
        tempo=tempo,
        time_signature=meter.time_signature,
        beats=[float(b) for b in beat_times],
        downbeats=[float(b) for b in meter.downbeats],
        key=key,
        chords=chords,
        sections=sections,
    )


def analyze_file(path: str | Path, sensitivity: float = 0.5, progress: ProgressCallback | None = None) -> Analysis:
    """Load a file with the service's length limits and analyse it (raises AudioError on bad input)."""
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
    result = analyze(audio, sensitivity=sensitivity, progress=progress)
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
