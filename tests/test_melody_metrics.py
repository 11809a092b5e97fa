"""Behaviour tests of the melody metrics, the two baseline melody writers and the melody evaluation's helpers."""

from __future__ import annotations

import numpy as np
import pretty_midi
import pytest

from tmik_bgm_conditional_melody_generation.analysis import Analysis
from tmik_bgm_conditional_melody_generation.constraints import build_plan, singable_columns
from tmik_bgm_conditional_melody_generation.evaluation.baselines import random_in_key, rule_based
from tmik_bgm_conditional_melody_generation.evaluation.eval_melody import (
    evaluate_human_songs,
    fitting_lines,
    human_melody,
    lyric_table,
    song_notes_sec,
    summarise,
)
from tmik_bgm_conditional_melody_generation.evaluation.human_songs import Performance, load_song
from tmik_bgm_conditional_melody_generation.evaluation.melody_metrics import BEAT as BEAT_W
from tmik_bgm_conditional_melody_generation.evaluation.melody_metrics import (
    DOWNBEAT,
    EIGHTH,
    MID_BAR,
    OFF_GRID,
    SIXTEENTH,
    breath_threshold,
    eighth_grid,
    label_pcs,
    lyric_metrics,
    melody_metrics,
    metrical_weight,
    section_similarity,
)
from tmik_bgm_conditional_melody_generation.getscore import chord_tones, scale_pcs
from tmik_bgm_conditional_melody_generation.rhythm import plan_rhythm
from tmik_bgm_conditional_melody_generation.timeline import timeline_from_analysis
from tmik_common.lyrics import Lyrics, LyricsError, parse_lyrics

BEAT = 0.6  # 100 BPM
BARS = 8
BEATS = [round(i * BEAT, 6) for i in range(BARS * 4)]
DOWNBEATS = BEATS[::4]
PROGRESSION = ("C:maj", "A:min", "F:maj", "G:maj")  # I-vi-IV-V in C major, one chord per bar
CHORDS = [(b * 4 * BEAT, (b + 1) * 4 * BEAT, PROGRESSION[b % 4]) for b in range(BARS)]
SECTIONS = [(0.0, 4 * 4 * BEAT, "A"), (4 * 4 * BEAT, BARS * 4 * BEAT, "A")]
LOW, HIGH = 57, 76


def analysis(**overrides) -> Analysis:
    values = {"duration": BARS * 4 * BEAT + 1.0, "tempo": 100.0, "time_signature": "4/4", "beats": list(BEATS),
              "downbeats": list(DOWNBEATS), "key": "C major", "chords": list(CHORDS), "sections": list(SECTIONS)}
    values.update(overrides)
    return Analysis(**values)


def metrics(notes, **kw):
    kw.setdefault("beats", BEATS)
    kw.setdefault("downbeats", DOWNBEATS)
    return melody_metrics(notes, kw.pop("chords", CHORDS), kw.pop("key", "C major"), **kw)


def quarter_notes(pitches, start_beat=0):
    return [((start_beat + i) * BEAT, (start_beat + i + 1) * BEAT, p) for i, p in enumerate(pitches)]


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


def test_all_chord_tones_score_one_and_wrong_notes_lower_the_ratio():
    # Bar 1 C major, bar 2 A minor: arpeggios of each chord.
    notes = quarter_notes([60, 64, 67, 72, 69, 72, 76, 69])
    m = metrics(notes)
    assert m["chord_tone_ratio"] == pytest.approx(1.0)
    assert m["strong_beat_chord_tone"] == pytest.approx(1.0)
    assert m["in_key_ratio"] == pytest.approx(1.0)
    # Replace one quarter of bar 1 by D (not in C major): 1/8 of the note time is off.
    wrong = list(notes)
    wrong[1] = (wrong[1][0], wrong[1][1], 62)
    m = metrics(wrong)
    assert m["chord_tone_ratio"] == pytest.approx(7 / 8)
    assert m["strong_beat_chord_tone"] == pytest.approx(7 / 8)


def test_chord_tone_ratio_is_duration_weighted_and_skips_no_chord():
    # A long C (chord tone) and a short D (not), then a note where the chord is N.
    chords = [(0.0, 2.4, "C:maj"), (2.4, 4.8, "N")]
    notes = [(0.0, 1.8, 60), (1.8, 2.4, 62), (2.4, 4.8, 61)]
    m = metrics(notes, chords=chords)
    assert m["chord_tone_ratio"] == pytest.approx(1.8 / 2.4)
    # On the beats: C (beat 0) fits, D (beat 3) does not, C# (beat 4) sounds over N and is not counted.
    assert m["strong_beat_chord_tone"] == pytest.approx(1 / 2)


def test_harte_labels_with_extensions_and_inversions():
    assert label_pcs("G:7") == frozenset({7, 11, 2, 5})
    assert label_pcs("C:maj/5") == frozenset({0, 4, 7})
    assert label_pcs("A:hdim7") == frozenset({9, 0, 3, 7})
    assert label_pcs("N") is None and label_pcs("X") is None


def test_chromatic_run_is_partly_out_of_key():
    notes = quarter_notes(range(60, 72))
    m = metrics(notes)
    assert m["in_key_ratio"] == pytest.approx(7 / 12)
    assert m["in_key_ratio"] < 1.0
    # A minor: natural minor plus raised 6th and 7th, so F# and G# are in key too.
    m = metrics(notes, key="A minor")
    assert m["in_key_ratio"] == pytest.approx(9 / 12)


def test_steps_leaps_repeats_and_ranges():
    # Intervals: +2 +2 0 +3 +5 -1 +12
    notes = quarter_notes([60, 62, 64, 64, 67, 72, 71, 83])
    m = metrics(notes, vocal_range=(LOW, HIGH))
    moves = [2, 2, 3, 5, 1, 12]
    assert m["repeated_ratio"] == pytest.approx(1 / 7)
    assert m["step_ratio"] == pytest.approx(3 / len(moves))
    assert m["leap_ratio"] == pytest.approx(3 / len(moves))
    assert m["step_ratio"] + m["leap_ratio"] == pytest.approx(1.0)
    assert m["large_leap_ratio"] == pytest.approx(1 / len(moves))
    assert m["mean_abs_interval"] == pytest.approx(sum(moves) / 7)
    assert m["range"] == 83 - 60
    assert m["in_vocal_range"] == pytest.approx(7 / 8)  # all but 83 inside 57..76
    assert m["n_notes"] == 8
    assert m["notes_per_second"] == pytest.approx(8 / (len(BEATS) * BEAT))


def test_empty_melody_gives_no_figures():
    m = metrics([])
    assert m["n_notes"] == 0
    assert all(v is None for k, v in m.items() if k != "n_notes")


def test_onsets_on_the_eighth_grid():
    on_grid = [(b * BEAT / 2, b * BEAT / 2 + 0.25, 60) for b in range(16)]  # beats and half beats
    assert metrics(on_grid)["onset_on_8th_grid"] == pytest.approx(1.0)
    sixteenths = [(b * BEAT + BEAT / 4, b * BEAT + BEAT / 2, 60) for b in range(8)]  # the 2nd 16th of each beat
    assert metrics(sixteenths)["onset_on_8th_grid"] == pytest.approx(0.0)
    # In 6/8 a beat (dotted quarter) holds three 8ths: thirds of the beat are on the grid there, not in 4/4.
    thirds = [(b * BEAT + k * BEAT / 3, b * BEAT + (k + 1) * BEAT / 3, 60) for b in range(4) for k in (1, 2)]
    assert metrics(thirds, meter="6/8")["onset_on_8th_grid"] == pytest.approx(1.0)
    assert metrics(thirds, meter="4/4")["onset_on_8th_grid"] == pytest.approx(0.0)
    grid = eighth_grid([0.0, 1.0, 2.0], "6/8")
    np.testing.assert_allclose(grid, np.arange(-3, 10) / 3)


def test_section_similarity_exact_repeat_and_different_melody():
    rng = np.random.default_rng(1)
    phrase = [(float(x) * BEAT / 2, int(p)) for x, p in zip(sorted(rng.choice(32, 20, replace=False)),
                                                             rng.integers(60, 72, 20), strict=True)]
    half = 16 * BEAT
    first = [(t, t + 0.2, p) for t, p in phrase]
    repeat = [(t + half, t + half + 0.2, p) for t, p in phrase]
    assert section_similarity(first + repeat, SECTIONS, BEATS) == pytest.approx(1.0)
    assert metrics(first + repeat, sections=SECTIONS)["section_self_similarity"] == pytest.approx(1.0)
    other = [(t + half, t + half + 0.2, int(p)) for t, p in zip(np.arange(20) * BEAT / 2, rng.integers(60, 72, 20),
                                                                 strict=True)]
    assert section_similarity(first + other, SECTIONS, BEATS) < 0.5
    # No label repeats: no figure.
    assert section_similarity(first + repeat, [(0.0, half, "A"), (half, 2 * half, "B")], BEATS) is None
    # A repeat one bar late is found when shifts are allowed.
    late = [(t + half + 4 * BEAT, t + half + 4 * BEAT + 0.2, p) for t, p in phrase if t < half - 4 * BEAT]
    first_part = [n for n in first if n[0] < half - 4 * BEAT]
    strict = section_similarity(first_part + late, SECTIONS, BEATS)
    shifted = section_similarity(first_part + late, SECTIONS, BEATS, max_shift_beats=8)
    assert shifted == pytest.approx(1.0) and strict < 0.5


# --------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grid():
    timeline = timeline_from_analysis(analysis())
    plan = build_plan(timeline, low=LOW, high=HIGH, rng=np.random.default_rng(0))
    return timeline, plan


def _check_song(song, timeline, plan):
    assert song.n_cols == timeline.n_cols and song.meter == timeline.meter
    cols = [c for c, _, _ in song.notes]
    assert cols == sorted(set(cols))
    for i, (c, d, p) in enumerate(song.notes):
        assert LOW <= p <= HIGH
        assert plan.onset_allowed[c]
        assert d >= 1 and plan.sounding_allowed[c:c + d].all()
        if i + 1 < len(song.notes):
            assert c + d <= song.notes[i + 1][0]


def test_random_in_key_is_in_key_in_range_on_eighths_and_about_two_notes_per_second(grid):
    timeline, plan = grid
    song = random_in_key(timeline, plan, np.random.default_rng(3))
    _check_song(song, timeline, plan)
    scale = set(scale_pcs(timeline.tonic, timeline.mode))
    assert all(p % 12 in scale for _, _, p in song.notes)
    assert all(c % 2 == 0 for c, _, _ in song.notes)
    seconds = timeline.column_times[-1] - timeline.column_times[0]
    assert 1.2 <= len(song.notes) / seconds <= 2.8
    assert len({p for _, _, p in song.notes}) > 5
    again = random_in_key(timeline, plan, np.random.default_rng(3))
    assert again.notes == song.notes
    assert random_in_key(timeline, plan, np.random.default_rng(4)).notes != song.notes


def test_rule_based_puts_a_chord_tone_on_every_beat(grid):
    timeline, plan = grid
    song = rule_based(timeline, plan, np.random.default_rng(0))
    _check_song(song, timeline, plan)
    by_col = {c: p for c, _, p in song.notes}
    beat_cols = [c for c in range(0, timeline.n_cols, timeline.beat_cols) if plan.onset_allowed[c]]
    assert beat_cols
    for c in beat_cols:
        assert c in by_col, f"no note on the beat at column {c}"
        assert by_col[c] % 12 in chord_tones(*timeline.chord_at(c))
    # Passing notes: on the beat's second 8th, in key, a scale step from the beat's note.
    scale = set(scale_pcs(timeline.tonic, timeline.mode))
    passing = [(c, p) for c, p in by_col.items() if c % timeline.beat_cols]
    assert passing
    for c, p in passing:
        assert c % timeline.beat_cols == 2 and p % 12 in scale
        assert 1 <= abs(p - by_col[c - 2]) <= 2
    assert rule_based(timeline, plan, np.random.default_rng(0)).notes == song.notes
    # Scored against the true chords it fits the harmony far better than random notes do.
    ours = metrics(song_notes_sec(song, timeline))
    rand = metrics(song_notes_sec(random_in_key(timeline, plan, np.random.default_rng(0)), timeline))
    assert ours["chord_tone_ratio"] > 0.8 > rand["chord_tone_ratio"]
    assert ours["strong_beat_chord_tone"] == pytest.approx(1.0)
    assert ours["onset_on_8th_grid"] == pytest.approx(1.0)


def test_baselines_in_compound_meter_use_the_beats_last_eighth():
    beat = 0.9
    beats = [i * beat for i in range(16)]
    a = analysis(time_signature="6/8", beats=beats, downbeats=beats[::2], duration=16 * beat + 1,
                 chords=[(b * 2 * beat, (b + 1) * 2 * beat, PROGRESSION[b % 4]) for b in range(8)], sections=[])
    timeline = timeline_from_analysis(a)
    plan = build_plan(timeline, low=LOW, high=HIGH)
    song = rule_based(timeline, plan, np.random.default_rng(1))
    _check_song(song, timeline, plan)
    assert {c % 6 for c, _, _ in song.notes} <= {0, 4}
    notes = song_notes_sec(song, timeline)
    m = melody_metrics(notes, a.chords, a.key, beats=beats, downbeats=beats[::2], meter="6/8")
    assert m["onset_on_8th_grid"] == pytest.approx(1.0)


# --------------------------------------------------------------------------------------
# Evaluation helpers
# --------------------------------------------------------------------------------------


def test_human_melody_is_the_first_part_made_monophonic(tmp_path):
    pm = pretty_midi.PrettyMIDI()
    lead, comp = pretty_midi.Instrument(0), pretty_midi.Instrument(24)
    lead.notes += [pretty_midi.Note(90, 67, 0.5, 1.2), pretty_midi.Note(90, 72, 1.0, 1.5),
                   pretty_midi.Note(90, 60, 1.0, 1.5), pretty_midi.Note(90, 64, 1.5, 2.0)]
    comp.notes += [pretty_midi.Note(60, 48, 0.5, 2.0)]
    pm.instruments = [lead, comp]
    pm.write(str(tmp_path / "p.mid"))
    notes = human_melody("p", "folk", tmp_path)
    assert [p for _, _, p in notes] == [67, 72, 64]
    assert notes[0][1] == pytest.approx(1.0, abs=1e-3)  # cut where the next note starts
    assert human_melody("p", "score", tmp_path) is None
    assert human_melody("p", "synthetic", tmp_path) is None


def test_summarise_means_over_pieces_that_have_a_system():
    row = {m: None for m in ("n_notes", "chord_tone_ratio")}
    results = [
        {"id": "a", "kind": "folk", "systems": {"human": {**row, "chord_tone_ratio": 0.8}, "ours": None,
                                                  "random_in_key": {**row, "chord_tone_ratio": 0.4},
                                                  "rule_based": {**row, "chord_tone_ratio": 0.9}}},
        {"id": "b", "kind": "score", "systems": {"human": None, "ours": None,
                                                   "random_in_key": {**row, "chord_tone_ratio": 0.2},
                                                   "rule_based": {**row, "chord_tone_ratio": 0.7}}},
    ]
    s = summarise(results)
    assert s["pieces"] == {"human": 1, "ours": 0, "random_in_key": 2, "rule_based": 2}
    assert s["mean"]["human"]["chord_tone_ratio"] == pytest.approx(0.8)
    assert s["mean"]["random_in_key"]["chord_tone_ratio"] == pytest.approx(0.3)
    assert s["mean"]["ours"] is None
    assert s["by_kind"]["folk"]["rule_based"] == pytest.approx(0.9)
    assert s["by_kind"]["score"]["human"] is None


# --------------------------------------------------------------------------------------
# Lyrics set to the music: prosody, phrasing, rhythm (melody.json notes)
# --------------------------------------------------------------------------------------


def sung(beat: float, beats: float, syllable: str | None = "la", *, word: str | None = None, stress: int | None = 0,
         phrase: int = 0, melisma: bool = False, beat_s: float = BEAT) -> dict:
    """A melody.json note from a start and a length in beats (beat 0 is a downbeat; 4 beats a bar)."""
    return {"start": beat * beat_s, "end": (beat + beats) * beat_s, "pitch": 60, "word": word or syllable,
            "syllable": syllable, "stress": stress, "phrase": phrase, "melisma": melisma}


def lyric(notes, **kw):
    kw.setdefault("beats", BEATS)
    kw.setdefault("downbeats", DOWNBEATS)
    return lyric_metrics(notes, **kw)


def test_metrical_weight_ranks_downbeat_mid_bar_beat_eighth_sixteenth():
    at = [0.0, 2.0, 1.0, 3.0, 0.5, 2.5, 0.25, 0.75, 1 / 3]
    got = metrical_weight(np.array(at) * BEAT, BEATS, DOWNBEATS, "4/4")
    assert list(got) == [DOWNBEAT, MID_BAR, BEAT_W, BEAT_W, EIGHTH, EIGHTH, SIXTEENTH, SIXTEENTH, OFF_GRID]
    # 3/4 has no mid-bar beat; a pickup before the first downbeat still knows its place in the bar.
    waltz_downbeats = BEATS[1::3]
    got = metrical_weight(np.array([1.0, 2.0, 3.0, 0.0]) * BEAT, BEATS, waltz_downbeats, "3/4")
    assert list(got) == [DOWNBEAT, BEAT_W, BEAT_W, BEAT_W]
    # 6/8: two dotted-quarter beats a bar, each split into three 8ths and six 16ths.
    got = metrical_weight(np.array([0.0, 1.0, 1 / 3, 2 / 3, 1 / 6]) * BEAT, BEATS, BEATS[::2], "6/8")
    assert list(got) == [DOWNBEAT, BEAT_W, EIGHTH, EIGHTH, SIXTEENTH]


def test_stressed_syllable_on_the_downbeat_between_offbeat_neighbours_scores_one():
    # "in the CI-ty": "the" on the "and" of 4, "Ci" on the downbeat, "ty" on the "and" of 1.
    notes = [sung(3.0, 0.5, "in", stress=0), sung(3.5, 0.5, "the", stress=0),
             sung(4.0, 1.0, "Ci", word="City", stress=1), sung(5.0, 1.0, "ty", word="City", stress=0)]
    m = lyric(notes)
    assert m["stress_on_strong"] == pytest.approx(1.0)
    assert m["stress_on_strong_in_word"] == pytest.approx(1.0)
    assert m["stressed_longer"] == pytest.approx(1.0)
    assert m["n_syllables"] == 4


def test_stressed_syllable_on_a_weaker_position_than_a_neighbour_scores_zero():
    # "Ci" on the "and" of 1, "ty" on beat 2: the unstressed syllable sits stronger.
    notes = [sung(0.5, 0.5, "Ci", word="City", stress=1), sung(1.0, 1.0, "ty", word="City", stress=0)]
    m = lyric(notes)
    assert m["stress_on_strong"] == pytest.approx(0.0)
    assert m["stressed_longer"] == pytest.approx(0.0)  # 0.5 beats against 1 beat
    # Strict: the same weight is not higher (beat 1 and beat 2 are both plain beats).
    level = [sung(1.0, 1.0, "Ci", word="City", stress=1), sung(3.0, 1.0, "ty", word="City", stress=0)]
    assert lyric(level)["stress_on_strong"] == pytest.approx(0.0)


def test_word_scope_ignores_neighbours_in_other_words_and_melisma_lengthens_a_syllable():
    # "LOVE the": a stressed one-syllable word before an unstressed function word.
    notes = [sung(0.0, 0.5, "love", stress=1), sung(0.5, 0.5, "the", stress=0), sung(1.0, 1.0, "night", stress=1)]
    m = lyric(notes)
    assert m["stress_on_strong"] == pytest.approx(1.0)
    assert m["stress_on_strong_in_word"] is None  # no word of two syllables
    # "Ci" sung short, then a melisma note on the same syllable makes it as long as "ty".
    notes = [sung(0.0, 0.5, "Ci", word="City", stress=1), sung(0.5, 0.5, "Ci", word="City", stress=1, melisma=True),
             sung(1.0, 1.0, "ty", word="City", stress=0)]
    m = lyric(notes)
    assert m["n_syllables"] == 2
    assert m["stressed_longer"] == pytest.approx(1.0)
    # Equal note values a few milliseconds apart (a grid that jitters) are not shorter; an 8th against a quarter is.
    jitter = [sung(0.0, 1.0, "Ci", word="City", stress=1), sung(1.0, 1.0, "ty", word="City", stress=0)]
    jitter[0]["end"] -= 0.005
    assert lyric(jitter)["stressed_longer"] == pytest.approx(1.0)
    # Unknown stress (None) takes no part.
    assert lyric([sung(0.0, 1.0, "la", stress=None), sung(1.0, 1.0, "la", stress=None)])["stress_on_strong"] is None


def test_a_line_without_a_rest_after_it_scores_no_breath():
    line0 = [sung(b, 1.0, phrase=0) for b in range(4)]
    line1 = [sung(4 + b, 1.0, phrase=1) for b in range(4)]
    m = lyric(line0 + line1)
    assert m["breaths_per_line"] == pytest.approx(0.0)
    assert m["longest_run_s"] == pytest.approx(8 * BEAT)
    # A beat's rest after the first line is a breath, and splits the run.
    rested = line0[:3] + [sung(4 + b, 1.0, phrase=1) for b in range(4)]
    m = lyric(rested)
    assert m["breaths_per_line"] == pytest.approx(1.0)
    assert m["longest_run_s"] == pytest.approx(4 * BEAT)


def test_a_breath_is_one_beat_or_a_third_of_a_second_whichever_is_shorter():
    slow = [round(i * 1.0, 6) for i in range(16)]  # 60 BPM: 0.3 s is shorter than a beat
    notes = [sung(0, 2.0, phrase=0, beat_s=1.0), sung(2.3, 1.7, phrase=1, beat_s=1.0)]
    assert lyric(notes, beats=slow, downbeats=slow[::4])["breaths_per_line"] == pytest.approx(1.0)
    notes = [sung(0, 2.0, phrase=0, beat_s=1.0), sung(2.2, 1.8, phrase=1, beat_s=1.0)]
    assert lyric(notes, beats=slow, downbeats=slow[::4])["breaths_per_line"] == pytest.approx(0.0)
    assert breath_threshold(1.0, slow) == pytest.approx(0.3)
    fast = [round(i * 0.25, 6) for i in range(32)]  # 240 BPM: a beat (0.25 s) is shorter than 0.3 s
    assert breath_threshold(1.0, fast) == pytest.approx(0.25)


def test_pickup_and_downbeat_starts():
    pickup = [sung(3.5, 0.5, phrase=0), sung(4.0, 2.0, phrase=0)]  # the "and" of 4, into the downbeat
    on_one = [sung(8.0, 1.0, phrase=1), sung(9.0, 1.0, phrase=1)]
    inside = [sung(13.0, 1.0, phrase=2), sung(14.0, 1.0, phrase=2)]  # beats 2-3 of a bar: neither
    m = lyric(pickup + on_one + inside)
    assert m["pickup_ratio"] == pytest.approx(1 / 3)
    assert m["downbeat_start_ratio"] == pytest.approx(1 / 3)


def test_onset_shares_and_an_offbeat_note_held_over_the_beat_is_an_anticipation():
    notes = [sung(0.0, 1.0), sung(1.0, 0.5), sung(1.5, 1.0),  # on the "and" of 2, held over beat 3
             sung(2.5, 0.5),  # on the "and" of 3, ends on beat 4: not held over it
             sung(3.0, 0.25), sung(3.25, 0.75)]  # a 16th
    m = lyric(notes)
    assert m["onsets_on_beat"] == pytest.approx(3 / 6)
    assert m["onsets_on_8th_offbeat"] == pytest.approx(2 / 6)
    assert m["onsets_on_16th"] == pytest.approx(1 / 6)
    assert m["onsets_off_grid"] == pytest.approx(0.0)
    assert m["anticipation_ratio"] == pytest.approx(1 / 6)
    assert m["median_note_beats"] == pytest.approx(0.625)


def test_syllables_per_second_within_lines_and_over_the_whole_span():
    # Two lines of 4 half-beat syllables (1.2 s each at 100 BPM) with 2.4 s between them.
    line0 = [sung(b / 2, 0.5, phrase=0) for b in range(4)]
    line1 = [sung(6 + b / 2, 0.5, phrase=1) for b in range(4)]
    m = lyric(line0 + line1)
    assert m["syllables_per_second_lines"] == pytest.approx(8 / 2.4)
    assert m["syllables_per_second_overall"] == pytest.approx(8 / (8 * BEAT))
    # Melisma notes are not syllables.
    m = lyric([sung(0, 1.0, "oh"), sung(1, 1.0, "oh", melisma=True)])
    assert m["n_syllables"] == 1
    assert m["syllables_per_second_lines"] == pytest.approx(1 / (2 * BEAT))


def test_repeated_words_are_separate_words():
    # "go go": two one-syllable words, each spelled by its own syllable; the second is a neighbour
    # in the line, not inside the first word.
    notes = [sung(0.0, 1.0, "go", stress=1), sung(1.0, 1.0, "go", stress=0)]
    m = lyric(notes)
    assert m["stress_on_strong"] == pytest.approx(1.0)
    assert m["stress_on_strong_in_word"] is None


def test_lyric_metrics_without_notes_or_beats_give_no_figures():
    m = lyric([])
    assert m["n_syllables"] == 0
    assert all(v is None for k, v in m.items() if k != "n_syllables")
    m = lyric([sung(0, 1)], beats=[0.0])
    assert m["stress_on_strong"] is None and m["onsets_on_beat"] is None


# --------------------------------------------------------------------------------------
# Human songs from music21's corpus
# --------------------------------------------------------------------------------------


def test_human_song_lines_words_stress_and_pickup_bar():
    verses = load_song("leadSheet/fosterBrownHair.mxl", 0)
    assert len(verses) == 2
    first = verses[0]
    sylls = [n for n in first.notes if not n["melisma"]]
    assert [n["syllable"] for n in sylls[:5]] == ["I", "dream", "of", "Jean", "nie"]
    assert (sylls[3]["word"], sylls[3]["stress"], sylls[4]["stress"]) == ("Jeannie", 1, 0)
    assert sylls[2]["stress"] == 0  # "of": a function word
    line2 = [n["syllable"] for n in sylls if n["phrase"] == 1]
    assert line2[0] == "Borne" and line2[-1] == "air"
    assert first.meter == "4/4" and first.tempo_source.startswith("no metronome mark")
    # 6/8 with a pickup bar of three 8ths: the first downbeat lies one beat (a dotted quarter) before the first note.
    lift = load_song("johnson_j_r/lift_every_voice.mxl", 0)[0]
    assert lift.meter == "6/8"
    beat = lift.beats[1] - lift.beats[0]
    assert lift.downbeats[0] == pytest.approx(lift.notes[0]["start"] - beat)
    assert metrical_weight([lift.notes[3]["start"]], lift.beats, lift.downbeats, lift.meter)[0] == DOWNBEAT  # "voice"


def test_evaluate_human_songs_means_over_songs_of_verse_means():
    beats = [float(b) for b in BEATS]
    good = [sung(0.0, 1.0, "Ci", word="City", stress=1), sung(1.0, 1.0, "ty", word="City", stress=0)]
    bad = [sung(0.5, 0.5, "Ci", word="City", stress=1), sung(1.0, 1.0, "ty", word="City", stress=0)]
    chords = [(0.0, 100.0, frozenset({0, 4, 7}))]
    perfs = [Performance("a", 1, good, beats, DOWNBEATS, "4/4", 100.0, "test", "C major", chords),
             Performance("a", 2, bad, beats, DOWNBEATS, "4/4", 100.0, "test", "C major", chords),
             Performance("b", 1, good, beats, DOWNBEATS, "4/4", 100.0, "test", "C major", chords)]
    out = evaluate_human_songs(perfs)
    assert out["songs"]["a"]["stress_on_strong"] == pytest.approx(0.5)
    assert out["mean"]["stress_on_strong"] == pytest.approx(0.75)
    assert out["mean"]["chord_tone_ratio"] == pytest.approx(1.0)  # C over a C major chord given as pitch classes
    assert out["info"]["a"]["verses"] == 2


def test_the_evaluation_sings_as_many_first_lines_as_the_track_holds():
    a = analysis()  # 8 bars at 100 BPM: about 19 s
    lyrics = parse_lyrics("\n".join(["Walking home beneath the city lights tonight"] * 12))
    n = fitting_lines(a, lyrics)
    assert 1 <= n < 12
    timeline = timeline_from_analysis(a)
    singable = singable_columns(timeline)
    plan_rhythm(timeline, Lyrics(lines=lyrics.lines[:n]), singable)  # fits
    with pytest.raises(LyricsError):
        plan_rhythm(timeline, Lyrics(lines=lyrics.lines[:n + 1]), singable)
    short = parse_lyrics("Hold on\nCarry me")
    assert fitting_lines(a, short) == 2


def test_function_words_on_weak_positions_and_melismas_on_stressed_or_final_syllables():
    # "the" (unstressed one-syllable word) on the "and" of 4, then on a downbeat.
    notes = [sung(3.5, 0.5, "the", stress=0), sung(4.0, 1.0, "Ci", word="City", stress=1),
             sung(5.0, 1.0, "ty", word="City", stress=0), sung(8.0, 1.0, "the", stress=0),
             sung(9.0, 1.0, "night", stress=1)]
    m = lyric(notes)
    assert m["function_words_weak"] == pytest.approx(1 / 2)  # "ty" belongs to a two-syllable word
    assert m["melisma_stressed_or_final"] is None  # no melisma
    # A melisma on a stressed "Ci" and on the line-final (unstressed) "ty" are fine; one on "ty" mid-line is not.
    city = [sung(0.0, 0.5, "Ci", word="City", stress=1), sung(0.5, 0.5, "Ci", word="City", stress=1, melisma=True),
            sung(1.0, 0.5, "ty", word="City", stress=0), sung(1.5, 0.5, "ty", word="City", stress=0, melisma=True)]
    later = [dict(n, start=n["start"] + 4 * BEAT, end=n["end"] + 4 * BEAT) for n in city]
    unsustained = [later[0], later[2], later[3]]  # the second "Ci" on one note, its "ty" ends the line
    notes = city + [sung(2.0, 0.5, "to", stress=0)] + unsustained
    assert lyric(notes)["melisma_stressed_or_final"] == pytest.approx(2 / 3)


def test_lyrics_table_gives_the_issue_target_and_a_verdict_for_ours():
    ours = {"syllables_per_second_lines": 1.2, "breaths_per_line": 1.0, "onsets_on_beat": 0.8}
    rows = {line.split("  ")[0].strip(): line for line in lyric_table([("ours", ours), ("human", {})], ours=[0])
            .splitlines()}
    assert rows["syllables/s in lines"].rstrip().endswith("below")
    assert rows["breaths per line"].rstrip().endswith("PASS")
    assert rows["onsets on beats"].rstrip().endswith("above")
    assert "1.20" in rows["syllables/s in lines"] and "1.50-5.00" in rows["syllables/s in lines"]
