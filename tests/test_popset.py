"""The contemporary development set: its truth agrees with the programmed MIDI, the split is fixed."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import soundfile as sf

from tmik_bgm_conditional_melody_generation.evaluation import eval_analysis, popset, render
from tmik_bgm_conditional_melody_generation.evaluation.devset import LEAD_IN, truth_digest
from tmik_bgm_conditional_melody_generation.evaluation.eval_analysis import meter_ok, resolve_sets, tempo_strict
from tmik_bgm_conditional_melody_generation.evaluation.popset import (
    CRASH,
    KICK,
    PIECES,
    SIDESTICK,
    SNARE,
    build_piece,
    held_out,
    spec_by_id,
    split_ids,
    swing_position,
)

BEATS_PER_BAR = {"4/4": 4, "3/4": 3, "6/8": 2, "12/8": 4}
JITTER = popset.JITTER_MAX + 1e-3


@pytest.fixture(scope="module")
def built() -> dict[str, tuple]:
    return {s.id: build_piece(s) for s in PIECES}


def drum_hits(pm, pitch: int) -> np.ndarray:
    drums = next(i for i in pm.instruments if i.is_drum)
    return np.array(sorted(n.start for n in drums.notes if n.pitch == pitch))


def fill_bars(truth: dict) -> set[int]:
    """Indices of the bars that end in a fill: those just before a new section."""
    downbeats = np.array(truth["downbeats"])
    return {int(np.argmin(np.abs(downbeats - start))) - 1 for start, _, _ in truth["sections"][1:]}


def near(times: np.ndarray, t: float) -> bool:
    return bool(len(times)) and float(np.min(np.abs(times - t))) <= JITTER


def test_rebuilt_truth_is_the_committed_truth(built):
    for spec in PIECES:
        path = popset.TRUTH_DIR / f"{spec.id}.json"
        assert path.is_file(), f"{spec.id}: truth not committed"
        committed = json.loads(path.read_text())
        assert truth_digest(committed) == truth_digest(built[spec.id][1]), spec.id


def test_beats_downbeats_and_tempo_follow_the_programme(built):
    for spec in PIECES:
        _, truth = built[spec.id]
        beats = np.array(truth["beats"])
        assert truth["meter"] == spec.meter
        assert np.all(np.diff(beats) > 0)
        # A steady tempo: every beat one tapped beat apart, the tempo that beat's rate.
        np.testing.assert_allclose(np.diff(beats), 60.0 / spec.bpm, atol=2e-4)
        assert truth["tempo"] == pytest.approx(spec.bpm, abs=0.05)
        assert beats[0] == pytest.approx(LEAD_IN)
        # The pickup has beats but no downbeat; then a downbeat every bar.
        n = BEATS_PER_BAR[spec.meter]
        assert truth["downbeats"] == pytest.approx(list(beats[spec.pickup_beats::n]))
        assert 25.0 <= truth["duration"] <= 41.0
        # Chords tile the whole file; drum-only intro bars have no chord.
        chords = truth["chords"]
        assert chords[0][0] == 0.0 and chords[-1][1] == truth["duration"]
        assert all(a[1] == pytest.approx(b[0]) for a, b in itertools.pairwise(chords))
        for start, end, name in truth["sections"]:
            if name == "intro":
                assert all(lab == "N" for s, e, lab in chords if s < end - 1e-3 and e > start + 1e-3)


def test_rock_groove_kick_on_one_and_three_snare_on_two_and_four_crash_on_sections(built):
    pm, truth = built["rock_drive_128"]
    beats, kicks, snares = np.array(truth["beats"]), drum_hits(pm, KICK), drum_hits(pm, SNARE)
    chorus = next(s for s, _, name in truth["sections"] if name == "chorus")
    fills = fill_bars(truth)
    for i, t in enumerate(beats):
        if i // 4 in fills:
            continue
        if i % 4 in (0, 2):
            assert near(kicks, t) and not near(snares, t), i
        else:
            assert near(snares, t) and not near(kicks, t), i
    assert near(drum_hits(pm, CRASH), chorus)


def test_half_time_snare_on_three_and_one_drop_kick_on_three_only(built):
    pm, truth = built["halftime_140"]
    snares = drum_hits(pm, SNARE)
    beat = 60.0 / 140
    fills = fill_bars(truth)
    for bar, d in enumerate(truth["downbeats"]):
        if bar in fills:
            continue
        assert near(snares, d + 2 * beat) and not near(snares, d + beat) and not near(snares, d + 3 * beat)
    pm, truth = built["reggae_one_drop_76"]
    beat = 60.0 / 76
    kicks, rims = drum_hits(pm, KICK), drum_hits(pm, SIDESTICK)
    fills = fill_bars(truth)
    for bar, d in enumerate(truth["downbeats"]):
        if bar in fills or near(drum_hits(pm, CRASH), d):
            continue
        assert near(kicks, d + 2 * beat) and near(rims, d + 2 * beat) and not near(kicks, d)


def test_swing_moves_off_beats_never_beats():
    assert swing_position(3.0, 1.0, 2 / 3, "8") == pytest.approx(3.0)
    assert swing_position(2.5, 1.0, 2 / 3, "8") == pytest.approx(2 + 2 / 3)
    assert swing_position(1.25, 1.0, 0.6, "16") == pytest.approx(1.3)
    assert swing_position(1.5, 1.0, 0.6, "16") == pytest.approx(1.5)
    # Compound meters divide in three already: not swung.
    assert swing_position(0.5, 1.5, 2 / 3, "8") == pytest.approx(0.5)


def test_shuffle_hats_are_swung_and_twelve_eight_sounds_every_eighth(built):
    pm, truth = built["shuffle_blues_112"]
    beat = 60.0 / 112
    hats = drum_hits(pm, popset.CLOSED_HAT)
    b = truth["downbeats"][1]
    assert near(hats, b + 2 / 3 * beat) and not near(hats, b + 0.5 * beat)
    pm, truth = built["blues128_66"]
    comp = next(i for i in pm.instruments if i.program == 0 and not i.is_drum)
    onsets = np.array(sorted({round(n.start, 3) for n in comp.notes}))
    b0, b1 = truth["beats"][4], truth["beats"][5]
    for k in range(3):
        assert near(onsets, b0 + k * (b1 - b0) / 3)


def test_humanisation_is_deterministic_and_small(built):
    pm, truth = build_piece(spec_by_id("funk_96"))
    again, _ = build_piece(spec_by_id("funk_96"))
    notes = [(n.start, n.pitch, n.velocity) for i in pm.instruments for n in i.notes]
    assert notes == [(n.start, n.pitch, n.velocity) for i in again.instruments for n in i.notes]
    kicks = drum_hits(pm, KICK)
    offsets = [float(np.min(np.abs(kicks - d))) for d in truth["downbeats"]]
    assert max(offsets) <= JITTER and max(offsets) > 0.0


def test_held_out_split_is_fixed_disjoint_and_spread():
    dev, held = split_ids("dev"), split_ids("held-out")
    assert not set(dev) & set(held)
    assert sorted(dev + held) == sorted(s.id for s in PIECES) == sorted(split_ids("all"))
    assert len(held) == len(PIECES) // 3
    assert held == [s.id for i, s in enumerate(PIECES) if i % 3 == 2]
    for part in (dev, held):
        assert {spec_by_id(i).meter for i in part} == {"4/4", "3/4", "6/8", "12/8"}
    assert len({spec_by_id(i).style for i in held}) >= 8
    for spec in PIECES:
        assert json.loads((popset.TRUTH_DIR / f"{spec.id}.json").read_text())["held_out"] == held_out(spec)


def test_strict_tempo_and_meter_metrics():
    assert tempo_strict(141.0, 140.0) == 1.0
    assert tempo_strict(70.0, 140.0) == 0.0 and tempo_strict(0.0, 140.0) == 0.0
    assert meter_ok("4/4", "4/4") == 1.0 and meter_ok("6/8", "4/4") == 0.0
    assert resolve_sets(["pop"]) == ["pop-dev", "pop-held-out"]
    assert resolve_sets(["all"]) == ["devset", "pop-dev", "pop-held-out"]


@pytest.mark.skipif(render.render_available() is not None, reason=str(render.render_available()))
def test_one_piece_builds_renders_and_is_then_cached(tmp_path):
    spec = spec_by_id("rock_punk_180")
    truth_dir = tmp_path / "truth"
    first = popset.ensure_piece(spec, truth_dir=truth_dir, cache=tmp_path / "cache")
    assert first.rebuilt and (truth_dir / f"{spec.id}.json").is_file()
    data, rate = sf.read(str(first.wav))
    assert len(data) == round(first.truth["duration"] * rate)
    assert float(np.abs(data).max()) > 0.05
    again = popset.ensure_piece(spec, truth_dir=truth_dir, cache=tmp_path / "cache")
    assert not again.rebuilt and again.truth == first.truth


def test_anticipated_chord_changes_sound_an_eighth_early_and_the_truth_follows(built):
    spec = spec_by_id("rock_drive_128")
    arr = popset.arrange(spec)
    assert arr.pushes, "a rock piece anticipates some changes"
    pm, truth = built[spec.id]
    eighth = 30.0 / spec.bpm
    comp = next(i for i in pm.instruments if i.program == spec.programs[1] and not i.is_drum)
    onsets = np.array(sorted({n.start for n in comp.notes}))
    downbeats = np.array(truth["downbeats"])
    starts = np.array([c[0] for c in truth["chords"]])
    for p in arr.pushes:
        bar_line = downbeats[round(p / 4.0)]
        # The band hits the new chord on the last 8th and holds it over the bar line.
        assert near(onsets, bar_line - eighth) and not near(onsets, bar_line)
        assert float(np.min(np.abs(starts - (bar_line - eighth)))) < 1e-3
    # The downbeats stay on the bar lines: a bar of four beats each.
    assert truth["downbeats"] == pytest.approx(truth["beats"][::4])


def test_edm_build_drops_the_kick_for_a_snare_roll(built):
    pm, truth = built["edm_club_128"]
    kicks, snares = drum_hits(pm, KICK), drum_hits(pm, SNARE)
    chorus = next(s for s, _, name in truth["sections"] if name == "chorus")
    bar = 4 * 60.0 / 128
    in_build = (kicks > chorus - 2 * bar + JITTER) & (kicks < chorus - JITTER)
    assert not in_build.any()
    roll = snares[(snares > chorus - bar - JITTER) & (snares < chorus - JITTER)]
    assert len(roll) == 16  # 16ths in the last bar
    assert near(kicks, chorus)


@pytest.mark.skipif(render.render_available() is not None, reason=str(render.render_available()))
def test_eval_reports_only_the_chosen_set_with_the_strict_figures(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POPSET_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "eval.json"
    assert eval_analysis.main(["--set", "pop-dev", "--quick", "--only", "rock_punk_180", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "=== pop-dev" in printed and "=== devset" not in printed and "=== pop-held-out" not in printed
    report = json.loads(out.read_text())["sets"]
    assert list(report) == ["pop-dev"]
    (piece,) = report["pop-dev"]["pieces"]
    assert piece["id"] == "rock_punk_180" and piece["baseline"] is None
    assert set(piece["ours"]) >= {"tempo_strict", "meter", "beat_f", "downbeat_f"}
    assert report["pop-dev"]["targets"]["tempo_strict"] == 0.95


def test_key_truth_is_among_what_the_notes_suggest(built):
    ranks = [built[s.id][1]["key_evidence"]["music21_rank"] for s in PIECES]
    assert all(r is not None and r <= 3 for r in ranks)
    assert sum(r == 1 for r in ranks) >= 0.8 * len(ranks)
