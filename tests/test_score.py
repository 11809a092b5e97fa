"""melody.json, the contract from the melody service to the voice: loaded, checked, and sung from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tmik_make_vocal_mix import export
from tmik_make_vocal_mix.score import MELISMA, ScoreError, load_score, read_melody_json


def note(start: float, end: float, pitch: int, word: str | None, syllable: str | None, stress: int = 0,
         phrase: int | None = 0, melisma: bool = False) -> dict:
    return {"start": start, "end": end, "pitch": pitch, "word": word, "syllable": syllable, "stress": stress,
            "phrase": phrase, "melisma": melisma}


# Two lines, "City la la" / "star" with a two-note melisma on "star"; the notes of a line touch (no rest).
NOTES = [note(0.5, 0.75, 67, "City", "Ci", 1), note(0.75, 1.0, 65, "City", "ty", 0),
         note(1.0, 1.5, 64, "la", "la", 1), note(1.5, 2.0, 62, "la", "la", 1),
         note(2.5, 3.0, 60, "star", "star", 1, phrase=1), note(3.0, 4.0, 62, "star", "star", 1, phrase=1, melisma=True)]


def write(path: Path, record) -> Path:
    path.write_text(record if isinstance(record, str) else json.dumps(record))
    return path


def melody_json(path: Path, notes: list[dict] = NOTES, **top) -> Path:
    record = {"key": "C major", "time_signature": "4/4", "tempo": 120.0, "phrases": [[0.5, 2.0], [2.5, 4.0]],
              "notes": notes, **top}
    return write(path, record)


def test_loads_words_syllables_stress_phrases_and_melismas(tmp_path: Path) -> None:
    score = load_score(melody_json(tmp_path / "melody.json"))
    assert [(n.start, n.end, n.pitch) for n in score.notes] == [(d["start"], d["end"], d["pitch"]) for d in NOTES]
    # The melisma note continues "star": it is sung as a continuation, not as a second "star".
    assert [n.syllable for n in score.notes] == ["Ci", "ty", "la", "la", "star", MELISMA]
    assert [n.stress for n in score.notes] == [1, 0, 1, 1, 1, 1]
    assert score.phrases == [[0, 1, 2, 3], [4, 5]]
    # Words from the file: "City" is one word of two syllables, "la la" two words.
    assert [n.word_start for n in score.notes] == [True, False, True, True, True, None]
    assert score.lines() == ["City la la", "star"]
    assert export.syllabics(score) == ["begin", "end", "single", "single", "single", None]
    assert score.tempo.tempos == [(0, 120.0)] and score.tempo.time_signature == (4, 4)


def test_phrases_come_from_the_file_not_from_rests(tmp_path: Path) -> None:
    # No rest between the lines, yet two phrases; and a rest inside a line does not split it.
    notes = [note(0.5, 1.0, 60, "one", "one", 1), note(1.0, 1.5, 62, "two", "two", 1, phrase=1),
             note(2.0, 2.5, 64, "three", "three", 1, phrase=1)]
    assert load_score(melody_json(tmp_path / "m.json", notes)).phrases == [[0], [1, 2]]


def test_tempo_map_and_meter_reach_the_exports(tmp_path: Path) -> None:
    score = read_melody_json(melody_json(tmp_path / "m.json", time_signature="3/4",
                                         tempo_map=[[0, 120.0], [1920, 90.0]]))
    assert score.tempo.tempos == [(0, 120.0), (1920, 90.0)] and score.tempo.time_signature == (3, 4)
    # 2 s at 120 BPM is 4 quarters (1920 ticks); then 1 s at 90 BPM is 1.5 quarters (720 ticks).
    assert export.note_ticks(score)[-2:] == [(1920 + 360, 1920 + 720), (1920 + 720, 1920 + 1440)]


def test_an_old_melody_json_still_loads(tmp_path: Path) -> None:
    # As the melody service wrote it before the fields: start, end, pitch, syllable ("-" a melisma, null none).
    old = [{"start": 0.5, "end": 1.0, "pitch": 60, "syllable": "Hel"}, {"start": 1.0, "end": 1.5, "pitch": 62,
                                                                       "syllable": "lo"},
           {"start": 1.5, "end": 2.0, "pitch": 64, "syllable": "-"},
           {"start": 2.5, "end": 3.0, "pitch": 62, "syllable": None}]
    score = load_score(write(tmp_path / "melody.json", {"tempo": 100.0, "notes": old}))
    assert [n.syllable for n in score.notes] == ["Hel", "lo", MELISMA, ""]
    assert score.phrases == [[0, 1, 2], [3]]  # the rest ends a phrase
    assert [n.word_start for n in score.notes] == [None] * 4 and score.lines() is None
    assert [n.stress for n in score.notes] == [None] * 4
    assert score.tempo.tempos == [(0, 100.0)]


@pytest.mark.parametrize("content, code, named", [
    ("{not json", "melody_not_json", "not a JSON file"),
    ({"key": "C major"}, "melody_missing_notes", '"notes"'),
    ({"notes": {"start": 0}}, "melody_missing_notes", "list"),
    ({"notes": []}, "empty_melody", "no notes"),
    ({"notes": [note(0.5, 1.0, 60, "a", "a"), note(0.8, 1.2, 62, "b", "b")]}, "melody_overlapping_notes", "note 1"),
    ({"notes": [note(1.0, 1.5, 60, "a", "a"), note(0.2, 0.6, 62, "b", "b")]}, "melody_overlapping_notes", "note 1"),
    ({"notes": [{"start": "0.5", "end": 1.0, "pitch": 60}]}, "melody_bad_field", "'start'"),
    ({"notes": [{"start": 0.5, "end": 1.0}]}, "melody_bad_field", "'pitch' is missing"),
    ({"notes": [{"start": 0.5, "end": 0.4, "pitch": 60}]}, "melody_bad_field", "'end'"),
    ({"notes": [{"start": 0.5, "end": 1.0, "pitch": 60.5}]}, "melody_bad_field", "'pitch'"),
    ({"notes": [note(0.5, 1.0, 60, "a", "a", stress=3)]}, "melody_bad_field", "'stress'"),
    ({"notes": [note(0.5, 1.0, 60, "a", 7)]}, "melody_bad_field", "'syllable'"),
    ({"notes": [note(0.5, 1.0, 60, "a", "a", melisma="yes")]}, "melody_bad_field", "'melisma'"),
    ({"notes": [note(0.5, 1.0, 60, "a", "a", phrase=1), note(1.0, 1.5, 60, "b", "b", phrase=0)]},
     "melody_bad_field", "'phrase'"),
    ({"time_signature": "four", "notes": [note(0.5, 1.0, 60, "a", "a")]}, "melody_bad_field", "'time_signature'"),
])
def test_a_bad_melody_json_is_refused_with_its_code(tmp_path: Path, content, code, named) -> None:
    with pytest.raises(ScoreError) as err:
        load_score(write(tmp_path / "melody.json", content))
    assert err.value.code == code
    assert named in err.value.message


def test_a_missing_file_and_a_millisecond_overlap(tmp_path: Path) -> None:
    with pytest.raises(ScoreError) as err:
        load_score(tmp_path / "nope.json")
    assert err.value.code == "melody_not_found"
    # Rounding may leave two touching notes overlapping by a fraction of a millisecond: cut, not refused.
    score = load_score(write(tmp_path / "m.json", {"notes": [note(0.5, 1.0004, 60, "a", "a"),
                                                             note(1.0, 1.5, 62, "b", "b")]}))
    assert score.notes[0].end == 1.0


def test_a_midi_file_is_still_read_as_midi(tmp_path: Path) -> None:
    from test_render import melody

    score = load_score(melody(tmp_path / "melody.mid", syllables=("twin", "kle", "twin", "kle", "lit", "tle",
                                                                   "star", "-")))
    assert [n.syllable for n in score.notes][:3] == ["twin", "kle", "twin"]
    assert score.notes[-1].syllable == MELISMA and score.phrases == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_melisma_notes_continue_the_vowel_and_words_are_not_guessed(tmp_path: Path) -> None:
    from tmik_make_vocal_mix.engines.neural import NeuralVoice

    score = load_score(melody_json(tmp_path / "melody.json"))
    voice = NeuralVoice()
    first = voice._phrase_syllables(score.notes, score.phrases[0], "a")
    # "Ci"+"ty" is one word (two syllables, the second no word start); "la" "la" two words.
    assert [(s.notes, s.word_start) for s in first] == [([0], True), ([1], False), ([2], True), ([3], True)]
    second = voice._phrase_syllables(score.notes, score.phrases[1], "a")
    # One syllable "star" over both notes: the melisma note starts no new consonant, it holds the vowel.
    assert len(second) == 1 and second[0].notes == [4, 5]
    assert second[0].onset and second[0].nucleus
