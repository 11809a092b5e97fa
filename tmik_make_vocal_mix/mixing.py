"""Mixing and mastering: the vocal effects chain, vocal/background balance, loudness and true peak.

Plain functions on numpy arrays. Audio is ``float32``; multichannel audio is shaped
``(channels, n)``; a vocal is mono ``(n,)``. Only :func:`write_outputs` touches files.

The pipeline of :func:`mix`:

1. resample the dry vocal to the background's rate (soxr);
2. run :func:`apply_vocal_chain` (high-pass, EQ, de-esser, compressor, delay, reverb; pedalboard);
3. balance: K-weighted loudness of vocal and background measured only over the frames where the
   vocal sounds; the vocal is set ``vocal_offset_db`` above (or below) the background there;
4. master: one gain to the integrated-loudness target (ITU-R BS.1770 / EBU R128), a pedalboard
   ``Compressor`` (20:1) then a look-ahead true-peak gain stage measured with 4x oversampling; iterated until
   the loudness is within tolerance and the true peak is at or below the ceiling.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pedalboard as pb
import soundfile as sf
import soxr
from pyloudnorm.iirfilter import IIRfilter
from scipy import signal
from scipy.ndimage import minimum_filter1d, uniform_filter1d

logger = logging.getLogger(__name__)

STAGE_LEVEL_DB = -18.0  # the vocal chain works on a vocal whose loud frames sit at this RMS (dBFS)
SILENCE_PEAK_DB = -60.0  # a dry vocal whose peak is below this is treated as silent
ABS_GATE_LUFS = -70.0  # BS.1770 absolute gate
REL_GATE_LU = -10.0  # BS.1770 relative gate
MIN_MEASURABLE_S = 0.4  # one BS.1770 gating block
LOUDNESS_TOLERANCE_LU = 0.1  # the mastering loop aims well inside the 0.5 LU contract
TP_OVERSAMPLE = 4


# --------------------------------------------------------------------------------------------
# effects settings


@dataclass(frozen=True)
class VocalFx:
    """Settings of the vocal effects chain (see :func:`apply_vocal_chain`).

    Parameters
    ----------
    name : str
        Preset name (informational).
    highpass_hz : float
        Corner of the high-pass filter removing rumble and plosive thumps.
    low_shelf_hz, low_shelf_db : float
        Low-shelf corner and gain (body/warmth; negative thins the voice).
    peak_hz, peak_db, peak_q : float
        One bell EQ band (typically a mud cut around 250-500 Hz).
    presence_hz, presence_db, presence_q : float
        The presence bell (intelligibility, 2.5-5 kHz).
    high_shelf_hz, high_shelf_db : float
        High-shelf "air" band.
    deess_amount : float
        0 (off) to 1 (heavy). A split-band de-esser: the ``deess_low_hz``-``deess_high_hz`` band is
        split off with zero-phase filters, compressed, and added back to the rest.
    deess_low_hz, deess_high_hz : float
        The sibilance band (default 5-9 kHz).
    comp_threshold_db, comp_ratio, comp_attack_ms, comp_release_ms : float
        Vocal compressor, threshold relative to full scale of the gain-staged vocal (whose loud
        frames sit at ``STAGE_LEVEL_DB`` RMS).
    makeup_db : float
        Gain after the compressor (the final level is set by :func:`mix` anyway).
    delay_seconds, delay_feedback, delay_mix : float
        Echo; ``delay_mix`` 0 disables it.
    reverb_room_size, reverb_damping, reverb_wet, reverb_width : float
        Reverb; ``reverb_wet`` 0 disables it. The dry level is ``1 - reverb_wet / 2``.
    vocal_offset_db : float
        The style's default vocal-over-background loudness in the sung passages (used by
        :func:`mix` when its ``vocal_offset_db`` is None).
    """

    name: str = "custom"
    highpass_hz: float = 90.0
    low_shelf_hz: float = 200.0
    low_shelf_db: float = 0.0
    peak_hz: float = 350.0
    peak_db: float = -2.0
    peak_q: float = 1.0
    presence_hz: float = 3500.0
    presence_db: float = 2.0
    presence_q: float = 0.9
    high_shelf_hz: float = 10000.0
    high_shelf_db: float = 2.0
    deess_amount: float = 0.4
    deess_low_hz: float = 5000.0
    deess_high_hz: float = 9000.0
    comp_threshold_db: float = -24.0
    comp_ratio: float = 3.0
    comp_attack_ms: float = 8.0
    comp_release_ms: float = 120.0
    makeup_db: float = 3.0
    delay_seconds: float = 0.0
    delay_feedback: float = 0.0
    delay_mix: float = 0.0
    reverb_room_size: float = 0.35
    reverb_damping: float = 0.5
    reverb_wet: float = 0.15
    reverb_width: float = 1.0
    vocal_offset_db: float = 2.0


FX_PRESETS: dict[str, VocalFx] = {
    # bright, upfront, dense: strong presence and air, firm compression, short slap, small room
    "pop_bright": VocalFx(
        name="pop_bright", highpass_hz=110.0, low_shelf_db=-1.5, peak_hz=300.0, peak_db=-3.0,
        presence_hz=3800.0, presence_db=4.0, high_shelf_hz=9000.0, high_shelf_db=4.5, deess_amount=0.6,
        comp_threshold_db=-26.0, comp_ratio=4.0, comp_attack_ms=5.0, comp_release_ms=80.0, makeup_db=4.0,
        delay_seconds=0.11, delay_feedback=0.15, delay_mix=0.08, reverb_room_size=0.3, reverb_wet=0.12,
        vocal_offset_db=2.5,
    ),
    # intimate, airy: gentle compression, lifted air, little low end, soft plate-like space
    "soft_breathy": VocalFx(
        name="soft_breathy", highpass_hz=120.0, low_shelf_db=-2.5, peak_hz=450.0, peak_db=-1.5,
        presence_hz=2800.0, presence_db=1.5, high_shelf_hz=11000.0, high_shelf_db=5.0, deess_amount=0.75,
        comp_threshold_db=-22.0, comp_ratio=2.0, comp_attack_ms=15.0, comp_release_ms=200.0, makeup_db=2.0,
        reverb_room_size=0.5, reverb_damping=0.35, reverb_wet=0.2, vocal_offset_db=1.5,
    ),
    # deep voices: keep the chest, tame the top, medium room
    "low_warm": VocalFx(
        name="low_warm", highpass_hz=60.0, low_shelf_hz=180.0, low_shelf_db=2.5, peak_hz=500.0, peak_db=-1.0,
        presence_hz=2500.0, presence_db=1.0, high_shelf_hz=8000.0, high_shelf_db=-2.0, deess_amount=0.3,
        comp_threshold_db=-22.0, comp_ratio=3.0, comp_attack_ms=12.0, comp_release_ms=150.0, makeup_db=3.0,
        reverb_room_size=0.45, reverb_damping=0.7, reverb_wet=0.16, vocal_offset_db=2.0,
    ),
    # ensemble: big hall, light compression, vocal sits into the track
    "choir": VocalFx(
        name="choir", highpass_hz=100.0, low_shelf_db=-1.0, peak_hz=400.0, peak_db=-2.5, presence_hz=3000.0,
        presence_db=1.0, high_shelf_hz=10000.0, high_shelf_db=1.5, deess_amount=0.5, comp_threshold_db=-20.0,
        comp_ratio=1.8, comp_attack_ms=20.0, comp_release_ms=250.0, makeup_db=1.5, reverb_room_size=0.85,
        reverb_damping=0.4, reverb_wet=0.35, vocal_offset_db=0.5,
    ),
    # slow songs: warm-present, long echo and long reverb, vocal clearly on top
    "ballad": VocalFx(
        name="ballad", highpass_hz=80.0, low_shelf_db=1.0, peak_hz=320.0, peak_db=-2.0, presence_hz=3200.0,
        presence_db=2.5, high_shelf_hz=12000.0, high_shelf_db=2.5, deess_amount=0.5, comp_threshold_db=-24.0,
        comp_ratio=3.0, comp_attack_ms=10.0, comp_release_ms=180.0, makeup_db=3.0, delay_seconds=0.375,
        delay_feedback=0.3, delay_mix=0.12, reverb_room_size=0.7, reverb_damping=0.5, reverb_wet=0.25,
        vocal_offset_db=3.0,
    ),
}


# --------------------------------------------------------------------------------------------
# measurement


def _as_2d(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        return audio[None, :]
    if audio.ndim != 2:
        raise ValueError(f"audio must be (n,) or (channels, n), got shape {audio.shape}")
    return audio


def _db(x: float) -> float:
    return float(20.0 * np.log10(x)) if x > 0 else float("-inf")


_K_SOS: dict[int, np.ndarray] = {}


def _k_weight(audio: np.ndarray, sr: int) -> np.ndarray:
    """K-weighting filter of ITU-R BS.1770 (pyloudnorm's two stages as one float32 SOS), per channel."""
    sos = _K_SOS.get(sr)
    if sos is None:
        stages = [IIRfilter(g, q, fc, sr, kind) for g, q, fc, kind in
                  ((4.0, 1 / np.sqrt(2.0), 1500.0, "high_shelf"), (0.0, 0.5, 38.0, "high_pass"))]
        sos = np.array([np.concatenate([f.b / f.a[0], f.a / f.a[0]]) for f in stages])
        _K_SOS[sr] = sos
    return signal.sosfilt(sos.astype(np.float32), np.asarray(audio, dtype=np.float32), axis=-1)


def _block_power(kw: np.ndarray, sr: int, block_s: float = 0.4, step_s: float = 0.1) -> np.ndarray:
    """Mean square of each 400 ms block (75 % overlap), summed over channels: shape (blocks,)."""
    block, step = round(block_s * sr), round(step_s * sr)
    n = kw.shape[-1]
    if n < block:
        return np.zeros(0)
    if block == 4 * step:  # sum 100 ms segments, then 4 consecutive segments per block
        segs = n // step
        v = kw[:, : segs * step].reshape(kw.shape[0], segs, step)
        seg = np.einsum("csk,csk->s", v, v, dtype=np.float64)  # no float64 copy of the signal
        power = (seg[:-3] + seg[1:-2] + seg[2:-1] + seg[3:]) / block
        return power[: (n - block) // step + 1]
    sq = np.square(kw, dtype=np.float64)
    csum = np.concatenate([np.zeros((kw.shape[0], 1)), np.cumsum(sq, axis=-1)], axis=-1)
    starts = np.arange(0, n - block + 1, step)
    return ((csum[:, starts + block] - csum[:, starts]) / block).sum(axis=0)


def _power_to_lufs(power: float | np.ndarray) -> Any:
    with np.errstate(divide="ignore"):
        return -0.691 + 10.0 * np.log10(power)


def _gated_lufs(power: np.ndarray) -> float:
    """Integrated loudness of block powers with the absolute and relative BS.1770 gates."""
    if power.size == 0:
        return float("-inf")
    lufs = _power_to_lufs(power)
    keep = lufs > ABS_GATE_LUFS
    if not keep.any():
        return float("-inf")
    rel = _power_to_lufs(power[keep].mean()) + REL_GATE_LU
    keep &= lufs > rel
    return float(_power_to_lufs(power[keep].mean()))


def integrated_lufs(audio: np.ndarray, sr: int) -> float:
    """Integrated loudness (ITU-R BS.1770-4, EBU R128 gating) in LUFS.

    Parameters
    ----------
    audio : np.ndarray, shape (channels, n) or (n,)
    sr : int

    Returns
    -------
    float
        LUFS; ``-inf`` when the signal is shorter than one 400 ms block or gated out as silence.
        Channels are weighted 1.0 (mono, stereo; surround weights are not applied).
    """
    x = _as_2d(audio)
    return _gated_lufs(_block_power(_k_weight(x, sr), sr))


# ITU-R BS.1770-4 Annex 2: the 48-tap, 4-phase true-peak interpolation filter (12 taps per phase)
_TP_PHASES = np.array([
    [0.0017089843750, 0.0109863281250, -0.0196533203125, 0.0332031250000, -0.0594482421875, 0.1373291015625,
     0.9721679687500, -0.1022949218750, 0.0476074218750, -0.0266113281250, 0.0148925781250, -0.0083007812500],
    [-0.0291748046875, 0.0292968750000, -0.0517578125000, 0.0891113281250, -0.1665039062500, 0.4650878906250,
     0.7797851562500, -0.2003173828125, 0.1015625000000, -0.0582275390625, 0.0330810546875, -0.0189208984375],
    [-0.0189208984375, 0.0330810546875, -0.0582275390625, 0.1015625000000, -0.2003173828125, 0.7797851562500,
     0.4650878906250, -0.1665039062500, 0.0891113281250, -0.0517578125000, 0.0292968750000, -0.0291748046875],
    [-0.0083007812500, 0.0148925781250, -0.0266113281250, 0.0476074218750, -0.1022949218750, 0.9721679687500,
     0.1373291015625, -0.0594482421875, 0.0332031250000, -0.0196533203125, 0.0109863281250, 0.0017089843750],
])
_TP_GAIN_BOUND = float(np.abs(_TP_PHASES).sum(axis=1).max())  # |interpolated| <= bound * max |x| nearby
_TP_TAPS = _TP_PHASES.shape[1]
_TP_DELAY = 6  # the point p / 4 after sample n is sum_k phase_p[k] x[n + 6 - k]
_TP_BLOCK = 2048
_tp_kernel = None


def _tp_kernel_compiled():
    """The oversampling kernel, compiled once per process with numba (a librosa dependency; about 0.5 s)."""
    global _tp_kernel
    if _tp_kernel is None:
        import numba

        @numba.njit(nogil=True, cache=False)
        def kernel(xp, h, blocks, block, env):  # pragma: no cover - compiled
            channels = xp.shape[0]
            n = env.shape[0]
            taps = h.shape[1]
            for b in blocks:
                for i in range(b * block, min(n, (b + 1) * block)):
                    top = env[i]
                    for c in range(channels):
                        for p in range(h.shape[0]):
                            acc = np.float32(0.0)
                            for k in range(taps):
                                acc += h[p, k] * xp[c, i + taps - 1 - k]
                            top = max(top, abs(acc))
                    env[i] = top

        _tp_kernel = kernel
    return _tp_kernel


def _tp_envelope(audio: np.ndarray, floor: float) -> np.ndarray:
    """Per-sample peak (over channels and the 4 interpolated points after each sample), shape (n,).

    Only blocks that could reach ``floor`` (sample peak times the filter's gain bound) are
    oversampled; elsewhere the envelope is the plain sample peak, which is then below ``floor``.
    The interpolation is a compiled loop (numba): one pass, no oversampled copy in memory.
    """
    x = _as_2d(audio)
    n = x.shape[-1]
    env = np.abs(x).max(axis=0)
    if n == 0:
        return env
    nb = -(-n // _TP_BLOCK)
    padded_env = np.zeros(nb * _TP_BLOCK, np.float32)
    padded_env[:n] = env
    bp = padded_env.reshape(nb, _TP_BLOCK).max(axis=1)
    near = bp.copy()
    near[1:] = np.maximum(near[1:], bp[:-1])
    near[:-1] = np.maximum(near[:-1], bp[1:])
    cand = np.flatnonzero(near * _TP_GAIN_BOUND > floor)
    if cand.size == 0:
        return env
    before = _TP_TAPS - 1 - _TP_DELAY
    xp = np.zeros((x.shape[0], n + _TP_TAPS - 1), np.float32)
    xp[:, before: before + n] = x
    _tp_kernel_compiled()(xp, _TP_PHASES.astype(np.float32), cand, _TP_BLOCK, env)
    return env


def true_peak_dbtp(audio: np.ndarray, sr: int | None = None) -> float:
    """True peak in dBTP: the peak of the 4x oversampled signal (ITU-R BS.1770-4 Annex 2 interpolation filter).

    Parameters
    ----------
    audio : np.ndarray, shape (channels, n) or (n,)
    sr : int, optional
        Unused (true peak is rate-independent); accepted for a uniform signature.

    Returns
    -------
    float
        dBTP, ``-inf`` for digital silence.
    """
    x = _as_2d(audio)
    if x.shape[-1] == 0:
        return float("-inf")
    sample_peak = float(np.abs(x).max())
    if sample_peak == 0:
        return float("-inf")
    return _db(float(_tp_envelope(x, sample_peak).max()))


def measure(audio: np.ndarray, sr: int) -> dict[str, Any]:
    """Loudness and peak figures used by the quality checks.

    Parameters
    ----------
    audio : np.ndarray, shape (channels, n) or (n,)
    sr : int

    Returns
    -------
    dict
        ``integrated_lufs`` (float, ``-inf`` if unmeasurable), ``true_peak_dbtp`` (4x oversampled),
        ``sample_peak_dbfs``, ``clipped_samples`` (samples with ``|x| >= 1.0``), ``duration_s``,
        ``channels`` and ``sr``.

    Examples
    --------
    >>> m = measure(np.zeros((2, 44100), np.float32), 44100)
    >>> m["clipped_samples"]
    0
    """
    x = _as_2d(audio)
    return {
        "integrated_lufs": integrated_lufs(x, sr),
        "true_peak_dbtp": true_peak_dbtp(x),
        "sample_peak_dbfs": _db(float(np.max(np.abs(x)))) if x.size else float("-inf"),
        "clipped_samples": int(np.count_nonzero(np.abs(x) >= 1.0)),
        "duration_s": x.shape[-1] / sr,
        "channels": int(x.shape[0]),
        "sr": int(sr),
    }


# --------------------------------------------------------------------------------------------
# vocal chain


def _frame_rms_db(x: np.ndarray, sr: int, frame_s: float = 0.05) -> np.ndarray:
    frame = max(1, int(frame_s * sr))
    n = (len(x) // frame) * frame
    if n == 0:
        return np.full(1, _db(float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))) if len(x) else -np.inf)
    ms = np.mean(x[:n].astype(np.float64).reshape(-1, frame) ** 2, axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(ms)


def deess(vocal: np.ndarray, sr: int, amount: float, low_hz: float = 5000.0, high_hz: float = 9000.0) -> np.ndarray:
    """Split-band de-esser: compress only the sibilance band and add it back.

    The band is extracted with a zero-phase Butterworth band-pass so that ``vocal - band`` is the
    exact complement; the band goes through a fast pedalboard ``Compressor`` whose threshold and
    ratio follow ``amount``, then is summed with the untouched rest.

    Parameters
    ----------
    vocal : np.ndarray, shape (n,)
        Mono vocal, expected gain-staged (loud frames near ``STAGE_LEVEL_DB`` RMS).
    sr : int
    amount : float
        0 (bypass) to 1 (heavy: threshold -42 dBFS, ratio 10:1).
    low_hz, high_hz : float
        Band edges (the upper edge is clipped below Nyquist).

    Returns
    -------
    np.ndarray, shape (n,), float32
    """
    x = np.asarray(vocal, dtype=np.float32)
    amount = float(np.clip(amount, 0.0, 1.0))
    high_hz = min(high_hz, 0.45 * sr)
    if amount <= 0.0 or high_hz <= low_hz or len(x) < 64:
        return x
    sos = signal.butter(2, [low_hz, high_hz], btype="bandpass", fs=sr, output="sos").astype(np.float32)
    band = signal.sosfiltfilt(sos, x).astype(np.float32)
    rest = x - band
    comp = pb.Compressor(threshold_db=-18.0 - 24.0 * amount, ratio=2.0 + 8.0 * amount, attack_ms=0.5,
                         release_ms=60.0)
    return (rest + comp(band[None, :], sr)[0]).astype(np.float32)


def apply_vocal_chain(vocal: np.ndarray, sr: int, fx: VocalFx, *, tail_s: float = 0.0) -> np.ndarray:
    """Process a dry mono vocal with the effects chain ``fx``.

    Order: gain staging (loud frames to ``STAGE_LEVEL_DB`` RMS; skipped for a near-silent input),
    high-pass, low shelf, mud bell, presence bell, high shelf, de-esser (:func:`deess`), compressor,
    make-up gain, delay, reverb (pedalboard).

    Parameters
    ----------
    vocal : np.ndarray, shape (n,)
        Mono float vocal.
    sr : int
        Its sample rate.
    fx : VocalFx
        Chain settings, e.g. ``FX_PRESETS["pop_bright"]``.
    tail_s : float
        Seconds of silence appended before processing so that delay and reverb tails are kept.

    Returns
    -------
    np.ndarray, shape (n + round(tail_s * sr),), float32
        The wet vocal. Its level is only roughly normalised; :func:`mix` sets the final balance.
    """
    x = np.asarray(vocal, dtype=np.float32).reshape(-1)
    if tail_s > 0:
        x = np.concatenate([x, np.zeros(round(tail_s * sr), np.float32)])
    if x.size == 0:
        return x
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(np.max(np.abs(x)))
    if _db(peak) >= SILENCE_PEAK_DB:
        frames = _frame_rms_db(x, sr)
        frames = frames[np.isfinite(frames)]
        loud = float(np.percentile(frames, 95)) if frames.size else _db(peak)
        x = x * np.float32(10 ** (np.clip(STAGE_LEVEL_DB - loud, -40.0, 60.0) / 20))
    else:
        logger.warning("vocal peak %.1f dBFS is below %.0f dBFS: treated as silent, not gain-staged",
                       _db(peak), SILENCE_PEAK_DB)
    nyq_safe = 0.45 * sr
    eq = pb.Pedalboard([
        pb.HighpassFilter(cutoff_frequency_hz=fx.highpass_hz),
        pb.LowShelfFilter(cutoff_frequency_hz=fx.low_shelf_hz, gain_db=fx.low_shelf_db, q=0.707),
        pb.PeakFilter(cutoff_frequency_hz=fx.peak_hz, gain_db=fx.peak_db, q=fx.peak_q),
        pb.PeakFilter(cutoff_frequency_hz=min(fx.presence_hz, nyq_safe), gain_db=fx.presence_db, q=fx.presence_q),
        pb.HighShelfFilter(cutoff_frequency_hz=min(fx.high_shelf_hz, nyq_safe), gain_db=fx.high_shelf_db,
                           q=0.707),
    ])
    y = eq(x[None, :], sr)[0]
    y = deess(y, sr, fx.deess_amount, fx.deess_low_hz, fx.deess_high_hz)
    post: list[pb.Plugin] = [
        pb.Compressor(threshold_db=fx.comp_threshold_db, ratio=fx.comp_ratio, attack_ms=fx.comp_attack_ms,
                      release_ms=fx.comp_release_ms),
        pb.Gain(gain_db=fx.makeup_db),
    ]
    if fx.delay_mix > 0 and fx.delay_seconds > 0:
        post.append(pb.Delay(delay_seconds=fx.delay_seconds, feedback=fx.delay_feedback, mix=fx.delay_mix))
    if fx.reverb_wet > 0:
        post.append(pb.Reverb(room_size=fx.reverb_room_size, damping=fx.reverb_damping, wet_level=fx.reverb_wet,
                              dry_level=1.0 - fx.reverb_wet / 2, width=fx.reverb_width))
    y = pb.Pedalboard(post)(y[None, :], sr, reset=True)[0]
    return np.nan_to_num(y.astype(np.float32))


# --------------------------------------------------------------------------------------------
# mastering


def _tp_gain_stage(audio: np.ndarray, sr: int, ceiling_db: float, lookahead_s: float = 0.0015,
                   release_s: float = 0.012) -> np.ndarray:
    """Look-ahead (zero-phase, offline) gain reduction keeping the 4x-oversampled peak under ``ceiling_db``.

    The per-sample required gain (from the linked oversampled peak) is min-filtered over a window
    covering the smoothing window, then box-smoothed, so the smoothed gain never exceeds the
    required gain at any sample.
    """
    ceiling = 10 ** (ceiling_db / 20)
    peak = _tp_envelope(audio, ceiling)
    need = np.minimum(1.0, ceiling / np.maximum(peak, 1e-12)).astype(np.float32)
    if float(need.min()) >= 1.0:
        return audio
    smooth = max(1, round((lookahead_s + release_s) * sr) | 1)
    g = minimum_filter1d(need, size=2 * smooth + 1, mode="nearest")
    g = uniform_filter1d(g, size=smooth, mode="nearest")
    return (audio * np.minimum(g, need.max())[None, :]).astype(np.float32)


def _limit(audio: np.ndarray, sr: int, ceiling_db: float) -> np.ndarray:
    """Peak limiting to ``ceiling_db``: a fast pedalboard ``Compressor`` (20:1) then the true-peak gain stage.

    pedalboard's ``Limiter`` (juce::dsp::Limiter) is not used: it adds ``3.75 - threshold`` dB of
    make-up gain and hard-clips at 0 dBFS, so anything reaching its threshold is clipped by 3.75 dB.
    """
    board = pb.Pedalboard([pb.Compressor(threshold_db=ceiling_db - 1.0, ratio=20.0, attack_ms=1.0, release_ms=60.0)])
    y = board(audio, sr, reset=True)
    return _tp_gain_stage(y, sr, ceiling_db)


def master(audio: np.ndarray, sr: int, *, target_lufs: float = -14.0, true_peak_db: float = -1.0,
           max_iter: int = 8) -> tuple[np.ndarray, dict[str, Any]]:
    """Normalise integrated loudness to ``target_lufs`` with true peak at most ``true_peak_db``.

    Parameters
    ----------
    audio : np.ndarray, shape (channels, n)
    sr : int
    target_lufs : float
    true_peak_db : float
        Ceiling in dBTP (4x oversampled).
    max_iter : int
        Gain/limit/measure rounds.

    Returns
    -------
    mastered : np.ndarray, shape (channels, n), float32
    info : dict
        ``master_gain_db`` (the linear gain before limiting), ``limiter_gain_reduction_db`` (peak
        reduction by the limiter stage), ``iterations``, ``integrated_lufs``, ``true_peak_dbtp`` and
        ``warnings`` (list of str).
    """
    x = _as_2d(audio)
    warnings: list[str] = []
    info: dict[str, Any] = {"master_gain_db": 0.0, "limiter_gain_reduction_db": 0.0, "iterations": 0}
    loud = integrated_lufs(x, sr) if x.shape[-1] >= MIN_MEASURABLE_S * sr else float("-inf")
    if not np.isfinite(loud):
        warnings.append("mix too short or too quiet to measure loudness; left at its level, peak-limited only")
        y = _tp_gain_stage(x, sr, true_peak_db - 0.05) if x.size else x
        info.update(integrated_lufs=loud, true_peak_dbtp=true_peak_dbtp(y), warnings=warnings)
        return y, info
    ceiling = true_peak_db - 0.25  # margin for meters with other interpolation filters
    gain = target_lufs - loud
    y, out_loud, tp = x, loud, float("inf")  # measured on the limited signal in the loop
    for it in range(1, max_iter + 1):
        g = np.float32(10 ** (gain / 20))
        pre = x * g
        y = _limit(pre, sr, ceiling)
        out_loud, tp = integrated_lufs(y, sr), true_peak_dbtp(y)
        info["iterations"] = it
        if tp > true_peak_db:  # a residual inter-sample overshoot: tighten the ceiling and retry
            ceiling -= tp - true_peak_db + 0.05
            continue
        if abs(out_loud - target_lufs) <= LOUDNESS_TOLERANCE_LU:
            break
        gain += target_lufs - out_loud
        if gain - (target_lufs - loud) > 24.0:
            warnings.append("limiting cannot reach the loudness target without more than 24 dB of gain")
            break
    if tp > true_peak_db:  # last resort: plain gain down
        y = (y * np.float32(10 ** ((true_peak_db - 0.05 - tp) / 20))).astype(np.float32)
        out_loud, tp = integrated_lufs(y, sr), true_peak_dbtp(y)
    if abs(out_loud - target_lufs) > 0.5:
        warnings.append(f"integrated loudness {out_loud:.2f} LUFS misses the target {target_lufs:.1f} by > 0.5 LU")
    pre_peak = float(np.max(np.abs(x))) * float(10 ** (gain / 20))
    post_peak = float(np.max(np.abs(y)))
    info.update(
        master_gain_db=float(gain),
        limiter_gain_reduction_db=float(max(0.0, _db(pre_peak) - _db(post_peak))) if post_peak > 0 else 0.0,
        integrated_lufs=float(out_loud), true_peak_dbtp=float(tp), warnings=warnings,
    )
    return y.astype(np.float32), info


# --------------------------------------------------------------------------------------------
# mix


@dataclass
class MixResult:
    """The outputs of :func:`mix`, all at the background's sample rate and length.

    Attributes
    ----------
    mix : np.ndarray, shape (channels, n)
        The mastered song.
    vocal_fx : np.ndarray, shape (channels, n)
        The processed vocal at the level used in the mix, after the master gain (pre-limiter),
        centre-panned (same signal in every channel).
    vocal_dry : np.ndarray, shape (n,)
        The dry vocal resampled to the background's rate (not gain-changed).
    instrumental : np.ndarray, shape (channels, n)
        The background with the same master gain applied (pre-limiter).
    sr : int
    stats : dict
        See :func:`mix`.
    """

    mix: np.ndarray
    vocal_fx: np.ndarray
    vocal_dry: np.ndarray
    instrumental: np.ndarray
    sr: int
    stats: dict[str, Any] = field(default_factory=dict)


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    if x.shape[-1] >= n:
        return x[..., :n]
    pad = [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])]
    return np.pad(x, pad)


def _active_blocks(vocal: np.ndarray, sr: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Block powers (K-weighted) of a mono vocal centred in ``channels``, and where it sounds."""
    # The same signal in every channel: filter it once, its power counts once per channel.
    return _gated(_block_power(_k_weight(vocal[None, :], sr), sr) * channels)


def _gated(power: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Block powers and the blocks where the signal sounds (above the absolute gate, within 20 LU of its top)."""
    if power.size == 0:
        return power, np.zeros(0, bool)
    lufs = _power_to_lufs(power)
    finite = lufs[np.isfinite(lufs)]
    if finite.size == 0:
        return power, np.zeros_like(lufs, bool)
    top = float(np.percentile(finite, 95))
    return power, (lufs > ABS_GATE_LUFS) & (lufs > top - 20.0)


def mix(background: np.ndarray, bg_sr: int, vocal_dry: np.ndarray, vocal_sr: int, fx: VocalFx, *,
        target_lufs: float = -14.0, true_peak_db: float = -1.0, vocal_offset_db: float | None = None) -> MixResult:
    """Process the vocal, balance it against the background, and master the sum.

    Parameters
    ----------
    background : np.ndarray, shape (channels, n) or (n,)
        The user's track (mono or stereo, float).
    bg_sr : int
        Its sample rate; every output is at this rate and exactly ``n`` samples long.
    vocal_dry : np.ndarray, shape (m,)
        Mono dry vocal starting at time 0 of the background; cut or zero-padded to fit.
    vocal_sr : int
        Its sample rate (resampled with soxr).
    fx : VocalFx
        Effects chain settings.
    target_lufs : float
        Integrated loudness of the mix.
    true_peak_db : float
        True-peak ceiling (dBTP, 4x oversampled).
    vocal_offset_db : float or None
        Vocal loudness minus background loudness over the frames where the vocal sounds;
        None uses ``fx.vocal_offset_db``.

    Returns
    -------
    MixResult
        ``stats`` holds ``integrated_lufs``, ``true_peak_dbtp``, ``sample_peak_dbfs``,
        ``clipped_samples``, ``vocal_to_background_db`` (measured on the final stems in the sung
        passages, ``None`` if there are none), ``vocal_offset_target_db``, ``vocal_gain_db``,
        ``master_gain_db``, ``limiter_gain_reduction_db``, ``iterations`` and, when something could
        not be done as asked, ``warning`` (one string joining all warnings).

    Examples
    --------
    >>> res = mix(bg, 44100, vox, 24000, FX_PRESETS["pop_bright"])  # doctest: +SKIP
    >>> round(res.stats["integrated_lufs"])  # doctest: +SKIP
    -14
    """
    bg = np.nan_to_num(_as_2d(background))
    channels, n = bg.shape
    offset = fx.vocal_offset_db if vocal_offset_db is None else float(vocal_offset_db)
    warnings: list[str] = []

    dry = np.asarray(vocal_dry, dtype=np.float32).reshape(-1)
    if n == 0:
        empty = np.zeros((channels, 0), np.float32)
        logger.warning("mix: empty background")
        return MixResult(mix=empty, vocal_fx=empty.copy(), vocal_dry=np.zeros(0, np.float32), instrumental=empty.copy(),
                         sr=bg_sr, stats={"integrated_lufs": float("-inf"), "true_peak_dbtp": float("-inf"),
                                          "sample_peak_dbfs": float("-inf"), "clipped_samples": 0,
                                          "warning": "empty background: nothing to mix"})
    # The chain runs at the vocal's own (lower) rate, then both are resampled: the same sound,
    # fewer samples to process.
    n_vocal = int(np.ceil(n * vocal_sr / bg_sr))
    dry = _fit_length(dry, n_vocal)
    wet = apply_vocal_chain(dry, vocal_sr, fx)  # dry already spans the background: tails fit inside
    if vocal_sr != bg_sr and dry.size:
        dry = soxr.resample(dry, vocal_sr, bg_sr, quality="HQ").astype(np.float32)
        wet = soxr.resample(wet, vocal_sr, bg_sr, quality="HQ").astype(np.float32)
    dry, wet = _fit_length(dry, n), _fit_length(wet, n)
    silent_vocal = not np.any(dry) or _db(float(np.max(np.abs(dry)))) < SILENCE_PEAK_DB

    vocal_gain_db = 0.0
    levels: tuple[float, float] | None = None  # (vocal, background) LUFS where the vocal sounds
    if silent_vocal:
        warnings.append("vocal is silent or near-silent (peak below -60 dBFS); mixed without balancing")
    else:
        power_v, active = _active_blocks(wet, bg_sr, channels)
        if not active.any():
            warnings.append("vocal too short to measure its loudness; mixed at the staging level")
        else:
            power_b = _block_power(_k_weight(bg, bg_sr), bg_sr)
            lv = float(_power_to_lufs(power_v[active].mean()))
            lb = float(_power_to_lufs(power_b[active].mean()))
            levels = (lv, lb)
            if lb <= ABS_GATE_LUFS:
                warnings.append("background is silent under the vocal; vocal set to the mix target")
                vocal_gain_db = target_lufs - lv
            else:
                vocal_gain_db = lb + offset - lv
    vocal_gain_db = float(np.clip(vocal_gain_db, -60.0, 60.0))
    vocal_c = np.repeat(wet[None, :] * np.float32(10 ** (vocal_gain_db / 20)), channels, axis=0)

    mastered, info = master(bg + vocal_c, bg_sr, target_lufs=target_lufs, true_peak_db=true_peak_db)
    warnings.extend(info.pop("warnings", []))
    g = np.float32(10 ** (info["master_gain_db"] / 20))
    vocal_out, inst_out = (vocal_c * g).astype(np.float32), (bg * g).astype(np.float32)

    # master() has measured loudness and true peak of exactly this signal; only the cheap
    # sample-level figures are left to take.
    sample_peak = float(np.max(np.abs(mastered))) if mastered.size else 0.0
    stats: dict[str, Any] = {
        "integrated_lufs": info["integrated_lufs"],
        "true_peak_dbtp": info["true_peak_dbtp"],
        "sample_peak_dbfs": _db(sample_peak),
        "clipped_samples": int(np.count_nonzero(np.abs(mastered) >= 1.0)),
        "target_lufs": target_lufs,
        "true_peak_ceiling_db": true_peak_db,
        "vocal_offset_target_db": offset,
        "vocal_gain_db": vocal_gain_db,
        # Both sides get the same master gain, so the balance is the measured levels plus the vocal gain.
        "vocal_to_background_db": (levels[0] + vocal_gain_db - levels[1]
                                   if levels and np.isfinite(levels[1]) and levels[1] > ABS_GATE_LUFS else None),
        "master_gain_db": info["master_gain_db"],
        "limiter_gain_reduction_db": info["limiter_gain_reduction_db"],
        "iterations": info["iterations"],
        "preset": fx.name,
    }
    if warnings:
        stats["warning"] = "; ".join(warnings)
        for w in warnings:
            logger.warning("mix: %s", w)
    logger.info("mix: %.2f LUFS, %.2f dBTP, vocal %+.1f dB over background, master gain %+.1f dB",
                stats["integrated_lufs"], stats["true_peak_dbtp"], stats["vocal_to_background_db"] or float("nan"),
                stats["master_gain_db"])
    return MixResult(mix=mastered, vocal_fx=vocal_out, vocal_dry=dry, instrumental=inst_out, sr=bg_sr, stats=stats)


def vocal_to_background_db(vocal: np.ndarray, background: np.ndarray, sr: int) -> float | None:
    """Loudness of ``vocal`` minus that of ``background`` over the 400 ms blocks where the vocal sounds.

    Parameters
    ----------
    vocal, background : np.ndarray, shape (channels, n)
        Same shape and rate.
    sr : int

    Returns
    -------
    float or None
        LU difference; None when the vocal never sounds or the background is silent there.
    """
    v, b = _as_2d(vocal), _as_2d(background)
    if all(np.array_equal(v[0], c) for c in v[1:]):  # centred (as mixed): filter one channel only
        power_v, active = _active_blocks(v[0], sr, v.shape[0])
    else:
        power_v, active = _gated(_block_power(_k_weight(v, sr), sr))
    if not active.any():
        return None
    power_b = _block_power(_k_weight(b, sr), sr)
    lv, lb = _power_to_lufs(power_v[active].mean()), _power_to_lufs(power_b[active].mean())
    if not (np.isfinite(lv) and np.isfinite(lb)):
        return None
    return float(lv - lb)


# --------------------------------------------------------------------------------------------
# files


def _write_wav_atomic(path: Path, audio: np.ndarray, sr: int, subtype: str = "PCM_24") -> None:
    data = _as_2d(audio).T
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        sf.write(tmp, data, sr, subtype=subtype, format="WAV")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_mp3_atomic(path: Path, audio: np.ndarray, sr: int, bitrate: str = "320k",
                      compression_level: int | None = None) -> None:
    """Encode ``audio`` (channels, n) to MP3 with ffmpeg/libmp3lame, fed from memory (32-bit float PCM).

    ``compression_level`` is LAME's speed/quality trade (0 best .. 9 fastest; None: LAME's default)."""
    data = np.ascontiguousarray(_as_2d(audio).T, dtype="<f4")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".mp3")
    os.close(fd)
    level = [] if compression_level is None else ["-compression_level", str(int(compression_level))]
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "f32le", "-ar", str(sr),
           "-ac", str(data.shape[1]), "-i", "pipe:0", "-codec:a", "libmp3lame", "-b:a", bitrate, *level,
           "-f", "mp3", tmp]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _, err = proc.communicate(data.tobytes(), timeout=300)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg mp3 encode failed: {err.decode(errors='replace').strip()[-500:]}")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_outputs(result: MixResult, sr: int, out_dir: Path, *, pending: list[Future] | None = None) -> dict[str, Path]:
    """Write the mix and its stems; each file appears atomically (temp file, then rename).

    ffmpeg encodes the MP3 from memory on another core while the WAV files are written.

    Parameters
    ----------
    result : MixResult
    sr : int
        Sample rate of ``result`` (normally ``result.sr``).
    out_dir : Path
        Created if missing.
    pending : list, optional
        When given, the MP3 encode is left running and its ``Future`` appended here (its
        ``result()`` waits for mix.mp3 and re-raises an encoder failure), so that the caller can
        do other work meanwhile; by default this function waits for it.

    Returns
    -------
    dict of str to Path
        ``mix`` (mix.wav, 24-bit PCM), ``mix_mp3`` (mix.mp3, 320 kbps via ffmpeg/libmp3lame),
        ``vocal`` (vocal.wav, dry, 24-bit), ``vocal_fx`` (vocal_fx.wav, 24-bit),
        ``instrumental`` (instrumental.wav, 24-bit).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "mix": out_dir / "mix.wav",
        "mix_mp3": out_dir / "mix.mp3",
        "vocal": out_dir / "vocal.wav",
        "vocal_fx": out_dir / "vocal_fx.wav",
        "instrumental": out_dir / "instrumental.wav",
    }
    pool = ThreadPoolExecutor(1, thread_name_prefix="mp3")
    mp3 = pool.submit(_write_mp3_atomic, paths["mix_mp3"], result.mix, sr)
    pool.shutdown(wait=False)  # the worker thread ends with the encode
    try:
        _write_wav_atomic(paths["mix"], result.mix, sr)
        _write_wav_atomic(paths["vocal"], result.vocal_dry, sr)
        _write_wav_atomic(paths["vocal_fx"], result.vocal_fx, sr)
        _write_wav_atomic(paths["instrumental"], result.instrumental, sr)
    except BaseException:
        wait([mp3])
        raise
    if pending is None:
        mp3.result()  # re-raises an encoder failure
        logger.info("wrote %s", ", ".join(p.name for p in paths.values()))
    else:
        pending.append(mp3)
    return paths
