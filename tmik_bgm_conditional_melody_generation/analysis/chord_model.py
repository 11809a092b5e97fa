"""A small learned chord model: per-beat log-probabilities of every chord label.

Fixed binary templates cannot say how much a chord's root, third, fifth and seventh weigh
against each other, or what a piano's or a string section's upper harmonics add to the
chroma, so chords that share two tones (D:min7 and F:maj, C:maj and E:min) were confused.
This model learns those weights from rendered music instead
(:mod:`..evaluation.train_chords` makes the shipped ``chord_model.npz``).

It is a root-invariant log-linear (multinomial logistic) model. A chord with root ``r``
and quality ``q`` scores::

    W[q] . [roll(treble, -r), roll(bass, -r)] + b[q]

i.e. each quality has 24 weights, one per interval above the root in the treble and in the
bass chroma, shared by all 12 roots, so every key is learned from every other key's data.
"No chord" (N) scores ``w_N . stats + b_N`` on rotation-invariant statistics (loudness,
how peaked the chroma is). A softmax over the 12 * Q + 1 classes gives the probabilities.

The npz also carries the decoder settings (emission sharpness, stay probability, key
bonus) that were cross-validated on the training set together with these weights: they
belong to this model's probabilities and are re-tuned whenever it is retrained.
"""

from __future__ import annotations

import functools
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .key import PITCH_NAMES

log = logging.getLogger(__name__)

MODEL_PATH = Path(__file__).resolve().with_name("chord_model.npz")
N_STATS = 4  # rotation-invariant statistics the N class reads (see :func:`n_statistics`)
FORMAT_VERSION = 1

# SHIFT[pc, r]: the interval of pitch class ``pc`` above root ``r``. ``weights[:, SHIFT]``
# lays a quality's interval weights out for every root at once (see :func:`expand`).
SHIFT = (np.arange(12)[:, None] - np.arange(12)[None, :]) % 12


class ChordModelError(RuntimeError):
    """The chord model file is missing, unreadable or not a chord model."""


@dataclass(frozen=True)
class ChordModel:
    """Trained parameters and the decoder settings tuned with them.

    ``weights`` (Q, 24): per quality, treble then bass weights by interval above the root.
    ``bias`` (Q,). ``n_weights`` (N_STATS,) and ``n_bias``: the no-chord class.
    """

    qualities: tuple[str, ...]
    weights: np.ndarray
    bias: np.ndarray
    n_weights: np.ndarray
    n_bias: float
    sharpness: float = 1.0
    stay: float = 0.5
    key_bonus: float = 0.0

    @property
    def labels(self) -> list[str]:
        """Harte labels in class order: N, then each quality on roots C..B."""
        return ["N"] + [f"{PITCH_NAMES[r]}:{q}" for q in self.qualities for r in range(12)]

    @property
    def roots(self) -> np.ndarray:
        """Root pitch class per class (-1 for N)."""
        return np.concatenate([[-1], np.tile(np.arange(12), len(self.qualities))])

    @property
    def class_qualities(self) -> list[str]:
        """Quality per class ("N" for N)."""
        return ["N"] + [q for q in self.qualities for _ in range(12)]


def normalise_treble(treble: np.ndarray) -> np.ndarray:
    """Floor-subtracted, unit-length treble chroma (columns are beats).

    Subtracting each beat's floor keeps broadband noise, drums and reverb from flattening
    the chroma; unit length makes loud and soft passages comparable.
    """
    c = np.maximum(0.0, treble - treble.min(axis=0, keepdims=True))
    return c / (np.linalg.norm(c, axis=0, keepdims=True) + 1e-9)


def normalise_bass(bass: np.ndarray) -> np.ndarray:
    """Floor-subtracted bass chroma that sums to one: the share of the bass on each pitch class."""
    c = np.maximum(0.0, bass - bass.min(axis=0, keepdims=True))
    return c / (c.sum(axis=0, keepdims=True) + 1e-9)


def n_statistics(treble: np.ndarray, bass: np.ndarray, level: np.ndarray) -> np.ndarray:
    """(n, N_STATS) rotation-invariant evidence for "no chord".

    Loudness relative to the track (rests and the silence around the music are quiet), how
    peaked the treble is (a single melody note or noise is not a chord), the floor's share
    of the treble (flat spectra: drums, noise) and the bass's share of the energy.
    """
    positive = level[level > 0]
    ref = float(np.median(positive)) if positive.size else 1.0
    rel = np.log(np.maximum(level, 1e-6) / (ref + 1e-9) + 1e-3)
    t = np.maximum(treble, 0.0)
    total = t.sum(axis=0) + 1e-9
    peak = t.max(axis=0) / total
    floor = 12.0 * t.min(axis=0) / total
    bass_share = np.maximum(bass, 0.0).sum(axis=0) / (np.maximum(bass, 0.0).sum(axis=0) + total)
    return np.stack([rel, peak, floor, bass_share], axis=1).astype(np.float64)


def design(treble: np.ndarray, bass: np.ndarray) -> np.ndarray:
    """(n, 24) inputs per beat: normalised treble then bass chroma, by pitch class."""
    return np.concatenate([normalise_treble(treble).T, normalise_bass(bass).T], axis=1).astype(np.float64)


def expand(weights: np.ndarray) -> np.ndarray:
    """(24, 12 Q) matrix that scores every chord at once: column q * 12 + r holds quality
    q's interval weights rotated to root r, so ``design @ expand(weights)`` is
    ``W[q] . [roll(treble, -r), roll(bass, -r)]`` for every (q, r)."""
    n_q = len(weights)
    treble = weights[:, :12][:, SHIFT]  # (Q, pc, r)
    bass = weights[:, 12:][:, SHIFT]
    return np.concatenate([treble, bass], axis=1).transpose(1, 0, 2).reshape(24, n_q * 12)


def fold_gradient(grad_matrix: np.ndarray, n_q: int) -> np.ndarray:
    """(Q, 24) gradient of the interval weights from the gradient of :func:`expand`'s matrix."""
    g = grad_matrix.reshape(2, 12, n_q, 12).transpose(0, 2, 3, 1)  # (treble/bass, Q, r, pc)
    rows = np.arange(12)[:, None]
    # Interval k above root r is pitch class (r + k) % 12.
    picked = g[:, :, rows, (rows + np.arange(12)[None, :]) % 12]  # (2, Q, r, k)
    return picked.sum(axis=2).transpose(1, 0, 2).reshape(n_q, 24)


def logits_from(
    x: np.ndarray, stats: np.ndarray, weights: np.ndarray, bias: np.ndarray, n_weights: np.ndarray, n_bias: float
) -> np.ndarray:
    """(n, 1 + 12 Q) class scores from :func:`design` inputs and :func:`n_statistics`."""
    scorer = expand(weights)
    z = np.empty((len(x), 1 + scorer.shape[1]))
    z[:, 1:] = x @ scorer
    z[:, 1:] += np.repeat(bias, 12)
    z[:, 0] = stats @ n_weights + n_bias
    return z


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, stable for large scores."""
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def log_probabilities(model: ChordModel, treble: np.ndarray, bass: np.ndarray, level: np.ndarray) -> np.ndarray:
    """(1 + 12 Q, n) log-probability of every chord (rows, in ``model.labels`` order) per beat."""
    x = design(treble, bass)
    stats = n_statistics(treble, bass, level)
    z = logits_from(x, stats, model.weights, model.bias, model.n_weights, model.n_bias)
    return log_softmax(z).T


def save_model(model: ChordModel, path: Path, **metadata: object) -> None:
    """Write the model as a small npz (``metadata`` values are stored as strings)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(
        tmp,
        format_version=np.int64(FORMAT_VERSION),
        qualities=np.array(model.qualities),
        weights=model.weights.astype(np.float64),
        bias=model.bias.astype(np.float64),
        n_weights=model.n_weights.astype(np.float64),
        n_bias=np.float64(model.n_bias),
        decoder=np.array([model.sharpness, model.stay, model.key_bonus], dtype=np.float64),
        **{f"meta_{k}": np.array(str(v)) for k, v in metadata.items()},
    )
    tmp.replace(path)


def read_model(path: Path) -> ChordModel:
    """Read and check a model file; raise :class:`ChordModelError` with the reason if unusable."""
    path = Path(path)
    retrain = "rebuild it with: python -m tmik_bgm_conditional_melody_generation.evaluation.train_chords"
    if not path.is_file():
        raise ChordModelError(f"No chord model at {path}; {retrain}")
    try:
        with np.load(path, allow_pickle=False) as data:
            version = int(data["format_version"])
            qualities = tuple(str(q) for q in data["qualities"])
            weights, bias = np.array(data["weights"]), np.array(data["bias"])
            n_weights, n_bias = np.array(data["n_weights"]), float(data["n_bias"])
            sharpness, stay, key_bonus = (float(v) for v in data["decoder"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise ChordModelError(f"Chord model {path} is corrupt or incomplete ({exc}); {retrain}") from exc
    q = len(qualities)
    problems = []
    if not qualities or len(set(qualities)) != q:
        problems.append(f"qualities {qualities}")
    if version != FORMAT_VERSION:
        problems.append(f"format version {version}, expected {FORMAT_VERSION}")
    if weights.shape != (q, 24) or bias.shape != (q,) or n_weights.shape != (N_STATS,):
        problems.append(f"shapes weights {weights.shape}, bias {bias.shape}, n_weights {n_weights.shape}")
    arrays = (weights, bias, n_weights, np.array([n_bias, sharpness, stay, key_bonus]))
    if not all(np.all(np.isfinite(a)) for a in arrays):
        problems.append("non-finite values")
    if not (sharpness > 0 and 0 < stay < 1):
        problems.append(f"decoder settings sharpness={sharpness}, stay={stay}")
    if problems:
        raise ChordModelError(f"Chord model {path} is not usable ({'; '.join(problems)}); {retrain}")
    return ChordModel(qualities, weights, bias, n_weights, n_bias, sharpness, stay, key_bonus)


@functools.lru_cache(maxsize=4)
def load_model(path: Path = MODEL_PATH) -> ChordModel:
    """The chord model at ``path`` (the shipped one by default), read once per process."""
    model = read_model(path)
    log.debug("chord model %s: qualities %s", path.name, ", ".join(model.qualities))
    return model
