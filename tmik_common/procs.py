"""Process hygiene shared by the services, their task processes and the launcher (Linux; harmless elsewhere).

- :func:`die_with_parent`: a child that must never outlive its parent (after ``kill -9`` of a service,
  its task processes and their worker pools go too).
- :func:`private_tmpdir`: one temporary folder per process, so what a killed process leaves behind
  (multiprocessing's ``pymp-*`` folders, half-written files) is found and removed at the next start.
- :func:`group_rss_bytes`, :func:`kill_group`: the memory of a process group, and its end.
- :func:`describe_exit`: an exit status in words ("killed by SIGSEGV").
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["describe_exit", "die_with_parent", "group_rss_bytes", "kill_group", "pid_alive", "private_tmpdir",
           "process_started"]

_PR_SET_PDEATHSIG = 1
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies; False where unsupported.

    Call it first thing in a child, with ``parent`` the pid the parent gave it: if that parent is
    already gone (it died before the request took effect, and this process now has another parent),
    the child exits at once, saying so. (A parent may well be pid 1: a service in a container.)
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if parent is not None and os.getppid() != parent:
        print(f"process {os.getpid()}: its parent {parent} is gone; exiting", file=sys.stderr, flush=True)
        os._exit(1)
    return True


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this machine (zombies count as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def process_started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot; /proc), or None if unknown or gone.

    With the pid, it names one process for good: a pid reused by a later process (a restarted
    container's service gets the same small pid) has another start time.
    """
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def private_tmpdir(name: str) -> Path:
    """Give this process (and its children) a temporary folder of its own, and clean up after dead ones.

    The folder is ``<system temp>/tmik/<name>-<pid>``; ``TMPDIR`` and :mod:`tempfile` point at it.
    Folders of the same ``name`` whose process is gone are removed first, so a service that was
    killed leaves nothing behind after its next start.
    """
    base = Path(os.environ.get("TMIK_TMP_ROOT") or Path(tempfile.gettempdir()) / "tmik")
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in base.glob(f"{name}-*"):
        pid_text = stale.name.rsplit("-", 1)[-1]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not pid_alive(int(pid_text)):
            shutil.rmtree(stale, ignore_errors=True)
            log.info("removed %s, left by a process that is gone", stale)
    own = base / f"{name}-{os.getpid()}"
    own.mkdir(mode=0o700, exist_ok=True)
    os.environ["TMPDIR"] = str(own)
    os.environ["TMIK_TMP_ROOT"] = str(base)  # children put their own folders beside ours
    tempfile.tempdir = str(own)
    return own


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of every process in process group ``pgid`` (0 where /proc is unavailable)."""
    if not os.path.isdir("/proc"):
        return 0
    total = 0
    for pid in _group_members(pgid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    return total


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to process group ``pgid``; no error when it is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def describe_exit(exitcode: int | None) -> str:
    """``"killed by SIGSEGV (a crash)"``, ``"exit status 3"``, ...: how a child ended, in words."""
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        why = {"SIGSEGV": "a crash", "SIGBUS": "a crash", "SIGABRT": "an abort", "SIGILL": "a crash",
               "SIGFPE": "a crash", "SIGKILL": "killed, often by the system for lack of memory"}.get(name)
        return f"killed by {name}" + (f" ({why})" if why else "")
    return f"exit status {exitcode}"
