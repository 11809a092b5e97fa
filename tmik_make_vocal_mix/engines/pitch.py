"""The sung pitch curve both engines follow: each note's own gesture, drawn from the style's expression.

:func:`plan_phrase` decides, note by note, what a singer does with the written pitch
(:class:`NoteGesture`): whether a note vibrates and at what rate, extent, onset and growth (long notes
only, more often and wider on a phrase's last note and on stressed syllables), the glide into it
(longer for wider intervals and slower songs), an overshoot past it or a preparation dip before it on
a leap, a scoop from below into a phrase's first note (and some after rests), a fall-off at a
phrase's end. :func:`phrase_curve` renders the plan as one continuous F0 curve plus a slow drift and
a fine fluctuation. The distributions and their sources are in :mod:`..expression`.

The curve keeps each note on its written pitch where the qc measures it (from 50 ms after the start
to 50 ms before the end): scoops reach the note within about 50 ms, an overshoot peaks about 50 ms
after the transition and is gone by about 120 ms, fall-offs spend most of their depth in the last
50 ms, and vibrato extent plus drift stays under 50 cents. The vibrato's phase is the integral of its
instantaneous rate, so a drifting rate never makes the curve jump.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..expression import MAX_EXTENT_CENTS, Expression, get_expression

REST_S = 0.25  # a gap this long inside a phrase is a rest: release before it, a fresh attack after it
VIBRATO_FADE_S = 0.08  # a vibrato fades out over this before the glide out of its note
SCOOP_LEAD_S = 0.015  # a scoop starts this much before the written start (the vowel's onset)
MIN_GLIDE_S = 0.02

# The pre-issue-14 formula ("formula" expression), kept exactly for comparison.
PORTAMENTO = 0.06  # seconds of glide into each note
# An overshoot rings for about 0.2 s: on a shorter note it would fill the note (measured: 0.22 s notes of the
# low_warm voice read 0.25-0.9 pitch accuracy with it), so only notes at least this long get one.
MIN_OVERSHOOT_NOTE_S = 0.3
SHORT_NOTE_S = 0.4  # scoops and fall-offs on shorter notes are shallower and quicker, in proportion
VIB_RATE = 5.5  # Hz
VIB_START, VIB_FULL = 0.1, 0.25  # vibrato grows from 0 at 100 ms to full depth by 250 ms into the note


@dataclass(frozen=True)
class NoteGesture:
    """What the singer does with one note of a phrase (times in seconds, pitch offsets in cents)."""

    index: int  # position in the phrase
    start: float
    end: float
    pitch: float  # written MIDI pitch (the curve's ``shift`` is added when rendering)
    rest_before: float  # seconds of rest before the note (0 for legato, inf for the phrase's first note)
    rest_after: float  # seconds of rest after it (inf for the phrase's last note)
    # the transition into this note
    glide_s: float
    glide_centre: float  # the glide's middle (s)
    overshoot_cents: float  # signed: past the note in the interval's direction, after the glide
    overshoot_peak_s: float
    preparation_cents: float  # signed: away from the note, just before the glide
    scoop_cents: float  # depth below the note at its start (0: no scoop)
    scoop_s: float
    falloff_cents: float  # depth of the fall at its end (0: no fall-off)
    falloff_s: float
    # vibrato
    vibrato: bool
    rate_hz: float = 0.0
    rate_drift_hz: float = 0.0  # rate at the vibrato's end minus at its start
    extent_cents: float = 0.0  # full semi-extent
    extent_drift: float = 0.0
    onset_s: float = 0.0  # after the note start
    growth_s: float = 0.0
    vibrato_end: float = 0.0  # absolute time by which it has faded out
    phase: float = 0.0

    @property
    def phrase_start(self) -> bool:
        return self.rest_before == np.inf

    @property
    def before_rest(self) -> bool:
        return self.rest_after >= REST_S


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _bump(x: np.ndarray) -> np.ndarray:
    """0 at x <= 0, rising smoothly to 1 at x = 1, gone by x ~ 2.5 (a damped second-order response's first lobe)."""
    x = np.maximum(x, 0.0)
    return (x * np.exp(1.0 - x)) ** 4


def _soft_clip(x: float, lo: float, hi: float) -> float:
    """``x`` kept within (lo, hi) by a smooth knee over the outer fifth of the range (no pile-up at the bounds)."""
    knee = 0.2 * (hi - lo)
    if x > hi - knee:
        return float(hi - knee + knee * np.tanh((x - (hi - knee)) / knee))
    if x < lo + knee:
        return float(lo + knee - knee * np.tanh((lo + knee - x) / knee))
    return float(x)


def _glide_time(expr: Expression, semitones: float, tempo_bpm: float, u: float) -> float:
    tempo = (100.0 / max(float(tempo_bpm), 30.0)) ** expr.glide_tempo_power
    return (expr.glide_s + expr.glide_per_semitone_s * abs(semitones)) * float(np.clip(tempo, 0.75, 1.4)) * (0.85 + 0.3 * u)


def plan_phrase(notes: Sequence, expression: Expression | str, tempo_bpm: float = 100.0,
                rng: np.random.Generator | None = None) -> list[NoteGesture]:
    """Every note's gesture in one phrase (``notes``: ``start``, ``end``, ``pitch``, optional ``stress``).

    Deterministic for a given ``rng`` state; each note draws the same amount of randomness whatever it
    decides, so one note's choices do not reshuffle the next note's.
    """
    expr = get_expression(expression)
    rng = rng if rng is not None else np.random.default_rng(0)
    notes = list(notes)
    n = len(notes)
    if expr.formula:
        return _formula_plan(notes, expr)
    draws = [(rng.random(12), rng.standard_normal(8)) for _ in range(n)]
    rest_before = [np.inf] + [max(0.0, notes[k].start - notes[k - 1].end) for k in range(1, n)]
    rest_after = rest_before[1:] + [np.inf]
    legato = [k > 0 and rest_before[k] < REST_S for k in range(n)]

    # glides first: a vibrato fades before the glide out of its note
    glides: list[tuple[float, float]] = []
    for k, note in enumerate(notes):
        u, _ = draws[k]
        if k == 0:
            glides.append((MIN_GLIDE_S, note.start))
            continue
        interval = note.pitch - notes[k - 1].pitch
        g = _glide_time(expr, interval, tempo_bpm, u[0])
        if legato[k]:
            room = min(note.end - note.start, notes[k - 1].end - notes[k - 1].start)
            g = max(MIN_GLIDE_S, min(g, 0.45 * room))
            centre = note.start - 0.1 * g
        else:  # the jump happens in the rest, where nothing is voiced
            g = max(MIN_GLIDE_S, min(g, 0.8 * rest_before[k]))
            centre = note.start - 0.5 * rest_before[k]
        glides.append((g, centre))

    plan: list[NoteGesture] = []
    for k, note in enumerate(notes):
        u, z = draws[k]
        length = note.end - note.start
        g, centre = glides[k]
        stressed = getattr(note, "stress", None) == 1
        last = rest_after[k] >= REST_S
        # overshoot and preparation on a joined interval (a leap most often, a step sometimes)
        overshoot = preparation = 0.0
        if legato[k]:
            interval = note.pitch - notes[k - 1].pitch
            size = abs(interval)
            scale = 1.0 if size >= expr.leap_semitones else 1.0 / 3.0
            damp = 0.6 if size > 7 else 1.0  # suppressed after large leaps (Nakayama et al.)
            if size >= 1 and u[1] < expr.overshoot_prob * scale and length >= MIN_OVERSHOOT_NOTE_S:
                amount = expr.overshoot_ratio * size * 100.0 * (0.6 + 0.7 * u[2]) * damp
                overshoot = float(np.sign(interval) * min(amount, expr.overshoot_max_cents))
            if size >= 1 and u[3] < expr.preparation_prob * scale and notes[k - 1].end - notes[k - 1].start >= 0.25:
                amount = expr.preparation_ratio * size * 100.0 * (0.6 + 0.7 * u[4]) * damp
                preparation = float(-np.sign(interval) * min(amount, expr.preparation_max_cents))
        # a scoop into a phrase's first note, and into some notes after a rest
        scoop = scoop_s = 0.0
        p_scoop = expr.scoop_prob if k == 0 else (expr.scoop_after_rest_prob if not legato[k] else 0.0)
        if u[5] < p_scoop:
            # a short note has no time for a deep, slow scoop: shallower and quicker below SHORT_NOTE_S
            short = min(1.0, length / SHORT_NOTE_S)
            scoop = float(max(20.0, expr.scoop_cents + expr.scoop_sd_cents * z[5]) * short)
            scoop_s = float(min(expr.scoop_s * (0.8 + 0.4 * u[6]), (0.25 + 0.15 * short) * length))
        # a fall-off at the phrase's end (less often before a rest inside it)
        fall = fall_s = 0.0
        p_fall = expr.falloff_prob if k == n - 1 else (0.4 * expr.falloff_prob if last else 0.0)
        if u[7] < p_fall:
            short = min(1.0, length / SHORT_NOTE_S)
            fall = float(max(20.0, expr.falloff_cents * (1.0 + 0.35 * z[6])) * short)
            fall_s = float(min(expr.falloff_s * (0.8 + 0.4 * u[8]), (0.25 + 0.15 * short) * length))
        # vibrato: long notes only, likelier on the phrase's last note and stressed syllables
        vib = {}
        if length >= expr.min_note_s and length > 0:
            span = expr.full_note_s - expr.min_note_s
            ramp = 1.0 if span <= 0 else float(np.clip((length - expr.min_note_s) / span, 0.0, 1.0))
            p = (expr.last_note_prob if last else expr.vibrato_prob) * (0.35 + 0.65 * ramp)
            p += expr.stress_prob if stressed else 0.0
            onset = expr.onset_s + expr.onset_sd_s * z[2] + expr.onset_per_s * (length - 1.0)
            # at least the last 45 % of a note vibrates once it does (a late onset on a 0.6 s note is none)
            onset = float(np.clip(onset, 0.1, max(0.1, min(length - 0.25, 0.55 * length))))
            if u[9] < p and length - onset >= 0.25:
                rate = _soft_clip(expr.rate_hz + expr.rate_sd_hz * z[0], 4.2, 7.5)
                drift = float(np.clip(expr.rate_drift_hz + expr.rate_drift_sd_hz * z[1], -1.0, 1.2))
                extent = expr.extent_cents + expr.extent_sd_cents * z[3]
                extent *= (expr.last_note_extent if last else 1.0) * (expr.stress_extent if stressed else 1.0)
                if k + 1 < n and legato[k + 1]:
                    g_next, c_next = glides[k + 1]
                    vib_end = c_next - 0.5 * g_next
                else:
                    vib_end = note.end
                vib = {"vibrato": True, "rate_hz": rate, "rate_drift_hz": drift,
                       "extent_cents": _soft_clip(extent, 3.0, MAX_EXTENT_CENTS),
                       "extent_drift": float(expr.extent_drift + 0.1 * z[4]), "onset_s": onset,
                       "growth_s": float(min(expr.growth_s * (0.7 + 0.6 * u[10]), 0.6 * (length - onset))),
                       "vibrato_end": float(max(vib_end, note.start + onset + 0.1)),
                       "phase": float(0.8 * (u[11] - 0.5))}
        plan.append(NoteGesture(
            index=k, start=float(note.start), end=float(note.end), pitch=float(note.pitch),
            rest_before=float(rest_before[k]), rest_after=float(rest_after[k]), glide_s=float(g),
            glide_centre=float(centre), overshoot_cents=overshoot, overshoot_peak_s=float(expr.overshoot_peak_s),
            preparation_cents=preparation, scoop_cents=scoop, scoop_s=scoop_s, falloff_cents=fall,
            falloff_s=fall_s, **({"vibrato": False} | vib)))
    return plan


def render_plan(t: np.ndarray, plan: Sequence[NoteGesture], *, shift: float = 0.0,
                drift_cents: float = 0.0, fine_cents: float = 0.0,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """The F0 (Hz, float32) of ``plan`` at times ``t``; ``rng`` draws the drift's and fine fluctuation's phases."""
    t = np.asarray(t, dtype=np.float64)
    rng = rng if rng is not None else np.random.default_rng(0)
    midi = np.full(t.shape, plan[0].pitch + shift)
    cents = np.zeros(t.shape)
    for k, g in enumerate(plan):
        if k:
            midi += (g.pitch - plan[k - 1].pitch) * smoothstep((t - g.glide_centre) / g.glide_s + 0.5)
        if g.overshoot_cents:
            cents += g.overshoot_cents * _bump((t - g.glide_centre) / (0.5 * g.glide_s + g.overshoot_peak_s))
        if g.preparation_cents:
            cents += g.preparation_cents * _bump((g.glide_centre - t) / (0.5 * g.glide_s + 0.03))
        if g.scoop_cents:
            x = (t - (g.start - SCOOP_LEAD_S)) / g.scoop_s
            shape = (1.0 - np.clip(x, 0.0, 1.0)) ** 3  # fast at first: most of the way in 50 ms
            if np.isfinite(g.rest_before):  # after a rest: the scoop's depth comes in during the rest
                shape = shape * smoothstep((t - (g.start - g.rest_before)) / (0.5 * g.rest_before))
            cents -= g.scoop_cents * shape
        if g.falloff_cents:
            x = np.clip((t - (g.end - g.falloff_s)) / g.falloff_s, 0.0, 1.0)
            shape = x ** 3  # slow at first: most of the fall in the last 50 ms
            if np.isfinite(g.rest_after):  # the next note starts from its own pitch after the rest
                shape = shape * (1.0 - smoothstep((t - g.end) / (0.5 * g.rest_after)))
            cents -= g.falloff_cents * shape
        if g.vibrato:
            v0 = g.start + g.onset_s
            sel = (t > v0) & (t < g.vibrato_end)
            if sel.any():
                tau = t[sel] - v0
                span = max(g.vibrato_end - v0, 1e-3)
                # phase = 2 pi * integral of the rate, which moves linearly by rate_drift over the vibrato
                phase = 2 * np.pi * (g.rate_hz * tau + g.rate_drift_hz * (tau * tau / (2 * span) - tau / 2)) + g.phase
                extent = g.extent_cents * (1.0 + g.extent_drift * (tau / span - 0.5))
                env = smoothstep(tau / g.growth_s) * smoothstep((g.vibrato_end - t[sel]) / VIBRATO_FADE_S)
                cents[sel] += extent * env * np.sin(phase)
    ph = rng.uniform(0.0, 2 * np.pi, 5)
    fr = rng.uniform(0.0, 1.0, 5)
    if drift_cents:
        cents += drift_cents * (0.67 * np.sin(2 * np.pi * (0.15 + 0.15 * fr[0]) * t + ph[0])
                                + 0.33 * np.sin(2 * np.pi * (0.5 + 0.3 * fr[1]) * t + ph[1]))
    if fine_cents:
        a = fine_cents / np.sqrt(1.5)  # three sines of this amplitude have an RMS of fine_cents
        for i in (2, 3, 4):
            cents += a * np.sin(2 * np.pi * (8.0 + 5.0 * fr[i]) * t + ph[i])
    return (440.0 * 2.0 ** ((midi + cents / 100.0 - 69.0) / 12.0)).astype(np.float32)


def phrase_curve(t: np.ndarray, notes, *, shift: float = 0.0, expression: Expression | str | None = None,
                 tempo_bpm: float = 100.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """Target F0 (Hz, float32) at times ``t`` over one phrase's ``notes``, continuous.

    ``notes`` have ``start``, ``end``, ``pitch`` (and optionally ``stress``); ``expression`` is the
    style's :class:`~..expression.Expression` (or its name); ``tempo_bpm`` sets glide times; ``shift``
    moves the curve by semitones. Each note holds its pitch until the next one starts; where the
    voice is silent is the caller's concern. Deterministic for a given ``rng`` state (None: seed 0);
    no ``expression``: the default (pop_bright).
    """
    expr = get_expression(expression)
    rng = rng if rng is not None else np.random.default_rng(0)
    notes = list(notes)
    if not notes:
        return np.zeros(np.shape(t), dtype=np.float32)
    if expr.formula:
        return _formula_curve(np.asarray(t, dtype=np.float64), notes, shift, expr.extent_cents, rng)
    plan = plan_phrase(notes, expr, tempo_bpm, rng)
    return render_plan(t, plan, shift=shift, drift_cents=expr.drift_cents, fine_cents=expr.fine_cents, rng=rng)


def _formula_plan(notes: list, expr: Expression) -> list[NoteGesture]:
    """What :func:`_formula_curve` does, as gestures: the same vibrato on every note, fixed glides."""
    plan = []
    for k, n in enumerate(notes):
        nxt = notes[k + 1].start if k + 1 < len(notes) else n.end
        plan.append(NoteGesture(
            index=k, start=float(n.start), end=float(n.end), pitch=float(n.pitch),
            rest_before=np.inf if k == 0 else max(0.0, n.start - notes[k - 1].end),
            rest_after=np.inf if k + 1 == len(notes) else max(0.0, nxt - n.end),
            glide_s=PORTAMENTO, glide_centre=float(n.start), overshoot_cents=0.0, overshoot_peak_s=0.0,
            preparation_cents=0.0, scoop_cents=0.0, scoop_s=0.0, falloff_cents=0.0, falloff_s=0.0,
            vibrato=True, rate_hz=VIB_RATE, extent_cents=expr.extent_cents, onset_s=VIB_START,
            growth_s=VIB_FULL - VIB_START, vibrato_end=float(nxt)))
    return plan


def _formula_curve(t: np.ndarray, notes, shift: float, vibrato_cents: float, rng: np.random.Generator) -> np.ndarray:
    """The pre-issue-14 curve, exactly: 60 ms glides centred on note starts, 5.5 Hz vibrato on every note."""
    midi = np.full(t.shape, float(notes[0].pitch + shift))
    cents = np.zeros(t.shape)
    for k, n in enumerate(notes):
        if k:
            midi += (n.pitch - notes[k - 1].pitch) * smoothstep((t - n.start) / PORTAMENTO + 0.5)
        nxt = notes[k + 1].start if k + 1 < len(notes) else np.inf
        inside = (t >= n.start) & (t < nxt)
        dt = t[inside] - n.start
        depth = vibrato_cents * smoothstep((dt - VIB_START) / (VIB_FULL - VIB_START))
        cents[inside] += depth * np.sin(2 * np.pi * VIB_RATE * dt)
    ph = rng.uniform(0, 2 * np.pi, 2)
    cents += 4.0 * np.sin(2 * np.pi * 0.23 * t + ph[0]) + 2.0 * np.sin(2 * np.pi * 0.61 * t + ph[1])
    return (440.0 * 2.0 ** ((midi + cents / 100.0 - 69.0) / 12.0)).astype(np.float32)
