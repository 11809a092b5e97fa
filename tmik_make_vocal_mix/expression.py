"""How a style sings its pitch: vibrato, scoops, overshoot and preparation, glides, fall-offs, drift.

An :class:`Expression` is a set of distributions, not one formula: :func:`.engines.pitch.plan_phrase`
draws every note's gesture from them (each long note its own vibrato rate, extent and onset; each
leap its own overshoot or preparation), so two long notes never vibrate alike. The numbers are
fitted to published measurements of singers (full list with figures: README "Sung expression"):

- Vibrato rate 5.5-6.5 Hz in classical singing (Sundberg 1994, "Acoustic and psychoacoustic aspects
  of vocal vibrato", STL-QPSR 35: 5.5-7.5 Hz; Prame 1994, "Measurements of the vibrato rate of ten
  singers", JASA 96: mean about 6 Hz, varying from tone to tone and rising towards a tone's end;
  Johnson-Read et al. 2015, "Performing lieder", J. Voice 29: about 6.4 Hz in lieder and opera).
  Choral singing is slower, narrower and shorter than solo (Mann 2014, IJRCS 5: N = 30), and pop
  and ballad voices are not operatic: their means sit at the slow end (5.3-6.0 Hz; set about 0.4 Hz
  above the measured rate we want, as the rendered vocal's measured rate reads lower than the plan's).
- Rate varies from note to note more in non-operatic genres (musical theatre, jazz: higher CV than
  opera, J. Voice study of 15 professional singers; trained singers become more regular, Mitchell &
  Kenny 2010, J. Voice 24): per-note SD 0.85-1.0 Hz, i.e. a CV of rate across notes of 0.13-0.17
  (the issue's target is >= 0.12; the old formula's was 0.01-0.03).
- Extent (semi-extent, cents either side of the mean): opera about 60-70 (Prame 1997, JASA 102:
  +-71, singers 34-123), lieder smaller (Johnson-Read 2015: about 112 vs 138 cents peak to peak).
  Pop is tighter still. Extent grows with loudness (Guzman et al. 2012, J. Voice 26), so stressed
  notes and a phrase's last note vibrate wider. Every style keeps extent + drift under the 50 cents
  the qc's pitch accuracy allows (:data:`MAX_EXTENT_CENTS`).
- Onset: vibrato starts later in "natural" than in operatic singing (Johnson-Read 2015); pop puts it
  in the latter part of long notes, and does not vibrate every long note (vibrato is neither
  "consistent" nor "omnipresent" outside opera: the genre-variability study above). No published
  distribution of onset delay was found; the SDs here (0.14-0.2 s, plus later onsets on longer
  notes) give a CV of 0.3-0.4 across notes (issue target >= 0.25).
- Transitions: sung F0 overshoots a new note and dips the other way before it (preparation), both
  second-order responses to the note step (Saitou, Unoki & Akagi 2005, "Development of an F0 control
  model based on F0 dynamic characteristics for singing-voice synthesis", Speech Communication 46:
  overshoot natural frequency about 5.5 Hz, damping about 0.5, i.e. a peak of about 16 % of the
  step about 0.1 s after it): overshoot is 13-15 % of the interval here (pop, low_warm, ballad; less
  for soft_breathy and choir), capped at 40 cents so the note is within 50 cents 50 ms in, and damped
  after large leaps (overshoot is suppressed there: Nakayama et al., JVS-Music corpus, 98 singers). The time of a pitch change grows about linearly with its size (Sundberg 1979,
  "Maximum speed of pitch changes in singers and untrained subjects", J. Phonetics 7; Xu & Sun 2002,
  JASA 111: the whole excursion about 2x the response time): glide = base + per-semitone time.
- Scoops at note beginnings and endings are part of sung tones and of how their tuning is heard
  (Larrouy-Maestri & Pfordresher 2018, "Pitch perception in music: do scoops matter?", JEP:HPP);
  notes tend to start with a rising pitch (Horii 1989, in Timmers & Desain 2000, ICMPC 6).
  Depths/times of scoops and fall-offs are design choices (no measurement found), kept short so the
  note settles within the qc's 50 ms.

``"formula"`` is the pre-issue-14 constant formula (5.5 Hz, fixed depth, onset 0.1-0.25 s, 60 ms
glide), kept only so ``make eval`` can compare.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

MAX_EXTENT_CENTS = 40.0  # semi-extent cap: vibrato + drift must stay within the qc's 50 cents


@dataclass(frozen=True)
class Expression:
    """The pitch expression of one style: the distributions each note's gesture is drawn from.

    Times in seconds, pitch in cents, rates in Hz; "sd" fields are normal standard deviations.
    """

    name: str
    description: str
    # vibrato
    rate_hz: float  # mean vibrato rate across notes
    rate_sd_hz: float  # note-to-note SD of the rate
    rate_drift_hz: float  # mean change of rate from a vibrato's start to its end (rises: Prame 1994)
    rate_drift_sd_hz: float
    extent_cents: float  # mean semi-extent (cents either side)
    extent_sd_cents: float
    extent_drift: float  # relative change of extent over the vibrato (0.2 = 20 % wider at the end)
    onset_s: float  # mean delay of the vibrato's onset after the note start (for a 1 s note)
    onset_sd_s: float
    onset_per_s: float  # longer notes start their vibrato later by this much per second of length
    growth_s: float  # onset to full extent
    min_note_s: float  # shorter notes never get vibrato
    full_note_s: float  # notes this long get vibrato with :attr:`vibrato_prob`; shorter ones less
    vibrato_prob: float  # chance of vibrato on a long note inside a phrase
    last_note_prob: float  # ... on a phrase's last note (or one before a rest)
    last_note_extent: float  # extent factor on those notes
    stress_prob: float  # added chance on a stressed (primary stress) syllable
    stress_extent: float  # extent factor on a stressed syllable
    # transitions
    glide_s: float  # transition time between adjacent notes at 100 BPM ...
    glide_per_semitone_s: float  # ... plus this per semitone of interval
    glide_tempo_power: float  # glide scales with (100 / bpm) ** power (slower songs glide longer)
    leap_semitones: int  # intervals this large or larger are leaps
    overshoot_prob: float  # chance of overshoot on a leap (a step gets a third of it)
    overshoot_ratio: float  # overshoot as a share of the interval
    overshoot_max_cents: float
    overshoot_peak_s: float  # overshoot peaks this long after the transition's middle, settles by ~2.5x
    preparation_prob: float  # chance of a preparation dip before a leap
    preparation_ratio: float
    preparation_max_cents: float
    scoop_prob: float  # chance of a scoop from below into a phrase's first note
    scoop_after_rest_prob: float  # ... into a note after a rest inside the phrase
    scoop_cents: float  # mean scoop depth below the note
    scoop_sd_cents: float
    scoop_s: float  # time to reach the note (mostly in the first 50 ms)
    falloff_prob: float  # chance of a fall-off at a phrase's end
    falloff_cents: float
    falloff_s: float  # the fall happens in this last stretch of the note, mostly in its last 50 ms
    drift_cents: float  # slow wandering of a held pitch (0.15-0.8 Hz)
    fine_cents: float  # fine fluctuation (8-13 Hz), a few cents (Saitou 2005)
    formula: bool = False  # the constant pre-issue-14 formula (comparison only)

    def to_dict(self) -> dict:
        return asdict(self)


_POP = Expression(
    "pop_bright", "Tight, late vibrato on some long notes (most phrase ends), scoops into phrase starts, "
    "small overshoots on leaps, quick glides, an occasional fall-off at the end of a line.",
    rate_hz=6.0, rate_sd_hz=1.0, rate_drift_hz=0.3, rate_drift_sd_hz=0.35,
    extent_cents=24.0, extent_sd_cents=7.0, extent_drift=0.15,
    onset_s=0.36, onset_sd_s=0.15, onset_per_s=0.12, growth_s=0.25,
    min_note_s=0.4, full_note_s=0.9, vibrato_prob=0.6, last_note_prob=0.9, last_note_extent=1.2,
    stress_prob=0.15, stress_extent=1.1,
    glide_s=0.065, glide_per_semitone_s=0.007, glide_tempo_power=0.4, leap_semitones=3,
    overshoot_prob=0.75, overshoot_ratio=0.15, overshoot_max_cents=40.0, overshoot_peak_s=0.045,
    preparation_prob=0.45, preparation_ratio=0.08, preparation_max_cents=30.0,
    scoop_prob=0.75, scoop_after_rest_prob=0.45, scoop_cents=90.0, scoop_sd_cents=30.0, scoop_s=0.09,
    falloff_prob=0.35, falloff_cents=80.0, falloff_s=0.14,
    drift_cents=4.0, fine_cents=1.5,
)

EXPRESSIONS: dict[str, Expression] = {e.name: e for e in (
    _POP,
    replace(_POP, name="soft_breathy",
            description="Gentle, narrow vibrato that comes in late, soft scoops, slower glides, airy fall-offs "
                        "at line ends.",
            rate_hz=5.7, rate_sd_hz=0.9, extent_cents=18.0, extent_sd_cents=6.0,
            onset_s=0.32, onset_sd_s=0.16, growth_s=0.3, vibrato_prob=0.5, last_note_prob=0.85,
            glide_s=0.08, glide_per_semitone_s=0.009, overshoot_prob=0.55, overshoot_ratio=0.11,
            overshoot_max_cents=32.0, preparation_prob=0.35, preparation_max_cents=25.0, scoop_prob=0.55, scoop_cents=70.0,
            falloff_prob=0.45, falloff_cents=90.0, falloff_s=0.16, drift_cents=5.0),
    replace(_POP, name="low_warm",
            description="Low, even voice: moderate, slightly slow vibrato on most long notes, gentle scoops, "
                        "round transitions.",
            rate_hz=5.6, rate_sd_hz=0.9, extent_cents=24.0, extent_sd_cents=7.0,
            onset_s=0.3, onset_sd_s=0.14, growth_s=0.28, vibrato_prob=0.6, last_note_prob=0.9,
            glide_s=0.075, glide_per_semitone_s=0.008, overshoot_ratio=0.14, overshoot_max_cents=38.0,
            scoop_prob=0.5, scoop_cents=80.0, falloff_prob=0.3, falloff_cents=70.0),
    replace(_POP, name="choir",
            description="Choir lead: little, narrow, slower vibrato (choral mode, Mann 2014), tight "
                        "alignment: short glides, hardly any scoops, overshoot or fall-offs.",
            rate_hz=5.4, rate_sd_hz=0.95, rate_drift_hz=0.15, extent_cents=14.0, extent_sd_cents=4.0,
            extent_drift=0.05, onset_s=0.3, onset_sd_s=0.2, growth_s=0.3, min_note_s=0.5,
            vibrato_prob=0.45, last_note_prob=0.6, last_note_extent=1.1, stress_prob=0.05, stress_extent=1.0,
            glide_s=0.05, glide_per_semitone_s=0.006, overshoot_prob=0.3, overshoot_ratio=0.06,
            overshoot_max_cents=18.0, preparation_prob=0.15, preparation_ratio=0.03,
            preparation_max_cents=10.0, scoop_prob=0.15, scoop_after_rest_prob=0.05, scoop_cents=40.0,
            scoop_sd_cents=15.0, scoop_s=0.07, falloff_prob=0.1, falloff_cents=30.0,
            drift_cents=2.0, fine_cents=1.0),
    replace(_POP, name="ballad",
            description="Ballad: slow, wide vibrato on nearly every long note, coming in later and growing "
                        "longer, widest on phrase ends; long glides (portamento), scoops, soft releases.",
            rate_hz=5.3, rate_sd_hz=0.85, rate_drift_hz=0.35, extent_cents=36.0, extent_sd_cents=6.0,
            extent_drift=0.2, onset_s=0.42, onset_sd_s=0.2, onset_per_s=0.15, growth_s=0.4,
            min_note_s=0.35, vibrato_prob=0.8, last_note_prob=0.95, last_note_extent=1.15,
            glide_s=0.09, glide_per_semitone_s=0.01, glide_tempo_power=0.5, overshoot_prob=0.6,
            overshoot_ratio=0.13, overshoot_max_cents=40.0, overshoot_peak_s=0.05, preparation_prob=0.5,
            scoop_prob=0.6, scoop_cents=100.0, scoop_s=0.11, falloff_prob=0.25, falloff_cents=60.0,
            falloff_s=0.16, drift_cents=4.0),
    # Pre-issue-14: every note, 5.5 Hz from its start, 30 cents reached 0.25 s in, 60 ms glides.
    replace(_POP, name="formula", description="The constant pre-issue-14 formula (comparison only).",
            rate_hz=5.5, rate_sd_hz=0.0, rate_drift_hz=0.0, rate_drift_sd_hz=0.0, extent_cents=30.0,
            extent_sd_cents=0.0, extent_drift=0.0, onset_s=0.1, onset_sd_s=0.0, onset_per_s=0.0,
            growth_s=0.15, min_note_s=0.0, full_note_s=0.0, vibrato_prob=1.0, last_note_prob=1.0,
            last_note_extent=1.0, stress_prob=0.0, stress_extent=1.0, glide_s=0.06,
            glide_per_semitone_s=0.0, glide_tempo_power=0.0, overshoot_prob=0.0, overshoot_ratio=0.0,
            preparation_prob=0.0, preparation_ratio=0.0, scoop_prob=0.0, scoop_after_rest_prob=0.0, scoop_cents=0.0,
            falloff_prob=0.0, falloff_cents=0.0, drift_cents=4.0, fine_cents=0.0,
            formula=True),
)}

DEFAULT_EXPRESSION = "pop_bright"


def get_expression(name: str | Expression | None) -> Expression:
    """The expression called ``name`` (default :data:`DEFAULT_EXPRESSION`); an Expression is returned as is."""
    if isinstance(name, Expression):
        return name
    name = name or DEFAULT_EXPRESSION
    if name not in EXPRESSIONS:
        raise ValueError(f"unknown expression {name!r}; choose one of: {', '.join(EXPRESSIONS)}")
    return EXPRESSIONS[name]


def formula_expression(vibrato_cents: float = 30.0) -> Expression:
    """The pre-issue-14 formula with a style's old fixed depth (``VocalStyle.vibrato_cents``), for comparison."""
    return replace(EXPRESSIONS["formula"], extent_cents=float(vibrato_cents))
