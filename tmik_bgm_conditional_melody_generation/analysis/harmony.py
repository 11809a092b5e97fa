"""Key and chords from beat-synchronous chroma.

Chords: each beat's treble chroma is matched against chord templates (maj, min, 7, maj7,
min7, dim, sus4 on 12 roots) and its bass chroma against the chord's root; an HMM that
favours staying on a chord and, mildly, chords that belong to the key, is decoded with
Viterbi. The key itself comes from :mod:`.key`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .features import BASS_MAX_MIDI, Features, chroma_from_pitch, sync
from .key import PITCH_NAMES, estimate_key

# Chord qualities (Harte shorthand), their intervals and a bias that keeps plain triads
# preferred unless the extra tone is clearly present.
QUALITIES: dict[str, tuple[tuple[int, ...], float]] = {
    "maj": ((0, 4, 7), 0.0),
    "min": ((0, 3, 7), 0.0),
    "7": ((0, 4, 7, 10), -0.04),
    "maj7": ((0, 4, 7, 11), -0.06),
    "min7": ((0, 3, 7, 10), -0.06),
    "dim": ((0, 3, 6), -0.05),
    "sus4": ((0, 5, 7), -0.06),
}

# Scale degrees (semitones above the tonic) and qualities of the chords native to a key.
DIATONIC = {
    "major": {
        (0, "maj"),
        (2, "min"),
        (4, "min"),
        (5, "maj"),
        (7, "maj"),
        (9, "min"),
        (11, "dim"),
        (7, "7"),
        (0, "maj7"),
        (5, "maj7"),
        (2, "min7"),
        (9, "min7"),
        (4, "min7"),
        (7, "sus4"),
        (0, "sus4"),
    },
    "minor": {
        (0, "min"),
        (2, "dim"),
        (3, "maj"),
        (5, "min"),
        (7, "min"),
        (7, "maj"),
        (8, "maj"),
        (10, "maj"),
        (11, "dim"),
        (7, "7"),
        (0, "min7"),
        (5, "min7"),
        (3, "maj7"),
        (8, "maj7"),
        (7, "sus4"),
    },
}

EMISSION_SHARPNESS = 40.0
STAY_PROBABILITY = 0.5
KEY_BONUS = 0.05
BASS_WEIGHT = 0.25


@dataclass
class ChordVocabulary:
    labels: list[str]
    roots: np.ndarray  # -1 for N
    qualities: list[str]
    templates: np.ndarray  # (n_chords, 12), unit-norm rows (zeros for N)
    bias: np.ndarray


def vocabulary() -> ChordVocabulary:
    labels, roots, quals, temps, bias = ["N"], [-1], ["N"], [np.zeros(12)], [0.0]
    for q, (intervals, b) in QUALITIES.items():
        for root in range(12):
            t = np.zeros(12)
            for k, iv in enumerate(intervals):
                # The root and fifth carry a triad; weight them a little above the third.
                t[(root + iv) % 12] = 1.0 if k != 1 else 0.9
            labels.append(f"{PITCH_NAMES[root]}:{q}")
            roots.append(root)
            quals.append(q)
            temps.append(t / np.linalg.norm(t))
            bias.append(b)
    return ChordVocabulary(labels, np.array(roots), quals, np.array(temps), np.array(bias))


def beat_chroma(
    pitch: np.ndarray, pitch_fps: float, beats: np.ndarray, duration: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Treble chroma, bass chroma, loudness and bounds of each inter-beat interval.

    ``pitch`` is semitone salience from C1 (see :mod:`.features`). The intervals are
    [0, b0), [b0, b1), ..., [b_last, duration), so the chords cover the whole track.
    """
    bounds = np.unique(np.concatenate([[0.0], beats, [duration]]))
    treble = sync(chroma_from_pitch(pitch, min_midi=BASS_MAX_MIDI - 11), pitch_fps, bounds)
    bass = sync(chroma_from_pitch(pitch, max_midi=BASS_MAX_MIDI), pitch_fps, bounds)
    level = sync(pitch.max(axis=0, keepdims=True), pitch_fps, bounds)[0]
    return treble, bass, level, bounds


def _normalise(c: np.ndarray) -> np.ndarray:
    # Subtract each frame's floor so broadband noise and reverb do not flatten the chroma.
    c = np.maximum(0.0, c - c.min(axis=0, keepdims=True))
    return c / (np.linalg.norm(c, axis=0, keepdims=True) + 1e-9)


def _key_prior(vocab: ChordVocabulary, key: str | None) -> np.ndarray:
    prior = np.zeros(len(vocab.labels))
    if key is None:
        return prior
    name, mode = key.split()
    tonic = PITCH_NAMES.index(name)
    native = DIATONIC[mode]
    for i, (root, q) in enumerate(zip(vocab.roots, vocab.qualities)):
        if root >= 0 and ((root - tonic) % 12, q) in native:
            prior[i] = KEY_BONUS
    return prior


def chord_scores(treble: np.ndarray, bass: np.ndarray, vocab: ChordVocabulary) -> np.ndarray:
    """Fit of every chord (rows) to every interval (columns), before any prior."""
    t = _normalise(treble)
    b = bass / (bass.sum(axis=0, keepdims=True) + 1e-9)
    score = vocab.templates @ t + vocab.bias[:, None]
    roots = np.where(vocab.roots >= 0, vocab.roots, 0)
    return score + BASS_WEIGHT * np.where(vocab.roots[:, None] >= 0, b[roots], 0.0)


def viterbi(log_emit: np.ndarray, stay: float) -> np.ndarray:
    """Best state path under a transition model that stays with probability ``stay``."""
    n_states, n = log_emit.shape
    log_stay = np.log(stay)
    log_move = np.log((1 - stay) / (n_states - 1))
    delta = log_emit[:, 0].copy()
    back = np.zeros((n, n_states), dtype=np.int64)
    for i in range(1, n):
        best_prev = int(np.argmax(delta))
        stay_score = delta + log_stay
        move = delta[best_prev] + log_move
        back[i] = np.where(move > stay_score, best_prev, np.arange(n_states))
        delta = np.maximum(stay_score, move) + log_emit[:, i]
    path = np.zeros(n, dtype=np.int64)
    path[-1] = int(np.argmax(delta))
    for i in range(n - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    return path


def decode_chords(treble: np.ndarray, bass: np.ndarray, level: np.ndarray, key: str | None = None) -> list[str]:
    """Viterbi chord labels, one per interval (column)."""
    vocab = vocabulary()
    score = chord_scores(treble, bass, vocab) + _key_prior(vocab, key)[:, None]
    # N wins where the interval is near-silent compared with the track.
    quiet = level < 0.25 * np.median(level[level > 0]) if np.any(level > 0) else np.ones_like(level, bool)
    score[0] = np.where(quiet, 2.0, -1.0)
    path = viterbi(EMISSION_SHARPNESS * score, STAY_PROBABILITY)
    return [vocab.labels[k] for k in path]


def segments(bounds: np.ndarray, labels: list[str]) -> list[tuple[float, float, str]]:
    """Merge runs of equal labels into (start, end, label) segments."""
    out: list[tuple[float, float, str]] = []
    for i, lab in enumerate(labels):
        start, end = float(bounds[i]), float(bounds[i + 1])
        if out and out[-1][2] == lab:
            out[-1] = (out[-1][0], end, lab)
        else:
            out.append((start, end, lab))
    return out


def _parse(label: str) -> tuple[int, str] | None:
    if label == "N":
        return None
    root, quality = label.split(":")
    return PITCH_NAMES.index(root), quality


def analyse_harmony(
    features: Features, beats: np.ndarray, duration: float
) -> tuple[str, list[tuple[float, float, str]]]:
    """Key and chord segments of a track with tracked ``beats``.

    Chords are first decoded without a key, the key is estimated from the harmonic-free
    chroma and those chords, and the chords are decoded again with the key's diatonic
    chords preferred.
    """
    treble, bass, level, bounds = beat_chroma(features.pitch, features.pitch_fps, beats, duration)
    key_treble, key_bass, _, _ = beat_chroma(features.pitch_clean, features.pitch_fps, beats, duration)
    widths = np.diff(bounds)
    # Pitch-class distribution for the key: treble plus half-weighted bass, harmonics removed.
    key_chroma = (_normalise(key_treble) * widths).sum(axis=1) + 0.5 * (_normalise(key_bass) * widths).sum(axis=1)
    first = segments(bounds, decode_chords(treble, bass, level))
    chords = [(*_parse(label), end - start) for start, end, label in first if label != "N"]
    key = estimate_key(key_chroma, chords)
    labels = decode_chords(treble, bass, level, key)
    return key, segments(bounds, labels)
