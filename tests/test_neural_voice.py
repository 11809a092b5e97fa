"""The neural singing engine: it sings the written pitches, on time, with silent rests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tmik_make_vocal_mix.engines.neural import NeuralVoice, build_controllable_model, split_syllables
from tmik_make_vocal_mix.score import SungNote, VocalScore, phrases_of

librosa = pytest.importorskip("librosa")


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_controllable_model(tmp_path_factory.mktemp("tmik_cache"))


@pytest.fixture(scope="session")
def voice(model_path: Path) -> NeuralVoice:
    return NeuralVoice(model_path)


def _score() -> VocalScore:
    spec = [(0.5, 0.9, 60, "hel"), (0.9, 1.3, 64, "lo"), (1.3, 2.1, 67, "world"),
            (2.8, 3.2, 67, "sing"), (3.2, 3.6, 65, "a"), (3.6, 4.6, 64, "song"), (4.6, 5.2, 62, "-")]
    notes = [SungNote(a, b, p, s) for a, b, p, s in spec]
    return VocalScore(notes, phrases_of(notes))


@pytest.fixture(scope="session")
def sung(voice: NeuralVoice) -> tuple[np.ndarray, int]:
    return voice.sing(_score())


def test_model_is_cached(model_path: Path) -> None:
    mtime = model_path.stat().st_mtime_ns
    assert build_controllable_model(model_path.parent) == model_path
    assert model_path.stat().st_mtime_ns == mtime


def test_split_syllables() -> None:
    assert split_syllables("həlˈO", 2) == [(["h"], ["ə"], []), (["l"], ["ˈ", "O"], [])]
    assert split_syllables("twˈɪŋkᵊl", 2) == [(["t", "w"], ["ˈ", "ɪ"], ["ŋ"]), (["k"], ["ᵊ"], ["l"])]
    assert len(split_syllables("sˈɔŋ", 3)) == 1  # fewer vowels than syllables: the caller extends the vowel


def test_length_and_silent_rests(sung: tuple[np.ndarray, int]) -> None:
    y, sr = sung
    score = _score()
    assert y.dtype == np.float32 and y.ndim == 1
    assert len(y) == round((score.duration + 0.5) * sr)

    def rms(a: float, b: float) -> float:
        return float(np.sqrt(np.mean(y[int(a * sr): int(b * sr)] ** 2)))

    assert rms(0.6, 2.0) > 0.01
    assert rms(2.2, 2.6) < 1e-3  # the rest between the phrases
    assert rms(0.0, 0.3) < 1e-3 and rms(5.35, 5.7) < 1e-3


def test_pitch_accuracy(sung: tuple[np.ndarray, int]) -> None:
    y, sr = sung
    hop = 240
    f0, voiced, _ = librosa.pyin(y, fmin=100, fmax=600, sr=sr, frame_length=1024, hop_length=hop)
    t = librosa.times_like(f0, sr=sr, hop_length=hop)
    good = total = inside = 0
    for n in _score().notes:
        m = (t >= n.start + 0.05) & (t < n.end - 0.05)
        v = m & voiced
        cents = 1200 * np.log2(f0[v] / librosa.midi_to_hz(n.pitch))
        good += int((np.abs(cents) < 50).sum())
        total += int(v.sum())
        inside += int(m.sum())
    assert total / inside >= 0.5
    assert good / total >= 0.85


def test_progress_and_cancel(voice: NeuralVoice) -> None:
    seen: list[float] = []
    voice.sing(_score(), progress=seen.append)
    assert seen == [0.5, 1.0]

    def cancel(_: float) -> None:
        raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        voice.sing(_score(), progress=cancel)


def test_a_stressed_syllable_is_sung_louder(voice: NeuralVoice) -> None:
    # "sing a song" twice, the same but for the stress of "a": primary (as a test, louder) or none.
    def take(stress_of_a: int) -> np.ndarray:
        spec = [(0.5, 1.0, 62, "sing", 1), (1.0, 1.5, 64, "a", stress_of_a), (1.5, 2.3, 62, "song", 1)]
        notes = [SungNote(a, b, p, s, word=s, stress=st, word_start=True) for a, b, p, s, st in spec]
        return voice.sing(VocalScore(notes, [[0, 1, 2]]))[0]

    plain, stressed = take(0), take(1)
    sr = NeuralVoice.sample_rate

    def rms(y: np.ndarray, a: float, b: float) -> float:
        return float(np.sqrt(np.mean(y[int(a * sr): int(b * sr)] ** 2)))

    gain_db = 20 * np.log10(rms(stressed, 1.1, 1.4) / rms(plain, 1.1, 1.4))
    assert 1.0 < gain_db < 2.0  # about 1.5 dB on the stressed vowel
    assert abs(20 * np.log10(rms(stressed, 0.6, 0.9) / rms(plain, 0.6, 0.9))) < 0.3  # "sing" unchanged
