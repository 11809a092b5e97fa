"""The sung pitch expression: each note its own vibrato, transitions shaped like a singer's, styles that differ."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tmik_make_vocal_mix.engines.pitch import phrase_curve, plan_phrase, smoothstep
from tmik_make_vocal_mix.expression import EXPRESSIONS, MAX_EXTENT_CENTS, formula_expression, get_expression
from tmik_make_vocal_mix.score import SungNote
from tmik_make_vocal_mix.styles import STYLES

SUNG = [name for name in EXPRESSIONS if name != "formula"]
PHRASE = [SungNote(0.0, 0.3, 60), SungNote(0.3, 1.6, 64, stress=1), SungNote(1.6, 1.9, 62),
          SungNote(1.9, 3.2, 69), SungNote(3.2, 3.5, 67), SungNote(3.5, 5.0, 64)]


def cents(f: np.ndarray, pitch: float) -> np.ndarray:
    return 1200.0 * np.log2(f / (440.0 * 2.0 ** ((pitch - 69) / 12.0)))


def rng(seed: int, k: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, k])


def test_two_long_notes_of_a_phrase_vibrate_differently() -> None:
    notes = [SungNote(0.0, 1.4, 62), SungNote(1.4, 2.8, 65), SungNote(2.8, 4.4, 64)]
    pairs = 0
    for seed in range(10):
        vib = [g for g in plan_phrase(notes, "ballad", 90.0, rng(seed)) if g.vibrato]
        for a, b in itertools.combinations(vib, 2):
            pairs += 1
            assert a.rate_hz != b.rate_hz and a.onset_s != b.onset_s and a.extent_cents != b.extent_cents
    assert pairs >= 5
    # and the rates really spread: across many long notes a CV of the order singers show
    rates = [g.rate_hz for seed in range(30) for g in plan_phrase(notes, "pop_bright", 100.0, rng(seed)) if g.vibrato]
    assert np.std(rates) / np.mean(rates) > 0.08


@pytest.mark.parametrize("name", SUNG)
def test_short_notes_never_vibrate(name: str) -> None:
    notes = [SungNote(0.3 * k, 0.3 * (k + 1), 60 + (k % 3)) for k in range(8)]
    repeated = [SungNote(0.3 * k, 0.3 * (k + 1), 62) for k in range(8)]  # no intervals: nothing but vibrato could move
    t = np.arange(0.0, 2.4, 0.005)
    for seed in range(8):
        assert not any(g.vibrato for g in plan_phrase(notes, name, 100.0, rng(seed)))
        f = phrase_curve(t, repeated, expression=name, rng=rng(seed))
        inner = (t > 0.4) & (t < 2.0)  # past a scoop into the first note, before a fall-off from the last
        assert np.ptp(cents(f[inner], 62)) < 20  # drift and fine fluctuation only


def test_a_long_note_at_a_phrase_end_vibrates_more_often_and_wider_than_inside() -> None:
    notes = [SungNote(0.0, 1.2, 62), SungNote(1.2, 2.4, 64), SungNote(2.4, 3.6, 62)]
    inner, last = [], []
    for seed in range(60):
        plan = plan_phrase(notes, "pop_bright", 100.0, rng(seed))
        inner.append(plan[1])
        last.append(plan[2])
    assert np.mean([g.vibrato for g in last]) > np.mean([g.vibrato for g in inner]) + 0.1
    assert np.mean([g.extent_cents for g in last if g.vibrato]) > np.mean([g.extent_cents for g in inner if g.vibrato])
    # pop singers do not vibrate every long note
    assert 0.2 < np.mean([g.vibrato for g in inner]) < 0.9


def test_a_stressed_syllable_vibrates_more_often_and_wider() -> None:
    def middle(stress):
        notes = [SungNote(0.0, 0.5, 60), SungNote(0.5, 1.5, 62, stress=stress), SungNote(1.5, 2.0, 60)]
        return [plan_phrase(notes, "pop_bright", 100.0, rng(seed))[1] for seed in range(80)]

    plain, stressed = middle(0), middle(1)
    assert np.mean([g.vibrato for g in stressed]) > np.mean([g.vibrato for g in plain])
    both = [(a, b) for a, b in zip(plain, stressed, strict=True) if a.vibrato and b.vibrato]
    assert both and all(b.extent_cents > a.extent_cents for a, b in both)
    assert middle(None)[0].vibrato == plain[0].vibrato  # unknown stress is no stress


def test_a_leap_gets_overshoot_or_preparation_and_the_curve_shows_it() -> None:
    notes = [SungNote(0.0, 1.0, 60), SungNote(1.0, 2.0, 67)]
    t = np.arange(0.0, 2.0, 0.002)
    shaped = 0
    for seed in range(20):
        plan = plan_phrase(notes, "pop_bright", 100.0, rng(seed))
        g = plan[1]
        if g.overshoot_cents or g.preparation_cents:
            shaped += 1
        c_new = cents(phrase_curve(t, notes, expression="pop_bright", rng=rng(seed)), 67)
        c_old = c_new + 700
        if g.overshoot_cents:
            assert g.overshoot_cents > 0  # past the new note, upwards like the leap
            assert c_new[(t > 1.0) & (t < 1.25)].max() > 0.6 * g.overshoot_cents
        if g.preparation_cents:
            assert g.preparation_cents < 0  # a dip away from the coming note
            assert c_old[(t > 0.7) & (t < 1.0)].min() < 0.6 * g.preparation_cents
    assert shaped >= 14
    # a step is shaped less often than a leap
    step = [SungNote(0.0, 1.0, 60), SungNote(1.0, 2.0, 62)]
    stepped = sum(bool(g.overshoot_cents or g.preparation_cents)
                  for seed in range(20) for g in plan_phrase(step, "pop_bright", 100.0, rng(seed))[1:])
    assert stepped < shaped


def test_a_phrase_start_scoops_from_below_and_settles_in_time() -> None:
    notes = [SungNote(0.5, 1.5, 64), SungNote(1.5, 2.5, 62)]
    t = np.arange(0.4, 2.5, 0.002)
    scooped = 0
    for seed in range(20):
        g = plan_phrase(notes, "pop_bright", 100.0, rng(seed))[0]
        c = cents(phrase_curve(t, notes, expression="pop_bright", rng=rng(seed)), 64)
        if g.scoop_cents:
            scooped += 1
            assert c[np.searchsorted(t, 0.5)] < -0.5 * g.scoop_cents  # starts below
        assert np.all(np.abs(c[(t >= 0.55) & (t < 1.4)]) < 50)  # on the note from 50 ms in
    assert scooped >= 10


@pytest.mark.parametrize("name", SUNG)
def test_the_curve_is_continuous(name: str) -> None:
    """Sampled every 0.1 ms, no step: glides, scoops, overshoots and a drifting vibrato rate all join smoothly."""
    t = np.arange(-0.1, 5.2, 0.0001)
    for seed in range(4):
        c = 1200.0 * np.log2(phrase_curve(t, PHRASE, expression=name, tempo_bpm=120.0, rng=rng(seed)))
        assert np.abs(np.diff(c)).max() < 2.5


@pytest.mark.parametrize("name", SUNG)
def test_a_long_note_stays_on_its_written_pitch(name: str) -> None:
    notes = [SungNote(0.0, 0.5, 60), SungNote(0.5, 2.5, 64), SungNote(2.5, 3.0, 62), SungNote(3.0, 5.0, 67)]
    t = np.arange(0.0, 5.0, 0.005)
    for seed in range(6):
        f = phrase_curve(t, notes, expression=name, tempo_bpm=100.0, rng=rng(seed))
        for n in (notes[1], notes[3]):
            mid = (t > n.start + 0.3) & (t < n.end - 0.3)
            assert abs(np.mean(cents(f[mid], n.pitch))) < 10
            qc = (t > n.start + 0.05) & (t < n.end - 0.05)  # what the qc's pitch accuracy measures
            assert np.mean(np.abs(cents(f[qc], n.pitch)) < 50) >= 0.97


def test_styles_differ_as_described() -> None:
    choir, ballad, pop = (get_expression(n) for n in ("choir", "ballad", "pop_bright"))
    assert choir.extent_cents < pop.extent_cents < ballad.extent_cents
    assert ballad.rate_hz < pop.rate_hz and ballad.onset_s > pop.onset_s and ballad.growth_s > pop.growth_s
    assert choir.scoop_prob < pop.scoop_prob and choir.glide_s < ballad.glide_s
    notes = [SungNote(0.0, 1.5, 62), SungNote(1.5, 3.0, 64)]

    def planned(name: str, field: str) -> float:
        return float(np.mean([getattr(g, field) for seed in range(40)
                              for g in plan_phrase(notes, name, 100.0, rng(seed)) if g.vibrato]))

    assert planned("choir", "extent_cents") < planned("ballad", "extent_cents")
    assert planned("ballad", "rate_hz") < planned("pop_bright", "rate_hz")
    assert all(e.extent_cents + 3 * e.extent_sd_cents >= 4 for e in EXPRESSIONS.values())
    assert all(g.extent_cents <= MAX_EXTENT_CENTS for name in SUNG for seed in range(20)
               for g in plan_phrase(notes, name, 100.0, rng(seed)))
    # every style names its expression
    assert all(get_expression(s.expression).name == s.name for s in STYLES.values())
    with pytest.raises(ValueError, match="choose one of"):
        get_expression("opera")


def test_glides_grow_with_the_interval_and_in_slower_songs() -> None:
    def glide(interval: int, bpm: float) -> float:
        notes = [SungNote(0.0, 1.0, 60), SungNote(1.0, 2.0, 60 + interval)]
        return plan_phrase(notes, "pop_bright", bpm, rng(3))[1].glide_s

    assert glide(9, 100.0) > glide(2, 100.0)
    assert glide(4, 60.0) > glide(4, 140.0)


def _old_phrase_curve(t, notes, *, shift=0.0, vibrato_cents=30.0, rng=None):
    """engines/pitch.phrase_curve as it was before issue 14 (the reference the "formula" must reproduce)."""
    rng = rng or np.random.default_rng(0)
    notes = list(notes)
    midi = np.full(t.shape, float(notes[0].pitch + shift))
    out = np.zeros(t.shape)
    for k, n in enumerate(notes):
        if k:
            midi += (n.pitch - notes[k - 1].pitch) * smoothstep((t - n.start) / 0.06 + 0.5)
        nxt = notes[k + 1].start if k + 1 < len(notes) else np.inf
        inside = (t >= n.start) & (t < nxt)
        dt = t[inside] - n.start
        depth = vibrato_cents * smoothstep((dt - 0.1) / 0.15)
        out[inside] += depth * np.sin(2 * np.pi * 5.5 * dt)
    ph = rng.uniform(0, 2 * np.pi, 2)
    out += 4.0 * np.sin(2 * np.pi * 0.23 * t + ph[0]) + 2.0 * np.sin(2 * np.pi * 0.61 * t + ph[1])
    return (440.0 * 2.0 ** ((midi + out / 100.0 - 69.0) / 12.0)).astype(np.float32)


def test_formula_reproduces_the_old_constant_curve() -> None:
    t = np.arange(0.0, 5.0, 0.0125)
    new = phrase_curve(t, PHRASE, shift=-12, expression="formula", rng=rng(5))
    assert np.array_equal(new, _old_phrase_curve(t, PHRASE, shift=-12, rng=rng(5)))
    ballad_depth = phrase_curve(t, PHRASE, expression=formula_expression(38.0), rng=rng(5))
    assert np.array_equal(ballad_depth, _old_phrase_curve(t, PHRASE, vibrato_cents=38.0, rng=rng(5)))
    assert all(g.vibrato and g.rate_hz == 5.5 for g in plan_phrase(PHRASE, "formula", 100.0, rng(0)))


def test_same_rng_same_curve_and_seeds_differ() -> None:
    t = np.arange(0.0, 5.0, 0.005)
    a = phrase_curve(t, PHRASE, expression="ballad", tempo_bpm=80.0, rng=rng(7, 2))
    b = phrase_curve(t, PHRASE, expression="ballad", tempo_bpm=80.0, rng=rng(7, 2))
    assert a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(a, phrase_curve(t, PHRASE, expression="ballad", tempo_bpm=80.0, rng=rng(8, 2)))
    assert plan_phrase(PHRASE, "ballad", 80.0, rng(7, 2)) == plan_phrase(PHRASE, "ballad", 80.0, rng(7, 2))
    # no expression: the default style's
    assert np.array_equal(phrase_curve(t, PHRASE, rng=rng(7, 2)), phrase_curve(t, PHRASE, expression="pop_bright",
                                                                               rng=rng(7, 2)))
