"""Pictures for the web UI: the analysis of a track and the piano roll of its melody (matplotlib, Agg).

Both functions take the plain dicts the services write (``analysis.json``, ``melody.json``; formats in
shared/DESIGN.md and the README) and write a PNG. They never show a window and are safe to call from
several threads (each figure is its own object; pyplot's global state is not used).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np
from matplotlib.figure import Figure

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
# One colour per chord quality family (the part of a Harte label after the colon).
_CHORD_COLOURS = {"maj": "#8ecae6", "min": "#ffb703", "7": "#90be6d", "maj7": "#b8e0d2", "min7": "#f9c74f",
                  "dim": "#f28482", "sus4": "#cdb4db", "N": "#e9ecef"}
_SECTION_COLOURS = ("#fde2e4", "#e2ece9", "#dfe7fd", "#fff1e6", "#f0efeb", "#e8dff5")
_DPI = 100


def note_name(midi: int) -> str:
    """``60`` -> ``C4``."""
    return f"{NOTE_NAMES[int(midi) % 12]}{int(midi) // 12 - 1}"


def chord_display(label: str) -> str:
    """A Harte label for a chart: ``G:maj`` -> ``G``, ``E:min`` -> ``Em``, ``N`` -> ``N.C.``."""
    if not label or label == "N":
        return "N.C."
    root, _, quality = label.partition(":")
    suffix = {"": "", "maj": "", "min": "m", "7": "7", "maj7": "maj7", "min7": "m7", "dim": "dim",
              "sus4": "sus4"}.get(quality, quality)
    return root + suffix


def _quality(label: str) -> str:
    if not label or label == "N":
        return "N"
    return label.partition(":")[2] or "maj"


def _save(fig: Figure, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, format="png", dpi=_DPI)
    tmp.replace(out)  # readers never see a half-written picture
    return out


def envelope(samples: np.ndarray, points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """The min/max envelope of ``samples`` (mono) in ``points`` bins: (low, high) arrays."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if x.size == 0:
        return np.zeros(1), np.zeros(1)
    points = max(1, min(points, x.size))
    edges = np.linspace(0, x.size, points + 1).astype(int)
    low = np.minimum.reduceat(x, edges[:-1])
    high = np.maximum.reduceat(x, edges[:-1])
    return low, high


def analysis_png(analysis: Mapping[str, Any], out: Path, samples: np.ndarray | None = None,
                 sample_rate: int | None = None, title: str | None = None) -> Path:
    """The track's waveform with its beats and downbeats, the chord chart and the sections.

    ``samples`` (mono) and ``sample_rate`` draw the waveform; without them only the grid is drawn.
    """
    duration = float(analysis.get("duration") or 0.0)
    if samples is not None and sample_rate:
        duration = max(duration, len(samples) / float(sample_rate))
    beats = [float(b) for b in analysis.get("beats") or []]
    downbeats = [float(b) for b in analysis.get("downbeats") or []]
    chords = analysis.get("chords") or []
    sections = analysis.get("sections") or []
    duration = max([duration, *beats, *(float(c[1]) for c in chords), 1.0])

    width = min(16.0, max(9.0, duration / 12.0))
    fig = Figure(figsize=(width, 3.8))
    ax_wave, ax_chord = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05})
    letters = sorted({str(s[2]) for s in sections})
    for start, end, label in sections:
        colour = _SECTION_COLOURS[letters.index(str(label)) % len(_SECTION_COLOURS)]
        ax_wave.axvspan(float(start), float(end), color=colour, alpha=0.6, lw=0, zorder=0)
        ax_wave.text(float(start) + 0.1, 0.97, str(label), va="top", ha="left", fontsize=9, fontweight="bold",
                     color="#555", zorder=5, transform=ax_wave.get_xaxis_transform())
    if samples is not None and sample_rate:
        low, high = envelope(samples)
        t = np.linspace(0.0, len(samples) / float(sample_rate), len(low))
        ax_wave.fill_between(t, low, high, color="#457b9d", lw=0, zorder=2)
        peak = float(max(np.max(np.abs(low)), np.max(np.abs(high)), 1e-6))
        ax_wave.set_ylim(-peak * 1.1, peak * 1.1)
    else:
        ax_wave.set_ylim(-1, 1)
    downset = {round(d, 3) for d in downbeats}
    plain = [b for b in beats if round(b, 3) not in downset]
    if plain:
        ax_wave.vlines(plain, 0, 1, transform=ax_wave.get_xaxis_transform(), colors="#adb5bd", lw=0.8,
                       zorder=3, label="beats")
    if downbeats:
        ax_wave.vlines(downbeats, 0, 1, transform=ax_wave.get_xaxis_transform(), colors="#d62828", lw=1.4,
                       zorder=4, label="downbeats")
    ax_wave.set_yticks([])
    ax_wave.set_xlim(0, duration)
    if plain or downbeats:
        ax_wave.legend(loc="upper right", fontsize=8, framealpha=0.8)
    facts = [str(analysis[k]) for k in ("key", "time_signature") if analysis.get(k)]
    if analysis.get("tempo"):
        facts.append(f"{float(analysis['tempo']):.0f} BPM")
    ax_wave.set_title(" · ".join(x for x in [title or "Analysis", *facts] if x), fontsize=10, loc="center")

    for start, end, label in chords:
        start, end = float(start), float(end)
        ax_chord.broken_barh([(start, end - start)], (0, 1), facecolors=_CHORD_COLOURS.get(_quality(label), "#ddd"),
                             edgecolors="white", lw=1)
        if end - start > duration / 150:
            ax_chord.text((start + end) / 2, 0.5, chord_display(str(label)), ha="center", va="center",
                          fontsize=8 if end - start > duration / 60 else 6, clip_on=True)
    ax_chord.set_ylim(0, 1)
    ax_chord.set_yticks([0.5], ["chords"], fontsize=8)
    ax_chord.set_xlabel("time (s)")
    fig.subplots_adjust(left=0.065, right=0.99, top=0.9, bottom=0.14)
    return _save(fig, out)


def piano_roll_png(melody: Mapping[str, Any], out: Path, title: str | None = None,
                   chords: Sequence[Sequence[Any]] | None = None) -> Path:
    """The melody's notes as a piano roll, each labelled with its syllable; phrases shaded."""
    notes = [n for n in melody.get("notes") or [] if float(n.get("end", 0)) > float(n.get("start", 0))]
    end_t = max([float(n["end"]) for n in notes] + [float(p[1]) for p in melody.get("phrases") or []] + [1.0])
    pitches = [int(n["pitch"]) for n in notes] or [60]
    low, high = min(pitches) - 2, max(pitches) + 2
    width = min(16.0, max(9.0, end_t / 10.0))
    fig = Figure(figsize=(width, 3.8))
    ax = fig.subplots()
    for i, (start, end) in enumerate(melody.get("phrases") or []):
        if i % 2 == 0:
            ax.axvspan(float(start), float(end), color="#f1f3f5", lw=0, zorder=0)
    for pitch in range(low, high + 1):
        if pitch % 12 in (1, 3, 6, 8, 10):
            ax.axhspan(pitch - 0.5, pitch + 0.5, color="#f8f9fa", lw=0, zorder=0)
    for n in notes:
        start, end, pitch = float(n["start"]), float(n["end"]), int(n["pitch"])
        ax.broken_barh([(start, end - start)], (pitch - 0.4, 0.8), facecolors="#e76f51", edgecolors="#9d0208",
                       lw=0.6, zorder=2)
        syllable = str(n.get("syllable") or "")
        if syllable and syllable != "-":
            ax.text(start, pitch + 0.6, syllable, fontsize=7, ha="left", va="bottom", zorder=3, clip_on=True)
    ax.set_ylim(low - 0.5, high + 1.5)
    ax.set_xlim(0, end_t)
    step = 1 if high - low <= 14 else 2
    ticks = [p for p in range(low, high + 1) if p % step == 0]
    ax.set_yticks(ticks, [note_name(p) for p in ticks], fontsize=7)
    ax.set_xlabel("time (s)")
    facts = [str(melody[k]) for k in ("key",) if melody.get(k)]
    facts.append(f"{len(notes)} notes")
    if melody.get("vocal_range"):
        lo, hi = melody["vocal_range"][:2]
        facts.append(f"range {note_name(int(lo))}-{note_name(int(hi))}")
    ax.set_title(" · ".join([title or "Melody", *facts]), fontsize=10, loc="center")
    if chords:
        for start, end, label in chords:
            if float(end) - float(start) > end_t / 60:
                ax.text((float(start) + float(end)) / 2, high + 1.2, chord_display(str(label)), fontsize=7,
                        ha="center", va="center", color="#6c757d", clip_on=True)
    fig.subplots_adjust(left=0.065, right=0.99, top=0.9, bottom=0.14)
    return _save(fig, out)
