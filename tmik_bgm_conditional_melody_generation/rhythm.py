"""The rhythm of a sung lead: lyrics + meter + tempo -> where each syllable's note starts and how long it lasts.

GETDiff writes the pitches; this stage writes the rhythm first, the way a songwriter sets
words to a groove, and the sampler is then conditioned on it (the ``lead_duration`` row is
given). Plain functions on plain data; every draw comes from the caller's seed.

**Phrases.** One lyric line is one phrase (a line that would be sung for more than about
:data:`MAX_RUN_SECONDS` is cut in two at a word boundary, never inside a word). Phrases
start at a bar line: the line's first stressed syllable lands on the downbeat, and the
unstressed syllables before it (up to four: *I re-MEM-ber*) are a pickup in the bar before;
a line that starts stressed may instead anticipate the downbeat by an 8th. Each phrase
gets 1, 2, 3 or 4 bars (up to 8), the fewest that hold its syllables at the natural note value;
it ends on a held note and is followed by a breath, a rest of at least :data:`BREATH_SECONDS`
or a beat, whichever is shorter (:func:`breath_cols`).

**Inside a phrase** a dynamic programme chooses the onsets. Metrical weight
(:func:`metrical_weight`): downbeat 4, the bar's middle beat in 4/4 and 12/8 3, other
beats 2, 8th off-beats 1, 16ths 0. The score rewards primary-stressed syllables on strong
positions, unstressed syllables and monosyllabic function words on weak ones, and each
stressed syllable on a stronger position than its unstressed neighbours; note lengths near
the tempo's note value :func:`note_value` (an 8th at pop tempos, 16ths mixed in at slow
ones, quarters at fast ones, never faster than about 4 syllables per second, so the sung
rate within a line stays in the natural band of 1.5 to 5 syllables per second at 70 BPM as
at 160; a line outside :data:`MIN_LINE_RATE`..:data:`MAX_LINE_RATE` is set again with
narrower note lengths); a stressed syllable not shorter than an unstressed neighbour (the
programme's state is the onset and the previous note's length, so it compares neighbours);
and contemporary syncopation: 8th off-beats get a prior that balances the
beats, and a stressed syllable pushed an 8th (or 16th) ahead of a beat and tied over it
earns a bonus. Gumbel noise scaled by Creative Randomness chooses among good rhythms.
Afterwards a held stressed or line-final syllable sometimes becomes a melisma (two notes,
one syllable).

**Placement.** Phrases go where the track has harmony (``singable`` columns). When the
lyrics mark a chorus (``[Chorus]``, ``[Hook]``, ``[Refrain]``) and the analysis found a
section label that recurs, the chorus is sung in the sections with that label and the
other stanzas, in order, elsewhere; otherwise the lines run in order. Phrases never cross
a section boundary. A line sung again with the same words repeats its first rhythm (and
:mod:`.constraints` copies its pitches: the hook comes back).

**Lyrics that do not fit.** Too many syllables for the track at a natural rate:
:func:`plan_rhythm` raises :class:`..tmik_common.lyrics.LyricsError` ``"lyrics_do_not_fit"``
saying how many lines and syllables fit; the setting is never crushed. The same error names
a line whose run of syllables without a word break is too long for one breath. Too few: the
lyrics start again (at the chorus sections with the chorus, elsewhere from the first
verse), so the whole track is sung; :attr:`Rhythm.repeats` says how often.

Without lyrics (a vocalise) the same stage sets a generated pattern of stressed and
unstressed syllables, repeated where the analysis' section labels repeat.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tmik_common.lyrics import LyricLine, Lyrics, LyricsError

from .getscore import MAX_DURATION
from .timeline import Timeline

log = logging.getLogger(__name__)

MAX_RUN_SECONDS = 8.0  # longest sung run of one phrase
BREATH_SECONDS = 0.3  # the shortest breath between phrases
MIN_IOI_SECONDS = 0.17  # no two syllables closer than this
FASTEST_VALUE, SLOWEST_VALUE = 0.24, 0.34  # seconds: the range of the typical note value
MAX_PICKUP = 4  # unstressed syllables before the first downbeat of a phrase
MIN_LINE_RATE, MAX_LINE_RATE = 1.6, 4.9  # syllables per second within a line, first onset to last note's end
CHORUS_WORDS = re.compile(r"chorus|hook|refrain", re.IGNORECASE)

# Scores of the rhythm programme (log-scale units).
STRESS_GAIN = 1.5  # stressed syllable x normalised metrical weight
UNSTRESSED_COST = 1.1  # unstressed syllable on a beat
FUNCTION_FACTOR = 1.3  # a monosyllabic function word dislikes strong positions this much more
NEIGHBOUR_GAIN = 1.6  # a stressed syllable stronger (or not) than an unstressed neighbour
VALUE_COST = 1.2  # squared log2 distance of a note from the note value
SHORT_STRESS_COST = 0.8  # a stressed syllable shorter than the note value
LONG_UNSTRESSED_COST = 0.5  # an unstressed syllable longer than the note value
ANTICIPATION_GAIN = 1.0  # a stressed syllable pushed ahead of a beat and tied over it
OFFBEAT_PRIOR = 0.55  # every onset on an 8th off-beat
SIXTEENTH_PRIOR = -0.9  # every onset on a 16th (scaled up at fast tempos)
DURATION_ORDER_COST = 2.5  # a stressed syllable shorter than an unstressed neighbour
_NORMALISED_WEIGHT = np.array([-0.5, 0.0, 1.0, 1.4, 1.8])  # metrical weight 0..4 -> score scale


@dataclass(frozen=True)
class SungSyllable:
    """A syllable as the rhythm sees it (``text``/``word`` None in a vocalise)."""

    text: str | None
    word: str | None
    stress: int  # 1 primary, 2 secondary, 0 none
    function_word: bool
    word_start: bool
    word_end: bool


@dataclass(frozen=True)
class RhythmNote:
    """One note: ``col``/``length`` in grid columns, the index of its syllable in the phrase, melisma flag."""

    col: int
    length: int
    syllable: int
    melisma: bool = False

    @property
    def end(self) -> int:
        return self.col + self.length


@dataclass
class Phrase:
    """One sung phrase: a lyric line (or a part of one) set to notes."""

    line: int | None  # lyric line index; None in a vocalise
    syllables: list[SungSyllable]
    notes: list[RhythmNote]
    downbeat: int  # the bar line the phrase is built on
    chorus: bool = False
    source: int | None = None  # earlier phrase whose rhythm (and melody) this one repeats

    @property
    def start(self) -> int:
        return self.notes[0].col

    @property
    def end(self) -> int:
        return self.notes[-1].end


@dataclass
class Rhythm:
    """The phrases of a song, in time order, and how the lyrics were placed."""

    phrases: list[Phrase]
    repeats: float = 0.0  # how many times the lyrics were sung beyond the first (0 = once)
    info: dict = field(default_factory=dict)

    def durations(self, n_cols: int) -> np.ndarray:
        """``(n_cols,)`` note length at each onset column, 0 elsewhere."""
        out = np.zeros(n_cols, dtype=np.int64)
        for ph in self.phrases:
            for note in ph.notes:
                out[note.col] = note.length
        return out


# --------------------------------------------------------------------------------------
# The metre


def metrical_weight(timeline: Timeline) -> np.ndarray:
    """Each column's metrical weight: 4 downbeat, 3 middle beat (4/4, 12/8), 2 beat, 1 8th off-beat, 0 16th."""
    pos = np.asarray(timeline.bar_position)
    beat, bar = timeline.beat_cols, timeline.bar_cols
    w = np.where(pos % 2 == 0, 1, 0)
    w = np.where(pos % beat == 0, 2, w)
    if bar // beat == 4:
        w = np.where(pos == bar // 2, 3, w)
    return np.where(pos == 0, 4, w).astype(np.int64)


def note_value(seconds_per_col: float) -> float:
    """The typical sung note, seconds: an 8th, kept within 0.24..0.34 s (about 3-4 syllables/s; at slow
    tempos 16ths mix in, at fast ones quarters)."""
    return float(np.clip(2 * seconds_per_col, FASTEST_VALUE, SLOWEST_VALUE))


def _bars(timeline: Timeline) -> list[int]:
    """Bar-line columns: the detected downbeats, with regular bars filling the pickup bar before the
    first, any gap of a missed downbeat, and the end after the last."""
    bar, n = timeline.bar_cols, timeline.n_cols
    starts = sorted(c for c in timeline.bar_starts if 0 <= c < n) or [0]
    out = set(starts) | set(range(starts[0] % bar, starts[0], bar)) | set(range(starts[-1] + bar, n - bar // 2, bar))
    for a, b in itertools.pairwise(starts):
        k = round((b - a) / bar)
        if k >= 2:
            out |= {a + round(j * (b - a) / k) for j in range(1, k)}
    return sorted(out)


# --------------------------------------------------------------------------------------
# Syllables of lines


def _line_syllables(line: LyricLine) -> list[SungSyllable]:
    out = []
    word: list[str] = []
    pending: list = []
    for s in line.syllables:
        if s.word_start:
            word, pending = [], []
        word.append(s.text)
        pending.append(s)
        if s.word_end:
            text = "".join(word)
            out.extend(SungSyllable(p.text, text, int(p.stress), bool(p.function_word) and int(p.stress) == 0,
                                    p.word_start, p.word_end) for p in pending)
    return out


def _pickup_count(syllables: Sequence[SungSyllable]) -> int:
    """Unstressed syllables before the first stressed one (0 when more than :data:`MAX_PICKUP`)."""
    for k, s in enumerate(syllables):
        if s.stress:
            return min(k, MAX_PICKUP)
    return 0


def _split_at_word(syllables: list[SungSyllable], parts: int) -> list[list[SungSyllable]]:
    """Cut a line into ``parts`` runs at word boundaries, as equal as the words allow."""
    if parts <= 1:
        return [syllables]
    ends = [k + 1 for k, s in enumerate(syllables) if s.word_end and k + 1 < len(syllables)]
    if not ends:
        return [syllables]
    target = len(syllables) / parts
    cut = min(ends, key=lambda e: abs(e - target))
    return [syllables[:cut], *_split_at_word(syllables[cut:], parts - 1)]


def vocalise_syllables(n: int, rng: np.random.Generator) -> list[SungSyllable]:
    """A made-up line of ``n`` syllables with a word-like stress pattern (for a melody without lyrics)."""
    words = ((1, 0), (1,), (0,), (0, 1), (1, 0, 0))
    weights = np.array([0.38, 0.25, 0.17, 0.12, 0.08])
    pattern: list[tuple[int, bool, bool, bool]] = []
    while len(pattern) < n:
        w = words[int(rng.choice(len(words), p=weights))]
        for k, s in enumerate(w):
            pattern.append((s, len(w) == 1 and s == 0, k == 0, k == len(w) - 1))
    pattern = pattern[:n]
    stress, func, ws, _ = pattern[-1]
    pattern[-1] = (stress, func, ws, True)
    return [SungSyllable(None, None, s, f, a, b) for s, f, a, b in pattern]


# --------------------------------------------------------------------------------------
# One phrase


@dataclass(frozen=True)
class PhraseFrame:
    """Where a phrase may put its notes."""

    start: int  # first column a note may start (pickup region included)
    downbeat: int  # the bar line the phrase is built on
    stop: int  # no note may sound at or after this column
    seconds_per_col: float



def set_phrase(syllables: Sequence[SungSyllable], frame: PhraseFrame, weight: np.ndarray, bar_position: np.ndarray,
               beat_cols: int, onset_ok: np.ndarray, rng: np.random.Generator, randomness: float, *,
               anchor: int | None = None, pickup: int | None = None) -> list[RhythmNote] | None:
    """Onsets and lengths of one phrase's notes, one per syllable (before melismas); None if it cannot fit.

    Syllable ``pickup`` (default: the unstressed syllables before the first stressed one,
    :func:`_pickup_count`) starts at column ``anchor`` (default the frame's downbeat); the
    syllables before it are the pickup. The line's rate is kept within
    :data:`MIN_LINE_RATE`..:data:`MAX_LINE_RATE` syllables per second by narrowing the
    allowed note lengths when the best rhythm falls outside.
    """
    spc = frame.seconds_per_col
    pickup = _pickup_count(syllables) if pickup is None else pickup
    anchor = frame.downbeat if anchor is None else anchor
    min_ioi = max(1, math.ceil(MIN_IOI_SECONDS / spc - 1e-9))
    max_ioi = min(MAX_DURATION, 2 * beat_cols)
    noise = rng.gumbel(size=(len(syllables), max(frame.stop - frame.start, 0)))
    best = None
    for _ in range(6):
        notes = _best_rhythm(syllables, frame, weight, bar_position, beat_cols, onset_ok, noise, randomness,
                             anchor, pickup, min_ioi, max_ioi)
        if notes is None:
            return best
        rate = len(notes) / max((notes[-1].end - notes[0].col) * spc, 1e-6)
        best = notes
        if rate < MIN_LINE_RATE and max_ioi > min_ioi + 1:
            max_ioi = max(min_ioi + 1, max_ioi - 2)
        elif rate > MAX_LINE_RATE and min_ioi < max_ioi - 1:
            min_ioi += 1
        else:
            break
    return best


def _best_rhythm(syllables: Sequence[SungSyllable], frame: PhraseFrame, weight: np.ndarray, bar_position: np.ndarray,
                 beat_cols: int, onset_ok: np.ndarray, noise: np.ndarray, randomness: float, anchor: int,
                 pickup: int, min_ioi: int, max_ioi: int) -> list[RhythmNote] | None:
    """The dynamic programme of :func:`set_phrase` for one range of note lengths."""
    n = len(syllables)
    lo, hi = frame.start, frame.stop
    L = hi - lo
    if n == 0 or L <= 0 or not lo <= anchor < hi:
        return None
    spc = frame.seconds_per_col
    tau = note_value(spc)
    # The line's last note: at least a beat, or an even number of columns of 0.5 s when a beat is longer than 1 s.
    end_min = beat_cols if beat_cols * spc <= 1.0 else max(2, 2 * math.ceil(0.25 / spc))
    cols = np.arange(lo, hi)
    w = weight[cols]
    wn = _NORMALISED_WEIGHT[w]
    pos = bar_position[cols]
    sixteenth = pos % 2 == 1
    offbeat = (pos % 2 == 0) & (pos % beat_cols != 0)
    six_cost = SIXTEENTH_PRIOR * (1.0 + max(0.0, 0.125 - spc) / 0.03)
    prior = OFFBEAT_PRIOR * offbeat + six_cost * sixteenth
    ok = onset_ok[cols].copy()
    ok[cols == anchor] = True
    noise_scale = 0.25 + 0.6 * float(np.clip(randomness, 0.0, 1.0))
    stress = np.array([s.stress for s in syllables])
    func = np.array([s.function_word for s in syllables])
    # Unary scores per (syllable, column).
    unary = np.empty((n, L))
    for i in range(n):
        if stress[i] == 1:
            u = STRESS_GAIN * wn
        elif stress[i] == 2:
            u = 0.4 * STRESS_GAIN * wn
        else:
            u = -UNSTRESSED_COST * np.maximum(wn, 0.0) * (FUNCTION_FACTOR if func[i] else 1.0)
        unary[i] = u + prior + noise_scale * noise[i]
        unary[i, ~ok] = -np.inf
    a = anchor - lo
    for i in range(n):
        if i < pickup:
            unary[i, a:] = -np.inf
        elif i == pickup:
            keep = unary[i, a]
            unary[i] = -np.inf
            unary[i, a] = keep
        else:
            unary[i, :a + 1] = -np.inf
    # States (onset column j, gap g from the previous onset): the gap is the previous syllable's
    # length, so the score can compare neighbouring syllables' lengths (stressed not shorter).
    gaps = np.arange(min_ioi, max_ioi + 1)
    G = len(gaps)
    gap_s = gaps * spc
    logr = np.log2(gap_s / tau)
    value_cost = -VALUE_COST * logr ** 2
    short = -SHORT_STRESS_COST * np.maximum(0.0, -logr)
    long_ = -LONG_UNSTRESSED_COST * np.maximum(0.0, logr)
    to_beat = (beat_cols - pos % beat_cols) % beat_cols  # columns to the next beat
    neg = -np.inf
    score = np.full((n, L, G + 1), neg)  # gap index G: no previous syllable (the first)
    back = np.zeros((n, L, G + 1), dtype=np.int64)
    score[0, :, G] = unary[0]

    def longer_ok(g_prev: np.ndarray, g_next: int, s_prev: int, s_next: int) -> np.ndarray:
        """Penalty (<= 0) where a stressed syllable is shorter than its unstressed neighbour."""
        if s_prev == 1 and s_next == 0:
            return np.where(g_prev < g_next, -DURATION_ORDER_COST, 0.0)
        if s_prev == 0 and s_next == 1:
            return np.where(g_prev > g_next, -DURATION_ORDER_COST, 0.0)
        return np.zeros_like(g_prev, dtype=float)

    prev_gaps = np.append(gaps, 0)  # gap of each state index (0: none)
    for i in range(1, n):
        s_prev, s_next = int(stress[i - 1]), int(stress[i])
        # i-2 -> i-1 had gap prev_gaps[h]; i-1 -> i has gap g. Syllable i-2 vs i-1 compared at i-1's gap.
        s_before = int(stress[i - 2]) if i >= 2 else -1
        for gi, g in enumerate(gaps):
            if g >= L:
                continue
            j = np.arange(L - g)  # previous onset; the new onset is j + g
            order = longer_ok(prev_gaps, int(g), s_before, s_prev) if s_before >= 0 else np.zeros(G + 1)
            total = score[i - 1, :L - g, :] + order[None, :]
            h = np.argmax(total, axis=1)
            best = total[j, h]
            t = value_cost[gi] + (short[gi] if s_prev else long_[gi])
            if s_prev == 1:  # pushed ahead of a beat and held over it: an anticipation
                tb = to_beat[j]
                t = t + ANTICIPATION_GAIN * ((tb > 0) & (tb <= 2) & (g > tb)) * np.where(tb == 2, 1.0, 0.6)
            wdiff = w[j + g] - w[j]
            if s_prev and not s_next:
                t = t + NEIGHBOUR_GAIN * (0.5 if s_prev == 2 else 1.0) * np.where(wdiff < 0, 1.0, -1.0)
            elif s_next and not s_prev:
                t = t + NEIGHBOUR_GAIN * (0.5 if s_next == 2 else 1.0) * np.where(wdiff > 0, 1.0, -1.0)
            score[i, j + g, gi] = best + t + unary[i, j + g]
            back[i, j + g, gi] = h
    # The last note is held: at least a beat (or 0.5 s) before the phrase's end; an unstressed
    # last syllable is held no longer than its stressed neighbour, a stressed one at least as long.
    room = L - np.arange(L)
    end_score = np.where(room >= end_min, 0.0, neg)[:, None] + np.zeros((1, G + 1))
    if n >= 2:
        s_prev, s_last = int(stress[n - 2]), int(stress[n - 1])
        if s_prev == 1 and s_last == 0:
            end_score = end_score - DURATION_ORDER_COST * (prev_gaps[None, :] < end_min)
        elif s_prev == 0 and s_last == 1:
            end_score = end_score - DURATION_ORDER_COST * (room[:, None] < prev_gaps[None, :])
    final = score[n - 1] + end_score
    if not np.isfinite(final.max()):
        return None
    j, h = np.unravel_index(int(np.argmax(final)), final.shape)
    onsets = [int(j)]
    for i in range(n - 1, 0, -1):
        g = int(prev_gaps[h])
        h = int(back[i, j, h])
        j = j - g
        onsets.append(int(j))
    onsets = [lo + o for o in reversed(onsets)]
    lengths = [b - a for a, b in itertools.pairwise(onsets)]
    # The held end: longer than the phrase's typical note, not so long the line's rate drops under the band.
    span = (onsets[-1] - onsets[0]) * spc
    longest = max(end_min, min(MAX_DURATION // beat_cols * beat_cols,
                               beat_cols * math.ceil(max(2 * beat_cols * spc, 1.0) / spc / beat_cols)))
    by_rate = max(end_min, int((n / MIN_LINE_RATE - span) / spc)) if n > 1 else longest
    held = min(hi - onsets[-1], longest, by_rate)
    if n >= 2 and stress[n - 1] == 0 and stress[n - 2] == 1:
        held = min(held, max(lengths[-1], end_min))
    elif n >= 2 and stress[n - 1] == 1 and stress[n - 2] == 0:
        held = max(held, min(lengths[-1], hi - onsets[-1]))
    lengths.append(max(end_min, held - held % 2 if held > 2 else held))
    return [RhythmNote(c, d, k) for k, (c, d) in enumerate(zip(onsets, lengths, strict=True))]


def add_melismas(notes: list[RhythmNote], syllables: Sequence[SungSyllable], beat_cols: int,
                 rng: np.random.Generator, probability: float) -> list[RhythmNote]:
    """Split some held notes of stressed or line-final syllables into two (a melisma)."""
    out: list[RhythmNote] = []
    last = len(notes) - 1
    for k, note in enumerate(notes):
        s = syllables[note.syllable]
        can = (s.stress == 1 or k == last) and note.length >= beat_cols + 2
        if can and rng.random() < probability:
            first = 2 if note.length < 2 * beat_cols else beat_cols
            out.append(RhythmNote(note.col, first, note.syllable))
            out.append(RhythmNote(note.col + first, note.length - first, note.syllable, True))
        else:
            out.append(note)
    return out


# --------------------------------------------------------------------------------------
# Placement


@dataclass
class _Unit:
    """A phrase to place: some syllables of a lyric line."""

    line: int | None
    syllables: list[SungSyllable]
    chorus: bool
    key: str | None  # lines with the same key share their rhythm


def _units(lyrics: Lyrics, tau: float) -> list[_Unit]:
    """The lines as phrases to place; a line longer than about :data:`MAX_RUN_SECONDS` at note value
    ``tau`` is cut between words."""
    def too_long(part: list[SungSyllable]) -> bool:
        return len(part) * tau + 0.6 > MAX_RUN_SECONDS - 0.5

    out = []
    for k, line in enumerate(lyrics.lines):
        sylls = _line_syllables(line)
        parts = [sylls]
        while any(too_long(part) and any(s.word_end for s in part[:-1]) for part in parts):
            parts = [half for part in parts
                     for half in (_split_at_word(part, 2) if too_long(part) else [part])]
        chorus = bool(line.section and CHORUS_WORDS.search(line.section))
        key = " ".join(re.findall(r"\w+", line.text.lower()))
        for j, part in enumerate(parts):
            out.append(_Unit(k, part, chorus, f"{key}#{j}"))
    return out


def _chorus_label(timeline: Timeline) -> str | None:
    """The analysis' section label that recurs most (ties: the one first heard later), if any recurs."""
    labels = [lab for _, _, lab in timeline.sections]
    counts = {lab: labels.count(lab) for lab in labels}
    recurring = [lab for lab, k in counts.items() if k >= 2]
    if not recurring or len(counts) < 2:
        return None
    return max(recurring, key=lambda lab: (counts[lab], labels.index(lab)))


class _Stream:
    """The next unit to sing, by section: the chorus in chorus sections, the other stanzas elsewhere."""

    def __init__(self, units: list[_Unit], chorus_label: str | None):
        chorus = [u for u in units if u.chorus]
        verses = [u for u in units if not u.chorus]
        self.by_section = chorus_label is not None and bool(chorus) and bool(verses)
        self.chorus_label = chorus_label
        self.queues = {"chorus": chorus, "verse": verses} if self.by_section else {"all": units}
        self.pos = dict.fromkeys(self.queues, 0)

    def kind(self, label: str | None) -> str:
        if not self.by_section:
            return "all"
        return "chorus" if label == self.chorus_label else "verse"

    def peek(self, label: str | None, new_section: bool) -> _Unit:
        kind = self.kind(label)
        q = self.queues[kind]
        if kind == "chorus" and new_section:
            self.pos[kind] = math.ceil(self.pos[kind] / len(q)) * len(q)  # a chorus starts from its top
        return q[self.pos[kind] % len(q)]

    def after(self, label: str | None) -> _Unit:
        """The unit sung after the one :meth:`peek` gives (in the same section)."""
        q = self.queues[self.kind(label)]
        return q[(self.pos[self.kind(label)] + 1) % len(q)]

    def take(self, label: str | None) -> None:
        self.pos[self.kind(label)] += 1

    def sung_once(self) -> bool:
        return all(self.pos[k] >= len(q) for k, q in self.queues.items())

    def repeats(self) -> float:
        total = sum(len(q) for q in self.queues.values())
        return max(0.0, sum(self.pos.values()) / max(total, 1) - 1.0)


@dataclass
class _Context:
    timeline: Timeline
    bars: list[int]
    bar_ends: list[int]
    ok_bar: list[bool]
    section_of: list[tuple[int | None, str | None]]
    tau: float
    rng: np.random.Generator


NB_CHOICES = (1, 2, 3, 4, 6, 8)  # bars per phrase: the fewest that fit


def _slots(ctx: _Context, stream: _Stream | None) -> list[tuple[int, int, _Unit]]:
    """Which bars each phrase takes: ``(first bar index, bars, unit)``.

    With lyrics this depends only on the lyrics and the timeline, not on the seed, so a span
    regenerated with another seed holds the same lines.
    """
    tl, bars, bar_ends, ok_bar, section_of = ctx.timeline, ctx.bars, ctx.bar_ends, ctx.ok_bar, ctx.section_of
    times, beat = tl.column_times, tl.beat_cols
    chorus_label = _chorus_label(tl)
    slots: list[tuple[int, int, _Unit]] = []
    patterns: dict[tuple[str, int, int], list[SungSyllable]] = {}  # (section label, bar in it, bars)
    i = 0
    prev_section: object = object()
    while i < len(bars):
        if not ok_bar[i]:
            i += 1
            continue
        sec_start, label = section_of[i]
        new_section = sec_start != prev_section
        sec_end = next((k for k in range(i + 1, len(bars)) if section_of[k][0] != sec_start), len(bars))
        free = next((k for k in range(i, sec_end) if not ok_bar[k]), sec_end) - i  # singable bars from here
        bar_s = float(times[bar_ends[i]] - times[bars[i]])
        spc = bar_s / max(bar_ends[i] - bars[i], 1)
        breath_s = breath_cols(beat, spc) * spc
        if stream is not None:
            unit = stream.peek(label, new_section)
            choices = NB_CHOICES
        else:
            nb = 1 if bar_s >= 3.5 else 2 if 2 * bar_s <= 7.5 else 4
            nb = max(1, min(nb, free))
            first_bar = next(k for k in range(len(bars)) if section_of[k][0] == sec_start)
            key = (str(label), i - first_bar, nb)
            if label is None or key not in patterns:
                sung = nb * bar_s - breath_s - 0.5
                n = max(2, round(ctx.rng.uniform(0.5, 0.8) * sung / ctx.tau))
                patterns[key] = vocalise_syllables(n, ctx.rng)
            unit = _Unit(None, patterns[key], label is not None and label == chorus_label,
                         f"v:{key}" if label is not None else None)
            choices = (nb,)
        need = (len(unit.syllables) - _pickup_count(unit.syllables)) * ctx.tau + max(2 * ctx.tau, 0.5)
        reserve_s = _pickup_cols(stream.after(label).syllables if stream is not None else [], beat, spc) * spc
        fitted = None
        for nb in choices:
            if nb > free:
                continue
            # Room: the bars, less the breath and the next phrase's pickup.
            span_s = float(times[bar_ends[i + nb - 1]] - times[bars[i]]) - breath_s - reserve_s
            if span_s >= need or stream is None:
                fitted = nb
                break
        if fitted is None:
            i += 1  # no room here (the section or the harmony ends first): try the next bar
            continue
        slots.append((i, fitted, unit))
        if stream is not None:
            stream.take(label)
        prev_section = sec_start
        i += fitted
    return slots


def singable_bars(timeline: Timeline, singable: np.ndarray, bars: list[int]) -> list[bool]:
    """Whether each bar (starting at ``bars``) is at least half singable."""
    ends = [*bars[1:], timeline.n_cols]
    return [bool(singable[a:b].mean() >= 0.5) if b > a else False for a, b in zip(bars, ends, strict=True)]


def plan_rhythm(timeline: Timeline, lyrics: Lyrics | None, singable: np.ndarray, *, seed: int = 0,
                randomness: float = 0.5) -> Rhythm:
    """Set the lyrics (or, with ``lyrics=None``, a vocalise) to rhythm on ``timeline``.

    ``singable``: ``(n_cols,)`` bool, where the voice may sing (the track has harmony).
    Raises :class:`LyricsError` ``"lyrics_do_not_fit"`` when the lyrics need more room than
    the track has at a natural rate (see the module docstring).
    """
    rng = np.random.default_rng(seed)
    n_cols = timeline.n_cols
    times = timeline.column_times
    spc_song = float(np.median(np.diff(times))) if n_cols > 1 else 0.125
    beat = timeline.beat_cols
    bars = _bars(timeline)
    bar_ends = [*bars[1:], n_cols]
    ok_bar = singable_bars(timeline, singable, bars)
    weight = metrical_weight(timeline)
    onset_ok = np.asarray(singable, dtype=bool)
    section_of = []
    for b in bars:
        sec = next(((s0, lab) for s0, s1, lab in timeline.sections if s0 <= b + beat // 2 < s1), (None, None))
        section_of.append(sec)
    tau_song = note_value(spc_song)
    ctx = _Context(timeline, bars, bar_ends, ok_bar, section_of, tau_song, rng)
    if lyrics is not None:
        units = _units(lyrics, tau_song)
        stream = _Stream(units, _chorus_label(timeline))
        slots = _slots(ctx, stream)
        if not stream.sung_once() and stream.by_section:
            stream = _Stream(units, None)  # the chorus did not fit its sections: sing in order
            slots = _slots(ctx, stream)
        if not stream.sung_once():
            total = sum(len(u.syllables) for u in units)
            placed = sum(len(u.syllables) for _, _, u in slots)
            seconds = float(times[-1] - times[0])
            fit_lines = len({u.line for _, _, u in slots})
            raise LyricsError(
                "lyrics_do_not_fit",
                f"The lyrics have {total} syllables in {len(lyrics.lines)} lines, but this "
                f"{int(seconds // 60)}:{int(seconds % 60):02d} track holds only about {placed} syllables "
                f"({fit_lines} lines) sung at a natural rate (one phrase per line, at most about "
                f"{1 / tau_song:.1f} syllables per second at {60 / (beat * spc_song):.0f} BPM). "
                "Remove some lines, or use a longer track.")
    else:
        stream = None
        slots = _slots(ctx, None)
    # 2. Frames and rhythms, left to right.
    phrases: list[Phrase] = []
    rhythm_of: dict[str, int] = {}
    unset: list[_Unit] = []
    placed: set[str | None] = set()
    mel_p = 0.12 + 0.25 * float(np.clip(randomness, 0.0, 1.0))
    for k, (bi, nb, unit) in enumerate(slots):
        down = bars[bi]
        end_col = bar_ends[bi + nb - 1]
        spc = float((times[end_col] - times[down]) / max(end_col - down, 1))
        breath = breath_cols(beat, spc)
        pick_cols = _pickup_cols(unit.syllables, beat, spc)
        start = down - pick_cols
        if phrases:
            start = max(start, phrases[-1].end + breath)
        start = max(start, 0)
        stop = end_col - breath
        room = min(stop, n_cols, start + int(MAX_RUN_SECONDS / spc))
        if k + 1 < len(slots):
            nxt = slots[k + 1]
            if nxt[0] == bi + nb:  # the next phrase starts right after: leave its pickup room
                stop = min(stop, bars[nxt[0]] - _pickup_cols(nxt[2].syllables, beat, spc) - breath)
        stop = min(stop, n_cols, start + int(MAX_RUN_SECONDS / spc))
        frame = PhraseFrame(start, down, stop, spc)
        source = rhythm_of.get(unit.key) if unit.key else None
        notes = None
        if source is not None:
            src = phrases[source]
            shift = down - src.downbeat
            moved = [RhythmNote(n.col + shift, n.length, n.syllable, n.melisma) for n in src.notes]
            if moved[0].col >= start and moved[-1].end <= stop and all(onset_ok[n.col] for n in moved):
                notes = moved
            else:
                source = None
        if notes is None:
            notes = _set_with_fallbacks(unit.syllables, frame, timeline, weight, onset_ok, rng, randomness)
            if notes is None and room > stop:  # take the next phrase's pickup room (it starts on its downbeat)
                frame = PhraseFrame(start, down, room, spc)
                notes = _set_with_fallbacks(unit.syllables, frame, timeline, weight, onset_ok, rng, randomness)
            if notes is None:
                log.warning("phrase at column %d: no rhythm fits %d syllables, skipped", down, len(unit.syllables))
                unset.append(unit)
                continue
            notes = add_melismas(notes, unit.syllables, beat, rng, mel_p)
            if unit.key:
                rhythm_of.setdefault(unit.key, len(phrases))
        phrases.append(Phrase(unit.line, list(unit.syllables), notes, down, unit.chorus, source))
        placed.add(unit.key)
    lost = [u for u in unset if u.line is not None and u.key not in placed]
    if lost and lyrics is not None:
        line = lyrics.lines[lost[0].line]
        raise LyricsError(
            "lyrics_do_not_fit",
            f"Line {lost[0].line + 1} (\u201c{line.text[:40]}\u201d) has a run of {len(lost[0].syllables)} syllables "
            f"without a word break that cannot be sung in one breath on this track. Split the line in two.")
    repeats = stream.repeats() if stream is not None else 0.0
    if repeats > 0:
        log.info("the lyrics were sung %.1f times to fill the track", 1 + repeats)
    info = {"phrases": len(phrases), "lyrics_repeats": round(repeats, 2), "note_value_s": round(tau_song, 3),
            "by_section": bool(stream is not None and stream.by_section)}
    return Rhythm(phrases, repeats, info)


def _set_with_fallbacks(syllables: Sequence[SungSyllable], frame: PhraseFrame, timeline: Timeline, weight: np.ndarray,
                        onset_ok: np.ndarray, rng: np.random.Generator, randomness: float) -> list[RhythmNote] | None:
    """:func:`set_phrase` with the phrase's usual starts, in order: its downbeat (a line that starts
    stressed sometimes anticipates it by an 8th), the bar's middle strong beat (no room for the
    pickup before the downbeat, e.g. at the very start), the downbeat without a pickup."""
    down, beat = frame.downbeat, timeline.beat_cols
    pickup = _pickup_count(syllables)
    options: list[tuple[int, int]] = []
    if pickup == 0 and rng.random() < 0.2 + 0.3 * float(np.clip(randomness, 0.0, 1.0)):
        options.append((down - 2, 0))
    options.append((down, pickup))
    beats_per_bar = timeline.bar_cols // beat
    if beats_per_bar >= 2:
        options.append((down + (beats_per_bar // 2) * beat, pickup))
    options.append((down, 0))
    for anchor, pick in options:
        notes = set_phrase(syllables, frame, weight, timeline.bar_position, beat, onset_ok, rng, randomness,
                           anchor=anchor, pickup=pick)
        if notes is not None:
            return notes
    return None


def breath_cols(beat_cols: int, seconds_per_col: float) -> int:
    """The rest after a phrase, columns: a whole number of 8ths lasting at least :data:`BREATH_SECONDS`
    (with a little margin), or a beat when that is shorter."""
    eighths = math.ceil((BREATH_SECONDS + 0.02) / (2 * seconds_per_col))
    return int(min(beat_cols, max(2, 2 * eighths)))


def _pickup_cols(syllables: Sequence[SungSyllable], beat: int, spc: float) -> int:
    """Columns before the downbeat a phrase's pickup (or an 8th anticipation) needs."""
    k = _pickup_count(syllables)
    if k == 0:
        return 2
    per = max(2, math.ceil(MIN_IOI_SECONDS / spc - 1e-9), round(FASTEST_VALUE / spc))
    per += per % 2
    # One 8th of slack from two syllables on, so the pickup need not start on a strong beat.
    return int(min(2 * beat + 2, k * per + (2 if k >= 2 else 0)))
