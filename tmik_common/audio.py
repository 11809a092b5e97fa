"""The project's one audio loader, and the working copy every stage reads.

``load_audio`` reads WAV (8/16/24/32-bit int, 32/64-bit float), FLAC, OGG and MP3, in any
channel count and at 8-192 kHz, and returns float32 samples. ``write_working_copy`` converts an
upload once into the capped format every stage reads (WAV, 32-bit float, at most 48 kHz and at most
2 channels). Anything they cannot use raises :class:`AudioError` with a stable ``code`` and a message
a musician understands; a decoder never crashes the caller.

Both read the header first and refuse, before decoding a sample, a file whose decoded audio would
exceed ``MAX_DECODED_MB`` (counted as 32-bit samples: frames x channels x 4 bytes). That stops a
decompression bomb: FLAC packs 15 minutes of quiet 8-channel 192 kHz audio into a few MB that decode
to 5 GB. Decoding then runs in blocks of at most :data:`BLOCK_SAMPLES` samples; each block is checked,
mixed down and resampled as it comes, so memory is bounded by what is returned (or by one block when
writing the working copy), never by the file. A running count refuses a file whose header understates
its length as soon as it passes a limit.

Decoding goes through libsndfile (``soundfile``), which sniffs the content rather than
trusting the extension; files libsndfile cannot open (or whose length it does not know) are
handed to ``ffmpeg`` when it is installed, so other containers (M4A, AAC, ...) work too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .env import env_float

log = logging.getLogger(__name__)

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
# Peak below this (about -66 dBFS) counts as silence: 16-bit dither and hum sit far below.
SILENCE_PEAK = 5e-4
# Float files may go a little past full scale (a master pushed hot); +40 dBFS is no mix, it is a
# damaged file or a wrong export, and the loudness stage would turn it into near silence.
MAX_PEAK = 100.0
MAX_PEAK_DBFS = 40
# MAX_DECODED_MB's default: 15 minutes of 192 kHz stereo or of 48 kHz 7.1 (1318 MB each) pass, and
# so does 96 kHz 5.1 (1978 MB); 15 minutes of 192 kHz 8-channel audio (5273 MB) does not.
DEFAULT_MAX_DECODED_MB = 2000.0
BLOCK_SAMPLES = 1 << 22  # 16 MB of float32 per decoded block, whatever the channel count
BLOCK_SECONDS = 30.0  # and no more than this much audio per block, so progress comes often enough
WORKING_MAX_RATE = 48_000
WORKING_MAX_CHANNELS = 2
DECODE_TIMEOUT_SECONDS = 600.0
_UNKNOWN_FRAMES = 2**63 - 1  # libsndfile's SF_COUNT_MAX: the header does not give the length

# Channel order of 3-8 channel files, for the stereo mix-down of the working copy. WAV, FLAC and
# ffmpeg's output use the SMPTE/Microsoft order; Ogg Vorbis and Opus (as libsndfile reads them) their own.
_SMPTE_ORDER = {3: "FL FR FC", 4: "FL FR BL BR", 5: "FL FR FC BL BR", 6: "FL FR FC LFE BL BR",
                7: "FL FR FC LFE BC SL SR", 8: "FL FR FC LFE BL BR SL SR"}
_VORBIS_ORDER = {3: "FL FC FR", 4: "FL FR BL BR", 5: "FL FC FR BL BR", 6: "FL FC FR BL BR LFE",
                 7: "FL FC FR SL SR BC LFE", 8: "FL FC FR SL SR BL BR LFE"}
# ITU-R BS.775 down-mix weights (to left, to right); the low-frequency channel is left out.
_TO_STEREO = {"FL": (1.0, 0.0), "FR": (0.0, 1.0), "FC": (0.7071, 0.7071), "LFE": (0.0, 0.0),
              "BL": (0.7071, 0.0), "BR": (0.0, 0.7071), "SL": (0.7071, 0.0), "SR": (0.0, 0.7071),
              "BC": (0.5, 0.5)}


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


@dataclass(frozen=True)
class WorkingCopy:
    """What :func:`write_working_copy` wrote (``path``) and what it read."""

    path: Path
    sample_rate: int
    channels: int
    duration: float  # seconds
    source_sample_rate: int
    source_channels: int
    source_format: str


def max_decoded_bytes() -> int:
    """``MAX_DECODED_MB`` in bytes: the most decoded audio (32-bit samples) one file may hold."""
    mb = env_float("MAX_DECODED_MB", DEFAULT_MAX_DECODED_MB)
    if mb <= 0:
        raise ValueError(f"MAX_DECODED_MB must be > 0, got {mb:g}")
    return int(mb * 1024 * 1024)


def working_rate(rate: int) -> int:
    """The working copy's sample rate: the file's own up to 48 kHz; above, 44.1 kHz for the 44.1 kHz
    family (88.2, 176.4 kHz: an integer ratio) and 48 kHz for the rest."""
    if rate <= WORKING_MAX_RATE:
        return rate
    return 44_100 if rate % 44_100 == 0 else WORKING_MAX_RATE


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


@dataclass(frozen=True)
class _Source:
    """What a file's header says: who decodes it, its rate and channels, and its length if known."""

    reader: str  # "soundfile" or "ffmpeg"
    fmt: str
    rate: int
    channels: int
    frames: int | None  # None: the header does not say


def _probe_ffmpeg(path: Path) -> tuple[int, int, float | None] | None:
    """(sample_rate, channels, duration or None) of the first audio stream; None if ffprobe finds none."""
    if shutil.which("ffprobe") is None:
        return None
    cmd = ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
           "stream=sample_rate,channels,duration:format=duration", "-of", "json", str(path)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        found = json.loads(out.stdout or "{}")
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    streams = found.get("streams") or [{}]
    stream = streams[0] if isinstance(streams[0], dict) else {}
    try:
        rate, channels = int(stream.get("sample_rate", 0)), int(stream.get("channels", 0))
    except (TypeError, ValueError):
        return None
    if out.returncode != 0 or rate <= 0 or channels <= 0:
        # ffprobe guessed a container from the name alone (e.g. random bytes called .flac)
        # and found no decodable stream in it: not audio, and no channel count to split by.
        return None
    duration = None
    for raw in (stream.get("duration"), (found.get("format") or {}).get("duration")):
        try:
            duration = float(raw)
        except (TypeError, ValueError):
            continue
        if math.isfinite(duration) and duration >= 0:
            break
        duration = None
    return rate, channels, duration


def _probe(path: Path) -> _Source | None:
    """Read the header only; None when neither libsndfile nor ffprobe recognises the content."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        info = None
    if info is not None and info.channels > 0 and info.frames != _UNKNOWN_FRAMES:
        return _Source("soundfile", info.format, int(info.samplerate), int(info.channels), int(info.frames))
    # libsndfile cannot read it, or cannot read a stream of unknown length (a FLAC written by a
    # streaming encoder): ffmpeg decodes those, and the running count bounds them.
    probe = _probe_ffmpeg(path)
    if probe is not None:
        rate, channels, duration = probe
        return _Source("ffmpeg", "ffmpeg", rate, channels, None if duration is None else round(duration * rate))
    if info is not None:
        raise AudioError("corrupt_audio", f"The {info.format} file does not say how long it is, and without "
                         "ffmpeg it cannot be read. Export it again from your audio editor and re-upload it.")
    return None


def _stereo_matrix(src: _Source) -> np.ndarray:
    """(channels, 2) weights mixing ``src`` down to stereo, each column summing to 1 (no clipping)."""
    order = (_VORBIS_ORDER if src.reader == "soundfile" and src.fmt == "OGG" else _SMPTE_ORDER).get(src.channels)
    if order is not None:
        weights = np.array([_TO_STEREO[name] for name in order.split()], dtype=np.float64)
    else:  # no standard layout (stems, 9+ channels): odd channels left, even channels right
        weights = np.array([(1.0, 0.0) if c % 2 == 0 else (0.0, 1.0) for c in range(src.channels)])
    return (weights / weights.sum(axis=0)).astype(np.float32)


class _Decoder:
    """One file's checked, block-by-block decode (see the module docstring)."""

    def __init__(self, path: Path, name: str | None, max_seconds: float | None, max_decoded_mb: float | None):
        self.path, self.name, self.max_seconds = path, name or path.name, max_seconds
        self.limit = max_decoded_bytes() if max_decoded_mb is None else int(max_decoded_mb * 1024 * 1024)
        if not path.is_file():
            raise AudioError("file_not_found", f"No audio file at {name or path}.")
        if path.stat().st_size == 0:
            raise AudioError("empty_file", "The file is empty (0 bytes). Upload the track again.")
        truncation = _wav_truncation(path)
        if truncation is not None:
            raise AudioError("corrupt_audio", f"The WAV file is incomplete: {truncation}. The upload or export "
                             "was probably cut short; export it again and re-upload it.")
        src = _probe(path)
        if src is None:
            raise AudioError("not_audio", f"'{self.name}' is not an audio file we can read, whatever its name says. "
                             "Upload a WAV, FLAC, OGG or MP3 file.")
        self.src = src
        if not MIN_SAMPLE_RATE <= src.rate <= MAX_SAMPLE_RATE:
            raise AudioError("unsupported_sample_rate", f"The file's sample rate is {src.rate} Hz; supported rates "
                             "are 8 kHz to 192 kHz. Convert it (44.1 or 48 kHz is ideal) and upload it again.")
        # libsndfile's frame count is exact (it never reads past it); ffprobe's duration is an
        # estimate for some formats, so there the decode itself (ffmpeg -t) enforces the length.
        if max_seconds is not None and src.reader == "soundfile" and src.frames / src.rate > max_seconds:
            raise AudioError("too_long", f"The track is {_fmt_seconds(src.frames / src.rate)} long; the limit is "
                             f"{_fmt_seconds(max_seconds)}. Trim it and upload it again.")
        if src.frames is not None and src.frames * src.channels * 4 > self.limit:
            self._too_large(src.frames)
        self.frames = 0
        self.peak = 0.0

    def _too_large(self, frames: int, *, known: bool = True) -> None:
        """Refuse the file: ``frames`` per channel is what the header announces (``known``), or what
        the decode reached when it passed the limit."""
        src, limit = self.src, f"{self.limit / 1048576:.0f} MB"
        found = (f"{frames * src.channels * 4 / 1048576:.0f} MB of audio ({_fmt_seconds(frames / src.rate)} of "
                 if known else f"more than {limit} of audio (")
        raise AudioError(
            "too_large_decoded",
            f"The file decodes to {found}{src.channels} channels at {src.rate / 1000:g} kHz); at most {limit} is "
            "accepted (MAX_DECODED_MB). Export it as stereo at 44.1 or 48 kHz and upload it again.",
        )

    def _scrub(self, text: str) -> str:
        """A decoder's message without our path in it (the user knows their file by its name)."""
        return text.replace(str(self.path), self.name).replace(self.path.name, self.name)

    def _block_frames(self) -> int:
        # At most BLOCK_SAMPLES, and at most 30 s: progress (and so a cancel) lands block by block.
        return max(1, min(BLOCK_SAMPLES // self.src.channels, int(BLOCK_SECONDS * self.src.rate)))

    def _soundfile_blocks(self) -> Iterator[np.ndarray]:
        try:
            with sf.SoundFile(str(self.path)) as fh:
                while len(data := fh.read(self._block_frames(), dtype="float32", always_2d=True)):
                    yield data
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioError("corrupt_audio", f"The {self.src.fmt} file could not be decoded "
                             f"({self._scrub(str(exc))}). It may be damaged or cut short; export it again from "
                             "your audio editor and re-upload it.") from exc

    def _ffmpeg_blocks(self) -> Iterator[np.ndarray]:
        channels = self.src.channels
        cmd = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(self.path), "-map", "0:a:0"]
        if self.max_seconds is not None:
            # Decode a little past the limit: enough to know the file is too long, no more.
            cmd += ["-t", f"{self.max_seconds + 1.0:.3f}"]
        cmd += ["-f", "f32le", "-acodec", "pcm_f32le", "-"]
        step = self._block_frames() * channels * 4
        deadline = time.monotonic() + DECODE_TIMEOUT_SECONDS
        # stderr goes to a file: a pipe nobody reads could fill up and stall ffmpeg.
        with tempfile.TemporaryFile() as errors:
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors)
            except OSError as exc:
                raise AudioError("corrupt_audio", f"Decoding the file failed ({exc}).") from exc
            decoded = 0
            try:
                while chunk := proc.stdout.read(step):
                    usable = len(chunk) - len(chunk) % (channels * 4)
                    decoded += usable
                    if usable:
                        yield np.frombuffer(chunk[:usable], dtype="<f4").reshape(-1, channels)
                    if time.monotonic() > deadline:
                        raise AudioError("corrupt_audio", "Decoding the file took too long; export it again "
                                         "(WAV or FLAC) and re-upload it.")
                returncode = proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                proc.stdout.close()
            if returncode != 0 and not decoded:
                errors.seek(0)
                lines = errors.read().decode("utf-8", "replace").strip().splitlines()[-1:] or ["unknown error"]
                raise AudioError("corrupt_audio", f"The file could not be decoded ({self._scrub(lines[0])}). It may "
                                 "be damaged or cut short; export it again and re-upload it.")

    def run(self, mix: np.ndarray | None, out_rate: int, sink: Callable[[np.ndarray], None],
            tick: Callable[[float], None] | None = None) -> None:
        """Decode every block, check it, mix it with ``mix`` ((channels, out) or None), resample it to
        ``out_rate`` and hand it to ``sink`` as (frames, out channels) float32."""
        src = self.src
        out_channels = src.channels if mix is None else mix.shape[1]
        stream = (soxr.ResampleStream(src.rate, out_rate, out_channels, dtype="float32", quality="HQ")
                  if out_rate != src.rate else None)
        max_frames = None if self.max_seconds is None else self.max_seconds * src.rate
        blocks = self._soundfile_blocks() if src.reader == "soundfile" else self._ffmpeg_blocks()
        with contextlib.closing(blocks):
            for block in blocks:
                self.frames += len(block)
                if self.frames * src.channels * 4 > self.limit:
                    self._too_large(self.frames, known=False)
                if max_frames is not None and self.frames > max_frames:
                    raise AudioError("too_long", f"The track is over {_fmt_seconds(self.max_seconds)} long, the "
                                     "limit. Trim it and upload it again.")
                # Every channel is checked before a mix-down could hide it. One reduction finds a NaN
                # or infinity anywhere (they propagate into the sum).
                if not math.isfinite(float(block.sum(dtype=np.float64))):
                    raise AudioError("non_finite_samples", "The file contains invalid samples (NaN or infinity), "
                                     "so it is damaged. Export it again from your audio editor.")
                peak = max(float(block.max()), -float(block.min()))
                if peak > MAX_PEAK:
                    raise AudioError(
                        "out_of_range_samples",
                        f"The file contains samples far beyond full scale (peak {20 * math.log10(peak):+.0f} dBFS; "
                        f"at most +{MAX_PEAK_DBFS} dBFS is accepted), so it is damaged or was exported wrongly. "
                        "Export it again as 16- or 24-bit audio, or normalise it, and upload it again.")
                self.peak = max(self.peak, peak)
                out = block if mix is None else block @ mix
                if stream is not None:
                    out = stream.resample_chunk(np.ascontiguousarray(out, dtype=np.float32))
                sink(out)
                if tick is not None and src.frames:
                    tick(min(1.0, self.frames / src.frames))
        if stream is not None:
            sink(stream.resample_chunk(np.zeros((0, out_channels), np.float32), last=True))

    def finish(self, min_seconds: float) -> float:
        """The checks that need the whole file; its duration in seconds."""
        if self.frames == 0:
            raise AudioError("empty_file", "The file contains no audio samples.")
        duration = self.frames / self.src.rate
        if duration < min_seconds:
            raise AudioError("too_short", f"The track is {duration:.1f} s long; at least {min_seconds:g} s is "
                             "needed to find its beat, key and chords.")
        if self.peak < SILENCE_PEAK:
            raise AudioError("silent_audio", "The track is silent (nothing louder than -66 dBFS). Check that the "
                             "right file was exported, with its volume up.")
        return duration


class _Buffer:
    """Growing (channels, frames) float32 storage, sized from the header's length when it gives one."""

    def __init__(self, channels: int, expected: int):
        self.data = np.empty((channels, max(1, expected)), dtype=np.float32)
        self.n = 0

    def append(self, block: np.ndarray) -> None:
        end = self.n + len(block)
        if end > self.data.shape[1]:
            grown = np.empty((self.data.shape[0], max(end, self.data.shape[1] * 3 // 2)), dtype=np.float32)
            grown[:, :self.n] = self.data[:, :self.n]
            self.data = grown
        self.data[:, self.n:end] = block.T
        self.n = end

    def result(self) -> np.ndarray:
        return self.data if self.n == self.data.shape[1] else np.ascontiguousarray(self.data[:, :self.n])


@dataclass(frozen=True)
class AudioHeader:
    """What a file's header says, from :func:`probe_audio`."""

    sample_rate: int
    channels: int
    frames: int | None  # per channel; None: the header does not say
    source_format: str

    @property
    def decoded_bytes(self) -> int | None:
        """Size of the decoded audio as 32-bit samples (what ``MAX_DECODED_MB`` limits)."""
        return None if self.frames is None else self.frames * self.channels * 4


def probe_audio(path: str | Path, *, max_seconds: float | None = 900.0, name: str | None = None,
                max_decoded_mb: float | None = None) -> AudioHeader:
    """Read only the header and make every check that needs no decoding (file, format, sample rate,
    length, decoded size), as :func:`load_audio` does first. Raises AudioError."""
    src = _Decoder(Path(path), name, max_seconds, max_decoded_mb).src
    return AudioHeader(src.rate, src.channels, src.frames, src.fmt)


def load_audio(
    path: str | Path,
    *,
    sample_rate: int | None = 22050,
    mono: bool = True,
    min_seconds: float = 5.0,
    max_seconds: float | None = 900.0,
    tick: Callable[[float], None] | None = None,
    name: str | None = None,
    max_decoded_mb: float | None = None,
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
    name : what messages call the file (default: its file name).
    max_decoded_mb : the most decoded audio accepted, MB of 32-bit samples (default: ``MAX_DECODED_MB``).

    Raises
    ------
    AudioError
        with ``code`` one of ``file_not_found``, ``empty_file``, ``not_audio``,
        ``corrupt_audio``, ``unsupported_sample_rate``, ``too_large_decoded``, ``non_finite_samples``,
        ``out_of_range_samples``, ``silent_audio``, ``too_short``, ``too_long``.
    """
    path = Path(path)
    decoder = _Decoder(path, name, max_seconds, max_decoded_mb)
    src = decoder.src
    out_rate = sample_rate or src.rate
    mix = np.full((src.channels, 1), 1.0 / src.channels, dtype=np.float32) if mono and src.channels > 1 else None
    expected = 0 if src.frames is None else int(src.frames * out_rate / src.rate + 0.5)
    buffer = _Buffer(1 if mono else src.channels, expected)
    decoder.run(mix, out_rate, buffer.append, tick)
    duration = decoder.finish(min_seconds)
    data = buffer.result()
    log.debug("loaded %s: %s, %d ch, %d Hz, %.1f s", path.name, src.fmt, src.channels, src.rate, duration)
    return Audio(samples=data[0] if mono else data, sample_rate=out_rate, source_sample_rate=src.rate,
                 source_channels=src.channels, source_format=src.fmt)


def write_working_copy(
    path: str | Path,
    target: str | Path,
    *,
    min_seconds: float = 5.0,
    max_seconds: float | None = 900.0,
    name: str | None = None,
    max_decoded_mb: float | None = None,
) -> WorkingCopy:
    """Check ``path`` as :func:`load_audio` does and write it to ``target`` as the working copy every stage
    reads: WAV, 32-bit float (nothing clipped or rounded), the file's own rate up to 48 kHz (see
    :func:`working_rate`), mono or stereo (more channels are mixed down to stereo, ITU-R BS.775).

    Streams block by block, so memory stays at a few blocks whatever the file; ``target`` appears only
    when the whole file passed (it is written under a temporary name first). Raises AudioError.
    """
    path, target = Path(path), Path(target)
    decoder = _Decoder(path, name, max_seconds, max_decoded_mb)
    src = decoder.src
    rate = working_rate(src.rate)
    mix = _stereo_matrix(src) if src.channels > WORKING_MAX_CHANNELS else None
    channels = min(src.channels, WORKING_MAX_CHANNELS)
    partial = target.with_name(f".{target.name}.part")
    try:
        with sf.SoundFile(str(partial), "w", samplerate=rate, channels=channels, format="WAV",
                          subtype="FLOAT") as out:
            decoder.run(mix, rate, out.write)
        duration = decoder.finish(min_seconds)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    log.info("working copy of %s: %s %d ch %d Hz -> %d ch %d Hz, %.1f s", name or path.name, src.fmt,
             src.channels, src.rate, channels, rate, duration)
    return WorkingCopy(path=target, sample_rate=rate, channels=channels, duration=duration,
                       source_sample_rate=src.rate, source_channels=src.channels, source_format=src.fmt)
