"""Behaviour tests of ``python -m tmik_bgm_conditional_melody_generation.analyze``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tmik_bgm_conditional_melody_generation import analysis, analyze
from tmik_bgm_conditional_melody_generation.analysis import Analysis

REPO = Path(__file__).resolve().parent.parent
SR = 22050
CONTRACT_KEYS = {"duration", "tempo", "time_signature", "beats", "downbeats", "key", "chords", "sections",
                 "tempo_candidates"}


def beat_track(seconds: float = 8.0, bpm: float = 120.0) -> np.ndarray:
    """An A minor triad under a broadband click on every beat."""
    t = np.arange(int(seconds * SR)) / SR
    y = sum(0.08 * np.sin(2 * np.pi * f * t) for f in (220.0, 261.63, 329.63))
    n_click = int(0.05 * SR)
    click = np.random.default_rng(1).standard_normal(n_click) * np.exp(-np.arange(n_click) / (0.008 * SR))
    for start in np.arange(0.0, seconds - 0.05, 60.0 / bpm):
        n = int(start * SR)
        y[n:n + n_click] += 0.6 * click
    return (y / np.max(np.abs(y)) * 0.8).astype(np.float32)


def run_cli(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tmik_bgm_conditional_melody_generation.analyze", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
    )


def test_help_explains_sensitivity():
    result = run_cli("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--out" in text and "--sensitivity" in text
    assert "how readily the beat tracker follows tempo changes and weak onsets" in text
    assert "0 = steady grid, 1 = follows expressive timing" in text


def test_analyses_a_file_and_summarises(tmp_path):
    wav = tmp_path / "song.wav"
    sf.write(wav, beat_track(), SR, subtype="PCM_16")
    out = tmp_path / "nested" / "analysis.json"
    result = run_cli(wav, "--out", out, "--sensitivity", "0.3")
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert set(data) == CONTRACT_KEYS
    assert data["beats"] and data["tempo"] > 0
    assert "BPM" in result.stderr and data["key"] in result.stderr and "beats" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("content, code", [
    (b"definitely not audio\n" * 50, "not_audio"),
    (None, "file_not_found"),
])
def test_bad_input_exits_2_with_the_loader_message(tmp_path, content, code):
    wav = tmp_path / "bad.wav"
    if content is not None:
        wav.write_bytes(content)
    out = tmp_path / "analysis.json"
    result = run_cli(wav, "--out", out)
    assert result.returncode == 2
    assert code in result.stderr and "error:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_silent_input_exits_2(tmp_path):
    wav = tmp_path / "silence.wav"
    sf.write(wav, np.zeros(8 * SR, dtype=np.float32), SR)
    result = run_cli(wav, "--out", tmp_path / "a.json")
    assert result.returncode == 2 and "silent" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["1.5", "-0.1", "loud"])
def test_sensitivity_outside_0_1_is_a_usage_error(tmp_path, value, capsys):
    with pytest.raises(SystemExit) as exc:
        analyze.main([str(tmp_path / "x.wav"), "--out", str(tmp_path / "a.json"), "--sensitivity", value])
    assert exc.value.code == 2
    assert "sensitivity" in capsys.readouterr().err


def test_out_is_required(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        analyze.main([str(tmp_path / "x.wav")])
    assert exc.value.code == 2


def test_main_passes_sensitivity_and_reports_progress(tmp_path, monkeypatch, capsys):
    seen = {}

    def analyze_file(path, sensitivity=0.5, progress=None, *, tempo=None, time_signature=None):
        seen.update(sensitivity=sensitivity, tempo=tempo, time_signature=time_signature)
        progress("beats", 0.5)
        return Analysis(duration=8.0, tempo=96.0, time_signature="3/4", beats=[0.5, 1.0, 1.5],
                        downbeats=[0.5], key="G major", chords=[(0.0, 8.0, "G:maj")],
                        sections=[(0.0, 8.0, "A")])

    monkeypatch.setattr(analysis, "analyze_file", analyze_file)
    out = tmp_path / "analysis.json"
    assert analyze.main([str(tmp_path / "in.wav"), "--out", str(out), "--sensitivity", "1"]) == 0
    assert seen == {"sensitivity": 1.0, "tempo": None, "time_signature": None}  # tempo, meter: automatic
    err = capsys.readouterr().err
    assert "96.0 BPM" in err and "3/4" in err and "G major" in err
    assert "3 beats" in err and "1 downbeat," in err and "1 chord," in err and "1 section" in err
    assert json.loads(out.read_text())["time_signature"] == "3/4"


@pytest.mark.parametrize("args, tempo, time_signature", [
    (["--tempo", "108", "--time-signature", "3/4"], 108.0, "3/4"),
    (["--tempo", "half"], "half", None),
    (["--tempo", "double", "--time-signature", "12/8"], "double", "12/8"),
])
def test_main_passes_the_tempo_and_time_signature_override(tmp_path, monkeypatch, args, tempo, time_signature):
    seen = {}

    def analyze_file(path, sensitivity=0.5, progress=None, **overrides):
        seen.update(overrides)
        return Analysis(duration=8.0, tempo=108.0, time_signature="3/4", beats=[0.5, 1.0, 1.5], downbeats=[0.5],
                        key="G major")

    monkeypatch.setattr(analysis, "analyze_file", analyze_file)
    assert analyze.main([str(tmp_path / "in.wav"), "--out", str(tmp_path / "a.json"), *args]) == 0
    assert seen == {"tempo": tempo, "time_signature": time_signature}


@pytest.mark.parametrize("args, message", [
    (["--tempo", "500"], "argument --tempo: the tempo must be a number of beats per minute from 30 to 300"),
    (["--tempo", "quick"], "got 'quick'"),
    (["--time-signature", "7/8"], "argument --time-signature: the time signature must be one of 2/4, 3/4"),
])
def test_a_tempo_or_time_signature_not_allowed_is_a_usage_error(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        analyze.main([str(tmp_path / "x.wav"), "--out", str(tmp_path / "a.json"), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
