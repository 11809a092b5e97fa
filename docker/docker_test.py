"""``make docker-test``: the Docker deployment built, started, used, scaled, killed and torn down.

What an operator would do with ``docker compose``, checked end to end on this machine:

1. base images: the official ones when they can be pulled, else stand-ins from Debian's packages
   (docker/base-images.sh);
2. build the three images (the app's once), then look inside them: non-root, a HEALTHCHECK, the project's
   version, numba caches warmed as the runtime user, no compiler in the vocal-mix image;
3. start it and check the running deployment: healthchecks, non-root processes, restart policy, memory
   limits, one published port (on 127.0.0.1), the internal backend network, /api/health;
4. one real job through the REST API: upload a track, wait until it succeeds, download mix.mp3;
5. scale to 2 melody-service, 2 vocal-mix-service and 2 job-manager replicas and run jobs across them:
   all succeed, no task is lost or submitted twice (no 404), and every replica ran tasks;
6. docker kill the job manager running a job, then the vocal-mix replica running another: each job
   still finishes (or fails with a clear message; it never hangs), and the container rejoins when started
   again (docker kill is a manual stop, which no restart policy undoes); then the app's process is
   SIGKILLed from outside, as a crash or the OOM killer would, and restart: unless-stopped brings it back;
7. down and up again: the jobs and their files are still there; then tear everything down.

It ends with one summary line: ``docker-test: N passed, M failed in T s (step times)``. It runs under its
own compose project name (``tmik-dockertest``) and its own port, so a deployment of yours is left alone;
the images (tmik-app, tmik-melody-service, tmik-vocal-mix-service) are shared with it, and kept.
Needs a Docker engine with the compose plugin (docker/engine.sh sets one up from Debian's packages) and
the project's venv (for the test track). Traffic goes only to the app's port on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import requests

PROJECT = "tmik-dockertest"
IMAGES = {"app": "tmik-app:latest", "melody-service": "tmik-melody-service:latest",
          "vocal-mix-service": "tmik-vocal-mix-service:latest"}
# What each image's processes import at start (a shared library missing from the image shows here).
IMPORTS = {"app": "app.app, app.job_manager", "melody-service": "tmik_bgm_conditional_melody_generation.service",
           "vocal-mix-service": "tmik_make_vocal_mix.service, tmik_make_vocal_mix.render"}
SERVICES = ("postgres", "app", "job-manager", "melody-service", "vocal-mix-service")
HEALTHCHECKED = ("postgres", "app", "melody-service", "vocal-mix-service")
TERMINAL = ("succeeded", "failed", "cancelled")
CLIP_SECONDS = 30.0
JOB_TIMEOUT_S = 900.0  # one job, upload to its end, on a loaded 2-core machine (about 1-2 min when idle)
KILL_TIMEOUT_S = 900.0  # a job whose worker or service replica was killed: lease (30 s) + redo + the rest
TASK_RUNNING = re.compile(r"task (\S+) running: type=(\w+) job=([0-9a-f-]{36})")
RESUBMITTED = re.compile(r"no longer knows|submitting it again")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -------------------------------------------------------------------------------------------- bookkeeping
@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    steps: list[tuple[str, float]] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, bool(ok), detail))
        log(f"  {'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
        return bool(ok)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        log(f"== {name}")
        t0 = time.monotonic()
        try:
            yield
        except StepFailed as exc:
            self.check(name, False, str(exc))
            raise
        except Exception as exc:  # a step that crashes is a failed check, and the run goes on to teardown
            self.check(name, False, f"{type(exc).__name__}: {exc}")
            raise StepFailed(str(exc)) from exc
        finally:
            self.steps.append((name, time.monotonic() - t0))
            log(f"== {name}: {time.monotonic() - t0:.0f} s")

    def summary(self) -> str:
        passed = sum(c.ok for c in self.checks)
        failed = len(self.checks) - passed
        steps = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.steps)
        return (f"docker-test: {passed} passed, {failed} failed in {time.monotonic() - self.started:.0f} s "
                f"({steps})")


class StepFailed(Exception):
    """A step could not go on; later steps that depend on it are skipped."""


# -------------------------------------------------------------------------------------------- docker
def run(args: Sequence[str], *, check: bool = True, timeout: float = 600, env: dict[str, str] | None = None,
        quiet: bool = True, cwd: Path = REPO) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), cwd=cwd, env=env, capture_output=quiet, text=True, timeout=timeout,
                          check=False)
    if check and proc.returncode != 0:
        # The last lines say why (compose prints its progress first).
        lines = ((proc.stdout or "") + (proc.stderr or "")).strip().splitlines()[-4:] if quiet else []
        command = " ".join(a for a in args if not a.startswith("/tmp/"))[:120]
        raise StepFailed(f"{command} exited {proc.returncode}: {' | '.join(lines)}")
    return proc


class Deployment:
    """``docker compose`` for the test's own project, with the build overrides and variables it needs."""

    def __init__(self, port: int, env: dict[str, str], overrides: list[str], env_file: Path):
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.env = env
        self.files = ["docker-compose.yml", *overrides]
        self.env_file = env_file

    def compose(self, *args: str, check: bool = True, timeout: float = 900, quiet: bool = True
                ) -> subprocess.CompletedProcess:
        cmd = ["docker", "compose", "-p", PROJECT, "--env-file", str(self.env_file)]
        for f in self.files:
            cmd += ["-f", f]
        return run(cmd + list(args), check=check, timeout=timeout, env=self.env, quiet=quiet)

    def containers(self, service: str | None = None, all_states: bool = False) -> list[dict[str, Any]]:
        """``docker inspect`` of the project's containers (of one service), oldest first."""
        filters = ["--filter", f"label=com.docker.compose.project={PROJECT}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        ids = run(["docker", "ps", "-q", *(["-a"] if all_states else []), *filters]).stdout.split()
        if not ids:
            return []
        found = json.loads(run(["docker", "inspect", *ids]).stdout)
        return sorted(found, key=lambda c: c["Created"])

    def logs(self, container: dict[str, Any], since: str | None = None) -> str:
        args = ["docker", "logs", *(["--since", since] if since else []), container["Id"]]
        proc = run(args, check=False, timeout=60)
        return (proc.stdout or "") + (proc.stderr or "")

    def wait_healthy(self, timeout: float = 600) -> None:
        """Every container running, and healthy where it has a healthcheck."""
        deadline = time.monotonic() + timeout
        while True:
            states = {}
            for c in self.containers(all_states=True):
                health = (c["State"].get("Health") or {}).get("Status")
                states[c["Name"].lstrip("/")] = health or c["State"]["Status"]
            if states and all(s in ("healthy", "running") for s in states.values()):
                return
            if time.monotonic() > deadline:
                raise StepFailed(f"not healthy after {timeout:.0f} s: {states}")
            time.sleep(3)


def name_of(container: dict[str, Any]) -> str:
    return container["Name"].lstrip("/")


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class MemorySampler(threading.Thread):
    """Peak memory per compose service, sampled with ``docker stats`` (for the mem_limit figures)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mb: dict[str, float] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(5.0):
            proc = run(["docker", "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}"], check=False,
                       timeout=60)
            for line in (proc.stdout or "").splitlines():
                match = re.match(rf"{PROJECT}-([a-z-]+?)-\d+ ([\d.]+)([KMG]i?B)", line)
                if match:
                    unit = {"K": 1 / 1024, "M": 1.0, "G": 1024.0}[match.group(3)[0]]
                    mb = float(match.group(2)) * unit
                    self.peak_mb[match.group(1)] = max(self.peak_mb.get(match.group(1), 0.0), mb)

    def stop(self) -> None:
        self._stop_event.set()


# -------------------------------------------------------------------------------------------- the app's API
def test_clips(folder: Path, count: int) -> list[Path]:
    """``count`` different clips of the benchmark track (a rendered public-domain pop background)."""
    from app.bench import cut_track
    from tmik_bgm_conditional_melody_generation.evaluation.bench_analysis import bench_track

    source = bench_track()
    return [cut_track(source, CLIP_SECONDS, folder / f"clip{i}.wav", offset=11.0 * i) for i in range(count)]


def submit(base: str, clip: Path, seed: int) -> str:
    from app.bench import LYRICS

    with open(clip, "rb") as fh:
        resp = requests.post(f"{base}/api/jobs", files={"file": (clip.name, fh, "audio/wav")},
                             data={"lyrics": LYRICS, "seed": str(seed)}, timeout=120)
    if resp.status_code != 201:
        raise StepFailed(f"upload refused: {resp.status_code} {resp.text[:300]}")
    return resp.json()["id"]


def job(base: str, job_id: str) -> dict[str, Any]:
    resp = requests.get(f"{base}/api/jobs/{job_id}", timeout=30)
    resp.raise_for_status()
    return resp.json()


def wait_for(base: str, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            current = job(base, job_id)
        except requests.RequestException as exc:  # the app restarting, say: keep asking until the deadline
            current = {"state": f"unreachable ({type(exc).__name__})"}
        if until(current):
            return current
        if time.monotonic() > deadline:
            raise StepFailed(f"job {job_id} still {current.get('state')} at {current.get('stage')!r} after "
                             f"{timeout:.0f} s")
        time.sleep(1.0)


def finished(j: dict[str, Any]) -> bool:
    return j.get("state") in TERMINAL


def describe(j: dict[str, Any]) -> str:
    err = j.get("error") or {}
    out = f"{j.get('state')} after {j.get('duration_seconds')} s, {j.get('attempts')} attempt(s)"
    return out + (f", error {err.get('code')}: {err.get('message')}" if err else "")


def mix_mp3(base: str, job_id: str) -> bytes:
    resp = requests.get(f"{base}/api/jobs/{job_id}/files/mix.mp3", timeout=60)
    if resp.status_code != 200:
        raise StepFailed(f"mix.mp3 of {job_id}: {resp.status_code} {resp.text[:200]}")
    return resp.content


def mp3_seconds(data: bytes) -> float | None:
    """The MP3's duration by ffprobe (None when it is not a decodable MP3)."""
    with tempfile.NamedTemporaryFile(suffix=".mp3") as fh:
        fh.write(data)
        fh.flush()
        proc = run(["ffprobe", "-v", "error", "-show_entries", "format=format_name,duration", "-of", "json",
                    fh.name], check=False, timeout=60)
    try:
        fmt = json.loads(proc.stdout)["format"]
    except (ValueError, KeyError):
        return None
    return float(fmt["duration"]) if fmt.get("format_name") == "mp3" else None


# -------------------------------------------------------------------------------------------- the test
class DockerTest:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.report = Report()
        self.version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
        self.tmp = Path(tempfile.mkdtemp(prefix="tmik-docker-test-"))
        self.dep: Deployment | None = None
        self.jobs_done: dict[str, str] = {}  # job id -> sha256 of its mix.mp3
        self.sampler = MemorySampler()

    # ---------------------------------------------------------------- setup
    def preflight(self) -> None:
        with self.report.step("preflight"):
            if run(["docker", "info"], check=False, timeout=60).returncode != 0:
                raise StepFailed("no Docker engine answers (docker info failed); on Debian without one: "
                                 "docker/engine.sh install && docker/engine.sh start")
            if run(["docker", "compose", "version"], check=False, timeout=60).returncode != 0:
                raise StepFailed("the docker compose plugin is missing (Debian: docker-compose; "
                                 "or docker/engine.sh install)")
            for tool in ("ffprobe",):
                if run(["sh", "-c", f"command -v {tool}"], check=False).returncode != 0:
                    raise StepFailed(f"{tool} is missing: make system-deps")

    def base_images(self) -> dict[str, str]:
        with self.report.step("base images"):
            cmd = [str(REPO / "docker" / "base-images.sh")] + (["--stand-ins"] if self.args.stand_ins else [])
            out = run(cmd, timeout=1800).stdout
            found = dict(line.split("=", 1) for line in out.split() if "=" in line)
            self.report.facts.append(f"base images: {found['PYTHON_BASE_IMAGE']}, {found['POSTGRES_IMAGE']}")
            return found

    def make_deployment(self, bases: dict[str, str]) -> Deployment:
        port = self.args.port or free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
        env.update(bases)
        env.update({"APP_PORT": str(port), "APP_BIND_ADDRESS": "127.0.0.1", "DOCKER_BUILDKIT": "1"})
        overrides = []
        if self.args.build_network == "host":
            overrides.append("docker/compose.build-host-network.yml")
        wheels = self.args.wheels
        if wheels:
            overrides.append("docker/compose.offline-wheels.yml")
            env["TMIK_WHEELS_DIR"] = str(Path(wheels).resolve())
            self.report.facts.append(f"torch from {wheels}")
        empty_env = self.tmp / "empty.env"  # the test's settings only, never a .env of yours
        empty_env.write_text("")
        return Deployment(port, env, overrides, empty_env)

    # ---------------------------------------------------------------- steps
    def build(self, dep: Deployment) -> None:
        with self.report.step("build"):
            proc = dep.compose("build", "--progress", "plain", timeout=3600)
            out = (proc.stdout or "") + (proc.stderr or "")
            (self.tmp / "build.log").write_text(out)
            targets = set(re.findall(r"^#\d+ \[([a-z-]+)[ \]]", out, re.MULTILINE)) - {"internal"}
            self.report.check("the app image is built once (job-manager reuses it)",
                              "job-manager" not in targets and {"app", "melody-service", "vocal-mix-service"}
                              >= targets, f"build targets: {sorted(targets)}")

    def inspect_images(self) -> None:
        with self.report.step("images"):
            sizes = []
            for service, image in IMAGES.items():
                (info,) = json.loads(run(["docker", "image", "inspect", image]).stdout)
                cfg = info["Config"]
                sizes.append(f"{service} {info['Size'] / 1e9:.2f} GB")
                self.report.check(f"{service} image runs as a non-root user",
                                  cfg.get("User") not in (None, "", "root", "0"), f"USER {cfg.get('User')!r}")
                self.report.check(f"{service} image has a HEALTHCHECK", bool(cfg.get("Healthcheck")))
            self.report.facts.append("image sizes: " + ", ".join(sizes))
            got = self._in_image("app", "python -c \"import importlib.metadata as m; print(m.version('tmik-music'))\"")
            self.report.check("the app image knows the project's version", got == self.version,
                              f"{got!r}, pyproject {self.version!r}")
            for service, modules in IMPORTS.items():
                got = self._in_image(service, f"python -c 'import {modules}' && echo imported")
                self.report.check(f"{service} image imports its code ({modules})", got.endswith("imported"),
                                  got[-300:])
            got = self._in_image("vocal-mix-service", "for c in gcc g++ cc c++ clang; do command -v $c; done; "
                                 "python -c 'import pyworld; print(\"pyworld\", pyworld.__version__)'")
            self.report.check("the vocal-mix image has pyworld and no compiler", got.startswith("pyworld"), got)
            for service in ("melody-service", "vocal-mix-service"):
                got = self._in_image(service, 'n=$(find "$NUMBA_CACHE_DIR" -name "*.nbi" | wc -l); '
                                     'o=$(find "$NUMBA_CACHE_DIR" ! -user "$(id -un)" | wc -l); '
                                     'echo "$n index files, $o not owned by $(id -un)"')
                match = re.match(r"(\d+) index files, (\d+) not", got)
                self.report.check(f"{service} image has numba caches warmed by its user",
                                  bool(match) and int(match.group(1)) > 0 and match.group(2) == "0", got)

    def _in_image(self, service: str, script: str) -> str:
        proc = run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", IMAGES[service], "-c",
                    script], check=False, timeout=300)
        return ((proc.stdout or "").strip() or (proc.stderr or "").strip()[-500:])

    def up(self, dep: Deployment, name: str = "up") -> None:
        with self.report.step(name):
            dep.compose("up", "-d", "--no-build", "--remove-orphans", timeout=900)
            dep.wait_healthy(self.args.up_timeout)

    def check_deployment(self, dep: Deployment) -> None:
        with self.report.step("deployment"):
            containers = dep.containers()
            by_service: dict[str, list[dict[str, Any]]] = {}
            for c in containers:
                by_service.setdefault(c["Config"]["Labels"]["com.docker.compose.service"], []).append(c)
            self.report.check("one container per service is running", sorted(by_service) == sorted(SERVICES)
                              and all(len(v) == 1 for v in by_service.values()), f"{sorted(by_service)}")
            for service in HEALTHCHECKED:
                health = [(c["State"].get("Health") or {}).get("Status") for c in by_service.get(service, [])]
                self.report.check(f"{service} is healthy (its healthcheck)", health == ["healthy"], f"{health}")
            for c in containers:
                uid = run(["docker", "exec", c["Id"], "id", "-u"], check=False).stdout.strip()
                self.report.check(f"{name_of(c)} runs as a non-root user", uid not in ("", "0"), f"uid {uid}")
            pid1 = {name_of(c): run(["docker", "exec", c["Id"], "cat", "/proc/1/comm"], check=False).stdout.strip()
                    for c in containers if c["Config"]["Labels"]["com.docker.compose.service"] != "postgres"}
            self.report.check("tini is PID 1 in the app, job-manager and service containers",
                              set(pid1.values()) == {"tini"}, f"{pid1}")
            policies = {name_of(c): c["HostConfig"]["RestartPolicy"]["Name"] for c in containers}
            self.report.check("every container restarts unless stopped",
                              set(policies.values()) == {"unless-stopped"}, f"{policies}")
            limits = {name_of(c): f"{c['HostConfig']['Memory'] / 2**30:g} GiB" for c in containers}
            self.report.check("every container has a memory limit",
                              all(c["HostConfig"]["Memory"] > 0 for c in containers), f"{limits}")
            published = {name_of(c): [(b["HostIp"], b["HostPort"]) for bindings in
                                      (c["NetworkSettings"]["Ports"] or {}).values() for b in (bindings or [])]
                         for c in containers}
            published = {k: v for k, v in published.items() if v}
            app_name = name_of(by_service["app"][0])
            self.report.check("one port is published: the app's, on 127.0.0.1",
                              set(published) == {app_name}
                              and {ip for ip, _ in published[app_name]} == {"127.0.0.1"}
                              and {p for _, p in published[app_name]} == {str(dep.port)}, f"{published}")
            backend = json.loads(run(["docker", "network", "inspect", f"{PROJECT}_backend"]).stdout)[0]
            self.report.check("the backend network is internal", backend["Internal"] is True)
            networks = {name_of(c): sorted(n.removeprefix(f"{PROJECT}_") for n in c["NetworkSettings"]["Networks"])
                        for c in containers}
            self.report.check("only the app is on a network besides backend",
                              all(v == ["backend"] for k, v in networks.items() if k != app_name)
                              and networks[app_name] == ["backend", "frontend"], f"{networks}")
            health = requests.get(f"{dep.base}/api/health", timeout=30).json()
            self.report.check("/api/health: ok, the project's version, database and both services up",
                              health.get("status") == "ok" and health.get("version") == self.version
                              and health["database"]["ok"]
                              and all(s["ok"] for s in health["services"].values()),
                              json.dumps(health)[:400])

    def first_job(self, dep: Deployment, clip: Path) -> None:
        with self.report.step("first job"):
            t0 = time.monotonic()
            job_id = submit(dep.base, clip, seed=1)
            done = wait_for(dep.base, job_id, finished, JOB_TIMEOUT_S)
            seconds = time.monotonic() - t0
            self.report.facts.append(f"first job: {seconds:.0f} s upload to succeeded ({CLIP_SECONDS:.0f} s clip)")
            if not self.report.check("a real job succeeds through the REST API", done["state"] == "succeeded",
                                     describe(done)):
                return
            data = mix_mp3(dep.base, job_id)
            duration = mp3_seconds(data)
            self.report.check("its mix.mp3 downloads and decodes to the clip's length",
                              duration is not None and abs(duration - CLIP_SECONDS) < 2.0,
                              f"{len(data)} bytes, {duration} s")
            self.jobs_done[job_id] = hashlib.sha256(data).hexdigest()

    def scaled_jobs(self, dep: Deployment, clips: list[Path]) -> None:
        with self.report.step("scale"):
            dep.compose("up", "-d", "--no-build", "--no-recreate", "--scale", "melody-service=2",
                        "--scale", "vocal-mix-service=2", "--scale", "job-manager=2", timeout=900)
            dep.wait_healthy(self.args.up_timeout)
            counts = {s: len(dep.containers(s)) for s in ("melody-service", "vocal-mix-service", "job-manager")}
            if not self.report.check("scaled to 2 melody, 2 vocal-mix, 2 job-manager replicas",
                                     set(counts.values()) == {2}, f"{counts}"):
                raise StepFailed("scaling failed")
        with self.report.step("jobs on 2x2 replicas"):
            since = now_iso()
            ids = [submit(dep.base, clip, seed=10 + i) for i, clip in enumerate(clips)]
            results = {job_id: wait_for(dep.base, job_id, finished, JOB_TIMEOUT_S * 2) for job_id in ids}
            ok = [j for j in results.values() if j["state"] == "succeeded"]
            self.report.check(f"{len(ids)} jobs at once all succeed", len(ok) == len(ids),
                              "; ".join(describe(j) for j in results.values()))
            for job_id in (j["id"] for j in ok):
                self.jobs_done[job_id] = hashlib.sha256(mix_mp3(dep.base, job_id)).hexdigest()
            for service in ("melody-service", "vocal-mix-service"):
                ran = {name_of(c): len([m for m in TASK_RUNNING.findall(dep.logs(c, since)) if m[2] in ids])
                       for c in dep.containers(service)}
                self.report.check(f"both {service} replicas ran tasks (shared task state)",
                                  len(ran) == 2 and all(ran.values()), f"tasks running per replica: {ran}")
            managers = {name_of(c): dep.logs(c, since) for c in dep.containers("job-manager")}
            resubmits = {k: len(RESUBMITTED.findall(v)) for k, v in managers.items()}
            self.report.check("no task was lost or submitted again (no 404 from another replica)",
                              not any(resubmits.values()), f"resubmissions per job manager: {resubmits}")
            started = {k: len(re.findall(r"job \S+: started", v)) for k, v in managers.items()}
            self.report.check("both job managers ran jobs", len(started) == 2 and all(started.values()),
                              f"jobs started per job manager: {started}")

    def _kill_mid_job(self, dep: Deployment, clip: Path, service: str, seed: int) -> None:
        """Start a job, docker kill the ``service`` container working on it, and see the job end."""
        since = now_iso()
        job_id = submit(dep.base, clip, seed=seed)
        # The job manager that claimed it (its log names the job), or the replica running its vocal task.
        victim: dict[str, Any] | None = None
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while victim is None and time.monotonic() < deadline:
            for c in dep.containers(service):
                text = dep.logs(c, since)
                if service == "job-manager":
                    picked = re.search(rf"job {job_id}: started", text) is not None
                else:
                    picked = any(m[2] == job_id for m in TASK_RUNNING.findall(text))
                if picked:
                    victim = c
            if finished(job(dep.base, job_id)):
                raise StepFailed(f"job {job_id} ended before its {service} could be killed")
            time.sleep(0.5)
        if victim is None:
            raise StepFailed(f"no {service} container picked up job {job_id}")
        time.sleep(3.0)  # well inside the work, not at its first line
        stage = job(dep.base, job_id).get("stage")
        run(["docker", "kill", victim["Id"]])
        t_kill = time.monotonic()
        log(f"  killed {name_of(victim)} while job {job_id} was at {stage!r}")
        done = wait_for(dep.base, job_id, finished, KILL_TIMEOUT_S)
        clear = done["state"] == "succeeded" or bool((done.get("error") or {}).get("message"))
        self.report.check(f"a job whose {service} was killed mid-job ends, never hangs",
                          clear, f"{describe(done)}; {time.monotonic() - t_kill:.0f} s after the kill")
        self.report.facts.append(f"kill {service}: job {done['state']} {time.monotonic() - t_kill:.0f} s after "
                                 "the kill")
        if done["state"] == "succeeded":
            self.jobs_done[job_id] = hashlib.sha256(mix_mp3(dep.base, job_id)).hexdigest()
        # docker kill counts as a manual stop, which no restart policy undoes: start it again, as an operator
        # would (or `docker compose up -d`), and see it rejoin.
        run(["docker", "start", victim["Id"]])
        self._wait_running(victim["Id"], lambda c: True)

    def _wait_running(self, container_id: str, condition: Callable[[dict[str, Any]], bool],
                      timeout: float = 300) -> dict[str, Any]:
        """The container once it runs, is healthy (where it has a healthcheck) and meets ``condition``."""
        deadline = time.monotonic() + timeout
        while True:
            (c,) = json.loads(run(["docker", "inspect", container_id]).stdout)
            health = (c["State"].get("Health") or {}).get("Status", "healthy")
            if c["State"]["Running"] and health == "healthy" and condition(c):
                return c
            if time.monotonic() > deadline:
                raise StepFailed(f"{name_of(c)} not back after {timeout:.0f} s: {c['State']['Status']}, {health}")
            time.sleep(2)

    def crash_and_restart(self, dep: Deployment) -> None:
        """The app's process dies (SIGKILL from outside, as the OOM killer does): restart: unless-stopped
        brings the container back and the API answers again."""
        (app,) = dep.containers("app")
        top = run(["docker", "top", app["Id"], "-o", "pid,ppid,comm"]).stdout.splitlines()[1:]
        main = [int(pid) for pid, ppid, comm in (line.split(None, 2) for line in top)
                if int(ppid) == app["State"]["Pid"] and comm.startswith("python")]
        if not main:
            raise StepFailed(f"no python process under the app's PID 1: {top}")
        t0 = time.monotonic()
        os.kill(main[0], 9)  # a process of the container this test started
        back = self._wait_running(app["Id"], lambda c: c["RestartCount"] > app["RestartCount"])
        ok = requests.get(f"{dep.base}/api/health", timeout=30).status_code == 200
        self.report.check("a crashed app container is restarted and answers again",
                          ok and back["RestartCount"] > app["RestartCount"],
                          f"restart count {app['RestartCount']} -> {back['RestartCount']}, healthy "
                          f"{time.monotonic() - t0:.0f} s after the crash")

    def kills(self, dep: Deployment, clips: list[Path]) -> None:
        with self.report.step("kill a job manager"):
            self._kill_mid_job(dep, clips[0], "job-manager", seed=31)
        with self.report.step("kill a vocal-mix replica"):
            self._kill_mid_job(dep, clips[1], "vocal-mix-service", seed=32)
        with self.report.step("crash and restart"):
            self.crash_and_restart(dep)
        dep.wait_healthy(self.args.up_timeout)

    def down_up(self, dep: Deployment) -> None:
        with self.report.step("down/up"):
            dep.compose("down", timeout=300)
            left = dep.containers(all_states=True)
            self.report.check("down removes every container", not left, f"{[name_of(c) for c in left]}")
            dep.compose("up", "-d", "--no-build", timeout=900)
            dep.wait_healthy(self.args.up_timeout)
            kept = {}
            for job_id, digest in self.jobs_done.items():
                j = job(dep.base, job_id)
                kept[job_id] = j["state"] == "succeeded" and hashlib.sha256(mix_mp3(dep.base, job_id)
                                                                            ).hexdigest() == digest
            self.report.check("after down/up every finished job and its mix.mp3 are still there",
                              bool(kept) and all(kept.values()), f"{sum(kept.values())} of {len(kept)} jobs")

    def teardown(self, dep: Deployment) -> None:
        with self.report.step("teardown"):
            dep.compose("down", "-v", "--remove-orphans", timeout=300)
            volumes = run(["docker", "volume", "ls", "-q", "--filter",
                           f"label=com.docker.compose.project={PROJECT}"]).stdout.split()
            self.report.check("teardown leaves no container or volume", not dep.containers(all_states=True)
                              and not volumes, f"volumes left: {volumes}")

    def dump_state(self, dep: Deployment) -> None:
        """What an operator would look at when a step failed: the containers and their last log lines."""
        folder = self.tmp / "logs"
        folder.mkdir(exist_ok=True)
        for c in dep.containers(all_states=True):
            (folder / f"{name_of(c)}.log").write_text(dep.logs(c))
        log(f"  container logs saved in {folder}")

    # ---------------------------------------------------------------- the whole run
    def main(self) -> int:
        dep = None
        try:
            self.preflight()
            bases = self.base_images()
            dep = self.dep = self.make_deployment(bases)
            clips = test_clips(self.tmp, 4)
            dep.compose("down", "-v", "--remove-orphans", timeout=300)  # what an earlier run left
            if not self.args.no_build:
                self.build(dep)
            self.inspect_images()
            self.up(dep)
            self.sampler.start()
            self.check_deployment(dep)
            self.first_job(dep, clips[0])
            self.scaled_jobs(dep, clips)
            self.kills(dep, clips[2:])
            self.down_up(dep)
        except StepFailed:
            log("stopped: the steps after this one need it")
            if dep is not None:
                self.dump_state(dep)
        except KeyboardInterrupt:
            self.report.check("run", False, "interrupted")
        finally:
            self.sampler.stop()
            if self.sampler.peak_mb:
                self.report.facts.append("peak memory: " + ", ".join(
                    f"{k} {v:.0f} MB" for k, v in sorted(self.sampler.peak_mb.items())))
            if dep is not None and not self.args.keep:
                try:
                    self.teardown(dep)
                except StepFailed:
                    pass
            elif dep is not None:
                log(f"kept running (--keep): {dep.base}; stop with: docker compose -p {PROJECT} down -v")
        for fact in self.report.facts:
            log(fact)
        failed = [c for c in self.report.checks if not c.ok]
        for c in failed:
            log(f"FAILED: {c.name}: {c.detail}")
        log(f"files of this run: {self.tmp}")
        print(self.report.summary(), flush=True)
        return 1 if failed or not self.report.checks else 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_wheels() -> str | None:
    """A folder with torch's CPU wheel (TMIK_WHEELS_DIR, else /opt/wheels on these machines), if any."""
    for folder in filter(None, (os.environ.get("TMIK_WHEELS_DIR"), "/opt/wheels")):
        if list(Path(folder).glob("torch-*.whl")):
            return folder
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="docker/docker_test.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="host port of the app (default: a free one)")
    parser.add_argument("--no-build", action="store_true", help="use the images already built")
    parser.add_argument("--stand-ins", action="store_true", help="use the stand-in base images even if the "
                        "official ones can be pulled")
    parser.add_argument("--build-network", choices=("host", "default"), default="host",
                        help="network of the builds (default host: some machines reach PyPI only from it)")
    parser.add_argument("--wheels", default=default_wheels(),
                        help="folder of wheels for the melody image (torch's CPU build) instead of the PyTorch "
                             "index (default: TMIK_WHEELS_DIR or /opt/wheels when it has a torch wheel)")
    parser.add_argument("--no-wheels", dest="wheels", action="store_const", const=None,
                        help="take torch from the PyTorch CPU index (the Dockerfile's default)")
    parser.add_argument("--up-timeout", type=float, default=600.0, help="seconds to wait for healthy containers")
    parser.add_argument("--keep", action="store_true", help="leave the deployment running at the end")
    args = parser.parse_args(argv)
    return DockerTest(args).main()


if __name__ == "__main__":
    sys.exit(main())
