"""How loud a phrase is sung, moment by moment, and the breath a singer takes before it.

Plain functions on plain data: a phrase is a list of :class:`SungSyllable` (times in seconds from the
start of the phrase's audio), a style's :class:`Dynamics` says how much each effect weighs.

- Phrase arch: a phrase rises to its peak (its highest note, kept within the middle of the phrase) and
  softens towards its end, a few dB each way: the "phrase arch" of the KTH performance rules (Friberg,
  Bresin & Sundberg 2006, "Overview of the KTH rule system for musical performance", Advances in Cognitive
  Psychology 2: 145-161; recalled, not re-read), where phrase-level level changes of a few dB are typical.
- Accents: a syllable's lexical stress (melody.json) and notes high in the phrase are sung louder; the
  KTH "high loud" rule raises level with pitch (of the order of 3 dB per octave at its default weight;
  recalled). Gains move between syllables over the consonants, so no step (no click).
- Onset softness: vowels after a rest that start without a consonant fade in over ``onset_s`` (a soft
  onset in ballad and soft styles; near-instant in pop), and where ``onset_breath_db`` is set a puff of
  air (the breath noise, :data:`ASPIRATION_S` long) leads into them: a breathy onset.
- Breath: before a phrase that follows a rest of at least :data:`MIN_BREATH_ROOM` seconds, an intake
  sound: noise shaped by the voice's own unvoiced (whispered) spectrum, high-passed, rising and then
  stopping just before the phrase's first sound, ``breath_db`` under the phrase's sung level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

MIN_BREATH_ROOM = 0.25  # seconds of rest a breath needs (a shorter gap is a catch breath: silent here)
BREATH_GAP = 0.04  # seconds of silence between the breath's end and the phrase's first sound
BREATH_AFTER = 0.06  # seconds kept free after the previous phrase's last sound
EVEN_SHARE = 0.75  # of a vowel's distance from the phrase's median loudness that is evened out
EVEN_MAX_DB = 8.0  # the most a vowel is moved by evening out
ASPIRATION_S = 0.08  # seconds of air before a breathy vowel onset
BREATH_HIGHPASS = 600.0  # Hz: an intake has little energy below this (the voice's own low end is voicing)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass(frozen=True)
class Dynamics:
    """A style's dynamics (dB are level changes of the sung voice).

    ``rise_db``/``fall_db``: how far under its peak a phrase starts/ends; ``stress_db``: extra level of
    a syllable by its lexical stress (1 primary, 2 secondary); ``high_db_per_octave``: extra level of a
    note per octave above the phrase's mean pitch (none below), at most ``high_max_db``; ``onset_s``: fade-in
    of a vowel that starts a sung span without a consonant; ``breath_db``: breath level under the phrase's
    sung level (RMS); ``breath_max_s``: the longest breath (a shorter rest gets a shorter one);
    ``onset_breath_db``: level of the air before a breathy vowel onset (None: clean onsets).
    """

    rise_db: float = 2.0
    fall_db: float = 3.0
    stress_db: dict[int, float] = field(default_factory=lambda: {1: 1.5, 2: 0.5})
    high_db_per_octave: float = 2.0
    high_max_db: float = 2.0
    onset_s: float = 0.03
    breath_db: float = -26.0
    breath_max_s: float = 0.4
    onset_breath_db: float | None = None


#: Per style (styles.STYLES names). Pop is even and close; ballad and soft arch more, with slow breathy
#: onsets and audible breaths; choir keeps a section's evenness and quiet breaths (its doubles copy them).
DYNAMICS: dict[str, Dynamics] = {
    "pop_bright": Dynamics(rise_db=2.0, fall_db=3.0, high_db_per_octave=2.0, onset_s=0.03, breath_db=-26.0,
                           breath_max_s=0.35),
    "soft_breathy": Dynamics(rise_db=3.0, fall_db=5.0, stress_db={1: 1.0, 2: 0.3}, high_db_per_octave=1.5,
                             onset_s=0.09, breath_db=-22.0, breath_max_s=0.45, onset_breath_db=-18.0),
    "low_warm": Dynamics(rise_db=2.0, fall_db=4.0, high_db_per_octave=1.5, onset_s=0.05, breath_db=-26.0,
                         breath_max_s=0.4),
    "choir": Dynamics(rise_db=2.0, fall_db=3.0, stress_db={1: 1.0, 2: 0.3}, high_db_per_octave=1.5,
                      onset_s=0.05, breath_db=-32.0, breath_max_s=0.35),
    "ballad": Dynamics(rise_db=4.0, fall_db=5.0, high_db_per_octave=3.0, high_max_db=3.0, onset_s=0.08,
                       breath_db=-23.0, breath_max_s=0.45, onset_breath_db=-20.0),
}


def get_dynamics(style: str) -> Dynamics:
    """The dynamics of ``style``; a style without its own entry sings with the default ones."""
    return DYNAMICS.get(style, Dynamics())


@dataclass(frozen=True)
class SungSyllable:
    """One syllable as sung: its first consonant, vowel start and end, and sung end (seconds from the
    phrase audio's start), the pitch of its first note (MIDI), its lexical stress, whether a consonant
    precedes its vowel, and a level correction in dB added to its accent."""

    onset: float
    vowel: float
    vowel_end: float
    end: float
    pitch: float
    stress: int | None = None
    has_onset: bool = True
    level_db: float = 0.0  # evening-out correction of the model's own level (see :func:`even_levels`)


def loudness_db(audio: np.ndarray, sr: int) -> float:
    """A-weighted level (dB) of a stretch of audio: what the ear hears as loud, not the low-end energy."""
    if len(audio) < 64:
        return -120.0
    f = np.fft.rfftfreq(len(audio), 1.0 / sr)
    power = np.abs(np.fft.rfft(audio * np.hanning(len(audio)))) ** 2
    f2 = np.maximum(f, 1.0) ** 2
    a = (12194.0 ** 2 * f2 ** 2) / ((f2 + 20.6 ** 2) * np.sqrt((f2 + 107.7 ** 2) * (f2 + 737.9 ** 2)) * (f2 + 12194.0 ** 2))
    return float(10.0 * np.log10(np.sum(power * (a / a.max()) ** 2) / len(audio) + 1e-20))


def even_levels(audio: np.ndarray, sr: int, syllables: Sequence[SungSyllable]) -> list[float]:
    """Per syllable, the dB that bring its vowel's loudness :data:`EVEN_SHARE` of the way to the phrase's
    median (at most :data:`EVEN_MAX_DB`): the speech model fades towards an utterance's end and loses its
    fundamental above about F4 (10 dB quieter at A4-C5, measured), which would undo the phrase arch and
    the high-note accent. Vowels shorter than 60 ms keep their level."""
    levels: list[float | None] = []
    for s in syllables:
        a, b = round((s.vowel + 0.02) * sr), round((s.vowel_end - 0.02) * sr)
        levels.append(loudness_db(audio[a:b], sr) if b - a >= 0.06 * sr else None)
    known = [x for x in levels if x is not None and x > -100.0]
    if not known:
        return [0.0] * len(syllables)
    target = float(np.median(known))
    return [0.0 if x is None or x <= -100.0 else float(np.clip(EVEN_SHARE * (target - x), -EVEN_MAX_DB, EVEN_MAX_DB))
            for x in levels]


def arch_db(t: np.ndarray, syllables: Sequence[SungSyllable], dyn: Dynamics) -> np.ndarray:
    """The phrase arch in dB at times ``t``: ``-rise_db`` at the first vowel, 0 at the peak (the first
    highest note, kept between a quarter and three quarters of the phrase), ``-fall_db`` at the end."""
    a, b = syllables[0].vowel, max(syllables[-1].end, syllables[0].vowel + 1e-3)
    top = max(s.pitch for s in syllables)
    peak = next(s.vowel for s in syllables if s.pitch == top)
    peak = float(np.clip(peak, a + 0.25 * (b - a), a + 0.75 * (b - a)))
    up = _smoothstep((t - a) / max(peak - a, 1e-3))
    down = _smoothstep((t - peak) / max(b - peak, 1e-3))
    return -dyn.rise_db * (1.0 - up) - dyn.fall_db * down


def accent_db(t: np.ndarray, syllables: Sequence[SungSyllable], dyn: Dynamics) -> np.ndarray:
    """Each syllable's accent in dB (stress + height above the phrase's mean pitch) over its vowel,
    moving between syllables over the consonants between vowels."""
    mean = float(np.mean([s.pitch for s in syllables]))
    xs: list[float] = []
    ys: list[float] = []
    for s in syllables:
        high = min(dyn.high_max_db, max(0.0, dyn.high_db_per_octave * (s.pitch - mean) / 12.0))
        g = (dyn.stress_db.get(s.stress, 0.0) if s.stress is not None else 0.0) + high + s.level_db
        a = max(s.vowel, xs[-1] + 1e-4 if xs else -np.inf)
        xs += [a, max(s.vowel_end, a + 1e-4)]
        ys += [g, g]
    return np.interp(t, xs, ys)


def onset_gain(t: np.ndarray, syllables: Sequence[SungSyllable], span_starts: Sequence[int],
               dyn: Dynamics) -> np.ndarray:
    """Linear fade-in of vowels that open a sung span (indices ``span_starts``) without a consonant."""
    g = np.ones(t.shape)
    for k in span_starts:
        s = syllables[k]
        if s.has_onset or dyn.onset_s <= 0:
            continue
        # from a quarter of full level (a soft, breathy start) to full level, smoothly
        g *= 0.25 + 0.75 * _smoothstep((t - s.vowel + 0.01) / dyn.onset_s)
    return g


def phrase_gain(n: int, sr: int, syllables: Sequence[SungSyllable], span_starts: Sequence[int],
                dyn: Dynamics) -> np.ndarray:
    """Linear gain per sample of a phrase's audio: arch, accents and soft onsets together (smooth)."""
    if not syllables:
        return np.ones(n, np.float32)
    t = np.arange(n) / sr
    db = arch_db(t, syllables, dyn) + accent_db(t, syllables, dyn)
    return (10.0 ** (db / 20.0) * onset_gain(t, syllables, span_starts, dyn)).astype(np.float32)


def breath_room(rest_start: float, first_sound: float) -> float:
    """Seconds a breath may last in a rest from ``rest_start`` to the phrase's ``first_sound``."""
    return first_sound - BREATH_GAP - (rest_start + BREATH_AFTER)


def breath_length(rest_start: float, first_sound: float, dyn: Dynamics) -> float:
    """How long the breath before a phrase lasts (0: no room for one)."""
    room = breath_room(rest_start, first_sound)
    if first_sound - rest_start < MIN_BREATH_ROOM or room < 0.1:
        return 0.0
    return float(min(dyn.breath_max_s, room))


def breath_envelope(n: int) -> np.ndarray:
    """An intake's level over its ``n`` samples: a slow rise (the air speeding up) to a peak at about 80 %,
    then a quick stop (the glottis closing for the first sound)."""
    x = np.arange(n) / max(n - 1, 1)
    rise = _smoothstep(x / 0.8) ** 1.5
    stop = _smoothstep((1.0 - x) / 0.2)
    return (rise * stop).astype(np.float32)


def breath_colour(whisper: np.ndarray, sr: int) -> np.ndarray:
    """A breath's magnitude spectrum from the voice's whispered open vowel (bins evenly spaced 0..sr/2).

    The model's whisper falls about 20 dB from 1 to 4 kHz, duller than an intake, whose air noise is
    strongest in 1-6 kHz: keep half its colour (square root of the magnitude) and tilt it up by up to
    3x from 1 to 3 kHz. Measured on the result: about three quarters of the energy in 1-6 kHz.
    """
    f = np.linspace(0.0, sr / 2.0, len(whisper))
    return (np.sqrt(np.maximum(whisper, 0.0)) * np.clip(f / 2000.0, 0.5, 1.5)).astype(np.float32)


def breath_sound(n: int, sr: int, spectrum: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of breath at unit RMS (over its body): Gaussian noise shaped by ``spectrum``
    (magnitude, bins evenly spaced 0..sr/2), high-passed at :data:`BREATH_HIGHPASS`, with the intake envelope."""
    if n <= 0:
        return np.zeros(0, np.float32)
    noise = rng.standard_normal(n)
    spec = np.fft.rfft(noise)
    f = np.fft.rfftfreq(n, 1.0 / sr)
    mag = np.interp(f, np.linspace(0.0, sr / 2.0, len(spectrum)), spectrum)
    mag = mag * _smoothstep((f - 0.5 * BREATH_HIGHPASS) / BREATH_HIGHPASS)
    env = breath_envelope(n)
    y = np.fft.irfft(spec * mag, n) * env
    body = env > 0.3
    y /= max(float(np.sqrt(np.mean(y[body] ** 2))) if body.any() else 1.0, 1e-12)
    return y.astype(np.float32)
