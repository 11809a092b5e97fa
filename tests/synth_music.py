"""Synthetic backing tracks for tests, made with numpy alone (fast, no soundfont needed).

A track is a chord progression played as decaying harmonic tones on a beat grid, with a
bass note on each bar and optional kick/hat drums. The grid may speed up or slow down, so
the true beat, downbeat and chord times are known exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SR = 22050
NOTE = {"C": 0, "C#": 1, "D": 2, "Eb": 3, "E": 4, "F": 5, "F#": 6, "G": 7, "Ab": 8, "A": 9, "Bb": 10, "B": 11}
QUALITY = {"maj": (0, 4, 7), "min": (0, 3, 7), "7": (0, 4, 7, 10)}


@dataclass
class Track:
    audio: np.ndarray
    sr: int
    beats: np.ndarray
    downbeats: np.ndarray
    chords: list[tuple[float, float, str]]


def tone(midi: float, dur: float, sr: int = SR, timbre: str = "piano", amp: float = 0.2) -> np.ndarray:
    """A decaying harmonic tone; ``timbre`` changes the harmonic mix and decay."""
    t = np.arange(int(dur * sr)) / sr
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    if timbre == "organ":
        partials, decay = [(1, 1.0), (2, 0.8), (3, 0.6), (4, 0.4)], 0.8
    else:
        partials, decay = [(1, 1.0), (2, 0.5), (3, 0.25), (4, 0.12)], 4.0
    x = sum(a * np.sin(2 * np.pi * f0 * k * t) for k, a in partials if f0 * k < sr / 2)
    env = np.exp(-decay * t) * np.minimum(1.0, t / 0.005)
    env[-int(0.01 * sr) :] *= np.linspace(1, 0, int(0.01 * sr))
    return (amp * x * env).astype(np.float32)


def kick(sr: int = SR) -> np.ndarray:
    t = np.arange(int(0.15 * sr)) / sr
    return (0.6 * np.sin(2 * np.pi * (50 + 60 * np.exp(-30 * t)) * t) * np.exp(-20 * t)).astype(np.float32)


def hat(sr: int = SR, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.05 * sr)) / sr
    noise = np.diff(rng.standard_normal(len(t) + 1))
    return (0.08 * noise * np.exp(-60 * t)).astype(np.float32)


def beat_grid(n_beats: int, bpm: float, end_bpm: float | None = None, start: float = 0.5) -> np.ndarray:
    """Beat times for a tempo moving linearly from ``bpm`` to ``end_bpm`` (n_beats + 1 times)."""
    end_bpm = bpm if end_bpm is None else end_bpm
    times = [start]
    for i in range(n_beats):
        times.append(times[-1] + 60.0 / (bpm + (end_bpm - bpm) * i / max(1, n_beats - 1)))
    return np.array(times)


def _add(buf: np.ndarray, x: np.ndarray, at: float, sr: int) -> None:
    i = round(at * sr)
    n = min(len(x), len(buf) - i)
    if n > 0:
        buf[i : i + n] += x[:n]


def song(
    progression: list[str],
    bpm: float,
    beats_per_bar: int = 4,
    subdivision: int = 2,
    bars: int = 16,
    end_bpm: float | None = None,
    drums: bool = True,
    timbres: list[str] | None = None,
    sr: int = SR,
) -> Track:
    """Render ``progression`` (one chord per bar, e.g. ["C:maj", "G:maj"], cycled) to audio.

    Each beat plays the chord on its subdivisions (accented on the beat), the bass plays
    the root on each bar, and drums (kick on the downbeat, hats on subdivisions) mark the
    meter. ``timbres`` gives one timbre per bar (cycled) for section tests.
    """
    n_beats = bars * beats_per_bar
    grid = beat_grid(n_beats, bpm, end_bpm)
    buf = np.zeros(int((grid[-1] + 1.5) * sr), dtype=np.float32)
    chords = []
    for bar in range(bars):
        label = progression[bar % len(progression)]
        root_name, quality = label.split(":")
        root = NOTE[root_name]
        timbre = (timbres or ["piano"])[bar % len(timbres or ["piano"])]
        b0, b1 = grid[bar * beats_per_bar], grid[(bar + 1) * beats_per_bar]
        chords.append((float(b0), float(b1), label))
        _add(buf, tone(36 + root, b1 - b0, sr, "piano", 0.35), b0, sr)
        for k in range(beats_per_bar):
            s, e = grid[bar * beats_per_bar + k], grid[bar * beats_per_bar + k + 1]
            for j in range(subdivision):
                on = s + (e - s) * j / subdivision
                amp = 0.12 if j == 0 else 0.06
                for iv in QUALITY[quality]:
                    _add(buf, tone(60 + (root + iv) % 12, (e - s) / subdivision, sr, timbre, amp), on, sr)
                if drums:
                    _add(buf, hat(sr, seed=bar * 16 + k * 4 + j), on, sr)
            if drums and k == 0:
                _add(buf, kick(sr), s, sr)
    buf /= max(1e-9, float(np.abs(buf).max())) / 0.8
    return Track(buf, sr, grid[:-1], grid[:-1:beats_per_bar], chords)
