"""The melody model's training data: tunes from the music21 corpus as plain grids.

Run ``python -m tmik_bgm_conditional_melody_generation.training.corpus [--out PATH]``
(``make train-melody`` runs it first). It reads, in parallel and deterministically:

* ``essenFolksong`` (Essen folk song collection), ``oneills1850`` (O'Neill's Music of
  Ireland) and ``ryansMammoth`` (Ryan's Mammoth Collection): one-part tunes. They carry
  no chord symbols, so the chords come from the development set's melody harmoniser
  (:func:`..evaluation.devset.harmonise_melody`: the diatonic chord that covers most of
  each bar or half bar). Chord symbols are used where a tune has them.
* ``bach`` chorales: the soprano is the melody, the chords are labelled per beat from all
  four voices (:func:`..evaluation.devset.derive_chords`), as a harmonised song would be.

Works that the development set uses are left out (:func:`..evaluation.train_chords.dev_exclusions`),
so ``make eval`` measures melodies on backgrounds the model never saw. Every tune is put
on a 16th-note grid (:data:`..getscore.COLS_PER_QUARTER`); tunes in meters the GETScore
does not model, with meter changes, or that do not quantise to the grid are skipped and
counted. Each tune is assigned to the training or the validation split by a hash of its
id (5 % validation), so adding tunes never moves others between splits.

Output: one JSON line per tune (gzip), the fields of :class:`..getscore.Song`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import time
import warnings
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

from ..evaluation import devset as ds
from ..evaluation.train_chords import QUALITY_MAP, corpus_dir, dev_exclusions, work_of
from ..getscore import COLS_PER_QUARTER, METER_GRID, QUALITIES, Song

log = logging.getLogger(__name__)

DEFAULT_OUT = ds.REPO_ROOT / ".cache" / "melody_train" / "tunes.jsonl.gz"
TUNE_COLLECTIONS = ("essenFolksong", "oneills1850", "ryansMammoth")
VALIDATION_PERCENT = 5
METER_ALIASES = {"2/2": "4/4", "C": "4/4", "C|": "4/4"}
MAX_PITCH, MIN_PITCH = 96, 36


def split_of(tune_id: str) -> str:
    """``"valid"`` for about 5 % of tune ids (stable hash), else ``"train"``."""
    return "valid" if zlib.crc32(tune_id.encode()) % 100 < VALIDATION_PERCENT else "train"


def _quality(label: str) -> str | None:
    if label == "N":
        return None
    q = label.split(":", 1)[1] if ":" in label else "maj"
    q = q.split("/", 1)[0]
    q = QUALITY_MAP.get(q)
    return q if q in QUALITIES else None


def _grid(q: float) -> int | None:
    """Quarter position as a grid column, or None when it is off the 16th grid."""
    c = q * COLS_PER_QUARTER
    r = round(c)
    return r if abs(c - r) < 0.02 else None


def _song(tune_id: str, source: str, meter: str, tonic: int, mode: str, bars, melody, chords,
          stats: Counter) -> Song | None:
    """A Song from bars, melody NoteEvents and ChordSpans (quarters), or None (counted)."""
    if meter not in METER_GRID:
        stats["meter"] += 1
        return None
    start = bars[0].q
    end = bars[-1].q + bars[-1].dur
    n_cols = _grid(end - start)
    bar_cols = METER_GRID[meter][1]
    first = next((b for b in bars if b.dur >= b.bar_q - ds.EPS), None)
    if n_cols is None or first is None:
        stats["grid"] += 1
        return None
    first_downbeat = _grid(first.q - start)
    if first_downbeat is None or first_downbeat >= bar_cols:
        stats["grid"] += 1
        return None
    notes: dict[int, tuple[int, int]] = {}
    off = 0
    for n in sorted(melody, key=lambda n: (n.q, -n.pitch)):
        c = _grid(n.q - start)
        d = _grid(n.dur)
        if c is None or d is None:
            off += 1
            c = round((n.q - start) * COLS_PER_QUARTER)
            d = max(1, round(n.dur * COLS_PER_QUARTER))
        if c in notes or d <= 0 or c >= n_cols:
            continue  # the top note of a chord (the first at this column) is the melody
        notes[c] = (min(d, n_cols - c), int(n.pitch))
    if not notes or off > 0.05 * len(melody):
        stats["grid"] += 1
        return None
    pitches = [p for _, p in notes.values()]
    if min(pitches) < MIN_PITCH or max(pitches) > MAX_PITCH:
        stats["range"] += 1
        return None
    cols = sorted(notes)
    note_list = []
    for i, c in enumerate(cols):
        d, p = notes[c]
        if i + 1 < len(cols):
            d = min(d, cols[i + 1] - c)  # monophonic
        note_list.append((c, d, p))
    chord_list = []
    for s in chords:
        c0 = max(0, round((s.q0 - start) * COLS_PER_QUARTER))
        c1 = min(n_cols, round((s.q1 - start) * COLS_PER_QUARTER))
        quality = _quality(s.label)
        if c1 > c0 and quality is not None and s.root is not None:
            chord_list.append((c0, c1, int(s.root), quality))
    if not chord_list:
        stats["chords"] += 1
        return None
    return Song(tune_id, meter, n_cols, first_downbeat, tonic, mode, note_list, chord_list,
                source=source, split=split_of(tune_id))


def _key_of(score, last_pitch: int) -> tuple[int, str]:
    """Tonic and mode from the key signature, the final note deciding major or minor."""
    sig_major, sig_minor, _ = ds.signature_keys(score)
    minor_pc, _ = ds.key_pc(sig_minor)
    if last_pitch % 12 == minor_pc:
        return minor_pc, "minor"
    return ds.key_pc(sig_major)[0], "major"


def read_tunes(source: str) -> tuple[list[dict], dict]:
    """All usable tunes of one ABC file as Song dicts, and skip counts."""
    warnings.filterwarnings("ignore")
    m21 = ds._m21()
    stats: Counter = Counter()
    try:
        work = m21.converter.parse(corpus_dir() / source)
    except Exception:  # noqa: BLE001 - a corpus file music21 cannot read is skipped, counted
        return [], {"unreadable_file": 1}
    scores = list(work.scores) if isinstance(work, m21.stream.Opus) else [work]
    out = []
    for index, score in enumerate(scores):
        tune_id = f"{source}#{index}"
        try:
            part = score.parts[0]
            bars, notes, symbols = ds.read_tune(part, flats=False)
            meters = {METER_ALIASES.get(b.meter, b.meter) for b in bars}
            if not bars or not notes or len(meters) != 1:
                stats["meter"] += 1
                continue
            meter = meters.pop()
            bars = [replace(b, meter=meter) for b in bars]
            tonic, mode = _key_of(score, notes[-1].pitch)
            key = f"{ds.SHARP_NAMES[tonic]} {mode}"
            if symbols:
                chords = symbols
            else:
                beat_q = METER_GRID[meter][0] / COLS_PER_QUARTER if meter in METER_GRID else 1.0
                beats, downbeats = ds.metrical_grid(bars, beat_q)
                end = bars[-1].q + bars[-1].dur
                chords = ds.harmonise_melody(notes, bars, beats, downbeats, key, [end])
            song = _song(tune_id, source, meter, tonic, mode, bars, notes, chords, stats)
        except Exception:  # noqa: BLE001 - one odd tune must not stop the corpus
            stats["error"] += 1
            continue
        if song is not None:
            out.append(song.to_dict())
    return out, dict(stats)


def read_chorale(source: str) -> tuple[list[dict], dict]:
    """One Bach chorale: soprano as the melody, per-beat chords from all voices."""
    warnings.filterwarnings("ignore")
    stats: Counter = Counter()
    try:
        score = ds.parse_corpus(source)
        bars = ds.score_bars(score)
        meters = {METER_ALIASES.get(b.meter, b.meter) for b in bars}
        if len(meters) != 1 or len(score.parts) < 4:
            return [], {"meter": 1}
        meter = meters.pop()
        bars = [replace(b, meter=meter) for b in bars]
        notes = ds.notes_of_bars(score, bars, 0, len(bars))
        soprano = [n for n in notes if n.part == 0]
        if not soprano:
            return [], {"empty": 1}
        beat_q = METER_GRID[meter][0] / COLS_PER_QUARTER if meter in METER_GRID else 1.0
        beats, _ = ds.metrical_grid(bars, beat_q)
        end = bars[-1].q + bars[-1].dur
        chords = ds.derive_chords(notes, sorted(set(beats) | {end}), flats=False)
        bass = min((n for n in notes if n.q + n.dur > end - 0.5), key=lambda n: n.pitch)
        tonic, mode = _key_of(score, bass.pitch)
        song = _song(f"{source}#0", source, meter, tonic, mode, bars, soprano, chords, stats)
    except Exception:  # noqa: BLE001
        return [], {"error": 1}
    return ([song.to_dict()] if song else []), dict(stats)


def sources() -> list[tuple[str, str]]:
    """(kind, corpus source) of every file to read, dev-set works excluded, sorted."""
    works, _ = dev_exclusions()
    root = corpus_dir()
    found = []
    for folder in TUNE_COLLECTIONS:
        for path in sorted((root / folder).glob("*.abc")):
            source = f"{folder}/{path.name}"
            if work_of(source) not in works:
                found.append(("tunes", source))
    for path in sorted((root / "bach").glob("bwv*.mxl")):
        source = f"bach/{path.name}"
        if work_of(source) not in works:
            found.append(("chorale", source))
    return found


def _read(item: tuple[str, str]) -> tuple[list[dict], dict]:
    kind, source = item
    return read_tunes(source) if kind == "tunes" else read_chorale(source)


def build(out: Path = DEFAULT_OUT, workers: int = 2) -> dict:
    """Read the corpus and write the tune file; returns counts."""
    t0 = time.time()
    items = sources()
    songs: list[dict] = []
    stats: Counter = Counter()
    # Big files first so the pool stays busy to the end.
    order = sorted(items, key=lambda it: -(corpus_dir() / it[1]).stat().st_size)
    with ProcessPoolExecutor(workers) as pool:
        results = dict(zip(order, pool.map(_read, order, chunksize=1), strict=True))
    for item in items:
        found, skipped = results[item]
        songs.extend(found)
        stats.update(skipped)
    songs.sort(key=lambda s: s["id"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        for s in songs:
            f.write(json.dumps(s, separators=(",", ":")) + "\n")
    tmp.replace(out)
    counts = {"tunes": len(songs), "valid": sum(s["split"] == "valid" for s in songs),
              "columns": sum(s["n_cols"] for s in songs), "skipped": dict(stats),
              "seconds": round(time.time() - t0, 1)}
    log.info("corpus: %s", counts)
    return counts


def load(path: Path = DEFAULT_OUT) -> list[Song]:
    """The tunes written by :func:`build`."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [Song.from_dict(json.loads(line)) for line in f]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    print(json.dumps(build(args.out, args.workers), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
