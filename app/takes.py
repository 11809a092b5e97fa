"""A job's takes: reading its takes.json and making another take the result (one path for the API and the UI).

The vocal service sings every job several times (the job's ``takes``, each with its own seeds), keeps every
take (``take<n>_vocal.wav``, ``take<n>_mix.mp3``) and makes the one its checks rate best the result; takes.json
says which, and why. :func:`choose_take` lets the musician overrule that: the job goes back to the queue with
``params["take"] = n`` and the job manager runs only its vocal stage again, as the service's ``select_take``
task (take n's dry vocal remixed; nothing is sung again), so the job ends with take n's mix, exports and
checks. Choosing again, or a worker taking the job over mid-way, just runs the same remix again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from sqlalchemy.orm import Session, sessionmaker

from . import jobs, submit
from .config import Config
from .models import CANCELLED, FAILED, SUCCEEDED, Job

log = logging.getLogger(__name__)

TAKES_FILE = "takes.json"
CHOSEN_BY_USER = "user"


class TakeNotFound(LookupError):
    """The job has no takes (``no_takes``) or none of that number (``take_not_found``)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def read_takes(cfg: Config, job: Job) -> dict[str, Any] | None:
    """The job's takes.json (only its well-formed takes), or None when it has none or it cannot be read."""
    path = submit.resolve_artifact(cfg, job, TAKES_FILE)
    if path is None:
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("job %s: cannot read %s: %s", job.id, TAKES_FILE, exc)
        return None
    if not isinstance(record, dict) or not isinstance(record.get("takes"), list):
        log.warning("job %s: %s has no list of takes", job.id, TAKES_FILE)
        return None
    takes = [t for t in record["takes"] if isinstance(t, dict) and isinstance(t.get("take"), int)
             and not isinstance(t.get("take"), bool)]
    return {**record, "takes": takes}


def take_numbers(record: Mapping[str, Any] | None) -> list[int]:
    return [int(t["take"]) for t in (record or {}).get("takes", [])]


def take_files(cfg: Config, job: Job, take: Mapping[str, Any]) -> dict[str, str]:
    """A take's files (``{"vocal": "take2_vocal.wav", "mix_mp3": ...}``) that the job can serve."""
    files = take.get("files") if isinstance(take.get("files"), dict) else {}
    return {key: name for key, name in files.items()
            if isinstance(name, str) and submit.resolve_artifact(cfg, job, name) is not None}


def file_url(job_id: str, name: str) -> str:
    return f"/api/jobs/{job_id}/files/{quote(name, safe='')}"


def takes_document(cfg: Config, job: Job) -> dict[str, Any]:
    """What ``GET /api/jobs/<id>/takes`` answers: takes.json with each take's file URLs (``urls``), the job's
    state and the take the musician chose last (``requested``; null when the checks chose). TakeNotFound
    (``no_takes``) when the job has no takes."""
    record = read_takes(cfg, job)
    if record is None:
        raise TakeNotFound("no_takes", f"job {job.id} has no takes (yet): they are written when its vocal stage "
                           "has finished")
    takes = []
    for take in record["takes"]:
        urls = {key: file_url(job.id, name) for key, name in take_files(cfg, job, take).items()}
        takes.append({**take, "urls": urls})
    requested = (job.params or {}).get("take")
    return {"job_id": job.id, "state": job.state, "chosen": record.get("chosen"),
            "chosen_by": record.get("chosen_by"), "reason": record.get("reason"),
            "requested": requested if isinstance(requested, int) else None, "takes": takes}


def can_choose(job: Job) -> bool:
    """A take can be chosen on a job that succeeded, or whose last choice failed or was cancelled (its takes are
    all still there, so the choice can be made again)."""
    return job.state == SUCCEEDED or (job.state in (FAILED, CANCELLED) and "take" in (job.params or {}))


def choose_take(cfg: Config, sessions: sessionmaker[Session], job_id: str, take: int, *,
                owner: str | None = None) -> Job:
    """Make take ``take`` the job's result: the job is queued again to remix that take (its vocal stage
    only). JobNotFound (also for another owner's job), JobConflict when the job is queued or running (or
    failed before it had takes), TakeNotFound when it has no such take."""
    job, _ = jobs.get_job(sessions, job_id, owner=owner)
    if not can_choose(job):
        raise jobs.JobConflict(f"job {job.id} is {job.state}; a take can be chosen once the job has succeeded")
    record = read_takes(cfg, job)
    if record is None:
        raise TakeNotFound("no_takes", f"job {job.id} has no takes to choose from")
    numbers = take_numbers(record)
    if take not in numbers:
        raise TakeNotFound("take_not_found", f"job {job.id} has no take {take}; its takes are "
                           f"{', '.join(map(str, numbers)) or 'none'}")
    allowed = {SUCCEEDED, FAILED, CANCELLED} if "take" in (job.params or {}) else {SUCCEEDED}
    queued = jobs.requeue_stage(sessions, job.id, from_states=allowed, stage="vocal",
                                progress=jobs.STAGE_SPANS["vocal"][0], params={"take": take},
                                message=f"take {take} chosen by the user", owner=owner)
    log.info("job %s: take %d chosen by the user; queued to remix it", job.id, take)
    return queued


def select_request(job: Job) -> tuple[dict[str, str], dict[str, Any]] | None:
    """The vocal service's ``select_take`` task (inputs, params) for a job whose musician chose a take, or
    None when the vocal stage is to sing (no take chosen, or no takes.json to choose from)."""
    params = job.params or {}
    artifacts = job.artifacts or {}
    take = params.get("take")
    if not isinstance(take, int) or isinstance(take, bool) or TAKES_FILE not in artifacts \
            or "melody.json" not in artifacts:
        return None
    select_params: dict[str, Any] = {"take": take, "style": params.get("style")}
    if params.get("target_lufs") is not None:
        select_params["target_lufs"] = params["target_lufs"]
    inputs = {"background": job.input_file, "melody": str(artifacts["melody.json"]),
              "takes": str(artifacts[TAKES_FILE])}
    return inputs, select_params
