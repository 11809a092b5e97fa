"""GETDiff sampling: unmask a GETScore grid step by step, under the lead plan's constraints.

One window (:func:`sample_window`): every token to generate starts as its row's mask.
At each of ``steps`` steps the denoiser predicts all clean tokens; the constraints of the
:class:`..constraints.LeadPlan` are applied to the logits (impossible pitches, the chord-
tone bonus, breaths, durations that would cross a breath, the coupling of a column's pitch
and duration, the exact note count of a phrase with lyrics); candidates are drawn with
temperature and nucleus (top-p) sampling; and a quota of the still-masked positions of
each row (``masked / steps_left``) is committed, chosen by confidence mixed with noise.

**Creative Randomness** ``r`` (0..1) sets all three knobs: temperature ``0.7 + 0.6 r``,
top-p ``0.85 + 0.15 r``, and the unmasking order, from most-confident-first (``r = 0``)
towards a random order (``r = 1``). The seed fixes every draw, so a run repeats exactly.

With a given rhythm (:attr:`..constraints.LeadPlan.durations`, from :mod:`.rhythm`) the
``lead_duration`` row is a condition (the note lengths at their onsets, ``PAD`` elsewhere)
and only the pitch row is generated: a known duration makes a column's pitch a note
(or no note), so the rhythm is kept exactly.

A whole song (:func:`generate_lead`) is written in overlapping windows from left to right;
each window sees the last :data:`CONTEXT` columns of the previous one as given tokens, so
phrases continue across window edges, and bars of repeated sections are given as copies
of their first occurrence. :func:`generate_lead` with ``keep`` infills a span of an
existing melody (regenerate one section) the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .constraints import NO_PHRASE, LeadPlan
from .diffusion import NUM_STEPS, Denoiser
from .getscore import LEAD_DURATION, LEAD_PITCH, MAX_DURATION, PAD, ROW_SIZES, ROWS

log = logging.getLogger(__name__)

CONTEXT = 32
NEG = -1e9
REPEAT_PENALTY = 1.0  # logits taken from repeating the neighbouring notes' pitch (see _constrain_pitch)
STEP_BONUS = 1.2  # logits added to a step (1-2 semitones) from the neighbouring notes


@dataclass(frozen=True)
class SamplerSettings:
    """Sampler knobs derived from Creative Randomness."""

    temperature: float
    top_p: float
    order_noise: float
    steps: int

    @classmethod
    def from_randomness(cls, randomness: float, steps: int = 40) -> SamplerSettings:
        r = float(np.clip(randomness, 0.0, 1.0))
        return cls(0.7 + 0.6 * r, 0.85 + 0.15 * r, 0.25 + 2.5 * r, int(steps))


def _top_p(logits: np.ndarray, top_p: float) -> np.ndarray:
    """Keep the smallest set of tokens whose probability reaches ``top_p`` (per row of logits)."""
    if top_p >= 1.0:
        return logits
    order = np.argsort(-logits, axis=-1)
    sorted_l = np.take_along_axis(logits, order, axis=-1)
    p = np.exp(sorted_l - sorted_l.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    cum = np.cumsum(p, axis=-1)
    drop_sorted = cum - p > top_p
    drop = np.zeros_like(drop_sorted)
    np.put_along_axis(drop, order, drop_sorted, axis=-1)
    return np.where(drop, NEG, logits)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def _pad_bias_for(logp_pad: np.ndarray, logp_note: np.ndarray, need: float) -> float:
    """Bias b on the PAD logit so that the expected number of onsets equals ``need``."""
    lo, hi = -30.0, 30.0
    for _ in range(30):
        b = (lo + hi) / 2
        p_note = 1.0 / (1.0 + np.exp(np.clip(logp_pad + b - logp_note, -50, 50)))
        if p_note.sum() > need:
            lo = b
        else:
            hi = b
    return (lo + hi) / 2


def sample_window(denoiser: Denoiser, tokens: np.ndarray, cond: np.ndarray, plan: LeadPlan, offset: int,
                  settings: SamplerSettings, rng: np.random.Generator,
                  on_step: Callable[[float], None] | None = None) -> np.ndarray:
    """Fill the non-condition tokens of one window (``tokens``: ``(R, T)``, columns from ``offset``)."""
    r_count, t_len = tokens.shape
    mask = np.array(ROW_SIZES, dtype=np.int64)[:, None]
    x = np.where(cond, tokens, mask)
    cols = np.arange(offset, offset + t_len)
    bias = plan.pitch_bias[cols]
    onset_ok = plan.onset_allowed[cols]
    max_dur = np.minimum(plan.max_duration()[cols], MAX_DURATION)
    phrase = plan.phrase[cols]
    gen_rows = [r for r in range(r_count) if (~cond[r]).any()]
    steps = max(1, settings.steps)
    cond_t = torch.from_numpy(cond[None])
    for s in range(steps, 0, -1):
        if on_step is not None:
            on_step((steps - s) / steps)
        step = int(np.ceil(s * NUM_STEPS / steps))
        with torch.no_grad():
            logits = denoiser.x0_logits(torch.from_numpy(x[None]), cond_t, torch.tensor([step]))
        for r in gen_rows:
            masked = np.flatnonzero(x[r] == mask[r, 0])
            if r == LEAD_DURATION and LEAD_PITCH in gen_rows:
                # A duration is decided only after its column's pitch (PAD or a note), so the
                # two always agree and the phrase note counts stay reachable.
                masked = masked[x[LEAD_PITCH, masked] != mask[LEAD_PITCH, 0]]
            if masked.size == 0:
                continue
            lg = logits[r][0].double().numpy()[masked] / settings.temperature
            if r == LEAD_PITCH:
                lg = _constrain_pitch(lg, x, masked, bias, onset_ok, phrase, plan)
            elif r == LEAD_DURATION:
                lg = _constrain_duration(lg, x, masked, max_dur)
            allowed = _log_softmax(lg)  # before top-p: forced choices stay inside the constraints
            lg = _top_p(lg, settings.top_p)
            logp = _log_softmax(lg)
            gumbel = -np.log(-np.log(rng.random(lg.shape).clip(1e-12, 1 - 1e-12)))
            cand = np.argmax(logp + gumbel, axis=-1)
            conf = logp[np.arange(len(masked)), cand]
            quota = int(np.ceil(len(masked) / s))
            noise = -np.log(-np.log(rng.random(len(masked)).clip(1e-12, 1 - 1e-12)))
            order = np.argsort(-(conf + settings.order_noise * noise))[:quota]
            if r == LEAD_PITCH:
                cand = _enforce_counts(cand, allowed, masked, order, x, phrase, onset_ok, plan)
            x[r, masked[order]] = cand[order]
    return x


def _neighbour_pitches(row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token of the nearest committed note before and after each column (0 where none)."""
    note = (row > PAD) & (row < ROW_SIZES[LEAD_PITCH])
    idx = np.where(note, np.arange(len(row)), -1)
    before = np.maximum.accumulate(np.r_[-1, idx[:-1]])
    idx_r = np.where(note, np.arange(len(row)), len(row))
    after = np.minimum.accumulate(np.r_[idx_r[1:], len(row)][::-1])[::-1]
    padded = np.r_[row, 0]
    return np.where(before >= 0, padded[before], 0), np.where(after < len(row), padded[after], 0)


def _constrain_pitch(lg, x, masked, bias, onset_ok, phrase, plan: LeadPlan) -> np.ndarray:
    lg = lg + bias[masked]
    # Parallel unmasking lets neighbours pick the same likely pitch independently, which
    # piles up repeated notes; a small penalty on repeating a committed neighbour evens it out.
    before, after = _neighbour_pitches(x[LEAD_PITCH])
    rows = np.arange(len(masked))
    top = ROW_SIZES[LEAD_PITCH] - 1
    for nb in (before[masked], after[masked]):
        has = nb > PAD
        lg[rows[has], nb[has]] -= REPEAT_PENALTY
        for d in (-2, -1, 1, 2):
            tok = nb[has] + d
            ok = (tok >= 1) & (tok <= top)
            lg[rows[has][ok], tok[ok]] += STEP_BONUS
    lg[~onset_ok[masked], 1:] = NEG
    dur = x[LEAD_DURATION, masked]
    known = dur < ROW_SIZES[LEAD_DURATION]
    lg[known & (dur == PAD), 1:] = NEG  # the duration says: no note here
    lg[known & (dur != PAD), 0] = NEG  # the duration says: a note starts here
    if plan.onset_targets:
        for p in np.unique(phrase[masked]):
            if p == NO_PHRASE or int(p) not in plan.onset_targets:
                continue
            sel = phrase[masked] == p
            in_phrase = phrase == p
            have = int(((x[LEAD_PITCH] > PAD) & (x[LEAD_PITCH] < ROW_SIZES[LEAD_PITCH]) & in_phrase).sum())
            need = plan.onset_targets[int(p)] - have
            free = sel & onset_ok[masked]
            if need <= 0:
                lg[sel, 1:] = NEG
            elif need >= free.sum():
                lg[free, 0] = NEG
            else:
                lp = _log_softmax(lg[sel])
                note = np.logaddexp.reduce(lp[:, 1:], axis=-1)
                lg[sel, 0] += _pad_bias_for(lp[:, 0], note, need)
    return lg


def _constrain_duration(lg, x, masked, max_dur) -> np.ndarray:
    pitch = x[LEAD_PITCH, masked]
    known = pitch < ROW_SIZES[LEAD_PITCH]
    lg[known & (pitch == PAD), 1:] = NEG
    lg[known & (pitch != PAD), 0] = NEG
    lengths = np.arange(lg.shape[1])
    too_long = lengths[None, :] > np.maximum(max_dur[masked], 1)[:, None]
    too_long[:, 0] = False
    return np.where(too_long, NEG, lg)


def _enforce_counts(cand, logp, masked, order, x, phrase, onset_ok, plan: LeadPlan) -> np.ndarray:
    """Make this step's commits keep every phrase's exact note count reachable."""
    if not plan.onset_targets:
        return cand
    cand = cand.copy()
    pitch_row = x[LEAD_PITCH]
    is_mask = pitch_row == ROW_SIZES[LEAD_PITCH]
    have = {}
    free = {}
    for p in np.unique(phrase[masked]):
        if p == NO_PHRASE or int(p) not in plan.onset_targets:
            continue
        in_p = phrase == p
        have[p] = int(((pitch_row > PAD) & ~is_mask & in_p).sum())
        free[p] = int((is_mask & in_p & onset_ok).sum())
    for i in order:
        p = phrase[masked[i]]
        if p not in have:
            continue
        need = plan.onset_targets[int(p)] - have[p]
        can = onset_ok[masked[i]] and logp[i, 1:].max() > NEG / 2  # a note is possible here at all
        if cand[i] != PAD and need <= 0:
            cand[i] = PAD
        elif cand[i] == PAD and can and need >= free[p]:
            cand[i] = 1 + int(np.argmax(logp[i, 1:]))
        if cand[i] != PAD:
            have[p] += 1
        if can:
            free[p] -= 1
    return cand


def generate_lead(denoiser: Denoiser, grid: np.ndarray, plan: LeadPlan, settings: SamplerSettings, seed: int,
                  *, window: int = 128, keep: np.ndarray | None = None,
                  progress: Callable[[float], None] | None = None) -> np.ndarray:
    """Write the lead rows of ``grid`` (``(R, N)``; chords, key, meter given) window by window.

    ``keep`` (``(N,)`` bool) marks columns whose lead is already right and stays (infilling);
    the others are generated. Returns the completed grid.
    """
    grid = grid.copy()
    n = grid.shape[1]
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    fixed = np.zeros(n, dtype=bool) if keep is None else keep.astype(bool).copy()
    lead = [LEAD_PITCH, LEAD_DURATION]
    if keep is None:
        grid[lead] = PAD
    # Columns where nothing may sound are fixed as "no note" from the start.
    silent = ~plan.onset_allowed & ~fixed
    grid[LEAD_PITCH, silent] = PAD
    grid[LEAD_DURATION, silent] = PAD
    fixed |= silent
    window = max(CONTEXT * 2, min(window, n))
    written = np.zeros(n, dtype=bool)
    span = [0, n]

    def tick(fraction: float) -> None:
        if progress is not None:
            progress(min(1.0, (span[0] + fraction * (span[1] - span[0])) / n))

    start = 0
    while True:
        end = min(n, start + window)
        # A repeat must not share a window with the bars it copies: stop before it, so the
        # source is written first (unless that leaves too short a window).
        pending = [c for c in range(start + 2 * CONTEXT, end)
                   if c in plan.copy_from and plan.copy_from[c] >= start and not written[c]]
        if pending:
            end = pending[0]
        span[:] = [start, end]
        gen = ~fixed[start:end] & ~written[start:end]
        for c in range(start, end):
            src = plan.copy_from.get(c)
            if gen[c - start] and src is not None and written[src]:
                grid[lead, c] = grid[lead, src]
                gen[c - start] = False
        if gen.any():
            cond = np.ones((len(ROWS), end - start), dtype=bool)
            cond[LEAD_PITCH] = ~gen
            if plan.durations is None:
                cond[LEAD_DURATION] = ~gen
            else:  # the rhythm is given: its note lengths are the condition, only pitches are written
                cols = np.arange(start, end)[gen]
                grid[LEAD_DURATION, cols] = plan.durations[cols]
            out = sample_window(denoiser, grid[:, start:end], cond, plan, start, settings, rng, tick)
            grid[lead, start:end] = out[lead]
        written[start:end] = True
        tick(1.0)
        if end >= n:
            break
        start = end - CONTEXT
    return grid
