"""What the sampler must respect while it writes a lead melody on a timeline.

A :class:`LeadPlan` is plain per-column data, built once per song:

* **range**: pitches outside the voice's range are impossible (from the vocal style);
* **key**: pitches outside the key's scale are impossible, unless they belong to the
  chord sounding there (a secondary dominant's leading tone is fine);
* **harmony**: chord tones get a bonus on beats, a bigger one on downbeats (the model
  already prefers them; this makes the preference dependable);
* **rhythm**: a note starting between two 8ths (on a 16th) costs a penalty: sung lines
  move mostly in 8ths, and the lyrics' syllables need the time;
* **where to sing**: where the track has chords (not in a drum intro), or everywhere when
  it has almost none;
* **phrases and breaths**: bars are grouped into phrases of about 4-8 seconds; the last
  8th note of each phrase is a breath: no note may start or sound there;
* **density**: with lyrics, each phrase must hold exactly as many notes as its line has
  syllables (one note per syllable); lines that need more room get more phrases; when
  the lyrics run out before the song does, they start again from the top;
* **a given rhythm** (``rhythm=``, from :mod:`.rhythm`; what :func:`..melody.compose`
  uses): the phrases, onsets and note lengths are the rhythm's, the sampler writes only
  the pitches (:attr:`LeadPlan.durations` is given as the duration row); each note's
  chord-tone bonus comes from the chord it sounds over longest (a note pushed an 8th ahead
  of the bar takes the next chord) and grows with its length; lines sung again with the
  same words copy their first melody where the chord roots agree
  (:data:`REPEAT_CHORD_MATCH`, else only the rhythm repeats); chorus phrases lean higher
  than the verse (:data:`CHORUS_LIFT`);
* **repetition**: bars of a section whose label occurred before (A ... A) copy the
  melody of the same bar in the first occurrence, so a chorus comes back recognisably;
  each copied bar is instead rewritten with a probability that grows with Creative
  Randomness (a varied repeat), and never copied where the chords differ or where the
  lyrics ask for a different number of notes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .getscore import HIGH_PITCH, LEAD_PITCH, LOW_PITCH, ROW_SIZES, chord_tones, scale_pcs
from .rhythm import Rhythm
from .timeline import Timeline

NO_PHRASE = -1
BREATH_COLS = 2  # an 8th note
MIN_PHRASE_SECONDS = 3.5
CHORD_BONUS = 2.0  # logits added to chord tones on beats (twice that on downbeats)
VARY_MAX = 0.35  # share of repeated bars rewritten instead of copied at Creative Randomness 1
CHORD_MATCH = 0.5  # a repeated bar is copied when at least this share of its beats has the source's chord root
REPEAT_CHORD_MATCH = 0.8  # a repeated line's melody is copied when this share of its notes has the source's chord root
SIXTEENTH_PENALTY = 2.0  # logits taken from a note starting on an off-8th 16th (sung lines move in 8ths)
CHORUS_LIFT = 1.0  # logits: the top of the range gains this in a chorus (the bottom loses it), half reversed in a verse


@dataclass
class LeadPlan:
    """Per-column constraints for the lead rows of a timeline's grid."""

    low: int
    high: int
    pitch_bias: np.ndarray  # (n_cols, ROW_SIZES[LEAD_PITCH]) additive logits; -inf = impossible
    onset_allowed: np.ndarray  # (n_cols,) bool
    sounding_allowed: np.ndarray  # (n_cols,) bool: a note may sound here (breaths: False)
    phrase: np.ndarray  # (n_cols,) phrase index or NO_PHRASE
    phrases: list[tuple[int, int]]  # (start_col, end_col) of each phrase
    onset_targets: dict[int, int] = field(default_factory=dict)  # phrase -> notes, with lyrics
    copy_from: dict[int, int] = field(default_factory=dict)  # column -> earlier column to copy
    lines_of_phrase: dict[int, int] = field(default_factory=dict)  # phrase -> lyric line index
    durations: np.ndarray | None = None  # (n_cols,) given note length at each onset, 0 elsewhere (a rhythm)

    def max_duration(self) -> np.ndarray:
        """Longest note (columns) that may start in each column without crossing a breath."""
        n = len(self.sounding_allowed)
        out = np.zeros(n, dtype=np.int64)
        run = 0
        for c in range(n - 1, -1, -1):
            run = run + 1 if self.sounding_allowed[c] else 0
            out[c] = run
        return out


def phrase_bars(timeline: Timeline) -> int:
    """Bars per phrase: 2, or 4 when bars are short, so a phrase lasts about 4-8 seconds."""
    if len(timeline.bar_starts) < 2:
        return 2
    bar_seconds = float(np.median(np.diff(timeline.column_times[timeline.bar_starts])))
    return 2 if 2 * bar_seconds >= MIN_PHRASE_SECONDS else 4


def build_phrases(timeline: Timeline) -> list[tuple[int, int]]:
    """Phrase spans: groups of bars, restarting at every section boundary."""
    n = timeline.n_cols
    starts = [c for c in timeline.bar_starts if c < n]
    if not starts:
        starts = list(range(0, n, timeline.bar_cols))
    per = phrase_bars(timeline)
    section_starts = {s for s, _, _ in timeline.sections}
    bounds = []
    count = 0
    for c in starts:
        near_section = any(abs(c - s) < timeline.beat_cols for s in section_starts)
        if not bounds or count >= per or near_section:
            bounds.append(c)
            count = 0
        count += 1
    spans = []
    for i, c in enumerate(bounds):
        end = bounds[i + 1] if i + 1 < len(bounds) else n
        spans.append((c, end))
    return spans


def singable_columns(timeline: Timeline) -> np.ndarray:
    """Where the voice may sing: where the track has chords (not in a drum intro), or
    everywhere when it hardly has any (a drum or noise track)."""
    has_chord = np.zeros(timeline.n_cols, dtype=bool)
    for c0, c1, _, _ in timeline.chords:
        has_chord[c0:c1] = True
    return has_chord if has_chord.mean() >= 0.2 else np.ones(timeline.n_cols, dtype=bool)


def build_plan(timeline: Timeline, *, low: int, high: int, lyric_lines: Sequence[int] | None = None,
               randomness: float = 0.5, rng: np.random.Generator | None = None,
               chord_bonus: float = CHORD_BONUS, sixteenth_penalty: float = SIXTEENTH_PENALTY,
               rhythm: Rhythm | None = None) -> LeadPlan:
    """Constraints for writing a lead on ``timeline``.

    ``low``/``high``: the voice's range (MIDI, inclusive); ``lyric_lines``: syllables per
    lyric line (None: no lyrics, density is the model's choice); ``rhythm``: the phrases and
    note lengths to write pitches for (then ``lyric_lines`` is not used).
    """
    if not LOW_PITCH <= low < high <= HIGH_PITCH:
        raise ValueError(f"vocal range {low}..{high} must lie inside {LOW_PITCH}..{HIGH_PITCH} with low < high")
    rng = rng or np.random.default_rng(0)
    n = timeline.n_cols
    size = ROW_SIZES[LEAD_PITCH]
    pitches = np.arange(size) + LOW_PITCH - 1  # token -> pitch (token 0 = PAD)
    bias = np.zeros((n, size))
    in_range = (pitches >= low) & (pitches <= high)
    scale = np.zeros(12, dtype=bool)
    scale[list(scale_pcs(timeline.tonic, timeline.mode))] = True
    has_chord = np.zeros(n, dtype=bool)
    for c0, c1, root, quality in timeline.chords:
        has_chord[c0:c1] = True
        tones = np.zeros(12, dtype=bool)
        tones[list(chord_tones(root, quality))] = True
        pcs = pitches % 12
        ok = in_range & (scale[pcs] | tones[pcs])
        block = np.where(ok, 0.0, -np.inf)
        pos = timeline.bar_position[c0:c1]
        strength = np.where(pos == 0, 2.0, np.where(pos % timeline.beat_cols == 0, 1.0, 0.0))
        bias[c0:c1] = block[None, :] + chord_bonus * strength[:, None] * tones[pcs][None, :]
    no_chord = ~has_chord
    bias[no_chord] = np.where(in_range & scale[pitches % 12], 0.0, -np.inf)[None, :]
    # The voice rests where the track has no harmony (a drum intro), unless it hardly has any
    # (a drum or noise track): then it sings in the key throughout.
    singable = singable_columns(timeline)
    odd = (timeline.bar_position % 2) == 1
    bias[odd, 1:] -= sixteenth_penalty
    bias[:, 0] = 0.0  # PAD (no onset) is always possible unless a rule below forces a note
    if rhythm is not None:
        bias = _note_chord_bias(timeline, rhythm, bias, pitches, in_range, scale, chord_bonus)
        return _rhythm_plan(timeline, low, high, bias, pitches, rhythm, randomness, rng)
    phrases = build_phrases(timeline)
    phrase = np.full(n, NO_PHRASE, dtype=np.int64)
    sounding = singable.copy()
    for i, (c0, c1) in enumerate(phrases):
        phrase[c0:c1] = i
        sounding[max(c0, c1 - BREATH_COLS):c1] = False
    sounding[n - BREATH_COLS:] = False
    onset = sounding.copy()
    plan = LeadPlan(low, high, bias, onset, sounding, phrase, phrases)
    if lyric_lines:
        _assign_lyrics(plan, timeline, list(lyric_lines))
    plan.copy_from = _repetitions(timeline, plan, randomness, rng)
    return plan


def _note_chord_bias(timeline: Timeline, rhythm: Rhythm, bias: np.ndarray, pitches: np.ndarray,
                     in_range: np.ndarray, scale: np.ndarray, chord_bonus: float) -> np.ndarray:
    """Each note's pitch row from the chord it sounds over longest, not only the chord at its onset.

    A note pushed an 8th ahead of the bar line sounds mostly over the next chord, so it takes
    that chord's tones (and the bonus of the beat it ties over)."""
    bias = bias.copy()
    pcs = pitches % 12
    beat = timeline.beat_cols
    for ph in rhythm.phrases:
        for note in ph.notes:
            cover: dict[tuple[int, str], int] = {}
            for c in range(note.col, min(note.end, timeline.n_cols)):
                chord = timeline.chord_at(c)
                if chord is not None:
                    cover[chord] = cover.get(chord, 0) + 1
            if not cover:
                continue
            root, quality = max(cover, key=lambda ch: cover[ch])
            tones = np.zeros(12, dtype=bool)
            tones[list(chord_tones(root, quality))] = True
            pos = int(timeline.bar_position[note.col])
            to_beat = (beat - pos % beat) % beat
            if pos % beat == 0:
                strength = 2.0 if pos == 0 else 1.0
            elif to_beat <= 2 and note.length > to_beat:  # an anticipation: the beat it ties over
                strength = 2.0 if (pos + to_beat) % timeline.bar_cols == 0 else 1.0
            else:
                strength = 0.5
            # A note heard longer makes its chord tone matter more (seconds: an 8th of a ballad counts).
            seconds = float(timeline.column_times[min(note.end, timeline.n_cols)] - timeline.column_times[note.col])
            strength += min(1.0, seconds / 0.6)
            ok = in_range & (scale[pcs] | tones[pcs])
            row = np.where(ok, 0.0, -np.inf) + chord_bonus * strength * tones[pcs]
            row[0] = 0.0
            bias[note.col] = row
    return bias


def _rhythm_plan(timeline: Timeline, low: int, high: int, bias: np.ndarray, pitches: np.ndarray, rhythm: Rhythm,
                 randomness: float, rng: np.random.Generator) -> LeadPlan:
    """The plan of a given rhythm: notes exactly where the rhythm has them, pitches to write."""
    n = timeline.n_cols
    phrase = np.full(n, NO_PHRASE, dtype=np.int64)
    onset = np.zeros(n, dtype=bool)
    sounding = np.zeros(n, dtype=bool)
    spans = []
    lines = {}
    chorus = np.zeros(n, dtype=bool)
    for i, ph in enumerate(rhythm.phrases):
        spans.append((ph.start, ph.end))
        phrase[ph.start:ph.end] = i
        chorus[ph.start:ph.end] = ph.chorus
        if ph.line is not None:
            lines[i] = ph.line
        for note in ph.notes:
            onset[note.col] = True
            sounding[note.col:note.end] = True
    if chorus.any() and (~chorus & (phrase != NO_PHRASE)).any():
        tilt = CHORUS_LIFT * np.clip((pitches - (low + high) / 2) / max((high - low) / 2, 1), -1, 1)
        tilt[0] = 0.0
        verse = ~chorus & (phrase != NO_PHRASE)
        bias = bias.copy()
        bias[chorus] += tilt[None, :]
        bias[verse] -= 0.5 * tilt[None, :]
    copy: dict[int, int] = {}
    vary = VARY_MAX * float(np.clip(randomness, 0.0, 1.0))
    for ph in rhythm.phrases:
        if ph.source is None or rng.random() < vary:
            continue
        src = rhythm.phrases[ph.source]
        # The melody comes back only over the same harmony (else the rhythm alone repeats).
        same = np.mean([(timeline.chord_at(a.col) or (None,))[0] == (timeline.chord_at(b.col) or (None,))[0]
                        for a, b in zip(ph.notes, src.notes, strict=True)])
        if same < REPEAT_CHORD_MATCH:
            continue
        for a, b in zip(ph.notes, src.notes, strict=True):
            copy[a.col] = b.col
    return LeadPlan(low, high, bias, onset, sounding, phrase, spans, copy_from=copy, lines_of_phrase=lines,
                    durations=rhythm.durations(n))


def _assign_lyrics(plan: LeadPlan, timeline: Timeline, lines: list[int]) -> None:
    """Give each phrase its notes count: one lyric line per phrase (or more phrases per long line)."""
    if not any(lines):
        return
    line = 0
    i = 0
    phrases = plan.phrases
    while i < len(phrases):
        syllables = lines[line % len(lines)]
        if syllables == 0:
            line += 1
            continue
        # Room: at most one note per 8th of the phrase's singable columns.
        taken = []
        room = 0
        while i < len(phrases) and (not taken or room < syllables):
            c0, c1 = phrases[i]
            cap = int(plan.onset_allowed[c0:c1].sum()) // 2
            if cap <= 0 and not taken:
                i += 1
                continue
            taken.append(i)
            room += max(cap, 0)
            i += 1
        if not taken:
            break
        left = min(syllables, room)
        for j, p in enumerate(taken):
            c0, c1 = phrases[p]
            cap = int(plan.onset_allowed[c0:c1].sum()) // 2
            share = left if j == len(taken) - 1 else min(cap, round(left * cap / max(room, 1)))
            plan.onset_targets[p] = share
            plan.lines_of_phrase[p] = line % len(lines)
            left -= share
            room -= cap
        line += 1


def _bar_roots(timeline: Timeline, c0: int, c1: int) -> tuple:
    return tuple((timeline.chord_at(c) or (None,))[0] for c in range(c0, c1, timeline.beat_cols))


def _repetitions(timeline: Timeline, plan: LeadPlan, randomness: float, rng: np.random.Generator) -> dict[int, int]:
    """Column -> source column for bars of repeated sections."""
    first: dict[str, tuple[int, int]] = {}
    copy: dict[int, int] = {}
    vary = VARY_MAX * float(np.clip(randomness, 0.0, 1.0))
    bar = timeline.bar_cols
    for s0, s1, label in timeline.sections:
        if label not in first:
            first[label] = (s0, s1)
            continue
        a0, a1 = first[label]
        # Align on bars: the offset of each bar inside its section.
        src_bars = [c for c in timeline.bar_starts if a0 <= c < a1]
        dst_bars = [c for c in timeline.bar_starts if s0 <= c < s1]
        for src, dst in zip(src_bars, dst_bars, strict=False):
            if dst + bar > timeline.n_cols or src + bar > dst:
                continue
            same = np.mean([a == b for a, b in zip(_bar_roots(timeline, src, src + bar),
                                                    _bar_roots(timeline, dst, dst + bar), strict=True)])
            if same < CHORD_MATCH:
                continue
            ps, pd = plan.phrase[src], plan.phrase[dst]
            if plan.onset_targets and plan.onset_targets.get(int(ps)) != plan.onset_targets.get(int(pd)):
                continue
            if rng.random() < vary:
                continue
            for k in range(bar):
                if plan.sounding_allowed[dst + k] == plan.sounding_allowed[src + k]:
                    copy[dst + k] = src + k
    return copy

