"""Key estimation: pitch-class profiles plus the harmonic function of the chords.

Profile correlation alone confuses a key with its dominant (a piece in G that moves
between G and D looks as much like D major) and with its relative minor. The chords
separate them: a key's tonic and dominant chords count for more than its subdominant,
and a chord foreign to the key counts against it. The track's last chord, which in most
music is the tonic, adds its vote.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PITCH_NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]

# Key profiles (Temperley, "What's key for key?", 1999), major and minor.
MAJOR_PROFILE = np.array([5.0, 2.0, 3.5, 2.0, 4.5, 4.0, 2.0, 4.5, 2.0, 3.5, 1.5, 4.0])
MINOR_PROFILE = np.array([5.0, 2.0, 3.5, 4.5, 2.0, 4.0, 2.0, 4.5, 3.5, 2.0, 1.5, 4.0])

# Weight of a chord (scale degree in semitones above the tonic, Harte quality) as evidence
# for a key. Tonic and dominant count most; chords absent here count against the key.
FUNCTION_WEIGHTS = {
    "major": {
        (0, "maj"): 1.0,
        (0, "maj7"): 0.8,
        (7, "maj"): 0.8,
        (7, "7"): 1.0,
        (5, "maj"): 0.5,
        (5, "maj7"): 0.4,
        (9, "min"): 0.4,
        (9, "min7"): 0.3,
        (2, "min"): 0.4,
        (2, "min7"): 0.4,
        (4, "min"): 0.2,
        (4, "min7"): 0.2,
        (11, "dim"): 0.3,
        (7, "sus4"): 0.4,
        (0, "sus4"): 0.3,
        (2, "7"): 0.2,
        (9, "7"): 0.1,
        (4, "7"): 0.1,
    },
    "minor": {
        (0, "min"): 1.0,
        (0, "min7"): 0.8,
        (7, "maj"): 0.8,
        (7, "7"): 1.0,
        (7, "min"): 0.4,
        (5, "min"): 0.5,
        (5, "min7"): 0.4,
        (3, "maj"): 0.4,
        (3, "maj7"): 0.3,
        (8, "maj"): 0.4,
        (8, "maj7"): 0.3,
        (10, "maj"): 0.3,
        (10, "7"): 0.2,
        (2, "dim"): 0.3,
        (11, "dim"): 0.3,
        (7, "sus4"): 0.4,
        (0, "sus4"): 0.2,
    },
}
FOREIGN_CHORD_WEIGHT = -0.4
PROFILE_WEIGHT = 1.0
FUNCTION_WEIGHT = 1.0
FINAL_CHORD_WEIGHT = 0.5


def key_name(tonic: int, mode: str) -> str:
    return f"{PITCH_NAMES[tonic]} {mode}"


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 1e-9 else np.zeros_like(x)


def profile_scores(chroma: np.ndarray) -> np.ndarray:
    """Correlation of a 12-bin pitch-class distribution with the 24 key profiles.

    Returns shape (2, 12): row 0 major, row 1 minor, column = tonic pitch class.
    """
    out = np.zeros((2, 12))
    for row, profile in enumerate((MAJOR_PROFILE, MINOR_PROFILE)):
        for tonic in range(12):
            out[row, tonic] = np.corrcoef(chroma, np.roll(profile, tonic))[0, 1]
    return np.nan_to_num(out)


def function_scores(chords: Sequence[tuple[int, str, float]]) -> np.ndarray:
    """Duration-weighted harmonic-function fit of (root, quality, seconds) chords to the 24 keys."""
    out = np.zeros((2, 12))
    total = sum(d for _, _, d in chords) or 1.0
    for row, mode in enumerate(("major", "minor")):
        weights = FUNCTION_WEIGHTS[mode]
        for tonic in range(12):
            out[row, tonic] = (
                sum(
                    d * weights.get(((root - tonic) % 12, quality), FOREIGN_CHORD_WEIGHT) for root, quality, d in chords
                )
                / total
            )
    return out


def estimate_key(chroma: np.ndarray, chords: Sequence[tuple[int, str, float]]) -> str:
    """Key in mir_eval form ("G major") from a duration-weighted chroma and the chord sequence.

    ``chords`` are (root pitch class, Harte quality, duration in seconds) in time order,
    without no-chord spans.
    """
    score = PROFILE_WEIGHT * _zscore(profile_scores(chroma))
    if chords:
        score = score + FUNCTION_WEIGHT * _zscore(function_scores(chords))
        root, quality, _ = chords[-1]
        minor = quality in ("min", "min7")
        score[1 if minor else 0, root] += FINAL_CHORD_WEIGHT
    row, tonic = np.unravel_index(int(np.argmax(score)), score.shape)
    return key_name(int(tonic), "major" if row == 0 else "minor")
