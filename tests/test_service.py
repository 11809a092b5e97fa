"""Behaviour tests of the melody service's HTTP edge and its task runner (Flask test client)."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tmik_bgm_conditional_melody_generation import analysis, service
from tmik_bgm_conditional_melody_generation.analysis import Analysis
from tmik_common.secrets import service_token
from tmik_common.tasks import (
    InvalidParams,
    RunnerBusy,
    TaskRequest,
    TaskRunner,
    TaskType,
)

SR = 22050


def click_chord_track(seconds: float = 8.0, bpm: float = 120.0) -> np.ndarray:
    """A C major triad under a broadband click (a decaying noise burst) on every beat.

    Broadband, because beat trackers take the median onset strength across frequency bands:
    a pure-tone click lights up too few bands to register.
    """
    t = np.arange(int(seconds * SR)) / SR
    y = sum(0.08 * np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0))
    n_click = int(0.05 * SR)
    rng = np.random.default_rng(0)
    click = rng.standard_normal(n_click) * np.exp(-np.arange(n_click) / (0.008 * SR))
    for i, start in enumerate(np.arange(0.0, seconds - 0.05, 60.0 / bpm)):
        n = int(start * SR)
        y[n:n + n_click] += (0.8 if i % 4 == 0 else 0.5) * click
    return (y / np.max(np.abs(y)) * 0.8).astype(np.float32)


def fake_analysis(duration: float = 8.0) -> Analysis:
    beats = [0.5 * i for i in range(16)]
    return Analysis(duration=duration, tempo=120.0, time_signature="4/4", beats=beats,
                    downbeats=beats[::4], key="C major", chords=[(0.0, duration, "C:maj")],
                    sections=[(0.0, duration, "A")])


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "shared_data"
    root.mkdir()
    monkeypatch.setenv("SHARED_DATA_DIR", str(root))
    monkeypatch.setenv("MELODY_TASK_WORKERS", "1")
    monkeypatch.setenv("MIN_AUDIO_SECONDS", "5")
    monkeypatch.setenv("MAX_AUDIO_SECONDS", "900")
    return root


@pytest.fixture
def app(data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    # The real warm-up compiles numba code for ~20 s; the service must only call it.
    monkeypatch.setattr(analysis, "warm_up", lambda: 0.0)
    application = service.create_app(isolation="thread")
    yield application
    application.extensions[service.EXTENSION].runner.close(cancel=True)


@pytest.fixture
def client(app):
    return authorized_client(app)


def authorized_client(app):
    """A test client that sends the service token, as the job manager does."""
    client = app.test_client()
    data_dir = app.extensions[service.EXTENSION].runner._data_dir
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {service_token(data_dir)}"
    return client


def put_input(data_dir: Path, job_id: str, data: bytes | np.ndarray, name: str = "background.wav") -> str:
    folder = data_dir / "input" / job_id
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        (folder / name).write_bytes(data)
    else:
        sf.write(folder / name, data, SR, subtype="PCM_16")
    return f"input/{job_id}/{name}"


def submit(client, job_id: str, audio: str, params: dict | None = None, type_: str = "analyze"):
    body = {"job_id": job_id, "type": type_, "input": {"audio": audio}}
    if params is not None:
        body["params"] = params
    return client.post("/v1/tasks", json=body)


def wait_for(client, task_id: str, states: set[str], timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        task = client.get(f"/v1/tasks/{task_id}").get_json()
        if task["state"] in states:
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"task still {task['state']} after {timeout} s: {task}")
        time.sleep(0.01)


def assert_json_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    error = response.get_json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def slow_analysis(started: threading.Event | None = None, seconds: float = 30.0):
    """An analyze_file stand-in that reports progress every 20 ms for ``seconds``."""
    def analyze_file(path, sensitivity=0.5, progress=None, **overrides):
        if started is not None:
            started.set()
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            progress("beats", (time.monotonic() - t0) / seconds)
            time.sleep(0.02)
        return fake_analysis()
    return analyze_file


# -- health and routing -----------------------------------------------------------------


def test_health_reports_ok_version_and_warm(client):
    body = client.get("/health").get_json()
    assert body["status"] == "ok"
    assert body["version"] and body["model"]
    assert "analyze" in body["task_types"]
    deadline = time.monotonic() + 5
    while not client.get("/health").get_json()["warm"]:
        assert time.monotonic() < deadline, "warm-up never finished"
        time.sleep(0.01)


def test_health_is_not_warm_while_warm_up_runs(data_dir, monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(analysis, "warm_up", lambda: release.wait(5) and 0.0)
    app = service.create_app(isolation="thread")
    try:
        assert app.test_client().get("/health").get_json()["warm"] is False
    finally:
        release.set()
        app.extensions[service.EXTENSION].runner.close()


def test_unknown_route_and_method_are_json(client):
    assert_json_error(client.get("/nope"), 404, "not_found")
    response = client.put("/v1/tasks")
    assert_json_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


# -- the analyze task -------------------------------------------------------------------


def test_analyze_task_runs_to_done_and_writes_contract_json(client, data_dir):
    audio = put_input(data_dir, "job1", click_chord_track())
    response = submit(client, "job1", audio, {"sensitivity": 0.5})
    assert response.status_code == 202
    created = response.get_json()
    assert re.fullmatch(r"[0-9a-f]{32}", created["task_id"])
    assert created["state"] in {"queued", "running"}
    assert response.headers["Location"].endswith(f"/v1/tasks/{created['task_id']}")

    task = wait_for(client, created["task_id"], {"done", "failed", "cancelled"})
    assert task["state"] == "done", task
    assert task["error"] is None and task["progress"] == 1.0
    assert task["job_id"] == "job1" and task["type"] == "analyze"
    assert task["outputs"] == {"analysis": "melody_results/job1/analysis.json"}

    data = json.loads((data_dir / task["outputs"]["analysis"]).read_text())
    assert set(data) == {"duration", "tempo", "time_signature", "beats", "downbeats", "key",
                         "chords", "sections", "tempo_candidates"}
    # The metrical levels the tracker weighed, which a musician can pick from (params.tempo).
    assert data["tempo_candidates"] and all(set(c) == {"bpm", "score", "level"} and c["bpm"] > 0
                                            for c in data["tempo_candidates"])
    assert math.isclose(data["duration"], 8.0, abs_tol=0.05)
    assert isinstance(data["tempo"], float) and data["tempo"] > 0
    assert re.fullmatch(r"\d+/\d+", data["time_signature"])
    assert re.fullmatch(r"[A-G][#b]? (major|minor)", data["key"])
    for name in ("beats", "downbeats"):
        times = data[name]
        assert times and all(isinstance(b, float) for b in times)
        assert times == sorted(times) and 0 <= times[0] and times[-1] <= data["duration"]
    for name in ("chords", "sections"):
        assert data[name]
        for start, end, label in data[name]:
            assert isinstance(start, float) and isinstance(end, float) and isinstance(label, str)
            assert 0 <= start <= end <= data["duration"] + 1e-3


def test_params_reach_the_analysis_and_default_applies(client, data_dir, monkeypatch):
    seen = []

    def analyze_file(path, sensitivity=0.5, progress=None, *, tempo=None, time_signature=None):
        seen.append((Path(path), sensitivity, tempo, time_signature))
        return fake_analysis()

    monkeypatch.setattr(analysis, "analyze_file", analyze_file)
    audio = put_input(data_dir, "job2", click_chord_track(1.0))
    for params in ({"sensitivity": 0.9}, None, {}, {"tempo": "half", "time_signature": "6/8"}, {"tempo": 108},
                   {"tempo": None, "time_signature": None}):
        task_id = submit(client, "job2", audio, params).get_json()["task_id"]
        assert wait_for(client, task_id, {"done", "failed"})["state"] == "done"
    assert [s[1:] for s in seen] == [(0.9, None, None), (0.5, None, None), (0.5, None, None),
                                     (0.5, "half", "6/8"), (0.5, 108.0, None), (0.5, None, None)]
    assert seen[0][0] == (data_dir / audio).resolve()


@pytest.mark.parametrize("params, field", [
    ({"tempo": 500}, "params.tempo"), ({"tempo": 12}, "params.tempo"), ({"tempo": "fast"}, "params.tempo"),
    ({"tempo": "108"}, "params.tempo"), ({"tempo": True}, "params.tempo"), ({"tempo": [108]}, "params.tempo"),
    ({"time_signature": "5/4"}, "params.time_signature"), ({"time_signature": 4}, "params.time_signature"),
])
def test_bad_tempo_or_time_signature_is_422_naming_it(client, data_dir, params, field):
    audio = put_input(data_dir, "job7", click_chord_track(1.0))
    error = assert_json_error(submit(client, "job7", audio, params), 422, "invalid_param")
    value = next(iter(params.values()))
    assert error["message"].startswith(f"{field} must be") and f"got {value!r}" in error["message"]


@pytest.mark.parametrize("path", [
    "/etc/passwd", "../outside.wav", "input/../../outside.wav", "input/job/../../../x.wav",
    "C:\\x.wav", "\\\\server\\share\\x.wav", "", "   ", 5, None,
])
def test_unsafe_or_malformed_paths_are_400(client, path):
    assert_json_error(submit(client, "job3", path), 400, "invalid_path")


def test_symlink_out_of_shared_data_is_400(client, data_dir, tmp_path):
    outside = tmp_path / "secret.wav"
    sf.write(outside, click_chord_track(), SR)
    (data_dir / "input").mkdir()
    (data_dir / "input" / "link.wav").symlink_to(outside)
    assert_json_error(submit(client, "job4", "input/link.wav"), 400, "invalid_path")


def test_missing_input_is_404(client, data_dir):
    assert_json_error(submit(client, "job5", "input/job5/background.wav"), 404, "input_not_found")
    (data_dir / "input" / "job5").mkdir(parents=True)
    assert_json_error(submit(client, "job5", "input/job5"), 404, "input_not_found")


@pytest.mark.parametrize("data, code", [
    (b"this is a text file, not a song\n" * 100, "not_audio"),
    (np.zeros(8 * SR, dtype=np.float32), "silent_audio"),
    (b"", "empty_file"),
])
def test_bad_audio_fails_the_task_with_the_loader_code(client, data_dir, data, code):
    audio = put_input(data_dir, "job6", data)
    response = submit(client, "job6", audio)
    assert response.status_code == 202
    task = wait_for(client, response.get_json()["task_id"], {"done", "failed", "cancelled"})
    assert task["state"] == "failed"
    assert task["error"]["code"] == code and task["error"]["message"]
    assert task["outputs"] == {}
    assert not (data_dir / "melody_results" / "job6" / "analysis.json").exists()


@pytest.mark.parametrize("value", [1.5, -0.1, "high", "0.5", True, [0.5], {"v": 1}])
def test_bad_sensitivity_is_422(client, data_dir, value):
    audio = put_input(data_dir, "job7", click_chord_track(1.0))
    assert_json_error(submit(client, "job7", audio, {"sensitivity": value}), 422, "invalid_param")


def test_non_finite_sensitivity_is_refused(client, data_dir):
    audio = put_input(data_dir, "job7", click_chord_track(1.0))
    body = {"job_id": "job7", "type": "analyze", "input": {"audio": audio},
            "params": {"sensitivity": float("nan")}}
    raw = json.dumps(body)  # Python writes the non-standard NaN literal, as some clients do
    assert_json_error(client.post("/v1/tasks", data=raw, content_type="application/json"), 422,
                      "invalid_param")


def test_request_validation(client, data_dir):
    audio = put_input(data_dir, "job8", click_chord_track(1.0))
    ok = {"job_id": "job8", "type": "analyze", "input": {"audio": audio}}
    cases = [
        (client.post("/v1/tasks", data="{not json", content_type="application/json"), 400, "invalid_json"),
        (client.post("/v1/tasks", json=[1, 2]), 400, "invalid_json"),
        (client.post("/v1/tasks", json={**ok, "type": "dance"}), 422, "unknown_task_type"),
        (client.post("/v1/tasks", json={k: v for k, v in ok.items() if k != "type"}), 400, "missing_field"),
        (client.post("/v1/tasks", json={k: v for k, v in ok.items() if k != "job_id"}), 400, "missing_field"),
        (client.post("/v1/tasks", json={**ok, "input": {}}), 400, "missing_field"),
        (client.post("/v1/tasks", json={**ok, "input": "x.wav"}), 400, "invalid_field"),
        (client.post("/v1/tasks", json={**ok, "params": [1]}), 400, "invalid_field"),
        (client.post("/v1/tasks", json={**ok, "params": {"sensitivty": 0.3}}), 422, "unknown_params"),
        (client.post("/v1/tasks", json={**ok, "extra": 1}), 400, "unknown_field"),
    ]
    for job_id in ("../x", "a/b", "", ".", "..", "x" * 129, 5, None, "a b"):
        cases.append((client.post("/v1/tasks", json={**ok, "job_id": job_id}), 400, "invalid_job_id"))
    for response, status, code in cases:
        assert_json_error(response, status, code)
    assert client.get("/v1/tasks").get_json()["tasks"] == []


def test_oversized_request_is_413_json(client):
    response = client.post("/v1/tasks", data="x" * (service.MAX_REQUEST_BYTES + 1),
                           content_type="application/json")
    assert_json_error(response, 413)


def test_unknown_task_is_404(client):
    assert_json_error(client.get("/v1/tasks/" + "0" * 32), 404, "task_not_found")
    assert_json_error(client.delete("/v1/tasks/" + "0" * 32), 404, "task_not_found")


# -- cancellation, failures, listing ------------------------------------------------------


def test_cancel_running_task_ends_cancelled_within_2s(client, data_dir, monkeypatch):
    started = threading.Event()
    monkeypatch.setattr(analysis, "analyze_file", slow_analysis(started))
    audio = put_input(data_dir, "job9", click_chord_track(1.0))
    task_id = submit(client, "job9", audio).get_json()["task_id"]
    assert started.wait(5)
    deadline = time.monotonic() + 5
    while (running := wait_for(client, task_id, {"running"}, timeout=5))["stage"] != "beats":
        assert time.monotonic() < deadline, running  # the work reports its stage at its checkpoints
        time.sleep(0.01)

    t0 = time.monotonic()
    response = client.delete(f"/v1/tasks/{task_id}")
    assert response.status_code == 200 and response.get_json()["cancel_requested"] is True
    task = wait_for(client, task_id, {"cancelled", "done", "failed"}, timeout=2)
    assert task["state"] == "cancelled" and time.monotonic() - t0 < 2.0
    assert task["outputs"] == {} and task["error"] is None
    assert not (data_dir / "melody_results" / "job9" / "analysis.json").exists()
    # Cancelling a finished task changes nothing.
    assert client.delete(f"/v1/tasks/{task_id}").get_json()["state"] == "cancelled"


def test_cancel_queued_task_is_immediate(client, data_dir, monkeypatch):
    started = threading.Event()
    monkeypatch.setattr(analysis, "analyze_file", slow_analysis(started))
    audio = put_input(data_dir, "job10", click_chord_track(1.0))
    first = submit(client, "job10", audio).get_json()["task_id"]
    assert started.wait(5)
    second = submit(client, "job10", audio).get_json()
    assert second["state"] == "queued"  # one worker, busy with the first
    cancelled = client.delete(f"/v1/tasks/{second['task_id']}").get_json()
    assert cancelled["state"] == "cancelled"
    client.delete(f"/v1/tasks/{first}")
    assert wait_for(client, first, {"cancelled", "done", "failed"}, timeout=2)["state"] == "cancelled"
    assert client.get(f"/v1/tasks/{second['task_id']}").get_json()["state"] == "cancelled"


def test_service_keeps_serving_after_an_internal_failure(client, data_dir, monkeypatch, caplog):
    def broken(path, sensitivity=0.5, progress=None, **overrides):
        raise RuntimeError("boom")

    monkeypatch.setattr(analysis, "analyze_file", broken)
    audio = put_input(data_dir, "job11", click_chord_track(1.0))
    task = wait_for(client, submit(client, "job11", audio).get_json()["task_id"], {"failed", "done"})
    assert task["state"] == "failed" and task["error"]["code"] == "internal_error"
    assert "boom" not in task["error"]["message"]  # internals stay in the log
    assert any("failed unexpectedly" in r.message and r.exc_info for r in caplog.records)

    monkeypatch.setattr(analysis, "analyze_file", lambda p, sensitivity=0.5, progress=None, **_: fake_analysis())
    assert client.get("/health").get_json()["status"] == "ok"
    task = wait_for(client, submit(client, "job11", audio).get_json()["task_id"], {"failed", "done"})
    assert task["state"] == "done"


def test_list_tasks_and_filters(client, data_dir, monkeypatch):
    monkeypatch.setattr(analysis, "analyze_file", lambda p, sensitivity=0.5, progress=None, **_: fake_analysis())
    audio_a = put_input(data_dir, "jobA", click_chord_track(1.0))
    audio_b = put_input(data_dir, "jobB", click_chord_track(1.0))
    a = submit(client, "jobA", audio_a).get_json()["task_id"]
    b = submit(client, "jobB", audio_b).get_json()["task_id"]
    wait_for(client, a, {"done"})
    wait_for(client, b, {"done"})
    listed = client.get("/v1/tasks").get_json()["tasks"]
    assert [t["task_id"] for t in listed] == [a, b]
    assert set(listed[0]) >= {"task_id", "job_id", "type", "state", "progress", "stage", "outputs",
                              "error", "created_at", "updated_at"}
    assert [t["task_id"] for t in client.get("/v1/tasks?job_id=jobB").get_json()["tasks"]] == [b]
    assert len(client.get("/v1/tasks?state=done").get_json()["tasks"]) == 2
    assert_json_error(client.get("/v1/tasks?state=weird"), 400, "invalid_query")


# -- the runner on its own ----------------------------------------------------------------


def _instant_type(outputs: dict[str, str] | None = None) -> TaskType:
    def prepare(request: TaskRequest, data_dir: Path):
        if request.params.get("bad"):
            raise InvalidParams("invalid_param", "bad")
        return lambda progress: outputs or {}
    return TaskType("instant", prepare)


def test_runner_prunes_finished_tasks_after_ttl(tmp_path):
    now = [1000.0]
    runner = TaskRunner({"instant": _instant_type()}, tmp_path, ttl_seconds=3600, clock=lambda: now[0])
    try:
        task_id = runner.submit(TaskRequest("j", "instant", {}, {}))["task_id"]
        deadline = time.monotonic() + 5
        while runner.get(task_id)["state"] != "done":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        now[0] += 3599
        assert runner.get(task_id) is not None
        now[0] += 2
        assert runner.get(task_id) is None and runner.list_tasks() == []
    finally:
        runner.close()


def test_runner_caps_the_number_of_finished_tasks(tmp_path):
    runner = TaskRunner({"instant": _instant_type()}, tmp_path, workers=1, max_finished=3)
    try:
        ids = [runner.submit(TaskRequest("j", "instant", {}, {}))["task_id"] for _ in range(6)]
        deadline = time.monotonic() + 5
        while runner.list_tasks(state="done") != runner.list_tasks():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # One worker finishes them in order, so the three newest are the ones kept.
        assert [t["task_id"] for t in runner.list_tasks()] == ids[-3:]
    finally:
        runner.close()


def test_runner_refuses_bad_requests_before_queueing(tmp_path):
    runner = TaskRunner({"instant": _instant_type()}, tmp_path)
    try:
        with pytest.raises(InvalidParams):
            runner.submit(TaskRequest("j", "instant", {}, {"bad": True}))
        assert runner.list_tasks() == []
    finally:
        runner.close()


def test_runner_refuses_when_backlog_is_full_or_closed(tmp_path):
    release = threading.Event()

    def prepare(request: TaskRequest, data_dir: Path):
        return lambda progress: release.wait(5) and {}

    runner = TaskRunner({"block": TaskType("block", prepare)}, tmp_path, workers=1, max_queued=1)
    try:
        runner.submit(TaskRequest("j", "block", {}, {}))  # running (or about to)
        deadline = time.monotonic() + 5
        while runner.list_tasks(state="running") == []:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        runner.submit(TaskRequest("j", "block", {}, {}))  # queued: the backlog is now full
        with pytest.raises(RunnerBusy) as exc:
            runner.submit(TaskRequest("j", "block", {}, {}))
        assert exc.value.code == "busy"
    finally:
        release.set()
        runner.close()
    with pytest.raises(RunnerBusy) as exc:
        runner.submit(TaskRequest("j", "block", {}, {}))
    assert exc.value.code == "shutting_down"


# -- only the job manager: the service token ----------------------------------------------


def test_the_task_api_needs_the_service_token_and_health_does_not(app, data_dir):
    # Before: anyone who reached the service could list every job id, overwrite results or cancel tasks.
    anonymous = app.test_client()
    assert anonymous.get("/health").status_code == 200
    for response in (anonymous.get("/v1/tasks"), anonymous.post("/v1/tasks", json={}),
                     anonymous.get("/v1/tasks/" + "0" * 32), anonymous.delete("/v1/tasks/" + "0" * 32),
                     anonymous.get("/v1/tasks", headers={"Authorization": "Bearer not-the-token"}),
                     anonymous.get("/v1/tasks", headers={"Authorization": service_token(data_dir)})):
        assert_json_error(response, 401, "unauthorized")
    token = service_token(data_dir)
    assert (data_dir / ".secrets" / "service_token").stat().st_mode & 0o077 == 0
    assert anonymous.get("/v1/tasks", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_a_task_input_may_not_name_the_secrets_or_the_task_records(client, data_dir):
    service_token(data_dir)
    for rel in (".secrets/service_token", "tasks/melody-service/queue", "input/.hidden.wav"):
        assert_json_error(submit(client, "job1", rel), 400, "invalid_path")


def test_an_oversize_body_through_the_real_server_is_413_json(app, data_dir):
    # Before: waitress itself refused it first, in plain text.
    import requests
    import waitress.server

    from tmik_common.http import waitress_options

    server = waitress.server.create_server(app, host="127.0.0.1", port=0, **waitress_options("test", threads=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.effective_port}/v1/tasks"
        response = requests.post(url, data=b"x" * (service.MAX_REQUEST_BYTES * 2), timeout=10,
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {service_token(data_dir)}"})
        assert response.status_code == 413 and response.json()["error"]["code"] == "request_entity_too_large"
    finally:
        server.close()
