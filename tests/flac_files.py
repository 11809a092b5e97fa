"""Hand-written FLAC files: long, many-channel, high-rate streams built in well under a second.

An encoder would need minutes for 15 minutes of 192 kHz 8-channel audio; this writes the frames
directly. Each 4096-sample block is one FLAC frame whose subframes are CONSTANT (one value per
channel), alternating +level and -level every 4 blocks: a quiet square wave (about 23 Hz at 192 kHz),
not silence, so a loader that decodes it finds music-level peaks. A valid stream (CRC-8 headers,
CRC-16 frames) that libsndfile and ffmpeg decode like any other FLAC.
"""

from __future__ import annotations

import struct
from pathlib import Path

BLOCK = 4096


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        table.append(crc)
    return table


_CRC16 = _crc16_table()


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
    return crc


def write_square_flac(path: Path, rate: int, channels: int, seconds: float, level: int = 200,
                      declared_frames: int | None = None) -> Path:
    """A 16-bit FLAC of ``seconds`` (whole 4096-sample blocks) of a square wave at ``level``/32768.

    ``declared_frames`` overrides the length STREAMINFO announces (0: unknown, as streaming encoders
    write it); by default it is the true length.
    """
    blocks = int(seconds * rate) // BLOCK
    assert 1 <= channels <= 8 and blocks < 0x110000
    total = blocks * BLOCK if declared_frames is None else declared_frames
    # STREAMINFO: block sizes, frame sizes unknown (0), rate (20 bits), channels-1 (3), bits-1 (5),
    # total samples (36), MD5 unknown (0).
    info = struct.pack(">HH", BLOCK, BLOCK) + b"\x00" * 6
    info += ((rate << 44) | ((channels - 1) << 41) | (15 << 36) | total).to_bytes(8, "big") + b"\x00" * 16
    out = bytearray(b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info)
    bodies = [b"".join(b"\x00" + struct.pack(">h", v) for _ in range(channels)) for v in (level, -level)]
    for n in range(blocks):
        # Sync + fixed block size; block size 4096 (code 12), rate from STREAMINFO (0); independent
        # channels, 16 bits; the frame number in FLAC's UTF-8-like coding.
        head = bytes([0xFF, 0xF8, 0xC0, ((channels - 1) << 4) | 0x08]) + chr(n).encode("utf-8", "surrogatepass")
        frame = head + bytes([_crc8(head)]) + bodies[n // 4 % 2]
        out += frame + _crc16(frame).to_bytes(2, "big")
    path.write_bytes(bytes(out))
    return path
