"""GETDiff sampling under the lead plan's constraints, with a small untrained denoiser.

The constraints must hold whatever the model predicts, so an untrained model is the
hardest case: every rule here is enforced by the sampler, not learned.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from tmik_bgm_conditional_melody_generation.analysis import Analysis
from tmik_bgm_conditional_melody_generation.constraints import build_plan
from tmik_bgm_conditional_melody_generation.getscore import chord_tones, decode_notes, scale_pcs
from tmik_bgm_conditional_melody_generation.model import GETDiffModel, ModelConfig
from tmik_bgm_conditional_melody_generation.sampling import SamplerSettings, generate_lead
from tmik_bgm_conditional_melody_generation.timeline import timeline_from_analysis


@pytest.fixture(scope="module")
def model() -> GETDiffModel:
    torch.manual_seed(0)
    m = GETDiffModel(ModelConfig(width=32, layers=1, heads=2, ffn=64, token_dim=16))
    m.eval()
    return m


def song_analysis(bars: int = 24, sections: str = "ABA", seconds_per_beat: float = 0.55) -> Analysis:
    beats = list(0.4 + seconds_per_beat * np.arange(bars * 4))
    downs = beats[::4]
    prog = ["C:maj", "A:min", "F:maj", "G:7"]
    end = beats[-1] + seconds_per_beat
    chords = [(d, downs[i + 1] if i + 1 < len(downs) else end, prog[i % 4]) for i, d in enumerate(downs)]
    per = bars // len(sections)
    secs = [(downs[i * per], downs[(i + 1) * per] if (i + 1) * per < len(downs) else end, lab)
            for i, lab in enumerate(sections)]
    return Analysis(end + 0.2, 60 / seconds_per_beat, "4/4", beats, downs, "C major", chords, secs)


def run(model, analysis, *, lines=None, randomness=0.5, seed=1, low=57, high=76, window=128):
    tl = timeline_from_analysis(analysis)
    plan = build_plan(tl, low=low, high=high, lyric_lines=lines, randomness=randomness,
                      rng=np.random.default_rng(seed))
    grid = generate_lead(model, tl.grid(), plan, SamplerSettings.from_randomness(randomness, 12), seed,
                         window=window)
    return tl, plan, decode_notes(grid)


def test_range_key_and_breaths_hold(model) -> None:
    tl, plan, notes = run(model, song_analysis())
    assert len(notes) > 20
    scale = set(scale_pcs(0, "major"))
    for c, d, p in notes:
        assert 57 <= p <= 76
        chord = tl.chord_at(c)
        assert p % 12 in scale or (chord and p % 12 in chord_tones(*chord))
        assert plan.sounding_allowed[c:c + d].all(), "a note sounds through a breath"


def test_lyrics_set_the_notes_per_phrase(model) -> None:
    lines = [7, 5, 9, 6]
    _, plan, notes = run(model, song_analysis(), lines=lines)
    counts = Counter(int(plan.phrase[c]) for c, _, _ in notes)
    assert plan.onset_targets, "every phrase should have a target"
    for p, target in plan.onset_targets.items():
        assert counts.get(p, 0) == target
    # Lines are used in order and start again when they run out.
    assert [plan.lines_of_phrase[p] for p in sorted(plan.lines_of_phrase)][:6] == [0, 1, 2, 3, 0, 1]


def test_same_seed_same_melody_other_seed_other_melody(model) -> None:
    a = run(model, song_analysis(), seed=3)[2]
    b = run(model, song_analysis(), seed=3)[2]
    c = run(model, song_analysis(), seed=4)[2]
    assert a == b
    assert a != c


@pytest.mark.parametrize("window", [128, 512])
def test_repeated_section_repeats_the_melody(model, window) -> None:
    """Also when the repeat falls inside the same window as its source (window 512)."""
    tl, plan, notes = run(model, song_analysis(24, "ABA"), randomness=0.0, window=window)
    (a0, a1, _), _, (b0, b1, _) = tl.sections
    assert plan.copy_from, "bars of the second A should copy the first"
    first = [(c - a0, p) for c, _, p in notes if a0 <= c < a1]
    again = [(c - b0, p) for c, _, p in notes if b0 <= c < b1]
    assert first and again
    assert len(set(first) & set(again)) / len(first) > 0.9


def test_long_song_is_written_in_windows(model) -> None:
    tl, _, notes = run(model, song_analysis(64, "ABCD", 0.45), window=96)
    assert tl.n_cols > 3 * 96
    last_quarter = [c for c, _, _ in notes if c > 0.75 * tl.n_cols]
    assert last_quarter, "the end of a long song gets notes too"


def test_infill_keeps_the_rest(model) -> None:
    analysis = song_analysis()
    tl = timeline_from_analysis(analysis)
    plan = build_plan(tl, low=57, high=76)
    settings = SamplerSettings.from_randomness(0.5, 12)
    grid = generate_lead(model, tl.grid(), plan, settings, 1)
    keep = np.ones(tl.n_cols, dtype=bool)
    keep[64:128] = False
    again = generate_lead(model, grid, plan, settings, 2, keep=keep)
    assert np.array_equal(again[:2, keep], grid[:2, keep])
    assert not np.array_equal(again[:2, 64:128], grid[:2, 64:128])


def test_bad_range_is_refused() -> None:
    tl = timeline_from_analysis(song_analysis())
    with pytest.raises(ValueError, match="vocal range"):
        build_plan(tl, low=80, high=70)


def test_rests_in_a_drum_intro_but_sings_over_a_track_without_harmony(model) -> None:
    a = song_analysis()
    intro_end = a.downbeats[2]
    a.chords = [(max(s, intro_end), e, lab) for s, e, lab in a.chords if e > intro_end]
    tl, _, notes = run(model, a)
    assert notes and all(tl.column_times[c] >= intro_end - 1e-6 for c, _, _ in notes)
    a.chords = []
    _, _, notes = run(model, a)
    assert len(notes) > 20
    assert all(p % 12 in scale_pcs(0, "major") for *_, p in notes)
