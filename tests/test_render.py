"""The render CLI end to end: a melody sung over a background, mixed, mastered, exported, checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import miditoolkit
import numpy as np
import pytest
import soundfile as sf
from miditoolkit.midi.containers import Instrument, Lyric, Note, TempoChange

from tmik_make_vocal_mix.render import RenderError, fit_range
from tmik_make_vocal_mix.score import read_melody
from tmik_make_vocal_mix.styles import get_style

REPO = Path(__file__).resolve().parent.parent
SR = 44100


def background(path: Path, seconds: float = 12.0) -> Path:
    t = np.arange(int(seconds * SR)) / SR
    chord = sum(0.1 * np.sin(2 * np.pi * f * t) for f in (130.81, 164.81, 196.0))
    beat = np.zeros_like(t)
    rng = np.random.default_rng(0)
    for s in np.arange(0, seconds, 0.5):
        n = int(s * SR)
        beat[n:n + 2000] += rng.standard_normal(min(2000, len(t) - n)) * np.exp(-np.arange(min(2000, len(t) - n)) / 300)
    sf.write(path, np.stack([chord + 0.3 * beat, chord + 0.25 * beat], axis=1).astype(np.float32), SR)
    return path


def melody(path: Path, pitches=(60, 62, 64, 65, 67, 65, 64, 62), syllables=("la",) * 8) -> Path:
    midi = miditoolkit.MidiFile(ticks_per_beat=480)
    midi.tempo_changes = [TempoChange(120.0, 0)]
    lead = Instrument(0, name="lead")
    for i, (p, s) in enumerate(zip(pitches, syllables, strict=True)):
        start = 960 + i * 480 + (480 if i >= 4 else 0)  # a rest between two phrases
        lead.notes.append(Note(96, p, start, start + 440))
        if s:
            midi.lyrics.append(Lyric(s, start))
    midi.instruments = [lead]
    midi.dump(str(path), charset="utf-8")
    return path


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tmik_make_vocal_mix.render", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("render")
    return background(d / "bg.wav"), melody(d / "melody.mid", syllables=("twin", "kle", "twin", "kle", "lit", "tle",
                                                                         "star", "-"))


def test_render_writes_every_file_and_meets_the_bars(tmp_path, inputs) -> None:
    bg, mid = inputs
    out = tmp_path / "out"
    r = run_cli("--background", bg, "--melody", mid, "--out", out, "--style", "pop_bright")
    assert r.returncode == 0, r.stderr
    for name in ("mix.wav", "mix.mp3", "vocal.wav", "vocal_fx.wav", "instrumental.wav", "melody_lyrics.mid",
                 "score.musicxml", "song.svp", "song.ustx", "lyrics.lrc", "song.vsqx", "song.ust", "song.acep",
                 "qc.json", "takes.json", "take1_vocal.wav", "take2_mix.mp3", "take3_mix.mp3"):
        assert (out / name).is_file(), name
    info, bg_info = sf.info(out / "mix.wav"), sf.info(bg)
    assert (info.samplerate, info.frames, info.channels, info.subtype) == (bg_info.samplerate, bg_info.frames, 2,
                                                                           "PCM_24")
    q = json.loads((out / "qc.json").read_text())
    assert q["pitch_accuracy"] >= 0.9
    assert abs(q["integrated_lufs"] + 14.0) <= 0.5 and q["true_peak_dbtp"] <= -1.0
    # The vocal sounds where the notes are and rests between the phrases.
    vocal, sr = sf.read(out / "vocal.wav")
    rms = lambda a, b: float(np.sqrt(np.mean(vocal[int(a * sr):int(b * sr)] ** 2)))
    assert rms(1.1, 2.8) > 10 * rms(3.0, 3.4)
    # The exports carry the lyrics.
    assert [ly.text for ly in miditoolkit.MidiFile(str(out / "melody_lyrics.mid")).lyrics][:3] == ["twin", "kle",
                                                                                                   "twin"]


def test_styles_differ_and_list(tmp_path, inputs) -> None:
    r = run_cli("--list-styles")
    assert r.returncode == 0 and "choir" in r.stdout and "low_warm" in r.stdout
    bg, mid = inputs
    a = run_cli("--background", bg, "--melody", mid, "--out", tmp_path / "a", "--style", "low_warm", "--takes", "1")
    assert a.returncode == 0, a.stderr
    q = json.loads((tmp_path / "a" / "qc.json").read_text())
    assert q["style"] == "low_warm" and q["pitch_accuracy"] >= 0.85
    takes = json.loads((tmp_path / "a" / "takes.json").read_text())
    assert [t["take"] for t in takes["takes"]] == [1] and takes["reason"] == "the only take"
    r = run_cli("--background", bg, "--melody", mid, "--out", tmp_path / "b", "--takes", "6")
    assert r.returncode == 2 and "invalid_param" in r.stderr


def test_bad_inputs_exit_2(tmp_path, inputs) -> None:
    bg, mid = inputs
    broken = tmp_path / "broken.mid"
    broken.write_bytes(b"MThd garbage")
    r = run_cli("--background", bg, "--melody", broken, "--out", tmp_path / "o")
    assert r.returncode == 2 and "corrupt_midi" in r.stderr
    r = run_cli("--background", bg, "--melody", mid, "--out", tmp_path / "o", "--style", "opera")
    assert r.returncode == 2 and "unknown_style" in r.stderr
    r = run_cli("--background", tmp_path / "missing.wav", "--melody", mid, "--out", tmp_path / "o")
    assert r.returncode == 2 and "file_not_found" in r.stderr
    wide = melody(tmp_path / "wide.mid", pitches=(40, 50, 60, 70, 80, 70, 60, 50))
    r = run_cli("--background", bg, "--melody", wide, "--out", tmp_path / "o")
    assert r.returncode == 2 and "melody_out_of_range" in r.stderr


def test_fit_range_moves_by_octaves_only(tmp_path) -> None:
    score = read_melody(melody(tmp_path / "m.mid", pitches=(72, 74, 76, 77, 79, 77, 76, 74)))
    style = get_style("low_warm")
    moved, warnings = fit_range(score, style)
    shifts = {n.pitch - m.pitch for n, m in zip(score.notes, moved.notes, strict=True)}
    assert len(shifts) == 1 and shifts.pop() % 12 == 0
    assert all(style.low <= n.pitch <= style.high for n in moved.notes)
    assert warnings
    with pytest.raises(RenderError):
        fit_range(read_melody(melody(tmp_path / "w.mid", pitches=(40, 50, 60, 70, 80, 70, 60, 50))),
                  get_style("pop_bright"))


def test_render_cli_sings_melody_json_and_refuses_a_bad_one(tmp_path, inputs) -> None:
    from test_vocal_service import melody_json

    bg, _ = inputs
    song = melody_json(tmp_path / "melody.json")
    out = tmp_path / "out"
    r = run_cli("--background", bg, "--melody", song, "--out", out)
    assert r.returncode == 0, r.stderr
    lyrics = [ly.text for ly in miditoolkit.MidiFile(str(out / "melody_lyrics.mid")).lyrics]
    assert lyrics[:7] == ["Twin", "kle", "twin", "kle", "lit", "tle", "star"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"notes": [{"start": 1.0, "end": 0.5, "pitch": 60}]}')
    r = run_cli("--background", bg, "--melody", bad, "--out", tmp_path / "o")
    assert r.returncode == 2 and "melody_bad_field" in r.stderr and "note 0" in r.stderr
