"""Sections: repeated passages labelled A, B, C, ... so a melody can repeat its chorus.

Bars are described by their harmony (chroma, bass chroma) and timbre (MFCC). Boundaries
are peaks of a checkerboard novelty curve over the bar self-similarity matrix (Foote
2000), snapped to downbeats; sections are then compared bar by bar and a section that
matches an earlier one closely takes its letter.
"""

from __future__ import annotations

import numpy as np
import scipy.signal

from .features import BASS_MAX_MIDI, Features, chroma_from_pitch, sync

# Bar-by-bar similarity above which two sections count as the same passage.
REPEAT_SIMILARITY = 0.88
MIN_SECTION_BARS = 4


def bar_features(features: Features, downbeats: np.ndarray, duration: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm feature vector per bar and the bar boundaries (seconds, 0 and end included)."""
    bounds = np.unique(np.concatenate([[0.0], downbeats, [duration]]))
    # Drop slivers (a downbeat right at the start or the end) but always end at the end.
    bounds = bounds[np.concatenate([[True], np.diff(bounds) > 0.2])]
    if len(bounds) > 1:
        bounds[-1] = duration
    else:
        bounds = np.array([0.0, duration])
    pitch_fps = features.pitch_fps
    treble = sync(chroma_from_pitch(features.pitch, min_midi=BASS_MAX_MIDI + 1), pitch_fps, bounds)
    bass = sync(chroma_from_pitch(features.pitch, max_midi=BASS_MAX_MIDI), pitch_fps, bounds)
    mfcc = sync(features.mfcc[1:], pitch_fps, bounds)

    def unit(x: np.ndarray) -> np.ndarray:
        return x / (np.linalg.norm(x, axis=0, keepdims=True) + 1e-9)

    mfcc = (mfcc - mfcc.mean(axis=1, keepdims=True)) / (mfcc.std(axis=1, keepdims=True) + 1e-9)
    stacked = np.vstack([unit(treble), 0.7 * unit(bass), 0.5 * unit(mfcc)])
    return unit(stacked), bounds


def _novelty(sim: np.ndarray, half: int) -> np.ndarray:
    n = sim.shape[0]
    sign = np.sign(np.arange(-half, half) + 0.5)
    kernel = np.outer(sign, sign)
    padded = np.pad(sim, half, mode="edge")
    return np.array([(padded[i : i + 2 * half, i : i + 2 * half] * kernel).sum() for i in range(n)])


def _segment(sim: np.ndarray, n_bars: int) -> list[int]:
    """Bar indices where sections start (always including 0)."""
    if n_bars < 2 * MIN_SECTION_BARS:
        return [0]
    nov = _novelty(sim, half=MIN_SECTION_BARS)
    peaks, _ = scipy.signal.find_peaks(nov, distance=MIN_SECTION_BARS, prominence=max(1e-6, 0.15 * np.ptp(nov)))
    starts = [0] + [int(p) for p in peaks if MIN_SECTION_BARS <= p <= n_bars - MIN_SECTION_BARS]
    return sorted(set(starts))


def _similarity(sim: np.ndarray, a: tuple[int, int], b: tuple[int, int]) -> float:
    """Mean bar-by-bar similarity of two sections, aligned at their starts or at their ends.

    Aligning the ends too lets a section that starts with a pickup bar, or a chorus with
    an extra bar of lead-in, still match its repeat.
    """
    length = min(a[1] - a[0], b[1] - b[0])
    if length <= 0:
        return 0.0
    by_start = np.mean([sim[a[0] + k, b[0] + k] for k in range(length)])
    by_end = np.mean([sim[a[1] - 1 - k, b[1] - 1 - k] for k in range(length)])
    return float(max(by_start, by_end))


def find_sections(features: Features, downbeats: np.ndarray, duration: float) -> list[tuple[float, float, str]]:
    """Sections as (start, end, letter), covering the whole track."""
    if len(downbeats) < 2:
        return [(0.0, float(duration), "A")]
    feats, bounds = bar_features(features, downbeats, duration)
    n_bars = feats.shape[1]
    sim = feats.T @ feats
    starts = _segment(sim, n_bars)
    spans = [(s, e) for s, e in zip(starts, starts[1:] + [n_bars])]
    labels: list[str] = []
    for i, span in enumerate(spans):
        best_j, best_sim = None, REPEAT_SIMILARITY
        for j in range(i):
            s = _similarity(sim, spans[j], span)
            if s > best_sim:
                best_j, best_sim = j, s
        if best_j is not None:
            labels.append(labels[best_j])
        else:
            labels.append(chr(ord("A") + len(set(labels))) if len(set(labels)) < 26 else "Z")
    out = [(float(bounds[s]), float(bounds[e]), lab) for (s, e), lab in zip(spans, labels)]
    # Merge neighbours that got the same letter: one passage, not two.
    merged: list[tuple[float, float, str]] = []
    for seg in out:
        if merged and merged[-1][2] == seg[2]:
            merged[-1] = (merged[-1][0], seg[1], seg[2])
        else:
            merged.append(seg)
    return merged
