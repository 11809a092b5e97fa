"""The project's one audio loader.

``load_audio`` reads WAV (8/16/24/32-bit int, 32/64-bit float), FLAC, OGG and MP3, in any
channel count and at 8-192 kHz, and returns float32 samples. Anything it cannot use raises
:class:`AudioError` with a stable ``code`` and a message a musician understands; it never
lets a decoder crash the caller.

Decoding goes through libsndfile (``soundfile``), which sniffs the content rather than
trusting the extension; files libsndfile cannot open are handed to ``ffmpeg`` when it is
installed, so other containers (M4A, AAC, ...) work too.
"""

from __future__ import annotations

import logging
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

log = logging.getLogger(__name__)

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
# Peak below this (about -66 dBFS) counts as silence: 16-bit dither and hum sit far below.
SILENCE_PEAK = 5e-4


class AudioError(ValueError):
    """Audio that cannot be used, with a stable machine-readable ``code``."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


@dataclass
class Audio:
    """Decoded audio.

    ``samples`` has shape ``(n,)`` when mono, else ``(channels, n)``; float32 in [-1, 1].
    """

    samples: np.ndarray
    sample_rate: int
    source_sample_rate: int
    source_channels: int
    source_format: str

    @property
    def duration(self) -> float:
        return self.samples.shape[-1] / float(self.sample_rate)


def _fmt_seconds(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


def _wav_truncation(path: Path) -> str | None:
    """Describe a RIFF/WAVE file whose data chunk runs past the end of the file, else None.

    libsndfile quietly reads what is there; a musician would rather hear that the
    upload was cut short than get a song built on half a track.
    """
    try:
        with open(path, "rb") as fh:
            header = fh.read(12)
            if len(header) < 12 or header[:4] not in (b"RIFF", b"RIFX") or header[8:12] != b"WAVE":
                return None
            endian = "<" if header[:4] == b"RIFF" else ">"
            size = path.stat().st_size
            pos = 12
            while pos + 8 <= size:
                fh.seek(pos)
                chunk = fh.read(8)
                chunk_id, chunk_size = chunk[:4], struct.unpack(endian + "I", chunk[4:])[0]
                if chunk_id == b"data":
                    # 0 and 0xFFFFFFFF mark streamed files whose writer never filled the size in.
                    if chunk_size in (0, 0xFFFFFFFF):
                        return None
                    available = size - (pos + 8)
                    if available < chunk_size:
                        return f"the file holds {available} of the {chunk_size} bytes of audio its header announces"
                    return None
                pos += 8 + chunk_size + (chunk_size & 1)
            return "the file has no audio data chunk"
    except OSError:
        return None


@dataclass
class _Decoded:
    """Decoded samples, (frames, channels) or (frames, 1) when mixed down, with the checks
    that must see every channel before a mix-down could hide them."""

    data: np.ndarray
    rate: int
    fmt: str
    channels: int
    peak: float
    finite: bool


def _decoded(data: np.ndarray, rate: int, fmt: str, mono: bool) -> _Decoded:
    """Check and optionally mix down a (frames, channels) block of samples."""
    channels = data.shape[1]
    # One reduction finds a NaN or infinity anywhere (they propagate into the sum).
    finite = bool(np.isfinite(data.sum(dtype=np.float64)))
    peak = max(float(data.max()), -float(data.min())) if data.size and finite else 0.0
    if mono and channels > 1:
        data = (data @ np.full((channels, 1), 1.0 / channels, dtype=np.float32)).astype(np.float32)
    return _Decoded(data, rate, fmt, channels, peak, finite)


def _decode_soundfile(path: Path, mono: bool, tick: Callable[[float], None] | None = None) -> _Decoded | None:
    """Decode with libsndfile; None when libsndfile does not recognise the content.

    Reads in blocks and mixes each down at once when ``mono``, so a long multichannel
    high-rate file never sits in memory at full width; ``tick(fraction)`` follows each block.
    """
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None
    blocks: list[_Decoded] = []
    try:
        with sf.SoundFile(str(path)) as fh:
            block = max(1, 30 * fh.samplerate)
            while True:
                data = fh.read(block, dtype="float32", always_2d=True)
                if not len(data):
                    break
                blocks.append(_decoded(data, fh.samplerate, info.format, mono))
                if tick is not None and fh.frames > 0:
                    tick(min(1.0, fh.tell() / fh.frames))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(
            "corrupt_audio",
            f"The {info.format} file could not be decoded ({exc}). It may be damaged or "
            "cut short; export it again from your audio editor and re-upload it.",
        ) from exc
    if not blocks:
        return _Decoded(np.zeros((0, 1), np.float32), int(info.samplerate), info.format, info.channels, 0.0, True)
    return _Decoded(
        data=np.concatenate([b.data for b in blocks]) if len(blocks) > 1 else blocks[0].data,
        rate=int(info.samplerate),
        fmt=info.format,
        channels=blocks[0].channels,
        peak=max(b.peak for b in blocks),
        finite=all(b.finite for b in blocks),
    )


def _probe_ffmpeg(path: Path) -> tuple[int, int] | None:
    """Return (sample_rate, channels) of the first audio stream, or None if ffprobe finds none."""
    if shutil.which("ffprobe") is None:
        return None
    cmd = [
        "ffprobe",
        "-v",
        "error",
        "-select_streams",
        "a:0",
        "-show_entries",
        "stream=sample_rate,channels",
        "-of",
        "csv=p=0",
        str(path),
    ]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    fields = out.stdout.strip().split(",")
    if out.returncode != 0 or len(fields) < 2 or not all(f.strip().isdigit() for f in fields[:2]):
        return None
    rate, channels = int(fields[0]), int(fields[1])
    if rate <= 0 or channels <= 0:
        # ffprobe guessed a container from the name alone (e.g. random bytes called .flac)
        # and found no decodable stream in it: not audio, and no channel count to split by.
        return None
    return rate, channels


def _decode_ffmpeg(path: Path, max_seconds: float | None, mono: bool) -> _Decoded | None:
    probe = _probe_ffmpeg(path)
    if probe is None:
        return None
    rate, channels = probe
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path)]
    if max_seconds is not None:
        # Decode a little past the limit: enough to know the file is too long, no more.
        cmd += ["-t", f"{max_seconds + 1.0:.3f}"]
    cmd += ["-f", "f32le", "-acodec", "pcm_f32le", "-"]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AudioError("corrupt_audio", f"Decoding the file failed ({exc}).") from exc
    if out.returncode != 0 and not out.stdout:
        msg = out.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["unknown error"]
        raise AudioError(
            "corrupt_audio",
            f"The file could not be decoded ({msg[0]}). It may be damaged or cut short; "
            "export it again and re-upload it.",
        )
    data = np.frombuffer(out.stdout, dtype="<f4")
    usable = len(data) - len(data) % channels
    return _decoded(data[:usable].reshape(-1, channels), rate, "ffmpeg", mono)


def load_audio(
    path: str | Path,
    *,
    sample_rate: int | None = 22050,
    mono: bool = True,
    min_seconds: float = 5.0,
    max_seconds: float | None = 900.0,
    tick: Callable[[float], None] | None = None,
) -> Audio:
    """Load an audio file as float32, checked and optionally resampled.

    Parameters
    ----------
    path : audio file (WAV, FLAC, OGG, MP3; other formats through ffmpeg).
    sample_rate : target rate in Hz, or None to keep the file's own rate.
    mono : average the channels into one (shape ``(n,)``); else ``(channels, n)``.
    min_seconds, max_seconds : accepted length; ``max_seconds=None`` means no limit.
    tick : called with the fraction decoded after each block (to report progress, or to
        cancel by raising).

    Raises
    ------
    AudioError
        with ``code`` one of ``file_not_found``, ``empty_file``, ``not_audio``,
        ``corrupt_audio``, ``unsupported_sample_rate``, ``non_finite_samples``,
        ``silent_audio``, ``too_short``, ``too_long``.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError("file_not_found", f"No audio file at {path}.")
    if path.stat().st_size == 0:
        raise AudioError("empty_file", "The file is empty (0 bytes). Upload the track again.")

    truncation = _wav_truncation(path)
    if truncation is not None:
        raise AudioError(
            "corrupt_audio",
            f"The WAV file is incomplete: {truncation}. The upload or export was probably "
            "cut short; export it again and re-upload it.",
        )

    if max_seconds is not None:
        try:
            declared = sf.info(str(path)).duration
        except (sf.LibsndfileError, RuntimeError, TypeError):
            declared = None
        if declared is not None and declared > max_seconds:
            raise AudioError(
                "too_long",
                f"The track is {_fmt_seconds(declared)} long; the limit is "
                f"{_fmt_seconds(max_seconds)}. Trim it and upload it again.",
            )

    decoded = _decode_soundfile(path, mono, tick)
    if decoded is None:
        decoded = _decode_ffmpeg(path, max_seconds, mono)
    if decoded is None:
        raise AudioError(
            "not_audio",
            f"'{path.name}' is not an audio file we can read, whatever its name says. "
            "Upload a WAV, FLAC, OGG or MP3 file.",
        )
    data, rate, fmt, channels = decoded.data, decoded.rate, decoded.fmt, decoded.channels

    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            "unsupported_sample_rate",
            f"The file's sample rate is {rate} Hz; supported rates are 8 kHz to 192 kHz. "
            "Convert it (44.1 or 48 kHz is ideal) and upload it again.",
        )
    if data.shape[0] == 0:
        raise AudioError("empty_file", "The file contains no audio samples.")
    if not decoded.finite:
        raise AudioError(
            "non_finite_samples",
            "The file contains invalid samples (NaN or infinity), so it is damaged. "
            "Export it again from your audio editor.",
        )
    duration = data.shape[0] / rate
    if max_seconds is not None and duration > max_seconds:
        raise AudioError(
            "too_long",
            f"The track is over {_fmt_seconds(max_seconds)} long, the limit. Trim it and upload it again.",
        )
    if duration < min_seconds:
        raise AudioError(
            "too_short",
            f"The track is {duration:.1f} s long; at least {min_seconds:g} s is needed "
            "to find its beat, key and chords.",
        )
    if decoded.peak < SILENCE_PEAK:
        raise AudioError(
            "silent_audio",
            "The track is silent (nothing louder than -66 dBFS). Check that the right "
            "file was exported, with its volume up.",
        )

    if sample_rate is not None and sample_rate != rate:
        data = soxr.resample(data, rate, sample_rate, quality="HQ")
        out_rate = sample_rate
    else:
        out_rate = rate
    data = np.ascontiguousarray(data[:, 0] if mono else data.T, dtype=np.float32)
    log.debug("loaded %s: %s, %d ch, %d Hz, %.1f s", path.name, fmt, channels, rate, duration)
    return Audio(
        samples=data,
        sample_rate=out_rate,
        source_sample_rate=rate,
        source_channels=channels,
        source_format=fmt,
    )
