"""Mixing and mastering: loudness/true-peak contract, shapes, presets, de-esser, file outputs."""

from __future__ import annotations

import subprocess

import numpy as np
import pyloudnorm as pyln
import pytest
import soundfile as sf

from tmik_make_vocal_mix import mixing as M

BG_SR = 44100
V_SR = 24000
DUR = 20.0


@pytest.fixture(scope="module")
def background() -> np.ndarray:
    """Stereo chords (decaying sines) plus short noise bursts, 20 s at 44.1 kHz."""
    rng = np.random.default_rng(0)
    t = np.arange(int(DUR * BG_SR)) / BG_SR
    bg = np.zeros((2, t.size), np.float32)
    for i, root in enumerate([48, 53, 55, 48, 57]):
        seg = (t >= i * 4) & (t < (i + 1) * 4)
        for k, iv in enumerate((0, 4, 7, 12)):
            f = 440 * 2 ** ((root + iv - 69) / 12)
            bg[k % 2, seg] += 0.1 * np.sin(2 * np.pi * f * t[seg]) * np.exp(-(t[seg] - i * 4) * 0.5)
    for b in np.arange(0.5, DUR, 0.5):
        s = int(b * BG_SR)
        bg[:, s: s + 2000] += 0.15 * rng.standard_normal((2, 2000)) * np.exp(-np.arange(2000) / 400)
    return bg


@pytest.fixture(scope="module")
def vocal() -> np.ndarray:
    """A harmonic 'voice' with vibrato, stepping notes, and gaps; 18 s at 24 kHz."""
    tv = np.arange(int(18 * V_SR)) / V_SR
    f0 = 220 * 2 ** ((np.floor(tv) % 5) * 2 / 12) * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * tv))
    ph = 2 * np.pi * np.cumsum(f0) / V_SR
    v = 0.3 * np.sin(ph) + 0.1 * np.sin(2 * ph) + 0.05 * np.sin(3 * ph)
    return (v * ((tv % 2) < 1.5)).astype(np.float32)


@pytest.fixture(scope="module")
def pop_mix(background, vocal) -> M.MixResult:
    return M.mix(background, BG_SR, vocal, V_SR, M.FX_PRESETS["pop_bright"])


def test_mix_meets_loudness_and_true_peak(pop_mix, background):
    s = pop_mix.stats
    assert abs(s["integrated_lufs"] + 14.0) <= 0.5
    assert s["true_peak_dbtp"] <= -1.0
    assert "warning" not in s
    # independent checks: pyloudnorm and a 4x scipy oversampling of our own
    assert abs(pyln.Meter(BG_SR).integrated_loudness(pop_mix.mix.T.astype(np.float64)) + 14.0) <= 0.5
    from scipy.signal import resample_poly

    assert 20 * np.log10(np.abs(resample_poly(pop_mix.mix, 4, 1, axis=-1)).max()) <= -0.9  # another interpolator: allow 0.1 dB
    assert s["clipped_samples"] == 0
    assert abs(s["vocal_to_background_db"] - s["vocal_offset_target_db"]) < 1.0


def test_shapes_and_rate(pop_mix, background):
    n = background.shape[1]
    assert pop_mix.sr == BG_SR
    assert pop_mix.mix.shape == background.shape and pop_mix.mix.dtype == np.float32
    assert pop_mix.vocal_fx.shape == background.shape
    assert pop_mix.instrumental.shape == background.shape
    assert pop_mix.vocal_dry.shape == (n,)
    assert np.allclose(pop_mix.vocal_fx[0], pop_mix.vocal_fx[1])  # centre-panned


def test_other_target(background, vocal):
    res = M.mix(background, BG_SR, vocal, V_SR, M.FX_PRESETS["ballad"], target_lufs=-16.0, vocal_offset_db=1.0)
    assert abs(res.stats["integrated_lufs"] + 16.0) <= 0.5
    assert res.stats["true_peak_dbtp"] <= -1.0
    assert res.stats["vocal_offset_target_db"] == 1.0


def test_mono_background(background, vocal):
    mono = background.mean(axis=0)
    res = M.mix(mono, BG_SR, vocal, V_SR, M.FX_PRESETS["low_warm"])
    assert res.mix.shape == (1, mono.size)
    assert abs(res.stats["integrated_lufs"] + 14.0) <= 0.5
    assert res.stats["true_peak_dbtp"] <= -1.0


def test_near_silent_vocal_warns(background, vocal):
    res = M.mix(background, BG_SR, vocal * 1e-5, V_SR, M.FX_PRESETS["choir"])
    assert "warning" in res.stats and "silent" in res.stats["warning"]
    assert abs(res.stats["integrated_lufs"] + 14.0) <= 0.5
    assert res.mix.shape == background.shape


def test_short_input_does_not_crash():
    bg = (0.1 * np.random.default_rng(1).standard_normal((2, 4000))).astype(np.float32)
    res = M.mix(bg, BG_SR, np.zeros(100, np.float32), V_SR, M.FX_PRESETS["pop_bright"])
    assert res.mix.shape == bg.shape
    assert "warning" in res.stats
    assert res.stats["true_peak_dbtp"] <= -1.0
    res = M.mix(np.zeros((2, 0), np.float32), BG_SR, np.zeros(0, np.float32), V_SR, M.FX_PRESETS["ballad"])
    assert res.mix.shape == (2, 0) and "warning" in res.stats


def test_presets_differ(vocal):
    assert len(M.FX_PRESETS) >= 5
    short = vocal[: 3 * V_SR]
    outs = {name: M.apply_vocal_chain(short, V_SR, fx) for name, fx in M.FX_PRESETS.items()}
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            x, y = outs[a] / np.abs(outs[a]).max(), outs[b] / np.abs(outs[b]).max()
            assert np.sqrt(np.mean((x - y) ** 2)) > 0.02, (a, b)
    params = {(fx.reverb_wet, fx.comp_ratio, fx.high_shelf_db) for fx in M.FX_PRESETS.values()}
    assert len(params) == len(M.FX_PRESETS)


def _band_energy(x: np.ndarray, sr: int, f: float, width: float = 200.0) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / sr)
    return float(spec[(freqs > f - width) & (freqs < f + width)].sum())


def test_deesser_reduces_sibilance():
    sr = BG_SR
    t = np.arange(sr) / sr
    env = ((t > 0.3) & (t < 0.5)).astype(np.float32)  # a 200 ms "s" burst
    x = (0.1 * np.sin(2 * np.pi * 1000 * t) + 0.4 * np.sin(2 * np.pi * 7000 * t) * env).astype(np.float32)
    y = M.deess(x, sr, amount=0.8)
    red_7k = _band_energy(y, sr, 7000) / _band_energy(x, sr, 7000)
    red_1k = _band_energy(y, sr, 1000) / _band_energy(x, sr, 1000)
    assert red_7k < 0.5 * red_1k
    assert red_1k > 0.9
    assert np.array_equal(M.deess(x, sr, 0.0), x)


def test_measure(pop_mix):
    m = M.measure(pop_mix.mix, BG_SR)
    assert set(m) >= {"integrated_lufs", "true_peak_dbtp", "sample_peak_dbfs", "clipped_samples"}
    assert m["sample_peak_dbfs"] <= m["true_peak_dbtp"] + 1e-6
    clipped = M.measure(np.full((2, 1000), 1.2, np.float32), BG_SR)
    assert clipped["clipped_samples"] == 2000 and clipped["integrated_lufs"] == float("-inf")


def test_write_outputs(pop_mix, tmp_path):
    paths = M.write_outputs(pop_mix, pop_mix.sr, tmp_path / "out")
    assert {p.name for p in paths.values()} == {"mix.wav", "mix.mp3", "vocal.wav", "vocal_fx.wav",
                                                 "instrumental.wav"}
    for key in ("mix", "vocal", "vocal_fx", "instrumental"):
        info = sf.info(str(paths[key]))
        assert info.subtype == "PCM_24" and info.samplerate == BG_SR
        assert info.frames == pop_mix.mix.shape[1]
    assert sf.info(str(paths["vocal"])).channels == 1
    assert sf.info(str(paths["mix"])).channels == 2
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,bit_rate", "-of",
                            "default=nw=1", str(paths["mix_mp3"])], capture_output=True, text=True, check=True)
    assert "codec_name=mp3" in probe.stdout and "bit_rate=320000" in probe.stdout
    assert not list((tmp_path / "out").glob(".*"))  # no temp files left behind
