"""Property-based fuzzing of the REST API against its own OpenAPI document (schemathesis).

Every operation of /api/openapi.json gets generated requests, valid and invalid ones; no request
may get a 5xx, and every response must match the document (status code, content type, schema,
headers). The database is seeded with jobs in each state, with artifacts (one pointing outside
the job's folders), and the generated job ids and file names are often swapped for those, so the
fuzzer reaches real jobs, not only 404s. Uploads are sometimes a real WAV, sometimes a cut one.
"""

from __future__ import annotations

import atexit
import dataclasses
import io
import shutil
import tempfile
import uuid
import zlib
from pathlib import Path

import numpy as np
import schemathesis
import soundfile as sf
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from schemathesis.transport.serialization import Binary
from sqlalchemy import delete, update

from app import config, jobs
from app.api import create_api
from app.context import create_context
from app.models import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, Job

STYLES = [{"name": "pop_bright", "description": "bright pop"}, {"name": "soft_warm", "description": "warm"}]
_TMP = Path(tempfile.mkdtemp(prefix="tmik-api-fuzz-"))  # the apps are built when the module is collected
atexit.register(shutil.rmtree, _TMP, True)


def _wav(seconds: float = 6.0, sr: int = 8000) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.02 * np.random.default_rng(1).standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


WAV = _wav()


SEEDED_STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)


def _make_app(name: str = "open", api_keys: tuple[str, ...] = ()):
    cfg = dataclasses.replace(
        config.load(), shared_data_dir=_TMP / name / "shared", database_url=f"sqlite:///{_TMP / name / 'jobs.db'}",
        melody_service_url="http://127.0.0.1:9", vocal_service_url="http://127.0.0.1:9", api_keys=api_keys,
        max_upload_bytes=2 * 1024 * 1024)
    ctx = create_context(cfg)
    ctx.vocal.style_names = lambda: [s["name"] for s in STYLES]
    ctx.vocal.styles = lambda: STYLES
    return ctx, create_api(ctx), {str(uuid.uuid4()): state for state in SEEDED_STATES}


CTX, APP, SEEDED = _make_app()
JOB_IDS = sorted(SEEDED)


def reseed(job_id: str) -> None:
    """Put a seeded job back as it was (a generated DELETE, cancel or rerun may have changed it)."""
    data = CTX.cfg.shared_data_dir
    for sub, name in (("input", "background.wav"), ("vocal_results", "mix.wav")):
        (data / sub / job_id).mkdir(parents=True, exist_ok=True)
        (data / sub / job_id / name).write_bytes(WAV)
    artifacts = {"mix": f"vocal_results/{job_id}/mix.wav", "outside": "../jobs.db", "gone": "vocal_results/x.wav"}
    with CTX.sessions.begin() as s:
        s.execute(delete(Job).where(Job.id == job_id))
    jobs.create_job(CTX.sessions, job_id=job_id, input_file=f"input/{job_id}/background.wav", input_name="seed.wav",
                    params={"sensitivity": 0.5, "randomness": 0.5, "style": "pop_bright", "seed": 1,
                            "input_seconds": 6.0})
    with CTX.sessions.begin() as s:
        s.execute(update(Job).where(Job.id == job_id).values(state=SEEDED[job_id], artifacts=artifacts))


FILE_NAMES = ["input", "mix", "outside", "gone", "..", "../input", "mix.wav"]
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", APP)
# The same API with API keys on: the document declares the security, schemathesis checks that requests
# without a key (or with a wrong one) get 401 and that every answer still matches the document.
KEY = "fuzz-key"
_, APP_KEYS, _ = _make_app("keys", (KEY, "other-key"))
schema_keys = schemathesis.openapi.from_wsgi("/api/openapi.json", APP_KEYS)


def _positive(case, location: str) -> bool:
    """The case is a valid request, ``location`` (path, body) included."""
    if case.meta is None or case.meta.generation.mode.value != "positive":
        return False
    info = case.meta.components.get(location)
    return info is not None and info.mode.value == "positive"


def _pick(case, salt: str, options: list):
    """One of ``options``, chosen by the case's generated content (so a replayed case picks the same)."""
    body = case.body if isinstance(case.body, dict) else {}
    seen = (salt, case.method, case.path, sorted((case.path_parameters or {}).items()),
            sorted((k, v if isinstance(v, str | int | float) else len(getattr(v, "data", b"") or b""))
                   for k, v in body.items()))
    return options[zlib.crc32(repr(seen).encode()) % len(options)]


def realistic(case) -> None:
    """Swap in real job ids, real file names and real audio, for the valid (positive) cases only, so
    the fuzzer reaches real jobs and accepted uploads, not only 404s and refusals."""
    if case.path_parameters and "job_id" in case.path_parameters and _positive(case, "path"):
        params = dict(case.path_parameters)
        params["job_id"] = _pick(case, "job", [*JOB_IDS, params["job_id"]])
        if "name" in params:
            params["name"] = _pick(case, "name", [*FILE_NAMES, params["name"]])
        case.path_parameters = params
    if (case.operation.path == "/api/jobs" and case.method.upper() == "POST" and isinstance(case.body, dict)
            and _positive(case, "body")):
        body = dict(case.body)
        data = _pick(case, "file", [WAV, WAV, WAV[:3000], b"", None])
        if data is not None:
            body["file"] = Binary(data)  # what schemathesis generates for format: binary
        if _pick(case, "plain", [True, False]):  # a known style and no lyrics: the upload can be accepted
            body = {k: v for k, v in body.items() if k not in ("lyrics", "lyrics_file")}
            body["style"] = "pop_bright"
        case.body = body
        # Still schema-valid, but schemathesis cannot re-check a body holding bytes and would relabel the case
        # "negative"; keep its labels as generated (schemathesis's own hook for values set after generation).
        case._record_starting_state()


# What a schema-valid request may still be refused for, where the document cannot say it: the upload's
# bytes are not audio of the accepted kind, the style is not one the service has now, the lyrics break
# the lyrics rules (language, length in syllables), a lyrics file is not text or comes with 'lyrics'.
CONTENT_REFUSALS = {
    "createJob": {"unsupported_format", "unknown_style", "empty_file", "not_audio", "corrupt_audio", "too_short",
                  "too_long", "silent_audio", "unsupported_sample_rate", "non_finite_samples", "empty_lyrics",
                  "lyrics_do_not_fit", "lyrics_not_text", "lyrics_too_long", "unsupported_language",
                  "lyrics_conflict"},
    "rerunJob": {"unknown_style", "empty_lyrics", "lyrics_do_not_fit", "lyrics_too_long", "unsupported_language"},
    "editJob": {"unknown_style"},
}


def content_refusal_only(ctx, response, case):
    """Valid requests to createJob/rerunJob: accepted, or refused for their content only, never for a
    parameter the document allows (which would mean the document and the checks disagree)."""
    refusals = CONTENT_REFUSALS.get(case.operation.definition.raw.get("operationId"))
    if refusals is None or not _positive(case, "body") or response.status_code < 400:
        return
    if response.status_code in (401, 404, 409):
        return
    code = response.json()["error"]["code"]
    if response.status_code == 400 and code == "missing_file":
        return  # an empty file name: nothing was chosen
    assert code in refusals, f"schema-valid request refused with {response.status_code} {code}: {response.text}"



@schema.parametrize()
@settings(max_examples=50, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_matches_its_document(case):
    realistic(case)
    if case.path_parameters and case.path_parameters.get("job_id") in SEEDED:
        reseed(case.path_parameters["job_id"])
    if case.operation.definition.raw.get("operationId") in CONTENT_REFUSALS:
        case.call_and_validate(excluded_checks=[positive_data_acceptance], additional_checks=[content_refusal_only])
    else:
        case.call_and_validate()


@schema_keys.parametrize()
@settings(max_examples=20, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_with_keys_matches_its_document(case):
    excluded = [positive_data_acceptance] if case.operation.definition.raw.get("operationId") in CONTENT_REFUSALS \
        else []
    case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, excluded_checks=excluded)
