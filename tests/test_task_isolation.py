"""Tasks run in child processes: a crash, a runaway allocation or a hang ends the task, never the service.

And the task records are files on the shared volume, so several replicas of a service share
them: any replica answers for any task, idle replicas take the queued work, and a replica that
died has its running tasks marked interrupted.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from crash_tasks import task_types

from tmik_common.procs import pid_alive
from tmik_common.tasks import TaskRequest, TaskRunner

FACTORY = "crash_tasks:task_types"


def wait_state(runner: TaskRunner, task_id: str, states: set[str], timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        task = runner.get(task_id)
        if task is not None and task["state"] in states:
            return task
        assert time.monotonic() < deadline, f"task still {task and task['state']} after {timeout} s: {task}"
        time.sleep(0.05)


def submit(runner: TaskRunner, kind: str, **params) -> str:
    return runner.submit(TaskRequest("job1", kind, {}, params))["task_id"]


@pytest.fixture
def runner(tmp_path: Path):
    r = TaskRunner(task_types(), tmp_path, service="crashy", isolation="process", factory=FACTORY,
                   warm_up="crash_tasks:warm_up", memory_limit_bytes=600 * 2**20)
    assert r.ready.wait(60), "the task process never warmed up"
    yield r
    r.close(wait=True)


def test_a_segfault_fails_that_task_and_the_next_task_runs(runner) -> None:
    crashed = wait_state(runner, submit(runner, "segfault"), {"done", "failed"})
    assert crashed["state"] == "failed" and crashed["error"]["code"] == "task_crashed"
    assert "SIGSEGV" in crashed["error"]["message"] and "about to crash" in crashed["error"]["message"]
    after = wait_state(runner, submit(runner, "echo"), {"done", "failed"})
    assert after["state"] == "done"
    assert int(after["outputs"]["pid"]) != os.getpid()  # it ran in a task process, a new one


def test_a_task_process_killed_from_outside_fails_its_task(runner) -> None:
    task_id = submit(runner, "sleep", seconds=30)
    wait_state(runner, task_id, {"running"})
    pid = next(p for p in _children(os.getpid()) if "tmik_common.task_child" in _cmdline(p))
    os.kill(pid, signal.SIGKILL)  # what the kernel's OOM killer does
    task = wait_state(runner, task_id, {"failed", "done"})
    assert task["error"]["code"] == "task_crashed" and "SIGKILL" in task["error"]["message"]
    assert wait_state(runner, submit(runner, "echo"), {"done", "failed"})["state"] == "done"


def test_a_runaway_allocation_is_stopped_at_the_memory_limit(runner) -> None:
    task = wait_state(runner, submit(runner, "hog"), {"done", "failed"})
    assert task["error"]["code"] == "task_out_of_memory" and "TASK_MEMORY_LIMIT_MB" in task["error"]["message"]
    assert wait_state(runner, submit(runner, "echo"), {"done", "failed"})["state"] == "done"


def test_cancel_stops_a_task_at_its_checkpoint_and_a_hung_one_by_force(runner) -> None:
    task_id = submit(runner, "sleep", seconds=30)
    wait_state(runner, task_id, {"running"})
    t0 = time.monotonic()
    runner.cancel(task_id)
    assert wait_state(runner, task_id, {"cancelled", "done", "failed"})["state"] == "cancelled"
    assert time.monotonic() - t0 < 2.0
    hung = submit(runner, "hang", seconds=60)
    wait_state(runner, hung, {"running"})
    time.sleep(0.3)
    t0 = time.monotonic()
    runner.cancel(hung)
    assert wait_state(runner, hung, {"cancelled", "done", "failed"}, timeout=15)["state"] == "cancelled"
    assert time.monotonic() - t0 < 8.0
    assert wait_state(runner, submit(runner, "echo"), {"done", "failed"})["state"] == "done"


def test_a_bug_in_a_task_is_an_internal_error_without_details(runner) -> None:
    task = wait_state(runner, submit(runner, "fail"), {"done", "failed"})
    assert task["error"]["code"] == "internal_error" and "bug" not in task["error"]["message"]
    assert runner.worker_info["model"].startswith("warmed in")


def test_task_processes_die_with_their_service(tmp_path: Path) -> None:
    r = TaskRunner(task_types(), tmp_path, service="crashy", isolation="process", factory=FACTORY)
    assert r.ready.wait(60)
    children = [p for p in _children(os.getpid()) if "tmik_common.task_child" in _cmdline(p)]
    assert children
    r.close(wait=True)
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in children):
        assert time.monotonic() < deadline, "a task process outlived its runner"
        time.sleep(0.05)


# -- replicas sharing the task folder --------------------------------------------------------


def test_replicas_share_tasks_cancel_across_replicas_and_split_the_work(tmp_path: Path) -> None:
    a = TaskRunner(task_types(), tmp_path, service="shared", workers=1)
    b = TaskRunner(task_types(), tmp_path, service="shared", workers=1)
    try:
        ids = [submit(a, "sleep", seconds=0.4) for _ in range(6)]  # all submitted to replica a
        done = [wait_state(b, i, {"done"}) for i in ids]  # and b answers for every one of them
        assert {t["state"] for t in done} == {"done"}
        ran_on = {a.get(i)["runner"] for i in ids}
        assert ran_on  # host names; both replicas are this host, so count claims instead:
        claims = [(tmp_path / "tasks" / "shared" / f"{i}.claim").read_text() for i in ids]
        assert len({c for c in claims if a.instance in c}) and len({c for c in claims if b.instance in c})
        long = submit(a, "sleep", seconds=30)
        wait_state(a, long, {"running"})
        b.cancel(long)  # asked of the other replica
        assert wait_state(a, long, {"cancelled", "done", "failed"}, timeout=5)["state"] == "cancelled"
    finally:
        a.close(wait=True)
        b.close(wait=True)


def test_a_dead_replicas_running_task_is_marked_interrupted(tmp_path: Path) -> None:
    from tmik_common.taskstore import TaskStore

    store = TaskStore(tmp_path, "shared")
    now = time.time()
    dead_pid = 2**22 - 7  # no such process
    store.write({"task_id": "a" * 32, "job_id": "j", "type": "sleep", "state": "running", "progress": 0.3,
                 "stage": "sleeping", "outputs": {}, "error": None, "created_at": now, "updated_at": now,
                 "finished_at": None, "heartbeat": now, "request": {"input": {}, "params": {}},
                 "owner": {"host": os.uname().nodename, "pid": dead_pid, "started": 1, "instance": "gone"}})
    other_host = {"host": "elsewhere", "pid": 1, "started": 1, "instance": "quiet"}
    store.write({"task_id": "b" * 32, "job_id": "j", "type": "sleep", "state": "running", "progress": 0.3,
                 "stage": "sleeping", "outputs": {}, "error": None, "created_at": now, "updated_at": now,
                 "finished_at": None, "heartbeat": now - 5, "request": {"input": {}, "params": {}},
                 "owner": other_host})
    r = TaskRunner(task_types(), tmp_path, service="shared", lost_after=30.0)
    try:
        lost = r.get("a" * 32)
        assert lost["state"] == "failed" and lost["error"]["code"] == "task_interrupted"
        assert r.get("b" * 32)["state"] == "running"  # another machine's, still beating recently
        record = store.read("b" * 32)
        record["heartbeat"] = time.time() - 60
        store.write(record)
        assert r.sweep_lost() == 1 and r.get("b" * 32)["error"]["code"] == "task_interrupted"
    finally:
        r.close()


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.extend(int(t) for t in text)
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
