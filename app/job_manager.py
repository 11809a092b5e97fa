"""The job manager: a polling worker that takes jobs from the database and runs them through the services.

Run one or many (``python -m app.job_manager``; in docker ``--scale job-manager=N``). Each worker:

1. claims the oldest runnable job atomically (:func:`app.jobs.claim`) with a lease of
   ``JOB_LEASE_SECONDS``, renewed on every progress write (about twice a second while it runs);
2. runs the **melody** stage (melody service task ``generate``: analysis, melody.mid) and then the
   **vocal** stage (vocal-mix service task ``render``: the sung, mixed, mastered song and the
   exports), passing the chosen style's range to the melody service so the voice can sing it;
3. records each stage's outputs as the job's artifacts as soon as the stage is done, so a job
   that is taken over after a crash starts at the first stage without results (and first tries
   to follow the service task its predecessor left running);
4. honours cancel within well under 2 s (and cancels the service task too);
5. waits and retries with backoff while a service is unreachable or busy (up to
   ``SERVICE_WAIT_SECONDS``), but fails at once, with the service's code and message, when the
   service refuses the input.

A worker that is killed stops renewing its lease; when it expires another worker takes the job
(up to ``JOB_MAX_ATTEMPTS``, then the job fails with the reason). SIGTERM hands the running job
back to the queue before the worker exits.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from tmik_common.env import start_process

from . import config as app_config
from . import db, jobs
from .models import CANCELLED, FAILED, SUCCEEDED, Job
from .services import ServiceClient, ServiceUnavailable, TaskGone, TaskRefused, VocalService, melody_service

log = logging.getLogger("app.job_manager")

TASK_POLL_S = 0.4
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
# The share of the job's progress bar each stage fills.
STAGE_SPANS = {"melody": (0.0, 0.4), "vocal": (0.4, 1.0)}


class JobCancelled(Exception):
    pass


class JobFailed(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class Stopping(Exception):
    """The worker was asked to stop; the job goes back to the queue."""


@dataclass
class Worker:
    """One job manager: claims jobs and drives them through the two services."""

    cfg: app_config.Config
    sessions: sessionmaker[Session]
    melody: ServiceClient
    vocal: VocalService
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
    stop_event: threading.Event = field(default_factory=threading.Event)

    # ------------------------------------------------------------------ loop

    def run_forever(self) -> None:
        log.info("job manager %s polling every %.1f s (lease %.0f s, at most %d attempts per job)",
                 self.worker_id, self.cfg.poll_seconds, self.cfg.lease_seconds, self.cfg.max_attempts)
        while not self.stop_event.is_set():
            try:
                worked = self.run_once()
            except Exception:  # the database went away, ...: log, wait, keep going
                log.exception("job manager loop error; retrying in 5 s")
                self.stop_event.wait(5.0)
                continue
            if not worked:
                self.stop_event.wait(self.cfg.poll_seconds)
        log.info("job manager %s stopped", self.worker_id)

    def run_once(self) -> bool:
        """Claim one job and run it to its end; False when there was nothing to do."""
        job = jobs.claim(self.sessions, self.worker_id, self.cfg.lease_seconds, self.cfg.max_attempts)
        if job is None:
            return False
        self.process(job)
        return True

    # ------------------------------------------------------------------ one job

    def process(self, job: Job) -> None:
        log.info("job %s: started (attempt %d, %s)", job.id, job.attempts, job.input_name)
        started = time.monotonic()
        try:
            artifacts = dict(job.artifacts or {})
            stages = dict(job.stages or {})
            if not self._stage_done(artifacts, "melody"):
                outputs = self._run_stage(job, "melody", stages)
                artifacts.update(outputs)
                stages["melody"] = {"state": "done", "progress": 1.0, "detail": "melody written"}
                self._update(job, stage="melody: done", progress=STAGE_SPANS["melody"][1], stages=stages,
                             artifacts=artifacts, event="melody stage done", service_task=None)
            job.artifacts = artifacts
            outputs = self._run_stage(job, "vocal", stages)
            artifacts.update(outputs)
            stages["vocal"] = {"state": "done", "progress": 1.0, "detail": "song mixed and mastered"}
            checks, warnings = self._take_report(artifacts)
            jobs.finish(self.sessions, job.id, self.worker_id, SUCCEEDED, artifacts=artifacts, stages=stages,
                        checks=checks, warnings={"messages": warnings})
            log.info("job %s: succeeded in %.1f s", job.id, time.monotonic() - started)
        except JobCancelled:
            self._end(job, CANCELLED, "cancelled", "cancelled by the user")
            log.info("job %s: cancelled", job.id)
        except JobFailed as exc:
            self._end(job, FAILED, exc.code, exc.message)
            log.warning("job %s: failed: %s: %s", job.id, exc.code, exc.message)
        except Stopping:
            jobs.release(self.sessions, job.id, self.worker_id, "handed back: the job manager is stopping")
            log.info("job %s: handed back to the queue (stopping)", job.id)
        except jobs.LeaseLost:
            log.warning("job %s: lost its lease (another worker took it over, or it ended); dropping it", job.id)
        except Exception as exc:  # our own fault: the job fails with the reason, the worker goes on
            log.exception("job %s: unexpected error", job.id)
            self._end(job, FAILED, "internal_error", f"the job manager failed: {type(exc).__name__}: {exc}")

    def _end(self, job: Job, state: str, code: str, message: str) -> None:
        try:
            jobs.finish(self.sessions, job.id, self.worker_id, state, error_code=code, error_message=message)
        except jobs.LeaseLost:
            log.warning("job %s: could not record %s: lease lost", job.id, state)

    def _stage_done(self, artifacts: dict[str, str], stage: str) -> bool:
        if stage != "melody":
            return False
        return all(name in artifacts and (self.cfg.shared_data_dir / artifacts[name]).is_file()
                   for name in ("melody.mid", "analysis.json"))

    def _update(self, job: Job, event: str | None = None, **values: Any) -> None:
        status = jobs.update_job(self.sessions, job.id, self.worker_id, event=event,
                                 lease_seconds=self.cfg.lease_seconds, **values)
        if status.cancel_requested:
            raise JobCancelled()

    # ------------------------------------------------------------------ stages

    def _request(self, job: Job, stage: str) -> tuple[ServiceClient, str, dict[str, str], dict[str, Any]]:
        params = job.params or {}
        lyrics = {"lyrics": params["lyrics"]} if params.get("lyrics") else {}
        if stage == "melody":
            style = self._with_retry(job, stage, self.vocal, lambda: self._style(params.get("style")))
            melody_params = {"sensitivity": params.get("sensitivity", 0.5), "randomness": params.get("randomness", 0.5),
                             "seed": params.get("seed", 0), "vocal_range": list(style["vocal_range"]), **lyrics}
            return self.melody, "generate", {"audio": job.input_file}, melody_params
        melody = (job.artifacts or {}).get("melody.mid")
        vocal_params = {"style": params.get("style"), "seed": params.get("seed", 0), **lyrics}
        if params.get("target_lufs") is not None:
            vocal_params["target_lufs"] = params["target_lufs"]
        return self.vocal, "render", {"background": job.input_file, "melody": str(melody)}, vocal_params

    def _style(self, name: str | None) -> dict[str, Any]:
        styles = self.vocal.styles()
        for style in styles:
            if style["name"] == name:
                return style
        raise JobFailed("unknown_style", f"vocal style {name!r} does not exist; choose one of "
                        f"{', '.join(s['name'] for s in styles)}")

    def _run_stage(self, job: Job, stage: str, stages: dict[str, Any]) -> dict[str, str]:
        """Run one stage's service task to its end; its outputs keyed by file name."""
        lo, hi = STAGE_SPANS[stage]
        stages[stage] = {"state": "running", "progress": 0.0, "detail": "starting"}
        self._update(job, stage=f"{stage}: starting", progress=lo, stages=stages, event=f"{stage} stage started")
        client, task_type, inputs, params = self._request(job, stage)
        task_id = self._adopt(job, client)
        deadline = time.monotonic() + self.cfg.stage_timeout
        while True:
            if task_id is None:
                task_id = self._with_retry(job, stage, client,
                                           lambda: client.submit(task_type, job.id, inputs, params))
                job.service_task = {"service": client.name, "task_id": task_id}
                self._update(job, service_task=job.service_task)
                log.info("job %s: %s task %s submitted to %s", job.id, task_type, task_id, client.name)
            try:
                status = self._follow(job, stage, client, task_id, stages, lo, hi, deadline)
            except TaskGone:
                log.warning("job %s: %s forgot task %s; submitting it again", job.id, client.name, task_id)
                task_id = None
                continue
            if status.state == "done":
                return {PurePosixPath(path).name: path for path in status.outputs.values()}
            if status.state == "cancelled":  # cancelled on the service's side, not by our user
                raise JobFailed("service_cancelled", f"{client.name} cancelled the {stage} task (shutting down?)")
            err = status.error or {}
            raise JobFailed(err.get("code") or f"{stage}_failed",
                            err.get("message") or f"the {stage} stage failed without a reason")

    def _adopt(self, job: Job, client: ServiceClient) -> str | None:
        """The task a previous worker left running for this stage, if the service still has it."""
        task = job.service_task or {}
        if task.get("service") != client.name or not task.get("task_id"):
            return None
        try:
            status = client.status(task["task_id"])
        except ServiceUnavailable:
            return None
        if status.state in ("failed", "cancelled"):
            return None
        log.info("job %s: following %s task %s left by the previous worker", job.id, client.name, status.task_id)
        return status.task_id

    def _follow(self, job: Job, stage: str, client: ServiceClient, task_id: str, stages: dict[str, Any],
                lo: float, hi: float, deadline: float):
        last_stage = None
        while True:
            if self.stop_event.is_set():
                client.cancel(task_id)
                raise Stopping()
            try:
                status = client.status(task_id)
            except TaskGone:
                raise
            except ServiceUnavailable as exc:
                self._wait_for(job, stage, client, exc)
                continue
            stages[stage] = {"state": status.state if not status.finished else "finishing",
                             "progress": round(status.progress, 4), "detail": status.stage}
            label = f"{stage}: {status.stage or status.state}"
            try:
                self._update(job, stage=label[:64], progress=lo + (hi - lo) * min(max(status.progress, 0.0), 1.0),
                             stages=stages, event=label if status.stage != last_stage else None)
            except JobCancelled:
                client.cancel(task_id)
                raise
            last_stage = status.stage
            if status.finished:
                return status
            if time.monotonic() > deadline:
                client.cancel(task_id)
                raise JobFailed("stage_timeout", f"the {stage} stage ran longer than {self.cfg.stage_timeout:.0f} s "
                                "(STAGE_TIMEOUT_SECONDS); it was stopped")
            self.stop_event.wait(TASK_POLL_S)

    def _with_retry(self, job: Job, stage: str, client: ServiceClient, call):
        """``call()``, retried with backoff while the service is unavailable; refusals fail the job."""
        waited_since: float | None = None
        delay = BACKOFF_START_S
        while True:
            try:
                return call()
            except TaskRefused as exc:
                raise JobFailed(exc.code, f"{exc.service} refused the {stage} stage: {exc.message}") from None
            except ServiceUnavailable as exc:
                waited_since = waited_since or time.monotonic()
                if time.monotonic() - waited_since > self.cfg.service_wait_seconds:
                    raise JobFailed("service_unavailable", f"{exc}; gave up after waiting "
                                    f"{self.cfg.service_wait_seconds:.0f} s (SERVICE_WAIT_SECONDS)") from None
                self._wait_for(job, stage, client, exc, delay)
                delay = min(delay * 2, BACKOFF_MAX_S)

    def _wait_for(self, job: Job, stage: str, client: ServiceClient, exc: Exception,
                  delay: float = BACKOFF_START_S) -> None:
        """Wait ``delay`` seconds for a service, keeping the lease and listening for cancel and stop."""
        log.warning("job %s: %s; retrying in %.0f s", job.id, exc, delay)
        self._update(job, stage=f"{stage}: waiting for {client.name}"[:64],
                     event=f"waiting for {client.name}: {exc}")
        end = time.monotonic() + delay
        while time.monotonic() < end:
            if self.stop_event.wait(min(0.5, end - time.monotonic())):
                raise Stopping()
            self._update(job)

    def _take_report(self, artifacts: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
        """The take's checks (qc.json) for the dashboard, and its warnings."""
        rel = artifacts.get("qc.json")
        if not rel:
            return {}, []
        try:
            record = json.loads((self.cfg.shared_data_dir / rel).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s: %s", rel, exc)
            return {}, []
        keys = ("pitch_accuracy", "voiced_fraction", "word_error_rate", "intelligibility_seconds",
                "intelligibility_note", "integrated_lufs",
                "target_lufs", "true_peak_dbtp", "clipped_samples", "passed", "all_passed")
        return {k: record[k] for k in keys if k in record}, [str(w) for w in record.get("warnings", [])]


def build_worker(cfg: app_config.Config | None = None) -> Worker:
    cfg = cfg or app_config.load()
    engine = db.make_engine(cfg.database_url)
    db.migrate(engine)
    return Worker(cfg=cfg, sessions=db.session_factory(engine),
                  melody=melody_service(cfg.melody_service_url, cfg.service_timeout),
                  vocal=VocalService(cfg.vocal_service_url, cfg.service_timeout))


def main() -> int:
    cfg = start_process("job-manager", app_config.load)
    if cfg is None:
        return 2
    try:
        worker = build_worker(cfg)
    except db.DatabaseError as exc:  # unreachable, malformed URL, missing driver: the message says which
        log.error("%s", exc)
        return 2

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %d: finishing up (the running job goes back to the queue)", signum)
        worker.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # More workers in one process (JOB_WORKERS) let one job's melody stage run while another's
    # vocal stage does; they share the stop event and the database engine.
    threads = []
    for i in range(1, cfg.job_workers):
        peer = Worker(cfg=cfg, sessions=worker.sessions, melody=melody_service(cfg.melody_service_url,
                      cfg.service_timeout), vocal=VocalService(cfg.vocal_service_url, cfg.service_timeout), worker_id=f"{worker.worker_id}-{i}",
                      stop_event=worker.stop_event)
        thread = threading.Thread(target=peer.run_forever, name=f"worker-{i}")
        thread.start()
        threads.append(thread)
    worker.run_forever()
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
