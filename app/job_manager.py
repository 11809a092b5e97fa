"""The job manager: a polling worker that takes jobs from the database and runs them through the services.

Run one or many (``python -m app.job_manager``; in docker ``--scale job-manager=N``). Each worker:

1. claims the oldest runnable job atomically (:func:`app.jobs.claim`) with a lease of
   ``JOB_LEASE_SECONDS``, renewed on every progress write (about twice a second while it runs);
2. runs the **melody** stage (melody service task ``generate``: analysis, melody.json, melody.mid)
   and then the **vocal** stage (vocal-mix service task ``render`` of melody.json: the takes sung,
   the best one mixed and mastered, the exports), passing the chosen style's range to the melody
   service so the voice can sing it, and the lyrics to the melody service only (melody.json carries
   them on); a finished job whose musician chose another take (:mod:`app.takes`) runs only its
   vocal stage again, as the service's ``select_take`` task;
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
from tmik_common.secrets import service_token

from . import config as app_config
from . import db, jobs, takes
from .models import CANCELLED, FAILED, SUCCEEDED, Job
from .services import ServiceClient, ServiceUnavailable, TaskGone, TaskRefused, VocalService, melody_service

INTERRUPTED = "task_interrupted"  # the services' code for a task whose replica stopped mid-task

log = logging.getLogger("app.job_manager")

TASK_POLL_S = 0.4
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
DB_BACKOFF_MAX_S = 5.0
# A service task that ended "task_interrupted" (its service stopped or was restarted mid-task),
# or that the service no longer knows, is submitted again this many times before the job fails.
STAGE_RESUBMITS = 2
STAGE_SPANS = jobs.STAGE_SPANS


class JobCancelled(Exception):
    pass


class JobFailed(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class Stopping(Exception):
    """The worker was asked to stop; the job goes back to the queue."""


class DatabaseGone(Exception):
    """The database stayed unreachable longer than DB_RETRY_SECONDS; the job is left to its lease."""


@dataclass
class _Unreachable:
    """How long a service has been unreachable, and the next wait (1 s doubling to 30 s)."""

    since: float | None = None
    delay: float = BACKOFF_START_S

    def seconds(self) -> float:
        return 0.0 if self.since is None else time.monotonic() - self.since

    def next_delay(self) -> float:
        if self.since is None:
            self.since = time.monotonic()
        delay, self.delay = self.delay, min(self.delay * 2, BACKOFF_MAX_S)
        return delay


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
            except Exception as exc:  # the database went away, ...: log, wait, keep going
                if db.is_transient(exc):
                    log.warning("job manager: the database is unavailable (%s); retrying in 5 s", db.describe(exc))
                else:
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
                # A take is remixed only over the melody it was sung from: a job that has to write its
                # melody again sings its takes again too.
                job.params = {k: v for k, v in (job.params or {}).items() if k != "take"}
                outputs = self._run_stage(job, "melody", stages)
                artifacts.update(outputs)
                stages["melody"] = {"state": "done", "progress": 1.0, "detail": "melody written"}
                self._update(job, stage="melody: done", progress=STAGE_SPANS["melody"][1], stages=stages,
                             artifacts=artifacts, event="melody stage done", service_task=None)
            job.artifacts = artifacts
            remix = takes.select_request(job) is not None
            outputs = self._run_stage(job, "vocal", stages)
            artifacts.update(outputs)
            detail = f"take {job.params['take']} remixed" if remix else "song mixed and mastered"
            stages["vocal"] = {"state": "done", "progress": 1.0, "detail": detail}
            checks, warnings = self._take_report(artifacts)
            self._db(lambda: jobs.finish(self.sessions, job.id, self.worker_id, SUCCEEDED, artifacts=artifacts,
                                         stages=stages, checks=checks, warnings={"messages": warnings}))
            log.info("job %s: succeeded in %.1f s", job.id, time.monotonic() - started)
        except JobCancelled:
            self._end(job, CANCELLED, "cancelled", "cancelled by the user")
            log.info("job %s: cancelled", job.id)
        except JobFailed as exc:
            self._end(job, FAILED, exc.code, exc.message)
            log.warning("job %s: failed: %s: %s", job.id, exc.code, exc.message)
        except Stopping:
            try:
                jobs.release(self.sessions, job.id, self.worker_id, "handed back: the job manager is stopping")
                log.info("job %s: handed back to the queue (stopping)", job.id)
            except Exception as exc:  # noqa: BLE001 - the lease runs out and another worker takes the job
                log.warning("job %s: could not hand it back (%s); its lease will run out", job.id,
                            db.describe(exc) if db.is_transient(exc) else exc)
        except jobs.LeaseLost:
            log.warning("job %s: lost its lease (another worker took it over, or it ended); dropping it", job.id)
        except DatabaseGone:
            log.error("job %s: the database stayed unreachable for %.0f s (DB_RETRY_SECONDS); leaving the job to "
                      "be taken over when the database is back", job.id, self.cfg.db_retry_seconds)
        except Exception:  # our own fault: the job fails, the worker goes on; details only in the log
            log.exception("job %s: unexpected error", job.id)
            self._end(job, FAILED, "internal_error", "an internal error in the job manager stopped this job; it "
                      "has been logged. Re-run the job; if it fails again, report it with the job id.")

    def _end(self, job: Job, state: str, code: str, message: str) -> None:
        try:
            self._db(lambda: jobs.finish(self.sessions, job.id, self.worker_id, state, error_code=code,
                                         error_message=message))
        except jobs.LeaseLost:
            log.warning("job %s: could not record %s: lease lost", job.id, state)
        except DatabaseGone:
            log.error("job %s: could not record %s: the database is unreachable", job.id, state)

    def _db(self, call):
        """``call()``, retried while the database is briefly unavailable (SQLite busy, PostgreSQL
        restarting): such a fault costs the job nothing. DatabaseGone after DB_RETRY_SECONDS."""
        started = time.monotonic()
        delay = 0.25
        while True:
            try:
                return call()
            except Exception as exc:
                if not db.is_transient(exc):
                    raise
                if time.monotonic() - started > self.cfg.db_retry_seconds:
                    raise DatabaseGone() from exc
                log.warning("the database is unavailable (%s); retrying in %.1f s", db.describe(exc), delay)
                if self.stop_event.wait(delay):
                    raise Stopping() from None
                delay = min(delay * 2, DB_BACKOFF_MAX_S)

    def _stage_done(self, artifacts: dict[str, str], stage: str) -> bool:
        if stage != "melody":
            return False
        return all(name in artifacts and (self.cfg.shared_data_dir / artifacts[name]).is_file()
                   for name in ("melody.json", "melody.mid", "analysis.json"))

    def _update(self, job: Job, event: str | None = None, **values: Any) -> None:
        status = self._db(lambda: jobs.update_job(self.sessions, job.id, self.worker_id, event=event,
                                                  lease_seconds=self.cfg.lease_seconds, **values))
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
            # The musician's tempo / time signature (absent: automatic): the analysis runs at that level.
            melody_params.update({k: params[k] for k in ("tempo", "time_signature") if params.get(k) is not None})
            return self.melody, "generate", {"audio": job.input_file}, melody_params
        # The musician chose another take of a finished job: remix that take, nothing is sung again.
        # The same task is safe to run twice (a worker that takes the job over submits it again).
        select = takes.select_request(job)
        if select is not None:
            return self.vocal, "select_take", *select
        # The voice sings from melody.json: its notes carry the words, syllables, stress and phrases the
        # melody service set, so the lyrics text is not sent again (it was parsed once, there).
        melody = (job.artifacts or {}).get("melody.json")
        vocal_params = {"style": params.get("style"), "seed": params.get("seed", 0)}
        if params.get("target_lufs") is not None:
            vocal_params["target_lufs"] = params["target_lufs"]
        if params.get("takes") is not None:  # left out: the vocal service's default (TAKES)
            vocal_params["takes"] = params["takes"]
        return self.vocal, "render", {"background": job.input_file, "melody": str(melody)}, vocal_params

    def _style(self, name: str | None) -> dict[str, Any]:
        styles = self.vocal.styles()
        for style in styles:
            if style["name"] == name:
                return style
        raise JobFailed("unknown_style", f"vocal style {name!r} does not exist; choose one of "
                        f"{', '.join(s['name'] for s in styles)}")

    def _run_stage(self, job: Job, stage: str, stages: dict[str, Any]) -> dict[str, str]:
        """Run one stage's service task to its end; its outputs keyed by file name.

        A task the service lost (it was restarted mid-task: ``task_interrupted``, or it no longer
        knows the task) is submitted again, at most STAGE_RESUBMITS times; everything else the
        service reports ends the stage. The stage never outlives STAGE_TIMEOUT_SECONDS, and a
        service that stays unreachable fails it after SERVICE_WAIT_SECONDS.
        """
        lo, hi = STAGE_SPANS[stage]
        stages[stage] = {"state": "running", "progress": 0.0, "detail": "starting"}
        self._update(job, stage=f"{stage}: starting", progress=lo, stages=stages, event=f"{stage} stage started")
        client, task_type, inputs, params = self._request(job, stage)
        deadline = time.monotonic() + self.cfg.stage_timeout
        task_id = self._adopt(job, client)
        resubmits = 0
        while True:
            if task_id is None:
                task_id = self._with_retry(job, stage, client,
                                           lambda: client.submit(task_type, job.id, inputs, params), deadline)
                job.service_task = {"service": client.name, "task_id": task_id}
                self._update(job, service_task=job.service_task)
                log.info("job %s: %s task %s submitted to %s", job.id, task_type, task_id, client.name)
            try:
                status = self._follow(job, stage, client, task_id, stages, lo, hi, deadline)
            except TaskGone:
                status = None
            lost = status is None or (status.state == "failed" and (status.error or {}).get("code") == INTERRUPTED)
            if lost:
                resubmits += 1
                if resubmits > STAGE_RESUBMITS:
                    raise JobFailed("service_interrupted", f"the {client.name} stopped while working on the {stage} "
                                    f"stage {resubmits} times (it crashed or was restarted); giving up. Its log "
                                    "says why; re-run the job once it is healthy again.")
                why = "no longer knows" if status is None else "was interrupted while running"
                log.warning("job %s: %s %s task %s; submitting it again (%d of %d)", job.id, client.name, why,
                            task_id, resubmits, STAGE_RESUBMITS)
                self._update(job, event=f"{client.name} {why} the {stage} task; submitted again")
                task_id = None
                continue
            assert status is not None
            if status.state == "done":
                return {PurePosixPath(path).name: path for path in status.outputs.values()}
            if status.state == "cancelled":  # cancelled on the service's side, not by our user
                raise JobFailed("service_cancelled", f"the {client.name} cancelled the {stage} task")
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

    def _check_deadline(self, stage: str, client: ServiceClient, task_id: str | None, deadline: float) -> None:
        if time.monotonic() > deadline:
            if task_id is not None:
                client.cancel(task_id)
            raise JobFailed("stage_timeout", f"the {stage} stage ran longer than {self.cfg.stage_timeout:.0f} s "
                            "(STAGE_TIMEOUT_SECONDS); it was stopped")

    def _follow(self, job: Job, stage: str, client: ServiceClient, task_id: str, stages: dict[str, Any],
                lo: float, hi: float, deadline: float):
        last_stage = None
        unreachable = _Unreachable()
        while True:
            if self.stop_event.is_set():
                client.cancel(task_id)
                raise Stopping()
            self._check_deadline(stage, client, task_id, deadline)
            try:
                status = client.status(task_id)
            except TaskGone:
                raise
            except ServiceUnavailable as exc:
                self._wait_for(job, stage, client, exc, unreachable, deadline)
                continue
            if unreachable.since is not None:
                self._update(job, event=f"{client.name} is back after {unreachable.seconds():.0f} s")
                unreachable = _Unreachable()
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
            self.stop_event.wait(TASK_POLL_S)

    def _with_retry(self, job: Job, stage: str, client: ServiceClient, call, deadline: float | None = None):
        """``call()``, retried with backoff while the service is unavailable; refusals fail the job."""
        unreachable = _Unreachable()
        while True:
            if deadline is not None:
                self._check_deadline(stage, client, None, deadline)
            try:
                return call()
            except TaskRefused as exc:
                raise JobFailed(exc.code, f"the {exc.service} refused the {stage} stage: {exc.message}") from None
            except ServiceUnavailable as exc:
                self._wait_for(job, stage, client, exc, unreachable, deadline)

    def _wait_for(self, job: Job, stage: str, client: ServiceClient, exc: ServiceUnavailable,
                  unreachable: _Unreachable, deadline: float | None) -> None:
        """Wait for a service that cannot be reached, backing off (1 s doubling to 30 s), keeping the
        lease and listening for cancel and stop; JobFailed once it has been gone SERVICE_WAIT_SECONDS."""
        first = unreachable.since is None
        delay = unreachable.next_delay()
        if unreachable.seconds() > self.cfg.service_wait_seconds:
            raise JobFailed("service_unavailable", f"{exc}; gave up after waiting {unreachable.seconds():.0f} s "
                            f"(SERVICE_WAIT_SECONDS is {self.cfg.service_wait_seconds:.0f}) during the {stage} stage")
        if first:  # one event per outage, not one per retry
            log.warning("job %s: %s; waiting for it", job.id, exc)
            self._update(job, stage=f"{stage}: waiting for {client.name}"[:64],
                         event=f"waiting for {client.name}: {exc.reason}")
        end = time.monotonic() + delay
        if deadline is not None:
            end = min(end, deadline + 0.05)
        while time.monotonic() < end:
            if self.stop_event.wait(min(0.5, max(0.0, end - time.monotonic()))):
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
        checks = {k: record[k] for k in keys if k in record}
        checks.update(self._takes_summary(artifacts))
        return checks, [str(w) for w in record.get("warnings", [])]

    def _takes_summary(self, artifacts: dict[str, str]) -> dict[str, Any]:
        """Which take is the result, who chose it and of how many (from takes.json), for the dashboard."""
        rel = artifacts.get(takes.TAKES_FILE)
        if not rel:
            return {}
        try:
            record = json.loads((self.cfg.shared_data_dir / rel).read_text(encoding="utf-8"))
            return {"take": int(record["chosen"]), "takes": len(record["takes"]),
                    "chosen_by": str(record.get("chosen_by") or "checks")}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("cannot read %s: %s", rel, exc)
            return {}


def service_clients(cfg: app_config.Config) -> tuple[ServiceClient, VocalService]:
    """New clients of the two services (one pair per worker thread: a requests session is not
    thread-safe), sending the service token."""
    token = service_token(cfg.shared_data_dir)
    return (melody_service(cfg.melody_service_url, cfg.service_timeout, token=token),
            VocalService(cfg.vocal_service_url, cfg.service_timeout, token=token))


def build_worker(cfg: app_config.Config | None = None) -> Worker:
    cfg = cfg or app_config.load()
    engine = db.make_engine(cfg.database_url)
    db.migrate(engine)
    melody, vocal = service_clients(cfg)
    return Worker(cfg=cfg, sessions=db.session_factory(engine), melody=melody, vocal=vocal)


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
        melody, vocal = service_clients(cfg)
        peer = Worker(cfg=cfg, sessions=worker.sessions, melody=melody, vocal=vocal,
                      worker_id=f"{worker.worker_id}-{i}", stop_event=worker.stop_event)
        thread = threading.Thread(target=peer.run_forever, name=f"worker-{i}")
        thread.start()
        threads.append(thread)
    worker.run_forever()
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
