"""Dynamics of the sung voice: phrase arch, accents, soft onsets, breaths, continuous held vowels."""

from __future__ import annotations

import numpy as np
import pytest

from tmik_make_vocal_mix.engines import dynamics as dy
from tmik_make_vocal_mix.engines.neural import UNIT, VOWEL_CHUNK, NeuralVoice, build_controllable_model
from tmik_make_vocal_mix.score import SungNote, VocalScore

SR = NeuralVoice.sample_rate


@pytest.fixture(scope="module")
def voice(tmp_path_factory: pytest.TempPathFactory) -> NeuralVoice:
    return NeuralVoice(build_controllable_model(tmp_path_factory.mktemp("tmik_cache")))


def _rms(y: np.ndarray, a: float, b: float) -> float:
    return float(np.sqrt(np.mean(y[int(a * SR): int(b * SR)].astype(np.float64) ** 2)))


def _syllables(pitches: list[int], stress: list[int | None] | None = None) -> list[dy.SungSyllable]:
    stress = stress or [None] * len(pitches)
    return [dy.SungSyllable(0.1 + 0.5 * k, 0.15 + 0.5 * k, 0.55 + 0.5 * k, 0.6 + 0.5 * k, p, s)
            for k, (p, s) in enumerate(zip(pitches, stress, strict=True))]


# -- the gain curve, as plain functions ------------------------------------------------------------------
def test_phrase_arch_rises_to_its_peak_and_softens_at_the_end() -> None:
    syls = _syllables([60, 62, 64, 67, 64, 62])
    t = np.linspace(0.0, 3.2, 3201)
    db = dy.arch_db(t, syls, dy.get_dynamics("ballad"))
    peak = t[np.argmax(db)]
    assert abs(peak - syls[3].vowel) < 0.02  # the highest note
    assert db[np.searchsorted(t, syls[0].vowel)] < db.max() - 2.0
    assert db[np.searchsorted(t, syls[-1].end)] < db.max() - 3.0


def test_gain_is_smooth_and_accents_stressed_and_high_notes() -> None:
    dyn = dy.get_dynamics("pop_bright")
    syls = _syllables([60, 60, 60, 72], [0, 1, 0, 0])
    n = int(2.6 * SR)
    g = dy.phrase_gain(n, SR, syls, [0], dyn)
    assert np.max(np.abs(np.diff(20 * np.log10(g)))) < 0.01  # dB per sample: no steps, no clicks
    flat = dy.phrase_gain(n, SR, _syllables([60, 60, 60, 72], [0, 0, 0, 0]), [0], dyn)
    mid = lambda s: int((s.vowel + s.vowel_end) / 2 * SR)
    assert 20 * np.log10(g[mid(syls[1])] / flat[mid(syls[1])]) == pytest.approx(dyn.stress_db[1], abs=0.05)
    assert 20 * np.log10(g[mid(syls[0])] / flat[mid(syls[0])]) == pytest.approx(0.0, abs=0.05)
    level = dy.accent_db(np.array([(syls[3].vowel + syls[3].vowel_end) / 2]), syls, dyn)[0]
    assert level > 1.0  # the high note is accented


def test_a_vowel_after_a_rest_fades_in_softly() -> None:
    dyn = dy.get_dynamics("ballad")
    syl = dy.SungSyllable(0.2, 0.2, 0.9, 1.0, 62, None, has_onset=False)
    t = np.array([0.2, 0.2 + dyn.onset_s / 2, 0.2 + dyn.onset_s + 0.02])
    g = dy.onset_gain(t, [syl], [0], dyn)
    assert g[0] < 0.5 < g[2] and g[0] < g[1] < g[2] and g[2] == pytest.approx(1.0)
    consonant = dy.SungSyllable(0.15, 0.2, 0.9, 1.0, 62, None, has_onset=True)
    assert np.all(dy.onset_gain(t, [consonant], [0], dyn) == 1.0)


def test_breath_needs_room() -> None:
    dyn = dy.get_dynamics("pop_bright")
    assert dy.breath_length(1.0, 1.15, dyn) == 0.0  # a 0.15 s rest: no breath
    assert 0.1 < dy.breath_length(1.0, 1.3, dyn) < 0.3
    assert dy.breath_length(1.0, 3.0, dyn) == dyn.breath_max_s


def test_breath_sound_is_air_noise() -> None:
    flat = np.ones(601)
    y = dy.breath_sound(int(0.4 * SR), SR, dy.breath_colour(flat, SR), np.random.default_rng(0))
    f = np.fft.rfftfreq(len(y), 1 / SR)
    power = np.abs(np.fft.rfft(y)) ** 2
    assert power[f < 400].sum() < 0.01 * power.sum()  # high-passed
    env = np.sqrt(np.convolve(y ** 2, np.ones(480) / 480, mode="same"))
    top = int(np.argmax(env))
    assert 0.5 * len(y) < top < 0.95 * len(y)  # rises slowly, stops quickly
    assert env[: len(y) // 10].max() < 0.3 * env[top] and env[-40:].max() < 0.3 * env[top]


# -- in the voice -------------------------------------------------------------------------------------------
def _two_phrases(rest: float) -> VocalScore:
    a = [SungNote(0.3, 0.8, 62, "oh", word="oh", stress=1, word_start=True),
         SungNote(0.8, 1.5, 64, "hi", word="hi", stress=1, word_start=True)]
    s = 1.5 + rest
    b = [SungNote(s, s + 0.5, 62, "hold", word="hold", stress=1, word_start=True),
         SungNote(s + 0.5, s + 1.2, 60, "on", word="on", stress=0, word_start=True)]
    return VocalScore(a + b, [[0, 1], [2, 3]])


def test_a_breath_precedes_a_phrase_after_a_rest(voice: NeuralVoice) -> None:
    score = _two_phrases(rest=1.0)
    y, _ = voice.sing(score, style="ballad")
    breath = y[int(2.05 * SR): int(2.42 * SR)]  # "hold" starts at 2.5, its "h" about 50 ms before
    sung = _rms(y, 2.55, 3.0)
    level_db = 20 * np.log10(np.sqrt(np.mean(breath ** 2)) / sung)
    assert -35 < level_db < -15
    assert _rms(y, 1.6, 1.65) < 1e-5  # silence between the first phrase's end and the breath
    # noise, not a tone: no pitch periodicity, energy above 1 kHz
    x = breath - breath.mean()
    ac = np.correlate(x, x, "full")[len(x) - 1:]
    assert ac[int(0.002 * SR): int(0.012 * SR)].max() < 0.3 * ac[0]
    f = np.fft.rfftfreq(len(x), 1 / SR)
    power = np.abs(np.fft.rfft(x)) ** 2
    assert power[(f > 1000) & (f < 6000)].sum() > 0.5 * power.sum()
    # a quieter style breathes quieter, relative to its singing
    c, _ = voice.sing(score, style="choir")
    assert 20 * np.log10(_rms(c, 2.05, 2.42) / _rms(c, 2.55, 3.0)) < level_db - 3


def test_no_breath_without_room(voice: NeuralVoice) -> None:
    y, _ = voice.sing(_two_phrases(rest=0.15), style="ballad")
    # the gap between "hi" (ends 1.5, its gate closes by 1.55) and "hold"'s "h" (about 1.6): nothing in it
    assert _rms(y, 1.555, 1.585) < 1e-5


def test_ballad_vowel_onsets_are_breathy(voice: NeuralVoice) -> None:
    # "oh" opens a phrase after a 0.15 s rest (no room for a breath): ballad leads into it with air, pop does not
    notes = [SungNote(0.3, 0.8, 62, "so", word="so", stress=1, word_start=True),
             SungNote(0.95, 1.6, 64, "oh", word="oh", stress=1, word_start=True)]
    score = VocalScore(notes, [[0], [1]])
    ballad, _ = voice.sing(score, style="ballad")
    pop, _ = voice.sing(score, style="pop_bright")
    air = _rms(ballad, 0.89, 0.935)
    assert air > 10 * _rms(pop, 0.89, 0.935)
    assert -40 < 20 * np.log10(air / _rms(ballad, 1.05, 1.5)) < -12  # air, under the singing


def test_the_phrase_is_softer_at_its_end_than_at_its_peak(voice: NeuralVoice) -> None:
    notes = [SungNote(0.4 + 0.45 * k, 0.85 + 0.45 * k, p, "") for k, p in enumerate([60, 62, 65, 62, 60, 60])]
    y, _ = voice.sing(VocalScore(notes, [list(range(6))]), style="ballad")
    levels = [dy.loudness_db(y[int((n.start + 0.1) * SR): int((n.end - 0.1) * SR)], SR) for n in notes]
    assert levels[2] > levels[-1] + 2.0  # the peak (highest note) over the last, same vowel
    assert levels[2] > levels[0] + 1.0


# -- held vowels ----------------------------------------------------------------------------------------
def chunk_dips(y: np.ndarray, a: float, b: float, period: float) -> tuple[float, float]:
    """Envelope (dB) folded at ``period``: its peak-to-peak at that period and the most at nearby periods."""
    hop = round(period * SR / 20)
    seg = y[int(a * SR): int(b * SR)].astype(np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(seg, 4 * hop)[::hop]
    env = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
    env = (env - np.convolve(env, np.ones(41) / 41, mode="same"))[20:-20]

    def fold(steps: int) -> float:
        return float(np.ptp([env[k::steps].mean() for k in range(steps)]))

    return fold(20), max(fold(s) for s in (16, 17, 23, 24))


def test_a_held_vowel_has_no_dips_at_the_token_period(voice: NeuralVoice) -> None:
    period = VOWEL_CHUNK * UNIT  # a held vowel is fed to the model as tokens of this length
    for word, pitch in (("ah", 60), ("sea", 64)):
        y, _ = voice.sing(VocalScore([SungNote(0.5, 2.7, pitch, word, word=word, stress=1, word_start=True)], [[0]]))
        at, near = chunk_dips(y, 0.8, 2.5, period)
        assert at < 0.6 and at < 2.0 * near, word
        # the measure sees a dip of 2 dB for 20 ms at each token boundary (so it would see the real thing)
        t = np.arange(len(y)) / SR
        phase = ((t - 0.5) % period) / period
        dip = 1 - (1 - 10 ** (-2 / 20)) * np.exp(-0.5 * (np.minimum(phase, 1 - phase) * period / 0.008) ** 2)
        assert chunk_dips(y * dip, 0.8, 2.5, period)[0] > 1.0
