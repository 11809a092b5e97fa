"""Render MIDI to WAV with the Debian ``fluidsynth`` program and a General-MIDI soundfont.

Used by the development set, the benchmark and tests. The command is the one the project
notes measured (about 1 s of CPU per minute of music)::

    fluidsynth -ni -q -g 0.6 -r 44100 -F out.wav SOUNDFONT in.mid

FluidSynth starts a note within about 2 ms of its MIDI time, so times computed from the
MIDI file hold for the audio. Its output runs on past the last note while voices release;
pass ``duration`` to get a file of an exact length instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile as sf

DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
SAMPLE_RATE = 44100
GAIN = 0.6
# Fade applied where ``duration`` cuts a still-sounding file, so the cut does not click.
FADE_SECONDS = 0.05


class RenderError(RuntimeError):
    """FluidSynth or the soundfont is missing, or rendering failed."""


def find_fluidsynth() -> str:
    """Return the path of the ``fluidsynth`` executable, or raise :class:`RenderError`."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise RenderError(
            "The 'fluidsynth' program is not installed; install it (Debian: apt-get install "
            "fluidsynth fluid-soundfont-gm) to render the evaluation audio."
        )
    return exe


def find_soundfont() -> Path:
    """Return the soundfont: ``$SOUNDFONT`` if set, else FluidR3_GM; raise if it is missing."""
    env = os.environ.get("SOUNDFONT", "").strip()
    path = Path(env) if env else DEFAULT_SOUNDFONT
    if not path.is_file():
        where = f"SOUNDFONT={env}" if env else str(DEFAULT_SOUNDFONT)
        raise RenderError(
            f"No General-MIDI soundfont at {where}. Install fluid-soundfont-gm or point the "
            "SOUNDFONT environment variable at a .sf2 file."
        )
    return path


def render_available() -> str | None:
    """None when rendering can work here, else the reason it cannot (for test skips)."""
    try:
        find_fluidsynth()
        find_soundfont()
    except RenderError as exc:
        return str(exc)
    return None


def _fit_length(path: Path, duration: float, sample_rate: int) -> None:
    """Trim (with a short fade) or zero-pad the WAV at ``path`` to exactly ``duration`` s."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    n = round(duration * sample_rate)
    if len(data) >= n:
        data = data[:n].copy()
        fade = min(n, int(FADE_SECONDS * rate))
        if fade > 0:
            data[n - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)[:, None]
    else:
        data = np.concatenate([data, np.zeros((n - len(data), data.shape[1]), np.float32)])
    sf.write(str(path), data, rate, subtype="PCM_16")


def render_midi(
    midi: pretty_midi.PrettyMIDI | str | Path,
    out_wav: str | Path,
    *,
    duration: float | None = None,
    sample_rate: int = SAMPLE_RATE,
    gain: float = GAIN,
    timeout: float = 600.0,
) -> Path:
    """Render a PrettyMIDI object or a ``.mid`` file to a 16-bit stereo WAV at ``out_wav``.

    ``duration`` (seconds) trims or pads the result to that exact length. The WAV is
    written atomically (a reader never sees half a file). Raises :class:`RenderError`
    when fluidsynth or the soundfont is missing or fluidsynth fails.
    """
    exe = find_fluidsynth()
    soundfont = find_soundfont()
    out_wav = Path(out_wav)
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="render-", dir=out_wav.parent) as tmp:
        if isinstance(midi, pretty_midi.PrettyMIDI):
            mid_path = Path(tmp) / "in.mid"
            midi.write(str(mid_path))
        else:
            mid_path = Path(midi)
            if not mid_path.is_file():
                raise RenderError(f"No MIDI file at {mid_path}.")
        tmp_wav = Path(tmp) / "out.wav"
        cmd = [exe, "-ni", "-q", "-g", str(gain), "-r", str(sample_rate), "-F", str(tmp_wav),
               str(soundfont), str(mid_path)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RenderError(f"fluidsynth failed to run: {exc}") from exc
        if proc.returncode != 0 or not tmp_wav.is_file() or tmp_wav.stat().st_size <= 44:
            detail = (proc.stderr or proc.stdout).strip()[-500:]
            raise RenderError(f"fluidsynth could not render {mid_path.name}: {detail or 'no output'}")
        if duration is not None:
            _fit_length(tmp_wav, duration, sample_rate)
        tmp_wav.replace(out_wav)
    return out_wav
