"""Behaviour of the music analyser on synthetic tracks with known beats, meter, key and chords."""

from __future__ import annotations

import itertools
import json

import mir_eval
import numpy as np
import pytest
from synth_music import song

from tmik_bgm_conditional_melody_generation.analysis import Analysis, Cancelled, analyze
from tmik_common.audio import Audio


def run(track, sensitivity: float = 0.5) -> Analysis:
    return analyze(Audio(track.audio, track.sr, track.sr, 1, "synthetic"), sensitivity=sensitivity)


def beat_f(ref: np.ndarray, est: list[float]) -> float:
    return mir_eval.beat.f_measure(mir_eval.beat.trim_beats(np.asarray(ref)), mir_eval.beat.trim_beats(np.asarray(est)))


def chord_majmin(ref, est) -> float:
    ref_iv = np.array([[s, e] for s, e, _ in ref])
    est_iv = np.array([[s, e] for s, e, _ in est])
    est_iv, est_lab = mir_eval.util.adjust_intervals(
        est_iv, [c[2] for c in est], ref_iv.min(), ref_iv.max(), mir_eval.chord.NO_CHORD, mir_eval.chord.NO_CHORD
    )
    iv, r, e = mir_eval.util.merge_labeled_intervals(ref_iv, [c[2] for c in ref], est_iv, est_lab)
    return mir_eval.chord.weighted_accuracy(mir_eval.chord.majmin(r, e), mir_eval.util.intervals_to_durations(iv))


@pytest.fixture(scope="module")
def pop_44():
    return song(["C:maj", "A:min", "F:maj", "G:maj"], bpm=112, beats_per_bar=4, bars=16)


def test_four_four_pop_track(pop_44):
    result = run(pop_44)
    assert abs(result.tempo - 112) < 3
    assert result.time_signature == "4/4"
    assert beat_f(pop_44.beats, result.beats) > 0.95
    assert beat_f(pop_44.downbeats, result.downbeats) > 0.9
    assert result.key == "C major"
    assert chord_majmin(pop_44.chords, result.chords) > 0.85


def test_waltz_is_three_four():
    track = song(["D:maj", "G:maj", "A:7", "D:maj"], bpm=138, beats_per_bar=3, bars=16)
    result = run(track)
    assert result.time_signature == "3/4"
    assert beat_f(track.downbeats, result.downbeats) > 0.9
    assert result.key == "D major"


def test_six_eight_beat_is_the_dotted_quarter():
    # Two dotted-quarter beats per bar at 64 BPM, each split in three eighths.
    track = song(["A:min", "D:min", "E:maj", "A:min"], bpm=64, beats_per_bar=2, subdivision=3, bars=16)
    result = run(track)
    assert result.time_signature == "6/8"
    assert abs(result.tempo - 64) < 3
    assert beat_f(track.beats, result.beats) > 0.9
    assert result.key == "A minor"


def test_tempo_drift_is_followed():
    # An accelerando from 96 to 126 BPM: no single fixed-tempo grid fits it.
    track = song(["C:maj", "F:maj", "G:maj", "C:maj"], bpm=96, end_bpm=126, bars=16)
    result = run(track, sensitivity=0.7)
    assert beat_f(track.beats, result.beats) > 0.95
    ibi = np.diff(result.beats)
    assert 60 / ibi[:8].mean() < 105 and 60 / ibi[-8:].mean() > 118


def test_sensitivity_trades_steadiness_for_following():
    """Low sensitivity holds a steadier grid; high sensitivity follows a tempo swing."""
    track = song(["C:maj", "G:maj"], bpm=90, end_bpm=130, bars=12, drums=False)
    steady = run(track, sensitivity=0.0)
    following = run(track, sensitivity=1.0)
    # The strict tracker's tempo range is narrower, so it cannot reach the final tempo.
    assert np.ptp(60 / np.diff(steady.beats)) < np.ptp(60 / np.diff(following.beats))
    assert beat_f(track.beats, following.beats) > beat_f(track.beats, steady.beats)


def test_repeated_sections_share_a_letter():
    # Verse (organ, C-Am) and chorus (piano, F-G) alternate: A B A B.
    prog = ["C:maj", "A:min"] * 4 + ["F:maj", "G:maj"] * 4
    timbres = ["organ"] * 8 + ["piano"] * 8
    track = song(prog, bpm=120, bars=32, timbres=timbres, drums=True)
    result = run(track)
    labels = [lab for _, _, lab in result.sections]
    assert labels == ["A", "B", "A", "B"]
    starts = [s for s, _, _ in result.sections[1:]]
    assert np.allclose(starts, track.downbeats[[8, 16, 24]], atol=0.1)


def test_result_follows_the_contract(pop_44, tmp_path):
    result = run(pop_44)
    path = tmp_path / "analysis.json"
    result.write_json(path)
    data = json.loads(path.read_text())
    assert set(data) == {"duration", "tempo", "time_signature", "beats", "downbeats", "key", "chords", "sections",
                         "tempo_candidates"}
    assert data["beats"] == sorted(data["beats"]) and set(data["downbeats"]) <= set(data["beats"])
    # Chords and sections tile the whole track without gaps.
    for spans in (data["chords"], data["sections"]):
        assert spans[0][0] == 0.0 and abs(spans[-1][1] - data["duration"]) < 1e-3
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    for _, _, label in data["chords"]:
        mir_eval.chord.encode(label)  # raises on a label that is not valid Harte syntax
    mir_eval.key.validate_key(data["key"])
    assert Analysis.from_dict(data).to_dict() == data


def test_progress_reports_stages_and_can_cancel(pop_44):
    stages = []
    run_audio = Audio(pop_44.audio, pop_44.sr, pop_44.sr, 1, "synthetic")
    analyze(run_audio, progress=lambda stage, frac: stages.append((stage, frac)))
    assert [s for s, _ in stages][-1] == "done"
    assert [f for _, f in stages] == sorted(f for _, f in stages)

    def stop_at_meter(stage, frac):
        if stage == "meter":
            raise Cancelled()

    with pytest.raises(Cancelled):
        analyze(run_audio, progress=stop_at_meter)


def test_rejects_out_of_range_sensitivity(pop_44):
    with pytest.raises(ValueError, match="sensitivity"):
        run(pop_44, sensitivity=1.5)


@pytest.mark.parametrize("kind", ["drone", "noise"])
def test_music_without_a_pulse_still_gets_a_complete_analysis(kind):
    sr = 22050
    t = np.arange(sr * 12) / sr
    if kind == "drone":
        y = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 329.6 * t)
    else:
        y = 0.1 * np.random.default_rng(0).standard_normal(len(t))
    result = analyze(Audio(y.astype(np.float32), sr, sr, 1, "synthetic"))
    assert len(result.beats) >= 2 and result.tempo > 0
    assert result.chords[-1][1] == pytest.approx(12.0) and result.sections[-1][1] == pytest.approx(12.0)


def test_cancel_lands_while_a_long_file_is_still_loading(tmp_path):
    """Loading reports progress block by block, so a cancel does not wait for the whole decode."""
    import soundfile as sf

    from tmik_bgm_conditional_melody_generation.analysis import analyze_file

    path = tmp_path / "long.wav"
    sr = 22050
    rng = np.random.default_rng(1)
    sf.write(path, (0.1 * rng.standard_normal(sr * 70)).astype(np.float32), sr)
    seen = []

    def cancel_mid_load(stage, fraction):
        seen.append((stage, fraction))
        if stage == "load" and 0.0 < fraction < 0.05:
            raise Cancelled()

    with pytest.raises(Cancelled):
        analyze_file(path, progress=cancel_mid_load)
    assert all(stage == "load" for stage, _ in seen)


def test_six_eight_at_a_walking_tempo_keeps_the_dotted_quarter():
    # 6/8 at 74 dotted quarters per minute: the eighth-note pulse runs at 222 per minute.
    track = song(["G:maj", "C:maj", "D:7", "G:maj"], bpm=74, beats_per_bar=2, subdivision=3, bars=20)
    result = run(track)
    assert abs(result.tempo - 74) < 3
    assert result.time_signature == "6/8"


@pytest.mark.parametrize("group", [2, 3])
def test_a_fast_pulse_groups_by_its_accent_pattern(group):
    from tmik_bgm_conditional_melody_generation.analysis.beats import _grouping

    fps, lag = 86.13, 23.0  # a 225-per-minute pulse
    act = np.zeros(int(40 * fps))
    for i, frame in enumerate(np.arange(20, len(act) - 5, lag).astype(int)):
        act[frame] = 1.0 if i % group == 0 else 0.55
    assert _grouping(act, fps, lag) == group


def test_a_drum_intro_has_no_chord():
    from synth_music import SR, hat, kick

    y = np.zeros(SR * 17, np.float32)
    for i in range(32):
        start = int((0.5 + i * 0.5) * SR)
        if i % 2 == 0:
            y[start : start + len(kick())] += kick()
        h = 3 * hat(seed=i)
        y[start : start + len(h)] += h
    t = np.arange(SR * 8) / SR
    chord = 0.1 * sum(np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0))
    y[int(8.5 * SR) : int(8.5 * SR) + len(t)] += chord.astype(np.float32)
    result = analyze(Audio(y, SR, SR, 1, "synthetic"))
    labels = {label for start, end, label in result.chords if start < 8.0}
    assert labels == {"N"}
    assert any(label == "C:maj" and start < 9.0 and end > 16.0 for start, end, label in result.chords)
