"""The melody capability end to end: compose(), the generate CLI and the service's generate task.

Uses the shipped default checkpoint on synthetic songs (tests/synth_music.py) with known
chords, so the results can be checked against the harmony that was rendered.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
from pathlib import Path

import miditoolkit
import numpy as np
import pretty_midi
import pytest
import soundfile as sf
from synth_music import song
from test_service import assert_json_error, put_input, submit, wait_for

from tmik_bgm_conditional_melody_generation import analysis, melody, service
from tmik_bgm_conditional_melody_generation.analysis import Analysis
from tmik_bgm_conditional_melody_generation.checkpoint import CheckpointError, resolve_checkpoint
from tmik_bgm_conditional_melody_generation.getscore import chord_tones, parse_chord_label, scale_pcs
from tmik_common.lyrics import parse_lyrics
from tmik_common.secrets import service_token

REPO = Path(__file__).resolve().parent.parent
LYRICS = "[Verse]\nHere comes the morning light\nSinging along the river\n\n[Chorus]\nOh we will sing again\n"


def pop_analysis(bars: int = 16, spb: float = 0.6) -> Analysis:
    beats = list(0.3 + spb * np.arange(bars * 4))
    downs = beats[::4]
    prog = ["C:maj", "G:maj", "A:min", "F:maj"]
    end = beats[-1] + spb
    chords = [(d, downs[i + 1] if i + 1 < len(downs) else end, prog[i % 4]) for i, d in enumerate(downs)]
    half = downs[bars // 2]
    return Analysis(end + 0.5, 60 / spb, "4/4", beats, downs, "C major", chords, [(0.0, half, "A"), (half, end, "A")])


@pytest.fixture(scope="module")
def model():
    return melody.load_model()


def test_melody_fits_the_harmony_range_and_key(model) -> None:
    a = pop_analysis()
    comp = melody.compose(a, seed=1, model=model, vocal_range=(60, 74))
    notes = comp.note_times()
    assert len(notes) >= 16
    scale = set(scale_pcs(0, "major"))
    assert all(60 <= p <= 74 for *_, p in notes)
    assert all(p % 12 in scale for *_, p in notes)
    on_beats = 0
    tones = 0
    for s, _, p in notes:
        if np.min(np.abs(np.array(a.beats) - s)) < 0.02:
            on_beats += 1
            label = next(lab for c0, c1, lab in a.chords if c0 <= s < c1)
            tones += p % 12 in chord_tones(*parse_chord_label(label))
    assert on_beats >= 8
    assert tones / on_beats >= 0.6, "the trained model with the chord bonus favours chord tones on beats"
    # Monophonic and in time order.
    assert all(e1 <= s2 + 1e-6 for (_, e1, _), (s2, _, _) in itertools.pairwise(notes))


def test_lyrics_give_one_note_per_syllable(model) -> None:
    lyrics = parse_lyrics(LYRICS)
    comp = melody.compose(pop_analysis(), seed=2, model=model, lyrics=lyrics)
    sung = [s for s in comp.song.lyrics if s and s != "-"]
    flat = [s.text for s in lyrics.syllables]
    assert sung[:len(flat)] == flat, "syllables are sung in order, one note each"


def test_randomness_and_seed(model) -> None:
    a = pop_analysis()
    same1 = melody.compose(a, seed=5, randomness=0.3, model=model).song.notes
    same2 = melody.compose(a, seed=5, randomness=0.3, model=model).song.notes
    other = melody.compose(a, seed=6, randomness=0.3, model=model).song.notes
    assert same1 == same2
    assert same1 != other
    with pytest.raises(ValueError, match="randomness"):
        melody.compose(a, randomness=1.5, model=model)


def test_parse_range() -> None:
    assert melody.parse_range("A3-E5") == (57, 76)
    assert melody.parse_range("60-72") == (60, 72)
    with pytest.raises(ValueError, match="LOW-HIGH"):
        melody.parse_range("high")


def test_missing_checkpoint_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        resolve_checkpoint(bad)


# -- CLI --------------------------------------------------------------------------------


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tmik_bgm_conditional_melody_generation.generate", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def pop_wav(tmp_path_factory) -> Path:
    track = song(["C:maj", "A:min", "F:maj", "G:maj"], bpm=100, bars=12)
    path = tmp_path_factory.mktemp("audio") / "pop.wav"
    sf.write(path, track.audio, track.sr)
    return path


def test_cli_writes_analysis_melody_and_record(tmp_path, pop_wav) -> None:
    lyr = tmp_path / "lyrics.txt"
    lyr.write_text(LYRICS, encoding="utf-8")
    out = tmp_path / "out"
    r = run_cli(pop_wav, "--out", out, "--seed", "4", "--randomness", "0.2", "--lyrics-file", lyr, "--range", "C4-C5")
    assert r.returncode == 0, r.stderr
    assert "notes" in r.stderr
    a = json.loads((out / "analysis.json").read_text())
    record = json.loads((out / "melody.json").read_text())
    assert record["seed"] == 4 and record["vocal_range"] == [60, 72]
    pm = pretty_midi.PrettyMIDI(str(out / "melody.mid"))
    assert len(pm.instruments) == 1
    notes = pm.instruments[0].notes
    assert len(notes) == len(record["notes"])
    # The MIDI sounds where melody.json says, on the audio's timeline, after the first beat.
    assert np.allclose([n.start for n in notes], [n["start"] for n in record["notes"]], atol=5e-3)
    assert notes[0].start >= a["beats"][0] - 0.01
    assert all(60 <= n.pitch <= 72 for n in notes)
    lyr_events = miditoolkit.MidiFile(str(out / "melody.mid")).lyrics
    assert [x.text for x in lyr_events][:4] == ["Here", "comes", "the", "morn"]


def test_cli_bad_inputs_exit_2(tmp_path, pop_wav) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n [Chorus]\n", encoding="utf-8")
    r = run_cli(pop_wav, "--out", tmp_path / "o", "--lyrics-file", empty)
    assert r.returncode == 2 and "empty_lyrics" in r.stderr
    r = run_cli(pop_wav, "--out", tmp_path / "o", "--range", "C4-D4")
    assert r.returncode == 2 and "bad_vocal_range" in r.stderr
    r = run_cli(pop_wav, "--out", tmp_path / "o", "--checkpoint", tmp_path / "missing.pt")
    assert r.returncode == 2 and "does not exist" in r.stderr
    noise = tmp_path / "noise.wav"
    noise.write_bytes(b"RIFF1234WAVEjunk" * 10)
    r = run_cli(noise, "--out", tmp_path / "o")
    assert r.returncode == 2 and "[" in r.stderr


def test_cli_passes_the_tempo_and_time_signature_to_the_analysis(tmp_path, monkeypatch, capsys) -> None:
    from tmik_bgm_conditional_melody_generation import generate
    from tmik_common.audio import AudioError

    seen = {}

    def analyze_file(path, sensitivity=0.5, progress=None, **overrides):
        seen.update(overrides)
        raise AudioError("silent_audio", "stopped by the test")

    monkeypatch.setattr(analysis, "analyze_file", analyze_file)
    monkeypatch.setattr(analysis, "warm_up", lambda: 0.0)
    args = [str(tmp_path / "in.wav"), "--out", str(tmp_path / "o"), "--tempo", "72.5", "--time-signature", "6/8"]
    assert generate.main(args) == 2
    assert "stopped by the test [silent_audio]" in capsys.readouterr().err
    assert seen == {"tempo": 72.5, "time_signature": "6/8"}
    with pytest.raises(SystemExit):
        generate.main([*args[:3], "--tempo", "0"])
    assert "argument --tempo: the tempo must be" in capsys.readouterr().err


# -- service ----------------------------------------------------------------------------


@pytest.fixture
def gen_client(tmp_path, monkeypatch):
    root = tmp_path / "shared_data"
    root.mkdir()
    monkeypatch.setenv("SHARED_DATA_DIR", str(root))
    monkeypatch.setattr(analysis, "warm_up", lambda: 0.0)
    app = service.create_app(isolation="thread")
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {service_token(root)}"
    yield client, root
    app.extensions[service.EXTENSION].runner.close(cancel=True)


def test_service_generate_task(gen_client, pop_wav) -> None:
    client, root = gen_client
    audio = put_input(root, "job1", sf.read(pop_wav, dtype="float32")[0])
    r = submit(client, "job1", audio, {"randomness": 0.4, "seed": 9, "lyrics": LYRICS, "vocal_range": "A3-E5"},
               type_="generate")
    assert r.status_code == 202, r.get_data(as_text=True)
    task = wait_for(client, r.get_json()["task_id"], {"done", "failed"}, timeout=240)
    assert task["state"] == "done", task
    assert task["outputs"] == {"analysis": "melody_results/job1/analysis.json",
                               "melody": "melody_results/job1/melody.mid",
                               "melody_json": "melody_results/job1/melody.json"}
    record = json.loads((root / task["outputs"]["melody_json"]).read_text())
    assert record["seed"] == 9 and record["notes"]
    assert all(57 <= n["pitch"] <= 76 for n in record["notes"])
    health = client.get("/health").get_json()
    assert "generate" in health["task_types"]


@pytest.mark.parametrize("params, code", [
    ({"randomness": 2}, "invalid_param"),
    ({"seed": -1}, "invalid_param"),
    ({"seed": 1.5}, "invalid_param"),
    ({"vocal_range": "loud"}, "invalid_param"),
    ({"vocal_range": [60]}, "invalid_param"),
    ({"lyrics": 5}, "invalid_param"),
    ({"lyrics": "!!! ..."}, "empty_lyrics"),
    ({"style": "pop"}, None),
    ({"tempo": 301}, "invalid_param"),
    ({"tempo": "triple"}, "invalid_param"),
    ({"time_signature": "5/4"}, "invalid_param"),
])
def test_service_generate_refuses_bad_params(gen_client, params, code) -> None:
    client, root = gen_client
    audio = put_input(root, "job2", np.zeros(22050 * 6, dtype=np.float32))
    r = submit(client, "job2", audio, params, type_="generate")
    assert_json_error(r, 422, code)


def test_service_generate_runs_the_analysis_at_the_tempo_and_meter_asked_for(gen_client, monkeypatch) -> None:
    client, root = gen_client
    seen = []

    def analyze_file(path, sensitivity=0.5, progress=None, *, tempo=None, time_signature=None):
        seen.append((tempo, time_signature))
        return pop_analysis()

    monkeypatch.setattr(analysis, "analyze_file", analyze_file)
    audio = put_input(root, "job4", np.zeros(22050 * 6, dtype=np.float32))
    for params in ({"tempo": 100, "time_signature": "3/4"}, {"tempo": "double"}, {}):
        r = submit(client, "job4", audio, {"seed": 1, **params}, type_="generate")
        assert r.status_code == 202, r.get_data(as_text=True)
        assert wait_for(client, r.get_json()["task_id"], {"done", "failed"}, timeout=120)["state"] == "done"
    assert seen == [(100.0, "3/4"), ("double", None), (None, None)]


def test_service_generate_cancel(gen_client, pop_wav, monkeypatch) -> None:
    client, root = gen_client
    started = threading.Event()
    real = melody.compose

    def slow_compose(*args, progress=None, **kwargs):
        started.set()
        return real(*args, progress=progress, steps=400, **{k: v for k, v in kwargs.items() if k != "steps"})

    monkeypatch.setattr("tmik_bgm_conditional_melody_generation.generate.compose", slow_compose)
    audio = put_input(root, "job3", sf.read(pop_wav, dtype="float32")[0])
    task_id = submit(client, "job3", audio, type_="generate").get_json()["task_id"]
    assert started.wait(120)
    client.delete(f"/v1/tasks/{task_id}")
    task = wait_for(client, task_id, {"cancelled", "done", "failed"}, timeout=10)
    assert task["state"] == "cancelled"


def test_cli_regenerates_one_span_and_keeps_the_rest(tmp_path, pop_wav) -> None:
    out = tmp_path / "out"
    assert run_cli(pop_wav, "--out", out, "--seed", "1").returncode == 0
    before = json.loads((out / "melody.json").read_text())["notes"]
    r = run_cli(pop_wav, "--out", out, "--seed", "2", "--regenerate", "8-16")
    assert r.returncode == 0, r.stderr
    after = json.loads((out / "melody.json").read_text())["notes"]

    def outside(notes):
        return [(round(n["start"], 2), n["pitch"]) for n in notes if n["start"] < 7.9 or n["start"] >= 16.1]

    def inside(notes):
        return [(round(n["start"], 2), n["pitch"]) for n in notes if 8.1 <= n["start"] < 15.9]

    assert outside(after) == outside(before)
    assert inside(after) != inside(before)
    r = run_cli(pop_wav, "--out", tmp_path / "fresh", "--regenerate", "8-16")
    assert r.returncode == 2 and "no_previous_melody" in r.stderr
    r = run_cli(pop_wav, "--out", out, "--regenerate", "16-8")
    assert r.returncode == 2 and "START" in r.stderr
