"""Quality checks of one take (qc.json): pitch accuracy, voicing, intelligibility, loudness, peaks.

Plain functions on arrays, so the render, ``make eval`` and tests measure the same way.
Pitch is tracked with librosa's pyin (WORLD's DIO is faster but reads some clean sung notes
two octaves low); a frame counts when it lies inside a note, at least 50 ms from the note's
edges, and is voiced.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from tmik_common.lyrics import MELISMA, Lyrics

log = logging.getLogger(__name__)

EDGE_S = 0.05
CENTS_OK = 50.0
PYIN_SR = 12000
WER_OK = 0.25
# Whisper hears 30 s at a time; 20 s of singing stays inside one window and transcribes in about
# a second on 2 cores (longer stretches can set off its repetition loops and take ten times longer).
INTELLIGIBILITY_SECONDS = 20.0


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


def intelligibility(vocal: np.ndarray, sr: int, notes, lyrics: Lyrics | None,
                    seconds: float = INTELLIGIBILITY_SECONDS) -> dict[str, Any]:
    """Word error rate of the offline recogniser on the first ``seconds`` of singing, against the words
    sung there: the notes' own words where they carry them (melody.json), else ``lyrics``.
    ``{"word_error_rate": None, "intelligibility_note": why}`` when it cannot be measured
    (no lyrics, nothing sung, turned off, recogniser not installed)."""

    def skipped(note: str) -> dict[str, Any]:
        return {"word_error_rate": None, "intelligibility_note": note}

    if seconds <= 0:
        return skipped("not measured (QC_INTELLIGIBILITY_SECONDS=0)")
    sung = [n for n in notes if n.syllable and n.syllable != MELISMA]
    with_words = any(getattr(n, "word_start", None) is not None for n in notes)
    if lyrics is None and not with_words:
        return skipped("not measured: no lyrics text to compare with")
    if not sung:
        return skipped("not measured: no words are sung")
    from .intelligibility import RecogniserMissing, load_recogniser, sung_words, transcribe, word_error_rate

    start = sung[0].start
    window = [n for n in sung if n.end <= start + seconds] or sung[:1]
    end = window[-1].end
    clip = np.asarray(vocal)[max(0, int((start - 0.2) * sr)):int((end + 0.3) * sr)]
    try:
        heard = transcribe(clip, sr, load_recogniser())
    except RecogniserMissing as exc:
        log.warning("intelligibility not measured: %s", exc)
        return skipped(f"not measured: {exc}")
    if with_words:  # a word counts where its first syllable is sung in the window
        reference = " ".join(n.word for n in window if n.word_start)
    else:
        reference = sung_words(lyrics, len(window))
    return {"word_error_rate": round(word_error_rate(reference, heard), 3),
            "intelligibility_seconds": round(end - start, 1), "intelligibility_reference": reference,
            "intelligibility_transcript": heard}


def take_report(vocal: np.ndarray, vocal_sr: int, notes, mix_stats: dict[str, Any], *, target_lufs: float,
                true_peak_db: float, words: dict[str, Any] | None = None) -> dict[str, Any]:
    """qc.json: pitch, voicing, intelligibility (``words``, from :func:`intelligibility`), loudness and
    peak of a take, each with whether it meets its bar (intelligibility only where it was measured)."""
    pitch = pitch_accuracy(vocal, vocal_sr, notes)
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
