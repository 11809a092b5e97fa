"""Uploads (app/submit.py): the upload kept as sent, the capped working copy every stage reads, refusals
that name the user's file, re-runs, the sweep of uploads a crash interrupted, and the CLI's working copy."""

from __future__ import annotations

import dataclasses
import io
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from flac_files import write_square_flac

from app import cli, config, jobs, submit
from app.context import create_context
from tmik_common.tasks import TaskRequest

SECONDS = 6.0
USER_NAME = "My Track (final mix)"


def audio_bytes(rate: int = 22050, channels: int = 1, seconds: float = SECONDS, fmt: str = "WAV",
                subtype: str = "PCM_16", data: np.ndarray | None = None) -> bytes:
    if data is None:
        t = np.arange(int(rate * seconds)) / rate
        data = np.stack([0.3 * np.sin(2 * np.pi * 110 * (c + 2) * t) for c in range(channels)], axis=1)
    buf = io.BytesIO()
    sf.write(buf, data, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    monkeypatch.setenv("SHARED_DATA_DIR", str(tmp_path / "shared"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
    for name in ("MAX_UPLOAD_MB", "MAX_AUDIO_SECONDS", "MIN_AUDIO_SECONDS", "MAX_DECODED_MB"):
        monkeypatch.delenv(name, raising=False)
    return create_context(config.load())


def submit_bytes(ctx, data: bytes, filename: str):
    return submit.submit_job(ctx.cfg, ctx.sessions, io.BytesIO(data), filename, {"seed": 1})


def input_dir(ctx, job_id: str) -> Path:
    return ctx.cfg.shared_data_dir / "input" / job_id


# --------------------------------------------------------------------------- the upload and its working copy


def test_upload_is_kept_as_sent_and_the_stages_get_a_capped_working_copy(ctx):
    sent = audio_bytes(rate=96_000, channels=6, fmt="FLAC", subtype="PCM_24")

    job = submit_bytes(ctx, sent, f"{USER_NAME}.flac")

    folder = input_dir(ctx, job.id)
    assert sorted(p.name for p in folder.iterdir()) == ["background.wav", "original.flac"]
    assert (folder / "original.flac").read_bytes() == sent
    assert job.input_file == f"input/{job.id}/background.wav"  # what the job manager hands both services
    info = sf.info(str(folder / "background.wav"))
    assert (info.format, info.subtype, info.samplerate, info.channels) == ("WAV", "FLOAT", 48_000, 2)
    assert info.duration == pytest.approx(SECONDS, abs=0.01)
    assert job.params["input_seconds"] == SECONDS and job.input_name == f"{USER_NAME}.flac"
    # The user downloads what they sent, under their own name.
    assert submit.resolve_artifact(ctx.cfg, job, "input") == folder / "original.flac"
    assert submit.list_artifacts(ctx.cfg, job) == [("input", folder / "original.flac")]


def test_decompression_bomb_upload_is_refused_before_decoding(ctx, tmp_path, monkeypatch):
    bomb = write_square_flac(tmp_path / "bomb.flac", 192_000, 8, 899.9).read_bytes()  # 1.4 MB -> 5.3 GB

    def decoded(*args, **kwargs):
        raise AssertionError("the upload was decoded")

    monkeypatch.setattr(sf.SoundFile, "read", decoded)
    with pytest.raises(submit.SubmitError) as info:
        submit_bytes(ctx, bomb, f"{USER_NAME}.flac")

    err = info.value
    assert (err.code, err.field, err.status) == ("too_large_decoded", "file", 422)
    assert err.message.startswith(f"{USER_NAME}.flac: ") and "MAX_DECODED_MB" in err.message
    assert list((ctx.cfg.shared_data_dir / "input").iterdir()) == []
    assert jobs.list_jobs(ctx.sessions)[1] == 0


def _nan_wav() -> bytes:
    data = np.sin(np.arange(int(22050 * SECONDS)) / 10.0) * 0.3
    data[500] = np.nan
    return audio_bytes(data=data, subtype="FLOAT")


def _huge_wav() -> bytes:
    data = np.sin(np.arange(int(22050 * SECONDS)) / 10.0) * 0.3
    data[500] = 1e30
    return audio_bytes(data=data, subtype="FLOAT")


@pytest.mark.parametrize(("ext", "make", "code"), [
    (".wav", lambda: b"These are my lyrics, not audio.\n" * 50, "not_audio"),
    (".mp3", lambda: b"\x89PNG\r\n\x1a\n" + b"\x00" * 2000, "not_audio"),
    (".wav", lambda: audio_bytes()[:5000], "corrupt_audio"),
    (".wav", lambda: b"", "empty_file"),
    (".wav", lambda: audio_bytes(seconds=2.0), "too_short"),
    (".wav", lambda: audio_bytes(seconds=12.0), "too_long"),
    (".wav", lambda: audio_bytes(data=np.zeros(22050 * 6)), "silent_audio"),
    (".wav", _nan_wav, "non_finite_samples"),
    (".wav", _huge_wav, "out_of_range_samples"),
    (".wav", lambda: audio_bytes(rate=4000), "unsupported_sample_rate"),
])
def test_every_audio_refusal_names_the_users_file_not_ours(ctx, ext, make, code):
    cfg = dataclasses.replace(ctx.cfg, max_audio_seconds=10.0)
    job_id = "0d6f1a3e-0000-4000-8000-000000000001"
    with pytest.raises(submit.SubmitError) as info:
        submit.store_upload(cfg, job_id, io.BytesIO(make()), f"{USER_NAME}{ext}")

    err = info.value
    assert err.code == code and err.field == "file"
    assert f"{USER_NAME}{ext}" in err.message
    for ours in ("original", "background", job_id, str(cfg.shared_data_dir)):
        assert ours not in err.message, err.message
    assert not input_dir(ctx, job_id).exists()


def test_a_long_file_name_keeps_its_extension(ctx):
    name = "A" * 150 + " remix " + "B" * 150 + ".wav"

    job = submit_bytes(ctx, audio_bytes(), name)

    assert len(job.input_name) == submit.MAX_NAME_CHARS and job.input_name.endswith("B.wav")
    assert submit.safe_filename("x" * 300 + ".flac") == "x" * 195 + ".flac"
    assert submit.safe_filename("song." + "e" * 300) == "song." + "e" * 195  # no real extension: just cut


# --------------------------------------------------------------------------- re-runs


def test_rerun_copies_the_upload_and_the_working_copy(ctx):
    sent = audio_bytes(rate=88_200, channels=2, fmt="FLAC")
    old = submit_bytes(ctx, sent, f"{USER_NAME}.flac")

    new = submit.rerun_job(ctx.cfg, ctx.sessions, old, {"style": "choir"})

    folder, old_folder = input_dir(ctx, new.id), input_dir(ctx, old.id)
    assert new.input_file == f"input/{new.id}/background.wav"
    assert sorted(p.name for p in folder.iterdir()) == ["background.wav", "original.flac"]
    for name in ("original.flac", "background.wav"):
        assert (folder / name).read_bytes() == (old_folder / name).read_bytes()
    assert (folder / "original.flac").read_bytes() == sent
    assert sf.info(str(folder / "background.wav")).samplerate == 44_100


def test_rerun_of_a_job_stored_before_working_copies_makes_one(ctx):
    job_id = "0d6f1a3e-0000-4000-8000-000000000002"
    folder = input_dir(ctx, job_id)
    folder.mkdir(parents=True)
    sent = audio_bytes(rate=96_000, channels=2, fmt="FLAC")
    (folder / "background.flac").write_bytes(sent)  # the old layout: the upload itself is the input
    old = jobs.create_job(ctx.sessions, job_id=job_id, input_file=f"input/{job_id}/background.flac",
                          input_name="old.flac", params={"seed": 3})
    assert submit.resolve_artifact(ctx.cfg, old, "input") == folder / "background.flac"

    new = submit.rerun_job(ctx.cfg, ctx.sessions, old, {})

    new_folder = input_dir(ctx, new.id)
    assert (new_folder / "original.flac").read_bytes() == sent
    assert new.input_file == f"input/{new.id}/background.wav"
    assert sf.info(str(new_folder / "background.wav")).samplerate == 48_000


# --------------------------------------------------------------------------- interrupted uploads


def _age(folder: Path, seconds: float) -> None:
    then = time.time() - seconds
    for path in [*folder.rglob("*"), folder]:
        os.utime(path, (then, then), follow_symlinks=False)


def test_sweep_removes_only_old_input_folders_without_a_job(ctx):
    root = ctx.cfg.shared_data_dir / "input"
    with_row = submit_bytes(ctx, audio_bytes(), "kept.wav")
    _age(input_dir(ctx, with_row.id), 3600)
    orphan = root / "11111111-0000-4000-8000-000000000000"  # the app crashed mid-upload an hour ago
    orphan.mkdir()
    (orphan / "original.wav").write_bytes(audio_bytes())
    _age(orphan, 3600)
    fresh = root / "22222222-0000-4000-8000-000000000000"  # being uploaded right now
    fresh.mkdir()
    (fresh / "original.wav").write_bytes(b"RIFF")
    writing = root / "33333333-0000-4000-8000-000000000000"  # an old folder whose working copy is being written
    writing.mkdir()
    (writing / "original.wav").write_bytes(audio_bytes())
    _age(writing, 3600)
    (writing / ".background.wav.part").write_bytes(b"RIFF")
    (root / "stray.txt").write_text("not a job folder")
    (root / "demo").mkdir()  # not named like a job: someone's own files (the services' examples use input/demo)
    (root / "demo" / "background.wav").write_bytes(audio_bytes())
    _age(root / "demo", 3600)

    removed = submit.sweep_orphan_uploads(ctx.cfg, ctx.sessions)

    assert removed == [orphan.name]
    assert sorted(p.name for p in root.iterdir()) == sorted([with_row.id, fresh.name, writing.name, "stray.txt",
                                                             "demo"])
    assert (input_dir(ctx, with_row.id) / "background.wav").is_file()
    assert submit.sweep_orphan_uploads(ctx.cfg, ctx.sessions) == []


def test_the_app_sweeps_interrupted_uploads_when_it_starts(ctx, monkeypatch):
    from app import app as app_main

    orphan = ctx.cfg.shared_data_dir / "input" / "44444444-0000-4000-8000-000000000000"
    orphan.mkdir()
    (orphan / "original.mp3").write_bytes(b"ID3" + b"\x00" * 100)
    _age(orphan, 3600)
    monkeypatch.setattr(app_main, "create_asgi", lambda ctx: None)  # no web server in this test
    monkeypatch.setattr(app_main._Server, "run", lambda self, sockets=None: None)

    assert app_main.main([]) == 0

    assert not orphan.exists()


# --------------------------------------------------------------------------- the CLI


def test_cli_stages_read_the_capped_working_copy(tmp_path, monkeypatch):
    from tmik_bgm_conditional_melody_generation import generate as melody
    from tmik_make_vocal_mix import render

    track = tmp_path / "hires.flac"
    track.write_bytes(audio_bytes(rate=192_000, channels=8, fmt="FLAC", subtype="PCM_24"))
    seen: dict[str, tuple] = {}

    def run_generation(audio, out_dir, **kwargs):
        info = sf.info(str(audio))
        seen["melody"] = (Path(audio) != track, info.samplerate, info.channels)

    def run_render(background, melody_path, out_dir, **kwargs):
        info = sf.info(str(background))
        seen["vocal"] = (Path(background) != track, info.samplerate, info.channels)
        return SimpleNamespace(qc={"style": "pop_bright", "pitch_accuracy": 1.0, "integrated_lufs": -14.0,
                                   "true_peak_dbtp": -1.0}, outputs={}, warnings=[])

    monkeypatch.setattr(melody, "run_generation", run_generation)
    monkeypatch.setattr(render, "run_render", run_render)
    # The stages as the CLI's task process runs them, here in this process so that the patches apply.
    stages = cli.pipeline_task_types()
    params = {"input": str(track), "out": str(tmp_path / "out"), "sensitivity": 0.5, "randomness": 0.5, "seed": 0,
              "style": "pop_bright", "target_lufs": -14.0, "lyrics_file": None, "checkpoint": None,
              "work": str(tmp_path / "work")}
    (tmp_path / "work").mkdir()

    def run(stage: str, extra: dict) -> dict:
        request = TaskRequest("cli", stage, {}, {**params, **extra})
        return stages[stage].prepare(request, tmp_path)(lambda step, fraction: None)

    first = run("melody", {})
    run("vocal", {"background": first["background"]})

    assert seen == {"melody": (True, 48_000, 2), "vocal": (True, 48_000, 2)}


def test_cli_refuses_a_bomb_with_its_code(tmp_path, capsys):
    bomb = write_square_flac(tmp_path / "bomb.flac", 192_000, 8, 899.9)

    assert cli.main(["generate", str(bomb), "--out", str(tmp_path / "out"), "--no-progress"]) == 2

    err = capsys.readouterr().err
    assert "[too_large_decoded]" in err and "MAX_DECODED_MB" in err
