"""Embedded mode: start every process of the system on localhost from one command.

``python -m app.launcher`` (what ``make run`` calls):

1. loads ``.env`` from the repository root if it exists (``KEY=VALUE`` lines; variables already
   in the environment win), then fills in the embedded defaults: SQLite in ``shared_data/``,
   the services on 127.0.0.1:8001 and :8002;
2. creates ``shared_data/`` and its ``input/``, ``melody_results/``, ``vocal_results/`` folders;
3. starts melody-service, vocal-mix-service, job-manager and app, each as ``python -m MODULE``,
   skipping (and saying so) those whose module is not part of this build yet;
4. prefixes every line a child prints with its name, as ``docker compose logs`` does;
5. waits for the services' ``/health`` and prints the address to open;
6. restarts a child that dies on its own, after a pause that doubles with each quick death
   (1 s up to 30 s; back to 1 s once it has run a minute), as compose's ``restart:
   unless-stopped`` does, logging why;
7. on Ctrl-C or SIGTERM stops the children (SIGTERM, then SIGKILL after a timeout).

A variable set to nothing (``MELODY_SERVICE_URL=``) counts as unset, here as in every process:
the default (or ``.env``'s value) applies. The services' token (SERVICE_TOKEN) is made once and
kept in ``shared_data/.secrets/`` unless you set one.

It uses only the standard library (and tmik_common's stdlib-only secrets), so it works before
anything else is importable.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from tmik_common.procs import describe_exit
from tmik_common.secrets import service_token

log = logging.getLogger("launcher")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_SUBDIRS = ("input", "melody_results", "vocal_results")
NAME_WIDTH = 18
HEALTH_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.25
RESTART_FIRST_S = 1.0
RESTART_MAX_S = 30.0
RESTART_RESET_S = 60.0  # a child that ran this long before dying is restarted after the first pause again


@dataclass(frozen=True)
class ProcessSpec:
    """One process of the system: its display name, module, and health URL (None: no HTTP)."""

    name: str
    module: str
    health_url: str | None = None


@dataclass
class Child:
    spec: ProcessSpec
    proc: subprocess.Popen
    healthy: bool = False
    reader: threading.Thread | None = field(default=None, repr=False)
    started_at: float = field(default_factory=time.monotonic)
    restarts: int = 0
    pause: float = RESTART_FIRST_S
    restart_at: float | None = None  # when a dead child is started again


# --------------------------------------------------------------------------- environment


def parse_dotenv(text: str) -> dict[str, str]:
    """Parse ``KEY=VALUE`` lines: ``#`` comments, blank lines, an optional ``export``, quoted values.

    Unquoted values lose a trailing `` # comment``; quoted ones are taken literally.
    """
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "").isalnum() or key[0].isdigit():
            log.warning(".env: ignoring line that is not KEY=VALUE: %r", raw)
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            hash_at = value.find(" #")
            if hash_at >= 0:
                value = value[:hash_at].rstrip()
        values[key] = value
    return values


def load_dotenv(path: Path, env: MutableMapping[str, str]) -> list[str]:
    """Copy ``path``'s variables into ``env`` where not already set; return the names applied."""
    if not path.is_file():
        return []
    applied = []
    for key, value in parse_dotenv(path.read_text(encoding="utf-8")).items():
        if not (env.get(key) or "").strip():  # empty counts as unset: .env fills it
            env[key] = value
            applied.append(key)
    return applied


def set_default(env: MutableMapping[str, str], key: str, value: str) -> None:
    """``env[key] = value`` unless ``key`` has a value already (empty counts as unset, as everywhere)."""
    if not (env.get(key) or "").strip():
        env[key] = value


def apply_defaults(env: MutableMapping[str, str], root: Path = REPO_ROOT) -> None:
    """Fill in the embedded-mode defaults for whatever ``env`` does not set.

    Relative paths (``SHARED_DATA_DIR=./shared_data``, the default) are taken from the
    repository root and made absolute, so every child agrees whatever its working folder.
    """
    shared = Path((env.get("SHARED_DATA_DIR") or "").strip() or "shared_data").expanduser()
    if not shared.is_absolute():
        shared = root / shared
    env["SHARED_DATA_DIR"] = str(shared.resolve())
    # sqlite:///shared_data/jobs.db, as an absolute path (sqlite:////abs/.../jobs.db).
    set_default(env, "DATABASE_URL", f"sqlite:///{shared.resolve() / 'jobs.db'}")
    set_default(env, "MELODY_SERVICE_PORT", "8001")
    set_default(env, "VOCAL_SERVICE_PORT", "8002")
    set_default(env, "APP_PORT", "8080")
    set_default(env, "MELODY_SERVICE_URL", f"http://127.0.0.1:{env['MELODY_SERVICE_PORT'].strip()}")
    set_default(env, "VOCAL_SERVICE_URL", f"http://127.0.0.1:{env['VOCAL_SERVICE_PORT'].strip()}")
    set_default(env, "PYTHONUNBUFFERED", "1")


def make_shared_dirs(shared_data_dir: Path) -> None:
    for sub in SHARED_SUBDIRS:
        (shared_data_dir / sub).mkdir(parents=True, exist_ok=True)


def process_specs(env: Mapping[str, str]) -> list[ProcessSpec]:
    """The four processes, in start order: the services first, the app last."""
    app_port = (env.get("APP_PORT") or "").strip() or "8080"
    return [
        ProcessSpec("melody-service", "tmik_bgm_conditional_melody_generation.service",
                    env["MELODY_SERVICE_URL"].rstrip("/") + "/health"),
        ProcessSpec("vocal-mix-service", "tmik_make_vocal_mix.service",
                    env["VOCAL_SERVICE_URL"].rstrip("/") + "/health"),
        ProcessSpec("job-manager", "app.job_manager", None),
        ProcessSpec("app", "app.app", f"http://127.0.0.1:{app_port}/api/health"),
    ]


def module_exists(module: str) -> bool:
    """True when ``module`` can be found (importing its parent packages, not the module)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def port_in_use(url: str) -> bool:
    """True when something already accepts connections at ``url``'s host and port."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- children


def _parent_death_hook() -> Callable[[], None] | None:
    """A pre-exec hook that makes the child get SIGTERM if the launcher dies (Linux only), so no
    child outlives a launcher that was killed with SIGKILL. None where prctl is unavailable."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not after fork
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return hook


def start_child(spec: ProcessSpec, env: Mapping[str, str], cwd: Path) -> Child:
    """Start ``python -m spec.module`` in its own session (so Ctrl-C reaches only the launcher,
    which then stops the children in order), its output piped to us."""
    proc = subprocess.Popen(
        [sys.executable, "-m", spec.module],
        cwd=str(cwd),
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # The hook only makes one system call (prctl, looked up before the fork), so it is safe
        # even when the launcher restarts a child while its relay threads run.
        preexec_fn=_parent_death_hook(),  # noqa: PLW1509
    )
    log.info("started %s (python -m %s, pid %d)", spec.name, spec.module, proc.pid)
    return Child(spec=spec, proc=proc)


_COLORS = ("36", "33", "32", "35", "34", "31")
_write_lock = threading.Lock()


def relay_output(child: Child, out, color: str | None) -> None:
    """Copy the child's output to ``out`` line by line, each line prefixed with its name."""
    prefix = f"{child.spec.name:<{NAME_WIDTH}}| "
    if color:
        prefix = f"\033[{color}m{prefix}\033[0m"
    stream = child.proc.stdout
    assert stream is not None
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        with _write_lock:
            out.write(prefix + line + "\n")
            out.flush()
    stream.close()


def check_health(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def signal_group(child: Child, sig: int) -> None:
    """Send ``sig`` to the child's process group (the child and anything it started)."""
    if child.proc.poll() is not None:
        return
    try:
        os.killpg(child.proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            child.proc.send_signal(sig)
        except ProcessLookupError:
            pass


def stop_children(children: list[Child], timeout: float = STOP_TIMEOUT_S,
                  force: threading.Event | None = None) -> None:
    """SIGTERM every running child (the app first), wait up to ``timeout``, then SIGKILL."""
    running = [c for c in children if c.proc.poll() is None]
    if not running:
        return
    log.info("stopping %s", ", ".join(c.spec.name for c in running))
    for child in reversed(running):
        signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(c.proc.poll() is None for c in running):
        if force is not None and force.is_set():
            break
        time.sleep(0.05)
    for child in running:
        if child.proc.poll() is None:
            log.warning("%s did not stop within %.0f s; killing it", child.spec.name, timeout)
            signal_group(child, signal.SIGKILL)
    for child in running:
        try:
            child.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.error("%s (pid %d) is still running after SIGKILL", child.spec.name, child.proc.pid)
        if child.reader is not None:
            child.reader.join(timeout=2)
        log.info("%s stopped (exit code %s)", child.spec.name, child.proc.returncode)


# --------------------------------------------------------------------------- main


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"{'launcher':<{NAME_WIDTH}}| %(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
    )


def run(env: dict[str, str], health_timeout: float = HEALTH_TIMEOUT_S,
        stop_timeout: float = STOP_TIMEOUT_S) -> int:
    """Start the system with ``env`` and supervise it until a signal, restarting children that die.

    Returns the exit code: 0 after a requested stop, 1 when nothing could start, 2 when a child
    refused its configuration (it would only fail again).
    """
    apply_defaults(env)
    shared = Path(env["SHARED_DATA_DIR"])
    make_shared_dirs(shared)
    log.info("shared data in %s; database %s", shared, env["DATABASE_URL"])
    try:
        # One token for the job manager and both services, made here once (and kept on disk).
        env["SERVICE_TOKEN"] = service_token(shared)
    except OSError as exc:
        log.error("cannot create the service token in %s: %s", shared, exc)
        return 1

    specs = []
    for spec in process_specs(env):
        if module_exists(spec.module):
            specs.append(spec)
        else:
            log.warning("%s is not part of this build yet (no module %s); not starting it",
                        spec.name, spec.module)
    if not specs:
        log.error("nothing to start: none of the system's modules is present")
        return 1
    busy = [s for s in specs if s.health_url and port_in_use(s.health_url)]
    for spec in busy:
        log.error("%s cannot start: %s is already in use (is another `make run` going?)",
                  spec.name, urlsplit(spec.health_url or "").netloc)
    if busy:
        return 1

    stop_requested = threading.Event()
    force = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop_requested.is_set():
            force.set()  # a second Ctrl-C: do not wait for a clean stop
        stop_requested.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    children: list[Child] = []
    try:
        for spec in specs:
            children.append(start_child(spec, env, REPO_ROOT))
    except OSError as exc:
        log.error("could not start a process: %s", exc)
        stop_children(children, stop_timeout, force)
        return 1
    use_color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    colors = {c.spec.name: (_COLORS[i % len(_COLORS)] if use_color else None) for i, c in enumerate(children)}
    for child in children:
        start_relay(child, colors[child.spec.name])

    started = time.monotonic()
    announced = timeout_logged = False
    exit_code = 0
    while not stop_requested.is_set():
        if supervise(children, env, colors) == "config_error":
            exit_code = 2
            break
        for c in children:
            if c.spec.health_url and not c.healthy and check_health(c.spec.health_url):
                c.healthy = True
                log.info("%s is ready at %s", c.spec.name, c.spec.health_url)
        waiting = [c for c in children if c.spec.health_url and not c.healthy]
        if not announced and not waiting:
            announced = True
            announce(children, env, time.monotonic() - started)
        elif waiting and not timeout_logged and time.monotonic() - started > health_timeout:
            timeout_logged = True
            log.warning("still waiting after %.0f s for %s", health_timeout,
                        ", ".join(f"{c.spec.name} ({c.spec.health_url})" for c in waiting))
        stop_requested.wait(POLL_S if announced else 0.5)

    if stop_requested.is_set():
        log.info("stop requested")
    stop_children(children, stop_timeout, force)
    return exit_code


def start_relay(child: Child, color: str | None) -> None:
    child.reader = threading.Thread(target=relay_output, args=(child, sys.stdout, color),
                                    name=f"relay-{child.spec.name}", daemon=True)
    child.reader.start()


def supervise(children: list[Child], env: Mapping[str, str], colors: Mapping[str, str | None],
              now: float | None = None) -> str | None:
    """Restart children that died, after a pause that doubles with each quick death (1 s up to 30 s,
    reset once a child has run RESTART_RESET_S). ``"config_error"`` when a child exited with status 2
    (it refused its configuration: restarting would only repeat that)."""
    now = time.monotonic() if now is None else now
    for child in children:
        if child.restart_at is None:
            code = child.proc.poll()
            if code is None:
                continue
            ran = now - child.started_at
            if code == 2:
                log.error("%s refused its configuration (exit status 2; its message is above); fix it and run "
                          "again", child.spec.name)
                return "config_error"
            if ran >= RESTART_RESET_S:
                child.pause = RESTART_FIRST_S
            log.error("%s stopped unexpectedly (%s) after %.0f s; restarting it in %.0f s", child.spec.name,
                      describe_exit(code), ran, child.pause)
            child.restart_at = now + child.pause
            child.pause = min(child.pause * 2, RESTART_MAX_S)
            child.healthy = False
        elif now >= child.restart_at:
            try:
                fresh = start_child(child.spec, env, REPO_ROOT)
            except OSError as exc:
                log.error("could not restart %s: %s; trying again in %.0f s", child.spec.name, exc, child.pause)
                child.restart_at = now + child.pause
                continue
            if child.reader is not None:
                child.reader.join(timeout=1)
            child.proc, child.started_at, child.restart_at = fresh.proc, now, None
            child.restarts += 1
            log.info("%s restarted (restart %d, pid %d)", child.spec.name, child.restarts, child.proc.pid)
            start_relay(child, colors.get(child.spec.name))
    return None


def announce(children: list[Child], env: Mapping[str, str], seconds: float) -> None:
    names = {c.spec.name for c in children}
    log.info("all started processes are up (%.1f s)", seconds)
    if "app" in names:
        log.info("open http://localhost:%s in your browser; Ctrl-C stops everything",
                 env.get("APP_PORT", "8080"))
    else:
        urls = [f"{c.spec.name} at {c.spec.health_url.rsplit('/health', 1)[0]}"
                for c in children if c.spec.health_url]
        log.info("the app (web UI) is not part of this build yet; serving %s. Ctrl-C stops everything",
                 ", ".join(urls) or "no HTTP service")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.launcher",
        description="Start the whole system on localhost (embedded mode). Ctrl-C stops it.",
    )
    parser.add_argument("--health-timeout", type=float, default=HEALTH_TIMEOUT_S,
                        help="seconds to wait for the services' /health before warning "
                             "(default %(default)s)")
    parser.add_argument("--stop-timeout", type=float, default=STOP_TIMEOUT_S,
                        help="seconds a child gets to stop after SIGTERM before SIGKILL "
                             "(default %(default)s)")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    applied = load_dotenv(REPO_ROOT / ".env", env)
    configure_logging(env.get("LOG_LEVEL", "INFO"))
    if applied:
        log.info("loaded %s from .env", ", ".join(applied))
    return run(env, health_timeout=args.health_timeout, stop_timeout=args.stop_timeout)


if __name__ == "__main__":
    sys.exit(main())
