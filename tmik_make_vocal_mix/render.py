"""Sing a melody over its background, mix and master the song, export everything.

CLI::

    python -m tmik_make_vocal_mix.render --background IN.wav --melody DIR/melody.json --out DIR2
        [--lyrics-file F] [--style NAME] [--seed N] [--target-lufs -14] [--list-styles]

``--melody`` is the melody service's ``melody.json`` (the contract: notes with their words,
syllables, stress, phrases and melismas; see :func:`.score.read_melody_json`). A ``melody.mid``
is accepted too, for people who have only a MIDI file: its lyric events are sung, or the
``--lyrics-file`` spread over its phrases (one line per phrase, one syllable per note).

writes into DIR2: ``vocal.wav`` (dry), ``vocal_fx.wav``, ``instrumental.wav`` (the input as
mastered), ``mix.wav`` (24-bit) and ``mix.mp3``, ``melody_lyrics.mid``, ``score.musicxml``,
``song.svp``, ``song.ustx`` (with the background as an aligned wave part), ``lyrics.lrc``,
the LibreSVIP conversions ``song.vsqx``, ``song.ust``, ``song.acep`` (``song.ds`` where its
dictionaries know the lyrics), and ``qc.json`` (pitch accuracy, voicing, loudness, peak, and
warnings). Exit status 0; 2 when an input cannot be used, with the reason on stderr.

Stages (progress): ``load``, ``sing``, ``mix``, ``export``, ``qc``. The service's ``render``
task calls the same :func:`run_render`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
STAGES = (("load", 0.0), ("sing", 0.05), ("mix", 0.55), ("export", 0.8), ("qc", 0.9))


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


def sing(score: VocalScore, style: VocalStyle, seed: int, progress: Callable[[float], None]) -> tuple[np.ndarray, int]:
    """The dry vocal: the neural voice, re-sung by WORLD where the style asks for it."""
    from .engines.neural import NeuralVoice
    from .engines.world import double, resing

    # The neural voice sings the written notes when most lie where it is in tune (F3-A4, a
    # little beyond is fine); otherwise it sings whole octaves away and WORLD moves the take
    # back, which costs some accuracy (an octave-shifted envelope is sparse), so only then.
    pitches = np.array([n.pitch for n in score.notes])

    def outside(k: int) -> int:
        return int(np.sum((pitches + k < NEURAL_LOW - 2) | (pitches + k > NEURAL_HIGH + 1)))

    shift = 0 if outside(0) <= 0.25 * len(pitches) else min((0, -12, 12, -24, 24), key=outside)
    engine = style.engine if shift == 0 else "world"
    sung = score.transposed(shift)
    voice = NeuralVoice(seed=seed)
    take, sr = voice.sing(sung, vibrato_cents=style.vibrato_cents if engine == "neural" else 0.0,
                          vocalise_vowel=style.vowel, progress=lambda f: progress(0.6 * f if engine == "world" else f))
    if engine == "neural" and style.doubles:
        take = double(take, sr, score.notes, doubles=style.doubles, seed=seed)
    if engine == "world":
        take = resing(take, sr, score.notes, shift_back=0.0, formant_shift=style.formant_shift,
                      breathiness=style.breathiness, vibrato_cents=style.vibrato_cents, doubles=style.doubles,
                      seed=seed)
    progress(1.0)
    return take, sr


def run_render(background: str | Path, melody: str | Path, out_dir: str | Path, *, lyrics: Lyrics | None = None,
               style: str | None = None, seed: int = 0, target_lufs: float = -14.0, true_peak_db: float = -1.0,
               intelligibility_seconds: float = qc.INTELLIGIBILITY_SECONDS,
               progress: ProgressCallback | None = None) -> RenderResult:
    """The whole render; see the module docstring. Raises AudioError, ScoreError, RenderError, StyleError.

    ``melody`` is melody.json (its syllables are sung; ``lyrics`` is then not needed) or a MIDI
    file (its lyric events are sung, else ``lyrics`` is spread over its phrases).
    """
    report = progress or (lambda stage, fraction: None)
    times: dict[str, float] = {}
    t = time.perf_counter()
    chosen = get_style(style)
    if not -30.0 <= target_lufs <= -6.0:
        raise RenderError("bad_target_loudness", f"target loudness {target_lufs} LUFS must be within -30..-6")
    report("load", 0.0)
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
    times["load"] = time.perf_counter() - t

    t = time.perf_counter()
    vocal, vocal_sr = sing(score, chosen, seed, _stage(report, "sing"))
    times["sing"] = time.perf_counter() - t

    t = time.perf_counter()
    report("mix", dict(STAGES)["mix"])
    fx = mixing.FX_PRESETS[chosen.fx]
    result = mixing.mix(background_audio, bg.sample_rate, vocal, vocal_sr, fx, target_lufs=target_lufs,
                        true_peak_db=true_peak_db, vocal_offset_db=chosen.vocal_offset_db)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mp3_encode: list = []  # mix.mp3 is encoded on the other core during export and qc
    outputs = mixing.write_outputs(result, bg.sample_rate, out_dir, pending=mp3_encode)
    times["mix"] = time.perf_counter() - t
    try:
        record = _export_and_check(score, chosen, seed, lyrics, vocal, vocal_sr, result, outputs, out_dir,
                                   target_lufs, true_peak_db, warnings, times, report, intelligibility_seconds)
    finally:
        t = time.perf_counter()
        futures.wait(mp3_encode)
        times["mix"] += time.perf_counter() - t  # whatever of the encode was left: still part of the mix
    for job in mp3_encode:
        job.result()  # an encoder failure fails the render
    record["seconds"] = {k: round(v, 3) for k, v in times.items()}
    qc_path = out_dir / "qc.json"
    tmp = qc_path.with_name(f".qc.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=float) + "\n")
    tmp.replace(qc_path)
    outputs["qc"] = qc_path
    report("done", 1.0)
    return RenderResult({k: Path(v) for k, v in outputs.items()}, record, warnings, times)


def _export_and_check(score, chosen, seed, lyrics, vocal, vocal_sr, result, outputs, out_dir, target_lufs,
                      true_peak_db, warnings, times, report, intelligibility_seconds) -> dict:
    """The export and qc stages of :func:`run_render`; returns the qc record (``outputs`` gains the exports)."""
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
    stats = result.stats  # the master's own measurement of the final mix
    words = qc.intelligibility(vocal, vocal_sr, score.notes, lyrics, intelligibility_seconds)
    report_qc = qc.take_report(vocal, vocal_sr, score.notes, stats, target_lufs=target_lufs, true_peak_db=true_peak_db,
                               words=words)
    if result.stats.get("warning"):
        warnings.append(result.stats["warning"])
    times["qc"] = time.perf_counter() - t
    return {**report_qc, "style": chosen.name, "seed": seed, "warnings": warnings, "seconds": {}, "mix": result.stats}


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
    parser.add_argument("--target-lufs", type=float, default=-14.0, help="master loudness (default: %(default)s)")
    parser.add_argument("--intelligibility-seconds", type=float, default=qc.INTELLIGIBILITY_SECONDS,
                        help="seconds of singing the word check (qc.json) listens to; 0 turns it off "
                             "(default: %(default)s)")
    parser.add_argument("--list-styles", action="store_true", help="print the vocal styles and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return parser


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
    try:
        lyrics = parse_lyrics(read_lyrics_file(args.lyrics_file)) if args.lyrics_file else None
        with cache_lock():  # numba's first use on a machine must not overlap another process' (numba#10128)
            qc.warm_up()
        result = run_render(args.background, args.melody, args.out, lyrics=lyrics, style=args.style, seed=args.seed,
                            target_lufs=args.target_lufs, intelligibility_seconds=args.intelligibility_seconds,
                            progress=lambda s, f: log.info("%3.0f%% %s", 100 * f, s))
    except (AudioError, ScoreError, RenderError, StyleError, LyricsError) as exc:
        print(f"error: {exc.message} [{exc.code}]", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: could not write to {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    q = result.qc
    print(f"{args.out}: style {q['style']}, pitch accuracy {q['pitch_accuracy']}, {q['integrated_lufs']:.1f} LUFS, "
          f"true peak {q['true_peak_dbtp']:.1f} dBTP, {len(result.outputs)} files"
          + (f"; warnings: {'; '.join(result.warnings)}" if result.warnings else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
