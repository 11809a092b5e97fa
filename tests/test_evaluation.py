"""Fast behaviour tests of the evaluation tools: development-set truth, rendering, metrics."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from tmik_bgm_conditional_melody_generation.evaluation import devset, render
from tmik_bgm_conditional_melody_generation.evaluation.bench_analysis import stage_times
from tmik_bgm_conditional_melody_generation.evaluation.devset import (
    LEAD_IN,
    PIECES,
    Bar,
    PieceSpec,
    TempoMap,
    build_piece,
    harte_label,
    metrical_grid,
)
from tmik_bgm_conditional_melody_generation.evaluation.eval_analysis import (
    chord_scores,
    tempo_ok,
)


def synthetic(meter: str, bpm: float, drift: str = "none", seconds: float = 8.0) -> PieceSpec:
    return PieceSpec("t", "synthetic", "generated", "C major", meter, bpm, drift=drift, drums=True,
                     progression=("I", "IV", "V7", "I"), programs=(0, 33, 48), seconds=seconds)


def test_six_eight_truth_beats_every_dotted_quarter_downbeats_every_two_beats():
    bpm = 70.0
    _, truth = build_piece(synthetic("6/8", bpm))
    beats, downbeats = np.array(truth["beats"]), truth["downbeats"]
    assert truth["meter"] == "6/8"
    # The beat is the dotted quarter, so the tempo is in dotted quarters per minute.
    np.testing.assert_allclose(np.diff(beats), 60.0 / bpm, atol=2e-4)
    assert truth["tempo"] == pytest.approx(bpm, abs=0.05)
    assert beats[0] == pytest.approx(LEAD_IN)
    assert downbeats == list(beats[::2])


def test_pickup_is_right_aligned_and_has_no_downbeat():
    # 6/8 tune: an eighth-note pickup, two full bars, a bar cut short before the repeat,
    # then the next pass's pickup completing it.
    bars = [Bar(0.0, 0.5, 3.0, "6/8", 2.5, 0), Bar(0.5, 3.0, 3.0, "6/8"), Bar(3.5, 3.0, 3.0, "6/8"),
            Bar(6.5, 2.5, 3.0, "6/8"), Bar(9.0, 0.5, 3.0, "6/8", 2.5, 0), Bar(9.5, 3.0, 3.0, "6/8")]
    beats, downbeats = metrical_grid(bars, 1.5)
    assert downbeats == [0.5, 3.5, 6.5, 9.5]
    assert beats == [0.5, 2.0, 3.5, 5.0, 6.5, 8.0, 9.5, 11.0]
    # A quarter pickup in 4/4 is the bar's fourth beat.
    beats, downbeats = metrical_grid([Bar(0.0, 1.0, 4.0, "4/4", 3.0), Bar(1.0, 4.0, 4.0, "4/4")], 1.0)
    assert beats == [0.0, 1.0, 2.0, 3.0, 4.0] and downbeats == [1.0]


def test_tempo_drift_beats_follow_the_tempo_map():
    bpm = 100.0
    spec = synthetic("4/4", bpm, drift="accel", seconds=20.0)
    mat = devset.build_material(spec)
    _, truth = devset.realise(spec, mat)
    tmap = TempoMap.build(mat.q_start, mat.q_end, 1.0, bpm, "accel")
    beats_q, _ = metrical_grid(mat.bars, 1.0)
    np.testing.assert_allclose(truth["beats"], tmap.seconds(beats_q), atol=1e-4)
    intervals = np.diff(truth["beats"])
    assert np.all(np.diff(intervals) < 1e-9)  # accelerating: every beat comes a bit sooner
    # Each interval is the inverse of the mapped tempo in the middle of that beat.
    mids = np.asarray(beats_q[:-1]) + 0.5
    np.testing.assert_allclose(intervals, 60.0 / tmap.bpm_at(mids), rtol=2e-3)
    assert intervals[0] / intervals[-1] == pytest.approx(1.12, abs=0.01)


def test_tempo_map_is_exact_where_the_tempo_is_constant():
    tmap = TempoMap.build(0.0, 16.0, 1.5, 80.0)
    np.testing.assert_allclose(tmap.seconds([0.0, 1.5, 15.0]), LEAD_IN + np.array([0, 0.75, 7.5]))


def test_harte_labels_from_pitch_classes():
    assert harte_label(7, (7, 11, 2, 5)) == "G:7"
    assert harte_label(9, (9, 0, 4)) == "A:min"
    assert harte_label(10, (10, 2, 5), flats=True) == "Bb:maj"
    # An Italian sixth (Eb G C#) sounds as an Eb dominant seventh without its fifth.
    assert harte_label(1, (3, 7, 1)) == "D#:7"


def test_committed_truth_is_consistent():
    ids = [s.id for s in PIECES]
    real = [s for s in PIECES if s.kind != "synthetic"]
    assert len(real) >= 25
    assert {s.meter for s in PIECES} >= {"2/4", "3/4", "4/4", "6/8"}
    for piece_id in ids:
        truth = devset.load_truth(piece_id)
        beats = np.array(truth["beats"])
        assert np.all(np.diff(beats) > 0), piece_id
        assert set(truth["downbeats"]) <= set(truth["beats"]), piece_id
        chords = truth["chords"]
        assert chords[0][0] == 0.0 and chords[-1][1] == pytest.approx(truth["duration"]), piece_id
        assert all(a[1] == pytest.approx(b[0]) for a, b in itertools.pairwise(chords)), piece_id
        assert truth["key"].split()[1] in ("major", "minor"), piece_id


def test_rebuilding_a_folk_tune_reproduces_its_committed_truth():
    spec = devset.spec_by_id("folk_irish_washerwoman")
    _, truth = build_piece(spec)
    committed = devset.load_truth(spec.id)
    assert json.loads(json.dumps(truth)) == committed
    np.testing.assert_allclose(np.diff(truth["beats"]), 60.0 / spec.bpm, atol=2e-4)


@pytest.mark.skipif(render.render_available() is not None, reason=str(render.render_available()))
def test_render_writes_a_wav_of_the_requested_length(tmp_path):
    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    piano.notes.append(pretty_midi.Note(velocity=100, pitch=60, start=1.0, end=1.5))
    pm.instruments.append(piano)
    out = render.render_midi(pm, tmp_path / "x.wav", duration=3.0)
    data, rate = sf.read(str(out))
    assert rate == 44100 and data.shape == (3 * 44100, 2)
    onset = np.argmax(np.abs(data).max(axis=1) > 0.01) / rate
    assert onset == pytest.approx(1.0, abs=0.01)  # FluidSynth starts notes on time


def test_render_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("SOUNDFONT", str(tmp_path / "none.sf2"))
    with pytest.raises(render.RenderError, match="soundfont"):
        render.find_soundfont()


def test_tempo_accuracy_allows_octaves_and_thirds_only_in_six_eight():
    assert tempo_ok(121.0, 60.0, "4/4") == 1.0
    assert tempo_ok(180.0, 60.0, "4/4") == 0.0
    assert tempo_ok(180.0, 60.0, "6/8") == 1.0
    assert tempo_ok(66.0, 60.0, "6/8") == 0.0


def test_chord_scores_of_a_perfect_and_a_wrong_estimate():
    ref = [[0.0, 1.0, "N"], [1.0, 3.0, "C:maj"], [3.0, 4.0, "A:min7"]]
    assert chord_scores(ref, ref, 4.0)["chord_majmin"] == pytest.approx(1.0)
    wrong = [[0.0, 4.0, "F#:maj"]]
    assert chord_scores(ref, wrong, 4.0)["chord_root"] == pytest.approx(0.0)


def test_stage_times_split_on_stage_changes():
    events = [("load", 0.0), ("features", 1.0), ("features", 1.5), ("beats", 3.0), ("done", 3.5)]
    assert stage_times(events, 0.0, 3.5) == [("load", 1.0), ("features", 2.0), ("beats", 0.5)]
