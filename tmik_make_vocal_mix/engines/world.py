"""The second engine: a sung take re-pitched and re-coloured with WORLD (``pyworld``).

The neural voice is accurate in about F3-A4 and has one colour. WORLD separates a take into
pitch, spectral envelope and aperiodicity, so the same words can be sung at another pitch
(a melody far outside the neural voice's range is sung whole octaves away and moved back
here; near pitches re-sing best), with the envelope's frequency axis warped for a darker or brighter voice
colour (formant shift), more aperiodicity for breath, and detuned, slightly offset copies
for a doubled or choir lead. The target pitch curve is the one the neural voice follows
(:mod:`.pitch`).
"""

from __future__ import annotations

import numpy as np
import soxr

from .pitch import phrase_curve

FRAME_MS = 5.0
DOUBLE_LEVEL = 0.35  # each doubling voice against the lead (-9 dB): thickens, the lead keeps pitch and words


def pitch_curve(notes, times: np.ndarray, *, vibrato_cents: float = 30.0, seed: int = 0,
                shift: float = 0.0) -> np.ndarray:
    """Target F0 (Hz) at ``times`` for ``notes``; 0 in rests (:func:`.pitch.phrase_curve` per phrase)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(len(times))
    notes = sorted(notes, key=lambda n: n.start)
    sounding = np.zeros(len(times), dtype=bool)
    for n in notes:
        sounding |= (times >= n.start) & (times < n.end)
    phrase: list = []
    for n in [*notes, None]:
        if phrase and (n is None or n.start - phrase[-1].end >= 0.03):  # a rest ends the glide
            sel = (times >= phrase[0].start) & (times < phrase[-1].end) & sounding
            out[sel] = phrase_curve(times[sel], phrase, shift=shift, vibrato_cents=vibrato_cents, rng=rng)
            phrase = []
        if n is not None:
            phrase.append(n)
    return out


def load_pyworld():
    """Import pyworld, hushing the deprecation warning its ``pkg_resources`` import raises."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import pyworld

    return pyworld


def _warp_envelope(sp: np.ndarray, factor: float) -> np.ndarray:
    """Spectral envelope with its frequency axis scaled by ``factor`` (>1: formants move up)."""
    if abs(factor - 1.0) < 1e-3:
        return sp
    bins = np.arange(sp.shape[1])
    src = np.clip(bins / factor, 0, sp.shape[1] - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, sp.shape[1] - 1)
    w = src - lo
    return sp[:, lo] * (1 - w) + sp[:, hi] * w


def _segments(notes, duration: float, gap: float = 0.3, pad: float = 0.15) -> list[tuple[float, float]]:
    """Time spans (seconds) covering the notes, split at rests longer than ``gap``, padded."""
    spans: list[list[float]] = []
    for n in sorted(notes, key=lambda n: n.start):
        if spans and n.start - spans[-1][1] < gap:
            spans[-1][1] = max(spans[-1][1], n.end)
        else:
            spans.append([n.start, n.end])
    return [(max(0.0, s - pad), min(duration, e + pad)) for s, e in spans]


def _resing_segment(x: np.ndarray, sr: int, notes, offset: float, shift_back: float, formant_shift: float,
                    breathiness: float, vibrato_cents: float, voices, seed: int) -> np.ndarray:
    pw = load_pyworld()
    f0, t = pw.dio(x, sr, frame_period=FRAME_MS)
    f0 = pw.stonemask(x, f0, t, sr)
    sp = pw.cheaptrick(x, f0, t, sr)
    ap = pw.d4c(x, f0, t, sr)
    target = pitch_curve(notes, t + offset, vibrato_cents=vibrato_cents, seed=seed, shift=shift_back)
    voiced = (f0 > 0) & (target > 0)
    sp = np.ascontiguousarray(_warp_envelope(sp, formant_shift))
    if breathiness > 0:
        freqs = np.linspace(0, sr / 2, ap.shape[1])
        tilt = np.clip((freqs - 1000.0) / 3000.0, 0.0, 1.0)  # breath lives in the upper bands
        ap = np.clip(ap + breathiness * tilt[None, :] * (1.0 - ap), 0.0, 1.0)
    ap = np.ascontiguousarray(ap)
    lead = pw.synthesize(np.ascontiguousarray(np.where(voiced, target, 0.0)), sp, ap, sr, FRAME_MS)[: len(x)]
    out = np.zeros(len(x))
    out[: len(lead)] += lead
    _add_doubles(out, lead, sr, voices)
    return out


def _add_doubles(out: np.ndarray, lead: np.ndarray, sr: int, voices) -> None:
    """Add the doubling voices (``voices[1:]``: (cents, delay s)) of one phrase's ``lead`` to ``out``."""
    for cents, delay in voices[1:]:
        # A double is the lead played a few cents sharp or flat (resampled, so also a few
        # milliseconds longer or shorter over a phrase: a natural looseness) and a little late.
        y = soxr.resample(lead, sr, sr * 2.0 ** (-cents / 1200.0))
        d = int(delay * sr)
        k = max(0, min(len(y), len(out) - d))
        out[d:d + k] += y[:k] * DOUBLE_LEVEL


def _voices(doubles: int, seed: int) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed + 7)
    # Tight doubles: wider detune or later copies smear the consonants (choir's word error rate on
    # one test song: 0.31 with +-3-7 cents, 8-25 ms, doubles at 0.55 on the neural take; 0.13 with these).
    return [(0.0, 0.0)] + [(rng.uniform(1.5, 4.0) * rng.choice([-1, 1]), rng.uniform(0.004, 0.012))
                           for _ in range(doubles)]


def double(take: np.ndarray, sr: int, notes, *, doubles: int, seed: int = 0) -> np.ndarray:
    """``take`` with ``doubles`` detuned (+-1.5-4 cents), delayed (4-12 ms) copies, phrase by phrase.

    The same doubling as :func:`resing` gives, for a take that needs no re-singing (the neural
    voice in its own range): no WORLD analysis, so the words stay as clear as the lead's.
    """
    x = np.asarray(take, dtype=np.float64).reshape(-1)
    if doubles <= 0 or not np.any(np.abs(x) > 1e-5):
        return np.asarray(take, dtype=np.float32)
    voices = _voices(doubles, seed)
    out = x.copy()
    for a, b in _segments(notes, len(x) / sr):
        i0, i1 = int(a * sr), min(len(x), int(b * sr))
        if i1 - i0 >= int(0.05 * sr):
            _add_doubles(out[i0:i1], x[i0:i1], sr, voices)
    out /= (1.0 + DOUBLE_LEVEL ** 2 * doubles) ** 0.5
    return out.astype(np.float32)


def resing(take: np.ndarray, sr: int, notes, *, shift_back: float = 0.0, formant_shift: float = 1.0,
           breathiness: float = 0.0, vibrato_cents: float = 30.0, doubles: int = 0, seed: int = 0) -> np.ndarray:
    """Re-sing ``take`` (mono float, ``sr``) on ``notes`` with WORLD.

    Keeps the take's voicing (where it has a pitch) and its words, replaces the pitch by
    :func:`pitch_curve` of the notes (``shift_back`` semitones applied), warps the
    envelope by ``formant_shift``, adds breath (``breathiness`` 0..1) and ``doubles``
    detuned (+-1.5-4 cents), delayed (4-12 ms) copies. Returns audio of the same length.
    """
    x = np.ascontiguousarray(take, dtype=np.float64)
    out = np.zeros(len(x))
    if not np.any(np.abs(x) > 1e-5):
        return out.astype(np.float32)
    voices = _voices(doubles, seed)
    # Only the sung stretches are analysed: rests are silence in the take anyway, and WORLD's
    # analysis is the engine's main cost.
    for a, b in _segments(notes, len(x) / sr):
        i0, i1 = int(a * sr), min(len(x), int(b * sr))
        if i1 - i0 < int(0.05 * sr):
            continue
        seg = _resing_segment(x[i0:i1], sr, notes, i0 / sr, shift_back, formant_shift, breathiness,
                              vibrato_cents, voices, seed)
        out[i0:i0 + len(seg)] += seg[: len(out) - i0]
    out /= (1.0 + DOUBLE_LEVEL ** 2 * doubles) ** 0.5
    return out.astype(np.float32)
