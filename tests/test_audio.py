"""Behaviour of the one audio loader, ``load_audio``, on files made here in tmp_path.

Formats, bit depths, channel counts and sample rates that must load (and what comes out),
and every error code, each from the kind of file a musician could really upload.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from flac_files import write_square_flac

from tmik_common.audio import (
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    Audio,
    AudioError,
    load_audio,
    max_decoded_bytes,
    probe_audio,
    write_working_copy,
)

HAS_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None
needs_ffmpeg = pytest.mark.skipif(not HAS_FFMPEG, reason="ffmpeg/ffprobe not installed (make system-deps)")

SECONDS = 6.0  # above the default 5 s minimum
PNG_BYTES = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00"
    b"\x00\x00IEND\xaeB`\x82"
)


def tone(rate: int, seconds: float = SECONDS, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    """A sine with a little of its octave, float64 (n,)."""
    t = np.arange(round(rate * seconds)) / rate
    return amp * (0.8 * np.sin(2 * np.pi * freq * t) + 0.2 * np.sin(2 * np.pi * 2 * freq * t))


def multichannel(rate: int, channels: int, seconds: float = SECONDS) -> np.ndarray:
    """(n, channels): channel c is a tone at 110 * (c + 2) Hz (220, 330, ...), told apart by pitch."""
    return np.stack([tone(rate, seconds, freq=110.0 * (c + 2)) for c in range(channels)], axis=1)


def write(path: Path, data: np.ndarray, rate: int, fmt: str | None = None,
          subtype: str | None = None) -> Path:
    sf.write(str(path), data, rate, format=fmt, subtype=subtype)
    return path


def ffmpeg_encode(src: Path, dst: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-y", "-v", "error", "-nostdin", "-i", str(src), *args, str(dst)],
                   check=True, timeout=120)
    return dst


def peak_freq(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1.0 / rate)[np.argmax(spectrum)])


def error_of(path: Path, **kwargs) -> AudioError:
    with pytest.raises(AudioError) as info:
        load_audio(path, **kwargs)
    err = info.value
    assert err.message and err.to_dict() == {"code": err.code, "message": err.message}
    assert "Traceback" not in err.message
    return err


# ------------------------------------------------------------------------------ loads


@pytest.mark.parametrize(
    ("subtype", "tolerance"),
    [("PCM_U8", 1 / 64), ("PCM_16", 1e-4), ("PCM_24", 1e-6), ("PCM_32", 1e-7),
     ("FLOAT", 1e-7), ("DOUBLE", 1e-7)],
)
def test_wav_bit_depths_load_as_float32_in_range(tmp_path, subtype, tolerance):
    rate = 22050
    src = tone(rate)
    path = write(tmp_path / f"bg_{subtype}.wav", src, rate, subtype=subtype)

    audio = load_audio(path, sample_rate=None)

    assert isinstance(audio, Audio)
    assert audio.samples.dtype == np.float32
    assert audio.samples.shape == (len(src),)
    assert audio.sample_rate == audio.source_sample_rate == rate
    assert audio.source_channels == 1
    assert audio.source_format == "WAV"
    assert np.max(np.abs(audio.samples)) <= 1.0
    np.testing.assert_allclose(audio.samples, src, atol=tolerance)
    assert audio.duration == pytest.approx(SECONDS)


@pytest.mark.parametrize(("suffix", "fmt", "subtype", "expected_format", "atol"), [
    ("flac", "FLAC", "PCM_16", "FLAC", 1e-4),
    ("flac", "FLAC", "PCM_24", "FLAC", 1e-6),
    ("ogg", "OGG", "VORBIS", "OGG", None),
])
def test_flac_and_ogg_load(tmp_path, suffix, fmt, subtype, expected_format, atol):
    rate = 44100
    src = tone(rate)
    path = write(tmp_path / f"bg.{suffix}", src, rate, fmt=fmt, subtype=subtype)

    audio = load_audio(path, sample_rate=None)

    assert audio.source_format == expected_format
    assert audio.sample_rate == rate
    assert audio.duration == pytest.approx(SECONDS, abs=0.05)
    if atol is not None:
        np.testing.assert_allclose(audio.samples, src, atol=atol)
    else:  # lossy: the same sound, not the same samples
        assert peak_freq(audio.samples, rate) == pytest.approx(440.0, abs=2.0)
        assert np.sqrt(np.mean(audio.samples**2)) == pytest.approx(np.sqrt(np.mean(src**2)), rel=0.1)


@needs_ffmpeg
@pytest.mark.parametrize(("suffix", "codec_args"), [
    ("mp3", ["-codec:a", "libmp3lame", "-b:a", "192k", "-metadata", "title=Background"]),
    ("ogg", ["-codec:a", "libvorbis", "-q:a", "5"]),
    ("ogg", ["-codec:a", "libopus", "-b:a", "128k"]),
])
def test_ffmpeg_encoded_mp3_and_ogg_load(tmp_path, suffix, codec_args):
    rate = 44100
    src = tone(rate)
    wav = write(tmp_path / "src.wav", src, rate, subtype="PCM_16")
    path = ffmpeg_encode(wav, tmp_path / f"bg.{suffix}", *codec_args)

    audio = load_audio(path, sample_rate=22050)

    assert audio.sample_rate == 22050
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    # Encoder delay and frame padding may add a few tens of milliseconds at most.
    assert audio.duration == pytest.approx(SECONDS, abs=0.1)
    assert peak_freq(audio.samples, 22050) == pytest.approx(440.0, abs=2.0)
    assert np.sqrt(np.mean(audio.samples**2)) == pytest.approx(np.sqrt(np.mean(src**2)), rel=0.15)


@needs_ffmpeg
def test_formats_libsndfile_cannot_read_go_through_ffmpeg(tmp_path):
    rate = 44100
    wav = write(tmp_path / "src.wav", multichannel(rate, 2), rate, subtype="PCM_16")
    path = ffmpeg_encode(wav, tmp_path / "bg.m4a", "-codec:a", "aac", "-b:a", "128k")

    audio = load_audio(path, sample_rate=None, mono=False)

    assert audio.source_format == "ffmpeg"
    assert audio.source_channels == 2
    assert audio.samples.shape[0] == 2
    assert audio.duration == pytest.approx(SECONDS, abs=0.1)
    assert peak_freq(audio.samples[0], rate) == pytest.approx(220.0, abs=2.0)
    assert peak_freq(audio.samples[1], rate) == pytest.approx(330.0, abs=2.0)


def test_mono_file_shapes(tmp_path):
    n = int(22050 * SECONDS)
    path = write(tmp_path / "mono.wav", tone(22050), 22050)

    as_mono = load_audio(path, sample_rate=None, mono=True)
    as_channels = load_audio(path, sample_rate=None, mono=False)

    assert as_mono.source_channels == as_channels.source_channels == 1
    assert as_mono.samples.shape == (n,)
    assert as_channels.samples.shape == (1, n)  # mono=False is always channels-first


def test_stereo_downmixed_to_mono_by_averaging(tmp_path):
    rate = 22050
    data = multichannel(rate, 2)
    path = write(tmp_path / "stereo.wav", data, rate, subtype="FLOAT")

    audio = load_audio(path, sample_rate=None)

    assert audio.source_channels == 2
    assert audio.samples.shape == (len(data),)
    np.testing.assert_allclose(audio.samples, data.mean(axis=1), atol=1e-6)


def test_stereo_kept_as_channels_first(tmp_path):
    rate = 22050
    data = multichannel(rate, 2)
    path = write(tmp_path / "stereo.wav", data, rate, subtype="FLOAT")

    audio = load_audio(path, sample_rate=None, mono=False)

    assert audio.samples.shape == (2, len(data))
    np.testing.assert_allclose(audio.samples, data.T, atol=1e-6)


def test_six_channel_file(tmp_path):
    rate = 48000
    data = multichannel(rate, 6)
    path = write(tmp_path / "surround.wav", data, rate, subtype="PCM_24")

    multi = load_audio(path, sample_rate=None, mono=False)
    mono = load_audio(path, sample_rate=None, mono=True)

    assert multi.source_channels == mono.source_channels == 6
    assert multi.samples.shape == (6, len(data))
    np.testing.assert_allclose(multi.samples, data.T, atol=1e-6)
    assert mono.samples.shape == (len(data),)
    np.testing.assert_allclose(mono.samples, data.mean(axis=1), atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 11025, 44100, 48000, 96000, 192000])
@pytest.mark.parametrize("target", [22050, 44100])
def test_resampled_to_requested_rate_with_duration_and_pitch_kept(tmp_path, rate, target):
    path = write(tmp_path / f"bg_{rate}.wav", tone(rate), rate, subtype="PCM_16")

    audio = load_audio(path, sample_rate=target)

    assert audio.sample_rate == target
    assert audio.source_sample_rate == rate
    assert abs(len(audio.samples) - SECONDS * target) <= 2
    assert audio.duration == pytest.approx(SECONDS, abs=1e-3)
    assert peak_freq(audio.samples, target) == pytest.approx(440.0, abs=1.0)
    assert np.max(np.abs(audio.samples)) == pytest.approx(np.max(np.abs(tone(rate))), rel=0.05)


def test_stereo_192k_resampled_keeps_channels(tmp_path):
    rate = 192000
    data = multichannel(rate, 2)
    path = write(tmp_path / "hires.flac", data, rate, subtype="PCM_24")

    audio = load_audio(path, sample_rate=22050, mono=False)

    assert audio.samples.shape[0] == 2
    assert abs(audio.samples.shape[1] - SECONDS * 22050) <= 2
    assert peak_freq(audio.samples[1], 22050) == pytest.approx(330.0, abs=1.0)


def test_boundary_sample_rates_are_accepted(tmp_path):
    for rate in (MIN_SAMPLE_RATE, MAX_SAMPLE_RATE):
        path = write(tmp_path / f"edge_{rate}.wav", tone(rate), rate, subtype="PCM_16")
        assert load_audio(path, sample_rate=None).sample_rate == rate


def test_accepts_str_path_and_respects_limits_given(tmp_path):
    path = write(tmp_path / "bg.wav", tone(22050, seconds=3.0), 22050)

    audio = load_audio(str(path), min_seconds=2.0, max_seconds=None)

    assert audio.duration == pytest.approx(3.0)


@pytest.mark.parametrize(("name", "fmt", "subtype", "expected_format"), [
    ("flac_named.wav", "FLAC", "PCM_16", "FLAC"),
    ("wav_named.mp3", "WAV", "PCM_16", "WAV"),
    ("ogg_named.flac", "OGG", "VORBIS", "OGG"),
    ("no_extension", "FLAC", "PCM_16", "FLAC"),
])
def test_mislabelled_files_load_by_content(tmp_path, name, fmt, subtype, expected_format):
    path = write(tmp_path / name, tone(44100), 44100, fmt=fmt, subtype=subtype)

    audio = load_audio(path, sample_rate=22050)

    assert audio.source_format == expected_format
    assert audio.duration == pytest.approx(SECONDS, abs=0.05)


@needs_ffmpeg
def test_mp3_named_wav_loads(tmp_path):
    wav = write(tmp_path / "src.wav", tone(44100), 44100, subtype="PCM_16")
    mp3 = ffmpeg_encode(wav, tmp_path / "x.mp3", "-codec:a", "libmp3lame", "-b:a", "128k")
    path = mp3.rename(tmp_path / "song.wav")

    audio = load_audio(path)

    assert audio.duration == pytest.approx(SECONDS, abs=0.1)
    assert peak_freq(audio.samples, 22050) == pytest.approx(440.0, abs=2.0)


def test_quiet_but_not_silent_audio_is_accepted(tmp_path):
    # -50 dBFS: quiet, but music (a fade-in intro, a soft piano), not silence.
    path = write(tmp_path / "quiet.wav", tone(22050, amp=0.003), 22050, subtype="PCM_16")
    assert load_audio(path).duration == pytest.approx(SECONDS)


# ------------------------------------------------------------------------------ errors


def test_file_not_found(tmp_path):
    assert error_of(tmp_path / "missing.wav").code == "file_not_found"


def test_directory_is_not_a_file(tmp_path):
    (tmp_path / "folder.wav").mkdir()
    assert error_of(tmp_path / "folder.wav").code == "file_not_found"


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    assert error_of(path).code == "empty_file"


def test_wav_with_header_but_no_samples(tmp_path):
    path = write(tmp_path / "nosamples.wav", np.zeros(0), 22050, subtype="PCM_16")
    assert error_of(path).code == "empty_file"


@pytest.mark.parametrize(("name", "content"), [
    ("notes.wav", b"These are my lyrics, not audio.\nVerse 1: ...\n" * 50),
    ("cover.mp3", PNG_BYTES),
    ("random.flac", np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes()),
])
def test_not_audio(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    err = error_of(path)
    assert err.code == "not_audio"
    assert name in err.message


@pytest.mark.parametrize("cut", [1, 1000, 100_000])
def test_truncated_wav_is_corrupt(tmp_path, cut):
    path = write(tmp_path / "full.wav", tone(44100), 44100, subtype="PCM_16")
    data = path.read_bytes()
    truncated = tmp_path / "cut.wav"
    truncated.write_bytes(data[: len(data) - cut])

    assert error_of(truncated).code == "corrupt_audio"


def test_wav_cut_inside_its_header_is_not_loaded(tmp_path):
    path = write(tmp_path / "full.wav", tone(44100), 44100, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(path.read_bytes()[:30])
    assert error_of(cut).code in {"corrupt_audio", "not_audio"}


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_all_zeros_is_silent(tmp_path, subtype):
    path = write(tmp_path / "silence.wav", np.zeros(int(22050 * SECONDS)), 22050, subtype=subtype)
    assert error_of(path).code == "silent_audio"


def test_near_silent_noise_floor_is_silent(tmp_path):
    noise = 1e-5 * np.random.default_rng(1).standard_normal(int(22050 * SECONDS))
    path = write(tmp_path / "hiss.wav", noise, 22050, subtype="FLOAT")
    assert error_of(path).code == "silent_audio"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
def test_non_finite_samples(tmp_path, bad, subtype):
    data = tone(22050)
    data[1000] = bad
    path = write(tmp_path / "bad.wav", data, 22050, subtype=subtype)
    assert error_of(path).code == "non_finite_samples"


def test_too_short(tmp_path):
    path = write(tmp_path / "short.wav", tone(44100, seconds=3.0), 44100)
    err = error_of(path)
    assert err.code == "too_short"
    assert "3.0 s" in err.message


def test_too_long(tmp_path):
    path = write(tmp_path / "long.flac", tone(22050, seconds=8.0), 22050, fmt="FLAC")
    err = error_of(path, max_seconds=6.0)
    assert err.code == "too_long"
    assert "0:06" in err.message


@needs_ffmpeg
def test_too_long_through_ffmpeg(tmp_path):
    wav = write(tmp_path / "src.wav", tone(44100, seconds=8.0), 44100, subtype="PCM_16")
    path = ffmpeg_encode(wav, tmp_path / "long.m4a", "-codec:a", "aac")
    assert error_of(path, max_seconds=6.0).code == "too_long"


@pytest.mark.parametrize("rate", [4000, 7999, 192001, 384000])
def test_unsupported_sample_rate(tmp_path, rate):
    path = write(tmp_path / f"odd_{rate}.wav", tone(rate), rate, subtype="PCM_16")
    err = error_of(path)
    assert err.code == "unsupported_sample_rate"
    assert str(rate) in err.message


def test_audio_error_is_a_value_error_with_stable_code(tmp_path):
    with pytest.raises(ValueError):
        load_audio(tmp_path / "missing.wav")


def test_messages_call_the_file_by_the_name_given(tmp_path):
    path = tmp_path / "original.wav"
    path.write_bytes(b"These are my lyrics, not audio.\n" * 50)
    err = error_of(path, name="My Song (final).wav")
    assert err.code == "not_audio"
    assert "My Song (final).wav" in err.message and "original" not in err.message
    assert "My Song (final).wav" in error_of(tmp_path / "gone.wav", name="My Song (final).wav").message


# ------------------------------------------------------------------------------ out-of-range floats


def test_float_samples_far_beyond_full_scale_are_refused(tmp_path):
    data = tone(22050)
    data[1000] = 1e30  # a damaged float file; it used to "succeed" as a song at -38 LUFS
    err = error_of(write(tmp_path / "huge.wav", data, 22050, subtype="FLOAT"))
    assert err.code == "out_of_range_samples"
    assert "+40 dBFS" in err.message and "+600 dBFS" in err.message


def test_a_hot_float_master_a_little_over_full_scale_loads(tmp_path):
    data = 8.0 * tone(22050)  # peak about +12 dBFS: loud, but a mix, not damage
    audio = load_audio(write(tmp_path / "hot.wav", data, 22050, subtype="FLOAT"), sample_rate=None)
    assert np.max(np.abs(audio.samples)) == pytest.approx(np.max(np.abs(data)), rel=1e-6)


# ------------------------------------------------------------------------------ decoded size (bombs)

BOMB_SECONDS = 899.9  # under the 15-minute limit: only its decoded size gives it away


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if libsndfile decodes a single sample: the refusal must come from the header."""
    def decoded(*args, **kwargs):
        raise AssertionError("the file was decoded")

    monkeypatch.setattr(sf.SoundFile, "read", decoded)
    monkeypatch.setattr(sf, "read", decoded)


def test_flac_bomb_is_refused_from_its_header(tmp_path, no_decoding):
    # 15 minutes of a quiet square wave, 8 channels at 192 kHz: 1.4 MB of FLAC, 5.3 GB decoded.
    bomb = write_square_flac(tmp_path / "bomb.flac", 192_000, 8, BOMB_SECONDS)
    assert bomb.stat().st_size < 2 * 1024 * 1024

    err = error_of(bomb)

    assert err.code == "too_large_decoded"
    assert "5273 MB" in err.message and "8 channels at 192 kHz" in err.message
    assert "MAX_DECODED_MB" in err.message and "stereo at 44.1 or 48 kHz" in err.message
    target = tmp_path / "background.wav"
    with pytest.raises(AudioError) as info:
        write_working_copy(bomb, target)
    assert info.value.code == "too_large_decoded"
    assert list(tmp_path.iterdir()) == [bomb]  # no working copy, no partial file


@pytest.mark.parametrize(("rate", "channels"), [(192_000, 2), (48_000, 8), (96_000, 6)])
def test_fifteen_minutes_of_hi_res_stereo_or_surround_pass_the_decoded_size_limit(tmp_path, no_decoding,
                                                                                 rate, channels):
    path = write_square_flac(tmp_path / "long.flac", rate, channels, BOMB_SECONDS)

    header = probe_audio(path)

    assert (header.sample_rate, header.channels) == (rate, channels)
    assert header.decoded_bytes == header.frames * channels * 4 < max_decoded_bytes()
    assert header.frames == pytest.approx(BOMB_SECONDS * rate, abs=4096)


def test_max_decoded_mb_sets_the_limit(tmp_path, monkeypatch):
    path = write_square_flac(tmp_path / "short.flac", 48_000, 2, SECONDS + 0.5)  # 2.3 MB decoded
    monkeypatch.setenv("MAX_DECODED_MB", "2")
    assert error_of(path).code == "too_large_decoded"
    assert "at most 2 MB" in error_of(path).message
    monkeypatch.setenv("MAX_DECODED_MB", "3")
    assert load_audio(path).duration == pytest.approx(SECONDS + 0.5, abs=0.1)
    for bad in ("0", "lots"):
        monkeypatch.setenv("MAX_DECODED_MB", bad)
        with pytest.raises(ValueError, match="MAX_DECODED_MB"):
            load_audio(path)


def test_a_wav_header_claiming_more_than_the_file_holds_is_incomplete_not_a_bomb(tmp_path):
    path = write(tmp_path / "cut.wav", multichannel(192_000, 8, seconds=0.5), 192_000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = data.find(b"data")
    data[at + 4:at + 8] = struct.pack("<I", 900 * 192_000 * 8 * 2)  # "15 minutes": 2.8 GB of samples
    path.write_bytes(bytes(data))

    err = error_of(path)

    assert err.code == "corrupt_audio" and "incomplete" in err.message


@needs_ffmpeg
def test_flac_of_unknown_length_loads(tmp_path):
    # Streaming encoders leave STREAMINFO's length at 0 ("unknown"); libsndfile then cannot read the
    # file block by block, so it goes through ffmpeg, which decodes it whole.
    path = write_square_flac(tmp_path / "streamed.flac", 48_000, 2, SECONDS + 0.5, declared_frames=0)

    audio = load_audio(path, sample_rate=None, mono=False)

    assert audio.samples.shape == (2, int((SECONDS + 0.5) * 48_000) // 4096 * 4096)
    assert np.max(np.abs(audio.samples)) == pytest.approx(200 / 32768)


@needs_ffmpeg
def test_a_header_that_hides_the_length_is_stopped_by_the_running_count(tmp_path):
    path = write_square_flac(tmp_path / "hidden.flac", 48_000, 8, 60.0, declared_frames=0)  # 88 MB decoded

    assert error_of(path, max_decoded_mb=4).code == "too_large_decoded"
    err = error_of(path, max_seconds=10.0)
    assert err.code == "too_long" and "0:10" in err.message


def test_memory_stays_bounded_while_mixing_down_and_resampling(tmp_path):
    # One minute of 192 kHz 8-channel audio decodes to 352 MB; mixed to mono at 8 kHz it is 2 MB.
    path = write_square_flac(tmp_path / "wide.flac", 192_000, 8, 60.0)
    tracemalloc.start()
    try:
        audio = load_audio(path, sample_rate=8000, mono=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert audio.duration == pytest.approx(60.0, abs=0.05)
    assert peak < 64 * 1024 * 1024, f"peak {peak / 1048576:.0f} MB"


# ------------------------------------------------------------------------------ the working copy


@pytest.mark.parametrize(("rate", "channels", "fmt", "subtype", "want_rate", "want_channels"), [
    (96_000, 6, "FLAC", "PCM_24", 48_000, 2),
    (88_200, 2, "WAV", "PCM_16", 44_100, 2),
    (192_000, 8, "WAV", "PCM_24", 48_000, 2),
    (44_100, 1, "FLAC", "PCM_16", 44_100, 1),
    (22_050, 2, "OGG", "VORBIS", 22_050, 2),
])
def test_working_copy_is_capped_at_48k_stereo(tmp_path, rate, channels, fmt, subtype, want_rate, want_channels):
    src = write(tmp_path / f"in.{fmt.lower()}", multichannel(rate, channels), rate, fmt=fmt, subtype=subtype)

    copy = write_working_copy(src, tmp_path / "background.wav")

    info = sf.info(str(copy.path))
    assert (info.format, info.subtype) == ("WAV", "FLOAT")
    assert (info.samplerate, info.channels) == (copy.sample_rate, copy.channels) == (want_rate, want_channels)
    assert (copy.source_sample_rate, copy.source_channels) == (rate, channels)
    assert info.duration == pytest.approx(SECONDS, abs=0.05) and copy.duration == pytest.approx(SECONDS, abs=0.05)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial file left
    stages_read = load_audio(copy.path, sample_rate=None, mono=False)  # what the vocal stage gets
    assert stages_read.samples.shape == (want_channels, info.frames)


def test_working_copy_keeps_the_samples_of_a_file_within_the_caps(tmp_path):
    data = 3.0 * multichannel(44_100, 2)  # float, over full scale: nothing may be clipped or rounded
    src = write(tmp_path / "in.wav", data, 44_100, subtype="FLOAT")
    copy = write_working_copy(src, tmp_path / "background.wav")
    back, rate = sf.read(str(copy.path), dtype="float32")
    assert rate == 44_100
    np.testing.assert_array_equal(back, data.astype(np.float32))


def band_level(samples: np.ndarray, rate: int, freq: float) -> float:
    spectrum = np.abs(np.fft.rfft(samples)) / len(samples)
    bins = np.fft.rfftfreq(len(samples), 1.0 / rate)
    return float(spectrum[np.abs(bins - freq) < 3].max())


@pytest.mark.parametrize(("fmt", "order"), [
    ("WAV", ["FL", "FR", "FC", "LFE", "BL", "BR"]),  # WAV and FLAC: the SMPTE order
    ("OGG", ["FL", "FC", "FR", "BL", "BR", "LFE"]),  # Ogg Vorbis: its own order
])
def test_surround_is_mixed_down_to_stereo_by_its_layout(tmp_path, fmt, order):
    rate = 48_000
    freqs = {"FL": 300.0, "FR": 500.0, "FC": 700.0, "LFE": 60.0, "BL": 900.0, "BR": 1100.0}
    data = np.stack([tone(rate, freq=freqs[name], amp=0.3) for name in order], axis=1)
    src = write(tmp_path / f"surround.{fmt.lower()}", data, rate, fmt=fmt)

    copy = write_working_copy(src, tmp_path / "background.wav")

    out, _ = sf.read(str(copy.path), dtype="float32")
    left, right = out[:, 0], out[:, 1]
    heard = {side: {name for name, f in freqs.items() if band_level(ch, rate, f) > 0.01}
             for side, ch in (("left", left), ("right", right))}
    assert heard == {"left": {"FL", "FC", "BL"}, "right": {"FR", "FC", "BR"}}
    assert np.max(np.abs(out)) <= 1.0


def test_refused_audio_leaves_no_working_copy(tmp_path):
    src = write(tmp_path / "silence.wav", np.zeros(int(22050 * SECONDS)), 22050, subtype="PCM_16")
    with pytest.raises(AudioError) as info:
        write_working_copy(src, tmp_path / "background.wav")
    assert info.value.code == "silent_audio"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["silence.wav"]
