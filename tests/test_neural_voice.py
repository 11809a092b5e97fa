"""The neural singing engine: it sings the written pitches, on time, with silent rests, phrase by phrase."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tmik_make_vocal_mix.engines.neural import NeuralVoice, bpm_at, build_controllable_model, split_syllables
from tmik_make_vocal_mix.score import SungNote, TempoInfo, VocalScore, phrases_of

librosa = pytest.importorskip("librosa")
SR = NeuralVoice.sample_rate


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


def _rms(y: np.ndarray, a: float, b: float) -> float:
    return float(np.sqrt(np.mean(y[int(a * SR): int(b * SR)] ** 2)))


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
    assert _rms(y, 0.6, 2.0) > 0.01
    assert _rms(y, 2.16, 2.3) < 1e-4  # the rest after a phrase, before the next phrase's breath
    assert _rms(y, 0.0, 0.05) < 1e-4 and _rms(y, 5.35, 5.7) < 1e-4


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


def test_high_notes_keep_their_pitch(voice: NeuralVoice) -> None:
    # B4-C5 used to break into subharmonics (the decoder's free-phase branch); now they are sung in tune.
    notes = [SungNote(0.5, 1.5, 71, "far", word="far", stress=1, word_start=True),
             SungNote(1.5, 2.7, 72, "way", word="way", stress=1, word_start=True)]
    y, sr = voice.sing(VocalScore(notes, [[0, 1]]))
    f0, voiced, _ = librosa.pyin(y, fmin=80, fmax=1000, sr=sr, frame_length=2048, hop_length=240)
    t = librosa.times_like(f0, sr=sr, hop_length=240)
    for n in notes:
        m = (t >= n.start + 0.08) & (t < n.end - 0.08)
        cents = 1200 * np.log2(f0[m & voiced] / librosa.midi_to_hz(n.pitch))
        assert (m & voiced).sum() >= 0.8 * m.sum()
        assert np.mean(np.abs(cents) < 50) >= 0.9


def test_progress_and_cancel(voice: NeuralVoice) -> None:
    seen: list[float] = []
    voice.sing(_score(), progress=seen.append)
    assert seen == [0.5, 1.0]

    def cancel(_: float) -> None:
        raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        voice.sing(_score(), progress=cancel)


def test_phrases_add_up_to_the_song(voice: NeuralVoice) -> None:
    score = _score()
    seeds = [3, 8]
    y, _ = voice.sing(score, style="ballad", phrase_seeds=seeds)
    total = np.zeros_like(y)
    for k in range(len(score.phrases)):
        start, audio = voice.sing_phrase(score, k, seed=seeds[k], style="ballad")
        assert start >= 0 and start + len(audio) <= len(y)
        total[start: start + len(audio)] += audio
    np.testing.assert_allclose(total, y, atol=1e-6)


def test_a_new_seed_changes_only_its_phrase(voice: NeuralVoice) -> None:
    score = _score()
    a, _ = voice.sing(score, phrase_seeds=[1, 2])
    b, _ = voice.sing(score, phrase_seeds=[1, 5])
    start, audio = voice.sing_phrase(score, 1, seed=5)
    outside = np.ones(len(a), bool)
    outside[start: start + len(audio)] = False
    assert np.array_equal(a[outside], b[outside])
    assert np.abs(a - b)[~outside].max() > 1e-3  # the re-sung phrase is another take
    only, _ = voice.sing(score, phrase_seeds=[1, 5], only={1})
    np.testing.assert_allclose(only, b - voice.sing(score, phrase_seeds=[1, 5], only={0})[0], atol=1e-6)
    with pytest.raises(ValueError, match="phrase seeds"):
        voice.sing(score, phrase_seeds=[1])


def test_a_stressed_syllable_is_sung_louder(voice: NeuralVoice) -> None:
    # "sing a song" twice, the same but for the stress of "a": primary (as a test, louder) or none.
    def take(stress_of_a: int) -> np.ndarray:
        spec = [(0.5, 1.0, 62, "sing", 1), (1.0, 1.5, 62, "a", stress_of_a), (1.5, 2.3, 62, "song", 1)]
        notes = [SungNote(a, b, p, s, word=s, stress=st, word_start=True) for a, b, p, s, st in spec]
        return voice.sing(VocalScore(notes, [[0, 1, 2]]))[0]

    plain, stressed = take(0), take(1)
    gain_db = 20 * np.log10(_rms(stressed, 1.1, 1.4) / _rms(plain, 1.1, 1.4))
    assert 1.0 < gain_db < 2.0  # about 1.5 dB on the stressed vowel
    assert abs(20 * np.log10(_rms(stressed, 0.6, 0.9) / _rms(plain, 0.6, 0.9))) < 0.3  # "sing" unchanged


def test_syllables_of_one_word_are_legato(voice: NeuralVoice) -> None:
    # "so-fa" with a 0.15 s rest inside the phrase: one word is sung through it, two words are not.
    def take(one_word: bool) -> np.ndarray:
        notes = [SungNote(0.5, 0.9, 62, "so", word="sofa" if one_word else "so", stress=1, word_start=True),
                 SungNote(1.05, 1.6, 60, "fa", word="sofa" if one_word else "fa", stress=0, word_start=not one_word)]
        return voice.sing(VocalScore(notes, [[0, 1]]))[0]

    assert _rms(take(True), 0.95, 0.99) > 30 * _rms(take(False), 0.95, 0.99)


def test_vowels_land_on_the_beat(voice: NeuralVoice) -> None:
    # consonants are sung before the note, so voicing starts on (within a pyin frame of) the note's start
    notes = [SungNote(0.6, 1.2, 62, "sing", word="sing", stress=1, word_start=True),
             SungNote(1.4, 2.0, 62, "sing", word="sing", stress=1, word_start=True)]
    y, sr = voice.sing(VocalScore(notes, [[0], [1]]))
    f0, voiced, _ = librosa.pyin(y, fmin=150, fmax=500, sr=sr, frame_length=1024, hop_length=120)
    t = librosa.times_like(f0, sr=sr, hop_length=120)
    for n in notes:
        first = t[(t > n.start - 0.2) & voiced][0]
        assert abs(first - n.start) < 0.05
        hiss = y[int((n.start - 0.07) * sr): int((n.start - 0.01) * sr)]
        assert np.sqrt(np.mean(hiss ** 2)) > 1e-3  # the "s" is before the note


def test_bpm_at_follows_the_tempo_map() -> None:
    tempo = TempoInfo(480, [(0, 120.0), (1920, 60.0)])  # four beats at 120 (2 s), then 60
    assert bpm_at(tempo, 1.0) == 120.0
    assert bpm_at(tempo, 2.5) == 60.0
    assert bpm_at(TempoInfo(), 100.0) == 120.0


def test_no_range_warning_inside_the_neural_styles_ranges(voice: NeuralVoice, caplog: pytest.LogCaptureFixture) -> None:
    from tmik_make_vocal_mix.render import STRETCH
    from tmik_make_vocal_mix.styles import STYLES

    for style in (s for s in STYLES.values() if s.engine == "neural"):
        notes = [SungNote(0.3, 0.6, style.low - STRETCH, "la"), SungNote(0.6, 0.9, style.high + STRETCH, "la")]
        with caplog.at_level("WARNING", logger="tmik_make_vocal_mix.engines.neural"):
            voice.sing(VocalScore(notes, [[0, 1]]), style=style.name)
    assert not [r for r in caplog.records if "keeps pitch" in r.getMessage()]
    with caplog.at_level("WARNING", logger="tmik_make_vocal_mix.engines.neural"):
        voice.sing(VocalScore([SungNote(0.3, 0.6, 84, "la")], [[0]]))
    assert any("keeps pitch" in r.getMessage() for r in caplog.records)  # C6 is out of its range
