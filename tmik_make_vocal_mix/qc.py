"""Quality checks of one take (qc.json): pitch accuracy, voicing, intelligibility, loudness, peaks.

Plain functions on arrays, so the render, ``make eval`` and tests measure the same way.
Pitch is tracked with librosa's pyin (WORLD's DIO is faster but reads some clean sung notes
two octaves low); a frame counts when it lies inside a note, at least 50 ms from the note's
edges, and is voiced.

Both checks run phrase by phrase (:func:`check_phrases`), over the whole song: pitch on each
phrase's own stretch of audio (rests are not tracked), words in windows of consecutive phrases
(at most :data:`WINDOW_SECONDS` of singing, cut at rests) whose transcript is aligned to the
window's words, so every phrase has its word errors. A take that re-sings some phrases re-checks
only those (``only=``) and keeps the other phrases' figures.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from tmik_common.lyrics import MELISMA, Lyrics

log = logging.getLogger(__name__)

EDGE_S = 0.05
CENTS_OK = 50.0
PYIN_SR = 12000
WER_OK = 0.25
# The word check listens to the whole song unless capped (QC_INTELLIGIBILITY_SECONDS: seconds of
# singing from the first note, whole phrases; 0 turns it off).
INTELLIGIBILITY_SECONDS = math.inf
# Whisper hears 30 s at a time; windows of at most 25 s of singing (whole phrases, rests shortened)
# stay inside one (longer stretches can set off its repetition loops and take ten times longer).
WINDOW_SECONDS = 25.0
WINDOW_PAD = (0.2, 0.3)  # seconds of audio kept before a window's first and after its last note
WINDOW_GAP_S = 1.0  # silence between two phrases in a window, in place of a longer rest (0.4 s heard worse)
# Beam 5 (one decoding, no timestamps): on the 3-minute benchmark render (312 notes, 32 phrases, 7
# windows) WER 0.106 against greedy's 0.18, in about the same time (see intelligibility.transcribe).
BEAM_SIZE = 5
# Phrase pitch is tracked every 20 ms (pitch_accuracy: 10 ms): half pyin's per-frame cost, and still
# 5 or more frames on any note longer than 0.2 s.
PHRASE_HOP_S = 0.02


def pitch_accuracy(vocal: np.ndarray, sr: int, notes) -> dict[str, float | None]:
    """Share of voiced in-note frames within 50 cents of the written pitch, and the voiced share.

    ``notes`` have ``start``, ``end`` (seconds) and ``pitch`` (MIDI). Returns
    ``{"pitch_accuracy", "voiced_fraction", "frames"}`` (None when nothing was sung).
    """
    import librosa
    import soxr

    if len(vocal) == 0 or not np.any(np.abs(vocal) > 1e-5):
        return {"pitch_accuracy": None, "voiced_fraction": 0.0, "frames": 0}
    # pyin at 12 kHz, searched only a fifth around the written notes, in quarter-semitone bins:
    # as accurate as the full-band default on sung notes, and about 15 times faster.
    hz = [440.0 * 2.0 ** ((n.pitch - 69) / 12.0) for n in notes] or [200.0]
    x = soxr.resample(np.asarray(vocal, dtype=np.float32), sr, PYIN_SR)
    f0, voiced_flag, _ = librosa.pyin(x, fmin=min(hz) / 1.5, fmax=max(hz) * 1.5, sr=PYIN_SR, frame_length=512,
                                      hop_length=PYIN_SR // 100, resolution=0.25)
    f0 = np.where(voiced_flag, np.nan_to_num(f0), 0.0)
    t = librosa.times_like(f0, sr=PYIN_SR, hop_length=PYIN_SR // 100)
    inside = np.zeros(len(t), dtype=bool)
    target = np.zeros(len(t))
    for n in notes:
        sel = (t >= n.start + EDGE_S) & (t < n.end - EDGE_S)
        inside |= sel
        target[sel] = 440.0 * 2.0 ** ((n.pitch - 69) / 12.0)
    voiced = inside & (f0 > 0)
    if not inside.any():
        return {"pitch_accuracy": None, "voiced_fraction": 0.0, "frames": 0}
    cents = 1200.0 * np.log2(f0[voiced] / target[voiced]) if voiced.any() else np.zeros(0)
    acc = float(np.mean(np.abs(cents) <= CENTS_OK)) if voiced.any() else 0.0
    return {"pitch_accuracy": round(acc, 4), "voiced_fraction": round(float(voiced.sum() / inside.sum()), 4),
            "frames": int(voiced.sum())}


def warm_up() -> float:
    """Compile (or load from numba's cache) what :func:`pitch_accuracy` runs: pYIN and its helpers; seconds."""
    import time
    from types import SimpleNamespace

    t0 = time.perf_counter()
    sr = 22050
    t = np.arange(int(1.5 * sr)) / sr
    take = (0.3 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)
    pitch_accuracy(take, sr, [SimpleNamespace(start=0.2, end=1.3, pitch=57)])
    return time.perf_counter() - t0


def phrase_pitch(vocal: np.ndarray, sr: int, notes, phrases: list[list[int]],
                 only=None) -> dict[int, dict[str, int]]:
    """Pitch frames per phrase (``{k: {"in_tune", "voiced", "inside"}}``) from pyin on the phrase's own
    audio (its notes +-0.1 s, every :data:`PHRASE_HOP_S`), searched a fifth around its notes;
    ``only``: just those phrases. The same frame rule as :func:`pitch_accuracy`."""
    import librosa
    import soxr

    x = np.asarray(vocal, dtype=np.float32).reshape(-1)
    out: dict[int, dict[str, int]] = {}
    hop = round(PYIN_SR * PHRASE_HOP_S)
    for k, phrase in enumerate(phrases):
        if (only is not None and k not in only) or not phrase:
            continue
        ns = [notes[i] for i in phrase]
        a = max(0.0, ns[0].start - 0.1)
        b = ns[-1].end + 0.1
        clip = x[int(a * sr):int(b * sr)]
        rec = {"in_tune": 0, "voiced": 0, "inside": 0}
        out[k] = rec
        if len(clip) < int(0.1 * sr) or not np.any(np.abs(clip) > 1e-5):
            rec["inside"] = sum(max(0, int((n.end - n.start - 2 * EDGE_S) / PHRASE_HOP_S)) for n in ns)
            continue
        hz = [440.0 * 2.0 ** ((n.pitch - 69) / 12.0) for n in ns]
        y = soxr.resample(clip, sr, PYIN_SR)
        f0, flag, _ = librosa.pyin(y, fmin=min(hz) / 1.5, fmax=max(hz) * 1.5, sr=PYIN_SR, frame_length=512,
                                   hop_length=hop, resolution=0.25)
        f0 = np.where(flag, np.nan_to_num(f0), 0.0)
        t = a + librosa.times_like(f0, sr=PYIN_SR, hop_length=hop)
        target = np.zeros(len(t))
        for n in ns:
            target[(t >= n.start + EDGE_S) & (t < n.end - EDGE_S)] = 440.0 * 2.0 ** ((n.pitch - 69) / 12.0)
        inside = target > 0
        voiced = inside & (f0 > 0)
        cents = 1200.0 * np.log2(f0[voiced] / target[voiced])
        rec.update(in_tune=int(np.sum(np.abs(cents) <= CENTS_OK)), voiced=int(voiced.sum()), inside=int(inside.sum()))
    return out


def pooled_pitch(frames: list[dict[str, int]]) -> dict[str, float | None]:
    """Whole-song ``pitch_accuracy``, ``voiced_fraction`` and ``frames`` from per-phrase frame counts."""
    in_tune = sum(f["in_tune"] for f in frames)
    voiced = sum(f["voiced"] for f in frames)
    inside = sum(f["inside"] for f in frames)
    if not inside:
        return {"pitch_accuracy": None, "voiced_fraction": 0.0, "frames": 0}
    return {"pitch_accuracy": round(in_tune / voiced, 4) if voiced else 0.0,
            "voiced_fraction": round(voiced / inside, 4), "frames": voiced}


def word_windows(notes, phrases: list[list[int]], chosen: list[int],
                 seconds: float = WINDOW_SECONDS) -> list[list[int]]:
    """``chosen`` phrases (in order) grouped into windows of at most ``seconds`` of audio as
    :func:`_window_audio` joins them; a phrase longer than ``seconds`` is a window alone."""
    windows: list[list[int]] = []
    length = 0.0
    for k in chosen:
        span = notes[phrases[k][-1]].end - notes[phrases[k][0]].start + sum(WINDOW_PAD)
        if windows and length + WINDOW_GAP_S + span <= seconds:
            windows[-1].append(k)
            length += WINDOW_GAP_S + span
        else:
            windows.append([k])
            length = span
    return windows


def _window_audio(vocal: np.ndarray, sr: int, notes, phrases: list[list[int]], window: list[int]) -> np.ndarray:
    """The window's phrases (each from just before its first note to just after its last), joined by a short
    silence: the rests are not heard, so a window holds more singing and the song needs fewer windows (the
    recogniser's cost is per window: it always hears 30 s)."""
    x = np.asarray(vocal).reshape(-1)
    parts: list[np.ndarray] = []
    for k in window:
        a = notes[phrases[k][0]].start - WINDOW_PAD[0]
        b = notes[phrases[k][-1]].end + WINDOW_PAD[1]
        if parts:
            parts.append(np.zeros(int(WINDOW_GAP_S * sr), dtype=x.dtype))
        parts.append(x[max(0, int(a * sr)):int(b * sr)])
    return np.concatenate(parts) if parts else x[:0]


def phrase_word_errors(vocal: np.ndarray, sr: int, notes, phrases: list[list[int]], words: list[list[str]],
                       only=None, *, seconds: float = INTELLIGIBILITY_SECONDS, model=None,
                       beam_size: int = BEAM_SIZE, progress=None) -> tuple[dict[int, int], list[dict[str, Any]]]:
    """Word errors per phrase (``{k: errors}``) of the phrases with words (``only``: just those), and the
    windows heard (``[{"phrases", "reference", "transcript"}]``). ``seconds`` caps the check to the
    phrases starting within that many seconds of the first sung note. Raises RecogniserMissing."""
    from .intelligibility import align_errors, load_recogniser, normalise_words, recogniser_workers, transcribe

    sung = [k for k, p in enumerate(phrases) if p and words[k]]
    if not sung:
        return {}, []
    first = notes[phrases[sung[0]][0]].start
    chosen = [k for k in sung if (only is None or k in only) and notes[phrases[k][0]].start - first < seconds]
    model = model or load_recogniser()
    errors: dict[int, int] = {}
    heard: list[dict[str, Any]] = []
    windows = word_windows(notes, phrases, chosen)
    from concurrent.futures import ThreadPoolExecutor

    # windows are heard side by side (the recogniser has a worker per core and releases the GIL)
    pool = ThreadPoolExecutor(recogniser_workers(), thread_name_prefix="words")
    try:
        jobs = [pool.submit(transcribe, _window_audio(vocal, sr, notes, phrases, window), sr, model,
                            beam_size=beam_size) for window in windows]
        texts = []
        for w, job in enumerate(jobs):
            if progress is not None:
                progress(w / len(windows))  # a checkpoint: the caller may cancel here
            texts.append(job.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    for window, text in zip(windows, texts, strict=True):
        ref = [(k, w) for k in window for w in normalise_words(" ".join(words[k]))]
        per_word = align_errors([w for _, w in ref], normalise_words(text))
        for k in window:
            errors[k] = 0
        for (k, _), e in zip(ref, per_word, strict=True):
            errors[k] += e
        heard.append({"phrases": window, "reference": " ".join(" ".join(words[k]) for k in window),
                      "transcript": text})
    return errors, heard


def check_phrases(vocal: np.ndarray, sr: int, notes, phrases: list[list[int]], lyrics: Lyrics | None, *,
                  seconds: float = INTELLIGIBILITY_SECONDS, only=None,
                  previous: dict[str, Any] | None = None, model=None, progress=None) -> dict[str, Any]:
    """Pitch and word checks of a take phrase by phrase, pooled over the whole song.

    ``only`` (phrase indices) re-checks just those phrases, taking every other phrase's figures from
    ``previous`` (the result of this function for the take whose audio the others share).
    Returns the whole-song ``pitch_accuracy``, ``voiced_fraction``, ``frames``, ``word_error_rate``
    (total word errors / total words; None with an ``intelligibility_note`` where not measured),
    ``intelligibility_seconds`` (seconds of singing checked), ``intelligibility_reference`` /
    ``intelligibility_transcript`` (windows joined), ``phrases`` (per phrase: ``phrase``, ``start``,
    ``end``, ``words``, ``word_errors``, ``pitch_accuracy``) and ``windows`` (what was heard).
    ``progress(fraction)`` runs before each window is heard (it may raise to cancel).
    """
    from .intelligibility import RecogniserMissing, normalise_words, phrase_words

    words = phrase_words(notes, phrases, lyrics)
    if only is None or previous is None:
        only = None
    old = {p["phrase"]: p for p in (previous or {}).get("phrases", [])}
    # pyin (Python-bound, one core) runs beside the recogniser (CTranslate2, releases the GIL)
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1, thread_name_prefix="phrase-pitch")
    pitch_job = pool.submit(phrase_pitch, vocal, sr, notes, phrases, only)
    pool.shutdown(wait=False)
    note: str | None = None
    errors: dict[int, int] = {}
    windows: list[dict[str, Any]] = []
    with_words = any(getattr(n, "word_start", None) is not None for n in notes)
    if seconds <= 0:
        note = "not measured (QC_INTELLIGIBILITY_SECONDS=0)"
    elif lyrics is None and not with_words:
        note = "not measured: no lyrics text to compare with"
    elif not any(n.syllable and n.syllable != MELISMA for n in notes) or not any(words):
        note = "not measured: no words are sung"
    else:
        try:
            errors, windows = phrase_word_errors(vocal, sr, notes, phrases, words, only, seconds=seconds,
                                                 model=model, progress=progress)
        except RecogniserMissing as exc:
            log.warning("intelligibility not measured: %s", exc)
            note = f"not measured: {exc}"
    frames = pitch_job.result()
    per_phrase: list[dict[str, Any]] = []
    for k, phrase in enumerate(phrases):
        if not phrase:
            continue
        if only is not None and k not in only and k in old:
            per_phrase.append(dict(old[k]))
            continue
        f = frames.get(k, {"in_tune": 0, "voiced": 0, "inside": 0})
        per_phrase.append({
            "phrase": k, "start": round(notes[phrase[0]].start, 3), "end": round(notes[phrase[-1]].end, 3),
            "words": len(normalise_words(" ".join(words[k]))), "word_errors": errors.get(k),
            "pitch_accuracy": round(f["in_tune"] / f["voiced"], 4) if f["voiced"] else None,
            "frames": {"in_tune": f["in_tune"], "voiced": f["voiced"], "inside": f["inside"]},
        })
    record: dict[str, Any] = pooled_pitch([p["frames"] for p in per_phrase])
    checked = [p for p in per_phrase if p["word_errors"] is not None]
    total_words = sum(p["words"] for p in checked)
    if note is None and total_words:
        record["word_error_rate"] = round(sum(p["word_errors"] for p in checked) / total_words, 3)
        record["intelligibility_seconds"] = round(sum(p["end"] - p["start"] for p in checked), 1)
        record["intelligibility_phrases"] = len(checked)
        if previous is not None and only is not None:  # the windows heard for this take and those it kept
            kept = [w for w in previous.get("windows", []) if not set(w["phrases"]) & set(only)]
            windows = sorted(kept + windows, key=lambda w: w["phrases"][0])
        record["intelligibility_reference"] = " ".join(w["reference"] for w in windows)
        record["intelligibility_transcript"] = " ".join(w["transcript"] for w in windows)
    else:
        record["word_error_rate"] = None
        record["intelligibility_note"] = note or "not measured: no words are sung"
    record["phrases"] = per_phrase
    record["windows"] = windows
    return record


def intelligibility(vocal: np.ndarray, sr: int, notes, lyrics: Lyrics | None,
                    seconds: float = INTELLIGIBILITY_SECONDS, phrases: list[list[int]] | None = None
                    ) -> dict[str, Any]:
    """Whole-song word error rate of the offline recogniser, phrase by phrase (:func:`check_phrases`),
    against the words sung: the notes' own words where they carry them (melody.json), else ``lyrics``.
    ``{"word_error_rate": None, "intelligibility_note": why}`` when it cannot be measured
    (no lyrics, nothing sung, turned off, recogniser not installed). ``phrases`` default: split at rests."""
    from .score import phrases_of

    record = check_phrases(vocal, sr, notes, phrases if phrases is not None else phrases_of(list(notes)), lyrics,
                           seconds=seconds)
    keep = ("word_error_rate", "intelligibility_note", "intelligibility_seconds", "intelligibility_phrases",
            "intelligibility_reference", "intelligibility_transcript")
    return {k: record[k] for k in keep if k in record}


def take_report(vocal: np.ndarray, vocal_sr: int, notes, mix_stats: dict[str, Any], *, target_lufs: float,
                true_peak_db: float, words: dict[str, Any] | None = None,
                pitch: dict[str, Any] | None = None) -> dict[str, Any]:
    """qc.json: pitch, voicing, intelligibility (``words``, from :func:`intelligibility` or
    :func:`check_phrases`), loudness and peak of a take, each with whether it meets its bar
    (intelligibility only where it was measured). ``pitch``: already measured (``check_phrases``)."""
    pitch = pitch if pitch is not None else pitch_accuracy(vocal, vocal_sr, notes)
    lufs = mix_stats.get("integrated_lufs")
    peak = mix_stats.get("true_peak_dbtp")
    clipped = mix_stats.get("clipped_samples", 0)
    checks = {
        "pitch_accuracy": pitch["pitch_accuracy"] is not None and pitch["pitch_accuracy"] >= 0.95,
        "loudness": lufs is not None and abs(lufs - target_lufs) <= 0.5,
        "true_peak": peak is not None and peak <= true_peak_db + 1e-6,
        "no_clipping": not clipped,
    }
    words = words or {"word_error_rate": None}
    if words.get("word_error_rate") is not None:
        checks["intelligibility"] = words["word_error_rate"] <= WER_OK
    return {**pitch, **words, "integrated_lufs": lufs, "target_lufs": target_lufs, "true_peak_dbtp": peak,
            "true_peak_limit_dbtp": true_peak_db, "clipped_samples": clipped, "passed": checks,
            "all_passed": all(checks.values())}
