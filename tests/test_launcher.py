"""The embedded-mode launcher: one rule for empty variables, children restarted when they die, and a
killed service leaves nothing behind (its task processes die with it, its temp folder is cleaned)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from app.launcher import Child, ProcessSpec, apply_defaults, load_dotenv, start_child, supervise
from tmik_common.procs import pid_alive

REPO = Path(__file__).resolve().parent.parent


def test_an_empty_variable_counts_as_unset_for_the_launcher_as_for_the_app(tmp_path, monkeypatch) -> None:
    # Before: the launcher kept MELODY_SERVICE_URL="" (set), while the app used its default (unset).
    env = {"MELODY_SERVICE_URL": "", "VOCAL_SERVICE_PORT": " ", "SHARED_DATA_DIR": "", "APP_PORT": "9090"}
    apply_defaults(env, root=tmp_path)
    assert env["MELODY_SERVICE_URL"] == "http://127.0.0.1:8001"
    assert env["VOCAL_SERVICE_URL"] == "http://127.0.0.1:8002"
    assert env["SHARED_DATA_DIR"] == str((tmp_path / "shared_data").resolve())
    assert env["APP_PORT"] == "9090"
    dotenv = tmp_path / ".env"
    dotenv.write_text("MELODY_SERVICE_URL=http://elsewhere:1\nAPP_PORT=7070\n")
    env = {"MELODY_SERVICE_URL": "", "APP_PORT": "8080"}
    assert load_dotenv(dotenv, env) == ["MELODY_SERVICE_URL"]
    assert env == {"MELODY_SERVICE_URL": "http://elsewhere:1", "APP_PORT": "8080"}
    # The app reads the same environment the same way.
    from app import config as app_config

    monkeypatch.setenv("MELODY_SERVICE_URL", "")
    monkeypatch.setenv("SHARED_DATA_DIR", str(tmp_path))
    assert app_config.load().melody_service_url == "http://127.0.0.1:8001"


def _child(mode: str) -> tuple[Child, dict[str, str]]:
    env = {**os.environ, "LAUNCHER_CHILD_MODE": mode}
    child = start_child(ProcessSpec("stand-in", "tests.launcher_child"), env, REPO)
    child.proc.wait(10) if mode != "sleep" else None
    return child, env


def test_a_child_that_dies_is_restarted_with_a_growing_pause(monkeypatch) -> None:
    # Before: one child's death stopped the whole system.
    child, env = _child("exit1")
    try:
        t = time.monotonic()
        assert supervise([child], env, {}, now=t) is None
        assert child.restart_at == pytest.approx(t + 1.0)
        supervise([child], env, {}, now=t + 0.5)
        assert child.restarts == 0  # still pausing
        supervise([child], env, {}, now=t + 1.0)
        assert child.restarts == 1 and child.restart_at is None
        child.proc.wait(10)
        supervise([child], env, {}, now=t + 1.5)  # died again at once: twice the pause
        assert child.restart_at == pytest.approx(t + 3.5)
        supervise([child], env, {}, now=t + 3.5)
        child.proc.wait(10)
        supervise([child], env, {}, now=t + 3.6)
        assert child.restart_at == pytest.approx(t + 7.6)
        child.started_at = t - 100  # as if it had run for minutes before dying: the pause starts over
        child.restart_at = None
        supervise([child], env, {}, now=t + 10)
        assert child.restart_at == pytest.approx(t + 11)
    finally:
        if child.proc.poll() is None:
            child.proc.kill()


def test_a_child_that_refuses_its_configuration_is_not_restarted() -> None:
    child, env = _child("config")
    assert supervise([child], env, {}) == "config_error"
    assert child.restarts == 0


def _health(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out.extend(int(t) for t in (task / "children").read_text().split())
        except OSError:
            pass
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_kill_9_of_a_service_restarts_it_and_leaves_no_task_process_or_temp_folder(tmp_path) -> None:
    ports = {name: _free_port() for name in ("MELODY_SERVICE_PORT", "VOCAL_SERVICE_PORT", "APP_PORT")}
    tmp_root = tmp_path / "tmp"
    env = {**os.environ, "SHARED_DATA_DIR": str(tmp_path / "shared"), "TMIK_TMP_ROOT": str(tmp_root),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}", "LOG_LEVEL": "INFO",
           **{k: str(v) for k, v in ports.items()}}
    env.pop("SERVICE_TOKEN", None)
    log_path = tmp_path / "launcher.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "app.launcher"], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    melody = f"http://127.0.0.1:{ports['MELODY_SERVICE_PORT']}/health"
    try:
        deadline = time.monotonic() + 240
        while not _health(melody):
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.5)
        service = next(p for p in _children(proc.pid)
                       if "tmik_bgm_conditional_melody_generation.service" in Path(f"/proc/{p}/cmdline").read_text())
        deadline = time.monotonic() + 120
        while not (task_processes := [p for p in _children(service)
                                      if "tmik_common.task_child" in Path(f"/proc/{p}/cmdline").read_text()]):
            assert time.monotonic() < deadline, "the melody service never started its task process"
            time.sleep(0.2)
        assert (tmp_root / f"melody-service-{service}").is_dir()
        assert (tmp_path / "shared" / ".secrets" / "service_token").stat().st_mode & 0o077 == 0
        os.kill(service, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in task_processes):
            assert time.monotonic() < deadline, "the task process outlived its killed service"
            time.sleep(0.1)
        deadline = time.monotonic() + 120
        while True:  # the launcher starts it again, and the new one answers
            new = [p for p in _children(proc.pid) if p != service and
                   "tmik_bgm_conditional_melody_generation.service" in Path(f"/proc/{p}/cmdline").read_text()]
            if new and _health(melody):
                break
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.5)
        assert not (tmp_root / f"melody-service-{service}").exists()  # the dead one's temp folder is gone
        assert "restarting it in 1 s" in log_path.read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)

