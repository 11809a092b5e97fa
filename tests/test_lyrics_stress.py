"""Lexical stress and function words of parsed lyrics (what the rhythm stage sets to strong and weak beats)."""

from __future__ import annotations

import pytest

import tmik_common.lyrics as lyrics_module
from tmik_common.lyrics import Syllable, parse_lyrics, word_stress


def stresses(text: str, language: str = "en") -> list[tuple[str, int]]:
    return [(s.text, s.stress) for s in parse_lyrics(text, language).syllables]


@pytest.mark.parametrize(("word", "expected"), [
    ("about", [0, 1]),
    ("happy", [1, 0]),
    ("remember", [0, 1, 0]),
    ("city", [1, 0]),
    ("tomorrow", [0, 1, 2]),  # T AH0 M AA1 R OW2
])
def test_english_stress_comes_from_the_pronouncing_dictionary(word, expected) -> None:
    assert [s for _, s in stresses(word)] == expected


def test_the_dictionary_keeps_secondary_stress() -> None:
    assert 2 in [s for _, s in stresses("understand")]  # UH2 N D ER0 S T AE1 N D
    assert lyrics_module._cmudict_stress("understand") == [2, 0, 1]


def test_monosyllabic_function_words_are_unstressed_and_flagged() -> None:
    syllables = parse_lyrics("I walk to the river and a boat").syllables
    by_text = {s.text: s for s in syllables}
    for w in ("I", "to", "the", "and", "a"):
        assert by_text[w].stress == 0 and by_text[w].function_word, w
    for w in ("walk", "boat"):
        assert by_text[w].stress == 1 and not by_text[w].function_word, w


def test_unknown_english_words_get_a_rule() -> None:
    assert lyrics_module._cmudict_stress("blorptastic") == []
    assert [s for _, s in stresses("blorptastic")] == [0, 1, 0]  # -tic: the syllable before
    assert [s for _, s in stresses("zarnel")] == [1, 0]  # first syllable
    assert [s for _, s in stresses("bezarn")] == [0, 1]  # after an unstressed prefix
    assert [s for _, s in stresses("glorp")] == [1]


def test_other_languages_follow_simple_rules() -> None:
    assert stresses("corazón", "es") == [("co", 0), ("ra", 0), ("zón", 1)]  # the accent mark
    assert [s for _, s in stresses("tranquilo", "es")] == [0, 1, 0]  # penultimate
    assert [s for _, s in stresses("liebe", "de")] == [1, 0]  # first
    assert [s for _, s in stresses("chanson", "fr")] == [0, 1]  # last
    assert all(s == 0 for _, s in stresses("東京", "ja"))  # no lexical stress
    assert word_stress(["cia", "o"], "it") == [1, 0]


def test_stress_takes_no_part_in_equality() -> None:
    parsed = parse_lyrics("happy").syllables
    assert parsed == (Syllable("hap", True, False), Syllable("py", False, True))
    assert parsed[0].stress == 1
