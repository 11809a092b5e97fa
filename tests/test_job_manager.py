"""The job manager on SQLite and PostgreSQL: atomic claims, leases, take-over, cancel, waiting services.

Workers run as real processes (``python -m app.job_manager``) where the test is about processes
(concurrency, kill -9), and in a thread where it is about one job's course. The services are
stand-ins with the real task HTTP edge (tests/fake_services.py). PostgreSQL tests run when
TEST_DATABASE_URL is set (.ci/run starts a server and sets it).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from fake_services import FakeBehaviour, FakeService
from sqlalchemy import text

from app import config as app_config
from app import db, jobs
from app.job_manager import Worker, service_clients
from app.models import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, Job, utcnow

REPO = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("TEST_DATABASE_URL")


def _backends() -> list:
    pg = pytest.param("postgresql", marks=pytest.mark.skipif(not PG_URL, reason="TEST_DATABASE_URL is not set "
                                                                                  "(PostgreSQL integration tests)"))
    return ["sqlite", pg]


@pytest.fixture(params=_backends())
def database_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    engine = db.make_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS job_events, jobs, alembic_version CASCADE"))
    engine.dispose()
    return PG_URL


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "shared"
    for sub in ("input", "melody_results", "vocal_results"):
        (d / sub).mkdir(parents=True)
    return d


@pytest.fixture
def cfg(database_url: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> app_config.Config:
    monkeypatch.setenv("SHARED_DATA_DIR", str(data_dir))
    monkeypatch.setenv("DATABASE_URL", database_url)
    return replace(app_config.load(), lease_seconds=3.0, poll_seconds=0.1, max_attempts=3,
                   service_timeout=2.0, service_wait_seconds=120.0)


@pytest.fixture
def sessions(cfg):
    engine = db.make_engine(cfg.database_url)
    db.migrate(engine)
    yield db.session_factory(engine)
    engine.dispose()


@pytest.fixture
def services(data_dir: Path):
    behaviour = FakeBehaviour()
    melody = FakeService("melody", data_dir, behaviour)
    vocal = FakeService("vocal", data_dir, behaviour)
    yield melody, vocal, behaviour
    melody.stop()
    vocal.stop()


def make_job(sessions, data_dir: Path, **params) -> str:
    job_id = str(uuid.uuid4())
    (data_dir / "input" / job_id).mkdir()
    (data_dir / "input" / job_id / "background.wav").write_bytes(b"RIFF")
    jobs.create_job(sessions, job_id=job_id, input_file=f"input/{job_id}/background.wav", input_name="t.wav",
                    params={"style": "pop_bright", "seed": 1, "sensitivity": 0.5, "randomness": 0.5, **params})
    return job_id


def wait_until(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def state_of(sessions, job_id: str):
    return jobs.get_job(sessions, job_id)[0]


def worker_process(cfg: app_config.Config, melody_url: str, vocal_url: str, **extra: str) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": cfg.database_url, "SHARED_DATA_DIR": str(cfg.shared_data_dir),
           "MELODY_SERVICE_URL": melody_url, "VOCAL_SERVICE_URL": vocal_url, "JOB_POLL_SECONDS": "0.1",
           "JOB_LEASE_SECONDS": "3", "LOG_LEVEL": "INFO", **extra}
    return subprocess.Popen([sys.executable, "-m", "app.job_manager"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def thread_worker(cfg, sessions, melody_url: str, vocal_url: str) -> tuple[Worker, threading.Thread]:
    melody, vocal = service_clients(replace(cfg, melody_service_url=melody_url, vocal_service_url=vocal_url))
    worker = Worker(cfg=cfg, sessions=sessions, melody=melody, vocal=vocal)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    return worker, thread


def stop_processes(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


def test_three_workers_run_twenty_jobs_each_exactly_once(cfg, sessions, data_dir, services) -> None:
    melody, vocal, behaviour = services
    behaviour.seconds = 0.2
    ids = [make_job(sessions, data_dir) for _ in range(20)]
    procs = [worker_process(cfg, melody.url, vocal.url) for _ in range(3)]
    try:
        wait_until(lambda: all(state_of(sessions, j).state == SUCCEEDED for j in ids), 120, "20 jobs to succeed")
    finally:
        stop_processes(procs)
    for j in ids:
        assert behaviour.submissions[("generate", j)] == 1, j
        assert behaviour.submissions[("render", j)] == 1, j
        job, events = jobs.get_job(sessions, j, with_events=True)
        assert job.attempts == 1
        assert {"mix.wav", "melody.mid", "analysis.json", "qc.json"} <= set(job.artifacts)
        assert job.checks["pitch_accuracy"] == 0.98
        assert job.warnings["messages"] == ["a test warning"]
        claims = [e for e in events if e["message"].startswith("claimed")]
        assert len(claims) == 1
    workers = {jobs.get_job(sessions, j, with_events=True)[1][1]["worker"] for j in ids}
    assert len(workers) >= 2, "the jobs should be spread over the workers"


def test_style_range_and_lyrics_reach_the_services(cfg, sessions, data_dir, services) -> None:
    melody, vocal, behaviour = services
    job_id = make_job(sessions, data_dir, style="low_warm", lyrics="la la land", target_lufs=-16.0, tempo="half",
                      time_signature="6/8")
    automatic = make_job(sessions, data_dir)
    worker, thread = thread_worker(cfg, sessions, melody.url, vocal.url)
    try:
        wait_until(lambda: all(state_of(sessions, j).state == SUCCEEDED for j in (job_id, automatic)), 30,
                   "the jobs to succeed")
    finally:
        worker.stop_event.set()
        thread.join(10)
    sent = {name: params for name, jid, params in behaviour.params if jid == job_id}
    assert sent["generate"]["vocal_range"] == [43, 60]
    # The lyrics go to the melody service only: the render sings melody.json, which carries them.
    assert sent["generate"]["lyrics"] == "la la land" and "lyrics" not in sent["render"]
    given = {name: inputs for name, jid, inputs in behaviour.inputs if jid == job_id}
    assert given["render"] == {"background": f"input/{job_id}/background.wav",
                               "melody": f"melody_results/{job_id}/melody.json"}
    assert sent["render"]["style"] == "low_warm" and sent["render"]["target_lufs"] == -16.0
    assert sent["generate"]["seed"] == sent["render"]["seed"] == 1
    # The musician's tempo and meter go to the melody stage (the analysis runs at that level) ...
    assert sent["generate"]["tempo"] == "half" and sent["generate"]["time_signature"] == "6/8"
    assert "tempo" not in sent["render"]
    # ... and a job that left them automatic sends none.
    plain = next(params for name, jid, params in behaviour.params if jid == automatic and name == "generate")
    assert "tempo" not in plain and "time_signature" not in plain


def test_killed_worker_job_is_finished_by_another_after_the_lease(cfg, sessions, data_dir, services) -> None:
    melody, vocal, behaviour = services
    behaviour.seconds = 4.0
    job_id = make_job(sessions, data_dir)
    first = worker_process(cfg, melody.url, vocal.url)
    try:
        wait_until(lambda: state_of(sessions, job_id).state == RUNNING, 30, "the first worker to claim the job")
        owner = state_of(sessions, job_id).lease_owner
        time.sleep(0.5)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        behaviour.seconds = 0.3
        second = worker_process(cfg, melody.url, vocal.url)
        try:
            wait_until(lambda: state_of(sessions, job_id).state == SUCCEEDED, 60, "the second worker to finish it")
        finally:
            stop_processes([second])
    finally:
        stop_processes([first])
    job, events = jobs.get_job(sessions, job_id, with_events=True)
    assert job.attempts == 2
    takeover = [e for e in events if e["message"].startswith("taken over")]
    assert len(takeover) == 1 and owner in takeover[0]["message"] and takeover[0]["worker"] != owner


def test_job_fails_with_the_reason_when_its_workers_keep_dying(cfg, sessions, data_dir) -> None:
    job_id = make_job(sessions, data_dir)
    with sessions.begin() as s:  # as if two workers had died holding it
        job = s.get(Job, job_id)
        job.state, job.attempts, job.lease_owner = RUNNING, cfg.max_attempts, "dead-worker"
        job.lease_expires_at = utcnow()
    assert jobs.claim(sessions, "w", cfg.lease_seconds, cfg.max_attempts) is None
    job = state_of(sessions, job_id)
    assert job.state == FAILED and job.error_code == "worker_lost"
    assert "dead-worker" in job.error_message and str(cfg.max_attempts) in job.error_message


def test_cancel_of_a_queued_job_is_immediate(cfg, sessions, data_dir) -> None:
    job_id = make_job(sessions, data_dir)
    jobs.request_cancel(sessions, job_id)
    assert state_of(sessions, job_id).state == CANCELLED
    assert jobs.claim(sessions, "w", cfg.lease_seconds, cfg.max_attempts) is None
    with pytest.raises(jobs.JobConflict):
        jobs.request_cancel(sessions, job_id)


def test_cancel_of_a_running_job_stops_it_and_its_service_task_within_2s(cfg, sessions, data_dir, services) -> None:
    melody, vocal, behaviour = services
    behaviour.seconds = 30.0
    job_id = make_job(sessions, data_dir)
    worker, thread = thread_worker(cfg, sessions, melody.url, vocal.url)
    try:
        wait_until(lambda: (state_of(sessions, job_id).service_task or {}).get("task_id"), 20, "the melody task")
        task_id = state_of(sessions, job_id).service_task["task_id"]
        t0 = time.monotonic()
        jobs.request_cancel(sessions, job_id)
        wait_until(lambda: state_of(sessions, job_id).state == CANCELLED, 5, "the job to be cancelled")
        assert time.monotonic() - t0 < 2.0
        runner = melody.app.extensions["melody_service"].runner
        wait_until(lambda: runner.get(task_id)["state"] == "cancelled", 5, "the service task to be cancelled")
    finally:
        worker.stop_event.set()
        thread.join(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_service_that_is_down_makes_jobs_wait_and_retry(cfg, sessions, data_dir) -> None:
    melody_port, vocal_port = _free_port(), _free_port()
    job_id = make_job(sessions, data_dir)
    worker, thread = thread_worker(cfg, sessions, f"http://127.0.0.1:{melody_port}", f"http://127.0.0.1:{vocal_port}")
    try:
        wait_until(lambda: "waiting for" in state_of(sessions, job_id).stage, 20, "the job to wait for a service")
        time.sleep(2.0)
        job = state_of(sessions, job_id)
        assert job.state == RUNNING and job.error_code is None
        behaviour = FakeBehaviour()
        melody = FakeService("melody", data_dir, behaviour, port=melody_port)
        vocal = FakeService("vocal", data_dir, behaviour, port=vocal_port)
        try:
            wait_until(lambda: state_of(sessions, job_id).state == SUCCEEDED, 60, "the job to succeed once up")
        finally:
            melody.stop()
            vocal.stop()
    finally:
        worker.stop_event.set()
        thread.join(10)
    _, events = jobs.get_job(sessions, job_id, with_events=True)
    assert any(e["message"].startswith("waiting for") for e in events)


def test_a_refused_input_fails_the_job_at_once_with_the_services_reason(cfg, sessions, data_dir, services) -> None:
    melody, vocal, behaviour = services
    behaviour.refuse = "silent_audio"
    job_id = make_job(sessions, data_dir)
    worker, thread = thread_worker(cfg, sessions, melody.url, vocal.url)
    try:
        wait_until(lambda: state_of(sessions, job_id).state == FAILED, 20, "the job to fail")
    finally:
        worker.stop_event.set()
        thread.join(10)
    job = state_of(sessions, job_id)
    assert job.error_code == "silent_audio" and "refused" in job.error_message and job.attempts == 1


def test_a_stopping_worker_hands_its_job_back(cfg, sessions, data_dir, services) -> None:
    melody, vocal, behaviour = services
    behaviour.seconds = 30.0
    job_id = make_job(sessions, data_dir)
    proc = worker_process(cfg, melody.url, vocal.url)
    try:
        wait_until(lambda: (state_of(sessions, job_id).service_task or {}).get("task_id"), 30, "the melody task")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        stop_processes([proc])
    job = state_of(sessions, job_id)
    assert job.state == QUEUED and job.lease_owner is None and job.attempts == 0


def test_a_service_that_dies_mid_task_fails_the_job_within_the_wait_limit(cfg, sessions, data_dir) -> None:
    # Before: the follow loop retried every second, past both limits, for ever (151 events in 150 s).
    behaviour = FakeBehaviour(seconds=60.0)
    melody = FakeService("melody", data_dir, behaviour)
    vocal = FakeService("vocal", data_dir, behaviour)
    job_id = make_job(sessions, data_dir)
    worker, thread = thread_worker(cfg, sessions, melody.url, vocal.url)
    worker.cfg = replace(cfg, service_wait_seconds=4.0)
    try:
        wait_until(lambda: (state_of(sessions, job_id).service_task or {}).get("task_id"), 20, "the melody task")
        t0 = time.monotonic()
        melody.stop()  # gone, and it does not come back
        wait_until(lambda: state_of(sessions, job_id).state == FAILED, 30, "the job to fail")
        assert time.monotonic() - t0 < 20
    finally:
        worker.stop_event.set()
        thread.join(10)
        vocal.stop()
    job, events = jobs.get_job(sessions, job_id, with_events=True)
    assert job.error_code == "service_unavailable" and "SERVICE_WAIT_SECONDS" in job.error_message
    assert "127.0.0.1" not in job.error_message and "http" not in job.error_message  # no internal address
    waiting = [e for e in events if e["message"].startswith("waiting for")]
    assert 1 <= len(waiting) <= 2, [e["message"] for e in events]  # one event per outage, not per retry


def test_a_restarted_service_gets_the_interrupted_task_again(cfg, sessions, data_dir) -> None:
    behaviour = FakeBehaviour(seconds=30.0)
    melody = FakeService("melody", data_dir, behaviour)
    vocal = FakeService("vocal", data_dir, behaviour)
    port = melody.port
    job_id = make_job(sessions, data_dir)
    worker, thread = thread_worker(cfg, sessions, melody.url, vocal.url)
    try:
        wait_until(lambda: (state_of(sessions, job_id).service_task or {}).get("task_id"), 20, "the melody task")
        first_task = state_of(sessions, job_id).service_task["task_id"]
        melody.stop()  # its running task ends "task_interrupted"
        behaviour.seconds = 0.3
        time.sleep(1.5)
        melody = FakeService("melody", data_dir, behaviour, port=port)
        wait_until(lambda: state_of(sessions, job_id).state == SUCCEEDED, 60, "the job to succeed")
    finally:
        worker.stop_event.set()
        thread.join(10)
        melody.stop()
        vocal.stop()
    job, events = jobs.get_job(sessions, job_id, with_events=True)
    assert job.attempts == 1
    assert melody.runner.get(first_task)["error"]["code"] == "task_interrupted"
    assert behaviour.submissions[("generate", job_id)] == 2  # the interrupted run, and the one that finished
    assert any("submitted again" in e["message"] for e in events)


def test_a_service_that_keeps_losing_the_task_fails_the_job_after_the_resubmits(cfg, sessions, data_dir) -> None:
    behaviour = FakeBehaviour(seconds=30.0)
    vocal = FakeService("vocal", data_dir, behaviour)
    melody = FakeService("melody", data_dir, behaviour)
    port = melody.port
    job_id = make_job(sessions, data_dir)
    worker, thread = thread_worker(cfg, sessions, melody.url, vocal.url)
    try:
        for restart in range(3):
            wait_until(lambda n=restart + 1: behaviour.submissions[("generate", job_id)] == n, 30,
                       "the melody task to run")
            melody.stop()
            melody = FakeService("melody", data_dir, behaviour, port=port)
        wait_until(lambda: state_of(sessions, job_id).state == FAILED, 30, "the job to fail")
    finally:
        worker.stop_event.set()
        thread.join(10)
        melody.stop()
        vocal.stop()
    job = state_of(sessions, job_id)
    assert job.error_code == "service_interrupted" and "3 times" in job.error_message


def test_a_short_database_outage_is_retried_and_costs_the_job_nothing(cfg, sessions, data_dir, services,
                                                                      monkeypatch) -> None:
    # Before: one "database is locked" (SQLite busy past its timeout, or a PostgreSQL restart)
    # failed the running job for good, with the raw SQL as its message.
    from sqlalchemy.exc import OperationalError

    melody, vocal, _ = services
    real_update = jobs.update_job
    failures = {"left": 0}

    def flaky_update(*args, **kwargs):
        if failures["left"] > 0:
            failures["left"] -= 1
            raise OperationalError("UPDATE jobs SET stage=? WHERE jobs.id = ?", {}, Exception("database is locked"))
        return real_update(*args, **kwargs)

    monkeypatch.setattr(jobs, "update_job", flaky_update)
    job_id = make_job(sessions, data_dir)
    worker, thread = thread_worker(cfg, sessions, melody.url, vocal.url)
    try:
        wait_until(lambda: state_of(sessions, job_id).state == RUNNING, 20, "the job to start")
        failures["left"] = 6
        wait_until(lambda: state_of(sessions, job_id).state == SUCCEEDED, 60, "the job to succeed")
    finally:
        worker.stop_event.set()
        thread.join(10)
    job = state_of(sessions, job_id)
    assert failures["left"] == 0 and job.attempts == 1 and job.error_message is None


def test_a_database_that_stays_away_never_shows_sql_to_the_user(cfg, sessions, data_dir, services,
                                                                monkeypatch) -> None:
    from sqlalchemy.exc import OperationalError

    melody, vocal, _ = services
    real_update = jobs.update_job
    broken = {"on": False}

    def update(*args, **kwargs):
        if broken["on"]:
            raise OperationalError("UPDATE jobs SET stage=?", {}, Exception("database is locked"))
        return real_update(*args, **kwargs)

    monkeypatch.setattr(jobs, "update_job", update)
    job_id = make_job(sessions, data_dir)
    worker, thread = thread_worker(cfg, sessions, melody.url, vocal.url)
    worker.cfg = replace(cfg, db_retry_seconds=1.0)
    try:
        wait_until(lambda: state_of(sessions, job_id).state == RUNNING, 20, "the job to start")
        broken["on"] = True
        time.sleep(3.0)
        job = state_of(sessions, job_id)
        assert job.state == RUNNING and job.error_message is None  # left to its lease, never failed with SQL
        broken["on"] = False
        # Its lease runs out; it is taken over (this worker or another) and finishes.
        wait_until(lambda: state_of(sessions, job_id).state == SUCCEEDED, 60, "the job to be taken over")
    finally:
        worker.stop_event.set()
        thread.join(10)
    assert "UPDATE" not in (state_of(sessions, job_id).error_message or "")
