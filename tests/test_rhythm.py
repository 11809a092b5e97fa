"""The rhythm stage: lyrics + meter + tempo -> phrases of notes, and the melody written on that rhythm.

Behaviours a songwriter's setting has: stressed syllables on strong positions, function words
on weak ones, a breath between lines, a natural syllable rate at slow and fast tempos, words
kept whole, and lyrics that do not fit refused with a clear message.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from tmik_bgm_conditional_melody_generation import melody
from tmik_bgm_conditional_melody_generation.analysis import Analysis
from tmik_bgm_conditional_melody_generation.checkpoint import LoadedModel
from tmik_bgm_conditional_melody_generation.constraints import build_plan, singable_columns
from tmik_bgm_conditional_melody_generation.generate import melody_record
from tmik_bgm_conditional_melody_generation.model import GETDiffModel, ModelConfig
from tmik_bgm_conditional_melody_generation.rhythm import metrical_weight, plan_rhythm
from tmik_bgm_conditional_melody_generation.timeline import timeline_from_analysis
from tmik_common.lyrics import LyricsError, parse_lyrics

LYRICS = ("[Verse]\nI remember the city at night\nHappy about the river\nWalking alone to a happy end\n"
          "And I was about to leave\n\n[Chorus]\nOh we will sing again\nUnder the morning sky\n")


def song(bpm: float = 100.0, bars: int = 24, meter: str = "4/4", sections: str = "AB") -> Analysis:
    """A steady track with one chord per bar and sections of equal length."""
    spb = 60.0 / bpm
    per_bar = {"4/4": 4, "3/4": 3, "6/8": 2}[meter]
    beats = list(0.3 + spb * np.arange(bars * per_bar))
    downs = beats[::per_bar]
    end = beats[-1] + spb
    prog = ["C:maj", "G:maj", "A:min", "F:maj"]
    chords = [(d, downs[i + 1] if i + 1 < len(downs) else end, prog[i % 4]) for i, d in enumerate(downs)]
    per = bars // len(sections)
    secs = [(downs[i * per] if i else 0.0, downs[(i + 1) * per] if (i + 1) * per < bars else end, lab)
            for i, lab in enumerate(sections)]
    return Analysis(end + 0.5, bpm, meter, beats, downs, "C major", chords, secs)


def rhythm_of(analysis: Analysis, text: str | None = LYRICS, seed: int = 0, randomness: float = 0.5):
    tl = timeline_from_analysis(analysis)
    lyrics = parse_lyrics(text) if text is not None else None
    return tl, plan_rhythm(tl, lyrics, singable_columns(tl), seed=seed, randomness=randomness)


def syllable_onsets(phrase) -> dict[int, int]:
    """Syllable index -> column of the note that starts it (melisma notes continue it)."""
    return {n.syllable: n.col for n in phrase.notes if not n.melisma}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("bpm", [72, 120, 156])
def test_a_stressed_syllable_lands_stronger_than_its_unstressed_neighbours(bpm, seed) -> None:
    tl, r = rhythm_of(song(bpm), "Happy about the river\nWe were happy about it", seed=seed)
    w = metrical_weight(tl)
    checked = 0
    for ph in r.phrases:
        at = syllable_onsets(ph)
        for k, s in enumerate(ph.syllables):
            if s.word in ("Happy", "happy", "about") and s.stress == 1:
                inside = [j for j in (k - 1, k + 1) if 0 <= j < len(ph.syllables) and ph.syllables[j].word == s.word]
                assert inside, "HAP-py and a-BOUT have an unstressed neighbour inside the word"
                assert all(w[at[k]] > w[at[j]] for j in inside), (
                    f"{s.word}: stressed {s.text!r} at weight {w[at[k]]}, neighbours "
                    f"{[(ph.syllables[j].text, int(w[at[j]])) for j in inside]}")
                checked += 1
    assert checked >= 4


def test_function_words_sit_on_weak_positions() -> None:
    counts = {"weak": 0, "beat": 0}
    for bpm, seed in itertools.product((72, 100, 140), range(3)):
        tl, r = rhythm_of(song(bpm), seed=seed)
        w = metrical_weight(tl)
        for ph in r.phrases:
            at = syllable_onsets(ph)
            for k, s in enumerate(ph.syllables):
                if s.function_word:
                    assert w[at[k]] < 4, f"function word {s.text!r} on a downbeat"
                    counts["weak" if w[at[k]] <= 1 else "beat"] += 1
    assert counts["weak"] >= 2 * counts["beat"], counts


@pytest.mark.parametrize("bpm", [70, 160])
def test_a_breath_between_lines_and_a_held_line_end(bpm) -> None:
    tl, r = rhythm_of(song(bpm, bars=32))
    t = tl.column_times
    beat_s = 60.0 / bpm
    assert len(r.phrases) >= 6
    for a, b in itertools.pairwise(r.phrases):
        rest = t[b.start] - t[a.end]
        assert rest >= min(beat_s, 0.3) - 1e-6, f"only {rest:.2f} s between phrases at {a.end} and {b.start}"
    for ph in r.phrases:
        last = ph.notes[-1]
        first_of_last = [n for n in ph.notes if n.syllable == last.syllable]
        held = sum(n.length for n in first_of_last)
        others = [n.length for n in ph.notes if n.syllable != last.syllable]
        assert held >= tl.beat_cols, "the line's last syllable is held at least a beat"
        assert not others or held >= np.median(others), "the line ends on a longer note than its typical one"
        assert t[ph.end] - t[ph.start] <= 8.0 + 1e-6, "no sung run longer than about 8 s"


@pytest.mark.parametrize("bpm", [70, 160])
def test_the_syllable_rate_within_lines_is_natural_at_slow_and_fast_tempos(bpm) -> None:
    for seed in range(3):
        tl, r = rhythm_of(song(bpm, bars=32), seed=seed)
        t = tl.column_times
        for ph in r.phrases:
            rate = len(ph.syllables) / (t[ph.end] - t[ph.start])
            assert 1.5 <= rate <= 5.0, f"{rate:.2f} syllables/s at {bpm} BPM"


def test_phrases_start_on_the_downbeat_or_with_a_pickup() -> None:
    _tl, r = rhythm_of(song(110))
    for ph in r.phrases:
        first_stressed = next((k for k, s in enumerate(ph.syllables) if s.stress == 1), 0)
        at = syllable_onsets(ph)
        if ph.start < ph.downbeat:
            before = [k for k, c in at.items() if c < ph.downbeat]
            assert before, "a pickup is sung before the bar line"
        assert at[first_stressed] >= ph.downbeat - 2, "the first stress is on (or an 8th before) the bar line"


def test_a_long_line_is_split_between_words_never_inside_one() -> None:
    long_line = ("Everybody wonders whether yesterday remembers every beautiful "
                 "melody we ever sang together underneath the fireworks")
    _tl, r = rhythm_of(song(70, bars=32), long_line + "\nShort line here")
    pieces = [ph for ph in r.phrases if ph.line == 0]
    assert len(pieces) >= 2, "a line over 8 s of singing takes two phrases"
    for ph in r.phrases:
        assert ph.syllables[0].word_start and ph.syllables[-1].word_end, "a word split across a phrase break"


def test_too_many_syllables_are_refused_with_what_fits() -> None:
    text = "\n".join(["Every single morning I am walking to the river by the city"] * 40)
    with pytest.raises(LyricsError) as err:
        rhythm_of(song(100, bars=16), text)
    assert err.value.code == "lyrics_do_not_fit"
    assert "syllables" in err.value.message and "holds only about" in err.value.message


def test_a_word_too_long_for_one_breath_is_refused_not_cut() -> None:
    word = "supercalifragilisticexpialidocious" * 3
    with pytest.raises(LyricsError) as err:
        rhythm_of(song(100, bars=16), word)
    assert err.value.code == "lyrics_do_not_fit" and "Split the line" in err.value.message


def test_too_few_lyrics_repeat_to_fill_the_track() -> None:
    tl, r = rhythm_of(song(100, bars=32), "Hello my love")
    assert r.repeats > 2
    assert r.phrases[-1].start > 0.75 * tl.n_cols, "the lyrics come back until the end of the track"


def test_the_same_seed_gives_the_same_rhythm_and_the_layout_ignores_the_seed() -> None:
    a = [[(n.col, n.length) for n in ph.notes] for ph in rhythm_of(song(100), seed=3)[1].phrases]
    b = [[(n.col, n.length) for n in ph.notes] for ph in rhythm_of(song(100), seed=3)[1].phrases]
    other = rhythm_of(song(100), seed=4)[1].phrases
    assert a == b
    assert a != [[(n.col, n.length) for n in ph.notes] for ph in other]
    assert [ph.downbeat for ph in rhythm_of(song(100), seed=3)[1].phrases] == [ph.downbeat for ph in other]


def test_the_chorus_is_sung_in_the_recurring_section_and_leans_higher() -> None:
    analysis = song(100, bars=32, sections="ABAB")
    tl, r = rhythm_of(analysis)
    assert r.info["by_section"]
    chorus_cols = [ph.downbeat for ph in r.phrases if ph.chorus]
    b_sections = [(s0, s1) for s0, s1, lab in tl.sections if lab == "B"]
    assert chorus_cols and all(any(s0 <= c < s1 for s0, s1 in b_sections) for c in chorus_cols)
    plan = build_plan(tl, low=57, high=76, rhythm=r)
    top, bottom = 76 - 36 + 1, 57 - 36 + 1  # pitch tokens
    lean = {True: [], False: []}
    for ph in r.phrases:
        for n in ph.notes:
            lean[ph.chorus].append(plan.pitch_bias[n.col, top] - plan.pitch_bias[n.col, bottom])
    assert np.mean(lean[True]) > np.mean(lean[False])


def test_repeated_lines_repeat_their_rhythm() -> None:
    _tl, r = rhythm_of(song(100, bars=32), "Oh we will sing again\nUnder the morning sky")
    repeats = [ph for ph in r.phrases if ph.source is not None]
    assert repeats
    for ph in repeats:
        src = r.phrases[ph.source]
        assert [(n.col - ph.downbeat, n.length) for n in ph.notes] == [(n.col - src.downbeat, n.length)
                                                                       for n in src.notes]


def test_a_line_sung_again_over_the_same_chords_copies_its_melody() -> None:
    tl, r = rhythm_of(song(100, bars=32), "Oh we will sing again\nUnder the morning sky")
    plan = build_plan(tl, low=57, high=76, rhythm=r, randomness=0.0)
    copied = [ph for ph in r.phrases if ph.source is not None and ph.notes[0].col in plan.copy_from]
    assert copied, "the hook comes back"
    for ph in copied:
        src = r.phrases[ph.source]
        assert [plan.copy_from[n.col] for n in ph.notes] == [n.col for n in src.notes]
        assert all(tl.chord_at(n.col) == tl.chord_at(m.col) for n, m in zip(ph.notes, src.notes, strict=True))


def test_a_vocalise_gets_a_phrased_rhythm_too() -> None:
    _tl, r = rhythm_of(song(120, bars=16), None)
    assert len(r.phrases) >= 4
    assert all(ph.line is None and ph.syllables[0].text is None for ph in r.phrases)


# -- the melody written on the rhythm ----------------------------------------------------


@pytest.fixture(scope="module")
def small_model() -> LoadedModel:
    torch.manual_seed(0)
    m = GETDiffModel(ModelConfig(width=32, layers=1, heads=2, ffn=64, token_dim=16))
    m.eval()
    return LoadedModel(m, "untrained-test", None, "default", 128, {})


def test_pitches_are_written_on_the_given_rhythm_and_melody_json_carries_the_syllables(small_model) -> None:
    analysis = song(100, bars=16)
    lyrics = parse_lyrics(LYRICS)
    comp = melody.compose(analysis, seed=2, lyrics=lyrics, model=small_model, steps=4, vocal_range=(57, 76))
    wanted = [(n.col, n.length) for ph in comp.rhythm.phrases for n in ph.notes]
    assert [(c, d) for c, d, _ in comp.song.notes] == wanted, "the sampler keeps the rhythm note for note"
    record = melody_record(analysis, comp)
    notes = record["notes"]
    assert notes and all({"start", "end", "pitch", "word", "syllable", "stress", "phrase", "melisma"} <= set(n)
                         for n in notes)
    sung = [n["syllable"] for n in notes if not n["melisma"]]
    flat = [s.text for s in lyrics.syllables]
    assert sung[:len(flat)] == flat, "every syllable once, in order"
    by_text = {s.text: s.stress for s in lyrics.syllables}
    assert all(n["stress"] == by_text[n["syllable"]] for n in notes)
    for prev, n in itertools.pairwise(notes):
        if n["melisma"]:
            assert (n["word"], n["syllable"], n["phrase"]) == (prev["word"], prev["syllable"], prev["phrase"])
    assert {n["phrase"] for n in notes} == set(range(len(record["phrases"])))
    mem = next(n for n in notes if n["syllable"] == "mem")
    assert mem["word"] == "remember" and mem["stress"] == 1
    assert comp.song.lyrics[:3] == ["I", "re", "mem"]
    assert record["lyrics_repeats"] == pytest.approx(comp.rhythm.repeats, abs=0.01) and record["lyrics_repeats"] > 0


def test_a_vocalise_has_notes_without_words(small_model) -> None:
    analysis = song(120, bars=12)
    comp = melody.compose(analysis, seed=1, model=small_model, steps=4)
    notes = melody_record(analysis, comp)["notes"]
    assert len(notes) > 10
    assert all(n["word"] is None and n["syllable"] is None and n["phrase"] is not None for n in notes)
    assert comp.song.lyrics is None


def test_regenerating_a_span_keeps_the_rest_and_its_syllables(small_model) -> None:
    analysis = song(100, bars=16)
    lyrics = parse_lyrics(LYRICS)
    first = melody.compose(analysis, seed=2, lyrics=lyrics, model=small_model, steps=4)
    before = melody_record(analysis, first)["notes"]
    previous = [(n["start"], n["end"], n["pitch"], n) for n in before]
    span = (first.timeline.column_times[64], first.timeline.column_times[128])
    again = melody.compose(analysis, seed=9, lyrics=lyrics, model=small_model, steps=4, previous=previous,
                           regenerate=span)
    after = melody_record(analysis, again)["notes"]
    lo, hi = melody._whole_phrases(again.timeline, again.plan, span, previous)
    outside = [(n["start"], n["pitch"], n["syllable"]) for n in before if n["end"] <= lo or n["start"] >= hi]
    kept = [(n["start"], n["pitch"], n["syllable"]) for n in after if n["end"] <= lo or n["start"] >= hi]
    assert outside and kept == outside
    sung = [n["syllable"] for n in after if not n["melisma"]]
    assert sung[:len(lyrics.syllables)] == [s.text for s in lyrics.syllables], "no line lost or doubled"
