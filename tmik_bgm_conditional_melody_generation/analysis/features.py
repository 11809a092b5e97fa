"""Frame-level features of a mono signal: onset envelopes, pitch salience, timbre.

Everything downstream (beats, meter, chords, key, sections) is computed from these
arrays, so each signal transform runs once per track.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import librosa
import numpy as np
import scipy.ndimage

SAMPLE_RATE = 22050
ONSET_HOP = 256  # 86.1 frames per second: 11.6 ms steps for beat placement
PITCH_HOP = 512
N_FFT = 2048
PITCH_FMIN_MIDI = 24  # C1
PITCH_OCTAVES = 7
BINS_PER_SEMITONE = 3
BASS_MAX_MIDI = 52  # E3: the range where bass lines sit


@dataclass
class Features:
    """Frame features of one track.

    onset : (n,) full-band spectral flux of decibels at ``onset_fps`` frames per second.
    accent : (n,) full-band flux of a milder compression (keeps loud attacks louder).
    onset_low : (n,) accent flux below ~200 Hz (kick drum, bass notes).
    onset_mid : (n,) accent flux 200 Hz to 5 kHz (snare, claps, comping chords).
    onset_high : (n,) accent flux above 5 kHz (hi-hats, cymbals, the snare's rattle).
    note_onset : (n,) semitone-resolution flux: new notes even without an energy burst.
    pitch : (84, m) semitone salience C1..B7 (log-compressed CQT magnitude) at ``pitch_fps``.
    pitch_clean : like ``pitch`` with the notes' upper harmonics subtracted (for the key).
    mfcc : (13, m) timbre, same frames as ``pitch``.
    """

    onset: np.ndarray
    accent: np.ndarray
    onset_low: np.ndarray
    onset_mid: np.ndarray
    onset_high: np.ndarray
    note_onset: np.ndarray
    onset_fps: float
    pitch: np.ndarray
    pitch_clean: np.ndarray
    mfcc: np.ndarray
    pitch_fps: float
    duration: float

    def onset_times(self) -> np.ndarray:
        return np.arange(len(self.onset)) / self.onset_fps

    def pitch_times(self) -> np.ndarray:
        return np.arange(self.pitch.shape[1]) / self.pitch_fps


def _flux(log_mel: np.ndarray) -> np.ndarray:
    """Positive spectral flux against the frequency-max-filtered frame two steps back.

    The max filter (SuperFlux) stops vibrato and slow glides registering as onsets,
    which matters for sustained pads and strings.
    """
    ref = scipy.ndimage.maximum_filter1d(log_mel, size=3, axis=0)
    flux = np.maximum(0.0, log_mel[:, 2:] - ref[:, :-2])
    return np.pad(flux, ((0, 0), (2, 0)))


def mel_spectrogram(
    y: np.ndarray, sr: int = SAMPLE_RATE, tick: Callable[[float], None] | None = None, chunk_s: float = 20.0
) -> np.ndarray:
    """96-band mel power spectrogram at ``ONSET_HOP``, computed in chunks.

    Chunking keeps memory flat on long tracks and calls ``tick(fraction)`` between
    chunks, so a caller can report progress or cancel within a fraction of a second.
    """
    pad = N_FFT // 2
    padded = np.pad(y, pad, mode="constant")
    n_frames = 1 + len(y) // ONSET_HOP
    per_chunk = max(1, int(chunk_s * sr / ONSET_HOP))
    fb = librosa.filters.mel(sr=sr, n_fft=N_FFT, n_mels=96, fmin=27.5, fmax=sr / 2)
    out = np.empty((96, n_frames), dtype=np.float32)
    for start in range(0, n_frames, per_chunk):
        stop = min(n_frames, start + per_chunk)
        seg = padded[start * ONSET_HOP : (stop - 1) * ONSET_HOP + N_FFT]
        seg = np.pad(seg, (0, max(0, (stop - 1 - start) * ONSET_HOP + N_FFT - len(seg))))
        spec = np.abs(librosa.stft(seg, n_fft=N_FFT, hop_length=ONSET_HOP, center=False)) ** 2
        out[:, start:stop] = fb @ spec[:, : stop - start]
        if tick is not None:
            tick(stop / n_frames)
    return out


# Band edges (Hz) of the drum-band accents: kick and bass, snare and claps, hats and cymbals.
LOW_BAND_HZ = 200.0
HIGH_BAND_HZ = 5000.0


def onset_envelopes(mel: np.ndarray, sr: int = SAMPLE_RATE) -> tuple[np.ndarray, ...]:
    """Onset envelopes from a :func:`mel_spectrogram`: (onset, accent, and the low-, mid-
    and high-band accents).

    ``onset`` is flux of decibels: soft attacks (off-beat chords, hi-hats) register next
    to loud ones, which is what placing beats needs. ``accent`` is flux of a milder
    compression that keeps loud attacks louder, which is what telling the beat from its
    subdivision, and the downbeat from other beats, needs. The three bands separate the
    drum kit's parts (kick, snare, hats), whose pattern says which level is the beat and
    where the bar begins.
    """
    onset = _flux(librosa.power_to_db(mel, ref=np.max, top_db=80.0)).mean(axis=0)
    accent_flux = _flux(np.log1p(1000.0 * mel / (mel.max() + 1e-12)))
    freqs = librosa.mel_frequencies(n_mels=mel.shape[0], fmin=27.5, fmax=sr / 2)
    low, high = freqs < LOW_BAND_HZ, freqs >= HIGH_BAND_HZ
    return (
        onset.astype(np.float32),
        accent_flux.mean(axis=0).astype(np.float32),
        accent_flux[low].mean(axis=0).astype(np.float32),
        accent_flux[~low & ~high].mean(axis=0).astype(np.float32),
        accent_flux[high].mean(axis=0).astype(np.float32),
    )


def _cqt_magnitude(
    y: np.ndarray, sr: int, tick: Callable[[float], None] | None = None, chunk_s: float = 120.0
) -> np.ndarray:
    """|CQT| (C1 upwards, 3 bins per semitone) at ``PITCH_HOP``, computed in chunks.

    Each chunk is read with 2 s of context on both sides, longer than the lowest filter,
    so the frames kept match a single whole-track transform; ``tick`` follows each chunk.
    """
    n_frames = 1 + len(y) // PITCH_HOP
    context = int(np.ceil(2.0 * sr / PITCH_HOP)) * PITCH_HOP
    # Equal chunks of at most chunk_s: no sliver of a chunk at the end.
    n_chunks = int(np.ceil(n_frames / max(1, int(chunk_s * sr / PITCH_HOP))))
    per_chunk = int(np.ceil(n_frames / n_chunks))
    parts = []
    for first in range(0, n_frames, per_chunk):
        last = min(n_frames, first + per_chunk)
        start = max(0, first * PITCH_HOP - context)
        stop = min(len(y), (last - 1) * PITCH_HOP + context + 1)
        cqt = librosa.cqt(
            y[start:stop],
            sr=sr,
            hop_length=PITCH_HOP,
            fmin=librosa.midi_to_hz(PITCH_FMIN_MIDI),
            n_bins=12 * PITCH_OCTAVES * BINS_PER_SEMITONE,
            bins_per_octave=12 * BINS_PER_SEMITONE,
        )
        offset = (first * PITCH_HOP - start) // PITCH_HOP
        parts.append(np.abs(cqt[:, offset : offset + last - first]))
        if tick is not None:
            tick(last / n_frames)
    return np.concatenate(parts, axis=1)


def pitch_salience(y: np.ndarray, sr: int = SAMPLE_RATE, tick: Callable[[float], None] | None = None) -> np.ndarray:
    """Linear semitone salience (84 semitones from C1), tuning-corrected."""
    cqt = _cqt_magnitude(y, sr, tick)
    # Estimate the tuning offset (in thirds of a semitone) from where the energy sits.
    per_offset = cqt.reshape(12 * PITCH_OCTAVES, BINS_PER_SEMITONE, -1).sum(axis=(0, 2))
    shift = int(np.argmax(per_offset)) - BINS_PER_SEMITONE // 2
    if shift:
        cqt = np.roll(cqt, -shift, axis=0)
    semis = cqt.reshape(12 * PITCH_OCTAVES, BINS_PER_SEMITONE, -1)
    # Keep the centre bin plus half of its neighbours: sharp enough to separate semitones.
    weights = np.array([0.5, 1.0, 0.5])[:, None]
    return (semis * weights).sum(axis=1)


def pitch_flux(salience: np.ndarray, n_frames: int) -> np.ndarray:
    """Positive flux of log semitone salience, on the onset frame grid (``n_frames``).

    Legato strings and organ change pitch without a burst of energy; a mel band is wider
    than a semitone there, so only semitone resolution sees those note changes.
    """
    log_sal = compress(salience)
    flux = np.maximum(0.0, np.diff(log_sal, axis=1)).sum(axis=0)
    flux = np.concatenate([[0.0], flux])
    # The pitch hop is twice the onset hop.
    up = np.repeat(flux, PITCH_HOP // ONSET_HOP)[:n_frames]
    return np.pad(up, (0, n_frames - len(up))).astype(np.float32)


def compress(sal: np.ndarray, amount: float = 1000.0) -> np.ndarray:
    """Log-compress linear salience so quiet voices count next to loud ones."""
    return np.log1p(amount * sal / (sal.max() + 1e-12)).astype(np.float32)


# Share of a note's magnitude expected at its 3rd, 5th and 6th harmonics (+19, +28, +31
# semitones). Left in, the 3rd harmonic reads as the fifth above every note and pulls key
# and chord estimates a fifth up.
HARMONIC_SHARES = {19: 0.45, 28: 0.25, 31: 0.2}


def suppress_harmonics(sal: np.ndarray) -> np.ndarray:
    """Subtract the expected upper harmonics of each semitone from the semitones above it.

    Works upwards, so a bin is cleaned before it is used to clean the bins above it.
    """
    out = sal.copy()
    for k in range(out.shape[0]):
        for offset, share in HARMONIC_SHARES.items():
            if k + offset < out.shape[0]:
                out[k + offset] = np.maximum(0.0, out[k + offset] - share * out[k])
    return out


def compute_features(y: np.ndarray, sr: int = SAMPLE_RATE, tick: Callable[[float], None] | None = None) -> Features:
    """All frame features of a mono signal at ``sr`` (22.05 kHz expected).

    ``tick(fraction)`` is called often (at least every few hundred milliseconds of work).
    """
    report = tick or (lambda fraction: None)
    mel = mel_spectrogram(y, sr, tick=lambda f: report(0.7 * f))
    onset, accent, onset_low, onset_mid, onset_high = onset_envelopes(mel, sr)
    salience = pitch_salience(y, sr, tick=lambda f: report(0.7 + 0.25 * f))
    note_onset = pitch_flux(salience, len(onset))
    # Chords read near-linear salience best; the key reads harmonic-free salience best.
    pitch = compress(salience, 10.0)
    pitch_clean = compress(suppress_harmonics(salience), 10.0)
    report(0.95)
    # Timbre at the pitch frame rate (every second onset frame), from the same mel bands.
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel[:, ::2]), n_mfcc=13)
    n = min(pitch.shape[1], mfcc.shape[1])
    return Features(
        onset=onset,
        accent=accent,
        onset_low=onset_low,
        onset_mid=onset_mid,
        onset_high=onset_high,
        note_onset=note_onset,
        onset_fps=sr / ONSET_HOP,
        pitch=pitch[:, :n],
        pitch_clean=pitch_clean[:, :n],
        mfcc=mfcc[:, :n].astype(np.float32),
        pitch_fps=sr / PITCH_HOP,
        duration=len(y) / sr,
    )


def chroma_from_pitch(pitch: np.ndarray, max_midi: int | None = None, min_midi: int | None = None) -> np.ndarray:
    """Fold semitone salience (rows from C1) into 12 pitch classes, optionally within a MIDI range."""
    midi = np.arange(pitch.shape[0]) + PITCH_FMIN_MIDI
    keep = np.ones_like(midi, dtype=bool)
    if max_midi is not None:
        keep &= midi <= max_midi
    if min_midi is not None:
        keep &= midi >= min_midi
    chroma = np.zeros((12, pitch.shape[1]), dtype=np.float32)
    for pc in range(12):
        chroma[pc] = pitch[keep & (midi % 12 == pc)].sum(axis=0)
    return chroma


def sync(frames: np.ndarray, fps: float, boundaries: np.ndarray, aggregate=np.mean) -> np.ndarray:
    """Aggregate feature columns between successive ``boundaries`` (seconds).

    Returns one column per interval ``[boundaries[i], boundaries[i+1])``; an interval with
    no frame takes the nearest frame.
    """
    n = frames.shape[-1]
    idx = np.clip(np.round(np.asarray(boundaries) * fps).astype(int), 0, n)
    out = np.empty(frames.shape[:-1] + (len(idx) - 1,), dtype=np.float32)
    for i in range(len(idx) - 1):
        a, b = idx[i], max(idx[i + 1], idx[i] + 1)
        if a >= n:
            a, b = n - 1, n
        out[..., i] = aggregate(frames[..., a:b], axis=-1)
    return out
