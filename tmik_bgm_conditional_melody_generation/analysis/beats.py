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
from typing import TYPE_CHECKING

import numba
import numpy as np
import scipy.ndimage
import scipy.signal

if TYPE_CHECKING:
    from .features import Features

# Sensitivity 0, 0.5 (the default, best on the development set) and 1; settings between
# them are interpolated.
SENSITIVITY_POINTS = [0.0, 0.5, 1.0]
MIN_BPM = 40.0
MAX_BPM = 240.0
# Detected onsets trail the sound by about one frame (the flux compares with two frames back).
ONSET_LATENCY_S = 0.0


@dataclass
class TempoCandidate:
    """One metrical level the beat could be counted at.

    bpm : beats per minute at that level.
    score : 0..1, how likely a listener counts this level (the candidates' scores sum to 1).
    level : how it relates to the chosen level: "chosen", "half", "double", "third", "triple".
    """

    bpm: float
    score: float
    level: str


@dataclass
class PulseEstimate:
    """The beat level chosen from periodicity: seconds per beat and the periodicity found."""

    period: float  # seconds per beat
    scores: dict
    acf: np.ndarray | None = None  # the accent autocorrelation it was chosen from


# How the tracker's activation mixes the onset envelopes (weights measured on the dev set).
ACTIVATION_MIX = {"onset": 0.225, "accent": 0.225, "note_onset": 0.25, "onset_low": 0.3}


def beat_activation(features: Features, sensitivity: float) -> np.ndarray:
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
    return PulseEstimate(period=lag / fps, scores=scores, acf=acf)


# Levels related to the chosen beat, as factors on its tempo.
LEVEL_FACTORS = {"chosen": 1.0, "half": 0.5, "double": 2.0, "third": 1.0 / 3.0, "triple": 3.0}
CANDIDATE_RANGE_BPM = (30.0, 300.0)
# The tempo prior: log-normal in BPM, fitted on the development sets' true tempi (the 34
# classical/folk pieces and the 22 contemporary pieces of the pop-dev half; the held-out
# half is not used): 2 ** mean(log2 BPM) = 105.5 BPM, standard deviation 0.41 octaves.
PRIOR_CENTRE_BPM = 105.5
PRIOR_OCTAVES = 0.41
# Switching away from the periodicity's choice to its half or double takes either a clear
# drum backbeat at the other level (kick and snare alternating beat by beat, see
# :func:`backbeat`: its strength there plus its gain over the chosen level, plus a little
# of the prior's preference), without the prior finding the other level far less likely,
# or a chosen level the prior finds far less likely, without the backbeat against it.
# Measured on the development sets (classical/folk and pop-dev).
BACKBEAT_MIN = 0.05
BACKBEAT_EVIDENCE = 0.25
BACKBEAT_PRIOR_WEIGHT = 0.02
BACKBEAT_PRIOR_SLACK = 2.5
PRIOR_LEAD = 2.5
PRIOR_BACKBEAT_SLACK = 0.05
# Log-odds by which the chosen level leads the best alternative in ``tempo_candidates``.
CHOSEN_BONUS = 1.0
# The backbeat counts at most this many times the snare's own alternation.
BACKBEAT_SNARE_SHARE = 10.0


def tempo_log_prior(bpm: float) -> float:
    """Log prior (up to a constant) of a beat at ``bpm``: the fitted log-normal."""
    return -0.5 * (np.log2(bpm / PRIOR_CENTRE_BPM) / PRIOR_OCTAVES) ** 2


def peak_near(env: np.ndarray, fps: float, times: np.ndarray, radius_s: float = 0.05) -> np.ndarray:
    """The envelope's maximum within ``radius_s`` of each time (seconds)."""
    r = max(1, round(radius_s * fps))
    idx = np.clip(np.round(np.asarray(times) * fps).astype(int), 0, len(env) - 1)
    if not len(idx):
        return np.zeros(0)
    return scipy.ndimage.maximum_filter1d(np.asarray(env), size=2 * r + 1, mode="nearest")[idx]


def drum_bands(features: Features) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear activations of the low, mid and high bands (kick, snare, hats), computed once
    per :class:`~.features.Features` and kept on it."""
    cached = getattr(features, "_drum_bands", None)
    if cached is None:
        fps = features.onset_fps
        cached = tuple(np.clip(activation(x, fps, None), 0.0, None)
                       for x in (features.onset_low, features.onset_mid, features.onset_high))
        features._drum_bands = cached
    return cached


def level_grids(beats: np.ndarray, factor: float) -> list[np.ndarray]:
    """Beat times at ``factor`` times the tempo of ``beats``: subdivided (2, 3) or every
    n-th beat (1/2, 1/3; one grid per phase)."""
    if factor >= 1.5:
        k = round(factor)
        ibi = np.diff(beats)
        return [np.sort(np.concatenate([beats] + [beats[:-1] + ibi * j / k for j in range(1, k)]))]
    if factor <= 0.75:
        k = round(1.0 / factor)
        return [beats[p::k] for p in range(k)]
    return [beats]


def kick_and_snare(features: Features, beats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kick (low band) and snare (mid and high bands together: a snare sounds in both,
    comping chords and hats each in one) activation at each beat (seconds)."""
    fps = features.onset_fps
    low, mid, high = drum_bands(features)
    kick = peak_near(low, fps, beats, 0.04)
    return kick, np.sqrt(peak_near(mid, fps, beats, 0.04) * peak_near(high, fps, beats, 0.04))


def backbeat(features: Features, beats: np.ndarray) -> float:
    """How strongly kick and snare alternate beat by beat (0 when they do not).

    The snare (mid band together with the high band's rattle) minus the kick (low band) at
    each beat; their alternation is the negative lag-one autocovariance, in activation
    units (about 0.1-0.4 for a rock backbeat at the quarter level, near 0 at the half or
    double level and in music without drums).
    """
    if len(beats) < 6:
        return 0.0
    kick, snare = kick_and_snare(features, beats)
    kick = kick - kick.mean()
    snare = snare - snare.mean()
    d = snare - kick
    # A kick alone on every other beat (no snare between) is no backbeat: the snare's own
    # alternation bounds the measure.
    return float(min(-np.mean(d[:-1] * d[1:]), BACKBEAT_SNARE_SHARE * -np.mean(snare[:-1] * snare[1:])))


def drum_accent(features: Features) -> np.ndarray:
    """Kick plus snare per onset frame: the low band plus the geometric mean of the mid and
    high bands (a snare sounds in both; comping chords and hats each in one)."""
    low, mid, high = drum_bands(features)
    return low + np.sqrt(mid * high)


# Shifting the beats to a drum-richer phase (the swung off-beat trap of shuffles) takes
# this much more kick and snare there and a backbeat that appears with the shift.
PHASE_DRUM_RATIO = 1.1
PHASE_BACKBEAT_LEAD = 0.03


def drum_phase(features: Features, beats: np.ndarray) -> np.ndarray:
    """Move ``beats`` by a third, half or two thirds of a beat where kick and snare sit.

    In a shuffle the swung off-beat eighths (bass, comping, hats) can outweigh the beat,
    and the tracker may lock a third of a beat early; the kick and snare still fall on the
    beats and their backbeat alternates there.
    """
    if len(beats) < 8:
        return beats
    fps = features.onset_fps
    drum = drum_accent(features)
    ibi = np.diff(beats)
    ibi = np.append(ibi, ibi[-1])
    base_drum = float(peak_near(drum, fps, beats, 0.03).mean())
    base_bb = backbeat(features, beats)
    best, best_drum = beats, base_drum
    for fraction in (1.0 / 3.0, 0.5, 2.0 / 3.0):
        shifted = beats + fraction * ibi
        d = float(peak_near(drum, fps, shifted, 0.03).mean())
        bb = backbeat(features, shifted)
        if (d > PHASE_DRUM_RATIO * base_drum and d > best_drum and bb >= PHASE_BACKBEAT_LEAD
                and bb >= base_bb + PHASE_BACKBEAT_LEAD):
            best, best_drum = shifted, d
    if best is beats:
        return beats
    shifted = best[best <= features.duration]
    return snap_to_onsets(np.round(shifted * fps).astype(np.int64), drum, fps) / fps


# The hi-hats count the beat a singer counts in 8ths: where they also sound on the 16th
# positions (a quarter and three quarters into the beat) this strongly, relative to the
# hats on the beat, and on the 8th off-beat, the beat is counted at twice the tempo (the
# half-time feel: snare on 3, hats in 8ths of the written quarter). Measured on pop-dev.
HAT_SIXTEENTH_SHARE = 0.08
HAT_EIGHTH_SHARE = 0.2
HAT_MIN = 0.1
# Hats as loud on the 16ths as on the beat are no hats keeping time (running 16th notes).
HAT_SIXTEENTH_MAX_SHARE = 0.4
# Doubling for the hats stays at or below this tempo, and where the prior finds the double
# at most this much less likely.
HAT_DOUBLE_MAX_BPM = 170.0
HAT_PRIOR_SLACK = 0.5
# With drums (a backbeat at some level) the beat a singer counts is never slower than this
# unless the user asks (a rock track at 108 BPM is not 40 or 54 BPM).
DRUM_MIN_BPM = 60.0
DRUM_FLOOR_MAX_BPM = 180.0


def hats_in_sixteenths(features: Features, beats: np.ndarray) -> bool:
    """True when the hi-hats (the band above 5 kHz) divide ``beats`` into 16ths: they sound
    on the beat, on the 8th off-beat and on the 16th positions between (see
    :data:`HAT_SIXTEENTH_SHARE`), so the beat a singer counts is twice as fast."""
    if len(beats) < 8:
        return False
    fps = features.onset_fps
    high = drum_bands(features)[2]
    starts, ibi = beats[:-1], np.diff(beats)
    on, quarter, half, three = (float(peak_near(high, fps, starts + f * ibi, 0.02).mean())
                                for f in (0.0, 0.25, 0.5, 0.75))
    return (on >= HAT_MIN and half >= HAT_EIGHTH_SHARE * on
            and HAT_SIXTEENTH_SHARE * on <= min(quarter, three) <= max(quarter, three) <= HAT_SIXTEENTH_MAX_SHARE * on)


def choose_level(features: Features, beats: np.ndarray, acf: np.ndarray | None = None) -> tuple[float, list[TempoCandidate]]:
    """The metrical level a listener taps, relative to tracked ``beats``: (factor, candidates).

    ``factor`` is 1 (keep), 2 (double) or 0.5 (half); the candidates are every level of
    :data:`LEVEL_FACTORS` within 30..300 BPM, named relative to the level chosen here,
    scored 0..1 (a softmax of prior, backbeat and periodicity), best first. Thirds and
    triples are reported for the user to choose but never chosen automatically (the
    meter's subdivision already decides between 3/4 and 6/8).
    """
    if len(beats) < 6:
        return 1.0, []
    bpm = 60.0 / float(np.median(np.diff(beats)))
    fps = features.onset_fps
    evidence = {}
    for factor in (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0):
        b = bpm * factor
        if not CANDIDATE_RANGE_BPM[0] <= b <= CANDIDATE_RANGE_BPM[1]:
            continue
        alt = max(backbeat(features, g) for g in level_grids(beats, factor))
        periodic = _acf_at(acf, 60.0 * fps / b) if acf is not None else 0.0
        evidence[factor] = (tempo_log_prior(b), alt, periodic)
    chosen = 1.0
    prior0, alt0, _ = evidence[1.0]
    # Drums: a backbeat at this level or at its half.
    drums = max(alt0, evidence.get(0.5, (0.0, 0.0, 0.0))[1]) >= BACKBEAT_MIN
    for factor in (2.0, 0.5):
        if factor not in evidence:
            continue
        prior, alt, _ = evidence[factor]
        if factor == 2.0 and drums and bpm * factor <= HAT_DOUBLE_MAX_BPM and (
                (alt0 >= BACKBEAT_MIN and prior >= prior0 - HAT_PRIOR_SLACK and hats_in_sixteenths(features, beats))
                or (bpm < DRUM_MIN_BPM and bpm * factor <= DRUM_FLOOR_MAX_BPM)):
            chosen = factor
            break
        if factor == 0.5 and drums and (bpm * factor < DRUM_MIN_BPM
                                        or any(hats_in_sixteenths(features, g) for g in level_grids(beats, factor))):
            continue
        weight_of_drums = alt + (alt - alt0) + BACKBEAT_PRIOR_WEIGHT * (prior - prior0)
        by_drums = (alt >= BACKBEAT_MIN and weight_of_drums >= BACKBEAT_EVIDENCE
                    and prior >= prior0 - BACKBEAT_PRIOR_SLACK)
        by_prior = prior >= prior0 + PRIOR_LEAD and alt >= alt0 - PRIOR_BACKBEAT_SLACK
        if by_drums or by_prior:
            chosen = factor
            break
    logits = {f: p + 10.0 * float(np.clip(a, -0.1, 0.15)) + 2.0 * c for f, (p, a, c) in evidence.items()}
    # The level chosen ranks first, by a margin that says it was chosen.
    others = [v for f, v in logits.items() if f != chosen]
    logits[chosen] = max(logits[chosen] + CHOSEN_BONUS, max(others, default=0.0) + CHOSEN_BONUS)
    top = max(logits.values())
    weights = {f: float(np.exp(v - top)) for f, v in logits.items()}
    out = []
    for f, w in weights.items():
        # Named relative to the level chosen; a level with no name there (a quarter or
        # sixth of it, after a move) is left out.
        name = next((n for n, v in LEVEL_FACTORS.items() if abs(np.log(v * chosen / f)) < 0.01), None)
        if name is not None:
            out.append(TempoCandidate(round(bpm * f, 2), w, name))
    total = sum(c.score for c in out)
    for c in out:
        c.score /= total
    return chosen, sorted(out, key=lambda c: -c.score)


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


# The tempo range searched around a tempo the user set: the beats stay at that level.
FIXED_TEMPO_SPREAD = 1.06


def track_beats(
    act: np.ndarray,
    fps: float,
    period: float,
    sensitivity: float = 0.5,
    spread: float | None = None,
) -> np.ndarray:
    """Viterbi-decode beat times (seconds) near ``period`` seconds per beat.

    See the module docstring for what ``sensitivity`` changes. ``spread`` (> 1) bounds the
    beat interval to ``period / spread .. period * spread`` instead of the sensitivity's range.
    """
    s = float(np.clip(sensitivity, 0.0, 1.0))
    if spread is None:
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
