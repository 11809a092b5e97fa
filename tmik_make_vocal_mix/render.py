"""Sing a melody over its background, mix and master the song, export everything.

CLI::

    python -m tmik_make_vocal_mix.render --background IN.wav --melody DIR/melody.json --out DIR2
        [--lyrics-file F] [--style NAME] [--seed N] [--target-lufs -14] [--takes 3] [--list-styles]
    python -m tmik_make_vocal_mix.render --background IN.wav --melody DIR/melody.json --out DIR2 --select-take N
    python -m tmik_make_vocal_mix.render --edit-of PARENT_DIR --parent-melody P/melody.json --melody NEW/melody.json
        --background IN.wav --out DIR2 [--style NAME] [--target-lufs L]   (:func:`.edit.run_edit`)

``--melody`` is the melody service's ``melody.json`` (the contract: notes with their words,
syllables, stress, phrases and melismas; see :func:`.score.read_melody_json`). A ``melody.mid``
is accepted too, for people who have only a MIDI file: its lyric events are sung, or the
``--lyrics-file`` spread over its phrases (one line per phrase, one syllable per note).

writes into DIR2: ``vocal.wav`` (dry), ``vocal_fx.wav``, ``instrumental.wav`` (the input as
mastered), ``mix.wav`` (24-bit) and ``mix.mp3``, ``melody_lyrics.mid``, ``score.musicxml``,
``song.svp``, ``song.ustx`` (with the background as an aligned wave part), ``lyrics.lrc``,
the LibreSVIP conversions ``song.vsqx``, ``song.ust``, ``song.acep`` (``song.ds`` where its
dictionaries know the lyrics), and ``qc.json`` (whole-song pitch accuracy and word error rate,
phrase by phrase, voicing, expression figures, loudness, peak, and warnings) of the chosen take.

Takes: ``--takes N`` (default 3) takes are sung. Take 1 sings every phrase with ``--seed``; each
further take re-sings only the weaker phrases of the best take so far with a new seed (the other
phrases are the same samples) and is checked again on those phrases only. The best by
:func:`take_score` is the result; every take keeps ``take<n>_vocal.wav`` (dry) and
``take<n>_mix.mp3``, and ``takes.json`` lists them, which was chosen and why. ``--select-take N``
makes another take the result (:func:`select_take`). Exit status 0; 2 when an input cannot be
used, with the reason on stderr.

Stages (progress): ``load``, ``sing`` (every take and its checks), ``mix``, ``export``, ``qc``.
The service's ``render`` and ``select_take`` tasks call the same :func:`run_render` and
:func:`select_take`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Collection
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from tmik_common.audio import AudioError, load_audio
from tmik_common.lyrics import MELISMA, Lyrics, LyricsError, parse_lyrics, read_lyrics_file
from tmik_common.warmup import cache_lock

from . import export, mixing, qc
from .score import ScoreError, VocalScore, load_score
from .styles import STYLES, StyleError, VocalStyle, get_style, list_styles

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, float], None]
NEURAL_LOW, NEURAL_HIGH = 53, 69  # F3..A4: where the shipped neural voice sings in tune
STRETCH = 3  # semitones a voice may reach beyond its style's nominal range (which the melody service is given)
STAGES = (("load", 0.0), ("sing", 0.05), ("mix", 0.6), ("export", 0.8), ("qc", 0.9))  # sing: every take + checks
MAX_TAKES = 5
DEFAULT_TAKES = 3
TAKES_FILE = "takes.json"


class RenderError(ValueError):
    """An input the render cannot use (melody out of every range, lyrics, style, ...)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class RenderResult:
    outputs: dict[str, Path]
    qc: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _stage(report: ProgressCallback, name: str) -> Callable[[float], None]:
    start = dict(STAGES)[name]
    nxt = [f for n, f in STAGES if f > start]
    end = nxt[0] if nxt else 1.0
    return lambda fraction: report(name, start + (end - start) * min(max(fraction, 0.0), 1.0))


def assign_lyrics(score: VocalScore, lyrics: Lyrics) -> tuple[VocalScore, list[str]]:
    """Put the lyrics on the notes: one line per phrase (cycling), one syllable per note.

    Notes beyond a line's syllables continue its last vowel (melisma, ``-``); syllables
    beyond a phrase's notes are not sung and are reported in the returned warnings.
    """
    lines = lyrics.lines
    out = [MELISMA] * len(score.notes)
    dropped = 0
    for k, phrase in enumerate(score.phrases):
        syll = [s.text for s in lines[k % len(lines)].syllables]
        for j, i in enumerate(phrase):
            if j < len(syll):
                out[i] = syll[j]
        dropped += max(0, len(syll) - len(phrase))
    warnings = []
    if dropped:
        warnings.append(f"{dropped} syllable(s) had no note and are not sung; give the melody service the "
                        "same lyrics so it writes one note per syllable")
    return score.with_syllables(out), warnings


def fit_range(score: VocalScore, style: VocalStyle) -> tuple[VocalScore, list[str]]:
    """The melody moved by whole octaves into the style's range, or a RenderError when it cannot fit."""
    pitches = [n.pitch for n in score.notes]
    lo, hi = min(pitches), max(pitches)
    low, high = style.low - STRETCH, style.high + STRETCH
    if hi - lo > high - low:
        fits = [s.name for s in STYLES.values() if hi - lo <= s.high - s.low + 2 * STRETCH]
        raise RenderError("melody_out_of_range", f"the melody spans {hi - lo} semitones, more than the "
                          f"{style.name} voice's {style.high - style.low}; "
                          + (f"try {', '.join(fits)}" if fits else "no voice sings that wide a melody; "
                             f"write it for a range like {style.low}-{style.high}"))
    # The octave that keeps the melody inside the stretched range, nearest the nominal one.
    options = [k for k in range(-36, 37, 12) if lo + k >= low and hi + k <= high]
    if not options:
        raise RenderError("melody_out_of_range", f"the melody ({lo}-{hi}) does not fit the {style.name} "
                          f"voice ({style.low}-{style.high}) even by octaves; ask the melody service for that range")
    shift = min(options, key=lambda k: (abs(k), max(0, style.low - lo - k) + max(0, hi + k - style.high)))
    if shift == 0:
        return score, []
    moved = f"melody moved {shift // 12:+d} octave(s) into the {style.name} voice's range"
    return score.transposed(shift), [moved]


def _engine_path(score: VocalScore, style: VocalStyle) -> tuple[str, int]:
    """(engine, semitones the neural voice sings away from the written notes) for this score and style."""
    # The neural voice sings the written notes when most lie where it is in tune (F3-A4, a
    # little beyond is fine); otherwise it sings whole octaves away and WORLD moves the take
    # back, which costs some accuracy (an octave-shifted envelope is sparse), so only then.
    pitches = np.array([n.pitch for n in score.notes])

    def outside(k: int) -> int:
        return int(np.sum((pitches + k < NEURAL_LOW - 2) | (pitches + k > NEURAL_HIGH + 1)))

    shift = 0 if outside(0) <= 0.25 * len(pitches) else min((0, -12, 12, -24, 24), key=outside)
    return (style.engine if shift == 0 else "world"), shift


class Singer:
    """Sings a score's phrases for every take: phrase ``k`` with seed ``s`` is sung once and reused.

    A phrase's audio depends only on (score, style, seed, k) (``NeuralVoice.sing_phrase``), so a take
    that re-sings some phrases shares every other phrase's samples with the take it starts from.
    WORLD re-singing and choir doubling run over whole stretches of the take (split at rests,
    :func:`.engines.world.resing` / ``double``); a new take re-processes only the stretches that
    hold a re-sung phrase (grown to whole phrases), so its cost follows what it re-sings too.
    """

    def __init__(self, score: VocalScore, style: VocalStyle, base_seed: int):
        from .engines.neural import NeuralVoice

        self.score, self.style, self.base_seed = score, style, base_seed
        self.engine, self.shift = _engine_path(score, style)
        self.sung = score.transposed(self.shift)
        self.voice = NeuralVoice(seed=base_seed)
        self.sr = self.voice.sample_rate
        self.length = round((score.duration + 0.5) * self.sr)
        self.phrases = [k for k, p in enumerate(score.phrases) if p]
        self._cache: dict[tuple[int, int], tuple[int, np.ndarray]] = {}

    def phrase(self, k: int, seed: int) -> tuple[int, np.ndarray]:
        """(first sample, audio) of phrase ``k`` sung with ``seed``, its breath included (cut to the take)."""
        key = (k, seed)
        if key not in self._cache:
            # A WORLD style's dynamics and breath are its own too; WORLD replaces the pitch afterwards.
            start, audio = self.voice.sing_phrase(self.sung, k, seed=seed, style=self.style.name,
                                                  vocalise_vowel=self.style.vowel, expression=self.style.expression)
            audio = np.asarray(audio, dtype=np.float32)
            if start < 0:
                audio, start = audio[-start:], 0
            self._cache[key] = (start, audio[: max(0, self.length - start)])
        return self._cache[key]

    def span(self, k: int, seed: int) -> tuple[int, int]:
        start, audio = self.phrase(k, seed)
        return start, start + len(audio)

    def raw_take(self, phrase_seeds: list[int], progress: Callable[[float], None] | None = None,
                 todo: Collection[int] | None = None) -> np.ndarray:
        """The neural take: every phrase with its seed, summed in phrase order (the same sum for shared phrases)."""
        out = np.zeros(self.length, np.float32)
        sing_now = [k for k in self.phrases if todo is None or k in todo]
        for n, k in enumerate(sing_now):
            self.phrase(k, phrase_seeds[k])
            if progress is not None:
                progress((n + 1) / max(1, len(sing_now)))
        for k in self.phrases:
            start, audio = self.phrase(k, phrase_seeds[k])
            out[start:start + len(audio)] += audio
        return out

    def _closed(self, changed: Collection[int], duration: float) -> tuple[list[int], list[tuple[float, float]]]:
        """The phrases and WORLD stretches to process again: the stretches (split at rests > 0.3 s) holding a
        changed phrase, grown until they hold whole phrases (a phrase's curve is planned over all its notes)."""
        from .engines.world import _segments

        notes, phrases = self.score.notes, self.score.phrases
        stretches = _segments(notes, duration)
        todo = set(changed)
        while True:
            hit = [(a, b) for a, b in stretches if any(a <= notes[i].start < b for k in todo for i in phrases[k])]
            grown = {k for k, p in enumerate(phrases) if any(a <= notes[i].start < b for i in p for a, b in hit)}
            if grown <= todo:
                return sorted(todo), hit
            todo |= grown

    def post_process(self, raw: np.ndarray, phrase_seeds: list[int], previous: np.ndarray | None = None,
                     changed: Collection[int] | None = None) -> np.ndarray:
        """The style's WORLD re-singing / doubling of ``raw``; with ``previous`` (the processed take this one
        starts from) only the stretches holding a ``changed`` phrase are processed again."""
        from .engines.neural import bpm_at
        from .engines.world import double, resing

        style = self.style
        self.changed_stretches: list[tuple[float, float]] = []
        self.changed_phrases = sorted(changed) if changed is not None else list(self.phrases)
        if not (self.engine == "world" or style.doubles):
            return raw
        notes, phrases = list(self.score.notes), [list(p) for p in self.score.phrases]
        mask = None
        if previous is not None and changed is not None:
            todo, hit = self._closed(changed, len(raw) / self.sr)
            self.changed_stretches, self.changed_phrases = hit, todo
            keep = sorted(i for k in todo for i in phrases[k])
            index = {i: j for j, i in enumerate(keep)}
            notes = [notes[i] for i in keep]
            phrases = [[index[i] for i in p] if k in todo else [] for k, p in enumerate(phrases)]
            mask = np.zeros(len(raw), bool)
            for a, b in hit:
                mask[int(a * self.sr):min(len(raw), int(b * self.sr))] = True
            if not notes:
                return previous
        # The doubles' detune uses the render's seed in every take and WORLD draws phrase k's curve from
        # its own phrase seed, so a stretch that a take does not re-sing comes out the same.
        if self.engine == "neural":
            take = double(raw, self.sr, notes, doubles=style.doubles, seed=self.base_seed)
        else:
            bpm = [bpm_at(self.score.tempo, self.score.notes[p[0]].start) if p else 100.0 for p in self.score.phrases]
            take = resing(raw, self.sr, notes, shift_back=0.0, formant_shift=style.formant_shift,
                          breathiness=style.breathiness, style=style.expression, tempo_bpm=bpm, phrases=phrases,
                          phrase_seeds=phrase_seeds, doubles=style.doubles, seed=self.base_seed)
        if mask is None:
            return take
        return np.where(mask, take, previous).astype(np.float32)


def sing(score: VocalScore, style: VocalStyle, seed: int, progress: Callable[[float], None]) -> tuple[np.ndarray, int]:
    """The dry vocal of one take: the neural voice, re-sung by WORLD where the style asks for it."""
    singer = Singer(score, style, seed)
    seeds = [seed] * len(score.phrases)
    take = singer.post_process(singer.raw_take(seeds, lambda f: progress(0.8 * f)), seeds)
    progress(1.0)
    return take, singer.sr


@dataclass
class Take:
    """One whole take: the seed of every phrase, the phrases it re-sang, its dry vocal and its checks."""

    take: int
    seed: int
    phrase_seeds: list[int]
    resung_phrases: list[int]
    raw: np.ndarray
    vocal: np.ndarray
    checks: dict[str, Any]
    expression: dict[str, Any] = field(default_factory=dict)
    score: float = 0.0
    resung_spans: list[list[float]] = field(default_factory=list)  # seconds where it differs from its base
    extra: dict[str, Any] = field(default_factory=dict)  # more fields for its takes.json row (an edit's origin)


def take_score(checks: dict[str, Any]) -> float:
    """A take's score, higher is better: pitch accuracy minus whole-song word error rate.

    Both are shares (of in-note frames, of words), so one word in a hundred misheard weighs as much
    as one frame in a hundred off pitch; without a word check the score is the pitch accuracy.
    """
    pitch = checks.get("pitch_accuracy")
    wer = checks.get("word_error_rate")
    return round((pitch if pitch is not None else 0.0) - (wer if wer is not None else 0.0), 4)


def phrase_weakness(p: dict[str, Any]) -> float:
    """How badly a phrase came out: its share of words misheard plus its share of frames off pitch."""
    words = (p["word_errors"] / p["words"]) if p.get("word_errors") is not None and p.get("words") else 0.0
    pitch = p.get("pitch_accuracy")
    return words + (1.0 - pitch if pitch is not None else 0.0)


def phrases_to_resing(checks: dict[str, Any], n_phrases: int) -> list[int]:
    """The third of the phrases a new take sings again: those with word errors or pitch below 0.95, worst
    first, then the weakest others (a third keeps three takes within the speed budget: each further
    take costs about a third of the first one's singing and checks)."""
    rows = sorted(checks.get("phrases", []), key=lambda p: (-phrase_weakness(p), p["phrase"]))
    flawed = [p["phrase"] for p in rows if (p.get("word_errors") or 0) > 0
              or (p.get("pitch_accuracy") is not None and p["pitch_accuracy"] < 0.95)]
    at_least = at_most = max(1, math.ceil(n_phrases / 3))
    chosen = flawed[:at_most]
    for p in rows:
        if len(chosen) >= at_least:
            break
        if p["phrase"] not in chosen:
            chosen.append(p["phrase"])
    return sorted(chosen)


def _expression(vocal: np.ndarray, sr: int, score: VocalScore) -> dict[str, Any]:
    """H3's expression figures of a take (vibrato, onsets, overshoot, loudness range); {} where unavailable."""
    try:
        from .expression_metrics import expression_figures
    except ImportError:
        return {}
    try:
        return expression_figures(vocal, sr, score.notes, phrases=score.phrases)
    except Exception as exc:  # noqa: BLE001 - a measurement must not fail the render
        log.warning("expression figures not measured: %s", exc)
        return {}


def sing_takes(score: VocalScore, style: VocalStyle, seed: int, takes: int, lyrics: Lyrics | None,
               intelligibility_seconds: float, progress: Callable[[float], None],
               times: dict[str, float]) -> tuple[list[Take], int]:
    """Sing and check ``takes`` takes; return them and the sample rate. Take 1 sings every phrase with
    ``seed``; take n (seed ``seed + n - 1``) re-sings :func:`phrases_to_resing` of the best take so far,
    keeps that take's other phrases, and is checked again only on the phrases it re-sang."""
    singer = Singer(score, style, seed)
    out: list[Take] = []
    for n in range(1, takes + 1):
        t = time.perf_counter()
        def step(f: float, n: int = n) -> None:  # a take: singing 40 %, its checks 60 %
            progress(((n - 1) + 0.4 * f) / takes)

        def check_step(f: float, n: int = n) -> None:
            progress(((n - 1) + 0.4 + 0.6 * f) / takes)

        if n == 1:
            seeds = [seed] * len(score.phrases)
            resung = list(singer.phrases)
            raw = singer.raw_take(seeds, step)
            vocal = singer.post_process(raw, seeds)
            base = None
        else:
            base = max(out, key=lambda tk: (tk.score, -tk.take))
            resung = phrases_to_resing(base.checks, len(singer.phrases))
            seeds = list(base.phrase_seeds)
            for k in resung:
                seeds[k] = seed + n - 1
            raw = singer.raw_take(seeds, step, todo=resung)
            vocal = singer.post_process(raw, seeds, base.vocal, resung)
        times[f"take{n}_sing"] = time.perf_counter() - t
        times["sing"] = times.get("sing", 0.0) + times[f"take{n}_sing"]
        t = time.perf_counter()
        checks = qc.check_phrases(vocal, singer.sr, score.notes, score.phrases, lyrics,
                                  seconds=intelligibility_seconds,
                                  only=None if base is None else set(singer.changed_phrases),
                                  previous=None if base is None else base.checks, progress=check_step)
        take = Take(n, seed + n - 1, seeds, resung, raw, vocal, checks)
        if base is not None:  # the re-sung phrases' audio, old and new, and the stretches processed again
            spans = [singer.span(k, s) for k in resung for s in (base.phrase_seeds[k], seeds[k])]
            spans = [(a / singer.sr, b / singer.sr) for a, b in spans] + list(singer.changed_stretches)
            take.resung_spans = [[round(a, 4), round(b, 4)] for a, b in _union(spans)]
        take.score = take_score(checks)
        times[f"take{n}_check"] = time.perf_counter() - t
        times["check"] = times.get("check", 0.0) + times[f"take{n}_check"]
        out.append(take)
    return out, singer.sr


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def choose(takes: list[Take]) -> tuple[Take, str]:
    """The best take by :func:`take_score` (the earlier one on a tie) and why, in words."""
    best = max(takes, key=lambda tk: (tk.score, -tk.take))
    if len(takes) == 1:
        return best, "the only take"
    others = [tk for tk in takes if tk is not best]

    def fig(tk: Take) -> str:
        wer = tk.checks.get("word_error_rate")
        pitch = tk.checks.get("pitch_accuracy")
        return (f"word error rate {wer:.2f}, " if wer is not None else "") + (
            f"pitch accuracy {pitch:.3f}" if pitch is not None else "no pitch measured")

    wers = [tk.checks.get("word_error_rate") for tk in takes]
    if all(w is not None for w in wers) and best.checks["word_error_rate"] <= min(wers) and len(set(wers)) > 1:
        lead = "fewest word errors"
    elif best.checks.get("pitch_accuracy") is not None and best.checks["pitch_accuracy"] >= max(
            (tk.checks.get("pitch_accuracy") or 0.0) for tk in takes):
        lead = "best pitch"
    else:
        lead = "best balance of words and pitch"
    return best, (f"take {best.take}: {lead} ({fig(best)}; score {best.score:.3f} = pitch accuracy - word error "
                  f"rate); best of {len(takes)} (" + "; ".join(f"take {tk.take}: {fig(tk)}, score {tk.score:.3f}"
                                                               for tk in others) + ")")


def _prepare(background, melody, style: str | None, lyrics: Lyrics | None, target_lufs: float):
    """Load and check the inputs: (style, background samples (channels, n), its rate, score, warnings)."""
    chosen = get_style(style)
    if not -30.0 <= target_lufs <= -6.0:
        raise RenderError("bad_target_loudness", f"target loudness {target_lufs} LUFS must be within -30..-6")
    bg = load_audio(background, sample_rate=None, mono=False, min_seconds=1.0, max_seconds=None)
    background_audio = bg.samples if bg.samples.ndim == 2 else bg.samples[None, :]
    score = load_score(melody)
    warnings: list[str] = []
    if score.duration > bg.samples.shape[-1] / bg.sample_rate + 1.0:
        raise RenderError("melody_longer_than_background", f"the melody lasts {score.duration:.1f} s but the "
                          f"background only {bg.samples.shape[-1] / bg.sample_rate:.1f} s: they do not belong together")
    sung_in_score = [n.syllable for n in score.notes if n.syllable and n.syllable != MELISMA]
    if lyrics is not None and sung_in_score:
        # The melody service placed these lyrics note by note (one note per syllable, by line);
        # re-spreading them here could only be worse. Different lyrics are reported.
        flat = [s.text for s in lyrics.syllables]
        if sung_in_score != (flat * (len(sung_in_score) // max(1, len(flat)) + 1))[:len(sung_in_score)]:
            warnings.append("the melody already carries other lyrics; those are sung (generate the melody with "
                            "these lyrics to sing them)")
    elif lyrics is not None:
        score, more = assign_lyrics(score, lyrics)
        warnings += more
    elif not sung_in_score:
        warnings.append(f"no lyrics: the voice sings a vocalise on '{chosen.vowel}'")
    foreign = sorted({n.syllable for n in score.notes if any(ord(ch) > 0x24F and ch.isalpha() for ch in n.syllable)})
    if foreign:
        warnings.append(f"the voice sings English; {len(foreign)} syllable(s) in other scripts (e.g. "
                        f"{', '.join(foreign[:3])}) are sung as a neutral vowel")
    score, more = fit_range(score, chosen)
    warnings += more
    return chosen, background_audio, bg.sample_rate, score, warnings


def _check_takes_count(takes: int) -> int:
    if isinstance(takes, bool) or not isinstance(takes, int) or not 1 <= takes <= MAX_TAKES:
        raise RenderError("invalid_param", f"takes must be a whole number 1..{MAX_TAKES}, got {takes!r}")
    return takes


def run_render(background: str | Path, melody: str | Path, out_dir: str | Path, *, lyrics: Lyrics | None = None,
               style: str | None = None, seed: int = 0, target_lufs: float = -14.0, true_peak_db: float = -1.0,
               intelligibility_seconds: float = qc.INTELLIGIBILITY_SECONDS, takes: int = DEFAULT_TAKES,
               progress: ProgressCallback | None = None) -> RenderResult:
    """The whole render; see the module docstring. Raises AudioError, ScoreError, RenderError, StyleError.

    ``melody`` is melody.json (its syllables are sung; ``lyrics`` is then not needed) or a MIDI
    file (its lyric events are sung, else ``lyrics`` is spread over its phrases). ``takes`` (1..5)
    takes are sung and checked (:func:`sing_takes`); the best (:func:`choose`) gets the full outputs,
    every take its dry vocal and a listening mix, and ``takes.json`` says which was chosen and why.
    """
    report = progress or (lambda stage, fraction: None)
    times: dict[str, float] = {}
    t = time.perf_counter()
    _check_takes_count(takes)
    report("load", 0.0)
    chosen, background_audio, bg_sr, score, warnings = _prepare(background, melody, style, lyrics, target_lufs)
    times["load"] = time.perf_counter() - t

    all_takes, vocal_sr = sing_takes(score, chosen, seed, takes, lyrics, intelligibility_seconds,
                                     _stage(report, "sing"), times)
    best, reason = choose(all_takes)
    return _finish(score, chosen, all_takes, best, reason, "checks", vocal_sr, background_audio, bg_sr, out_dir,
                   lyrics, target_lufs, true_peak_db, warnings, times, report)


def _finish(score, chosen, all_takes: list[Take], best: Take, reason: str, chosen_by: str, vocal_sr: int,
            background_audio, bg_sr: int, out_dir, lyrics, target_lufs, true_peak_db, warnings, times,
            report) -> RenderResult:
    """Mix the chosen take in full, export, write qc.json, every take's files and takes.json."""
    t = time.perf_counter()
    report("mix", dict(STAGES)["mix"])
    fx = mixing.FX_PRESETS[chosen.fx]
    result = mixing.mix(background_audio, bg_sr, best.vocal, vocal_sr, fx, target_lufs=target_lufs,
                        true_peak_db=true_peak_db, vocal_offset_db=chosen.vocal_offset_db)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in (*out_dir.glob("take*_vocal.wav"), *out_dir.glob("take*_mix.mp3")):  # an earlier render's takes
        old.unlink(missing_ok=True)
    encodes: list = []  # MP3 encodes run on the other core during the rest
    outputs = mixing.write_outputs(result, bg_sr, out_dir, pending=encodes)
    times["mix"] = time.perf_counter() - t
    try:
        t = time.perf_counter()
        outputs.update(_take_files(all_takes, best, result, bg_sr, vocal_sr, fx, true_peak_db, out_dir, encodes))
        times["takes"] = time.perf_counter() - t
        record = _export_and_check(score, chosen, best, lyrics, vocal_sr, result, outputs, out_dir, warnings,
                                   times, report, all_takes, target_lufs, true_peak_db)
    finally:
        t = time.perf_counter()
        futures.wait(encodes)
        times["mp3_wait"] = time.perf_counter() - t
        times["mix"] += times["mp3_wait"]  # whatever of the encodes was left: still part of the mix
    for job in encodes:
        job.result()  # an encoder failure fails the render
    shutil.copyfile(outputs["mix_mp3"], outputs[f"take{best.take}_mix_mp3"])
    record["seconds"] = {k: round(v, 3) for k, v in times.items()}
    outputs["qc"] = _write_json(out_dir / "qc.json", record)
    outputs["takes"] = _write_json(out_dir / TAKES_FILE, takes_record(all_takes, best, reason, chosen_by))
    report("done", 1.0)
    return RenderResult({k: Path(v) for k, v in outputs.items()}, record, warnings, times)


def _write_json(path: Path, record: dict) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=float) + "\n")
    tmp.replace(path)
    return path


def takes_record(all_takes: list[Take], best: Take, reason: str, chosen_by: str) -> dict[str, Any]:
    """takes.json (interface 6 of the brief): the chosen take, by whom and why, and every take's figures."""
    return {"chosen": best.take, "chosen_by": chosen_by, "reason": reason, "score_formula":
            "pitch_accuracy - word_error_rate", "takes": [{
                "take": tk.take, "seed": tk.seed, "phrase_seeds": list(tk.phrase_seeds),
                "resung_phrases": list(tk.resung_phrases), "resung_spans": tk.resung_spans, "score": tk.score,
                "word_error_rate": tk.checks.get("word_error_rate"), "pitch_accuracy": tk.checks.get("pitch_accuracy"),
                "expression": tk.expression,
                "files": {"vocal": f"take{tk.take}_vocal.wav", "mix_mp3": f"take{tk.take}_mix.mp3"},
                "checks": tk.checks, **tk.extra} for tk in all_takes]}


def _take_files(all_takes: list[Take], best: Take, result, bg_sr: int, vocal_sr: int, fx,
                true_peak_db: float, out_dir: Path, encodes: list) -> dict[str, Path]:
    """take<n>_vocal.wav (dry, float, the voice's rate: :func:`select_take` mixes it again unchanged) and
    take<n>_mix.mp3 of every take (the chosen take's is mix.mp3 itself, copied once encoded).

    Another take is mixed the way the chosen one was: its vocal through the same chain and vocal gain,
    the same master gain, and the chosen master's own limiter gain sample by sample (``mix / (instrumental
    + vocal_fx)``), then held under the ceiling: a listening copy at about a tenth of a mix's cost, with
    the same loudness where the takes sing alike.
    """
    files: dict[str, Path] = {}
    n = result.mix.shape[-1]
    gv = np.float32(10 ** (result.stats.get("vocal_gain_db", 0.0) / 20))
    gm = np.float32(10 ** (result.stats.get("master_gain_db", 0.0) / 20))
    ceiling = np.float32(10 ** (true_peak_db / 20))
    limiter_gain = None
    pool = futures.ThreadPoolExecutor(2, thread_name_prefix="take-mp3")  # the main thread is done before them
    try:
        for tk in all_takes:
            vocal_path = out_dir / f"take{tk.take}_vocal.wav"
            mixing._write_wav_atomic(vocal_path, tk.vocal, vocal_sr, subtype="FLOAT")
            files[f"take{tk.take}_vocal"] = vocal_path
            files[f"take{tk.take}_mix_mp3"] = out_dir / f"take{tk.take}_mix.mp3"
            if tk is best:
                continue
            if limiter_gain is None:
                pre = result.instrumental + result.vocal_fx
                with np.errstate(divide="ignore", invalid="ignore"):
                    limiter_gain = np.where(np.abs(pre) > 1e-4, result.mix / pre, np.float32(1.0))
                limiter_gain = np.clip(np.nan_to_num(limiter_gain, nan=1.0), 0.0, 1.0).astype(np.float32)
                del pre
            dry = mixing._fit_length(np.asarray(tk.vocal, np.float32), int(np.ceil(n * vocal_sr / bg_sr)))
            wet = mixing.apply_vocal_chain(dry, vocal_sr, fx)
            if vocal_sr != bg_sr:
                wet = soxr.resample(wet, vocal_sr, bg_sr, quality="HQ").astype(np.float32)
            song = (result.instrumental + (mixing._fit_length(wet, n) * (gv * gm))[None, :]) * limiter_gain
            np.clip(song, -ceiling, ceiling, out=song)
            encodes.append(pool.submit(_write_preview_mp3, files[f"take{tk.take}_mix_mp3"], song, bg_sr))
    finally:
        pool.shutdown(wait=False)
    return files


def _write_preview_mp3(path: Path, audio: np.ndarray, sr: int) -> None:
    """A take's listening MP3 (320 kbps): LAME's faster setting (compression level 7), half the encode time."""
    mixing._write_mp3_atomic(path, audio, sr, bitrate="320k", compression_level=7)


def _export_and_check(score, chosen, best: Take, lyrics, vocal_sr, result, outputs, out_dir, warnings, times,
                      report, all_takes: list[Take], target_lufs, true_peak_db) -> dict:
    """The export and qc stages; returns the chosen take's qc record (``outputs`` gains the exports)."""
    t = time.perf_counter()
    report("export", dict(STAGES)["export"])
    # The words the melody carries (melody.json), else the lyric lines given with a MIDI file.
    lines = score.lines() or ([line.text for line in lyrics.lines] if lyrics is not None else None)
    exported = export.export_all(score, out_dir, background_audio=Path(outputs["instrumental"]), lines=lines)
    warnings += exported.pop("warnings", [])
    outputs.update(exported)
    times["export"] = time.perf_counter() - t

    t = time.perf_counter()
    report("qc", dict(STAGES)["qc"])
    for tk in all_takes:
        if not tk.expression:
            tk.expression = _expression(tk.vocal, vocal_sr, score)
    if result.stats.get("warning"):
        warnings.append(result.stats["warning"])
    record = take_qc(best, result.stats, target_lufs, true_peak_db)
    times["qc"] = time.perf_counter() - t
    return {**record, "style": chosen.name, "seed": best.seed, "take": best.take, "warnings": warnings,
            "seconds": {}, "mix": result.stats}


def take_qc(tk: Take, mix_stats: dict[str, Any], target_lufs: float, true_peak_db: float) -> dict[str, Any]:
    """qc.json's checks of one take: its whole-song pitch and words, per phrase, expression, loudness, peak."""
    checks = dict(tk.checks)
    pitch = {k: checks.pop(k) for k in ("pitch_accuracy", "voiced_fraction", "frames")}
    report_qc = qc.take_report(tk.vocal, 1, [], mix_stats, target_lufs=target_lufs, true_peak_db=true_peak_db,
                               words=checks, pitch=pitch)
    report_qc["expression"] = tk.expression
    report_qc["score"] = tk.score
    return report_qc


def select_take(background: str | Path, melody: str | Path, out_dir: str | Path, take: int, *,
                style: str | None = None, target_lufs: float = -14.0, true_peak_db: float = -1.0,
                progress: ProgressCallback | None = None) -> RenderResult:
    """Make take ``take`` of the render in ``out_dir`` the result: its dry vocal (take<n>_vocal.wav) mixed
    again over ``background``, the exports and qc.json (that take's checks) rewritten, takes.json
    ``chosen`` = ``take``, ``chosen_by`` = "user". Raises RenderError ``takes_not_found`` (no takes.json)
    or ``take_not_found``, and what :func:`run_render` raises for its inputs."""
    report = progress or (lambda stage, fraction: None)
    times: dict[str, float] = {}
    t = time.perf_counter()
    out_dir = Path(out_dir)
    record = read_takes(out_dir)
    rows = {int(r["take"]): r for r in record["takes"]}
    if isinstance(take, bool) or not isinstance(take, int) or take not in rows:
        raise RenderError("take_not_found", f"take {take!r} is not one of this render's takes "
                          f"({', '.join(map(str, sorted(rows)))})")
    report("load", 0.0)
    chosen, background_audio, bg_sr, score, warnings = _prepare(background, melody, style, None, target_lufs)
    import soundfile as sf

    all_takes: list[Take] = []
    vocal_sr = 0
    for n, row in sorted(rows.items()):
        path = out_dir / row["files"]["vocal"]
        if not path.is_file():
            raise RenderError("take_not_found", f"take {n}'s vocal {path.name} is missing: render again")
        vocal, vocal_sr = sf.read(str(path), dtype="float32", always_2d=False) if n == take else (np.zeros(0), 0)
        tk = Take(n, int(row["seed"]), list(row["phrase_seeds"]), list(row["resung_phrases"]), np.zeros(0),
                  np.asarray(vocal, np.float32), dict(row.get("checks") or {}), dict(row.get("expression") or {}),
                  float(row["score"]), list(row.get("resung_spans") or []))
        all_takes.append(tk)
        if n == take:
            best, best_sr = tk, vocal_sr
    times["load"] = time.perf_counter() - t
    fx = mixing.FX_PRESETS[chosen.fx]
    t = time.perf_counter()
    report("mix", dict(STAGES)["mix"])
    result = mixing.mix(background_audio, bg_sr, best.vocal, best_sr, fx, target_lufs=target_lufs,
                        true_peak_db=true_peak_db, vocal_offset_db=chosen.vocal_offset_db)
    encodes: list = []
    outputs = mixing.write_outputs(result, bg_sr, out_dir, pending=encodes)
    times["mix"] = time.perf_counter() - t
    try:
        for tk in all_takes:  # the other takes' files stay as the render wrote them
            outputs[f"take{tk.take}_vocal"] = out_dir / f"take{tk.take}_vocal.wav"
            outputs[f"take{tk.take}_mix_mp3"] = out_dir / f"take{tk.take}_mix.mp3"
        rec = _export_and_check(score, chosen, best, None, best_sr, result, outputs, out_dir, warnings, times,
                                report, [best], target_lufs, true_peak_db)
    finally:
        futures.wait(encodes)
    for job in encodes:
        job.result()
    rec["seconds"] = {k: round(v, 3) for k, v in times.items()}
    outputs["qc"] = _write_json(out_dir / "qc.json", rec)
    record.update(chosen=take, chosen_by="user", reason="chosen by the user")
    outputs["takes"] = _write_json(out_dir / TAKES_FILE, record)
    report("done", 1.0)
    return RenderResult({k: Path(v) for k, v in outputs.items()}, rec, warnings, times)


def read_takes(out_dir: str | Path) -> dict[str, Any]:
    """takes.json of a render folder; RenderError ``takes_not_found`` when it is missing or unreadable."""
    path = Path(out_dir) / TAKES_FILE
    try:
        record = json.loads(path.read_text())
        rows = record.get("takes") if isinstance(record, dict) else None
    except (OSError, ValueError) as exc:
        raise RenderError("takes_not_found", f"{path.name} of a finished render is missing or unreadable "
                          f"({exc.__class__.__name__}); render the song first") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "take" in r for r in rows):
        raise RenderError("takes_not_found", f"{path.name} lists no takes; render the song again")
    return record


# -- CLI ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tmik_make_vocal_mix.render",
        description="Sing melody.json over the background track, mix and master the song, and export the vocal "
                    "as MIDI, MusicXML and singing-synthesizer projects.",
        epilog="Exit status: 0 on success, 2 when an input (audio, melody, lyrics, style) cannot be used.")
    parser.add_argument("--background", type=Path, help="the instrumental (WAV, FLAC, OGG, MP3, ...)")
    parser.add_argument("--melody", type=Path, help="melody.json from the melody service (its words, syllables, "
                        "stress and phrases are sung); a melody.mid is accepted too (its lyric events are sung)")
    parser.add_argument("--out", type=Path, help="output folder (created)")
    parser.add_argument("--lyrics-file", type=Path, help="lyrics for a melody.mid without lyric events (one line "
                        "per phrase); melody.json already carries its syllables")
    parser.add_argument("--style", default=None, help="vocal style (see --list-styles; default pop_bright)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same take (default: %(default)s)")
    parser.add_argument("--target-lufs", type=float, default=None,
                        help="master loudness (default: -14; with --edit-of the parent's)")
    parser.add_argument("--intelligibility-seconds", type=float, default=qc.INTELLIGIBILITY_SECONDS,
                        help="seconds of singing (from the first note, whole phrases) the word check listens to; "
                             "0 turns it off (default: the whole song)")
    parser.add_argument("--takes", type=int, default=DEFAULT_TAKES,
                        help=f"takes to sing and check, 1..{MAX_TAKES}; the best is the result (default: %(default)s)")
    parser.add_argument("--select-take", type=int, default=None, metavar="N",
                        help="make take N of the render in --out the result (with the same --background, --melody "
                             "and --style); nothing is sung again")
    parser.add_argument("--edit-of", type=Path, default=None, metavar="PARENT_DIR",
                        help="edit the render in PARENT_DIR: sing --melody (the edited melody.json) again only where "
                             "it differs from --parent-melody, keep the parent's chosen take elsewhere")
    parser.add_argument("--parent-melody", type=Path, default=None,
                        help="with --edit-of: the melody.json the parent render sang")
    parser.add_argument("--list-styles", action="store_true", help="print the vocal styles and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return parser


def _package_render_error() -> type[Exception]:
    """RenderError as the package's modules raise it: run as ``python -m``, this file is ``__main__`` and
    :mod:`.edit` imports a second copy of it, whose RenderError is another class."""
    import importlib

    return importlib.import_module(f"{__package__ or 'tmik_make_vocal_mix'}.render").RenderError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.list_styles:
        for s in list_styles():
            print(f"{s['name']:14s} {s['vocal_range'][0]}-{s['vocal_range'][1]}  {s['description']}")
        return 0
    missing = [n for n in ("background", "melody", "out") if getattr(args, n) is None]
    if missing:
        parser.error("the following arguments are required: " + ", ".join(f"--{m}" for m in missing))
    if args.edit_of is not None and args.parent_melody is None:
        parser.error("--edit-of needs --parent-melody (the melody.json the parent render sang)")
    if args.edit_of is None and args.target_lufs is None:
        args.target_lufs = -14.0
    try:
        lyrics = parse_lyrics(read_lyrics_file(args.lyrics_file)) if args.lyrics_file else None
        with cache_lock():  # numba's first use on a machine must not overlap another process' (numba#10128)
            qc.warm_up()
        if args.edit_of is not None:
            from .edit import run_edit

            result = run_edit(args.background, args.edit_of, args.melody, args.out, parent_melody=args.parent_melody,
                              style=args.style, target_lufs=args.target_lufs,
                              intelligibility_seconds=args.intelligibility_seconds,
                              progress=lambda s, f: log.info("%3.0f%% %s", 100 * f, s))
        elif args.select_take is not None:
            result = select_take(args.background, args.melody, args.out, args.select_take, style=args.style,
                                 target_lufs=args.target_lufs, progress=lambda s, f: log.info("%3.0f%% %s", 100 * f, s))
        else:
            result = run_render(args.background, args.melody, args.out, lyrics=lyrics, style=args.style,
                                seed=args.seed, target_lufs=args.target_lufs,
                                intelligibility_seconds=args.intelligibility_seconds, takes=args.takes,
                                progress=lambda s, f: log.info("%3.0f%% %s", 100 * f, s))
    except (AudioError, ScoreError, RenderError, _package_render_error(), StyleError, LyricsError) as exc:
        print(f"error: {exc.message} [{exc.code}]", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: could not write to {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    q = result.qc
    print(f"{args.out}: take {q['take']}, style {q['style']}, pitch accuracy {q['pitch_accuracy']}, "
          f"word error rate {q.get('word_error_rate')}, {q['integrated_lufs']:.1f} LUFS, "
          f"true peak {q['true_peak_dbtp']:.1f} dBTP, {len(result.outputs)} files"
          + (f"; warnings: {'; '.join(result.warnings)}" if result.warnings else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
