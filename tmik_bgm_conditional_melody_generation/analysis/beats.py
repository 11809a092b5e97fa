"""Beat tracking: periodicity analysis, beat-level choice, and a tempo-following HMM.

The tracker is a dynamic Bayesian network in the style of Krebs, Böck & Widmer (2015):
hidden states are (beat interval, position within the beat); the position advances one
frame at a time and, at each beat, the interval may change, with a cost that grows with
the size of the change. Viterbi decoding gives beats that follow gradual tempo drift,
which one fixed-tempo grid (librosa's ``beat_track``) cannot.

*Sensitivity* (0..1, the Create tab's "Beat Detection Sensitivity") sets how readily the
tracker follows the music rather than holding a steady grid:

- the tempo-change cost falls from strict (0) to lenient (1), so expressive timing,
  rubato and accelerandi are followed more closely at high sensitivity;
- weak onsets count for more at high sensitivity (the activation is raised to a power
  that goes from 1.6 through 1.3 down to 0.6), so quiet or soft-attack material still
  pulls beats;
- the tempo range searched around the estimated tempo widens from ±15 % to ±40 %.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import scipy.ndimage
import scipy.signal

# Sensitivity 0, 0.5 (the default, best on the development set) and 1; settings between
# them are interpolated.
SENSITIVITY_POINTS = [0.0, 0.5, 1.0]
MIN_BPM = 40.0
MAX_BPM = 240.0
# Detected onsets trail the sound by about one frame (the flux compares with two frames back).
ONSET_LATENCY_S = 0.0


@dataclass
class PulseEstimate:
    """The beat level chosen from periodicity: seconds per beat, and the periodicity found."""

    period: float  # seconds per beat
    scores: dict


# How the tracker's activation mixes the onset envelopes (weights measured on the dev set).
ACTIVATION_MIX = {"onset": 0.225, "accent": 0.225, "note_onset": 0.25, "onset_low": 0.3}


def beat_activation(features, sensitivity: float) -> np.ndarray:
    """The beat tracker's activation: a mix of the onset envelopes in ``features``.

    Soft attacks (``onset``), loud ones (``accent``), note changes without attacks
    (``note_onset``) and the bass and kick (``onset_low``) each pull beats; the bass keeps
    the tracker on the beat when the off-beats are louder.
    """
    fps = features.onset_fps
    return sum(w * activation(getattr(features, name), fps, sensitivity) for name, w in ACTIVATION_MIX.items())


def activation(onset: np.ndarray, fps: float, sensitivity: float | None = 0.5) -> np.ndarray:
    """Map an onset envelope to a beat activation.

    Subtracting a local mean removes the floor that sustained sounds leave; the result is
    scaled so that typical strong onsets reach 1. With a ``sensitivity`` the activation is
    clipped to 0..1 and compressed for the tracker; with None it is left linear, keeping
    the accent differences that periodicity analysis needs.
    """
    win = max(3, round(0.25 * fps))
    local = scipy.ndimage.uniform_filter1d(onset.astype(np.float64), size=win)
    act = np.maximum(0.0, onset - local)
    peaks = act[scipy.signal.argrelmax(act)[0]] if len(act) > 2 else act
    ref = np.percentile(peaks, 95) if len(peaks) else 0.0
    if ref <= 0:
        return np.zeros_like(act)
    act = act / ref
    if sensitivity is None:
        return act
    act = np.clip(act, 0.0, 1.0)
    gamma = float(np.interp(sensitivity, SENSITIVITY_POINTS, [1.6, 1.3, 0.6]))
    return act**gamma


def autocorrelation(act: np.ndarray, fps: float, max_lag_s: float = 3.2, window_s: float = 6.0) -> np.ndarray:
    """Mean of local, normalised autocorrelations of ``act`` over windows of ``window_s``.

    Local windows keep peaks sharp when the tempo drifts over the piece.
    """
    max_lag = int(max_lag_s * fps)
    win = max(int(window_s * fps), 2 * max_lag)
    x = act - act.mean()
    if len(x) <= win:
        starts = [0]
        win = len(x)
    else:
        starts = range(0, len(x) - win + 1, max(1, win // 4))
    n_fft = 1 << int(np.ceil(np.log2(2 * win)))
    acc = np.zeros(min(max_lag, win - 1) + 1)
    count = 0
    for s in starts:
        seg = x[s : s + win]
        seg = seg - seg.mean()
        spec = np.fft.rfft(seg, n_fft)
        ac = np.fft.irfft(spec * np.conj(spec), n_fft)[: len(acc)]
        if ac[0] <= 1e-12:
            continue
        # Unbias: fewer samples overlap at longer lags.
        ac = ac / (win - np.arange(len(acc))) * win
        acc += ac / ac[0]
        count += 1
    return acc / max(count, 1)


def _acf_at(acf: np.ndarray, lag: float) -> float:
    """Peak ACF value near a (fractional) lag, tolerating 3 % error in the lag."""
    if lag < 1 or lag >= len(acf) - 1:
        return 0.0
    lo = int(np.floor(lag * 0.97))
    hi = int(np.ceil(lag * 1.03)) + 1
    return float(np.max(acf[max(lo, 1) : min(hi, len(acf))]))


def _tempo_log_prior(bpm: float, centre: float, octaves: float = 0.9) -> float:
    return -0.5 * (np.log2(bpm / centre) / octaves) ** 2


def _refine_peak(acf: np.ndarray, lag: float) -> float:
    """The fractional lag of the ACF maximum within 6 % of ``lag`` (parabolic interpolation)."""
    lo = max(1, int(np.floor(lag * 0.94)))
    hi = min(len(acf) - 2, int(np.ceil(lag * 1.06)))
    if hi < lo:
        return lag
    k = lo + int(np.argmax(acf[lo : hi + 1]))
    a, b, c = acf[k - 1], acf[k], acf[k + 1]
    denom = a - 2 * b + c
    return k + (0.5 * (a - c) / denom if denom < 0 else 0.0)


# A subdivision at least this periodic, relative to its parent level, is a beat level too.
SUBLEVEL_RATIO = 0.6
FAST_SUBLEVEL_RATIO = 0.85
# Beats faster than this are taken as a subdivision of the real beat. A fast pulse that
# groups in threes is the eighth-note pulse of 6/8 sooner than a fast beat.
FASTEST_BEAT_BPM = {2: 200.0, 3: 170.0}


def estimate_pulse(act: np.ndarray, fps: float) -> PulseEstimate:
    """Choose the beat period from the periodicity of the accents.

    Start from the most periodic level (often the bar or half bar) and step down to its
    half or third while that level is nearly as periodic: the beat is the fastest level
    that still carries the accent pattern, while a subdivision (off-beat eighths) is
    clearly weaker. A level faster than ``FASTEST_BEAT_BPM`` is grouped into twos or
    threes, whichever is more periodic, so even eighths in 6/8 resolve to the dotted
    quarter. (Whether the beat divides in two or three is :mod:`.meter`'s call, from the
    tracked beats.)
    """
    acf = autocorrelation(act, fps)
    lo, hi = fps * 60 / MAX_BPM, fps * 60 / MIN_BPM
    peaks = [float(k) for k in scipy.signal.argrelmax(acf, order=2)[0] if lo <= k <= min(hi, len(acf) - 2)]
    if not peaks:
        return PulseEstimate(period=60.0 / 110.0, scores={})
    lag = _refine_peak(acf, max(peaks, key=lambda k: acf[int(k)]))
    while True:
        options = [(_acf_at(acf, lag / k), k) for k in (2, 3) if 60.0 * fps * k / lag <= FASTEST_BEAT_BPM[k]]
        if not options:
            break
        strength, k = max(options)
        # Very fast beats are rarer than fast subdivisions: ask for more evidence.
        needed = SUBLEVEL_RATIO if 60.0 * fps * k / lag <= 160.0 else FAST_SUBLEVEL_RATIO
        if strength < needed * _acf_at(acf, lag):
            break
        lag = _refine_peak(acf, lag / k)
    while 60.0 * fps / lag > FASTEST_BEAT_BPM[2] and 3 * lag < len(acf) - 2:
        lag = _refine_peak(acf, _grouping(act, fps, lag) * lag)
    scores = {round(60.0 * fps / k, 1): round(float(acf[int(k)]), 3) for k in peaks}
    return PulseEstimate(period=lag / fps, scores=scores)


def _grouping(act: np.ndarray, fps: float, lag: float) -> int:
    """Whether a fast pulse groups in twos or threes: 2 or 3.

    Tracks the pulse itself and compares how the accent on each pulse correlates with the
    accent two and three pulses later. Measured on the tracked pulses, this follows drift
    and swing that blur the same comparison made on the raw autocorrelation.
    """
    pulses = track_beats(np.clip(act, 0.0, 1.0), fps, lag / fps)
    accents = act[np.clip(np.round(pulses * fps).astype(int), 0, len(act) - 1)]
    if len(accents) < 12 or accents.std() < 1e-9:
        return 2
    z = (accents - accents.mean()) / accents.std()
    by_two, by_three = float(np.mean(z[2:] * z[:-2])), float(np.mean(z[3:] * z[:-3]))
    return 3 if by_three > by_two else 2


@numba.njit(cache=True)
def _viterbi(log_beat, log_off, intervals, beat_len, trans, init):  # pragma: no cover - numba
    n_frames = log_beat.shape[0]
    n_int = intervals.shape[0]
    offsets = np.zeros(n_int + 1, dtype=np.int64)
    for i in range(n_int):
        offsets[i + 1] = offsets[i] + intervals[i]
    n_states = offsets[n_int]
    delta = np.empty(n_states)
    new = np.empty(n_states)
    back = np.zeros((n_frames, n_int), dtype=np.int16)
    for i in range(n_int):
        for p in range(intervals[i]):
            obs = log_beat[0] if p < beat_len[i] else log_off[0]
            delta[offsets[i] + p] = init[i] - np.log(intervals[i]) + obs
    for t in range(1, n_frames):
        for i in range(n_int):
            best = -np.inf
            arg = 0
            for j in range(n_int):
                v = delta[offsets[j] + intervals[j] - 1] + trans[j, i]
                if v > best:
                    best = v
                    arg = j
            new[offsets[i]] = best + log_beat[t]
            back[t, i] = arg
            for p in range(1, intervals[i]):
                obs = log_beat[t] if p < beat_len[i] else log_off[t]
                new[offsets[i] + p] = delta[offsets[i] + p - 1] + obs
        for s in range(n_states):
            delta[s] = new[s]
    # Backtrack from the best final state.
    best_s = 0
    for s in range(n_states):
        if delta[s] > delta[best_s]:
            best_s = s
    i = 0
    while offsets[i + 1] <= best_s:
        i += 1
    p = best_s - offsets[i]
    beats = np.zeros(n_frames, dtype=np.bool_)
    for t in range(n_frames - 1, -1, -1):
        if p == 0:
            beats[t] = True
            if t > 0:
                i = back[t, i]
                p = intervals[i] - 1
        else:
            p -= 1
    return beats


def track_beats(
    act: np.ndarray,
    fps: float,
    period: float,
    sensitivity: float = 0.5,
) -> np.ndarray:
    """Viterbi-decode beat times (seconds) near ``period`` seconds per beat.

    See the module docstring for what ``sensitivity`` changes.
    """
    s = float(np.clip(sensitivity, 0.0, 1.0))
    spread = float(np.interp(s, SENSITIVITY_POINTS, [1.15, 1.225, 1.4]))
    lag = period * fps
    lo = max(2, int(np.floor(lag / spread)))
    hi = max(lo + 1, int(np.ceil(lag * spread)))
    intervals = np.arange(lo, hi + 1, dtype=np.int64)
    # madmom's default tempo-change lambda is 100; go from strict to lenient.
    lam = float(np.exp(np.interp(s, SENSITIVITY_POINTS, np.log([400.0, 175.0, 25.0]))))
    ratio = intervals[None, :] / intervals[:, None]
    trans = -lam * np.abs(ratio - 1.0)
    trans -= np.log(np.exp(trans).sum(axis=1, keepdims=True))
    init = np.log(np.full(len(intervals), 1.0 / len(intervals)))
    obs_lambda = 16.0
    beat_len = np.maximum(1, (intervals / obs_lambda).astype(np.int64))
    a = np.clip(act.astype(np.float64), 1e-4, 1 - 1e-4)
    log_beat = np.log(a)
    log_off = np.log((1 - a) / (obs_lambda - 1))
    flags = _viterbi(log_beat, log_off, intervals, beat_len, trans, init)
    frames = snap_to_onsets(np.flatnonzero(flags), act, fps)
    # The decoder keeps counting through leading and trailing silence; musicians don't.
    sounding = np.flatnonzero(act > 0.2)
    if sounding.size:
        margin = 0.5 * lag
        frames = frames[(frames >= sounding[0] - margin) & (frames <= sounding[-1] + margin)]
    return frames / fps - ONSET_LATENCY_S


def snap_to_onsets(frames: np.ndarray, act: np.ndarray, fps: float, radius_s: float = 0.04) -> np.ndarray:
    """Move each beat frame to the strongest activation within ``radius_s``.

    The decoder places a beat at the first frame of its beat window; the onset's peak is a
    frame or two later. A beat with no activation nearby stays where it is.
    """
    r = max(1, round(radius_s * fps))
    out = frames.astype(np.float64).copy()
    for n, f in enumerate(frames):
        lo, hi = max(0, f - r), min(len(act), f + r + 1)
        window = act[lo:hi]
        if window.size and window.max() > 0.05:
            out[n] = lo + int(np.argmax(window))
    return out
