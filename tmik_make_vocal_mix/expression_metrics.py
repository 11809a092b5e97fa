"""What a listener hears of a sung take's expression, measured from the audio's own F0 and level.

:func:`expression_figures` is the one entry point (qc.json of every take, ``make eval``). It reads
the pitch of the rendered voice itself, never the curve the engine was asked to sing, so it
measures what came out of the vocoder, the neural model and WORLD.

F0. librosa's YIN (parabolic interpolation between lags, about 3 cents of error on a vibrato tone)
at 12 kHz with a 5 ms hop, run only on the notes (not on rests). A frame counts where the voice is
sounding (short-term level within :data:`GATE_DB` of the take's loud in-note level), periodic (the
frame correlates with itself one period later by :data:`MIN_VOICING`: unvoiced consonants and breath
drop out) and its F0 lies within :data:`NEAR_CENTS` of the written note (octave slips drop out).
Short gaps are bridged, :data:`TRANSIENT_S` either side of a voicing break is left out (the pitch
falls into and rises out of a consonant), and a 5-frame median takes out single-frame slips.

Vibrato, per note of 0.6 s or longer (its first :data:`SETTLE_S` and last :data:`RELEASE_S` left
out: the glide, scoop or overshoot into the note and the release are not vibrato):

1. the F0 in cents is detrended by a quadratic (slow drift of a held note is not vibrato);
2. the rate is the peak of a least-squares sinusoid periodogram (Lomb-Scargle: exact on the
   half-second stretches a short note gives, where an FFT would have 2 Hz bins) over
   :data:`RATE_BAND_HZ`;
3. complex demodulation at that rate (a Hann window of two vibrato periods) gives the extent
   envelope: peak-to-peak cents over time, following growth and late onset;
4. the note has vibrato when the rate lies in 4-8 Hz, the sustained extent (the envelope's 75th
   percentile) reaches :data:`MIN_EXTENT_CENTS` peak to peak, and the demodulated component
   carries at least :data:`MIN_PERIODICITY` of the detrended F0's variance (a periodic
   modulation, not jitter or a wandering pitch).

Its onset delay is the time from the note's start until the envelope first reaches half the
sustained extent (so at least :data:`SETTLE_S` + a little, where the vibrato is there at once);
its extent (``vibrato_extent_cents``, PEAK TO PEAK, i.e. twice the "semi-extent" many papers give) the
envelope's median from then on. Across notes the figures are the share of measured long notes with
vibrato, the mean rate, the coefficient of variation (population std / mean) of rate and of onset
delay across the notes with vibrato, and their mean extent.

Leaps: consecutive notes of a phrase at least :data:`LEAP_SEMITONES` apart, joined (rest under
:data:`LEAP_GAP_S`), the second held :data:`LEAP_SUSTAIN_S` or longer. A leap is shaped when the
F0, coming from the old note's side, passes the new note's settled level (its median after
:data:`OVERSHOOT_WINDOW_S`) by :data:`OVERSHOOT_CENTS` in the leap's direction within
:data:`OVERSHOOT_WINDOW_S` of its start (overshoot), or moves away from the leap by as much from the
old note's level in its last :data:`PREPARATION_WINDOW_S` (preparation; only after a note held 0.3 s
or more, which has a level and a wobble of its own). Both thresholds grow by the note's own
modulation (half its 5-95 % spread: the new note's just after the overshoot window, the old note's
over its held part, or its vibrato half-extent), so an early vibrato alone is not counted.

Loudness within phrases: the short-term level (:data:`LEVEL_WINDOW_S` RMS, in dB) over the voiced
frames of each phrase's notes (consonants and breaths left out); its range is the
:data:`LOUDNESS_PERCENTILES` spread; the figure is the median over phrases of 1 s or more of notes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

LONG_NOTE_S = 0.6  # notes this long or longer are measured for vibrato
F0_SR = 12000
HOP_S = 0.005  # F0 and level frames: 200 per second, 33 per cycle of a 6 Hz vibrato
FPS = round(1.0 / HOP_S)
GATE_DB = 35.0  # a frame sounds when its level is within this of the take's loud (95th percentile) in-note level
MIN_VOICING = 0.7  # a frame's periodicity (see _periodicity) below this is not a sung pitch
NEAR_CENTS = 350.0  # an F0 further from the written note than this is a slip (or another note's)
TRANSIENT_S = 0.025  # left out either side of a voicing break
# The first part of a note (the transition into it) is not searched for vibrato: sung notes open with
# a transient of about 120 ms (J. Dai & S. Dixon, pitch trajectories within the notes of five SATB
# quartets: code.soundsoftware.ac.uk/projects/intonation-trajectories-within-tones).
SETTLE_S = 0.1
RELEASE_S = 0.05
RATE_BAND_HZ = (3.0, 9.0)  # the periodogram searches here; vibrato must peak in VIBRATO_HZ
VIBRATO_HZ = (4.0, 8.0)
MIN_EXTENT_CENTS = 20.0  # peak to peak; below this a modulation is not heard as vibrato
MIN_PERIODICITY = 0.5  # share of the detrended F0's variance in the demodulated vibrato component
MIN_VALID_SHARE = 0.7  # a long note whose F0 is found in fewer of its frames is not measured
LEAP_SEMITONES = 3
LEAP_GAP_S = 0.15
LEAP_SUSTAIN_S = 0.4  # the new note's last part (after OVERSHOOT_WINDOW_S) shows its own wobble
OVERSHOOT_CENTS = 20.0
OVERSHOOT_WINDOW_S = 0.25
PREPARATION_WINDOW_S = 0.2
PHRASE_REST_S = 0.3  # phrases split at rests this long when none are given
LEVEL_WINDOW_S = 0.05
LOUDNESS_PERCENTILES = (10.0, 95.0)
MIN_PHRASE_SUNG_S = 1.0

KEYS = ("long_notes", "vibrato_share", "vibrato_rate_hz", "vibrato_rate_cv", "vibrato_onset_cv",
        "vibrato_extent_cents", "leaps", "overshoot_share", "phrase_loudness_range_db")


@dataclass(frozen=True)
class NoteVibrato:
    """What :func:`note_vibrato` heard in one note (rate, onset and extent are None without vibrato)."""

    index: int
    vibrato: bool
    rate_hz: float | None
    onset_s: float | None
    extent_cents: float | None
    periodicity: float


@dataclass(frozen=True)
class Leap:
    """One measured leap: from note ``index - 1`` to ``index``, ``semitones`` signed."""

    index: int
    semitones: int
    overshoot_cents: float
    preparation_cents: float
    overshoot_limit: float  # what counts: OVERSHOOT_CENTS beyond the note's own vibrato or wobble
    preparation_limit: float
    shaped: bool


def _hz(pitch: float) -> float:
    return 440.0 * 2.0 ** ((pitch - 69.0) / 12.0)


def _cv(values: Sequence[float]) -> float | None:
    """Coefficient of variation (population std / mean); None for fewer than 2 values."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2 or np.mean(v) <= 0:
        return None
    return float(np.std(v) / np.mean(v))


def warm_up() -> float:
    """Compile (or load from numba's cache) what :func:`expression_figures` runs (YIN's helpers); seconds."""
    import time
    from types import SimpleNamespace

    t0 = time.perf_counter()
    sr = 24000
    t = np.arange(int(1.2 * sr)) / sr
    tone = (0.3 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)
    expression_figures(tone, sr, [SimpleNamespace(start=0.1, end=1.1, pitch=57)])
    return time.perf_counter() - t0


def default_phrases(notes) -> list[list[int]]:
    """Note indices split at rests of :data:`PHRASE_REST_S` or longer (the score's own rule, that gap)."""
    from .score import phrases_of

    return phrases_of(list(notes), gap=PHRASE_REST_S)


class _Track:
    """F0 (Hz, NaN where not measured) and level (dB) of a take on one grid of :data:`HOP_S` frames."""

    def __init__(self, vocal: np.ndarray, sr: int, notes):
        import soxr

        self.x = soxr.resample(np.asarray(vocal, dtype=np.float32), sr, F0_SR) if sr != F0_SR else \
            np.asarray(vocal, dtype=np.float32)
        self.hop = round(F0_SR * HOP_S)
        n_frames = len(self.x) // self.hop + 1
        self.f0 = np.full(n_frames, np.nan)
        # Level: RMS over LEVEL_WINDOW_S centred on each frame, from a running sum of squares.
        half = round(F0_SR * LEVEL_WINDOW_S / 2)
        energy = np.concatenate([[0.0], np.cumsum(self.x.astype(np.float64) ** 2)])
        centre = np.arange(n_frames) * self.hop
        lo, hi = np.clip(centre - half, 0, len(self.x)), np.clip(centre + half, 0, len(self.x))
        mean_sq = (energy[hi] - energy[lo]) / np.maximum(hi - lo, 1)
        self.level_db = 10.0 * np.log10(mean_sq + 1e-12)
        inside = np.zeros(n_frames, dtype=bool)
        for n in notes:
            inside[self.frame(n.start):self.frame(n.end)] = True
        loud = np.percentile(self.level_db[inside], 95) if inside.any() else -120.0
        self.sounding = self.level_db >= loud - GATE_DB
        pitches = [n.pitch for n in notes] or [60]
        # NEAR_CENTS (3.5 semitones) around the notes, and a little more so YIN is not at its bounds there.
        self.fmin, self.fmax = _hz(min(pitches) - 5), _hz(max(pitches) + 5)

    def frame(self, t: float) -> int:
        return int(np.clip(round(t * FPS), 0, len(self.f0)))

    def measure(self, regions: list[tuple[float, float]]) -> None:
        """YIN over the (merged) regions, in seconds."""
        import librosa

        frame_length = 2 * int(np.ceil(F0_SR / self.fmin)) + 4  # two periods of the lowest note
        merged: list[list[float]] = []
        for a, b in sorted(regions):
            if merged and a <= merged[-1][1] + 0.05:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        for a, b in merged:
            f0_a, f0_b = self.frame(max(0.0, a)), self.frame(b)
            if f0_b - f0_a < 4:
                continue
            seg = self.x[f0_a * self.hop:f0_b * self.hop]
            f0 = librosa.yin(seg, fmin=self.fmin, fmax=self.fmax, sr=F0_SR, frame_length=frame_length,
                             hop_length=self.hop)[:f0_b - f0_a]
            # YIN answers at the search bounds when it finds no period there.
            f0 = np.where((f0 > self.fmin * 1.01) & (f0 < self.fmax * 0.99), f0, np.nan)
            f0[_periodicity(seg, f0, frame_length, self.hop) < MIN_VOICING] = np.nan
            self.f0[f0_a:f0_a + len(f0)] = f0
        self.f0[~self.sounding] = np.nan

    def cents(self, t0: float, t1: float, pitch: float) -> np.ndarray:
        """F0 in cents from ``pitch`` over [t0, t1): NaN where not measured; short gaps bridged, slips removed.

        Around a voicing break (an unvoiced consonant, a breath) :data:`TRANSIENT_S` either side is
        left out too: the voice's pitch falls into and rises out of such breaks, which is not a gesture.
        """
        from scipy.ndimage import binary_dilation, median_filter

        raw = self.f0[self.frame(t0):self.frame(t1)]
        c = 1200.0 * np.log2(raw / _hz(pitch))
        c[np.abs(c) > NEAR_CENTS] = np.nan
        ok = np.isfinite(c)
        if ok.sum() < 4:
            return c
        idx = np.arange(len(c))
        filled = np.interp(idx, idx[ok], c[ok])
        filled = median_filter(filled, size=5, mode="nearest")
        # Bridge gaps of up to 30 ms only; longer ones stay unmeasured, and so do their edges.
        gap = _run_lengths(~ok) > 6
        unvoiced = _run_lengths(~np.isfinite(raw)) > 6
        edge = round(TRANSIENT_S * FPS)
        if unvoiced.any():
            gap |= binary_dilation(unvoiced, iterations=edge)
        filled[gap] = np.nan
        return filled


def _periodicity(seg: np.ndarray, f0: np.ndarray, frame_length: int, hop: int) -> np.ndarray:
    """Normalised correlation of each YIN frame's window with itself one period (1 / ``f0``) later.

    Near 1 where the voice is periodic, low on unvoiced consonants, breath and noise, where YIN
    still answers some lag. The windows are YIN's own (centred frames, half the frame long).
    """
    out = np.zeros(len(f0))
    ok = np.flatnonzero(np.isfinite(f0))
    if not len(ok):
        return out
    width = frame_length // 2
    padded = np.pad(seg.astype(np.float64), (frame_length // 2, 2 * frame_length))
    lag = F0_SR / f0[ok]
    whole = np.floor(lag).astype(int)
    frac = (lag - whole)[:, None]
    idx = ok[:, None] * hop + np.arange(width)[None, :]
    a = padded[idx]
    b = (1.0 - frac) * padded[idx + whole[:, None]] + frac * padded[idx + whole[:, None] + 1]
    out[ok] = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1) + 1e-20)
    return out


def _run_lengths(mask: np.ndarray) -> np.ndarray:
    """For each True element, the length of the run of Trues it belongs to (0 for False)."""
    out = np.zeros(len(mask), dtype=int)
    i = 0
    while i < len(mask):
        if mask[i]:
            j = i
            while j < len(mask) and mask[j]:
                j += 1
            out[i:j] = j - i
            i = j
        else:
            i += 1
    return out


def _detrend(c: np.ndarray) -> np.ndarray:
    t = np.linspace(-1.0, 1.0, len(c))
    return c - np.polyval(np.polyfit(t, c, 2), t)


def _sinusoid_fit(r: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """Variance of ``r`` explained by the least-squares sinusoid at each frequency (Lomb-Scargle)."""
    t = np.arange(len(r)) / FPS
    w = 2 * np.pi * freqs[:, None] * t[None, :]
    cos, sin = np.cos(w), np.sin(w)
    # Normal equations of r ~ a cos + b sin, per frequency (2x2, solved in closed form).
    cc, ss, cs = (cos * cos).sum(1), (sin * sin).sum(1), (cos * sin).sum(1)
    rc, rs = cos @ r, sin @ r
    det = cc * ss - cs * cs
    a = (rc * ss - rs * cs) / det
    b = (rs * cc - rc * cs) / det
    return a * rc + b * rs


def _periodogram_peak(r: np.ndarray) -> tuple[float, float]:
    """(frequency, share of variance) of the best least-squares sinusoid in RATE_BAND_HZ, to 0.01 Hz."""
    coarse = np.arange(RATE_BAND_HZ[0], RATE_BAND_HZ[1] + 1e-9, 0.1)
    best = coarse[int(np.argmax(_sinusoid_fit(r, coarse)))]
    fine = np.arange(max(RATE_BAND_HZ[0], best - 0.1), min(RATE_BAND_HZ[1], best + 0.1) + 1e-9, 0.01)
    explained = _sinusoid_fit(r, fine)
    k = int(np.argmax(explained))
    return float(fine[k]), float(explained[k] / max(float(r @ r), 1e-12))


def _envelope(r: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """(peak-to-peak extent in cents per frame, the demodulated component) at ``rate`` Hz."""
    t = np.arange(len(r)) / FPS
    z = r * np.exp(-2j * np.pi * rate * t)
    # Two periods (nulls at the rate and twice it), at most the stretch itself.
    width = min(max(3, round(2 * FPS / rate)), len(r)) | 1
    width = width if width <= len(r) else width - 2
    win = np.hanning(width + 2)[1:-1]
    norm = np.convolve(np.ones(len(r)), win, mode="same")  # truncated windows at the edges
    lp = np.convolve(z, win, mode="same") / norm
    return 4.0 * np.abs(lp), 2.0 * np.real(lp * np.exp(2j * np.pi * rate * t))


def note_vibrato(track: _Track, notes, i: int) -> NoteVibrato | None:
    """Vibrato of note ``i`` (see the module docstring); None where its F0 is not measurable."""
    n = notes[i]
    t0 = n.start + SETTLE_S
    c = track.cents(t0, n.end - RELEASE_S, n.pitch)
    if len(c) < FPS * 0.3 or np.mean(np.isfinite(c)) < MIN_VALID_SHARE:
        return None
    ok = np.isfinite(c)
    c = np.where(ok, c, np.interp(np.arange(len(c)), np.flatnonzero(ok), c[ok]))
    r = _detrend(c)
    rate, _ = _periodogram_peak(r)
    extent, component = _envelope(r, rate)
    periodicity = float(1.0 - np.var(r - component) / max(float(np.var(r)), 1e-12))
    sustained = float(np.percentile(extent, 75))
    vibrato = (VIBRATO_HZ[0] <= rate <= VIBRATO_HZ[1] and sustained >= MIN_EXTENT_CENTS
               and periodicity >= MIN_PERIODICITY)
    if not vibrato:
        return NoteVibrato(i, False, None, None, None, round(periodicity, 3))
    first = int(np.argmax(extent >= 0.5 * sustained))
    onset = SETTLE_S + first / FPS
    after = r[first:]
    if len(after) >= FPS / rate * 1.5:  # the rate where the vibrato is, not over its silent start
        rate = _periodogram_peak(after)[0]
        if not VIBRATO_HZ[0] <= rate <= VIBRATO_HZ[1]:  # what swings there is no vibrato (a fall, a slide)
            return NoteVibrato(i, False, None, None, None, round(periodicity, 3))
    return NoteVibrato(i, True, rate, onset, float(np.median(extent[first:])), round(periodicity, 3))


def _settled(c: np.ndarray) -> float | None:
    return float(np.nanmedian(c)) if np.isfinite(c).sum() >= 4 else None


def _wobble(c: np.ndarray) -> float:
    """Half the 5-95 percentile spread of a held stretch (cents): its own vibrato or wobble, either side."""
    ok = c[np.isfinite(c)]
    return float(np.diff(np.percentile(ok, [5, 95]))[0] / 2) if len(ok) >= 0.1 * FPS else 0.0


def measure_leap(track: _Track, notes, i: int, half_extent: dict[int, float]) -> Leap | None:
    """The leap into note ``i`` from note ``i - 1`` (see the module docstring); None where not measurable.

    The thresholds grow by the note's own modulation (:func:`_wobble`) where it would be taken for a
    gesture: the new note's in the 0.2 s after the overshoot window (an early vibrato), the old note's
    over its held part or its measured vibrato half-extent (``half_extent``, long notes).
    """
    a, b = notes[i - 1], notes[i]
    step = b.pitch - a.pitch
    sign = float(np.sign(step))
    # Overshoot: cents past the new note's settled level, in the leap's direction, soon after its start.
    early = track.cents(b.start - 0.03, b.start + OVERSHOOT_WINDOW_S, b.pitch)
    later = track.cents(b.start + OVERSHOOT_WINDOW_S, b.end - RELEASE_S, b.pitch)
    target = _settled(later)
    if target is None or not len(early) or np.mean(np.isfinite(early)) < 0.5:
        return None
    # Only an excursion reached from the old note's side (or from the target) is an overshoot; a new
    # syllable starting beyond the target (a scoop from below into a falling leap) is not.
    past = (early - target) * sign
    reached = np.minimum.accumulate(np.where(np.isfinite(past), past, np.inf)) <= 0.0
    over = float(np.nanmax(np.where(reached, past, np.nan))) if reached.any() else 0.0
    # The note's own modulation just after the window: an early vibrato swings as far as an overshoot.
    settling = track.cents(b.start + OVERSHOOT_WINDOW_S, min(b.end - RELEASE_S, b.start + OVERSHOOT_WINDOW_S + 0.2),
                           b.pitch)
    over_limit = OVERSHOOT_CENTS + _wobble(settling)
    # Preparation: the old note's F0 moving away from the leap just before it, measured on a note held
    # long enough to have a level of its own (its wobble, from its start to 0.1 s before its end, as above).
    prep = 0.0
    held_part = track.cents(a.start + 0.05, a.end - 0.1, a.pitch)
    before = track.cents(max(a.start + 0.05, a.end - PREPARATION_WINDOW_S), min(a.end, b.start) + 0.02, a.pitch)
    held = _settled(track.cents(a.start + 0.05, a.end - PREPARATION_WINDOW_S, a.pitch))
    if held is not None and np.isfinite(held_part).sum() >= 0.15 * FPS and np.isfinite(before).sum() >= 4:
        prep = float(np.nanmax((held - before) * sign))
    prep_limit = OVERSHOOT_CENTS + max(half_extent.get(i - 1, 0.0), _wobble(held_part))
    shaped = over >= over_limit or prep >= prep_limit
    return Leap(i, int(step), round(over, 1), round(prep, 1), round(over_limit, 1), round(prep_limit, 1),
                bool(shaped))


def _leap_indices(notes, phrases: list[list[int]]) -> list[int]:
    out = []
    for phrase in phrases:
        for j in range(1, len(phrase)):
            a, b = notes[phrase[j - 1]], notes[phrase[j]]
            if (abs(b.pitch - a.pitch) >= LEAP_SEMITONES and b.start - a.end < LEAP_GAP_S
                    and b.end - b.start >= LEAP_SUSTAIN_S):
                out.append(phrase[j])
    return out


def phrase_loudness_range(track: _Track, notes, phrases: list[list[int]]) -> list[float]:
    """The 10-95 percentile range (dB) of the short-term level over each phrase's voiced in-note frames."""
    ranges = []
    edge = round(0.03 * FPS)
    for phrase in phrases:
        frames = np.concatenate([np.arange(track.frame(notes[k].start) + edge, track.frame(notes[k].end) - edge)
                                 for k in phrase] or [np.zeros(0, dtype=int)]).astype(int)
        frames = frames[(frames >= 0) & (frames < len(track.level_db))]
        frames = frames[np.isfinite(track.f0[frames])]  # the sung vowels, not consonants or breath
        if len(frames) < MIN_PHRASE_SUNG_S * FPS:
            continue
        lo, hi = np.percentile(track.level_db[frames], LOUDNESS_PERCENTILES)
        ranges.append(float(hi - lo))
    return ranges


def expression_figures(vocal: np.ndarray, sr: int, notes, *, phrases: list[list[int]] | None = None,
                       details: bool = False) -> dict[str, Any]:
    """Vibrato, leap shaping and phrase loudness of a take, from its audio (see the module docstring).

    ``notes`` have ``start``, ``end`` (seconds) and ``pitch`` (MIDI) as written (the take sings
    them at that pitch); ``phrases`` are lists of note indices (default: split at rests of 0.3 s).
    Returns :data:`KEYS` (None where nothing could be measured) plus ``vibrato_onset_s`` (mean onset
    delay); with ``details`` also the per-note and per-leap findings.
    """
    notes = list(notes)
    empty: dict[str, Any] = {k: None for k in KEYS} | {"long_notes": 0, "leaps": 0, "vibrato_onset_s": None}
    vocal = np.asarray(vocal, dtype=np.float32)
    if vocal.ndim == 2:  # (samples, channels): the voice is the same in every channel
        vocal = vocal.mean(axis=1)
    if not notes or len(vocal) == 0 or not np.any(np.abs(vocal) > 1e-5):
        return empty
    phrases = phrases if phrases is not None else default_phrases(notes)
    track = _Track(vocal, sr, notes)
    long_idx = [i for i, n in enumerate(notes) if n.end - n.start >= LONG_NOTE_S]
    leap_idx = _leap_indices(notes, phrases)
    # Every note is tracked (the level range counts voiced frames only); the figures use long notes and leaps.
    regions = [(n.start, n.end) for n in notes]
    track.measure(regions)

    vib = [v for v in (note_vibrato(track, notes, i) for i in long_idx) if v is not None]
    half_extent = {v.index: v.extent_cents / 2 for v in vib if v.vibrato}
    leaps = [lp for lp in (measure_leap(track, notes, i, half_extent) for i in leap_idx) if lp is not None]
    loudness = phrase_loudness_range(track, notes, phrases)
    out = summarise(vib, leaps, loudness)
    if details:
        out["notes"] = vib
        out["leap_details"] = leaps
        out["phrase_ranges_db"] = loudness
    return out


def summarise(vibratos: Sequence[NoteVibrato], leaps: Sequence[Leap], loudness_ranges: Sequence[float]) -> dict[str, Any]:
    """The figures (:data:`KEYS` and ``vibrato_onset_s``) of measured notes, leaps and phrase ranges, which
    may be pooled from several takes (``make eval`` pools a style's songs, so CVs are across all its notes)."""
    with_vib = [v for v in vibratos if v.vibrato]

    def mean(values):
        return float(np.mean(values)) if len(values) else None

    def rnd(x, digits=3):
        return None if x is None else round(float(x), digits)

    return {
        "long_notes": len(vibratos),
        "vibrato_share": rnd(len(with_vib) / len(vibratos)) if vibratos else None,
        "vibrato_rate_hz": rnd(mean([v.rate_hz for v in with_vib]), 2),
        "vibrato_rate_cv": rnd(_cv([v.rate_hz for v in with_vib])),
        "vibrato_onset_cv": rnd(_cv([v.onset_s for v in with_vib])),
        "vibrato_extent_cents": rnd(mean([v.extent_cents for v in with_vib]), 1),
        "leaps": len(leaps),
        "overshoot_share": rnd(np.mean([lp.shaped for lp in leaps])) if leaps else None,
        "phrase_loudness_range_db": rnd(np.median(loudness_ranges), 2) if len(loudness_ranges) else None,
        "vibrato_onset_s": rnd(mean([v.onset_s for v in with_vib])),
    }
