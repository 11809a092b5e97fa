"""Chords from beat-synchronous chroma, and the key (from :mod:`.key`) they imply.

Chords: a learned chord model (:mod:`.chord_model`) gives each beat's treble and bass
chroma a log-probability for every chord (maj, min, 7, maj7, min7, dim, sus4 on 12 roots,
and N); an HMM that favours staying on a chord and, optionally, chords that belong to the
key, is decoded with Viterbi. The HMM's settings (emission sharpness, stay probability,
key bonus) come with the model file, because they were cross-validated for its
probabilities (see :mod:`..evaluation.train_chords`).
"""

from __future__ import annotations

import numpy as np

from .chord_model import ChordModel, load_model, log_probabilities
from .features import BASS_MAX_MIDI, Features, chroma_from_pitch, sync
from .key import PITCH_NAMES, estimate_key

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

# A beat quieter than this share of the track's median level is silence: N, by this many
# nats ahead of the best chord, whatever its chroma (reverb tails, noise) looks like.
QUIET_RATIO = 0.25
QUIET_MARGIN = 30.0


def beat_chroma(
    pitch: np.ndarray, pitch_fps: float, beats: np.ndarray, duration: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Treble chroma, bass chroma, loudness and bounds of each inter-beat interval.

    ``pitch`` is semitone salience from C1 (see :mod:`.features`). The intervals run from
    0 s to the end, so the chords cover the whole track: the beats, plus one more beat
    before the first and after the last, so the last chord is not smeared over the fade-out
    (nor the first over a silent lead-in).
    """
    beats = np.asarray(beats, dtype=np.float64)
    edges = [0.0, duration]
    if len(beats) > 1:
        step = float(np.median(np.diff(beats)))
        edges += [t for t in (beats[0] - step, beats[-1] + step) if 0.05 < t < duration - 0.05]
    bounds = np.unique(np.concatenate([edges, beats]))
    treble = sync(chroma_from_pitch(pitch, min_midi=BASS_MAX_MIDI - 11), pitch_fps, bounds)
    bass = sync(chroma_from_pitch(pitch, max_midi=BASS_MAX_MIDI), pitch_fps, bounds)
    level = sync(pitch.max(axis=0, keepdims=True), pitch_fps, bounds)[0]
    return treble, bass, level, bounds


def _normalise(c: np.ndarray) -> np.ndarray:
    # Subtract each frame's floor so broadband noise and reverb do not flatten the chroma.
    c = np.maximum(0.0, c - c.min(axis=0, keepdims=True))
    return c / (np.linalg.norm(c, axis=0, keepdims=True) + 1e-9)


def diatonic_mask(model: ChordModel, key: str | None) -> np.ndarray:
    """1.0 for the model's chords that are native to ``key`` (none when the key is unknown)."""
    mask = np.zeros(len(model.labels))
    if key is None:
        return mask
    name, mode = key.split()
    tonic = PITCH_NAMES.index(name)
    native = DIATONIC[mode]
    for i, (root, q) in enumerate(zip(model.roots, model.class_qualities)):
        if root >= 0 and ((root - tonic) % 12, q) in native:
            mask[i] = 1.0
    return mask


def emissions(log_probs: np.ndarray, level: np.ndarray, model: ChordModel, key: str | None) -> np.ndarray:
    """Viterbi log-emissions: the model's log-probabilities, key bonus, silence forced to N."""
    score = log_probs + model.key_bonus * diatonic_mask(model, key)[:, None]
    positive = level[level > 0]
    quiet = level < QUIET_RATIO * np.median(positive) if positive.size else np.ones_like(level, bool)
    score[0] = np.where(quiet, score[1:].max(axis=0) + QUIET_MARGIN, score[0])
    return model.sharpness * score


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


def decode_chords(
    treble: np.ndarray, bass: np.ndarray, level: np.ndarray, key: str | None = None, model: ChordModel | None = None
) -> list[str]:
    """Viterbi chord labels, one per interval (column)."""
    model = model or load_model()
    log_probs = log_probabilities(model, treble, bass, level)
    path = viterbi(emissions(log_probs, level, model, key), model.stay)
    labels = model.labels
    return [labels[k] for k in path]


def key_and_chords(
    treble: np.ndarray,
    bass: np.ndarray,
    level: np.ndarray,
    key_treble: np.ndarray,
    key_bass: np.ndarray,
    bounds: np.ndarray,
    model: ChordModel | None = None,
    log_probs: np.ndarray | None = None,
) -> tuple[str, list[str]]:
    """Key and one chord label per interval, from beat chroma (see :func:`analyse_harmony`).

    Separate from the audio front end so training can tune the decoder on cached chroma;
    ``log_probs`` (the model's, if already computed) saves recomputing them per setting.
    """
    model = model or load_model()
    if log_probs is None:
        log_probs = log_probabilities(model, treble, bass, level)
    labels = model.labels
    widths = np.diff(bounds)
    first_path = viterbi(emissions(log_probs, level, model, None), model.stay)
    first = segments(bounds, [labels[k] for k in first_path])
    # Pitch-class distribution for the key: treble plus half-weighted bass, harmonics removed.
    key_chroma = (_normalise(key_treble) * widths).sum(axis=1) + 0.5 * (_normalise(key_bass) * widths).sum(axis=1)
    chords = [(*_parse(label), end - start) for start, end, label in first if label != "N"]
    key = estimate_key(key_chroma, chords)
    # Without a key bonus (the shipped model's cross-validated setting) the key changes
    # nothing in the decode, so the first pass stands.
    path = viterbi(emissions(log_probs, level, model, key), model.stay) if model.key_bonus else first_path
    return key, [labels[k] for k in path]


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
    chords preferred (as much as the model's ``key_bonus`` says).
    """
    treble, bass, level, bounds = beat_chroma(features.pitch, features.pitch_fps, beats, duration)
    key_treble, key_bass, _, _ = beat_chroma(features.pitch_clean, features.pitch_fps, beats, duration)
    key, labels = key_and_chords(treble, bass, level, key_treble, key_bass, bounds)
    return key, segments(bounds, labels)
