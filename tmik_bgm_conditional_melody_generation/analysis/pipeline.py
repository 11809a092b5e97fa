"""The analysis pipeline: audio in, :class:`Analysis` out."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import librosa
import numpy as np

from .. import config as service_config
from ..audio import Audio, load_audio
from .result import Analysis

log = logging.getLogger(__name__)

SAMPLE_RATE = 22050
HOP = 256

# Called with (stage, fraction done 0..1). It may raise Cancelled to stop the analysis.
ProgressCallback = Callable[[str, float], None]


class Cancelled(Exception):
    """Raised from a progress callback to stop work at the next checkpoint."""


def analyze(audio: Audio, sensitivity: float = 0.5, progress: ProgressCallback | None = None) -> Analysis:
    """Analyse mono audio (any rate; resampled to 22.05 kHz) into an :class:`Analysis`."""
    if not 0.0 <= sensitivity <= 1.0:
        raise ValueError(f"sensitivity must be within 0..1, got {sensitivity}")
    report = progress or (lambda stage, frac: None)
    y = audio.samples if audio.samples.ndim == 1 else audio.samples.mean(axis=0)
    if audio.sample_rate != SAMPLE_RATE:
        y = librosa.resample(y, orig_sr=audio.sample_rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    duration = len(y) / SAMPLE_RATE
    report("beats", 0.0)
    tempo, beats = librosa.beat.beat_track(y=y, sr=SAMPLE_RATE, hop_length=HOP, units="time")
    report("done", 1.0)
    beats = [float(b) for b in beats]
    return Analysis(
        duration=duration, tempo=float(np.atleast_1d(tempo)[0]), time_signature="4/4",
        beats=beats, downbeats=beats[::4], key="C major", chords=[(0.0, duration, "N")],
        sections=[(0.0, duration, "A")],
    )


def analyze_file(path: str | Path, sensitivity: float = 0.5, progress: ProgressCallback | None = None) -> Analysis:
    """Load a file with the service's length limits and analyse it (raises AudioError on bad input)."""
    cfg = service_config.load()
    audio = load_audio(path, sample_rate=SAMPLE_RATE, mono=True, min_seconds=cfg.min_audio_seconds,
                       max_seconds=cfg.max_audio_seconds)
    return analyze(audio, sensitivity=sensitivity, progress=progress)


def warm_up() -> float:
    """Pay one-off costs (numba compilation, FFT plans) now; return the seconds spent."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    y = (0.1 * rng.standard_normal(SAMPLE_RATE * 6)).astype(np.float32)
    analyze(Audio(y, SAMPLE_RATE, SAMPLE_RATE, 1, "synthetic"))
    return time.perf_counter() - t0
