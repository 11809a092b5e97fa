"""The sung pitch curve both engines follow: notes, portamento, growing vibrato, slow drift."""

from __future__ import annotations

import numpy as np

PORTAMENTO = 0.06  # seconds of glide into each note
VIB_RATE = 5.5  # Hz
VIB_START, VIB_FULL = 0.1, 0.25  # vibrato grows from 0 at 100 ms to full depth by 250 ms into the note


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def phrase_curve(t: np.ndarray, notes, *, shift: float = 0.0, vibrato_cents: float = 30.0,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """Target F0 (Hz) at times ``t`` over one phrase's ``notes`` (``start``, ``pitch``), continuous.

    Each note is reached by a :data:`PORTAMENTO` glide centred on its start and holds its
    pitch until the next note starts; a :data:`VIB_RATE` vibrato grows to ``vibrato_cents``
    after :data:`VIB_FULL`; a few cents of slow drift keep it from sounding mechanical.
    ``shift`` moves the curve by semitones. Where the voice is silent is the caller's concern.
    """
    rng = rng or np.random.default_rng(0)
    notes = list(notes)
    midi = np.full(t.shape, float(notes[0].pitch + shift))
    cents = np.zeros(t.shape)
    for k, n in enumerate(notes):
        if k:
            midi += (n.pitch - notes[k - 1].pitch) * smoothstep((t - n.start) / PORTAMENTO + 0.5)
        nxt = notes[k + 1].start if k + 1 < len(notes) else np.inf
        inside = (t >= n.start) & (t < nxt)
        dt = t[inside] - n.start
        depth = vibrato_cents * smoothstep((dt - VIB_START) / (VIB_FULL - VIB_START))
        cents[inside] += depth * np.sin(2 * np.pi * VIB_RATE * dt)
    ph = rng.uniform(0, 2 * np.pi, 2)
    cents += 4.0 * np.sin(2 * np.pi * 0.23 * t + ph[0]) + 2.0 * np.sin(2 * np.pi * 0.61 * t + ph[1])
    return (440.0 * 2.0 ** ((midi + cents / 100.0 - 69.0) / 12.0)).astype(np.float32)
