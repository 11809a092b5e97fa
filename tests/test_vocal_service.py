"""Behaviour tests of the vocal-mix service's HTTP edge (Flask test client): health, styles, render tasks."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import soundfile as sf
from test_render import background, melody

from tmik_common.secrets import service_token
from tmik_make_vocal_mix import render, service
from tmik_make_vocal_mix.engines import neural
from tmik_make_vocal_mix.styles import list_styles


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "shared_data"
    root.mkdir()
    monkeypatch.setenv("SHARED_DATA_DIR", str(root))
    monkeypatch.setenv("VOCAL_TASK_WORKERS", "1")
    for name in ("TARGET_LUFS", "TRUE_PEAK_DBTP", "QC_INTELLIGIBILITY_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TAKES", "1")  # one take per render unless a test asks for more (tests/test_takes.py: 3)
    return root


@pytest.fixture
def client(data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    # The real warm-up: it builds the neural voice model once, then finds it cached on disk.
    calls = []
    real = neural.build_controllable_model
    monkeypatch.setattr(neural, "build_controllable_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    app = service.create_app(isolation="thread")
    app.warm_up_calls = calls
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {service_token(data_dir)}"
    yield client
    app.extensions[service.EXTENSION].runner.close(cancel=True)


@pytest.fixture
def job(data_dir: Path) -> dict[str, str]:
    """A job's inputs with a MIDI melody (the fallback): input/<job>/background.wav, melody_results/<job>/melody.mid."""
    (data_dir / "input" / "v1").mkdir(parents=True)
    (data_dir / "melody_results" / "v1").mkdir(parents=True)
    background(data_dir / "input" / "v1" / "background.wav", seconds=7.0)
    melody(data_dir / "melody_results" / "v1" / "melody.mid")
    return {"background": "input/v1/background.wav", "melody": "melody_results/v1/melody.mid"}


# melody.json for the same notes as test_render.melody(): "Twinkle twinkle little star", a melisma on "star".
WORDS = [("Twinkle", "Twin", 1), ("Twinkle", "kle", 0), ("twinkle", "twin", 1), ("twinkle", "kle", 0),
         ("little", "lit", 1), ("little", "tle", 0), ("star", "star", 1), ("star", "star", 1)]


def melody_json(path: Path) -> Path:
    notes = []
    for i, (word, syllable, stress) in enumerate(WORDS):
        start = 1.0 + 0.5 * i + (0.5 if i >= 4 else 0.0)
        notes.append({"start": start, "end": round(start + 0.4583, 4), "pitch": 60 + (2 * i) % 8, "word": word,
                      "syllable": syllable, "stress": stress, "phrase": int(i >= 4), "melisma": i == 7})
    path.write_text(json.dumps({"key": "C major", "time_signature": "4/4", "tempo": 120.0,
                                "tempo_map": [[0, 120.0]], "phrases": [[1.0, 2.96], [3.5, 5.46]], "notes": notes}))
    return path


@pytest.fixture
def json_job(job: dict[str, str], data_dir: Path) -> dict[str, str]:
    """The job as the melody service leaves it now: melody.json beside melody.mid (whose lyrics are "la")."""
    melody_json(data_dir / "melody_results" / "v1" / "melody.json")
    return {**job, "melody": "melody_results/v1/melody.json"}


def submit(client, job_id: str, inputs: dict, params: dict | None = None, task: str = "render"):
    body = {"job_id": job_id, "type": task, "input": inputs}
    if params is not None:
        body["params"] = params
    return client.post("/v1/tasks", json=body)


def wait_for(client, task_id: str, states: set[str], timeout: float = 45.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        task = client.get(f"/v1/tasks/{task_id}").get_json()
        if task["state"] in states:
            return task
        assert time.monotonic() < deadline, f"task stuck in {task['state']} ({task['stage']})"
        time.sleep(0.05)


def test_health_reports_model_version_task_types_and_warms_up(client) -> None:
    body = client.get("/health").get_json()
    assert body["status"] == "ok" and body["model"] == "hibari-heart+world" and body["version"]
    assert sorted(body["task_types"]) == ["render", "select_take"]
    deadline = time.monotonic() + 60
    while not client.get("/health").get_json()["warm"]:
        assert time.monotonic() < deadline, "warm-up never finished"
        time.sleep(0.01)
    assert client.application.warm_up_calls == [1]


def test_styles_lists_every_style(client) -> None:
    response = client.get("/v1/styles")
    assert response.status_code == 200
    assert response.get_json() == {"styles": list_styles()}


def test_render_task_writes_the_mix_under_vocal_results(client, data_dir, job) -> None:
    response = submit(client, "v1", job, {"style": "pop_bright", "seed": 3, "lyrics": "twin kle twin kle"})
    assert response.status_code == 202, response.get_json()
    assert response.headers["Location"].endswith(response.get_json()["task_id"])
    task = wait_for(client, response.get_json()["task_id"], {"done", "failed", "cancelled"})
    assert task["state"] == "done", task["error"]
    assert task["progress"] == 1.0
    outputs = task["outputs"]
    assert outputs["mix"] == "vocal_results/v1/mix.wav" and outputs["qc"] == "vocal_results/v1/qc.json"
    for name, rel in outputs.items():
        assert rel.startswith("vocal_results/v1/") and (data_dir / rel).is_file(), name
    info = sf.info(data_dir / outputs["mix"])
    assert info.channels == 2 and abs(info.duration - 7.0) < 0.01
    qc = json.loads((data_dir / outputs["qc"]).read_text())
    assert qc["style"] == "pop_bright" and qc["seed"] == 3


def test_render_task_sings_melody_json_without_lyrics(client, data_dir, json_job) -> None:
    # The syllables come from melody.json, not from melody.mid's lyric events ("la"), and no lyrics are sent.
    response = submit(client, "v1", json_job, {"seed": 3})
    assert response.status_code == 202, response.get_json()
    task = wait_for(client, response.get_json()["task_id"], {"done", "failed", "cancelled"})
    assert task["state"] == "done", task["error"]
    import miditoolkit

    lyrics = [ly.text for ly in miditoolkit.MidiFile(str(data_dir / task["outputs"]["midi"])).lyrics]
    assert lyrics[:7] == ["Twin", "kle", "twin", "kle", "lit", "tle", "star"]
    # One line per phrase, its words whole (from the file's words, not guessed from syllables).
    lrc = (data_dir / task["outputs"]["lrc"]).read_text().splitlines()
    assert [line.split("]", 1)[1] for line in lrc] == ["Twinkle twinkle", "little star"]
    qc = json.loads((data_dir / task["outputs"]["qc"]).read_text())
    assert not any("vocalise" in w for w in qc["warnings"])
    # The word check compares with melody.json's words (no lyrics text was given).
    assert qc["intelligibility_reference"] == "Twinkle twinkle little star"


OVERLAPPING = '{"notes": [{"start": 1, "end": 2, "pitch": 60}, {"start": 1.5, "end": 2.5, "pitch": 62}]}'


@pytest.mark.parametrize("content, code", [("{oops", "melody_not_json"), ('{"key": "C major"}', "melody_missing_notes"),
                                           (OVERLAPPING, "melody_overlapping_notes")])
def test_a_bad_melody_json_is_refused_with_its_code(client, data_dir, json_job, content, code) -> None:
    (data_dir / json_job["melody"]).write_text(content)
    response = submit(client, "v1", json_job)
    assert response.status_code == 422 and response.get_json()["error"]["code"] == code


def test_unknown_style_is_422_listing_the_styles(client, job) -> None:
    response = submit(client, "v1", job, {"style": "opera"})
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "unknown_style"
    assert all(s["name"] in error["message"] for s in list_styles())


@pytest.mark.parametrize("params", [{"seed": -1}, {"seed": 1.5}, {"target_lufs": 0}, {"lyrics": 3},
                                    {"style": 7}, {"tempo": 120}, {"takes": 0}, {"takes": 6}, {"takes": "3"},
                                    {"takes": True}, {"takes": 2.0}])
def test_bad_params_are_422(client, job, params) -> None:
    response = submit(client, "v1", job, params)
    assert response.status_code == 422
    if "takes" in params:
        assert response.get_json()["error"]["code"] == "invalid_param" and "takes" in response.get_json()["error"][
            "message"]


def test_render_with_takes_then_select_another_take(client, data_dir, json_job) -> None:
    task = wait_for(client, submit(client, "v1", json_job, {"seed": 4, "takes": 2}).get_json()["task_id"],
                    {"done", "failed", "cancelled"})
    assert task["state"] == "done", task["error"]
    outputs = task["outputs"]
    for name in ("takes", "take1_vocal", "take2_vocal", "take1_mix_mp3", "take2_mix_mp3"):
        assert (data_dir / outputs[name]).is_file(), name
    record = json.loads((data_dir / outputs["takes"]).read_text())
    assert len(record["takes"]) == 2 and record["chosen_by"] == "checks"
    other = 3 - record["chosen"]
    before = (data_dir / outputs["mix"]).read_bytes()
    picked = submit(client, "v1", {**json_job, "takes": outputs["takes"]}, {"take": other}, task="select_take")
    assert picked.status_code == 202, picked.get_json()
    done = wait_for(client, picked.get_json()["task_id"], {"done", "failed", "cancelled"})
    assert done["state"] == "done", done["error"]
    assert set(done["outputs"]) == set(outputs)  # the same set of files as the render
    record = json.loads((data_dir / outputs["takes"]).read_text())
    assert record["chosen"] == other and record["chosen_by"] == "user"
    assert json.loads((data_dir / outputs["qc"]).read_text())["take"] == other
    assert (data_dir / outputs["mix"]).read_bytes() != before


def test_select_take_is_validated(client, data_dir, json_job) -> None:
    takes = {**json_job, "takes": "vocal_results/v1/takes.json"}
    response = submit(client, "v1", takes, {"take": 1}, task="select_take")
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "input_not_found"
    folder = data_dir / "vocal_results" / "v1"
    folder.mkdir(parents=True)
    rows = [{"take": n, "seed": n, "phrase_seeds": [n, n], "resung_phrases": [], "score": 0.9,
             "files": {"vocal": f"take{n}_vocal.wav", "mix_mp3": f"take{n}_mix.mp3"}} for n in (1, 2)]
    (folder / "takes.json").write_text(json.dumps({"chosen": 1, "chosen_by": "checks", "reason": "", "takes": rows}))
    for params, code in (({"take": 5}, "take_not_found"), ({"take": "2"}, "invalid_param"), ({}, "invalid_param"),
                         ({"take": True}, "invalid_param"), ({"take": 2, "style": "opera"}, "unknown_style"),
                         ({"take": 2, "seed": 1}, "unknown_params")):
        response = submit(client, "v1", takes, params, task="select_take")
        assert response.status_code == 422 and response.get_json()["error"]["code"] == code, (params, response.json)
    (data_dir / "vocal_results" / "v2").mkdir()
    (data_dir / "vocal_results" / "v2" / "takes.json").write_text((folder / "takes.json").read_text())
    response = submit(client, "v1", {**json_job, "takes": "vocal_results/v2/takes.json"}, {"take": 1},
                      task="select_take")
    assert response.status_code == 400  # another job's takes
    assert submit(client, "v1", json_job, {"take": 1}, task="select_take").status_code == 400  # no input.takes
    (folder / "takes.json").write_text("{not json")
    response = submit(client, "v1", takes, {"take": 1}, task="select_take")
    assert response.status_code == 422 and response.get_json()["error"]["code"] == "takes_not_found"


def test_missing_melody_is_404_and_unsafe_paths_400(client, job) -> None:
    response = submit(client, "v1", {**job, "melody": "melody_results/nope/melody.mid"})
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "input_not_found"
    assert submit(client, "v1", {"background": job["background"]}).status_code == 400
    assert submit(client, "v1", {**job, "melody": "../melody.mid"}).status_code == 400
    assert submit(client, "../x", job).status_code == 400


def test_corrupt_melody_fails_with_corrupt_midi(client, data_dir, job) -> None:
    (data_dir / job["melody"]).write_bytes(b"MThd garbage, not a MIDI file")
    task = wait_for(client, submit(client, "v1", job).get_json()["task_id"], {"done", "failed", "cancelled"})
    assert task["state"] == "failed" and task["error"]["code"] == "corrupt_midi"


def test_cancel_running_render_ends_cancelled_within_2s(client, job, monkeypatch) -> None:
    started = threading.Event()

    def slow_sing(score, style, seed, takes, lyrics, seconds, progress, times):
        started.set()
        for i in range(600):  # 30 s unless cancelled; progress() is the checkpoint
            progress(i / 600)
            time.sleep(0.05)
        raise AssertionError("not cancelled")

    monkeypatch.setattr(render, "sing_takes", slow_sing)
    task_id = submit(client, "v1", job).get_json()["task_id"]
    assert started.wait(20), "render never reached the singing stage"
    assert client.get(f"/v1/tasks/{task_id}").get_json()["stage"] in {"load", "sing"}
    t0 = time.monotonic()
    response = client.delete(f"/v1/tasks/{task_id}")
    assert response.status_code == 200 and response.get_json()["cancel_requested"] is True
    task = wait_for(client, task_id, {"done", "failed", "cancelled"}, timeout=2.0)
    assert task["state"] == "cancelled" and time.monotonic() - t0 < 2.0
    assert task["outputs"] == {}


def test_unknown_task_and_route_are_json(client) -> None:
    response = client.get("/v1/tasks/nope")
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "task_not_found"
    assert client.get("/nope").get_json()["error"]["code"] == "not_found"
    response = client.post("/v1/tasks", json={"job_id": "v1", "input": {}})
    assert response.status_code == 400 and "render" in response.get_json()["error"]["message"]


def test_a_render_that_crashes_in_its_qc_stage_fails_alone_and_the_service_goes_on(data_dir, job) -> None:
    # Before: a segfault in the qc stage (librosa.pyin on a broken numba cache) took the whole service
    # down with every task on it, and the job waited without a word.
    import os
    import signal

    app = service.create_app()  # as deployed: renders in a task process
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {service_token(data_dir)}"
    try:
        task_id = submit(client, "v1", job, {"seed": 3}).get_json()["task_id"]
        deadline = time.monotonic() + 180
        while (task := client.get(f"/v1/tasks/{task_id}").get_json())["stage"] != "qc":
            assert task["state"] in ("queued", "running") and time.monotonic() < deadline, task
            time.sleep(0.02)
        pid = next(int(p) for t in Path(f"/proc/{os.getpid()}/task").iterdir()
                   for p in (t / "children").read_text().split()
                   if "tmik_common.task_child" in Path(f"/proc/{p}/cmdline").read_text())
        os.kill(pid, signal.SIGSEGV)
        task = wait_for(client, task_id, {"done", "failed", "cancelled"})
        assert task["state"] == "failed" and task["error"]["code"] == "task_crashed", task
        assert "SIGSEGV" in task["error"]["message"] and "'qc'" in task["error"]["message"]
        assert client.get("/health").get_json()["status"] == "ok"
        again = submit(client, "v1", job, {"seed": 3}).get_json()["task_id"]
        assert wait_for(client, again, {"done", "failed", "cancelled"}, timeout=180)["state"] == "done"
    finally:
        app.extensions[service.EXTENSION].runner.close(wait=True)
