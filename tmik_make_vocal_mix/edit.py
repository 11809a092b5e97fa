"""Edit a finished render: sing an edited melody again only where it changed.

:func:`run_edit` compares the parent render's melody with the edited one phrase by phrase
(:func:`changed_phrases`). A changed phrase is sung again with the parent's chosen take's seed for that
phrase; every other sample comes from the parent's chosen take (``take<n>_vocal.wav``) unchanged. Each
re-sung stretch is joined to the old audio by a linear crossfade of at most :data:`CROSSFADE_S` placed in
the rests around it (the fresh audio there also holds the unchanged neighbouring phrases, sung again, so
both sides of the fade carry the same neighbour audio). WORLD styles and choir doubling re-process only
the stretches holding a changed phrase (:meth:`.render.Singer.post_process`), faded in the same way.

Falls back to singing everything (logged, recorded in takes.json) when the phrase count, the tempo, the
octave the melody is sung in, or an unchanged phrase's timing differs, and when the style changes (the
voice differs). Same melody and style with only the loudness changed: nothing is sung, the parent's vocal
is mixed again. The result is a render folder with one take (``edited_phrases``, ``from_parent``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import qc
from .render import (
    ProgressCallback,
    RenderError,
    RenderResult,
    Singer,
    Take,
    _engine_path,
    _finish,
    _prepare,
    _stage,
    fit_range,
    read_takes,
    take_score,
)
from .score import VocalScore, load_score
from .styles import get_style

log = logging.getLogger(__name__)

CROSSFADE_S = 0.05  # the longest join between old and new audio (linear: the two sides are nearly equal there)
TAIL_S = 0.065  # a phrase's gated audio ends this long after its last note (GATE_POST + half a unit + ramp)
TIME_TOL = 1e-6  # seconds two note times may differ and still be the same time (JSON round trips)


@dataclass
class EditPlan:
    """What an edit sings: the changed phrases, or everything (``full``) with the reason."""

    changed: list[int]
    full: bool
    reason: str


def _same_time(a: float, b: float) -> bool:
    return abs(a - b) <= TIME_TOL


def _phrase_key(score: VocalScore, k: int) -> tuple:
    """What phrase ``k``'s audio depends on: its notes (times, pitch, text, stress, word starts) and the end of
    the phrase before it (its breath is taken in that rest)."""
    from .engines.neural import bpm_at

    notes = [score.notes[i] for i in score.phrases[k]]
    prev = next((p for p in reversed(score.phrases[:k]) if p), None)
    prev_end = score.notes[prev[-1]].end if prev else None
    bpm = bpm_at(score.tempo, notes[0].start) if notes else None
    return (tuple((round(n.start, 6), round(n.end, 6), n.pitch, n.syllable, n.word, n.stress, n.word_start)
                  for n in notes), None if prev_end is None else round(prev_end, 6), bpm)


def _content(score: VocalScore, k: int) -> tuple:
    return tuple((n.pitch, n.syllable, n.word, n.stress) for n in (score.notes[i] for i in score.phrases[k]))


def changed_phrases(old: VocalScore, new: VocalScore, old_engine: tuple[str, int],
                    new_engine: tuple[str, int]) -> EditPlan:
    """The phrases of ``new`` whose audio differs from ``old``'s (both as sung: after :func:`.render.fit_range`),
    or a full re-sing when the song's frame moved (phrase count, tempo, octave, an unchanged phrase's timing)."""
    if len(old.phrases) != len(new.phrases):
        return EditPlan([], True, f"the phrase count changed ({len(old.phrases)} -> {len(new.phrases)})")
    if sorted(old.tempo.tempos) != sorted(new.tempo.tempos):
        return EditPlan([], True, "the tempo changed")
    if old_engine != new_engine:
        return EditPlan([], True, "the melody is sung in another octave or by another engine")
    changed = [k for k in range(len(new.phrases)) if _phrase_key(old, k) != _phrase_key(new, k)]
    for k in changed:
        a, b = [old.notes[i] for i in old.phrases[k]], [new.notes[i] for i in new.phrases[k]]
        # same words and notes, only moved as a whole: the timing of the song changed, not this phrase
        if a and _content(old, k) == _content(new, k) and len(a) == len(b) and not _same_time(a[0].start, b[0].start):
            shift = b[0].start - a[0].start
            if all(_same_time(y.start - x.start, shift) and _same_time(y.end - x.end, shift)
                   for x, y in zip(a, b, strict=True)):
                return EditPlan([], True, f"phrase {k} moved by {shift:+.3f} s unchanged (a timing change)")
    if changed and len(changed) == len(new.phrases):
        return EditPlan(changed, True, "every phrase changed")
    return EditPlan(changed, False, "")


def crossfade_splice(parent: np.ndarray, fresh: np.ndarray, windows: list[tuple[int, int]],
                     fade: int) -> np.ndarray:
    """``parent`` with ``fresh`` inside each window (sample ranges), joined by linear crossfades of up to ``fade``
    samples that lie inside the window (none at the song's start or end)."""
    out = parent.astype(np.float32, copy=True)
    n = len(out)
    for a, b in windows:
        a, b = max(0, a), min(n, b)
        if b <= a:
            continue
        out[a:b] = fresh[a:b]
        f = min(fade, (b - a) // 2)
        if f <= 0:
            continue
        ramp = (np.arange(1, f + 1, dtype=np.float32) / (f + 1))
        if a > 0:
            out[a:a + f] = parent[a:a + f] * (1 - ramp) + fresh[a:a + f] * ramp
        if b < n:
            out[b - f:b] = fresh[b - f:b] * ramp[::-1] + parent[b - f:b] * (1 - ramp[::-1])
    return out


def _runs(ks: list[int]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for k in sorted(ks):
        if out and k == out[-1][1] + 1:
            out[-1][1] = k
        else:
            out.append([k, k])
    return [(a, b) for a, b in out]


def _neural_windows(old: VocalScore, new: VocalScore, changed: list[int], sr: int,
                    length: int) -> tuple[list[tuple[int, int]], set[int]]:
    """Sample windows to take from the fresh audio (from the end of the phrase before a run of changed phrases to
    just past the run's old and new tails), and the phrases the fresh audio must hold (the runs and their
    neighbours, whose breath and tails reach into those rests)."""
    windows: list[tuple[int, int]] = []
    sing: set[int] = set()
    last = len(new.phrases) - 1
    for k1, k2 in _runs(changed):
        sing.update(range(max(0, k1 - 1), min(last, k2 + 1) + 1))
        a = new.notes[new.phrases[k1 - 1][-1]].end if k1 > 0 and new.phrases[k1 - 1] else 0.0
        if k2 < last and new.phrases[k2 + 1]:
            tails = [s.notes[s.phrases[k2][-1]].end for s in (old, new) if s.phrases[k2]]
            next_start = new.notes[new.phrases[k2 + 1][0]].start
            b = min(max(tails) + TAIL_S + CROSSFADE_S, next_start) if tails else next_start
            b_s = round(b * sr)
        else:
            b_s = length
        windows.append((round(a * sr) if k1 > 0 else 0, b_s))
    return windows, sing


def _parent(parent_dir: Path) -> tuple[dict[str, Any], dict[str, Any], np.ndarray, int]:
    """(takes.json, the chosen take's row, its dry vocal, its rate) of a finished render."""
    import json

    import soundfile as sf

    record = read_takes(parent_dir)
    rows = {int(r["take"]): r for r in record["takes"]}
    chosen = rows.get(int(record.get("chosen", -1)))
    if chosen is None:
        raise RenderError("takes_not_found", f"{parent_dir.name}/takes.json names no chosen take; render again")
    path = parent_dir / chosen["files"]["vocal"]
    if not path.is_file():
        raise RenderError("take_not_found", f"the parent's chosen vocal {path.name} is missing: render again")
    vocal, sr = sf.read(str(path), dtype="float32", always_2d=False)
    try:
        q = json.loads((parent_dir / "qc.json").read_text())
    except (OSError, ValueError):
        q = {}
    return record, {**chosen, "_qc": q if isinstance(q, dict) else {}}, np.asarray(vocal, np.float32), int(sr)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    return x[:n] if len(x) >= n else np.concatenate([x, np.zeros(n - len(x), np.float32)])


def run_edit(background: str | Path, parent_dir: str | Path, melody: str | Path, out_dir: str | Path, *,
             parent_melody: str | Path, style: str | None = None, target_lufs: float | None = None,
             true_peak_db: float = -1.0, intelligibility_seconds: float = qc.INTELLIGIBILITY_SECONDS,
             progress: ProgressCallback | None = None) -> RenderResult:
    """Render the edited ``melody`` into ``out_dir``, singing again only what differs from the render in
    ``parent_dir`` (whose melody is ``parent_melody``); see the module docstring. ``style`` and ``target_lufs``
    default to the parent's. Raises RenderError ``takes_not_found`` / ``take_not_found`` for a parent folder
    without takes.json or its vocal, and what :func:`.render.run_render` raises for its inputs."""
    report = progress or (lambda stage, fraction: None)
    times: dict[str, float] = {}
    t = time.perf_counter()
    parent_dir = Path(parent_dir)
    report("load", 0.0)
    _, row, parent_vocal, parent_sr = _parent(parent_dir)
    pq = row.pop("_qc")
    parent_style = pq.get("style") or get_style(None).name
    style_name = style or parent_style
    if target_lufs is None:
        target_lufs = float(pq.get("target_lufs", -14.0))
    chosen, background_audio, bg_sr, score, warnings = _prepare(background, melody, style_name, None, target_lufs)
    old_score, _ = fit_range(load_score(parent_melody), get_style(parent_style))
    times["load"] = time.perf_counter() - t
    base_seed = int(row["seed"])
    parent_seeds = [int(s) for s in row["phrase_seeds"]]
    plan = changed_phrases(old_score, score, _engine_path(old_score, get_style(parent_style)),
                           _engine_path(score, chosen))
    if chosen.name != parent_style:
        plan = EditPlan(list(range(len(score.phrases))), True, f"the style changed ({parent_style} -> {chosen.name})")
    if len(parent_seeds) != len(old_score.phrases):
        plan = EditPlan(list(range(len(score.phrases))), True, "the parent's takes.json does not fit its melody")
    sing_step = _stage(report, "sing")
    t = time.perf_counter()
    seeds = parent_seeds if len(parent_seeds) == len(score.phrases) else [base_seed] * len(score.phrases)
    checks_prev: dict[str, Any] | None = dict(row.get("checks") or {}) or None
    if plan.full:
        log.info("edit: singing everything: %s", plan.reason)
        singer = Singer(score, chosen, base_seed)
        raw = singer.raw_take(seeds, lambda f: sing_step(0.4 * f))
        vocal, sr = singer.post_process(raw, seeds), singer.sr
        edited, spans, only = list(singer.phrases), [], None
    elif not plan.changed:
        log.info("edit: the melody and style are the parent's: its vocal is mixed again, nothing is sung")
        vocal, sr, raw = parent_vocal, parent_sr, np.zeros(0, np.float32)
        edited, spans, only = [], [], set()
    else:
        log.info("edit: singing phrase(s) %s again", plan.changed)
        singer = Singer(score, chosen, base_seed)
        sr = singer.sr
        if parent_sr != sr:
            raise RenderError("take_not_found", f"the parent's vocal is at {parent_sr} Hz, not the voice's {sr} Hz")
        previous = _fit(parent_vocal, singer.length)
        fade = round(CROSSFADE_S * sr)
        if singer.engine == "world" or chosen.doubles:
            todo, hit = singer._closed(plan.changed, singer.length / sr)
            sing = set(todo) | {j for k in todo for j in (k - 1, k + 1) if 0 <= j < len(score.phrases)}
            windows = [(round(a * sr), round(b * sr)) for a, b in hit]
        else:
            windows, sing = _neural_windows(old_score, score, plan.changed, sr, singer.length)
        raw = np.zeros(singer.length, np.float32)
        todo_sing = [k for k in singer.phrases if k in sing]
        for n, k in enumerate(todo_sing):
            start, audio = singer.phrase(k, seeds[k])
            raw[start:start + len(audio)] += audio
            sing_step(0.4 * (n + 1) / len(todo_sing))
        fresh = singer.post_process(raw, seeds, np.zeros_like(previous), plan.changed) \
            if singer.engine == "world" or chosen.doubles else raw
        vocal = crossfade_splice(previous, fresh, windows, fade)
        edited = sorted(set(plan.changed) | set(getattr(singer, "changed_phrases", plan.changed)))
        spans = [[round(a / sr, 4), round(b / sr, 4)] for a, b in windows]
        only = set(edited)
    times["sing"] = time.perf_counter() - t
    t = time.perf_counter()
    if only is not None and not only and checks_prev is not None:
        checks = checks_prev  # the same audio: the parent's checks hold
    else:
        checks = qc.check_phrases(vocal, sr, score.notes, score.phrases, None, seconds=intelligibility_seconds,
                                  only=only if checks_prev is not None else None, previous=checks_prev,
                                  progress=lambda f: sing_step(0.4 + 0.6 * f))
    times["check"] = time.perf_counter() - t
    take = Take(1, base_seed, seeds, edited, raw, vocal, checks, resung_spans=spans)
    take.score = take_score(checks)
    take.extra = {"edited_phrases": edited, "from_parent": {
        "dir": str(parent_dir), "take": int(row["take"]), "style": parent_style,
        "full_render": plan.full, "reason": plan.reason or ("loudness only" if not edited else "edited phrases")}}
    reason = (f"edit of {parent_dir.name} take {row['take']}: " + (f"everything sung again ({plan.reason})"
              if plan.full else f"phrase(s) {edited} sung again" if edited else "nothing sung again"))
    return _finish(score, chosen, [take], take, reason, "edit", sr, background_audio, bg_sr, out_dir, None,
                   target_lufs, true_peak_db, warnings, times, report)
