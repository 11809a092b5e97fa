"""Meter and downbeats from beat-level accent and harmonic-change patterns.

Bars begin where the harmony and the bass change and where the low end (kick, bass
notes) is accented. Each beat gets a downbeat score from those cues; for each candidate
number of beats per bar a Viterbi pass over the bar position finds the best downbeats,
allowing the rare phase slip (a dropped beat, a bar of another length). The bar length
whose downbeats stand out most from the other beats wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .features import BASS_MAX_MIDI, Features, chroma_from_pitch, sync

# Additive preference per bar length: 4 beats is the most common in the music we serve.
BAR_PRIOR = {2: 0.0, 3: 0.05, 4: 0.12}
COMPOUND_BAR_PRIOR = {2: 0.12, 3: -0.1, 4: 0.0}
PHASE_SLIP_COST = 6.0
CUE_WEIGHTS = {"harmony": 1.0, "bass": 1.0, "low_onset": 0.6, "accent": 0.3}


@dataclass
class MeterEstimate:
    time_signature: str
    beats_per_bar: int
    downbeats: np.ndarray
    contrast: dict


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 1e-9 else np.zeros_like(x)


def _peak_near(env: np.ndarray, fps: float, times: np.ndarray, radius_s: float = 0.05) -> np.ndarray:
    r = max(1, round(radius_s * fps))
    idx = np.clip(np.round(times * fps).astype(int), 0, len(env) - 1)
    return np.array([env[max(0, i - r) : i + r + 1].max() for i in idx])


def _change(chroma: np.ndarray) -> np.ndarray:
    """Cosine distance of each beat's chroma from the previous beat's (first beat: 0)."""
    norm = chroma / (np.linalg.norm(chroma, axis=0, keepdims=True) + 1e-9)
    sim = (norm[:, 1:] * norm[:, :-1]).sum(axis=0)
    return np.concatenate([[0.0], 1.0 - sim])


def downbeat_cues(features: Features, beats: np.ndarray) -> np.ndarray:
    """One downbeat score per beat (higher = more bar-initial), a weighted sum of z-scored cues."""
    bounds = np.append(beats, beats[-1] + np.median(np.diff(beats)) if len(beats) > 1 else beats[-1] + 0.5)
    treble = sync(chroma_from_pitch(features.pitch, min_midi=BASS_MAX_MIDI + 1), features.pitch_fps, bounds)
    bass = sync(chroma_from_pitch(features.pitch, max_midi=BASS_MAX_MIDI), features.pitch_fps, bounds)
    cues = {
        "harmony": _change(treble),
        "bass": _change(bass),
        "low_onset": _peak_near(features.onset_low, features.onset_fps, beats),
        "accent": _peak_near(features.accent, features.onset_fps, beats),
    }
    return sum(CUE_WEIGHTS[name] * _zscore(np.asarray(v, dtype=np.float64)) for name, v in cues.items())


def _bar_positions(score: np.ndarray, m: int) -> np.ndarray:
    """Viterbi over bar position (0 = downbeat): advance by one each beat, or slip at a cost."""
    n = len(score)
    delta = np.where(np.arange(m) == 0, score[0], 0.0).astype(np.float64)
    back = np.zeros((n, m), dtype=np.int64)
    for t in range(1, n):
        advance = np.roll(delta, 1)  # position k-1 -> k
        best_any = delta.max() - PHASE_SLIP_COST
        use_slip = best_any > advance
        back[t] = np.where(use_slip, int(np.argmax(delta)), (np.arange(m) - 1) % m)
        delta = np.maximum(advance, best_any) + np.where(np.arange(m) == 0, score[t], 0.0)
    pos = np.zeros(n, dtype=np.int64)
    pos[-1] = int(np.argmax(delta))
    for t in range(n - 1, 0, -1):
        pos[t - 1] = back[t, pos[t]]
    return pos


def estimate_meter(features: Features, beats: np.ndarray, subdivision: int) -> MeterEstimate:
    """Beats per bar, time signature and downbeat times for tracked ``beats``.

    ``subdivision`` (2 or 3, from the pulse analysis) decides simple versus compound
    meter: two compound beats per bar is 6/8.
    """
    beats = np.asarray(beats, dtype=np.float64)
    if len(beats) < 4:
        return MeterEstimate("4/4", 4, beats[:1], {})
    score = downbeat_cues(features, beats)
    prior = COMPOUND_BAR_PRIOR if subdivision == 3 else BAR_PRIOR
    best = None
    contrast = {}
    for m in (2, 3, 4):
        pos = _bar_positions(score, m)
        down = pos == 0
        if down.all() or not down.any():
            continue
        c = float(score[down].mean() - score[~down].mean())
        contrast[m] = round(c, 3)
        total = c + prior[m]
        if best is None or total > best[0]:
            best = (total, m, down)
    if best is None:
        return MeterEstimate("4/4", 4, beats[::4], contrast)
    _, m, down = best
    if subdivision == 3:
        signature = {2: "6/8", 3: "9/8", 4: "12/8"}[m]
    else:
        signature = f"{m}/4"
    return MeterEstimate(signature, m, beats[down], contrast)
