"""Versions of a song: edits that keep what the musician liked, and the family of jobs one song became.

Every job made from another (a re-run: :func:`app.submit.rerun_job`; an edit: :func:`make_edit`) is a new
version of the same song: it records its ``parent_id``, its family's ``root_id`` and the next ``version``
number (:func:`app.jobs.create_job`). An edit differs from a re-run in what it keeps: ``restyle`` keeps the
parent's melody unchanged (melody.json, melody.mid and analysis.json are copied into the new job's own
melody folder and recorded as its artifacts), so the job manager finds its melody stage done and runs only
the vocal stage, with the new style or loudness and the parent's seed and takes.

The new job owns copies of everything it reads (its input and its melody), so deleting the parent never
breaks it. :func:`make_edit` is the one path for ``POST /api/jobs/<id>/edits``, the dashboard's Versions
section alike (``python -m app.cli restyle`` does the same for a song folder).
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from . import jobs, submit
from .config import Config
from .models import SUCCEEDED, Job

log = logging.getLogger(__name__)

RESTYLE = "restyle"
EDIT_KINDS = (RESTYLE,)
# What each kind of edit may change (besides "kind").
EDIT_FIELDS = {RESTYLE: ("style", "target_lufs")}
# The melody stage's outputs an edit keeps: with all three recorded the job manager skips that stage.
MELODY_FILES = ("melody.json", "melody.mid", "analysis.json")


def _check_edit(body: Any) -> tuple[str, dict[str, Any]]:
    """(kind, the changed fields) of an edit request; SubmitError when it cannot be one."""
    if not isinstance(body, Mapping):
        raise submit.SubmitError("invalid_body", "the body must be a JSON object: {\"kind\": \"restyle\", ...}",
                                 None, 400)
    kind = body.get("kind")
    if kind not in EDIT_KINDS:
        raise submit.SubmitError("invalid_param", f"kind must be one of {', '.join(EDIT_KINDS)} (restyle: sing the "
                                 f"same melody in another style or loudness), got {kind!r}", "kind")
    fields = EDIT_FIELDS[kind]
    unknown = sorted(set(body) - {"kind", *fields})
    if unknown:
        raise submit.SubmitError("unknown_param", f"a {kind} edit takes {', '.join(fields)}; not "
                                 f"{', '.join(unknown)}", unknown[0])
    changes = {name: body[name] for name in fields if body.get(name) is not None}
    # The JSON types of the documented parameters (a style is text, a loudness a number).
    submit.params_from_json(changes)
    return kind, changes


def edit_summary(edit: Mapping[str, Any] | None) -> str:
    """An edit record (``params["edit"]``) in words: "restyle (style ballad, target_lufs -10)"."""
    if not edit:
        return ""
    changes = edit.get("changes") or {}
    return f"{edit.get('kind')} ({submit.describe_changes(changes)})"


def make_edit(cfg: Config, sessions: sessionmaker[Session], job_id: str, body: Any, *, owner: str | None = None,
              styles: list[str] | None = None) -> Job:
    """Make a new version of job ``job_id``'s song by editing it (``body``: {"kind": "restyle", "style"?,
    "target_lufs"?}), queued to run only what the edit changes.

    JobNotFound (also another owner's job), JobConflict when the job has not succeeded, SubmitError when the
    edit is refused (invalid_param for an unknown kind, unknown_style, a loudness out of -30..-6; 409
    input_missing / melody_missing when the job's files are gone)."""
    parent, _ = jobs.get_job(sessions, job_id, owner=owner)
    kind, changes = _check_edit(body)
    if parent.state != SUCCEEDED:
        raise jobs.JobConflict(f"job {parent.id} is {parent.state}; a version can be made from a job that "
                               "has succeeded")
    old = dict(parent.params or {})
    raw: dict[str, Any] = {k: v for k, v in old.items() if k in submit.PARAM_NAMES}
    raw.update(changes)
    params = submit.parse_params(raw, styles)  # the parent's seed, takes, lyrics ... with the new style
    melody = {name: submit.resolve_artifact(cfg, parent, name) for name in MELODY_FILES}
    missing = sorted(name for name, path in melody.items() if path is None)
    if missing:
        raise submit.SubmitError("melody_missing", f"job {parent.id} no longer has its {', '.join(missing)}; "
                                 "re-run it instead", None, 409)
    new_id = str(uuid.uuid4())
    melody_dir = cfg.shared_data_dir / "melody_results" / new_id
    try:
        working = submit.copy_input(cfg, parent, new_id)
        # Copies, not links: the new version's files are its own, whatever later happens to the parent's.
        melody_dir.mkdir(parents=True, exist_ok=False)
        artifacts: dict[str, Any] = {}
        for name, path in melody.items():
            assert path is not None
            shutil.copyfile(path, melody_dir / name)
            artifacts[name] = (melody_dir / name).relative_to(cfg.shared_data_dir).as_posix()
        if "input_seconds" in old:
            params["input_seconds"] = old["input_seconds"]
        diff = submit.changed_params(old, params)
        params["edit"] = {"kind": kind, "from": parent.id, "changes": diff}
        made_as = edit_summary(params["edit"])
        stages = {"melody": {"state": "done", "progress": 1.0, "detail": f"melody kept from job {parent.id}"}}
        new = jobs.create_job(sessions, job_id=new_id, input_file=working.relative_to(cfg.shared_data_dir).as_posix(),
                              input_name=parent.input_name, params=params, owner=parent.owner, parent_id=parent.id,
                              artifacts=artifacts, stages=stages, progress=jobs.STAGE_SPANS["vocal"][0],
                              made_as=made_as)
    except BaseException:
        shutil.rmtree(melody_dir, ignore_errors=True)
        shutil.rmtree(cfg.shared_data_dir / "input" / new_id, ignore_errors=True)
        raise
    log.info("job %s queued as version %d of %s's song: %s", new.id, new.version, parent.id, made_as)
    return new


def version_summary(job: Job) -> dict[str, Any]:
    """One version in a family listing."""
    data = job.to_dict()
    edit = (job.params or {}).get("edit")
    return {"id": job.id, "version": data["version"], "parent_id": job.parent_id, "state": job.state,
            "params": {k: v for k, v in (job.params or {}).items() if k != "edit"},
            "created_at": data["created_at"], "finished_at": data["finished_at"],
            "edit": edit if isinstance(edit, dict) else None}


def family(sessions: sessionmaker[Session], job_id: str, *, owner: str | None = None) -> tuple[str, list[Job]]:
    """(root id, every version of job ``job_id``'s song that ``owner`` may see, by version number)."""
    job, _ = jobs.get_job(sessions, job_id, owner=owner)
    root_id = job.root_id or job.id
    cond = [Job.root_id == root_id]
    if owner is not None:
        cond.append(Job.owner == owner)
    with sessions() as s:
        rows = list(s.scalars(select(Job).where(*cond).order_by(Job.version, Job.created_at, Job.id)).all())
        for row in rows:
            s.expunge(row)
    return root_id, rows


def versions_document(sessions: sessionmaker[Session], job_id: str, *, owner: str | None = None) -> dict[str, Any]:
    """What ``GET /api/jobs/<id>/versions`` answers."""
    root_id, rows = family(sessions, job_id, owner=owner)
    return {"root_id": root_id, "versions": [version_summary(j) for j in rows]}
