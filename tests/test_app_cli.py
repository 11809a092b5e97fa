"""``python -m app.cli generate``: the whole pipeline in one process, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fake_services import InProcessTasks
from synth_music import song

from app import cli


@pytest.fixture(scope="module")
def track(tmp_path_factory) -> Path:
    t = song(["C:maj", "A:min", "F:maj", "G:maj"], bpm=110, bars=8)
    path = tmp_path_factory.mktemp("cli") / "bg.wav"
    sf.write(path, t.audio, t.sr)
    return path


def test_generate_writes_melody_song_stems_and_exports(track: Path, tmp_path: Path, capsys) -> None:
    lyrics = tmp_path / "lyrics.txt"
    lyrics.write_text("[Verse]\nSing a little song for me\nUnder the old apple tree\n")
    out = tmp_path / "out"
    code = cli.main(["generate", str(track), "--out", str(out), "--lyrics-file", str(lyrics), "--seed", "4",
                     "--style", "low_warm", "--takes", "2", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert "of 2 chosen by checks" in capsys.readouterr().err
    for name in ("melody/analysis.json", "melody/melody.mid", "mix.wav", "mix.mp3", "vocal.wav", "song.svp",
                 "song.ustx", "qc.json"):
        assert (out / name).stat().st_size > 0, name
    record = json.loads((out / "melody" / "melody.json").read_text())
    assert record["vocal_range"] == [45, 60]  # the style's range reached the melody
    assert all(45 <= n["pitch"] <= 60 for n in record["notes"])
    assert record["notes"][0]["syllable"] == "Sing"
    # The voice sang melody.json; its exports keep melody.mid's grid (its tempo_map), note for note.
    from tmik_make_vocal_mix.export import note_ticks
    from tmik_make_vocal_mix.score import load_score

    assert note_ticks(load_score(out / "melody" / "melody.json")) == note_ticks(load_score(out / "melody" / "melody.mid"))
    qc = json.loads((out / "qc.json").read_text())
    assert qc["style"] == "low_warm" and abs(qc["integrated_lufs"] + 14) <= 0.5
    # The take's word check listened to its first sung words and compared them with the lyrics.
    assert qc["intelligibility_reference"].startswith("Sing a little song")
    assert 0.0 <= qc["word_error_rate"] <= 1.0 and "intelligibility" in qc["passed"]
    mix = sf.info(str(out / "mix.wav"))
    assert mix.samplerate == sf.info(str(track)).samplerate
    # Both takes are kept; the other one becomes the song, remixed over the kept background.
    takes = json.loads((out / "takes.json").read_text())
    assert [t["take"] for t in takes["takes"]] == [1, 2] and takes["chosen_by"] == "checks"
    other = 3 - takes["chosen"]
    assert (out / f"take{other}_mix.mp3").stat().st_size > 0 and (out / "melody" / "background.wav").is_file()
    before = sf.read(out / "vocal.wav")[0]
    assert cli.main(["take", str(out), str(other), "--no-progress"]) == 0, capsys.readouterr().err
    assert f"take {other} is the song now (it was take {takes['chosen']})" in capsys.readouterr().err
    after = json.loads((out / "takes.json").read_text())
    assert after["chosen"] == other and after["chosen_by"] == "user"
    assert json.loads((out / "qc.json").read_text())["style"] == "low_warm"  # the song's style was kept
    assert not np.array_equal(sf.read(out / "vocal.wav")[0], before)


@pytest.mark.parametrize("args, message", [
    (["--sensitivity", "2"], "--sensitivity must be from 0 to 1"),
    (["--style", "opera"], "opera"),
    (["--tempo", "500"], "--tempo must be a number of beats per minute from 30 to 300, or 'half' or 'double'"),
    (["--tempo", "twice"], "got 'twice'"),
    (["--time-signature", "5/4"], "--time-signature must be one of 2/4, 3/4, 4/4, 6/8, 12/8, got '5/4'"),
])
def test_bad_options_exit_2_with_the_reason(track: Path, tmp_path: Path, capsys, args, message) -> None:
    assert cli.main(["generate", str(track), "--out", str(tmp_path / "o"), *args]) == 2
    assert message in capsys.readouterr().err


def test_a_text_file_named_wav_is_refused(tmp_path: Path, capsys) -> None:
    fake = tmp_path / "song.wav"
    fake.write_text("not audio at all " * 100)
    assert cli.main(["generate", str(fake), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "[" in err


def test_missing_out_is_explained(track: Path, capsys) -> None:
    assert cli.main(["generate", str(track)]) == 2
    assert "--out" in capsys.readouterr().err


def test_a_crash_in_a_stage_ends_the_command_with_a_message(track: Path, tmp_path: Path) -> None:
    # Before: a segfault in the vocal stage's qc (a broken numba cache) killed the CLI without a word.
    import os
    import signal
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "generate", str(track), "--out", str(tmp_path / "o"),
                             "--no-progress"], cwd=repo, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # follow its progress until the vocal stage runs
            lines.append(line)
            if "vocal:" in line:
                break
        child = next(int(p) for t in Path(f"/proc/{proc.pid}/task").iterdir()
                     for p in (t / "children").read_text().split()
                     if "tmik_common.task_child" in Path(f"/proc/{p}/cmdline").read_text())
        os.kill(child, signal.SIGSEGV)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = "".join(lines) + rest
    assert proc.returncode == 1, err[-2000:]
    assert "error: the vocal stage failed" in err and "SIGSEGV" in err and "[task_crashed]" in err


@pytest.mark.parametrize("args, expected", [
    (["--tempo", "96", "--time-signature", "3/4"], {"tempo": 96.0, "time_signature": "3/4"}),
    (["--tempo", "double"], {"tempo": "double", "time_signature": None}),
    ([], {"tempo": None, "time_signature": None}),
])
def test_tempo_and_time_signature_reach_the_analysis(track: Path, tmp_path: Path, monkeypatch, capsys, args,
                                                     expected) -> None:
    from tmik_bgm_conditional_melody_generation import analysis
    from tmik_common.audio import AudioError

    seen: dict[str, object] = {}

    def analyze_file(path, sensitivity=0.5, progress=None, *, tempo=None, time_signature=None):
        seen.update(tempo=tempo, time_signature=time_signature)
        raise AudioError("silent_audio", "stopped here by the test")

    monkeypatch.setattr(cli, "TaskProcess", InProcessTasks)
    monkeypatch.setattr(analysis, "analyze_file", analyze_file)
    assert cli.main(["generate", str(track), "--out", str(tmp_path / "o"), "--no-progress", *args]) == 2
    assert "stopped here by the test [silent_audio]" in capsys.readouterr().err
    assert seen == expected
