"""``make eval``: does every vocal style sing in tune, understandably and at the right loudness?

Run ``python -m tmik_make_vocal_mix.evaluation.eval_vocal [--styles a,b] [--songs a,b] [--cores 2]
[--out .cache/eval/vocal.json]``. For each style and each test song (a 40 s pop background
from :func:`~tmik_bgm_conditional_melody_generation.evaluation.bench_analysis.bench_track`, and
the development set's ``synth_minor_drive`` piece) it asks the melody service for a melody in
the style's range with :data:`LYRICS`, renders the song with the same lyrics and measures:

* pitch accuracy and voiced fraction of the dry vocal (the render's own QC, ``qc.json``);
* the word error rate of the dry vocal (``vocal.wav`` at 16 kHz, transcribed offline by
  :mod:`.intelligibility`) against the words actually sung (the lyrics, cycled or cut to the
  syllables the melody carries); the WER against the whole lyric text is in the JSON too;
* integrated loudness, its distance from the target, true peak and clipped samples of the mix.

A row passes with pitch >= 0.95, WER <= 0.25, loudness within 0.5 LU of the target, true
peak <= -1 dBTP and no clipped samples. Exit status 0 either way (a measurement, not a test).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import soundfile as sf

from tmik_bgm_conditional_melody_generation.evaluation.bench_analysis import bench_track, limit_cores
from tmik_bgm_conditional_melody_generation.evaluation.devset import REPO_ROOT, ensure_piece, spec_by_id
from tmik_common.lyrics import MELISMA, Lyrics, parse_lyrics

from ..intelligibility import load_recogniser, sung_words, transcribe, word_error_rate
from ..styles import STYLES

TARGET_LUFS = -14.0
LIMITS = {"pitch_accuracy": 0.95, "wer": 0.25, "lufs_error": 0.5, "true_peak_dbtp": -1.0, "clipped_samples": 0}
SEED = 1
LYRICS = """[Verse]
I see the sun come up today
We walk along the road again
The sky is blue and you are here
I hold your hand and sing with you

[Chorus]
Come on home my love tonight
The light is on the door is open
We will dance until the morning
And every day will be a good day
"""
SONGS = ("pop_40s", "synth_minor_drive")


def song_path(name: str) -> Path:
    """The background of a test song: ``pop_40s`` (the bench generator, 40 s) or a dev-set piece id."""
    if name == "pop_40s":
        return bench_track(seconds=40.0)
    return ensure_piece(spec_by_id(name)).wav


def judge(row: dict) -> list[str]:
    """The limits a row misses (empty: it passes)."""
    failed = []
    if not row["pitch_accuracy"] >= LIMITS["pitch_accuracy"]:
        failed.append("pitch")
    if not row["wer"] <= LIMITS["wer"]:
        failed.append("wer")
    if not row["lufs_error"] <= LIMITS["lufs_error"]:
        failed.append("loudness")
    if not row["true_peak_dbtp"] <= LIMITS["true_peak_dbtp"]:
        failed.append("peak")
    if row["clipped_samples"] > LIMITS["clipped_samples"]:
        failed.append("clip")
    return failed


def evaluate_one(style: str, song: str, background: Path, lyrics: Lyrics, work: Path, recogniser) -> dict:
    """Melody (style range, lyrics) -> render -> QC and intelligibility of one style on one song."""
    from tmik_bgm_conditional_melody_generation.analysis import analyze_file
    from tmik_bgm_conditional_melody_generation.evaluation.eval_melody import fitting_lines
    from tmik_bgm_conditional_melody_generation.generate import run_generation

    from ..render import run_render
    from ..score import load_score

    s = STYLES[style]
    out = work / f"{song}_{style}"
    # A user whose lyrics do not fit the track is told so and sings fewer lines; so does the evaluation.
    lyrics = Lyrics(lines=lyrics.lines[:fitting_lines(analyze_file(background), lyrics, seed=SEED)])
    t0 = time.perf_counter()
    run_generation(background, out / "melody", lyrics=lyrics, vocal_range=(s.low, s.high), seed=SEED)
    t1 = time.perf_counter()
    result = run_render(background, out / "melody" / "melody.json", out / "render", style=style, seed=SEED,
                        target_lufs=TARGET_LUFS)  # as the job manager does: the lyrics travel in melody.json
    t2 = time.perf_counter()
    notes = load_score(out / "melody" / "melody.json").notes
    n_sung = sum(1 for n in notes if n.syllable and n.syllable != MELISMA)
    reference = sung_words(lyrics, n_sung)
    vocal, sr = sf.read(str(result.outputs["vocal"]), dtype="float32", always_2d=False)
    hypothesis = transcribe(vocal, sr, recogniser)
    t3 = time.perf_counter()
    qc = result.qc
    lufs = float(qc["integrated_lufs"])
    row = {
        "style": style, "song": song,
        "pitch_accuracy": float(qc["pitch_accuracy"]), "voiced_fraction": float(qc["voiced_fraction"]),
        "wer": word_error_rate(reference, hypothesis),
        "wer_full_lyrics": word_error_rate(" ".join(line.text for line in lyrics.lines), hypothesis),
        "integrated_lufs": lufs, "lufs_error": abs(lufs - TARGET_LUFS),
        "true_peak_dbtp": float(qc["true_peak_dbtp"]), "clipped_samples": int(qc["clipped_samples"]),
        "notes": len(notes), "sung_syllables": n_sung, "reference": reference, "transcript": hypothesis,
        "warnings": list(result.warnings),
        "seconds": {"melody": t1 - t0, "render": t2 - t1, "transcribe": t3 - t2,
                    **{k: round(v, 3) for k, v in result.seconds.items()}},
    }
    row["failed"] = judge(row)
    row["pass"] = not row["failed"]
    return row


def print_table(rows: list[dict]) -> None:
    head = (f"  {'song':18s} {'pitch':>6s} {'voiced':>6s} {'WER':>5s} {'LUFS':>6s} {'|dL|':>5s} {'TP dB':>6s} "
            f"{'clip':>5s}  verdict")
    for style in dict.fromkeys(r["style"] for r in rows):
        print(f"{style} (range {STYLES[style].low}-{STYLES[style].high}, engine {STYLES[style].engine})")
        print(head)
        for r in (r for r in rows if r["style"] == style):
            verdict = "PASS" if r["pass"] else "FAIL (" + ", ".join(r["failed"]) + ")"
            print(f"  {r['song']:18s} {r['pitch_accuracy']:6.3f} {r['voiced_fraction']:6.3f} {r['wer']:5.2f} "
                  f"{r['integrated_lufs']:6.2f} {r['lufs_error']:5.2f} {r['true_peak_dbtp']:6.2f} "
                  f"{r['clipped_samples']:5d}  {verdict}")
        print()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--styles", default=",".join(STYLES), help="comma-separated styles (default: all)")
    parser.add_argument("--songs", default=",".join(SONGS), help="comma-separated test songs (default: %(default)s)")
    parser.add_argument("--cores", type=int, default=2, help="pin to this many cores (0: do not pin)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".cache" / "eval" / "vocal.json")
    parser.add_argument("--show-transcripts", action="store_true")
    args = parser.parse_args(argv)
    pinned = limit_cores(args.cores)
    import torch

    torch.set_num_threads(max(1, args.cores))
    styles = [s for s in args.styles.split(",") if s]
    songs = [s for s in args.songs.split(",") if s]
    unknown = [s for s in styles if s not in STYLES]
    if unknown:
        parser.error(f"unknown style(s) {', '.join(unknown)}; choose from {', '.join(STYLES)}")
    lyrics = parse_lyrics(LYRICS)
    recogniser = load_recogniser(max(1, args.cores) if args.cores > 0 else 0)
    backgrounds = {song: song_path(song) for song in songs}
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="eval-vocal-") as tmp:
        for style in styles:
            for song in songs:
                rows.append(evaluate_one(style, song, backgrounds[song], lyrics, Path(tmp), recogniser))
    print(f"vocal evaluation: {len(styles)} style(s) x {len(songs)} song(s), {len(lyrics.lines)}-line English "
          f"lyrics, target {TARGET_LUFS:.0f} LUFS; {pinned}; {time.perf_counter() - t0:.0f} s")
    print(f"limits: pitch >= {LIMITS['pitch_accuracy']}, WER <= {LIMITS['wer']}, |LUFS - target| <= "
          f"{LIMITS['lufs_error']} LU, true peak <= {LIMITS['true_peak_dbtp']} dBTP, no clipped samples\n")
    print_table(rows)
    if args.show_transcripts:
        for r in rows:
            print(f"{r['style']}/{r['song']}: ref: {r['reference']}\n  heard: {r['transcript']}")
    passed = sum(r["pass"] for r in rows)
    print(f"{passed}/{len(rows)} passed")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"target_lufs": TARGET_LUFS, "limits": LIMITS, "lyrics": LYRICS, "seed": SEED,
                                    "songs": {k: str(v) for k, v in backgrounds.items()}, "rows": rows},
                                   indent=1, default=float) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
