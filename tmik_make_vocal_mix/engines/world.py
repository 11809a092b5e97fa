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

import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import soxr

from ..expression import DEFAULT_EXPRESSION, Expression, get_expression
from .pitch import phrase_curve

FRAME_MS = 5.0
DOUBLE_LEVEL = 0.35  # each doubling voice against the lead (-9 dB): thickens, the lead keeps pitch and words
# DIO finds the neural take's F0 as well on the take decimated 2x (StoneMask then refines it at the
# full rate; 99.3 % of frames get the same voicing), in half the time. Its F0 range stays WORLD's
# 71-800 Hz although the take is sung in about F3-A4: a higher floor made DIO call a quarter of the
# voiced frames of soft_breathy's take unvoiced (whispered words, word error rate 0.16 -> 0.25).
DIO_SPEED = 2
# CheapTrick's FFT is sized for its lowest F0 (3 periods in the window); 150 Hz gives 512 points at
# 24 kHz instead of 1024, which halves the envelope analysis and the synthesis (one FFT per pulse).
# The take's few lower notes are windowed as 150 Hz ones: a slightly smoother envelope there.
ENVELOPE_F0_FLOOR = 150.0
# D4C (aperiodicity) is most of WORLD's cost, and the aperiodicity of a sung vowel changes slowly:
# it is measured every 8th frame (40 ms) and at every voicing edge, and interpolated between.
# (Unvoiced frames are synthesised from the envelope alone, so their aperiodicity never matters.)
APERIODICITY_STEP = 8
# Segments are re-sung in this many worker processes (pyworld holds the GIL, so threads would not help).
WORKERS = 2


# Seconds before a phrase's first note that a segment starts: the neural voice's breath intake (up to
# 0.45 s, ending 40 ms before the first consonant) and the consonants before the note are re-sung with it.
BREATH_LEAD_S = 0.7
PHRASE_REST_S = 0.3  # without the score's phrases, a rest this long ends a phrase (as :func:`_segments`)


def pitch_curve(notes, times: np.ndarray, *, style: str | Expression = DEFAULT_EXPRESSION, seed: int = 0,
                shift: float = 0.0, tempo_bpm: float | Sequence[float] = 100.0,
                phrases: Sequence[Sequence[int]] | None = None,
                phrase_seeds: Sequence[int] | None = None) -> np.ndarray:
    """Target F0 (Hz) at ``times`` for ``notes``; 0 in rests (:func:`.pitch.phrase_curve` per phrase).

    ``style`` is the expression (or its name, e.g. ``VocalStyle.expression``). Phrase k (``phrases``:
    lists of indices into ``notes``, e.g. ``score.phrases``, empty ones allowed; default: split at
    rests of :data:`PHRASE_REST_S`) is planned with ``np.random.default_rng([phrase_seeds[k], k])``
    (default ``seed``) at ``tempo_bpm`` (one number, or one per phrase), the scheme the neural voice
    uses, so WORLD re-sings phrase k on the very curve the neural voice planned for it.
    """
    expr = get_expression(style)
    out = np.zeros(len(times))
    if not len(notes):
        return out
    if phrases is None:
        order = sorted(range(len(notes)), key=lambda i: notes[i].start)
        phrases = []
        for i in order:
            if phrases and notes[i].start - notes[phrases[-1][-1]].end < PHRASE_REST_S:
                phrases[-1].append(i)
            else:
                phrases.append([i])
    sounding = np.zeros(len(times), dtype=bool)
    for n in notes:
        sounding |= (times >= n.start) & (times < n.end)
    for k, idx in enumerate(phrases):
        if not len(idx):
            continue
        phrase = sorted((notes[i] for i in idx), key=lambda n: n.start)
        sel = (times >= phrase[0].start) & (times < max(n.end for n in phrase)) & sounding
        if sel.any():
            s = seed if phrase_seeds is None else int(phrase_seeds[k])
            bpm = float(tempo_bpm) if np.ndim(tempo_bpm) == 0 else float(tempo_bpm[k])
            out[sel] = phrase_curve(times[sel], phrase, shift=shift, expression=expr, tempo_bpm=bpm,
                                    rng=np.random.default_rng([s, k]))
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


def _segments(notes, duration: float, gap: float = 0.3, pad: float = 0.15,
              lead: float = BREATH_LEAD_S) -> list[tuple[float, float]]:
    """Time spans (seconds) covering the notes, split at rests longer than ``gap``, padded: ``lead``
    before (the breath and consonants the neural voice sings before a phrase), ``pad`` after.
    Spans never overlap (rests shorter than ``lead + pad`` stay inside one span)."""
    spans: list[list[float]] = []
    for n in sorted(notes, key=lambda n: n.start):
        if spans and n.start - spans[-1][1] < max(gap, lead + pad):
            spans[-1][1] = max(spans[-1][1], n.end)
        else:
            spans.append([n.start, n.end])
    return [(max(0.0, s - lead), min(duration, e + pad)) for s, e in spans]


def _aperiodicity(pw, x: np.ndarray, f0: np.ndarray, t: np.ndarray, sr: int, fft_size: int) -> np.ndarray:
    """D4C aperiodicity on every frame of ``t``, measured on every :data:`APERIODICITY_STEP`-th frame.

    The first and last frame of each voiced run are measured too, so a voiced frame is never
    interpolated towards an unvoiced one (whose aperiodicity is 1: a noisy onset).
    """
    n = len(t)
    voiced = f0 > 0
    edges = np.flatnonzero(np.diff(voiced.astype(np.int8)))
    idx = np.unique(np.concatenate([np.arange(0, n, APERIODICITY_STEP), edges, edges + 1, [n - 1]]))
    idx = idx[(idx >= 0) & (idx < n)]
    coarse = pw.d4c(x, np.ascontiguousarray(f0[idx]), np.ascontiguousarray(t[idx]), sr, fft_size=fft_size)
    pos = np.interp(np.arange(n), idx, np.arange(len(idx)))
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(idx) - 1)
    w = (pos - lo)[:, None]
    return coarse[lo] * (1.0 - w) + coarse[hi] * w


def _resing_segment(x: np.ndarray, sr: int, notes, offset: float, shift_back: float, formant_shift: float,
                    breathiness: float, expression: Expression, tempo_bpm, phrases, phrase_seeds,
                    voices, seed: int) -> np.ndarray:
    pw = load_pyworld()
    x = np.ascontiguousarray(x, dtype=np.float64)
    f0, t = pw.dio(x, sr, frame_period=FRAME_MS, speed=DIO_SPEED)
    f0 = pw.stonemask(x, f0, t, sr)
    fft_size = pw.get_cheaptrick_fft_size(sr, ENVELOPE_F0_FLOOR)
    sp = pw.cheaptrick(x, f0, t, sr, fft_size=fft_size)
    ap = _aperiodicity(pw, x, f0, t, sr, fft_size)
    target = pitch_curve(notes, t + offset, style=expression, seed=seed, shift=shift_back, tempo_bpm=tempo_bpm,
                         phrases=phrases, phrase_seeds=phrase_seeds)
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
           breathiness: float = 0.0, style: str | Expression = DEFAULT_EXPRESSION,
           tempo_bpm: float | Sequence[float] = 100.0,
           phrases: Sequence[Sequence[int]] | None = None, phrase_seeds: Sequence[int] | None = None,
           doubles: int = 0, seed: int = 0) -> np.ndarray:
    """Re-sing ``take`` (mono float, ``sr``) on ``notes`` with WORLD.

    Keeps the take's voicing (where it has a pitch) and its words, replaces the pitch by
    :func:`pitch_curve` of the notes (``shift_back`` semitones applied; ``style``, ``tempo_bpm``,
    ``phrases``, ``phrase_seeds`` and ``seed`` as there), warps the envelope by ``formant_shift``,
    adds breath (``breathiness`` 0..1) and ``doubles`` detuned (+-1.5-4 cents), delayed (4-12 ms)
    copies. Returns audio of the same length.
    """
    expression = get_expression(style)
    x = np.ascontiguousarray(take, dtype=np.float64)
    out = np.zeros(len(x))
    if not np.any(np.abs(x) > 1e-5):
        return out.astype(np.float32)
    voices = _voices(doubles, seed)
    # Only the sung stretches are analysed: rests are silence in the take anyway, and WORLD's
    # analysis is the engine's main cost.
    jobs = []
    for a, b in _segments(notes, len(x) / sr):
        i0, i1 = int(a * sr), min(len(x), int(b * sr))
        if i1 - i0 >= int(0.05 * sr):
            jobs.append((i0, (x[i0:i1], sr, notes, i0 / sr, shift_back, formant_shift, breathiness,
                              expression, tempo_bpm, phrases, phrase_seeds, voices, seed)))
    for (i0, _), seg in zip(jobs, _map_segments([args for _, args in jobs]), strict=True):
        out[i0:i0 + len(seg)] += seg[: len(out) - i0]
    out /= (1.0 + DOUBLE_LEVEL ** 2 * doubles) ** 0.5
    return out.astype(np.float32)


_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _get_pool() -> ProcessPoolExecutor | None:
    """The engine's worker processes, started once and kept (a render pays no start-up); None: run inline.

    Workers are forked from a forkserver that has imported this module (numpy, pyworld, soxr), not
    from the caller: forking a service that runs model threads (torch, onnxruntime) is unsafe. Like
    any multiprocessing child they import the caller's ``__main__`` module by name, so a script that
    re-sings must keep its work under ``if __name__ == "__main__"``.
    """
    global _pool
    with _pool_lock:
        if _pool is None and min(WORKERS, _cores()) >= 2 and "forkserver" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload([__name__])
            try:
                _pool = ProcessPoolExecutor(min(WORKERS, _cores()), mp_context=ctx, initializer=_die_with_parent)
            except (OSError, ValueError, AssertionError):  # e.g. inside a daemonic process: no children
                return None
        return _pool


def _die_with_parent() -> None:
    # A worker must not outlive the process that runs the render (a killed task process or service).
    from tmik_common.procs import die_with_parent

    die_with_parent(parent=os.getppid())


def start_workers() -> None:
    """Start the worker processes now (a warm-up), so the first WORLD render does not wait for them."""
    pool = _get_pool()
    if pool is not None:
        list(pool.map(abs, range(WORKERS)))  # a trivial task per worker: each starts and imports this module


def _resing_job(args: tuple) -> np.ndarray:
    return _resing_segment(*args)


def _map_segments(jobs: list[tuple]) -> list[np.ndarray]:
    """:func:`_resing_segment` of each job, the longest first across the worker processes."""
    global _pool
    pool = _get_pool() if len(jobs) > 1 else None
    if pool is not None:
        # Longest first, so the two workers finish together.
        order = sorted(range(len(jobs)), key=lambda i: -len(jobs[i][0]))
        try:
            done = dict(zip(order, pool.map(_resing_job, [jobs[i] for i in order]), strict=True))
            return [done[i] for i in range(len(jobs))]
        except BrokenProcessPool:  # a worker died (killed, out of memory): drop the pool, sing here
            with _pool_lock:
                _pool = None
    return [_resing_segment(*args) for args in jobs]
