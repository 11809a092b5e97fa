"""Train the chord model (:mod:`..analysis.chord_model`) from rendered music21-corpus audio.

Run ``python -m tmik_bgm_conditional_melody_generation.evaluation.train_chords [--out PATH]``.
It builds the training set (cached in ``.cache/chord_train/``), fits the model, picks the
decoder settings by cross-validation on the training set, writes the npz (by default the
shipped ``analysis/chord_model.npz``) and prints accuracies and times. Everything is
seeded, so a rerun writes the same model.

The training set is disjoint from the development set by construction: every piece, every
chorale analysis and every multi-movement work that :data:`..devset.PIECES` uses is
excluded (checked by :func:`check_disjoint`), so the development set stays a measurement.
It is made with the development set's own generator (tempo maps, chord-symbol
accompaniment, melody harmonisation, the symbolic chord labeller, FluidSynth rendering):

* ``analysis``: the Bach chorales whose expert Roman-numeral analyses music21 ships and the
  development set does not use;
* ``chorale``: other Bach chorales, chords from the notes by the development set's
  labeller (:func:`..devset.derive_chords`), as its ``score`` pieces are;
* ``classical``: excerpts of quartet, piano and song movements from works the development
  set does not touch, labelled the same way;
* ``folk``: fiddle tunes from Ryan's Mammoth Collection, harmonised and accompanied as the
  development set's ``folk`` pieces are (the music21 corpus ships only the two Nottingham
  tunes that the development set already uses, so chord-symbol tunes are not available);
* ``synthetic``: generated progressions (triads, sevenths, sus4, diminished, inversions)
  with varied General-MIDI instruments, voicings and textures, with and without drums.

Features are the analysis front end's own: :func:`..analysis.features.compute_features` on
the rendered audio and :func:`..analysis.harmony.beat_chroma` over the TRUE beats; each
beat's label is the truth chord that covers most of it, weighted by how much it covers.

Fitting: multinomial logistic regression (L-BFGS, L2 on the weights) over 5 folds split by
piece; the L2 strength with the best cross-validated beat accuracy wins. The decoder
settings (stay probability, key bonus) are then chosen by the majmin accuracy of the full
decode (:func:`..analysis.harmony.key_and_chords`) on each piece with the fold model that
did not see it, on the true beats and, with less weight, on the doubled, halved and
off-beat grids a beat tracker reports when it errs (:data:`GRID_WEIGHTS`).

A cold run (rendering included) takes about 3.5-4 minutes on 2 cores, a rerun from the
cache about 1.5 minutes; the cache holds about 0.5 GB (FLAC audio, truth, features).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import itertools
import json
import logging
import os
import re
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import scipy.optimize
import soundfile as sf

from tmik_common.audio import load_audio

from ..analysis import features, harmony
from ..analysis.chord_model import (
    MODEL_PATH,
    N_STATS,
    ChordModel,
    design,
    fold_gradient,
    log_probabilities,
    logits_from,
    n_statistics,
    save_model,
)
from . import devset as ds
from .render import render_midi

log = logging.getLogger(__name__)

CACHE_DIR = ds.REPO_ROOT / ".cache" / "chord_train"
SEED = 20240611
# Chord qualities the model outputs (Harte shorthand); the vocabulary is N plus these on 12 roots.
QUALITIES = ("maj", "min", "7", "maj7", "min7", "dim", "sus4")
# Truth qualities outside the vocabulary, as the vocabulary chord they sound like. Others
# (aug, sus2, single notes) are left out of training.
QUALITY_MAP = {q: q for q in QUALITIES} | {
    "hdim7": "dim", "dim7": "dim", "maj6": "maj", "min6": "min", "minmaj7": "min", "9": "7",
}
FOLDS = 5
L2_GRID = (1e-6, 1e-5, 1e-4)
# Stay probabilities from "no preference" (1 / 85 classes) up; key bonus in nats.
STAY_GRID = (0.012, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 0.35)
KEY_BONUS_GRID = (0.0, 0.25, 0.5, 1.0)


# --------------------------------------------------------------------------------------
# What to render
# --------------------------------------------------------------------------------------

# Chorale analyses not in the development set, with the score each analyses.
ANALYSED_CHORALES = {
    3: "bach/bwv153.1.mxl", 4: "bach/bwv86.6.mxl", 5: "bach/bwv267.mxl", 9: "bach/bwv248.12-2.mxl",
    10: "bach/bwv38.6.mxl", 11: "bach/bwv41.6.mxl", 13: "bach/bwv33.6.mxl", 14: "bach/bwv184.5.mxl",
    15: "bach/bwv277.mxl", 16: "bach/bwv311.mxl", 17: "bach/bwv145.5.mxl", 18: "bach/bwv318.mxl",
    20: "bach/bwv302.mxl",
}
# Movements of works the development set does not use, and where excerpts start (None:
# the first measure).
CLASSICAL = (
    ("mozart/k80/movement1.mxl", (None, 40)), ("mozart/k80/movement2.mxl", (None, 30)),
    ("mozart/k80/movement3.mxl", (None,)), ("mozart/k80/movement4.mxl", (None,)),
    ("mozart/k156/movement1.mxl", (None, 60)), ("mozart/k156/movement2.mxl", (None,)),
    ("mozart/k156/movement3.mxl", (None,)), ("mozart/k156/movement4.mxl", (None,)),
    ("beethoven/opus59no1/movement1.mxl", (None, 100)), ("beethoven/opus59no1/movement2.mxl", (None,)),
    ("beethoven/opus59no1/movement3.mxl", (None,)), ("beethoven/opus59no1/movement4.mxl", (None, 80)),
    ("beethoven/opus59no2/movement1.mxl", (None, 80)), ("beethoven/opus59no2/movement2.mxl", (None,)),
    ("beethoven/opus59no2/movement3.mxl", (None,)), ("beethoven/opus59no2/movement4.mxl", (None, 120)),
    ("beethoven/opus59no3/movement1.mxl", (None, 60)), ("beethoven/opus59no3/movement2.mxl", (None,)),
    ("beethoven/opus59no3/movement3.mxl", (None,)), ("beethoven/opus59no3/movement4.mxl", (None,)),
    ("beethoven/opus18no3.mxl", (None, 100)), ("beethoven/opus18no5.mxl", (None, 60)),
    ("beethoven/opus74.mxl", (None,)), ("schumann_clara/polonaise_op1n1.mxl", (None,)),
    ("schumann_clara/polonaise_op1n2.mxl", (None,)), ("schumann_clara/polonaise_op1n3.mxl", (None,)),
    ("schumann_clara/polonaise_op1n4.mxl", (None,)), ("schumann_robert/dichterliebe_no2.xml", (None,)),
    ("schumann_robert/opus48no2.mxl", (None,)), ("handel/rinaldo/Lascia_chio_pianga.mxl", (None,)),
    ("corelli/opus3no1/1grave.xml", (None,)), ("verdi/laDonnaEMobile.mxl", (None,)),
    ("johnson_j_r/lift_every_voice.mxl", (None,)), ("liliuokalani/aloha_oe.mxl", (None,)),
    ("beach/prayer_of_a_tired_child.musicxml", (None,)), ("weber/concertino_clarinet.mxl", (None,)),
)
N_CHORALES = 48
FOLK_PER_GROUP = {("2/4", "major"): 18, ("6/8", "major"): 14, ("4/4", "major"): 10, ("3/4", "major"): 6,
                  ("2/4", "minor"): 6, ("6/8", "minor"): 8, ("4/4", "minor"): 6, ("3/4", "minor"): 4}
N_SYNTHETIC = 64

# General-MIDI programs by role, for varied timbres.
LEADS = (73, 40, 21, 71, 68, 72, 74, 56, 65, 22, 11, 80, 109, 105, 78)
COMPS = (0, 1, 4, 5, 6, 16, 19, 24, 25, 26, 46, 21, 2, 7)
BASSES = (32, 33, 34, 35, 38, 43, 58, 70, 36)
PADS = (48, 49, 50, 52, 88, 89, 61, 19, 42, 91)
FIGURES = (46, 24, 25, 0, 12, 11, 8, 13, 80, 4)
ENSEMBLES = ((40, 40, 41, 42), (48,), (0,), (19,), (52,), (6,), (68, 71, 69, 70), (56, 56, 57, 58),
             (0, 0, 42, 42), (24, 24, 32, 32), (4,), (16,))


@dataclass(frozen=True)
class Plan:
    """One training piece: a development-set style spec and where it comes from."""

    spec: ds.PieceSpec
    group: str  # analysis, chorale, classical, folk, synthetic


def _rng(name: str) -> np.random.Generator:
    """A generator seeded by a piece's name, so each piece is the same on every run."""
    return np.random.default_rng([SEED, zlib.crc32(name.encode())])


def _tempo(rng: np.random.Generator, meter: str) -> float:
    lo, hi = (52, 108) if meter == "6/8" else (66, 150)
    return float(round(rng.uniform(lo, hi)))


def _drift(rng: np.random.Generator) -> str:
    return str(rng.choice(ds.DRIFT_KINDS, p=[0.5, 0.125, 0.125, 0.125, 0.125]))


def _pick(rng: np.random.Generator, options: Sequence[int]) -> int:
    return int(options[rng.integers(len(options))])


def work_of(source: str) -> str:
    """The work a corpus file belongs to: its folder for multi-file works, else the file."""
    parts = source.split("/")
    if len(parts) > 2 or (len(parts) == 2 and "." not in parts[1]):
        return "/".join(parts[:-1])
    return source.rsplit(".", 1)[0]


def dev_exclusions() -> tuple[set[str], set[str]]:
    """(works, analyses) the development set uses; training must avoid both."""
    works = {work_of(s.source) for s in ds.PIECES if s.source != "generated"}
    analyses = {s.analysis for s in ds.PIECES if s.analysis}
    return works, analyses


def check_disjoint(plans: Sequence[Plan]) -> None:
    """Raise if any training piece shares a work or an analysis with the development set."""
    works, analyses = dev_exclusions()
    bad = [p.spec.id for p in plans
           if (p.spec.source != "generated" and work_of(p.spec.source) in works) or p.spec.analysis in analyses]
    if bad:
        raise ValueError(f"training pieces overlap the development set: {bad}")


def corpus_dir() -> Path:
    """The music21 corpus folder (for reading ABC headers without parsing whole tunes)."""
    import music21.common

    return Path(music21.common.getCorpusFilePath())


def _abc_header(path: Path) -> tuple[str | None, str | None]:
    """(meter, mode) from an ABC file's M: and K: lines; None where unsupported."""
    text = path.read_text(errors="replace")
    m = re.search(r"^M:\s*(\S+)", text, re.MULTILINE)
    k = re.search(r"^K:\s*([A-G][b#]?)(\S*)", text, re.MULTILINE)
    meter = {"C": "4/4"}.get(m.group(1), m.group(1)) if m else None
    if meter not in ds.METERS or k is None:
        return None, None
    mode = {"": "major", "maj": "major", "m": "minor", "min": "minor"}.get(k.group(2).lower())
    return meter, mode


def folk_plans() -> list[Plan]:
    """Fiddle tunes per (meter, mode), evenly spread over the alphabet."""
    works, _ = dev_exclusions()
    groups: dict[tuple[str, str], list[str]] = {}
    for path in sorted((corpus_dir() / "ryansMammoth").glob("*.abc")):
        source = f"ryansMammoth/{path.name}"
        if work_of(source) in works or path.read_text(errors="replace").count("X:") != 1:
            continue
        meter, mode = _abc_header(path)
        if meter and mode:
            groups.setdefault((meter, mode), []).append(source)
    plans = []
    for (meter, mode), want in FOLK_PER_GROUP.items():
        found = groups.get((meter, mode), [])
        chosen = [found[i] for i in np.linspace(0, len(found) - 1, min(want, len(found))).round().astype(int)]
        for source in dict.fromkeys(chosen):
            name = "folk_" + Path(source).stem
            rng = _rng(name)
            programs = (_pick(rng, LEADS), _pick(rng, COMPS), _pick(rng, BASSES)) + (
                (_pick(rng, PADS),) if rng.random() < 0.4 else ())
            spec = ds.PieceSpec(name, "folk", source, "C major", meter, _tempo(rng, meter), drift=_drift(rng),
                                drums=bool(rng.random() < 0.5), programs=programs, seconds=36.0, loops=2)
            plans.append(Plan(spec, "folk"))
    return plans


def chorale_plans() -> list[Plan]:
    """The analysed chorales, then other chorales labelled from their notes."""
    works, analyses = dev_exclusions()
    plans = []
    for number, source in ANALYSED_CHORALES.items():
        analysis = f"bach/choraleAnalyses/riemenschneider{number:03d}.rntxt"
        name = f"analysis_{Path(source).stem.replace('.', '_')}"
        rng = _rng(name)
        spec = ds.PieceSpec(name, "analysis", source, "C major", "4/4", _tempo(rng, "4/4"),
                            drift=_drift(rng), drums=bool(rng.random() < 0.3), analysis=analysis,
                            programs=ENSEMBLES[rng.integers(len(ENSEMBLES))], seconds=40.0)
        plans.append(Plan(spec, "analysis"))
    used = {work_of(s) for s in ANALYSED_CHORALES.values()} | works
    candidates = [f"bach/{p.name}" for p in sorted((corpus_dir() / "bach").glob("bwv*.mxl"))
                  if work_of(f"bach/{p.name}") not in used]
    for source in [candidates[i] for i in np.linspace(0, len(candidates) - 1, N_CHORALES).round().astype(int)]:
        name = f"chorale_{Path(source).stem.replace('.', '_')}"
        rng = _rng(name)
        spec = ds.PieceSpec(name, "score", source, "C major", "4/4", _tempo(rng, "4/4"), drift=_drift(rng),
                            drums=bool(rng.random() < 0.3), programs=ENSEMBLES[rng.integers(len(ENSEMBLES))],
                            seconds=40.0)
        plans.append(Plan(spec, "chorale"))
    assert not analyses & {p.spec.analysis for p in plans}
    return plans


def classical_plans() -> list[Plan]:
    """Excerpts of the movements in :data:`CLASSICAL`."""
    plans = []
    for source, starts in CLASSICAL:
        for start in starts:
            name = "classical_" + re.sub(r"[^A-Za-z0-9]+", "_", source.rsplit(".", 1)[0]) + f"_{start or 1}"
            rng = _rng(name)
            spec = ds.PieceSpec(name, "score", source, "C major", "4/4", _tempo(rng, "4/4"), drift=_drift(rng),
                                drums=bool(rng.random() < 0.3), programs=ENSEMBLES[rng.integers(len(ENSEMBLES))],
                                seconds=40.0, start_measure=start)
            plans.append(Plan(spec, "classical"))
    return plans


def synthetic_plans() -> list[Plan]:
    """Generated backgrounds; the spec holds tempo, meter, drums, instruments."""
    plans = []
    for i in range(N_SYNTHETIC):
        name = f"synth_{i:03d}"
        rng = _rng(name)
        meter = str(rng.choice(["4/4", "4/4", "3/4", "6/8", "2/4"]))
        mode = "major" if rng.random() < 0.6 else "minor"
        tonic = int(rng.integers(12))
        key = f"{ds.pc_name(tonic, tonic in (1, 3, 5, 8, 10))} {mode}"
        programs = (_pick(rng, COMPS), _pick(rng, BASSES), _pick(rng, PADS), _pick(rng, FIGURES), _pick(rng, LEADS))
        spec = ds.PieceSpec(name, "synthetic", "generated", key, meter, _tempo(rng, meter), drift=_drift(rng),
                            drums=bool(rng.random() < 0.5), programs=programs, seconds=float(rng.uniform(26, 36)),
                            chords_per_bar=int(rng.choice([1, 1, 2])) if meter in ("4/4", "6/8") else 1)
        plans.append(Plan(spec, "synthetic"))
    return plans


def all_plans() -> list[Plan]:
    """Every training piece, in a fixed order."""
    plans = chorale_plans() + classical_plans() + folk_plans() + synthetic_plans()
    check_disjoint(plans)
    return plans


# --------------------------------------------------------------------------------------
# Generated progressions
# --------------------------------------------------------------------------------------

# (degree above the tonic, quality, weight) of the chords a generated progression draws from.
SYNTH_POOL = {
    "major": ((0, "maj", 6), (0, "maj7", 1), (0, "sus4", 1), (2, "min", 3), (2, "min7", 2), (4, "min", 2),
              (4, "min7", 1), (5, "maj", 5), (5, "maj7", 1.5), (7, "maj", 4), (7, "7", 4), (7, "sus4", 1.5),
              (9, "min", 4), (9, "min7", 1.5), (11, "dim", 1), (2, "7", 1), (4, "7", 1), (10, "maj", 1),
              (5, "min", 0.7), (8, "maj", 0.5)),
    "minor": ((0, "min", 6), (0, "min7", 1.5), (2, "dim", 1), (3, "maj", 3), (3, "maj7", 1), (5, "min", 4),
              (5, "min7", 1), (7, "maj", 3), (7, "7", 3), (7, "min", 1.5), (8, "maj", 3), (8, "maj7", 1),
              (10, "maj", 3), (10, "7", 1), (11, "dim", 1), (7, "sus4", 1), (0, "sus4", 0.5)),
}


def synthetic_chords(rng: np.random.Generator, key: str, n_slots: int, slot: float) -> list[ds.ChordSpan]:
    """A random progression in ``key``: one chord per slot, no immediate repeats, ends home.

    A chord's bass is its root, or with some chance its third, fifth or seventh (inversions).
    """
    tonic, mode = ds.key_pc(key)
    flats = ds.key_flats(key)
    pool = SYNTH_POOL[mode]
    weights = np.array([w for _, _, w in pool], dtype=float)
    spans: list[ds.ChordSpan] = []
    prev = -1
    for i in range(n_slots):
        if i == n_slots - 1:
            k = 0
        else:
            p = weights.copy()
            if prev >= 0:
                p[prev] = 0.0
            k = int(rng.choice(len(pool), p=p / p.sum()))
        degree, quality, _ = pool[k]
        prev = k
        root = (tonic + degree) % 12
        pcs = ds.chord_pcs(root, quality)
        bass = root
        if i != n_slots - 1 and rng.random() < 0.2:
            bass = pcs[int(rng.integers(1, len(pcs)))]
        spans.append(ds.ChordSpan(i * slot, (i + 1) * slot, ds.harte_label(root, pcs, flats), root, pcs, bass))
    return spans


def _spread(pcs: Sequence[int], rng: np.random.Generator) -> list[int]:
    """An open voicing: root low, the other tones spread over two octaves above it."""
    base = int(rng.integers(43, 52))
    root = base + (pcs[0] - base) % 12
    out = [root]
    for j, pc in enumerate(pcs[1:]):
        octave = 12 if j % 2 == 0 else 24
        out.append(root + (pc - pcs[0]) % 12 + octave)
    return sorted(out)


def synthetic_material(spec: ds.PieceSpec) -> ds.Material:
    """A generated background: devset bass/comping/pad plus figures, open voicings, a tune."""
    rng = _rng(spec.id + "/material")
    beat_q, bar_q = ds.METERS[spec.meter]
    n_bars = max(4, round(spec.seconds * spec.bpm / 60.0 / (bar_q / beat_q)))
    bars = [ds.Bar(i * bar_q, bar_q, bar_q, spec.meter, 0.0, i + 1) for i in range(n_bars)]
    slot = bar_q / spec.chords_per_bar
    chords = ds.merge_spans(synthetic_chords(rng, spec.key, n_bars * spec.chords_per_bar, slot))
    beats, downbeats = ds.metrical_grid(bars, beat_q)
    q_end = n_bars * bar_q
    comp, bass, pad, figure, lead = range(5)
    roles = {"bass": bass}
    if rng.random() < 0.75:
        roles["comp"] = comp
    if rng.random() < 0.45:
        roles["pad"] = pad
    notes = ds.accompaniment(chords, beats, downbeats, spec.meter, roles)
    textures = {"figure": rng.random() < 0.5, "open": rng.random() < 0.3 or "comp" not in roles,
                "tune": rng.random() < 0.5}
    step = float(rng.choice([0.5, 0.25])) if spec.meter != "6/8" else 0.5
    low = int(rng.integers(55, 70))
    for s in chords:
        if textures["open"]:
            for p in _spread(s.pcs, rng):
                notes.append(ds.NoteEvent(s.q0, s.q1 - s.q0, p, comp, 60))
        if textures["figure"]:
            pitches = ds.voice_chord(s.pcs, low=low)
            q, k = s.q0, 0
            while q < s.q1 - ds.EPS:
                notes.append(ds.NoteEvent(q, step * 0.9, pitches[k % len(pitches)], figure, 55))
                q, k = q + step, k + 1
    if textures["tune"]:
        # Chord tones on the beat, neighbours between: melodies carry non-chord tones.
        q = 0.0
        pitch = 72
        while q < q_end - ds.EPS:
            s = ds.span_at(chords, q)
            on_beat = abs(q / beat_q - round(q / beat_q)) < ds.EPS
            if on_beat:
                pitch = min((p for p in range(64, 82) if p % 12 in s.pcs), key=lambda p: abs(p - pitch))
            else:
                pitch = int(np.clip(pitch + rng.choice([-2, -1, 1, 2]), 62, 84))
            dur = beat_q / 2
            notes.append(ds.NoteEvent(q, dur * 0.95, pitch, lead, 70))
            q += dur
    programs = [(p, False) for p in spec.programs]
    return ds.Material(notes, bars, spec.meter, spec.key, programs, chords, "generated", 0.0, q_end,
                       {"generated": True})


# --------------------------------------------------------------------------------------
# Building, rendering and featurising one piece (cached)
# --------------------------------------------------------------------------------------


def _meter_at(score, start_measure: int | None) -> str | None:
    bars = ds.read_bars(score.parts[0])
    if not bars:
        return None
    bar = next((b for b in bars if start_measure is None or b.number >= start_measure), None)
    return bar.meter if bar is not None else None


def build_plan(plan: Plan) -> tuple[object, dict]:
    """MIDI and truth of a training piece, through the development set's builders.

    The builders check the key they are told against the score's signature and tonic, so
    each candidate key of the signature is tried in turn; a piece none fits, or whose
    meter the generator does not support, raises ValueError and is left out.
    """
    spec = plan.spec
    if plan.group == "synthetic":
        return ds.realise(spec, synthetic_material(spec))
    score = ds.parse_corpus(spec.source, spec.number)
    meter = _meter_at(score, spec.start_measure)
    if meter not in ds.METERS:
        raise ValueError(f"meter {meter} not supported")
    if meter != spec.meter:
        spec = replace(spec, meter=meter, bpm=_tempo(_rng(spec.id), meter))
    major, minor, _ = ds.signature_keys(score)
    candidates = [major, minor] + ([ds.dorian_minor(major)] if spec.kind == "analysis" else [])
    errors = []
    for key in candidates:
        try:
            return ds.build_piece(replace(spec, key=key))
        except (ValueError, KeyError, StopIteration, IndexError) as exc:
            errors.append(f"{key}: {exc}")
    raise ValueError("; ".join(errors))


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
    return h.hexdigest()[:16]


def audio_stamp(plan: Plan) -> str:
    """What a cached WAV was made from: the plan and the generators' code."""
    return _digest(repr(plan), ds.SOURCE_DIGEST, inspect.getsource(synthetic_material),
                   inspect.getsource(synthetic_chords), inspect.getsource(build_plan))


def feature_stamp(plan: Plan) -> str:
    """What cached features were made from: the audio and the front end's code."""
    return _digest(audio_stamp(plan), Path(features.__file__).read_bytes(), inspect.getsource(harmony.beat_chroma),
                   inspect.getsource(beat_labels), inspect.getsource(beat_grids), inspect.getsource(make_piece))


def beat_grids(beats: np.ndarray) -> dict[str, np.ndarray]:
    """The true beats and the grids a beat tracker typically reports instead.

    Training uses the true beats; the decoder settings are also checked on twice the
    tempo, half the tempo and the off-beats, because at run time the tracked beats are.
    """
    mid = (beats[:-1] + beats[1:]) / 2
    return {"true": beats, "double": np.sort(np.concatenate([beats, mid])), "half": beats[::2], "offbeat": mid}


def beat_labels(chords: Sequence[Sequence], bounds: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The truth label covering most of each interval, and the share of it that it covers."""
    labels, shares = [], []
    for a, b in itertools.pairwise(bounds):
        cover: dict[str, float] = {}
        for s, e, lab in chords:
            overlap = min(b, e) - max(a, s)
            if overlap > 0:
                cover[lab] = cover.get(lab, 0.0) + overlap
        if not cover:
            labels.append("N")
            shares.append(1.0)
            continue
        lab = max(cover, key=lambda k: cover[k])
        labels.append(lab)
        shares.append(cover[lab] / max(b - a, 1e-9))
    return labels, np.array(shares)


def render_flac(midi: object, path: Path, duration: float) -> None:
    """Render like the development set does, kept as FLAC: the same samples in half the space."""
    wav = path.with_name(f".{path.stem}.{os.getpid()}.wav")
    try:
        render_midi(midi, wav, duration=duration)
        data, rate = sf.read(str(wav), dtype="int16", always_2d=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.flac")
        sf.write(str(tmp), data, rate, format="FLAC", subtype="PCM_16")
        tmp.replace(path)
    finally:
        wav.unlink(missing_ok=True)


def make_piece(plan: Plan, cache: Path) -> dict | None:
    """Beat features and labels of one piece, from the cache or built now (None: left out)."""
    pid = plan.spec.id
    feat_path, stamp_path = cache / f"{pid}.npz", cache / f"{pid}.stamp"
    fstamp = feature_stamp(plan)
    if feat_path.is_file() and stamp_path.is_file() and stamp_path.read_text().strip() == fstamp:
        with np.load(feat_path, allow_pickle=False) as data:
            if "skipped" in data:
                return None
            return {k: data[k] for k in data.files} | {"id": pid, "group": plan.group}
    audio_path, truth_path = cache / f"{pid}.flac", cache / f"{pid}.json"
    astamp_path = cache / f"{pid}.audio-stamp"
    astamp = audio_stamp(plan)
    cache.mkdir(parents=True, exist_ok=True)
    try:
        if not (audio_path.is_file() and truth_path.is_file() and astamp_path.is_file()
                and astamp_path.read_text().strip() == astamp):
            pm, truth = build_plan(plan)
            render_flac(pm, audio_path, truth["duration"])
            ds.write_json(truth_path, truth)
            astamp_path.write_text(astamp + "\n")
        truth = json.loads(truth_path.read_text())
    except (ValueError, KeyError, StopIteration, IndexError, AttributeError) as exc:
        log.info("%s left out: %s", pid, exc)
        np.savez(feat_path, skipped=np.array(str(exc)[:500]))
        stamp_path.write_text(fstamp + "\n")
        return None
    audio = load_audio(audio_path, sample_rate=features.SAMPLE_RATE, mono=True, min_seconds=0.0, max_seconds=None)
    feats = features.compute_features(audio.samples, features.SAMPLE_RATE)
    data = {"key": np.array(truth["key"]), "chords": np.array(json.dumps(truth["chords"]))}
    for grid, beats in beat_grids(np.asarray(truth["beats"], dtype=float)).items():
        prefix = "" if grid == "true" else f"{grid}_"
        treble, bass, level, bounds = harmony.beat_chroma(feats.pitch, feats.pitch_fps, beats, truth["duration"])
        key_treble, key_bass, _, _ = harmony.beat_chroma(feats.pitch_clean, feats.pitch_fps, beats,
                                                         truth["duration"])
        labels, shares = beat_labels(truth["chords"], bounds)
        data |= {f"{prefix}{k}": v for k, v in (
            ("treble", treble), ("bass", bass), ("level", level), ("bounds", bounds), ("key_treble", key_treble),
            ("key_bass", key_bass), ("labels", np.array(labels)), ("shares", shares))}
    np.savez(feat_path, **data)
    stamp_path.write_text(fstamp + "\n")
    return data | {"id": pid, "group": plan.group}


def _make_one(args: tuple[Plan, str]) -> dict | None:
    plan, cache = args
    logging.getLogger(ds.__name__).setLevel(logging.ERROR)
    return make_piece(plan, Path(cache))


def build_training_set(plans: Sequence[Plan], cache: Path, workers: int,
                       on_piece: Callable[[int], None] | None = None) -> list[dict]:
    """Features of every plan that builds, in plan order (rendered in parallel)."""
    jobs = [(p, str(cache)) for p in plans]
    out: list[dict | None] = []
    if workers <= 1:
        for job in jobs:
            out.append(_make_one(job))
            if on_piece:
                on_piece(len(out))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for piece in pool.map(_make_one, jobs, chunksize=2):
                out.append(piece)
                if on_piece:
                    on_piece(len(out))
    return [p for p in out if p is not None]


# --------------------------------------------------------------------------------------
# Labels, the objective and the fit
# --------------------------------------------------------------------------------------


def class_index(label: str, qualities: Sequence[str]) -> int | None:
    """Class of a truth label in the model's order (N = 0), or None when it has no class."""
    if label == "N":
        return 0
    root_name, _, quality = label.partition(":")
    quality = QUALITY_MAP.get(quality.split("/")[0])
    if quality is None or quality not in qualities:
        return None
    names = ds.SHARP_NAMES if root_name in ds.SHARP_NAMES else ds.FLAT_NAMES
    if root_name not in names:
        return None
    return 1 + qualities.index(quality) * 12 + names.index(root_name)


@dataclass
class Data:
    """Stacked training beats: model inputs, class, weight, and the piece each came from."""

    x: np.ndarray  # (n, 24) normalised treble and bass chroma
    stats: np.ndarray  # (n, N_STATS)
    y: np.ndarray  # (n,)
    w: np.ndarray  # (n,)
    piece: np.ndarray  # (n,) index into the piece list

    def subset(self, keep: np.ndarray) -> Data:
        return Data(self.x[keep], self.stats[keep], self.y[keep], self.w[keep], self.piece[keep])


def stack(pieces: Sequence[dict], qualities: Sequence[str]) -> Data:
    """Model inputs of every labelled beat of ``pieces``."""
    xs, ss, ys, ws, ps = [], [], [], [], []
    for i, p in enumerate(pieces):
        cls = [class_index(str(lab), qualities) for lab in p["labels"]]
        keep = np.array([c is not None for c in cls])
        xs.append(design(p["treble"], p["bass"])[keep])
        ss.append(n_statistics(p["treble"], p["bass"], p["level"])[keep])
        ys.append(np.array([c for c in cls if c is not None], dtype=np.int64))
        ws.append(p["shares"][keep])
        ps.append(np.full(int(keep.sum()), i))
    return Data(np.concatenate(xs), np.concatenate(ss), np.concatenate(ys), np.concatenate(ws), np.concatenate(ps))


def _unpack(theta: np.ndarray, n_q: int, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    w = theta[: n_q * dim].reshape(n_q, dim)
    b = theta[n_q * dim: n_q * (dim + 1)]
    nw = theta[n_q * (dim + 1): n_q * (dim + 1) + N_STATS]
    return w, b, nw, float(theta[-1])


def objective(theta: np.ndarray, data: Data, n_q: int, l2: float) -> tuple[float, np.ndarray]:
    """Weighted mean cross-entropy plus L2 on the weights (not the biases), and its gradient."""
    n, dim = data.x.shape
    w, b, nw, nb = _unpack(theta, n_q, dim)
    z = logits_from(data.x, data.stats, w, b, nw, nb)
    z -= z.max(axis=1, keepdims=True)
    g = np.exp(z)
    norm = g.sum(axis=1)
    g /= norm[:, None]  # the softmax probabilities
    total = data.w.sum()
    loss = -float((data.w * (z[np.arange(n), data.y] - np.log(norm))).sum() / total)
    loss += 0.5 * l2 * float((w ** 2).sum() + (nw ** 2).sum())
    g[np.arange(n), data.y] -= 1.0
    g *= (data.w / total)[:, None]
    grad_w = fold_gradient(data.x.T @ g[:, 1:], n_q) + l2 * w
    grad_b = g[:, 1:].reshape(n, n_q, 12).sum(axis=(0, 2))
    grad_nw = data.stats.T @ g[:, 0] + l2 * nw
    grad = np.concatenate([grad_w.ravel(), grad_b, grad_nw, [g[:, 0].sum()]])
    return loss, grad


def fit(data: Data, qualities: Sequence[str], l2: float) -> ChordModel:
    """Maximum-likelihood weights (L-BFGS) from a fixed start, so the fit is deterministic."""
    n_q, dim = len(qualities), data.x.shape[1]
    theta0 = np.zeros(n_q * (dim + 1) + N_STATS + 1)
    res = scipy.optimize.minimize(objective, theta0, args=(data, n_q, l2), jac=True, method="L-BFGS-B",
                                  options={"maxiter": 1000, "ftol": 1e-7})
    if not res.success:
        log.info("L-BFGS stopped: %s", res.message)
    w, b, nw, nb = _unpack(res.x, n_q, dim)
    return ChordModel(tuple(qualities), w, b, nw, nb)


def accuracy(model: ChordModel, data: Data) -> float:
    """Weighted share of beats whose most probable class is the truth's."""
    z = logits_from(data.x, data.stats, model.weights, model.bias, model.n_weights, model.n_bias)
    return float((data.w * (z.argmax(axis=1) == data.y)).sum() / data.w.sum())


def fold_of(pieces: Sequence[dict], folds: int) -> np.ndarray:
    """Fold per piece: round-robin within each group, so every fold has every kind."""
    out = np.zeros(len(pieces), dtype=np.int64)
    counters: dict[str, int] = {}
    for i, p in enumerate(pieces):
        k = counters.get(p["group"], 0)
        out[i] = k % folds
        counters[p["group"]] = k + 1
    return out


_SHARED: dict = {}


def _share(data: Data, beat_fold: np.ndarray, qualities: Sequence[str]) -> None:
    """Hand the training data to a worker once (not with every job), one BLAS thread each."""
    _SHARED.update(data=data, beat_fold=beat_fold, qualities=tuple(qualities))
    try:  # two processes with two BLAS threads each would fight over two cores
        from threadpoolctl import threadpool_limits

        _SHARED["limits"] = threadpool_limits(1)
    except ImportError:
        pass


def _fit_job(job: tuple[float, int]) -> ChordModel:
    """Fit with L2 ``job[0]`` leaving fold ``job[1]`` out (-1: leave nothing out)."""
    l2, fold = job
    data = _SHARED["data"]
    return fit(data.subset(_SHARED["beat_fold"] != fold), _SHARED["qualities"], l2)


# --------------------------------------------------------------------------------------
# Decoder settings by cross-validation
# --------------------------------------------------------------------------------------

# How much each beat grid counts when choosing the decoder settings: trackers find the
# true beat most of the time and otherwise mostly double, halve or shift it.
GRID_WEIGHTS = {"true": 0.7, "double": 0.1, "half": 0.1, "offbeat": 0.1}


def grid_view(piece: dict, grid: str) -> dict:
    """A piece's arrays for one of the :func:`beat_grids` ("true" is the piece itself)."""
    if grid == "true":
        return piece
    prefix = f"{grid}_"
    return {k[len(prefix):]: v for k, v in piece.items() if k.startswith(prefix)} | {
        "id": piece["id"], "group": piece["group"]}


@dataclass
class Scored:
    """What decoding a piece needs, plus a table of which class counts as right per beat."""

    piece: dict
    widths: np.ndarray
    right: np.ndarray  # (n_beats, n_classes) 1 where majmin counts the class as correct
    valid: np.ndarray  # (n_beats,) beat width where the truth is maj, min or N
    log_probs: np.ndarray  # (n_classes, n_beats) from the model that did not see the piece
    model: ChordModel


def majmin_table(piece: dict, model: ChordModel) -> Scored:
    """mir_eval's majmin comparison of every class against each beat's truth label."""
    import mir_eval

    labels = model.labels
    widths = np.diff(piece["bounds"])
    truth = [str(lab) for lab in piece["labels"]]
    right = np.zeros((len(truth), len(labels)))
    valid = np.zeros(len(truth))
    for ref in set(truth):
        rows = [i for i, t in enumerate(truth) if t == ref]
        cmp = mir_eval.chord.majmin([ref] * len(labels), list(labels))
        if np.all(cmp < 0):
            continue
        right[rows] = np.maximum(cmp, 0.0)[None, :]
        valid[rows] = widths[rows]
    lp = log_probabilities(model, piece["treble"], piece["bass"], piece["level"])
    return Scored(piece, widths, right, valid, lp, model)


def decode_score(scored: Scored, stay: float, key_bonus: float) -> tuple[float, float]:
    """(correct, valid) beat-seconds of :func:`harmony.key_and_chords` on one piece."""
    p = scored.piece
    model = replace(scored.model, sharpness=1.0, stay=stay, key_bonus=key_bonus)
    _, labels = harmony.key_and_chords(p["treble"], p["bass"], p["level"], p["key_treble"], p["key_bass"],
                                       p["bounds"], model, log_probs=scored.log_probs)
    index = {lab: i for i, lab in enumerate(model.labels)}
    cls = np.array([index[lab] for lab in labels])
    return float((scored.right[np.arange(len(cls)), cls] * scored.valid).sum()), float(scored.valid.sum())


def majmin(scored: Sequence[Scored], stay: float, key_bonus: float) -> float:
    """Beat-duration-weighted majmin accuracy of decoding ``scored`` with these settings."""
    right = total = 0.0
    for s in scored:
        r, t = decode_score(s, stay, key_bonus)
        right, total = right + r, total + t
    return right / max(total, 1e-9)


def tune_decoder(by_grid: dict[str, list[Scored]], report: Callable[[str], None]) -> tuple[float, float, dict]:
    """(stay, key bonus) with the best :data:`GRID_WEIGHTS`-weighted majmin, and every result.

    The emission sharpness stays 1: with log-probabilities as emissions only the gap
    between staying and moving matters, which the stay probability alone sets.
    """
    table = {}
    for stay in STAY_GRID:
        for bonus in KEY_BONUS_GRID:
            per = {g: majmin(sc, stay, bonus) for g, sc in by_grid.items()}
            table[(stay, bonus)] = (sum(GRID_WEIGHTS[g] * v for g, v in per.items()), per)
    stay, bonus = max(table, key=lambda k: (round(table[k][0], 5), -k[1], -k[0]))
    for (st, kb), (score, per) in sorted(table.items(), key=lambda kv: -kv[1][0])[:5]:
        report(f"    stay {st:<5g} key bonus {kb:<4g}: weighted majmin {score:.4f} ("
               + ", ".join(f"{g} {v:.3f}" for g, v in per.items()) + ")")
    return stay, bonus, table


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def train(pieces: Sequence[dict], qualities: Sequence[str] = QUALITIES, folds: int = FOLDS, workers: int = 1,
          report: Callable[[str], None] = log.info) -> tuple[ChordModel, dict]:
    """Cross-validate, fit the final model on all pieces, and return it with the figures.

    Folds split by piece, so no piece is in its own validation data. The L2 strength is
    picked by cross-validated beat accuracy, the decoder settings by cross-validated
    majmin after decoding with the fold models (see :func:`tune_decoder`).
    """
    t0 = time.perf_counter()
    data = stack(pieces, qualities)
    fold = fold_of(pieces, folds)
    beat_fold = fold[data.piece]
    jobs = [(l2, f) for l2 in L2_GRID for f in range(folds)]
    with ProcessPoolExecutor(max_workers=max(1, workers), initializer=_share,
                             initargs=(data, beat_fold, tuple(qualities))) as pool:
        models = dict(zip(jobs, pool.map(_fit_job, jobs), strict=True))
        cv = {}
        for l2 in L2_GRID:
            right = sum(accuracy(models[(l2, f)], data.subset(beat_fold == f)) * data.w[beat_fold == f].sum()
                        for f in range(folds))
            cv[l2] = right / data.w.sum()
            report(f"  L2 {l2:g}: cross-validated beat accuracy {cv[l2]:.4f}")
        l2 = max(cv, key=lambda k: (round(cv[k], 4), k))
        final_fit = pool.submit(_fit_job, (l2, -1))  # runs while the decoder is tuned here
        t_fit = time.perf_counter() - t0
        report("  decoder settings (cross-validated majmin by beat grid):")
        by_grid = {g: [majmin_table(grid_view(p, g), models[(l2, int(fold[i]))]) for i, p in enumerate(pieces)]
                   for g in GRID_WEIGHTS}
        stay, bonus, table = tune_decoder(by_grid, report)
        per_group = {g: majmin([s for s in by_grid["true"] if s.piece["group"] == g], stay, bonus)
                     for g in sorted({p["group"] for p in pieces})}
        final = replace(final_fit.result(), sharpness=1.0, stay=stay, key_bonus=bonus)
    figures = {
        "beats": len(data.y), "pieces": len(pieces), "l2": l2, "cv_beat_accuracy": cv[l2],
        "train_beat_accuracy": accuracy(final, data), "cv_majmin": table[(stay, bonus)][1],
        "cv_majmin_by_group": per_group, "decoder": (1.0, stay, bonus),
        "seconds_fit": t_fit, "seconds_tune": time.perf_counter() - t0 - t_fit,
    }
    return final, figures


def main(argv: Sequence[str] | None = None) -> int:
    """Build the training set, train, write the model and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=MODEL_PATH, help=f"model file to write (default {MODEL_PATH})")
    parser.add_argument("--cache", type=Path, default=CACHE_DIR, help="folder for training audio and features")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="parallel processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    plans = all_plans()
    print(f"{len(plans)} training pieces planned (disjoint from the {len(ds.PIECES)} development pieces)",
          flush=True)

    def progress(done: int) -> None:
        if done % 25 == 0 or done == len(plans):
            print(f"  {done}/{len(plans)} pieces ready ({time.perf_counter() - t0:.0f} s)", flush=True)

    pieces = build_training_set(plans, args.cache, args.workers, progress)
    t_data = time.perf_counter() - t0
    print(f"Training set: {len(pieces)} pieces ({len(plans) - len(pieces)} left out: unsupported meter or no "
          f"tonic evidence) in {t_data:.0f} s")
    for g in ("analysis", "chorale", "classical", "folk", "synthetic"):
        mine = [p for p in pieces if p["group"] == g]
        seconds = sum(float(p["bounds"][-1]) for p in mine)
        print(f"  {g:10s} {len(mine):3d} pieces {sum(len(p['labels']) for p in mine):6d} beats "
              f"{seconds / 60:5.1f} min")
    print("Fitting:", flush=True)
    model, fig = train(pieces, workers=args.workers, report=lambda s: print(s, flush=True))
    save_model(model, args.out, l2=fig["l2"], pieces=fig["pieces"], beats=fig["beats"],
               cv_beat_accuracy=round(fig["cv_beat_accuracy"], 4),
               cv_majmin=json.dumps({k: round(v, 4) for k, v in fig["cv_majmin"].items()}))
    sharp, stay, bonus = fig["decoder"]
    print(f"Model: {fig['beats']} labelled beats from {fig['pieces']} pieces, {len(model.labels)} classes, "
          f"L2 {fig['l2']:g}; decoder sharpness {sharp:g}, stay {stay:g}, key bonus {bonus:g}")
    print(f"Beat accuracy (exact class, argmax): training {fig['train_beat_accuracy']:.3f}, "
          f"{FOLDS}-fold cross-validation {fig['cv_beat_accuracy']:.3f}")
    print("Cross-validated majmin after decoding, by beat grid: "
          + ", ".join(f"{g} {v:.3f}" for g, v in fig["cv_majmin"].items()))
    print("  on true beats by kind: " + ", ".join(f"{g} {v:.3f}" for g, v in fig["cv_majmin_by_group"].items()))
    print(f"Times: data {t_data:.0f} s, fits {fig['seconds_fit']:.0f} s, decoder tuning "
          f"{fig['seconds_tune']:.0f} s, total {time.perf_counter() - t0:.0f} s")
    print(f"Wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
