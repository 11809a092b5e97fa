"""The beat a singer counts: tempo level, downbeats and meter of drum tracks, and the overrides.

The tracks are programmed here with numpy (a drum kit of kick, snare, hi-hat and crash,
a bass and chords), so the true beats, downbeats and meter are known exactly.
"""

from __future__ import annotations

import json

import mir_eval
import numpy as np
import pytest

from tmik_bgm_conditional_melody_generation.analysis import Analysis, analyze
from tmik_common.audio import Audio

SR = 22050


def _noise(seconds: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(int(seconds * SR))


def kick() -> np.ndarray:
    t = np.arange(int(0.18 * SR)) / SR
    return 0.9 * np.sin(2 * np.pi * (45 + 90 * np.exp(-35 * t)) * t) * np.exp(-18 * t)


def snare(seed: int) -> np.ndarray:
    t = np.arange(int(0.16 * SR)) / SR
    body = 0.4 * np.sin(2 * np.pi * 190 * t) * np.exp(-30 * t)
    return body + 0.35 * _noise(0.16, seed) * np.exp(-22 * t)


def hat(seed: int, amp: float = 0.12) -> np.ndarray:
    t = np.arange(int(0.04 * SR)) / SR
    return amp * np.diff(_noise(0.04, seed), prepend=0.0) * np.exp(-90 * t)


def crash(seed: int) -> np.ndarray:
    t = np.arange(int(1.2 * SR)) / SR
    return 0.25 * np.diff(_noise(1.2, seed), prepend=0.0) * np.exp(-3 * t)


def tone(midi: int, seconds: float, amp: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    x = sum(a * np.sin(2 * np.pi * f0 * k * t) for k, a in ((1, 1.0), (2, 0.4), (3, 0.2)))
    return amp * x * np.exp(-2.5 * t) * np.minimum(1.0, t / 0.004)


def _add(buf: np.ndarray, x: np.ndarray, at: float) -> None:
    i = round(at * SR)
    n = min(len(x), len(buf) - i)
    if n > 0:
        buf[i : i + n] += x[:n]


PROGRESSION = [(48, (0, 4, 7)), (43, (0, 4, 7)), (45, (0, 3, 7)), (41, (0, 4, 7))]  # C G Am F


def band(bpm: float, bars: int = 12, swing: float = 0.5, start: float = 0.5,
         comp: bool = False) -> tuple[Audio, np.ndarray, np.ndarray]:
    """A 4/4 rock band at ``bpm``: kick on 1 and 3, snare on 2 and 4, hi-hat eighths (the
    off-beat eighth at ``swing`` of the beat: 0.5 straight, 2/3 shuffled), a crash on the
    first beat of every fourth bar, the bass on the root in eighths, one chord per bar.
    ``comp`` adds a chord on every eighth (swung with the hats).

    Returns the audio, the true beats and the true downbeats (seconds).
    """
    spb = 60.0 / bpm
    beats = start + spb * np.arange(bars * 4)
    buf = np.zeros(int((beats[-1] + 2.0) * SR))
    for i, b in enumerate(beats):
        bar, pos = divmod(i, 4)
        _add(buf, kick() if pos in (0, 2) else snare(i), b)
        if pos == 2:
            _add(buf, 0.6 * kick(), b + 0.5 * spb)
        for j, frac in enumerate((0.0, swing)):
            _add(buf, hat(7 * i + j, 0.12 if j == 0 else 0.08), b + frac * spb)
        if pos == 0 and bar % 4 == 0:
            _add(buf, crash(bar), b)
        root, chord = PROGRESSION[bar % len(PROGRESSION)]
        for frac in (0.0, swing):
            _add(buf, tone(root - 12, 0.45 * spb, 0.35), b + frac * spb)
            if comp:
                for iv in chord:
                    _add(buf, tone(root + 12 + iv, 0.4 * spb, 0.07 if frac else 0.05), b + frac * spb)
        if pos == 0:
            for iv in chord:
                _add(buf, tone(root + 12 + iv, 4 * spb, 0.08), b)
    buf = (0.8 * buf / np.abs(buf).max()).astype(np.float32)
    return Audio(buf, SR, SR, 1, "programmed"), beats, beats[::4]


def punk(bpm: float, bars: int = 12, start: float = 0.5) -> tuple[Audio, np.ndarray, np.ndarray]:
    """Punk: kick on 1 and 3, snare on 2 and 4, and hi-hat, bass and power chords driving
    even eighths (which pull a periodicity count down to half the tempo)."""
    spb = 60.0 / bpm
    beats = start + spb * np.arange(bars * 4)
    buf = np.zeros(int((beats[-1] + 2.0) * SR))
    for i, b in enumerate(beats):
        bar, pos = divmod(i, 4)
        _add(buf, kick() if pos in (0, 2) else snare(i), b)
        root, chord = PROGRESSION[bar % len(PROGRESSION)]
        for frac in (0.0, 0.5):
            _add(buf, hat(7 * i + int(2 * frac)), b + frac * spb)
            _add(buf, tone(root - 12, 0.45 * spb, 0.35), b + frac * spb)
            for iv in chord:
                _add(buf, tone(root + 12 + iv, 0.4 * spb, 0.07), b + frac * spb)
        if pos == 0 and bar % 4 == 0:
            _add(buf, crash(bar), b)
    buf = (0.8 * buf / np.abs(buf).max()).astype(np.float32)
    return Audio(buf, SR, SR, 1, "programmed"), beats, beats[::4]


def groove(bpm: float, kit: dict[str, str], bars: int = 12, start: float = 0.5, push: bool = False,
           swing: float = 0.5, ring_out: bool = False, walking: bool = False, comp: str = "") -> tuple[Audio, np.ndarray, np.ndarray]:
    """A 4/4 groove from 16th-note drum patterns (``kit``: "kick", "snare", "hat", "pedal"
    to a 16-character string, "x" a hit), with a bass root and one chord per bar. ``push``
    brings bass and chord in an 8th early (on the "and" of 4, held over the bar line);
    ``swing`` moves the off-beat 8th (and 16ths around it) to that fraction of the beat;
    ``ring_out`` ends on a long final chord; ``walking`` puts the bass in quarters (a jazz
    walking bass) instead of 8ths; ``comp`` is a 16-slot pattern of short chords.

    Returns the audio, the true beats and the true downbeats (seconds).
    """
    spb = 60.0 / bpm
    beats = start + spb * np.arange(bars * 4)
    buf = np.zeros(int((beats[-1] + 4.0) * SR))
    slot_frac = {0: 0.0, 1: 0.25, 2: swing, 3: swing + 0.5 * (1 - swing)}
    for bar in range(bars):
        t0 = beats[4 * bar]
        for name, pattern in kit.items():
            for k, ch in enumerate(pattern):
                if ch != "x":
                    continue
                at = t0 + spb * (k // 4 + slot_frac[k % 4])
                seed = 16 * bar + k
                hit = {"kick": kick(), "snare": snare(seed), "hat": hat(seed),
                       "pedal": 0.7 * hat(seed + 999)}[name]
                _add(buf, hit, at)
        root, chord = PROGRESSION[bar % len(PROGRESSION)]
        onset = t0 - 0.5 * spb if push and bar > 0 else t0
        for iv in chord:
            _add(buf, tone(root + 12 + iv, 4 * spb, 0.08), onset)
            for k, ch in enumerate(comp):
                if ch == "x":
                    _add(buf, tone(root + 12 + iv, 0.3 * spb, 0.06), t0 + spb * (k // 4 + slot_frac[k % 4]))
        # The bass in 8ths on the chord's root; a pushed chord's root comes on the last 8th.
        nxt = PROGRESSION[(bar + 1) % len(PROGRESSION)][0]
        for e in range(8):
            r = nxt if push and e == 7 and bar < bars - 1 else root
            if (push and e == 0 and bar > 0) or (walking and e % 2):
                continue  # held over the bar line from the pushed 8th, or a walking bass
            _add(buf, tone(r - 12, 0.45 * spb, 0.35), t0 + spb * (e // 2 + (swing if e % 2 else 0.0)))
    if ring_out:
        root, chord = PROGRESSION[0]
        for iv in (0, *chord):
            _add(buf, 3 * tone(root + iv, 3.0, 0.08), beats[-1] + spb)
    buf = (0.8 * buf / np.abs(buf).max()).astype(np.float32)
    return Audio(buf, SR, SR, 1, "programmed"), beats, beats[::4]


def run(audio: Audio, **kw) -> Analysis:
    return analyze(audio, **kw)


def f_measure(ref: np.ndarray, est: list[float]) -> float:
    return float(mir_eval.beat.f_measure(mir_eval.beat.trim_beats(np.asarray(ref)),
                                         mir_eval.beat.trim_beats(np.asarray(est))))


@pytest.fixture(scope="module")
def rock_108():
    audio, beats, downbeats = band(108.0)
    return audio, beats, downbeats, run(audio)


def test_rock_at_108_is_tracked_at_108_not_half_or_double(rock_108):
    _, beats, _, result = rock_108
    assert result.tempo == pytest.approx(108.0, rel=0.04)
    assert f_measure(beats, result.beats) >= 0.9


@pytest.mark.parametrize("bpm", [160.0, 172.0])
def test_punk_is_counted_at_its_backbeat_not_half(bpm):
    audio, beats, downbeats = punk(bpm)
    result = run(audio)
    assert result.tempo == pytest.approx(bpm, rel=0.04)
    assert result.time_signature == "4/4"
    assert f_measure(beats, result.beats) >= 0.9
    assert f_measure(downbeats, result.downbeats) >= 0.8


def test_downbeats_fall_on_the_kick_and_crash_not_the_beat_before(rock_108):
    _, beats, downbeats, result = rock_108
    assert result.time_signature == "4/4"
    assert f_measure(downbeats, result.downbeats) >= 0.9
    # None of the detected downbeats sits on beat 4 (the snare before the bar).
    fourth = beats[3::4]
    early = [d for d in result.downbeats if np.min(np.abs(fourth - d)) < 0.07]
    assert not early


def test_tempo_candidates_rank_the_levels(rock_108):
    result = rock_108[3]
    levels = {c["level"]: c for c in result.tempo_candidates}
    assert result.tempo_candidates[0]["level"] == "chosen"
    assert levels["chosen"]["bpm"] == pytest.approx(result.tempo, rel=0.04)
    assert levels["half"]["bpm"] == pytest.approx(result.tempo / 2, rel=0.04)
    assert levels["double"]["bpm"] == pytest.approx(result.tempo * 2, rel=0.04)
    scores = [c["score"] for c in result.tempo_candidates]
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-6)
    assert all(0.0 <= s <= 1.0 for s in scores)


@pytest.mark.parametrize("comp", [False, True])
def test_a_shuffled_four_four_stays_four_four(comp):
    audio, beats, downbeats = band(112.0, swing=2 / 3, comp=comp)
    result = run(audio)
    assert result.time_signature == "4/4"
    assert result.tempo == pytest.approx(112.0, rel=0.04)
    assert f_measure(beats, result.beats) >= 0.9
    assert f_measure(downbeats, result.downbeats) >= 0.8


def test_tempo_half_halves_the_chosen_level(rock_108):
    audio, _, _, auto = rock_108
    half = run(audio, tempo="half")
    double = run(audio, tempo="double")
    assert half.tempo == pytest.approx(auto.tempo / 2, rel=0.04)
    assert double.tempo == pytest.approx(auto.tempo * 2, rel=0.04)
    # The candidates stay the automatic ranking.
    assert half.tempo_candidates == auto.tempo_candidates


def test_a_bpm_override_tracks_at_that_bpm(rock_108):
    audio, beats, _, _ = rock_108
    result = run(audio, tempo=216)
    assert result.tempo == pytest.approx(216.0, rel=0.03)
    # Every true beat is still a tracked beat (the eighths include the beats).
    assert f_measure(beats, result.beats[::2]) >= 0.9 or f_measure(beats, result.beats[1::2]) >= 0.9


def test_time_signature_override_fixes_the_meter(rock_108):
    audio = rock_108[0]
    result = run(audio, time_signature="3/4")
    assert result.time_signature == "3/4"
    gaps = np.diff([int(np.argmin(np.abs(np.asarray(result.beats) - d))) for d in result.downbeats])
    assert np.median(gaps) == 3
    six_eight = run(audio, time_signature="12/8")
    assert six_eight.time_signature == "12/8"


@pytest.mark.parametrize("kw", [{"tempo": "fast"}, {"tempo": 10}, {"tempo": 400.0}, {"tempo": True},
                                {"time_signature": "5/4"}, {"time_signature": 4}])
def test_bad_overrides_are_refused_with_what_is_allowed(rock_108, kw):
    audio = rock_108[0]
    with pytest.raises(ValueError) as err:
        run(audio, **kw)
    name = next(iter(kw))
    assert name in str(err.value) and repr(kw[name]) in str(err.value)


def test_tempo_candidates_round_trip_through_json(rock_108, tmp_path):
    result = rock_108[3]
    path = tmp_path / "analysis.json"
    result.write_json(path)
    data = json.loads(path.read_text())
    assert [set(c) for c in data["tempo_candidates"]] == [{"bpm", "score", "level"}] * len(result.tempo_candidates)
    back = Analysis.from_dict(data)
    assert [c["level"] for c in back.tempo_candidates] == [c["level"] for c in result.tempo_candidates]
    assert [c["bpm"] for c in back.tempo_candidates] == pytest.approx([c["bpm"] for c in result.tempo_candidates],
                                                                       abs=0.01)
    # A file written before tempo candidates existed still reads.
    del data["tempo_candidates"]
    assert Analysis.from_dict(data).tempo_candidates == []


def test_half_time_feel_is_counted_at_the_hats_eighths():
    # Kick on 1, snare only on 3, hats in 8ths at 140: the drums' backbeat says 70, the
    # hats (and a singer) count 140.
    audio, beats, downbeats = groove(140.0, {"kick": "x.....x...x.....", "snare": "........x.......",
                                             "hat": "x.x.x.x.x.x.x.x."}, bars=16)
    result = run(audio)
    assert result.tempo == pytest.approx(140.0, rel=0.04)
    assert f_measure(beats, result.beats) >= 0.9
    assert result.time_signature == "4/4"
    assert f_measure(downbeats, result.downbeats) >= 0.8


def test_a_slow_backbeat_with_eighth_hats_is_not_doubled():
    audio, beats, _ = groove(66.0, {"kick": "x.......x.......", "snare": "....x.......x...",
                                    "hat": "x.x.x.x.x.x.x.x."}, bars=8)
    result = run(audio)
    assert result.tempo == pytest.approx(66.0, rel=0.04)
    assert f_measure(beats, result.beats) >= 0.9


def test_pushed_chords_over_four_on_the_floor_keep_the_bar_on_the_kick():
    # Chords and bass arrive on the "and" of 4; the kick plays every beat; the track ends
    # on a ringing chord (one beat of the cues then ringing over silence).
    audio, beats, downbeats = groove(124.0, {"kick": "x...x...x...x...", "snare": "....x.......x...",
                                             "hat": "..x...x...x...x."}, push=True, ring_out=True)
    result = run(audio)
    assert result.time_signature == "4/4"
    assert f_measure(downbeats, result.downbeats) >= 0.8
    fourth = beats[3::4]
    assert not [d for d in result.downbeats if np.min(np.abs(fourth - d)) < 0.07]


def test_a_swung_ride_without_backbeat_is_four_four():
    # Jazz ride "1, 2-and-a, 3, 4-and-a" swung to 2/3, hi-hat foot on 2 and 4, a soft kick.
    audio, beats, _ = groove(132.0, {"kick": "x.......x.......", "hat": "x...x.x.x...x.x.",
                                     "pedal": "....x.......x..."}, swing=2 / 3, walking=True,
                             comp="x.x.x.x.x.x.x.x.")
    result = run(audio)
    assert result.time_signature == "4/4"
    assert result.tempo == pytest.approx(132.0, rel=0.04)
    assert f_measure(beats, result.beats) >= 0.9


def test_drum_music_is_never_counted_below_sixty_bpm(rock_108):
    # Beats a periodicity count might propose at half of a 108 BPM rock (54 BPM): the level
    # choice moves them back up to 108.
    from tmik_bgm_conditional_melody_generation.analysis.beats import choose_level
    from tmik_bgm_conditional_melody_generation.analysis.features import compute_features

    audio, beats, _, _ = rock_108
    feats = compute_features(audio.samples, SR)
    factor, candidates = choose_level(feats, beats[::2])
    assert factor == 2.0
    assert candidates[0].level == "chosen" and candidates[0].bpm == pytest.approx(108.0, rel=0.04)
