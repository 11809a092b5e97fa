"""Meter and downbeats from beat-level accent and harmonic-change patterns.

Bars begin where the harmony and the bass change and where the low end (kick, bass
notes) is accented. Each beat gets a downbeat score from those cues; for each candidate
number of beats per bar a Viterbi pass over the bar position finds the best downbeats,
allowing the rare phase slip (a dropped beat, a bar of another length). The bar length
whose downbeats stand out most from the other beats wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .beats import activation, backbeat, kick_and_snare, peak_near
from .features import BASS_MAX_MIDI, PITCH_FMIN_MIDI, Features, chroma_from_pitch, sync

# Additive preference per bar length: 4 beats is the most common in the music we serve.
BAR_PRIOR = {2: 0.0, 3: 0.05, 4: 0.0}
COMPOUND_BAR_PRIOR = {2: 0.5, 3: -0.1, 4: 0.0}
PHASE_SLIP_COST = 12.0
CUE_WEIGHTS = {"harmony": 1.0, "hold": 0.4, "bass_level": 0.7, "low_onset": 0.8, "accent": 0.2}
CUE_CLIP = 3.0


@dataclass
class MeterEstimate:
    time_signature: str
    beats_per_bar: int
    downbeats: np.ndarray
    contrast: dict


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 1e-9 else np.zeros_like(x)


def _change(chroma: np.ndarray) -> np.ndarray:
    """Cosine distance of each beat's chroma from the previous beat's (first beat: 0)."""
    norm = chroma / (np.linalg.norm(chroma, axis=0, keepdims=True) + 1e-9)
    sim = (norm[:, 1:] * norm[:, :-1]).sum(axis=0)
    return np.concatenate([[0.0], 1.0 - sim])


def downbeat_cues(features: Features, beats: np.ndarray) -> np.ndarray:
    """One downbeat score per beat (higher = more bar-initial), a weighted sum of z-scored cues.

    Measured on the development set, bars most reliably begin where the harmony changes,
    where the chord then holds into the next beat, and where the bass is loud and struck.
    """
    step = np.median(np.diff(beats)) if len(beats) > 1 else 0.5
    bounds = np.append(beats, beats[-1] + step)
    treble = chroma_from_pitch(features.pitch, min_midi=BASS_MAX_MIDI + 1)
    full = sync(chroma_from_pitch(features.pitch), features.pitch_fps, bounds)
    midi = np.arange(features.pitch.shape[0]) + PITCH_FMIN_MIDI
    bass_level = sync(features.pitch[midi <= BASS_MAX_MIDI], features.pitch_fps, bounds).sum(axis=0)
    cues = {
        "harmony": _change(sync(treble, features.pitch_fps, bounds)),
        "hold": _hold(full),
        "bass_level": bass_level,
        "low_onset": peak_near(features.onset_low, features.onset_fps, beats),
        "accent": peak_near(features.accent, features.onset_fps, beats),
    }
    # One outlying beat (the last one, ringing out over silence, has no hold into a next
    # beat) must not outweigh the pattern of all the others: each cue counts at most
    # CUE_CLIP standard deviations.
    return sum(CUE_WEIGHTS[name] * np.clip(_zscore(np.asarray(v, dtype=np.float64)), -CUE_CLIP, CUE_CLIP)
               for name, v in cues.items())


def _hold(chroma: np.ndarray) -> np.ndarray:
    """How much each beat's chroma carries into the next beat (1 - cosine distance); the
    last beat, with no next one, gets the median hold (no evidence either way)."""
    hold = 1.0 - _change(chroma)[1:]
    return np.append(hold, np.median(hold) if len(hold) else 0.0)


def drum_presence(features: Features, beats: np.ndarray, every_other: bool = False) -> float:
    """0..1: how clearly a drum backbeat plays on ``beats`` (0 without drums); with
    ``every_other`` also on every other beat (the half-time feel of a simple meter: kick on
    1, snare on 3)."""
    if len(beats) < 6:
        return 0.0
    strength = backbeat(features, beats)
    if every_other and len(beats) >= 12:
        # Beyond the backbeat that music without drums can show there.
        half = max(backbeat(features, b) for b in (beats[0::2], beats[1::2])) - HALF_BACKBEAT_FLOOR
        strength = max(strength, half)
    return float(np.clip(strength / FULL_BACKBEAT, 0.0, 1.0))


# Kick minus snare per bar position (0 = downbeat): the drums' bar. Kick on 1 (and 3),
# snare (backbeat) on 2 and 4; in three, kick on 1 and snare or hats on 2 and 3.
DRUM_TEMPLATE = {2: np.array([1.0, -1.0]), 3: np.array([1.0, -0.5, -0.5]), 4: np.array([1.0, -1.0, 1.0, -1.0])}
# The half-time feel's bar: kick on 1, snare on 3, nothing firm on 2 and 4.
HALF_TIME_TEMPLATE = np.array([1.0, 0.0, -1.0, 0.0])
DRUM_WEIGHT = 1.0
# A backbeat this strong (see :func:`.beats.backbeat`) counts fully.
FULL_BACKBEAT = 0.1
HALF_BACKBEAT_FLOOR = 0.05


def drum_cue(features: Features, beats: np.ndarray, every_other: bool = False) -> np.ndarray:
    """Kick minus snare at each beat (z-scored), scaled by how clear the backbeat is (0
    without drums; see :func:`drum_presence` for ``every_other``)."""
    weight = drum_presence(features, beats, every_other)
    if weight == 0.0:
        return np.zeros(len(beats))
    kick, snare = kick_and_snare(features, beats)
    return weight * (_zscore(kick) - _zscore(snare))


# How much the drums' fit to a bar length's template (see :func:`drum_fit`) adds to that
# bar length's downbeat contrast when the meter is chosen (measured on the development sets).
DRUM_METER_WEIGHT = 0.5


def drum_fit(drums: np.ndarray, m: int, simple: bool = True) -> float:
    """How well the kick-minus-snare pattern ``drums`` (see :func:`drum_cue`) repeats the
    drum template of ``m`` beats per bar, at its best phase: the mean product with the
    template scaled to unit power (about 0.5-1 for a clear groove, 0 without drums). A
    ``simple`` meter's bar of four may also be the half-time feel's."""
    if m not in DRUM_TEMPLATE or len(drums) < 2 * m:
        return 0.0
    templates = [DRUM_TEMPLATE[m], HALF_TIME_TEMPLATE] if m == 4 and simple else [DRUM_TEMPLATE[m]]
    return max(_template_fit(drums, t) for t in templates)


def _template_fit(drums: np.ndarray, template: np.ndarray) -> float:
    """Mean product of ``drums`` with ``template`` scaled to unit power, at its best phase."""
    t = template - template.mean()
    t = t / np.sqrt(np.mean(t**2))
    return max(float(np.mean(drums * np.resize(np.roll(t, p), len(drums)))) for p in range(len(t)))


def half_time(drums: np.ndarray) -> bool:
    """True when the drums fit the half-time bar (kick 1, snare 3) better than the backbeat
    (kick 1 and 3, snare 2 and 4): the bar then has four beats, not two."""
    if len(drums) < 8 or not np.any(drums):
        return False
    return _template_fit(drums, HALF_TIME_TEMPLATE) > _template_fit(drums, DRUM_TEMPLATE[4])


def _bar_positions(score: np.ndarray, m: int, drums: np.ndarray | None = None, simple: bool = True) -> np.ndarray:
    """Viterbi over bar position (0 = downbeat): advance by one each beat, or slip at a cost.

    ``score`` rewards a downbeat at position 0; ``drums`` (kick minus snare per beat) is
    matched against the drum template of every position (in a ``simple`` meter the
    half-time feel's where it fits better).
    """
    n = len(score)
    first = np.arange(m) == 0
    if drums is not None and m in DRUM_TEMPLATE:
        template = DRUM_WEIGHT * (HALF_TIME_TEMPLATE if m == 4 and simple and half_time(drums) else DRUM_TEMPLATE[m])
    else:
        template = np.zeros(m)
    drums = np.zeros(n) if drums is None else drums
    delta = (np.where(first, score[0], 0.0) + drums[0] * template).astype(np.float64)
    back = np.zeros((n, m), dtype=np.int64)
    for t in range(1, n):
        advance = np.roll(delta, 1)  # position k-1 -> k
        best_any = delta.max() - PHASE_SLIP_COST
        use_slip = best_any > advance
        back[t] = np.where(use_slip, int(np.argmax(delta)), (np.arange(m) - 1) % m)
        delta = np.maximum(advance, best_any) + np.where(first, score[t], 0.0) + drums[t] * template
    pos = np.zeros(n, dtype=np.int64)
    pos[-1] = int(np.argmax(delta))
    for t in range(n - 1, 0, -1):
        pos[t - 1] = back[t, pos[t]]
    return pos


# Onsets at a third of the beat must beat those at the half by this factor for 6/8.
COMPOUND_RATIO = 1.6


def beat_subdivision(onset: np.ndarray, fps: float, beats: np.ndarray) -> int:
    """3 when the beats divide in three (compound meter, 6/8), else 2.

    Compares the onset activation a third and two thirds into each beat with that half
    way: a jig's quarter-eighth pattern and running eighths in 6/8 put onsets at the
    thirds, while simple meters put them at the half (or nowhere).
    """
    if len(beats) < 4:
        return 2
    act = activation(onset, fps, None)
    starts, ibi = beats[:-1], np.diff(beats)

    def at(fraction: float) -> float:
        return float(peak_near(act, fps, starts + fraction * ibi, radius_s=0.03).mean())

    thirds, half = max(at(1 / 3), at(2 / 3)), at(1 / 2)
    return 3 if thirds > 0.15 and thirds > COMPOUND_RATIO * half else 2


# A swung or shuffled simple meter: the hats sound on the beat and two thirds into it, but
# hardly a third into it (compound meters sound all three eighths), over a drum backbeat.
SWING_THIRD_RATIO = 0.35
SWING_MIN_HAT = 0.05
SWING_MIN_BACKBEAT = 0.03
# Without a backbeat: the ride on the beats at least this strong, and the swung 8ths after
# every other beat at most this share of those after the beats between.
RIDE_MIN_HAT = 0.3
RIDE_ALTERNATION = 0.4


def swung(features: Features, beats: np.ndarray) -> bool:
    """True when beats that divide in three are a swung or shuffled 4/4 (or 2/4, 3/4).

    A shuffle's hi-hat plays long-short (on the beat and two thirds into it) while the kick
    and snare keep a backbeat on the beats; 6/8 and 12/8 sound the middle eighth too.
    """
    if len(beats) < 8:
        return False
    fps = features.onset_fps
    hat = activation(features.onset_high, fps, None)
    starts, ibi = beats[:-1], np.diff(beats)
    first = float(peak_near(hat, fps, starts + ibi / 3.0, radius_s=0.03).mean())
    late = peak_near(hat, fps, starts + 2.0 * ibi / 3.0, radius_s=0.03)
    second = float(late.mean())
    if not (second >= SWING_MIN_HAT and first < SWING_THIRD_RATIO * second):
        return False
    if backbeat(features, beats) >= SWING_MIN_BACKBEAT:
        return True
    # A jazz ride without a backbeat: "1, 2-and-a, 3, 4-and-a", the cymbal on every beat
    # and the swung 8th after every other beat (a jig's long-short comes on every beat).
    on = float(peak_near(hat, fps, starts, radius_s=0.03).mean())
    pair = sorted((float(late[0::2].mean()), float(late[1::2].mean())))
    return on >= RIDE_MIN_HAT and pair[0] < RIDE_ALTERNATION * pair[1]


# In 4/4 the third beat is a weaker downbeat; in 2/4 it is as strong as the first. The
# share of the first beat's lead over beats 2 and 4 that it keeps over beat 3 decides.
FOUR_FOUR_MIN_LEAD = 0.3
# 12/8 is far rarer than 6/8 in the music we serve: ask for a clearly weaker third beat.
TWELVE_EIGHT_MIN_LEAD = 1.2
# Over a drum backbeat (kick on 1 and 3 alike) the first beat leads the third by less, and
# two-beat bars are rarer: the leads asked for with a full backbeat (measured on the
# development sets).
DRUM_FOUR_FOUR_MIN_LEAD = 0.15
DRUM_TWELVE_EIGHT_MIN_LEAD = 0.6


def _two_or_four(score: np.ndarray, min_lead: float, drums: np.ndarray | None = None,
                 simple: bool = True) -> tuple[int, np.ndarray]:
    """Choose 2 or 4 beats per bar from the bar-position path for 4 (see FOUR_FOUR_MIN_LEAD);
    drums in the half-time feel (``simple`` meters only) make it 4."""
    pos = _bar_positions(score, 4, drums, simple)
    if drums is not None and simple and half_time(drums):
        return 4, pos == 0
    first, third = score[pos == 0].mean(), score[pos == 2].mean()
    others = score[(pos == 1) | (pos == 3)].mean()
    lead = (first - third) / max(first - others, 1e-9)
    if lead >= min_lead:
        return 4, pos == 0
    return 2, (pos == 0) | (pos == 2)


# Beats per bar of each time signature a user may fix (the beat of 6/8 and 12/8 is the
# dotted quarter).
SIGNATURE_BEATS = {"2/4": 2, "3/4": 3, "4/4": 4, "6/8": 2, "12/8": 4}


def estimate_meter(features: Features, beats: np.ndarray, time_signature: str | None = None) -> MeterEstimate:
    """Beats per bar, time signature and downbeat times for tracked ``beats``.

    Compound or simple comes from how the beats subdivide; two compound beats per bar
    is 6/8. With ``time_signature`` (a key of :data:`SIGNATURE_BEATS`) the bar length is
    fixed and only where the bars begin is estimated.
    """
    beats = np.asarray(beats, dtype=np.float64)
    if time_signature is not None and time_signature not in SIGNATURE_BEATS:
        raise ValueError(f"time_signature {time_signature!r} is not one of {', '.join(SIGNATURE_BEATS)}")
    if len(beats) < 4:
        return MeterEstimate(time_signature or "4/4", SIGNATURE_BEATS.get(time_signature, 4), beats[:1], {})
    score = downbeat_cues(features, beats)
    if time_signature is not None:
        m = SIGNATURE_BEATS[time_signature]
        simple = time_signature in ("2/4", "3/4", "4/4")
        drums = drum_cue(features, beats, every_other=simple)
        return MeterEstimate(time_signature, m, beats[_bar_positions(score, m, drums, simple) == 0], {})
    subdivision = beat_subdivision(features.onset, features.onset_fps, beats)
    if subdivision == 3 and swung(features, beats):
        subdivision = 2
    drums = drum_cue(features, beats, every_other=subdivision == 2)
    prior = COMPOUND_BAR_PRIOR if subdivision == 3 else BAR_PRIOR
    best = None
    contrast = {}
    for m in (2, 3, 4):
        pos = _bar_positions(score, m)
        down = pos == 0
        if down.all() or not down.any():
            continue
        c = float(score[down].mean() - score[~down].mean())
        contrast[m] = round(c, 3)
        total = c + prior[m] + DRUM_METER_WEIGHT * drum_fit(drums, m, simple=subdivision == 2)
        if best is None or total > best[0]:
            best = (total, m, down)
    if best is None:
        return MeterEstimate("4/4", 4, beats[::4], contrast)
    _, m, down = best
    if m in (2, 4):
        presence = drum_presence(features, beats)
        if subdivision == 2:
            min_lead = FOUR_FOUR_MIN_LEAD + presence * (DRUM_FOUR_FOUR_MIN_LEAD - FOUR_FOUR_MIN_LEAD)
        else:
            min_lead = TWELVE_EIGHT_MIN_LEAD + presence * (DRUM_TWELVE_EIGHT_MIN_LEAD - TWELVE_EIGHT_MIN_LEAD)
        m, down = _two_or_four(score, min_lead, drums, simple=subdivision == 2)
    else:
        down = _bar_positions(score, m, drums, simple=subdivision == 2) == 0
    if subdivision == 3:
        signature = {2: "6/8", 3: "9/8", 4: "12/8"}[m]
    else:
        signature = f"{m}/4"
    return MeterEstimate(signature, m, beats[down], contrast)
