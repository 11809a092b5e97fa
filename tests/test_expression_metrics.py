"""expression_figures on synthetic sung tones whose vibrato, leaps and loudness are known."""

from __future__ import annotations

import numpy as np
import pytest

from tmik_make_vocal_mix.expression_metrics import KEYS, NoteVibrato, default_phrases, expression_figures, summarise
from tmik_make_vocal_mix.score import SungNote

SR = 24000


def hz(pitch: float) -> float:
    return 440.0 * 2.0 ** ((pitch - 69.0) / 12.0)


def voice(cents: np.ndarray, base_pitch: float, gain_db: np.ndarray | None = None) -> np.ndarray:
    """A harmonic tone (8 partials, falling 1/k) whose F0 is ``cents`` (per sample) above ``base_pitch``."""
    f0 = hz(base_pitch) * 2.0 ** (cents / 1200.0)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 9))
    if gain_db is not None:
        x = x * 10.0 ** (gain_db / 20.0)
    return (0.2 * x).astype(np.float32)


def sung(notes: list[SungNote], vibrato: list[tuple[float, float, float]] | None = None,
         shapes: dict[int, str] | None = None, seconds: float | None = None) -> np.ndarray:
    """Notes sung legato from the first note's pitch: 40 ms glides, optional per-note vibrato
    (rate Hz, peak-to-peak cents, onset s; full depth from the onset) and per-note leap shape
    ("overshoot": 60 cents past the target, decaying in ~0.1 s; "preparation": 40 cents away first)."""
    total = seconds or notes[-1].end + 0.3
    t = np.arange(int(total * SR)) / SR
    base = notes[0].pitch
    target = np.full(len(t), np.nan)
    for n in notes:
        target[(t >= n.start) & (t < n.end)] = 100.0 * (n.pitch - base)
    ok = np.isfinite(target)
    cents = np.interp(t, t[ok], target[ok])
    glide = int(0.04 * SR)
    cents = np.convolve(np.pad(cents, glide, mode="edge"), np.ones(glide) / glide, mode="same")[glide:-glide]
    for k, n in enumerate(notes):
        inside = (t >= n.start) & (t < n.end)
        if vibrato and vibrato[k][1] > 0:
            rate, extent, onset = vibrato[k]
            on = inside & (t >= n.start + onset)
            cents[on] += extent / 2 * np.sin(2 * np.pi * rate * (t[on] - n.start - onset))
        if shapes and k in shapes and k > 0:
            sign = np.sign(n.pitch - notes[k - 1].pitch)
            if shapes[k] == "overshoot":
                after = inside & (t >= n.start)
                s = t[after] - n.start
                cents[after] += sign * 60.0 * np.sin(np.pi * np.clip(s / 0.16, 0, 1)) * (s < 0.16)
            elif shapes[k] == "preparation":
                prev = notes[k - 1]
                before = (t >= prev.end - 0.15) & (t < prev.end)
                s = t[before] - (prev.end - 0.15)
                cents[before] -= sign * 40.0 * np.sin(np.pi * s / 0.15)
    x = voice(cents, base)
    x[~np.any([(t >= n.start - 0.02) & (t < n.end + 0.02) for n in notes], axis=0)] = 0.0
    return x


def test_vibrato_six_hz_sixty_cents_is_found_at_its_rate_and_extent():
    notes = [SungNote(0.2, 1.7, 57)]
    fig = expression_figures(sung(notes, vibrato=[(6.0, 60.0, 0.0)]), SR, notes, details=True)
    assert fig["long_notes"] == 1
    assert fig["vibrato_share"] == 1.0
    assert fig["vibrato_rate_hz"] == pytest.approx(6.0, abs=0.15)
    assert fig["vibrato_extent_cents"] == pytest.approx(60.0, abs=10.0)


def test_flat_tone_has_no_vibrato():
    notes = [SungNote(0.2, 1.7, 60), SungNote(1.8, 2.8, 62)]
    fig = expression_figures(sung(notes), SR, notes)
    assert fig["long_notes"] == 2
    assert fig["vibrato_share"] == 0.0
    assert fig["vibrato_rate_hz"] is None and fig["vibrato_rate_cv"] is None


def test_shallow_or_slow_wobble_is_not_vibrato():
    notes = [SungNote(0.2, 1.7, 60), SungNote(1.8, 3.3, 60)]
    fig = expression_figures(sung(notes, vibrato=[(6.0, 8.0, 0.0), (1.5, 60.0, 0.0)]), SR, notes)
    assert fig["vibrato_share"] == 0.0


def test_different_rates_across_notes_give_a_rate_cv_equal_rates_do_not():
    notes = [SungNote(0.2, 1.4, 57), SungNote(1.5, 2.7, 59), SungNote(2.8, 4.0, 57)]
    varied = expression_figures(sung(notes, vibrato=[(5.0, 50.0, 0.0), (6.0, 50.0, 0.0), (7.0, 50.0, 0.0)]),
                                SR, notes)
    steady = expression_figures(sung(notes, vibrato=[(6.0, 50.0, 0.0)] * 3), SR, notes)
    assert varied["vibrato_share"] == steady["vibrato_share"] == 1.0
    assert varied["vibrato_rate_cv"] == pytest.approx(np.std([5, 6, 7]) / 6, abs=0.03)
    assert steady["vibrato_rate_cv"] < 0.03
    two = expression_figures(sung(notes[:2], vibrato=[(5.0, 50.0, 0.0), (7.0, 50.0, 0.0)]), SR, notes[:2])
    assert two["vibrato_rate_cv"] > 0.1


def test_late_onsets_are_measured_and_varied_onsets_give_an_onset_cv():
    notes = [SungNote(0.2, 1.6, 57), SungNote(1.7, 3.1, 59), SungNote(3.2, 4.6, 57)]
    fig = expression_figures(sung(notes, vibrato=[(6.0, 50.0, 0.2), (6.0, 50.0, 0.45), (6.0, 50.0, 0.7)]),
                             SR, notes, details=True)
    onsets = [v.onset_s for v in fig["notes"]]
    assert onsets == sorted(onsets)
    assert onsets[0] == pytest.approx(0.2, abs=0.12) and onsets[2] == pytest.approx(0.7, abs=0.12)
    assert fig["vibrato_onset_cv"] > 0.25
    same = expression_figures(sung(notes, vibrato=[(6.0, 50.0, 0.4)] * 3), SR, notes)
    assert same["vibrato_onset_cv"] < 0.1


@pytest.mark.parametrize("shape", ["overshoot", "preparation"])
def test_a_shaped_leap_is_counted_a_plain_glide_is_not(shape):
    notes = [SungNote(0.2, 0.7, 57), SungNote(0.7, 1.3, 62), SungNote(1.3, 1.8, 57), SungNote(1.8, 2.4, 52)]
    plain = expression_figures(sung(notes), SR, notes, details=True)
    shaped = expression_figures(sung(notes, shapes={1: shape, 3: shape}), SR, notes, details=True)
    assert plain["leaps"] == shaped["leaps"] == 3  # up 5, down 5, down 5
    assert plain["overshoot_share"] == 0.0
    assert [lp.shaped for lp in shaped["leap_details"]] == [True, False, True]


def test_vibrato_from_the_start_of_each_note_is_not_taken_for_overshoot():
    notes = [SungNote(0.2, 0.8, 57), SungNote(0.8, 1.4, 62), SungNote(1.4, 2.0, 57), SungNote(2.0, 2.6, 52)]
    early = expression_figures(sung(notes, vibrato=[(5.5, 56.0, 0.1)] * 4), SR, notes, details=True)
    assert early["leaps"] == 3
    assert early["overshoot_share"] == 0.0
    shaped = expression_figures(sung(notes, vibrato=[(5.5, 56.0, 0.1)] * 4, shapes={1: "overshoot"}), SR, notes)
    assert shaped["overshoot_share"] > 0.0


def test_a_phrase_that_swells_has_a_wider_loudness_range_than_a_flat_one():
    notes = [SungNote(0.2 + 0.5 * k, 0.7 + 0.5 * k, 57 + (k % 3)) for k in range(6)]
    flat = sung(notes)
    t = np.arange(len(flat)) / SR
    swell = flat * 10.0 ** (np.interp(t, [0.2, 3.2], [-12.0, 0.0]) / 20.0)
    a = expression_figures(flat, SR, notes)["phrase_loudness_range_db"]
    b = expression_figures(swell.astype(np.float32), SR, notes)["phrase_loudness_range_db"]
    assert a < 2.0
    assert b > a + 6.0


def test_silence_and_no_notes_give_none_figures():
    notes = [SungNote(0.2, 1.4, 57)]
    fig = expression_figures(np.zeros(SR * 2, dtype=np.float32), SR, notes)
    assert set(KEYS) <= set(fig)
    assert fig["long_notes"] == 0 and fig["leaps"] == 0
    assert all(fig[k] is None for k in KEYS if k not in ("long_notes", "leaps"))
    assert expression_figures(np.zeros(0, dtype=np.float32), SR, [])["vibrato_share"] is None


def test_default_phrases_split_at_rests_of_three_tenths_of_a_second():
    notes = [SungNote(0.0, 0.5, 60), SungNote(0.6, 1.0, 62), SungNote(1.3, 1.8, 64), SungNote(1.9, 2.0, 65)]
    assert default_phrases(notes) == [[0, 1], [2, 3]]


def test_summarise_pools_notes_across_takes():
    def take(rate):
        return [NoteVibrato(i, True, rate, 0.3, 40.0, 0.9) for i in range(3)] + [NoteVibrato(9, False, None, None, None, 0.1)]

    assert summarise(take(5.0), [], [])["vibrato_rate_cv"] == 0.0
    pooled = summarise(take(5.0) + take(7.0), [], [4.0, 6.0, 9.0])
    assert pooled["long_notes"] == 8 and pooled["vibrato_share"] == 0.75
    assert pooled["vibrato_rate_hz"] == 6.0 and pooled["vibrato_rate_cv"] == pytest.approx(1 / 6, abs=1e-3)
    assert pooled["phrase_loudness_range_db"] == 6.0 and pooled["overshoot_share"] is None


def test_odd_input_is_measured_or_reported_not_a_crash():
    notes = [SungNote(0.2, 1.7, 57), SungNote(1.7, 1.7, 62), SungNote(5.0, 6.0, 60)]  # an empty note, one past the end
    x = sung(notes[:1], vibrato=[(6.0, 60.0, 0.0)])
    fig = expression_figures(np.stack([x, x], axis=1), SR, notes)
    assert fig["long_notes"] == 1 and fig["vibrato_rate_hz"] == pytest.approx(6.0, abs=0.15)
