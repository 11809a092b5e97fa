"""The WORLD engine re-sings a take on new notes: pitch accuracy, voice colour, doubling; and the styles."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from tmik_make_vocal_mix.engines.world import double, pitch_curve, resing
from tmik_make_vocal_mix.score import SungNote
from tmik_make_vocal_mix.styles import STYLES, StyleError, get_style, list_styles

SR = 24000
NOTES = [SungNote(0.2, 1.4, 60), SungNote(1.4, 2.8, 64), SungNote(3.2, 5.8, 48)]


def take(seconds: float = 6.0) -> np.ndarray:
    """A buzzy voiced take at 220 Hz with a gap (stands in for a sung line)."""
    t = np.arange(int(SR * seconds)) / SR
    phase = 2 * np.pi * np.cumsum(220 * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 20)) * 0.1
    x[int(2.9 * SR):int(3.1 * SR)] = 0
    return x.astype(np.float32)


def accuracy(y: np.ndarray, notes) -> float:
    f0, voiced, _ = librosa.pyin(y, fmin=60, fmax=800, sr=SR, frame_length=2048, hop_length=240)
    times = librosa.times_like(f0, sr=SR, hop_length=240)
    ok = total = 0
    for n in notes:
        sel = (times > n.start + 0.1) & (times < n.end - 0.1) & voiced
        cents = 1200 * np.log2(f0[sel] / (440 * 2 ** ((n.pitch - 69) / 12)))
        ok += int((np.abs(cents) < 50).sum())
        total += int(sel.sum())
    return ok / max(total, 1)


def test_resing_hits_the_notes_at_any_pitch() -> None:
    for style in ("pop_bright", "ballad"):  # ballad: the widest vibrato
        y = resing(take(), SR, NOTES, style=style, tempo_bpm=90.0, seed=2)
        assert len(y) == len(take())
        assert accuracy(y, NOTES) >= 0.95


def test_rests_stay_silent_and_silence_gives_silence() -> None:
    y = resing(take(), SR, NOTES)
    gap = y[int(2.95 * SR):int(3.05 * SR)]
    assert np.sqrt(np.mean(gap ** 2)) < 0.01
    assert not resing(np.zeros(SR, dtype=np.float32), SR, NOTES).any()


def test_formant_shift_darkens_and_doubles_thicken() -> None:
    x = take()
    plain = resing(x, SR, NOTES)
    dark = resing(x, SR, NOTES, formant_shift=0.8)

    def centroid(y):
        return float(np.mean(librosa.feature.spectral_centroid(y=y, sr=SR)))

    assert centroid(dark) < 0.92 * centroid(plain)
    double = resing(x, SR, NOTES, doubles=3)
    assert not np.allclose(double, plain)
    assert accuracy(double, NOTES) >= 0.8  # detuned copies stay within a few cents


def test_doubling_a_take_without_resinging_keeps_pitch_length_and_rests() -> None:
    x = resing(take(), SR, NOTES)
    y = double(x, SR, NOTES, doubles=3, seed=1)
    assert y.shape == x.shape and y.dtype == np.float32
    assert not np.allclose(y, x)
    assert accuracy(y, NOTES) >= 0.8
    gap = y[int(2.95 * SR):int(3.05 * SR)]
    assert np.sqrt(np.mean(gap ** 2)) < 0.01
    assert np.array_equal(double(x, SR, NOTES, doubles=0), x)
    assert np.array_equal(double(y, SR, NOTES, doubles=3, seed=1), double(y, SR, NOTES, doubles=3, seed=1))


def test_pitch_curve_glides_and_follows_the_style() -> None:
    t = np.arange(0, 3.0, 0.005)
    notes = [SungNote(0.0, 1.0, 60), SungNote(1.0, 2.5, 62)]
    f = pitch_curve(notes, t, style="ballad", seed=1)
    assert f[t >= 2.5].max() == 0.0
    start = f[(t >= 0.99) & (t < 1.01)]
    assert librosa.midi_to_hz(60) < start[0] < librosa.midi_to_hz(62)
    held = 1200 * np.log2(f[(t > 1.3) & (t < 2.4)] / librosa.midi_to_hz(62))
    assert abs(np.mean(held)) < 10 and np.abs(held).max() < 50
    # the old formula is still there for comparison: its fixed 30-cent vibrato from 0.25 s into every note
    old = 1200 * np.log2(pitch_curve(notes, t, style="formula")[(t > 1.8) & (t < 2.4)] / librosa.midi_to_hz(62))
    assert 20 < np.abs(old).max() < 45
    # same seed, same curve; another seed, another performance
    assert np.array_equal(pitch_curve(notes, t, seed=1), pitch_curve(notes, t, seed=1))
    assert not np.array_equal(pitch_curve(notes, t, seed=1), pitch_curve(notes, t, seed=2))


def test_pitch_curve_plans_each_phrase_from_its_own_seed() -> None:
    """Phrase k is planned with rng([phrase_seeds[k], k]): changing one phrase's seed changes only that phrase."""
    t = np.arange(0, 6.0, 0.005)
    phrases = [[0, 1], [2]]
    a = pitch_curve(NOTES, t, style="pop_bright", phrases=phrases, phrase_seeds=[4, 5])
    b = pitch_curve(NOTES, t, style="pop_bright", phrases=phrases, phrase_seeds=[4, 6])
    first = t < 2.8
    assert np.array_equal(a[first], b[first]) and not np.array_equal(a[~first], b[~first])
    assert np.array_equal(a, pitch_curve(NOTES, t, style="pop_bright", phrases=phrases, phrase_seeds=[4, 5]))
    # empty phrases keep the numbering (phrase k is score.phrases[k]); tempo may be given per phrase
    c = pitch_curve(NOTES, t, style="pop_bright", phrases=[[], [0, 1], [2]], phrase_seeds=[9, 4, 5],
                    tempo_bpm=[100.0, 100.0, 60.0])
    assert not np.array_equal(c, a)
    assert np.array_equal(c, pitch_curve(NOTES, t, style="pop_bright", phrases=[[], [0, 1], [2]],
                                         phrase_seeds=[1, 4, 5], tempo_bpm=[100.0, 100.0, 60.0]))
    # without phrases the notes are split at rests of 0.3 s, every phrase seeded from ``seed``
    assert np.array_equal(pitch_curve(NOTES, t, seed=4), pitch_curve(NOTES, t, phrases=phrases, phrase_seeds=[4, 4]))


def test_styles_are_five_distinct_presets() -> None:
    assert len(STYLES) >= 5
    listed = list_styles()
    assert {s["name"] for s in listed} == set(STYLES)
    assert all(s["description"] and s["vocal_range"][0] < s["vocal_range"][1] for s in listed)
    assert len({(s.engine, s.formant_shift, s.doubles, s.fx, s.low) for s in STYLES.values()}) == len(STYLES)
    assert get_style(None).name == "pop_bright"
    with pytest.raises(StyleError, match="choose one of"):
        get_style("opera")


def test_worker_processes_sing_what_the_caller_would(monkeypatch) -> None:
    """The segments re-sung in the worker pool are the ones an inline run gives, bit for bit."""
    from tmik_make_vocal_mix.engines import world

    x = take()
    pooled = resing(x, SR, NOTES, formant_shift=0.9, breathiness=0.3, doubles=1, seed=3)
    monkeypatch.setattr(world, "_get_pool", lambda: None)
    inline = resing(x, SR, NOTES, formant_shift=0.9, breathiness=0.3, doubles=1, seed=3)
    assert np.array_equal(pooled, inline)


def test_coarse_aperiodicity_follows_d4c_on_every_frame() -> None:
    """Aperiodicity measured every few frames (and at voicing edges) stays close to D4C's on all frames."""
    from tmik_make_vocal_mix.engines import world

    pw = world.load_pyworld()
    x = take().astype(np.float64)
    f0, t = pw.dio(x, SR, frame_period=world.FRAME_MS)
    f0 = pw.stonemask(x, f0, t, SR)
    full = pw.d4c(x, f0, t, SR, fft_size=512)
    coarse = world._aperiodicity(pw, x, f0, t, SR, 512)
    assert coarse.shape == full.shape
    voiced = f0 > 0
    assert np.mean(np.abs(coarse[voiced] - full[voiced])) < 0.05
