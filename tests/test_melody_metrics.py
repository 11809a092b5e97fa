"""Behaviour tests of the melody metrics, the two baseline melody writers and the melody evaluation's helpers."""

from __future__ import annotations

import numpy as np
import pretty_midi
import pytest

from tmik_bgm_conditional_melody_generation.analysis import Analysis
from tmik_bgm_conditional_melody_generation.constraints import build_plan
from tmik_bgm_conditional_melody_generation.evaluation.baselines import random_in_key, rule_based
from tmik_bgm_conditional_melody_generation.evaluation.eval_melody import human_melody, song_notes_sec, summarise
from tmik_bgm_conditional_melody_generation.evaluation.melody_metrics import (
    eighth_grid,
    label_pcs,
    melody_metrics,
    section_similarity,
)
from tmik_bgm_conditional_melody_generation.getscore import chord_tones, scale_pcs
from tmik_bgm_conditional_melody_generation.timeline import timeline_from_analysis

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
