"""``make bench``: the whole system under load, through its REST API, as a user meets it.

Run ``python -m app.bench [--jobs 20] [--seconds 60] [--single 180] [--job-workers 2]``. It starts
the embedded system (``python -m app.launcher``: both services, a job manager and the app) on free
ports with its own SQLite database and data folder, waits until every process is healthy, then

1. uploads one ``--single``-second track (default 3 minutes) and times upload -> finished mix
   (the design's bar: <= 30 s on 2 cores), stage by stage from the job's events;
2. uploads ``--jobs`` tracks of ``--seconds`` seconds at once from as many threads, checks that all
   are accepted (201) and all finish, and prints the throughput (finished jobs per minute, and
   seconds of music per second) and each job's latency (upload -> finished).

The tracks are the benchmark track of the melody service's ``make bench`` (a public-domain score
rendered with FluidSynth), cut to length. It prints figures; it is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import requests
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
LYRICS = """[Verse]
I walked along the river in the morning light
The water sang a melody so bright
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_system(data_dir: Path, job_workers: int) -> tuple[subprocess.Popen, str]:
    ports = {name: free_port() for name in ("APP_PORT", "MELODY_SERVICE_PORT", "VOCAL_SERVICE_PORT")}
    env = {**os.environ, "SHARED_DATA_DIR": str(data_dir), "DATABASE_URL": f"sqlite:///{data_dir / 'jobs.db'}",
           **{k: str(v) for k, v in ports.items()},
           "MELODY_SERVICE_URL": f"http://127.0.0.1:{ports['MELODY_SERVICE_PORT']}",
           "VOCAL_SERVICE_URL": f"http://127.0.0.1:{ports['VOCAL_SERVICE_PORT']}",
           "JOB_WORKERS": str(job_workers), "JOB_POLL_SECONDS": "0.2", "LOG_LEVEL": "WARNING"}
    log = open(data_dir / "system.log", "wb")  # noqa: SIM115 - lives as long as the system
    proc = subprocess.Popen([sys.executable, "-m", "app.launcher"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{ports['APP_PORT']}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the system stopped while starting; see {data_dir / 'system.log'}")
        try:
            ready = requests.get(f"{base}/api/health", timeout=2).status_code == 200 and all(
                requests.get(f"{env[name]}/health", timeout=2).json().get("warm")
                for name in ("MELODY_SERVICE_URL", "VOCAL_SERVICE_URL"))
            if ready:
                return proc, base
        except (requests.RequestException, ValueError):
            pass
        time.sleep(1.0)
    proc.terminate()
    raise SystemExit("the system did not become healthy within 300 s")


def stop_system(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def cut_track(source: Path, seconds: float, out: Path, offset: float = 0.0) -> Path:
    info = sf.info(str(source))
    start = int(offset * info.samplerate) % max(1, info.frames - int(seconds * info.samplerate))
    data, sr = sf.read(str(source), start=start, frames=int(seconds * info.samplerate), always_2d=True)
    sf.write(str(out), data, sr, subtype="PCM_16")
    return out


def upload(base: str, path: Path, seed: int) -> tuple[int, str, float]:
    t0 = time.monotonic()
    with open(path, "rb") as fh:
        resp = requests.post(f"{base}/api/jobs", files={"file": (path.name, fh, "audio/wav")},
                             data={"lyrics": LYRICS, "seed": str(seed), "style": "pop_bright"}, timeout=120)
    job_id = resp.json().get("id", "") if resp.status_code == 201 else resp.text[:200]
    return resp.status_code, job_id, t0


def wait_all(base: str, ids: list[str], timeout: float) -> dict[str, dict]:
    done: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(ids) and time.monotonic() < deadline:
        for job_id in ids:
            if job_id in done:
                continue
            job = requests.get(f"{base}/api/jobs/{job_id}", timeout=10).json()
            if job["state"] in ("succeeded", "failed", "cancelled"):
                done[job_id] = job
        time.sleep(0.5)
    return done


def _t(iso: str) -> float:
    return datetime.fromisoformat(iso.rstrip("Z")).timestamp()


def stage_seconds(job: dict) -> dict[str, float]:
    """Seconds per stage from the job's events (claim -> melody done -> finished)."""
    events = job.get("events", [])
    marks = {}
    for e in events:
        if e["message"].startswith("claimed") and "claimed" not in marks:
            marks["claimed"] = _t(e["at"])
        if e["message"] == "melody stage done":
            marks["melody"] = _t(e["at"])
        if e["state"] == "succeeded":
            marks["done"] = _t(e["at"])
    out = {"queued": marks.get("claimed", 0) - _t(job["created_at"])}
    if "melody" in marks and "claimed" in marks:
        out["melody (analysis + generation)"] = marks["melody"] - marks["claimed"]
    if "done" in marks and "melody" in marks:
        out["vocal (sing, mix, master, export, qc)"] = marks["done"] - marks["melody"]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20, help="uploads sent at once (default 20)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each of those tracks (default 60)")
    parser.add_argument("--single", type=float, default=180.0, help="length of the single timed track; 0 skips it")
    parser.add_argument("--job-workers", type=int, default=2, help="JOB_WORKERS of the job manager (default 2)")
    parser.add_argument("--track", type=Path, default=None, help="source audio (default: the benchmark track)")
    args = parser.parse_args(argv)

    if args.track is None:
        from tmik_bgm_conditional_melody_generation.evaluation.bench_analysis import bench_track

        args.track = bench_track()
    print(f"platform bench: {os.cpu_count()} CPU cores, source {args.track.name}", flush=True)
    with tempfile.TemporaryDirectory(prefix="tmik-bench-") as tmp:
        data_dir = Path(tmp) / "shared"
        data_dir.mkdir()
        t0 = time.monotonic()
        proc, base = start_system(data_dir, args.job_workers)
        print(f"system up in {time.monotonic() - t0:.1f} s at {base}", flush=True)
        try:
            if args.single > 0:
                track = cut_track(args.track, args.single, Path(tmp) / "single.wav")
                status, job_id, started = upload(base, track, seed=1)
                if status != 201:
                    print(f"single upload refused: {status} {job_id}")
                    return 1
                job = wait_all(base, [job_id], 600).get(job_id)
                total = time.monotonic() - started
                if job is None or job["state"] != "succeeded":
                    print(f"single job did not succeed: {job and job.get('error')}")
                else:
                    print(f"\n1 upload of {args.single:.0f} s -> finished mix: {total:.1f} s (target <= 30 s)")
                    for name, sec in stage_seconds(job).items():
                        print(f"  {name:40s} {sec:6.1f} s")

            tracks = [cut_track(args.track, args.seconds, Path(tmp) / f"load{i}.wav", offset=7.0 * i)
                      for i in range(args.jobs)]
            results: list[tuple[int, str, float]] = [(0, "", 0.0)] * args.jobs

            def send(i: int) -> None:
                results[i] = upload(base, tracks[i], seed=100 + i)

            threads = [threading.Thread(target=send, args=(i,)) for i in range(args.jobs)]
            t_load = time.monotonic()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            accept_s = time.monotonic() - t_load
            accepted = [r for r in results if r[0] == 201]
            print(f"\n{args.jobs} uploads of {args.seconds:.0f} s at once: {len(accepted)} accepted (201) in "
                  f"{accept_s:.1f} s" + ("" if len(accepted) == args.jobs else
                                         f"; refused: {[r[:2] for r in results if r[0] != 201]}"), flush=True)
            ids = [r[1] for r in accepted]
            finished = wait_all(base, ids, 3600)
            wall = time.monotonic() - t_load
            ok = [j for j in finished.values() if j["state"] == "succeeded"]
            latencies = [_t(j["finished_at"]) - _t(j["created_at"]) for j in ok]
            print(f"finished: {len(ok)}/{len(ids)} succeeded, "
                  f"{sum(1 for j in finished.values() if j['state'] != 'succeeded')} failed, "
                  f"{len(ids) - len(finished)} unfinished; wall {wall:.1f} s")
            if ok:
                print(f"throughput: {60 * len(ok) / wall:.2f} jobs/min, "
                      f"{len(ok) * args.seconds / wall:.2f} s of music per second")
                print(f"latency upload -> finished: mean {statistics.mean(latencies):.1f} s, "
                      f"worst {max(latencies):.1f} s")
            for j in finished.values():
                if j["state"] != "succeeded":
                    print(f"  {j['id']}: {j['state']} {j.get('error')}")
        finally:
            stop_system(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
