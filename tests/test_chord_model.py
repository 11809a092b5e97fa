"""The learned chord model: the shipped file, what it says about clear chords, bad files."""

from __future__ import annotations

import numpy as np
import pytest

from tmik_bgm_conditional_melody_generation.analysis import chord_model as cm
from tmik_bgm_conditional_melody_generation.analysis import harmony
from tmik_bgm_conditional_melody_generation.evaluation import devset, train_chords


def chroma(*pcs: int) -> np.ndarray:
    """A one-beat chroma column: the given pitch classes over a little noise floor."""
    c = np.full(12, 0.05)
    for pc in pcs:
        c[pc] += 1.0
    return c[:, None]


def probabilities(treble: np.ndarray, bass: np.ndarray) -> dict[str, float]:
    model = cm.load_model()
    lp = cm.log_probabilities(model, treble, bass, np.ones(treble.shape[1]))[:, 0]
    return dict(zip(model.labels, np.exp(lp), strict=True))


def best(treble: np.ndarray, bass: np.ndarray) -> str:
    p = probabilities(treble, bass)
    return max(p, key=p.get)


def test_shipped_model_loads_with_the_vocabulary_the_analysis_outputs():
    model = cm.load_model()
    assert {"maj", "min", "7", "dim", "sus4"} <= set(model.qualities)
    assert len(model.labels) == 1 + 12 * len(model.qualities) and model.labels[0] == "N"
    assert model.weights.shape == (len(model.qualities), 24)
    assert model.sharpness > 0 and 0 < model.stay < 1 and model.key_bonus >= 0
    assert cm.MODEL_PATH.stat().st_size < 20_000


@pytest.mark.parametrize(
    ("treble", "bass", "label"),
    [
        ((0, 4, 7), (0,), "C:maj"),
        ((9, 0, 4), (9,), "A:min"),
        ((4, 7, 11), (4,), "E:min"),
        ((2, 5, 9, 0), (2,), "D:min7"),
        ((0, 4, 7, 11), (0,), "C:maj7"),
        ((0, 5, 7), (0,), "C:sus4"),
        ((11, 2, 5), (11,), "B:dim"),
    ],
)
def test_clear_chords_score_their_own_label_highest(treble, bass, label):
    assert best(chroma(*treble), chroma(*bass)) == label


def test_a_sounding_seventh_makes_a_dominant_seventh():
    p = probabilities(chroma(7, 11, 2, 5), chroma(7))
    assert p["G:7"] > p["G:maj"] and p["G:7"] > 0.5


def test_chords_sharing_two_tones_are_kept_apart():
    # The template matcher's typical confusions: C:maj vs E:min, D:min7 vs F:maj.
    assert best(chroma(0, 4, 7), chroma(0)) != "E:min"
    assert best(chroma(4, 7, 11), chroma(4)) != "C:maj"
    assert best(chroma(2, 5, 9, 0), chroma(2)).startswith("D:")


def test_an_empty_beat_is_no_chord():
    assert best(np.zeros((12, 1)), np.zeros((12, 1))) == "N"


def test_the_model_is_the_same_in_every_key():
    rng = np.random.default_rng(3)
    treble, bass = rng.random((12, 5)), rng.random((12, 5))
    model = cm.load_model()
    lp = cm.log_probabilities(model, treble, bass, np.ones(5))
    shifted = cm.log_probabilities(model, np.roll(treble, 5, axis=0), np.roll(bass, 5, axis=0), np.ones(5))
    q = len(model.qualities)
    assert np.allclose(np.roll(lp[1:].reshape(q, 12, 5), 5, axis=1), shifted[1:].reshape(q, 12, 5))
    assert np.allclose(lp[0], shifted[0])


def test_decoding_follows_a_progression_and_silence_is_no_chord():
    cols = [chroma(0, 4, 7)] * 4 + [chroma(5, 9, 0)] * 4 + [chroma(7, 11, 2, 5)] * 4 + [np.zeros((12, 1))] * 2
    basses = [chroma(0)] * 4 + [chroma(5)] * 4 + [chroma(7)] * 4 + [np.zeros((12, 1))] * 2
    level = np.array([1.0] * 12 + [0.01] * 2)
    labels = harmony.decode_chords(np.hstack(cols), np.hstack(basses), level)
    assert labels == ["C:maj"] * 4 + ["F:maj"] * 4 + ["G:7"] * 4 + ["N"] * 2


def test_missing_or_corrupt_model_file_gives_a_clear_error(tmp_path):
    with pytest.raises(cm.ChordModelError, match="No chord model.*train_chords"):
        cm.read_model(tmp_path / "absent.npz")
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(cm.ChordModelError, match="corrupt"):
        cm.read_model(bad)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(cm.MODEL_PATH.read_bytes()[:1000])
    with pytest.raises(cm.ChordModelError, match="train_chords"):
        cm.read_model(truncated)


def test_a_model_with_wrong_shapes_is_refused(tmp_path):
    model = cm.load_model()
    path = tmp_path / "wrong.npz"
    cm.save_model(cm.ChordModel(model.qualities, model.weights[:, :12], model.bias, model.n_weights,
                                model.n_bias), path)
    with pytest.raises(cm.ChordModelError, match="shapes"):
        cm.read_model(path)


def test_save_and_read_round_trip(tmp_path):
    model = cm.load_model()
    path = tmp_path / "copy.npz"
    cm.save_model(model, path, note="test")
    again = cm.read_model(path)
    assert again.qualities == model.qualities and again.stay == model.stay
    assert np.array_equal(again.weights, model.weights)


def test_training_pieces_are_disjoint_from_the_development_set():
    plans = train_chords.all_plans()
    works, analyses = train_chords.dev_exclusions()
    assert len(plans) > 150
    assert not {train_chords.work_of(p.spec.source) for p in plans if p.spec.source != "generated"} & works
    assert not {p.spec.analysis for p in plans} & analyses
    dev = devset.PIECES[0]
    with pytest.raises(ValueError, match="overlap"):
        train_chords.check_disjoint([train_chords.Plan(dev, "analysis")])


def test_objective_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    n, q = 40, 3
    treble, bass = rng.random((12, n)), rng.random((12, n))
    data = train_chords.Data(cm.design(treble, bass), cm.n_statistics(treble, bass, rng.random(n) + 0.1),
                             rng.integers(0, 1 + 12 * q, n), rng.random(n) + 0.5, np.zeros(n, dtype=int))
    theta = rng.normal(size=q * 25 + cm.N_STATS + 1)
    _, grad = train_chords.objective(theta, data, q, 1e-3)
    eps = 1e-6
    for i in rng.choice(len(theta), 12, replace=False):
        step = np.zeros_like(theta)
        step[i] = eps
        numeric = (train_chords.objective(theta + step, data, q, 1e-3)[0]
                   - train_chords.objective(theta - step, data, q, 1e-3)[0]) / (2 * eps)
        assert grad[i] == pytest.approx(numeric, rel=1e-4, abs=1e-7)


def test_beat_labels_take_the_chord_covering_most_of_each_beat():
    chords = [(0.0, 0.5, "N"), (0.5, 1.6, "C:maj"), (1.6, 3.0, "G:7")]
    labels, shares = train_chords.beat_labels(chords, np.array([0.0, 0.5, 1.5, 2.5, 3.0]))
    assert labels == ["N", "C:maj", "G:7", "G:7"]
    assert shares[2] == pytest.approx(0.9)
    assert train_chords.class_index("Bb:hdim7", train_chords.QUALITIES) == 1 + 5 * 12 + 10
    assert train_chords.class_index("C:aug", train_chords.QUALITIES) is None
