"""The neural singing engine: hibari-tts's shipped speech voice, driven by note timings and a pitch curve.

hibari's ONNX graph predicts per-phoneme durations and an F0 track itself. Rewiring the duration tensor
(``/Clip_output_0``, units of 25 ms) and the decoder's F0 conditioning (the input of the ``Relu`` fed by
``f0``) to new graph inputs makes both controllable, so the voice sings: vowels start on the note starts,
consonants sit just before, and the decoder renders harmonics at the target pitch (see
``shared/notes/singing.md``; feeding the pitch only to the pulse source fails, the decoder fights it).

How it performs: each phrase is one line for the model and its own take (randomness from
``default_rng([seed, k])``, so one phrase can be re-sung alone: :meth:`NeuralVoice.sing_phrase`); the pitch
curve is the style's expression (:mod:`..expression`, :func:`.pitch.phrase_curve`); the level follows the
style's :class:`.dynamics.Dynamics` (phrase arch, stress and high-note accents, soft onsets, the model's own
level evened out first); a breath is taken in rests that allow one. A held vowel is fed as repeated tokens
of :data:`VOWEL_CHUNK` units (one long token fades by 10-40 dB); measured on held vowels, the repeats leave no
envelope or spectral-flux modulation at the token period above that at nearby periods (tests/test_dynamics.py).

Public API: :func:`build_controllable_model` and :class:`NeuralVoice`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..expression import Expression, get_expression
from ..score import MELISMA, SungNote, TempoInfo, VocalScore
from ..styles import DEFAULT_STYLE, get_style
from .dynamics import (
    ASPIRATION_S,
    BREATH_GAP,
    SungSyllable,
    breath_colour,
    breath_length,
    breath_sound,
    even_levels,
    get_dynamics,
    phrase_gain,
)
from .pitch import phrase_curve, smoothstep

log = logging.getLogger(__name__)

SAMPLE_RATE = 24000
UNIT = 0.025  # seconds per duration unit of the graph (two 12.5 ms frames)
FRAME = 0.0125  # seconds per decoder frame (hop 300 at 24 kHz)
# D3..E5: where the voice keeps pitch (qc pitch accuracy >= 0.96 on every semitone, about 80 % or more of frames voiced;
# measured on test phrases for each style, with the free-phase cut below; without it the voice broke above A4).
LOW, HIGH = 50, 76
DUR_INPUT, F0_INPUT = "durations", "f0_cond"
_CACHE_NAME = "hibari_controllable.onnx"

VOWELS = frozenset("AIOQWYaeiouæɑɐɒɔəɚɛɜɪʊʌᵻᵊɨ")
STRESS = frozenset("ˈˌ")
PUNCT = frozenset(';:,.!?—…"“”()')
#: Plain-letter vocalise vowels mapped to the model's alphabet (misaki conventions).
VOCALISE = {"a": "ɑ", "ah": "ɑ", "o": "O", "oh": "O", "u": "u", "oo": "u", "i": "i", "ee": "i", "e": "ɛ", "m": "m"}

CONS_UNITS = 2  # 50 ms per consonant (the notes cap consonants at about 75 ms)
LEAD_UNITS = 2  # silence before a phrase's first consonant
TAIL_UNITS = 4  # silence after a phrase's last note
VOWEL_CHUNK = 5  # a held vowel is fed as repeats of at most 125 ms: one long token fades out in this model
FINAL_HOLD = 6  # units of vowel past a phrase's last note (gated off): the model fades utterance ends
# Natural-log units the decoder's free-phase branch (exp(lr) e^{i phi}) is lowered by inside held vowels. Above
# about A4 it adds components at the 80 Hz frame rate that pyin reads as subharmonics (A4 heard two octaves down,
# C5 an octave down; voiced share 0.0-0.6), and lower down it roughens the voicing. Lowered by 2 (-17 dB): in tune
# up to F5, voiced share 0.96 instead of 0.89 at G3; word error rate (Whisper tiny, 48 lines) 0.065 vs 0.064.
FREE_PHASE_CUT = 2.0
CUT_RAMP = 3.0  # frames over which the cut comes in after a vowel starts (and goes before it ends)
GATE_PRE, GATE_POST, GATE_RAMP = 0.01, 0.04, 0.01  # seconds: the gate that keeps rests silent


# -- the controllable model ----------------------------------------------------------------------------------
def source_model() -> Path:
    """hibari's bundled voice ("heart"); never a downloaded one."""
    return Path(str(importlib.resources.files("hibari") / "assets" / "hibari.onnx"))


def _cache_dir(cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("TMIK_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "tmik"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_controllable_model(cache_dir: Path | None = None) -> Path:
    """Path of hibari's graph with durations and decoder F0 as inputs; built once, cached by the source's hash.

    Inputs of the result: ``ids [1, L]`` int64, ``speed [1]`` (unused now), ``durations [L]`` float (units of
    25 ms, one per id, pads included) and ``f0_cond [1, F]`` float Hz with ``F = 2 * sum(durations)``.
    Outputs are unchanged; ``f0`` is still the model's own prediction (read it for voicing).
    """
    import onnx
    from onnx import TensorProto, helper

    src = source_model()
    digest = _sha256(src)
    folder = _cache_dir(cache_dir)
    out, stamp = folder / _CACHE_NAME, folder / (_CACHE_NAME + ".sha256")
    if out.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        return out
    log.info("building the controllable singing model from %s into %s", src, out)
    model = onnx.load(str(src))
    graph = model.graph
    rewired_dur = rewired_f0 = 0
    for node in graph.node:
        if node.op_type == "Relu" and list(node.input) == ["f0"]:
            node.input[0] = F0_INPUT
            rewired_f0 += 1
        for i, name in enumerate(node.input):
            if name == "/Clip_output_0":
                node.input[i] = DUR_INPUT
                rewired_dur += 1
    if rewired_dur == 0 or rewired_f0 != 1:
        raise RuntimeError(f"hibari's graph changed shape (durations rewired {rewired_dur}x, F0 {rewired_f0}x); "
                           "this engine knows hibari-tts 0.2.x")
    graph.input.append(helper.make_tensor_value_info(DUR_INPUT, TensorProto.FLOAT, ["L"]))
    graph.input.append(helper.make_tensor_value_info(F0_INPUT, TensorProto.FLOAT, [1, "F"]))
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_CACHE_NAME + ".", suffix=".part", dir=folder)
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    stamp.write_text(digest + "\n")
    return out


# -- phonemes per syllable -----------------------------------------------------------------------------------
@dataclass
class _Syllable:
    """One sung syllable: phoneme tokens by role, the notes it spans (first = attack, rest = melisma)."""

    onset: list[str]
    nucleus: list[str]  # stress marks, the main vowel, then anything merged into it (extra vowels, consonants)
    coda: list[str]
    notes: list[int] = field(default_factory=list)
    word_start: bool = True

    @property
    def main(self) -> int:
        """Index in ``nucleus`` of the vowel that fills the note."""
        return next((i for i, c in enumerate(self.nucleus) if c in VOWELS), 0)


def _clean(text: str) -> str:
    return re.sub(r"[^\w']", "", text.replace("’", "'")).strip("'")


def _nuclei(tokens: list[str]) -> list[tuple[int, int]]:
    """Ranges of vowel runs (with their leading stress marks and trailing length marks)."""
    runs: list[tuple[int, int]] = []
    i = 0
    while i < len(tokens):
        j = i
        while j < len(tokens) and tokens[j] in STRESS:
            j += 1
        if j < len(tokens) and tokens[j] in VOWELS:
            k = j
            while k < len(tokens) and (tokens[k] in VOWELS or tokens[k] == "ː"):
                k += 1
            runs.append((i, k))
            i = k
        else:
            i += 1
    return runs


def split_syllables(phonemes: str, count: int) -> list[tuple[list[str], list[str], list[str]]]:
    """Split one word's phonemes into at most ``count`` (onset, nucleus, coda) syllables.

    Fewer when the word has fewer vowels than the lyric has syllables (the caller extends the last vowel).
    Between two nuclei one consonant opens the next syllable; in a cluster the first closes the previous one.
    """
    tokens = [c for c in phonemes if c not in PUNCT and not c.isspace()]
    runs = _nuclei(tokens)
    while len(runs) < count:  # "iə" in "idea": split vowel runs sung as two syllables
        split = next(((a, b) for a, b in runs if sum(tokens[x] in VOWELS for x in range(a, b)) > 1), None)
        if split is None:
            break
        a, b = split
        first = next(x for x in range(a, b) if tokens[x] in VOWELS)
        idx = runs.index(split)
        runs[idx: idx + 1] = [(a, first + 1), (first + 1, b)]
    if not runs:
        return [([c for c in tokens if c not in STRESS], ["ə"], [])]
    n = min(count, len(runs))
    groups = [(runs[j][0], runs[j][1]) for j in range(n - 1)] + [(runs[n - 1][0], runs[-1][1])]
    out: list[tuple[list[str], list[str], list[str]]] = []
    prev_end = 0
    for j, (a, b) in enumerate(groups):
        cluster = [c for c in tokens[prev_end:a] if c not in STRESS]
        if j == 0:
            onset = cluster
        else:
            keep = 1 if len(cluster) >= 2 else 0
            out[-1][2].extend(cluster[:keep])
            onset = cluster[keep:]
        out.append((onset, tokens[a:b], []))
        prev_end = b
    out[-1][2].extend(c for c in tokens[prev_end:] if c not in STRESS)
    return out


# -- the engine ----------------------------------------------------------------------------------------------
def _fit(desired: list[int], budget: int) -> list[int]:
    """Shrink consonant lengths (at least 1 unit each where possible) to fit ``budget`` units."""
    out = list(desired)
    while sum(out) > budget and any(d > 1 for d in out):
        k = int(np.argmax(out))
        out[k] -= 1
    while sum(out) > budget and any(out):
        k = len(out) - 1 - int(np.argmax(out[::-1]))
        out[k] -= 1
    return out


class NeuralVoice:
    """Sings a :class:`VocalScore` with hibari's voice; load once, call :meth:`sing` per score.

    ``model``: the controllable graph (built and cached when None); ``threads``: onnxruntime threads
    (one is enough: about 15x faster than real time); ``seed`` fixes the noise component.
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, model: Path | None = None, *, threads: int = 1, seed: int = 0):
        import onnxruntime as ort
        from hibari.g2p import G2P

        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = threads
        so.log_severity_level = 3
        self.model_path = Path(model) if model else build_controllable_model()
        self.sess = ort.InferenceSession(str(self.model_path), so, providers=["CPUExecutionProvider"])
        vocab_path = importlib.resources.files("hibari") / "assets" / "vocab.json"
        self.vocab: dict[str, int] = json.loads(vocab_path.read_text(encoding="utf-8"))
        self.g2p = G2P(british=False)
        self.seed = seed

    # -- text ----------------------------------------------------------------------------------------------
    def _in_lexicon(self, word: str) -> bool:
        lex = self.g2p.lexicon
        return any(w in lex.golds or w in lex.silvers for w in (word, word.lower()))

    def _words(self, texts: list[str], hyphens: list[bool | None]) -> list[tuple[int, int]]:
        """Ranges of syllables forming words: ``hyphens[k]`` True joins syllable k to the next, False ends
        a word there (melody.json knows its words), None (unknown) lets the longest lexicon word win.

        MIDI lyrics carry syllables without word boundaries ("Hap", "py"), so joins are guessed; a wrong
        guess only changes coarticulation, as every syllable still gets its own note.
        """
        words: list[tuple[int, int]] = []
        i = 0
        while i < len(texts):
            j = i + 1
            while j < len(texts) and hyphens[j - 1]:
                j += 1
            if j == i + 1 and hyphens[i] is None:
                for k in range(min(len(texts), i + 6), i + 1, -1):
                    joined = "".join(texts[i:k])
                    if len(joined) >= 4 and self._in_lexicon(joined):  # "a"+"b" is no word "ab"
                        j = k
                        break
            words.append((i, j))
            i = j
        return words

    def _phrase_syllables(self, notes: list[SungNote], idx: list[int], vowel: str) -> list[_Syllable]:
        """Syllables of one phrase, with the phonemes of the whole line (coarticulation) split per note."""
        units: list[tuple[str, bool | None, list[int]]] = []  # (clean text or "" for vocalise, joins next, notes)
        for i in idx:
            raw = notes[i].syllable.strip()
            if raw == MELISMA and units:
                units[-1][2].append(i)
                continue
            units.append((_clean(raw), True if raw.endswith("-") and raw != MELISMA else None, [i]))
        for u, (text, _, note_ids) in enumerate(units):  # word boundaries the score knows (melody.json)
            if text and notes[note_ids[0]].word_start is not None:
                nxt = notes[units[u + 1][2][0]] if u + 1 < len(units) and units[u + 1][0] else None
                units[u] = (text, nxt is not None and nxt.word_start is False, note_ids)
        syllables: list[_Syllable] = []
        run: list[int] = []

        def flush() -> None:
            if run:
                syllables.extend(self._sing_words([units[u] for u in run]))
                run.clear()

        for u, (text, _, note_ids) in enumerate(units):
            if text:
                run.append(u)
                continue
            flush()
            sound = [c for c in VOCALISE.get(vowel.lower(), vowel) if c in self.vocab] or ["ɑ"]
            syllables.append(_Syllable([], sound, [], list(note_ids)))
        flush()
        return syllables

    def _sing_words(self, units: list[tuple[str, bool | None, list[int]]]) -> list[_Syllable]:
        texts = [t for t, _, _ in units]
        words = self._words(texts, [h for _, h, _ in units])
        spelled = ["".join(texts[a:b]) for a, b in words]
        line = self.g2p(" ".join(spelled))
        chunks = [c for c in ("".join(ch for ch in w if ch not in PUNCT) for w in line.split()) if c]
        if len(chunks) != len(words):  # numbers or odd tokens: fall back to one word at a time
            chunks = [self.g2p(w).replace(" ", "") or "ə" for w in spelled]
        out: list[_Syllable] = []
        for (a, b), ps in zip(words, chunks, strict=True):
            ps = "".join(c for c in ps if c in self.vocab)
            parts = split_syllables(ps, b - a)
            for k in range(a, b):
                note_ids = list(units[k][2])
                if k - a < len(parts):
                    onset, nucleus, coda = parts[k - a]
                    out.append(_Syllable(list(onset), list(nucleus), list(coda), note_ids, word_start=k == a))
                else:  # more lyric syllables than vowels: extend the last vowel over these notes
                    out[-1].notes.extend(note_ids)
        return out

    # -- timing and pitch ----------------------------------------------------------------------------------
    def _plan(self, syls: list[_Syllable], notes: list[SungNote]) -> tuple[float, list[str], list[int], list[tuple]]:
        """Tokens and their durations (units) for a phrase; T0 = the segment's start in seconds.

        Also returns per syllable ``(onset_start_unit, vowel_start_unit, vowel_end_unit, end_unit)``.
        """
        first = syls[0]
        on0 = CONS_UNITS * len(first.onset)
        t0 = notes[first.notes[0]].start - (on0 + LEAD_UNITS) * UNIT
        attack = [round((notes[s.notes[0]].start - t0) / UNIT) for s in syls]
        end = [max(round((notes[s.notes[-1]].end - t0) / UNIT), a + 1) for s, a in zip(syls, attack, strict=True)]
        tokens: list[str] = ["$"]
        durs: list[int] = [LEAD_UNITS]
        marks: list[tuple] = []
        vowels: set[int] = set()
        onset_units = _fit([CONS_UNITS] * len(first.onset), on0)
        for j, s in enumerate(syls):
            tokens += s.onset
            durs += onset_units
            onset_start = attack[j] - sum(onset_units)
            nxt = syls[j + 1] if j + 1 < len(syls) else None
            # the span from this attack to the next attack (or this end) holds nucleus, coda, space, next onset
            stop = attack[j + 1] if nxt else end[j]
            sung = min(end[j], stop) - attack[j]
            gap = stop - attack[j] - sung
            main = s.main
            pre = s.nucleus[:main]  # stress marks
            extra = s.nucleus[main + 1:]
            want_next = [CONS_UNITS] * len(nxt.onset) if nxt else []
            from_gap = min(gap, sum(want_next))
            fixed = _fit([1] * len(pre) + [CONS_UNITS] * (len(extra) + len(s.coda)), max(0, int(sung * 0.5)))
            room_next = max(0, sung - sum(fixed) - max(1, int(sung * 0.4)))
            next_units = _fit(want_next, from_gap + room_next) if nxt else []
            taken = max(0, sum(next_units) - gap)  # what the next onset steals from this note
            vowel = max(0, sung - sum(fixed) - taken)
            if vowel == 0 and sung > 0:
                vowel = 1
                fixed = _fit(fixed, max(0, sung - taken - 1))
            space = [" "] if nxt and nxt.word_start else []
            filler = max(0, gap - sum(next_units))
            n_pre = len(pre)
            if nxt is None and not s.coda:
                filler += FINAL_HOLD
            tokens += pre + [s.nucleus[main]] + extra + s.coda + space
            vowels.add(len(tokens) - 1 - len(extra) - len(s.coda) - len(space))
            body = fixed[:n_pre] + [vowel] + fixed[n_pre:]
            if space:
                body.append(filler)
            elif s.coda:
                body[-1] += filler
            else:
                body[n_pre] += filler
            # the vowel starts on the attack: stress marks (if any) come first and count as the vowel's start
            durs += body
            vowel_start = attack[j]
            marks.append((onset_start, vowel_start, vowel_start + sum(fixed[:n_pre]) + vowel, end[j]))
            onset_units = next_units
        tokens.append("$")
        durs.append(TAIL_UNITS)
        out_t: list[str] = []
        out_d: list[int] = []
        for k, (tok, d) in enumerate(zip(tokens, durs, strict=True)):
            n = max(1, -(-d // VOWEL_CHUNK)) if k in vowels else 1
            out_t += [tok] * n
            out_d += [d // n + (1 if i < d % n else 0) for i in range(n)]
        return t0, out_t, out_d, marks

    # -- synthesis -----------------------------------------------------------------------------------------
    def _phrase(self, score: VocalScore, k: int, *, seed: int, style: str, shift: int, vowel: str,
                expression: str | Expression | None = None) -> tuple[float, np.ndarray]:
        """(start time, audio) of phrase ``k`` sung as one line, with its breath; all randomness from
        ``default_rng([seed, k])``, so the audio depends only on the score, style, seed and ``k``."""
        from hibari import dsp

        notes, idx = score.notes, score.phrases[k]
        rng = np.random.default_rng([int(seed), int(k)])
        syls = self._phrase_syllables(notes, idx, vowel)
        t0, tokens, durs, marks = self._plan(syls, notes)
        ids = [0 if tok == "$" else self.vocab[tok] for tok in tokens]
        dur = np.asarray(durs, np.float32)
        frames = int(2 * dur.sum())
        feed = {"ids": np.asarray([ids], np.int64), "speed": np.ones(1, np.float32), DUR_INPUT: dur,
                F0_INPUT: np.zeros((1, frames), np.float32)}
        own_f0 = self.sess.run(["f0"], feed)[0][0]
        voiced = own_f0 > 40.0
        for _, v0, v1, _ in marks:  # the held vowel is voiced, whatever the speech model would do
            voiced[2 * v0 + 1: max(2 * v0 + 1, 2 * v1 - 1)] = True
        t = t0 + np.arange(frames) * FRAME
        bpm = bpm_at(score.tempo, notes[idx[0]].start)
        expr = get_expression(expression if expression is not None else _style_expression(style))
        f0 = phrase_curve(t, [notes[i] for i in idx], shift=shift, expression=expr, tempo_bpm=bpm, rng=rng) * voiced
        feed[F0_INPUT] = f0[None, :].astype(np.float32)
        lh, th, ln, lr, phi, _ = (o[0] for o in self.sess.run(None, feed))
        lr = lr - FREE_PHASE_CUT * _vowel_weight(frames, marks)[None, :]
        audio = dsp.synth(lh, th, ln, lr, phi, f0, rng)
        dyn = get_dynamics(style)
        sung = [SungSyllable(on * UNIT, v0 * UNIT, v1 * UNIT, end * UNIT, notes[syl.notes[0]].pitch + shift,
                             notes[syl.notes[0]].stress, bool(syl.onset))
                for syl, (on, v0, v1, end) in zip(syls, marks, strict=True)]
        sung = [replace(s, level_db=db) for s, db in zip(sung, even_levels(audio, SAMPLE_RATE, sung), strict=True)]
        gate, span_starts = self._gate(len(audio), marks, [syl.word_start for syl in syls])
        audio = audio * gate * phrase_gain(len(audio), SAMPLE_RATE, sung, span_starts, dyn)
        level = _sung_rms(audio, marks)
        if dyn.onset_breath_db is not None:  # breathy onsets: air just before a vowel that opens a span
            for j in span_starts:
                if sung[j].has_onset:
                    continue
                end = round((sung[j].vowel + 0.02) * SAMPLE_RATE)
                a = max(0, end - round(ASPIRATION_S * SAMPLE_RATE))
                audio[a:end] += breath_sound(end - a, SAMPLE_RATE, self.breath_spectrum, rng) * (
                    level * 10 ** (dyn.onset_breath_db / 20))
        # the breath: in the rest before the phrase's first sound, if there is room for one
        prev = next((p for p in reversed(score.phrases[:k]) if p), None)
        rest_start = notes[prev[-1]].end + GATE_POST if prev else 0.0
        first_sound = t0 + marks[0][0] * UNIT - GATE_PRE
        length = breath_length(rest_start, first_sound, dyn)
        if length <= 0:
            return t0, audio
        n = round(length * SAMPLE_RATE)
        breath = breath_sound(n, SAMPLE_RATE, self.breath_spectrum, rng) * (level * 10 ** (dyn.breath_db / 20))
        b0 = first_sound - BREATH_GAP - length
        pad = max(0, round((t0 - b0) * SAMPLE_RATE))
        audio = np.concatenate([np.zeros(pad, np.float32), audio])
        at = pad - round((t0 - b0) * SAMPLE_RATE)
        audio[at: at + n] += breath[: len(audio) - at]
        return t0 - pad / SAMPLE_RATE, audio

    @staticmethod
    def _gate(n: int, marks: list[tuple], word_starts: list[bool]) -> tuple[np.ndarray, list[int]]:
        """1 over sung spans (onset consonants to note end), 0 in rests, with short ramps: rests are silence.

        Syllables of one word are one span (legato, no dip between them). Also returns the index of the
        syllable that opens each span.
        """
        spans: list[list[float]] = []
        starts: list[int] = []
        for j, ((on, _, _, end), word_start) in enumerate(zip(marks, word_starts, strict=True)):
            a, b = on * UNIT - GATE_PRE, end * UNIT + GATE_POST
            if spans and (a <= spans[-1][1] or not word_start):
                spans[-1][1] = max(spans[-1][1], b)
            else:
                spans.append([a, b])
                starts.append(j)
        t = np.arange(n) / SAMPLE_RATE
        gate = np.zeros(n, np.float32)
        for a, b in spans:
            up = smoothstep((t - a) / GATE_RAMP)
            down = smoothstep((b - t) / GATE_RAMP)
            gate = np.maximum(gate, (up * down).astype(np.float32))
        return gate, starts

    @functools.cached_property
    def breath_spectrum(self) -> np.ndarray:
        """Magnitude spectrum (601 bins, 0..12 kHz) of the breath: the voice's own whispered open vowel (the
        model sings "hɑ" with no pitch), smoothed over 240 Hz so only its envelope is left (no lines, no
        harmonics), coloured by :func:`.dynamics.breath_colour`."""
        from hibari import dsp

        tokens, durs = ["$", "h", "ɑ", "$"], [2, 6, 10, 2]
        dur = np.asarray(durs, np.float32)
        frames = int(2 * dur.sum())
        feed = {"ids": np.asarray([[0 if t == "$" else self.vocab[t] for t in tokens]], np.int64),
                "speed": np.ones(1, np.float32), DUR_INPUT: dur, F0_INPUT: np.zeros((1, frames), np.float32)}
        lh, th, ln, lr, phi, _ = (o[0] for o in self.sess.run(None, feed))
        y = dsp.synth(lh, th, ln, lr, phi, np.zeros(frames, np.float32), np.random.default_rng(0))
        seg = y[int(2 * UNIT * SAMPLE_RATE): int(16 * UNIT * SAMPLE_RATE)]
        win = np.hanning(dsp.N_FFT)
        fr = np.lib.stride_tricks.sliding_window_view(seg, dsp.N_FFT)[:: dsp.HOP] * win
        power = np.mean(np.abs(np.fft.rfft(fr, axis=1)) ** 2, axis=0)
        power = np.convolve(power, np.ones(12) / 12, mode="same")
        return breath_colour(np.sqrt(power / power.max()), SAMPLE_RATE)

    def _check_range(self, score: VocalScore, shift: int) -> None:
        if score.notes:
            lo = min(n.pitch for n in score.notes) + shift
            hi = max(n.pitch for n in score.notes) + shift
            if lo < LOW or hi > HIGH:
                log.warning("notes span MIDI %d..%d; this voice keeps pitch in %d..%d (D3..E5)", lo, hi, LOW, HIGH)

    def sing_phrase(self, score: VocalScore, k: int, *, seed: int, style: str = DEFAULT_STYLE,
                    transpose_octaves: int = 0, vocalise_vowel: str = "a",
                    expression: str | Expression | None = None) -> tuple[int, np.ndarray]:
        """Phrase ``k`` of ``score`` alone, breath included: ``(start_sample, audio)`` within the output of
        :meth:`sing` (cut to it), so adding every phrase's audio at its start gives :meth:`sing`'s result.

        A take re-sings only the phrases whose seed changed. ``expression`` overrides the style's pitch
        expression (make eval compares the old formula); the dynamics stay the style's.
        """
        n_out = round((score.duration + 0.5) * SAMPLE_RATE)
        if not score.phrases[k]:
            return 0, np.zeros(0, np.float32)
        t0, audio = self._phrase(score, k, seed=seed, style=style, shift=12 * int(transpose_octaves),
                                 vowel=vocalise_vowel, expression=expression)
        start = round(t0 * SAMPLE_RATE)
        if start < 0:
            audio, start = audio[-start:], 0
        return start, audio[: max(0, n_out - start)].astype(np.float32)

    def sing(self, score: VocalScore, *, style: str = DEFAULT_STYLE, vocalise_vowel: str = "a",
             transpose_octaves: int = 0, phrase_seeds: Sequence[int | None] | None = None,
             only: Collection[int] | None = None, progress: Callable[[float], None] | None = None,
             expression: str | Expression | None = None) -> tuple[np.ndarray, int]:
        """Mono float32 vocal from 0 to ``score.duration + 0.5`` s and its sample rate.

        Each phrase is one line for the model, sung with ``style``'s expression and dynamics; phrase k's
        randomness is ``default_rng([phrase_seeds[k], k])`` (None or no list: the voice's seed), and ``only``
        sings just those phrase indices (the others stay silent). Notes keep their written pitch plus
        ``transpose_octaves`` (the style decides: nothing is folded here, notes outside D3..E5 are sung but
        logged, as the voice drifts off pitch there). ``progress(fraction)`` runs after each phrase and may
        raise to cancel. ``expression``: see :meth:`sing_phrase`.
        """
        n_out = round((score.duration + 0.5) * SAMPLE_RATE)
        out = np.zeros(n_out, np.float32)
        shift = 12 * int(transpose_octaves)
        self._check_range(score, shift)
        seeds = [self.seed if s is None else int(s) for s in (phrase_seeds or [None] * len(score.phrases))]
        if len(seeds) != len(score.phrases):
            raise ValueError(f"{len(seeds)} phrase seeds for {len(score.phrases)} phrases")
        todo = [k for k, p in enumerate(score.phrases) if p and (only is None or k in only)]
        for done, k in enumerate(todo):
            start, audio = self.sing_phrase(score, k, seed=seeds[k], style=style, transpose_octaves=transpose_octaves,
                                            vocalise_vowel=vocalise_vowel, expression=expression)
            out[start: start + len(audio)] += audio
            if progress is not None:
                progress((done + 1) / len(todo))
        return out, SAMPLE_RATE


def _vowel_weight(frames: int, marks: list[tuple]) -> np.ndarray:
    """Per decoder frame: 1 inside held vowels (a frame in from their ends), 0 elsewhere, 3-frame ramps."""
    w = np.zeros(frames, np.float32)
    for _, v0, v1, _ in marks:
        a, b = 2 * v0 + 1, 2 * v1 - 1
        if b - a < 2:
            continue
        k = np.arange(frames)
        w = np.maximum(w, np.clip(np.minimum(k - a, b - k) / CUT_RAMP, 0.0, 1.0))
    return w


def _sung_rms(audio: np.ndarray, marks: list[tuple]) -> float:
    """RMS of a phrase's audio over its vowels (its sung level)."""
    parts = [audio[round(v0 * UNIT * SAMPLE_RATE): round(v1 * UNIT * SAMPLE_RATE)] for _, v0, v1, _ in marks]
    body = np.concatenate([p for p in parts if len(p)] or [audio])
    return float(np.sqrt(np.mean(body.astype(np.float64) ** 2)))


def _style_expression(style: str) -> str:
    """The expression a style sings with (its own name where the styles do not say)."""
    try:
        return getattr(get_style(style), "expression", style)
    except ValueError:  # a style made up by a caller (tests, eval): an expression of that name, or the default
        return style


def bpm_at(tempo: TempoInfo, seconds: float) -> float:
    """The tempo (BPM) in force at ``seconds`` on the score's timeline (its tempo map in ticks)."""
    tpb = max(1, tempo.ticks_per_beat)
    changes = sorted(tempo.tempos) or [(0, 120.0)]
    elapsed, bpm = 0.0, changes[0][1]
    for (tick, value), nxt in zip(changes, [*changes[1:], None], strict=True):
        bpm = value
        if nxt is None:
            break
        span = (nxt[0] - tick) / tpb * 60.0 / value
        if elapsed + span > seconds:
            break
        elapsed += span
    return float(bpm)
