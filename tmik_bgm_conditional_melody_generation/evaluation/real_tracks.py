"""Sanity check of the analysis on real recordings without ground truth.

Runs the analysis on every audio file of a folder and prints, per track, the tempo, the
time signature, the top tempo candidates and the onset rate of the hi-hats (the band above
5 kHz), and flags tracks whose tempo lies outside a singable range or whose hats suggest an
octave error (hats at four or more onsets per beat: perhaps counted at half the tempo; hats
slower than the beat: perhaps counted at double). Nothing is fetched: point it at a folder,
e.g. the game soundtracks Debian ships (``apt-get download freedroidrpg-data``, then
``dpkg-deb -x``; see the shared analysis notes).

    python -m tmik_bgm_conditional_melody_generation.evaluation.real_tracks FOLDER [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.signal

from tmik_common.audio import Audio, load_audio

from ..analysis import analyze
from ..analysis.beats import drum_bands
from ..analysis.features import SAMPLE_RATE, compute_features

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aiff")
# The range of tempi a listener taps on produced music with drums (BPM).
PLAUSIBLE_BPM = (70.0, 180.0)
# Hat onsets per beat beyond which the beat may be counted at half the tempo, and below
# which at double.
HATS_PER_BEAT_HIGH = 3.5
HATS_PER_BEAT_LOW = 0.75
# A hat onset: a peak of the band's activation above this share of its 95th percentile,
# at least this far from the previous one (seconds).
HAT_PEAK_SHARE = 0.3
HAT_MIN_GAP_S = 0.06


def hat_rate(audio: Audio) -> float:
    """Onsets per minute in the band above 5 kHz (the hi-hats, ride and shakers)."""
    y = audio.samples if audio.samples.ndim == 1 else audio.samples.mean(axis=0)
    feats = compute_features(np.ascontiguousarray(y, dtype=np.float32), SAMPLE_RATE)
    high = drum_bands(feats)[2]
    if not high.size or np.percentile(high, 95) <= 0:
        return 0.0
    peaks, _ = scipy.signal.find_peaks(high, height=HAT_PEAK_SHARE * np.percentile(high, 95),
                                       distance=max(1, round(HAT_MIN_GAP_S * feats.onset_fps)))
    return 60.0 * len(peaks) / max(feats.duration, 1e-9)


def check_track(path: Path) -> dict:
    """Analyse one file: tempo, meter, top candidates, hat rate and any flags."""
    audio = load_audio(path, sample_rate=SAMPLE_RATE, mono=True)
    result = analyze(audio)
    hats = hat_rate(audio)
    per_beat = hats / result.tempo if result.tempo > 0 else 0.0
    flags = []
    if not PLAUSIBLE_BPM[0] <= result.tempo <= PLAUSIBLE_BPM[1]:
        flags.append(f"tempo outside {PLAUSIBLE_BPM[0]:.0f}-{PLAUSIBLE_BPM[1]:.0f}")
    if per_beat >= HATS_PER_BEAT_HIGH:
        flags.append("hats >= 4 per beat: half tempo?")
    elif 0 < per_beat <= HATS_PER_BEAT_LOW:
        flags.append("hats slower than the beat: double tempo?")
    return {
        "track": path.name,
        "seconds": round(result.duration, 1),
        "bpm": round(result.tempo, 1),
        "meter": result.time_signature,
        "candidates": [(round(c["bpm"], 1), round(c["score"], 2), c["level"]) for c in result.tempo_candidates[:3]],
        "hats_per_min": round(hats, 1),
        "hats_per_beat": round(per_beat, 2),
        "flags": flags,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="folder of audio files (searched recursively)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    files = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        print(f"no audio files under {args.folder}")
        return 1
    rows = []
    print(f"{'track':32s} {'s':>6s} {'BPM':>6s} meter  hats/min hats/beat  candidates (bpm, score, level)  flags")
    for path in files:
        try:
            row = check_track(path)
        except (OSError, ValueError, RuntimeError) as err:  # one bad file must not stop the check
            print(f"{path.name:32s} failed: {err}")
            continue
        rows.append(row)
        cands = ", ".join(f"{b:.1f} {s:.2f} {lev}" for b, s, lev in row["candidates"])
        print(f"{row['track'][:32]:32s} {row['seconds']:6.1f} {row['bpm']:6.1f} {row['meter']:5s} "
              f"{row['hats_per_min']:8.1f} {row['hats_per_beat']:9.2f}  {cands}  {'; '.join(row['flags'])}")
    flagged = sum(bool(r["flags"]) for r in rows)
    print(f"\n{len(rows)} tracks, {flagged} flagged")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
