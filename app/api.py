"""The REST API (Flask): jobs, their files, styles, health, and the OpenAPI document.

:func:`create_api` builds a Flask app whose routes carry the full ``/api`` prefix (the app process
serves it for every path under /api). The handlers are thin: the checks and the work live in
:mod:`app.submit` and :mod:`app.jobs`. Every error is JSON ``{"error": {"code", "message"[, "field"]}}``
with a stable code (listed in :data:`app.openapi.API_ERROR_CODES`), werkzeug's own 404/405/413 too.

When API keys are configured every route except ``/api/health`` and ``/api/openapi.json`` needs
``Authorization: Bearer KEY`` or ``X-API-Key: KEY``, and a key sees only the jobs it created. The
file route also takes a signed link instead (``?exp=...&sig=...``, made by the web UI: see
:mod:`app.access`). Too many wrong keys or forged links from one address: 429 with Retry-After.
"""

from __future__ import annotations

import logging
import mimetypes
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Any
from urllib.parse import quote

from flask import Flask, Response, g, jsonify, request, send_file
from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import jobs, openapi, submit, takes, versions
from .context import AppContext, Unauthorized
from .models import FINISHED, STATES, Job
from .services import ServiceClient, ServiceUnavailable

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 2.0  # one service's /health; both are asked at once
FORM_SLACK_BYTES = 1 << 20  # room above the upload limit for the other form fields and multipart framing
PUBLIC_PATHS = frozenset({"/api/health", "/api/openapi.json"})
_UUID_RE = re.compile(openapi.UUID_PATTERN)
_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
          415: "unsupported_media_type", 500: "internal_error"}
# The database is down, restarting, locked for too long or out of connections: try again soon (503).
# Any other database error is a fault of ours (500); neither shows the driver's message (SQL) to clients.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)
# Media types mimetypes does not know (or guesses differently on different systems).
MEDIA_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".ogg": "audio/ogg",
               ".mid": "audio/midi", ".midi": "audio/midi", ".json": "application/json",
               ".musicxml": "application/vnd.recordare.musicxml+xml", ".xml": "application/xml",
               ".svp": "application/json", ".ustx": "text/yaml", ".ds": "application/json",
               ".png": "image/png", ".svg": "image/svg+xml", ".txt": "text/plain", ".zip": "application/zip"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.headers = status, code, message, field, headers


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: Any = None) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["field"] = field
    resp = jsonify({"error": body})
    resp.status_code = status
    for key, value in (headers.items() if isinstance(headers, dict) else headers or []):
        if key.lower() not in ("content-type", "content-length"):
            resp.headers[key] = value
    return resp


def app_version() -> str:
    try:
        return metadata.version("tmik-music")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _job_id(raw: str) -> str:
    """A job id from the URL; anything but a UUID cannot be a job."""
    if not _UUID_RE.fullmatch(raw):
        raise ApiError(404, "job_not_found", f"no job {raw!r}: job ids are UUIDs")
    return raw.lower()


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,9}", raw) or not low <= int(raw) <= high:
        raise ApiError(400, "invalid_param", f"{name} must be a whole number from {low} to {high}, got {raw!r}",
                       name)
    return int(raw)


def create_api(ctx: AppContext) -> Flask:
    """The REST API over ``ctx`` (configuration, database, vocal-service client)."""
    cfg = ctx.cfg
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_upload_bytes + FORM_SLACK_BYTES
    app.json.sort_keys = False
    version = app_version()
    document = openapi.build_document(cfg, version)

    def job_json(job: Job, events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        out = job.to_dict()
        out["files"] = [{"name": name, "url": f"/api/jobs/{job.id}/files/{quote(name, safe='')}",
                         "size": path.stat().st_size} for name, path in submit.list_artifacts(cfg, job)]
        if events is not None:
            out["events"] = events
        return out

    def created(job: Job) -> Response:
        resp = jsonify(job_json(job))
        resp.status_code = 201
        resp.headers["Location"] = f"/api/jobs/{job.id}"
        return resp

    # ------------------------------------------------------------------ errors

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)

    @app.errorhandler(submit.SubmitError)
    def _submit_error(exc: submit.SubmitError) -> Response:
        log.info("refused %s %s: %s (%s)", request.method, request.path, exc.code, exc.message)
        return error_response(exc.status, exc.code, exc.message, exc.field)

    @app.errorhandler(jobs.JobNotFound)
    def _job_not_found(exc: jobs.JobNotFound) -> Response:
        return error_response(404, "job_not_found", f"no job {exc.args[0]}")

    @app.errorhandler(takes.TakeNotFound)
    def _take_not_found(exc: takes.TakeNotFound) -> Response:
        return error_response(404, exc.code, exc.message)

    def _database_down(exc: Exception) -> Response:
        log.error("database error on %s %s: %s", request.method, request.path, exc)
        return error_response(503, "database_unavailable", "the jobs database cannot be reached; try again soon",
                              headers={"Retry-After": "5"})

    for exc_type in DATABASE_UNAVAILABLE:
        app.register_error_handler(exc_type, _database_down)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if isinstance(exc, RequestEntityTooLarge):
            limit = app.config["MAX_CONTENT_LENGTH"]
            if (request.content_length or 0) > limit or request.content_length is None:
                return error_response(413, "file_too_large", f"the upload is larger than the "
                                      f"{cfg.max_upload_bytes / 1048576:g} MB limit (MAX_UPLOAD_MB); upload a "
                                      "shorter track or a compressed format (FLAC, MP3)", "file")
            return error_response(413, "request_too_large", "a form field of the request is too large")
        code = _CODES.get(status, f"http_{status}")
        message = exc.description or exc.name
        if status == 404:
            message = f"no endpoint {request.path}; see /api/openapi.json"
        elif status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        return error_response(status, code, message, headers=exc.get_headers())

    @app.errorhandler(Exception)
    def _internal(exc: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "an internal error; it has been logged")

    # ------------------------------------------------------------------ keys

    def unauthorized(message: str) -> ApiError:
        return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="api"'})

    @app.before_request
    def _authenticate() -> None:
        g.owner = None
        if not ctx.keys_required or request.path in PUBLIC_PATHS:
            return
        client = request.remote_addr or "unknown"
        wait = ctx.auth_failures.retry_after(client)
        if wait is not None:  # over the limit: not even checked, so guessing gains nothing
            raise ApiError(429, "too_many_failures", f"too many wrong API keys from your address; try again in "
                           f"{wait} s", headers={"Retry-After": str(wait)})
        key = None
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            key = value.strip()
        else:
            key = request.headers.get("X-API-Key") or None
        if key is None and request.endpoint == "get_file" and request.args.get("sig") is not None:
            g.owner = _link_owner(client)
            return
        try:
            g.owner = ctx.owner_for_key(key)
        except Unauthorized as exc:
            if key is not None:  # a wrong key is a guess; a missing one is not
                ctx.auth_failures.failed(client, "wrong API key")
            raise unauthorized(str(exc)) from None

    def _link_owner(client: str) -> str | None:
        """The owner a signed file link (the web UI's players and downloads) was made for."""
        args = request.view_args or {}
        job, _ = jobs.get_job(ctx.sessions, _job_id(str(args.get("job_id", ""))))  # a deleted job: 404
        verdict = ctx.links.check(job.id, str(args.get("name", "")), job.owner, request.args.get("exp"),
                                  request.args.get("sig"))
        if verdict == "expired":
            raise unauthorized("this link has expired; reload the page (or select the job again) for a fresh one")
        if verdict != "ok":
            ctx.auth_failures.failed(client, "forged file link")
            raise unauthorized("this link is not valid for this file; send an API key or use a link from the web UI")
        return job.owner

    # ------------------------------------------------------------------ routes

    @app.get("/api/openapi.json")
    def get_openapi() -> Response:
        return jsonify(document)

    @app.get("/api/health")
    def health() -> Response:
        def probe(client: ServiceClient) -> dict[str, Any]:
            try:
                info = client.health()
            except (ServiceUnavailable, ValueError) as exc:
                log.info("health: %s", exc)
                return {"ok": False, "version": None, "model": None, "error": "unreachable"}
            info = info if isinstance(info, dict) else {}
            return {"ok": info.get("status", "ok") == "ok",
                    "version": None if info.get("version") is None else str(info["version"]),
                    "model": None if info.get("model") is None else str(info["model"]), "error": None}

        clients = {"melody": ServiceClient("melody-service", cfg.melody_service_url, HEALTH_TIMEOUT_S),
                   "vocal": ServiceClient("vocal-mix-service", cfg.vocal_service_url, HEALTH_TIMEOUT_S)}
        with ThreadPoolExecutor(len(clients)) as pool:
            futures = {name: pool.submit(probe, client) for name, client in clients.items()}
            database: dict[str, Any] = {"ok": True, "error": None}
            try:
                with ctx.engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            except SQLAlchemyError as exc:  # any driver error means "not reachable"
                log.error("health: database: %s", exc)
                database = {"ok": False, "error": "unreachable"}
            services = {name: f.result() for name, f in futures.items()}
        status = "ok" if all(s["ok"] for s in services.values()) else "degraded"
        if not database["ok"]:
            status = "error"
        resp = jsonify({"status": status, "version": version, "database": database, "services": services,
                        "keys_required": ctx.keys_required})
        resp.status_code = 200 if database["ok"] else 503
        return resp

    @app.get("/api/styles")
    def styles() -> Response:
        try:
            return jsonify({"styles": ctx.vocal.styles()})
        except ServiceUnavailable as exc:
            log.warning("styles: %s", exc)
            raise ApiError(503, "service_unavailable", "the vocal-mix service cannot be reached right now; try "
                           "again soon", headers={"Retry-After": "10"}) from None

    @app.get("/api/jobs")
    def list_jobs() -> Response:
        page = _int_arg("page", 1, 1, openapi.MAX_PAGE)
        per_page = _int_arg("per_page", openapi.DEFAULT_PER_PAGE, 1, openapi.MAX_PER_PAGE)
        state = request.args.get("state")
        if state is not None and state not in STATES:
            raise ApiError(400, "invalid_param", f"state must be one of {', '.join(STATES)}, got {state!r}",
                           "state")
        rows, total = jobs.list_jobs(ctx.sessions, owner=g.owner, page=page, per_page=per_page, state=state)
        return jsonify({"jobs": [job_json(j) for j in rows], "page": page, "per_page": per_page, "total": total,
                        "pages": max(1, -(-total // per_page))})

    @app.post("/api/jobs")
    def create_job() -> Response:
        if request.mimetype != "multipart/form-data":
            raise ApiError(415, "unsupported_media_type", "send the track as multipart/form-data with the audio "
                           "in the 'file' field")
        raw: dict[str, Any] = request.form.to_dict()
        extra = sorted(set(request.files) - {"file", "lyrics_file"})
        if extra:
            raise ApiError(422, "unknown_param", f"unknown file field(s) {', '.join(extra)}; send the audio as "
                           "'file' and lyrics as 'lyrics_file'", extra[0])
        lyrics_text = raw.pop("lyrics_file", None)
        if "lyrics_file" in request.files:
            lyrics_upload = request.files["lyrics_file"]
            lyrics_text = submit.read_lyrics_file(lyrics_upload.stream, lyrics_upload.filename or "lyrics.txt")
        if lyrics_text is not None:
            if (raw.get("lyrics") or "").strip() and lyrics_text.strip():
                raise ApiError(422, "lyrics_conflict", "send the lyrics as 'lyrics' or as 'lyrics_file', not both",
                               "lyrics_file")
            if lyrics_text.strip():
                raw["lyrics"] = lyrics_text
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            raise ApiError(400, "missing_file", f"no audio file in the 'file' field; upload {submit.accepted_input(cfg)}",
                           "file")
        raw.pop("file", None)
        styles = ctx.vocal.style_names()
        job = submit.submit_job(cfg, ctx.sessions, upload.stream, upload.filename, raw, owner=g.owner,
                                styles=styles)
        return created(job)

    @app.get("/api/jobs/<job_id>")
    def get_job(job_id: str) -> Response:
        job, events = jobs.get_job(ctx.sessions, _job_id(job_id), owner=g.owner, with_events=True)
        return jsonify(job_json(job, events))

    @app.delete("/api/jobs/<job_id>")
    def delete_job(job_id: str) -> Response:
        job_id = _job_id(job_id)
        try:
            jobs.delete_job(ctx.sessions, job_id, owner=g.owner)
        except jobs.JobConflict as exc:
            raise ApiError(409, "job_not_finished", str(exc)) from None
        for folder in submit.job_folders(cfg, job_id):
            shutil.rmtree(folder, ignore_errors=True)
        log.info("job %s deleted with its files", job_id)
        return Response(status=204)

    @app.post("/api/jobs/<job_id>/cancel")
    def cancel_job(job_id: str) -> Response:
        try:
            job = jobs.request_cancel(ctx.sessions, _job_id(job_id), owner=g.owner)
        except jobs.JobConflict as exc:
            raise ApiError(409, "job_finished", str(exc)) from None
        log.info("job %s: cancel %s", job.id, "done" if job.state in FINISHED else "requested")
        resp = jsonify(job_json(job))
        resp.status_code = 200 if job.state in FINISHED else 202
        return resp

    @app.post("/api/jobs/<job_id>/rerun")
    def rerun_job(job_id: str) -> Response:
        old, _ = jobs.get_job(ctx.sessions, _job_id(job_id), owner=g.owner)
        if request.mimetype == "application/json":
            body = request.get_json(silent=True)
            if body is None and request.get_data():
                raise ApiError(400, "invalid_json", "the body is not valid JSON")
            overrides = submit.params_from_json(body)
        elif request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            if request.files:
                name = min(request.files)
                raise ApiError(422, "unknown_param", f"a re-run takes no files ({name!r}); it uses the old job's "
                               "input", name)
            overrides = request.form.to_dict()
        elif not request.get_data():
            overrides = {}
        else:
            raise ApiError(415, "unsupported_media_type", "send the changed parameters as JSON or as a form")
        job = submit.rerun_job(cfg, ctx.sessions, old, overrides, owner=g.owner, styles=ctx.vocal.style_names())
        return created(job)

    @app.post("/api/jobs/<job_id>/edits")
    def edit_job(job_id: str) -> Response:
        job_id = _job_id(job_id)
        jobs.get_job(ctx.sessions, job_id, owner=g.owner)  # an unknown job is 404 whatever the body
        if request.mimetype != "application/json":
            raise ApiError(415, "unsupported_media_type", 'send the edit as JSON: {"kind": "restyle", "style": ...}')
        body = request.get_json(silent=True)
        if body is None:
            raise ApiError(400, "invalid_json", "the body is not valid JSON")
        try:
            job = versions.make_edit(cfg, ctx.sessions, job_id, body, owner=g.owner,
                                     styles=ctx.vocal.style_names())
        except jobs.JobConflict as exc:
            raise ApiError(409, "job_not_succeeded", str(exc)) from None
        return created(job)

    @app.get("/api/jobs/<job_id>/versions")
    def get_versions(job_id: str) -> Response:
        return jsonify(versions.versions_document(ctx.sessions, _job_id(job_id), owner=g.owner))

    @app.get("/api/jobs/<job_id>/takes")
    def get_takes(job_id: str) -> Response:
        job, _ = jobs.get_job(ctx.sessions, _job_id(job_id), owner=g.owner)
        return jsonify(takes.takes_document(cfg, job))

    @app.post("/api/jobs/<job_id>/takes/<take>")
    def choose_take(job_id: str, take: str) -> Response:
        # A take that is no number is no take of the job: 404 (after the job's own 404 and 409).
        number = int(take) if re.fullmatch(r"[0-9]{1,6}", take) else -1
        try:
            job = takes.choose_take(cfg, ctx.sessions, _job_id(job_id), number, owner=g.owner)
        except jobs.JobConflict as exc:
            raise ApiError(409, "job_not_succeeded", str(exc)) from None
        resp = jsonify(job_json(job))
        resp.status_code = 202
        return resp

    @app.get("/api/jobs/<job_id>/files/<path:name>")
    def get_file(job_id: str, name: str) -> Response:
        job, _ = jobs.get_job(ctx.sessions, _job_id(job_id), owner=g.owner)
        download = request.args.get("download")
        if download not in (None, "0", "1", "true", "false"):
            raise ApiError(400, "invalid_param", f"download must be 1 or 0, got {download!r}", "download")
        path = None if "/" in name or "\\" in name or ".." in name else submit.resolve_artifact(cfg, job, name)
        if path is None:
            raise ApiError(404, "file_not_found", f"job {job.id} has no file {name!r}")
        mimetype = MEDIA_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] \
            or "application/octet-stream"
        download_name = path.name if name != "input" else (job.input_name or path.name)
        resp = send_file(path, mimetype=mimetype, as_attachment=download in ("1", "true"),
                         download_name=download_name, conditional=True, max_age=0)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    log.info("REST API ready (API keys %s, upload limit %g MB)", "required" if ctx.keys_required else "off",
             cfg.max_upload_bytes / 1048576)
    return app
