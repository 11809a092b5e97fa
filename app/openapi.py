"""The OpenAPI 3.1 document of the REST API (served at ``/api/openapi.json``).

Built from the same constants the API checks against (parameter ranges, states, limits), so the
document and the behaviour cannot drift apart; ``tests/test_api_fuzz.py`` holds the API to it.
"""

from __future__ import annotations

from typing import Any

from tmik_common.tasks import MAX_SEED
from tmik_common.tempo import MAX_BPM, MIN_BPM, TEMPO_LEVELS, TIME_SIGNATURES

from . import submit
from .access import AUTH_FAILURE_LIMIT, AUTH_FAILURE_WINDOW_S
from .config import Config
from .models import STATES

UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
MAX_PAGE = 1_000_000
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 20

# Every error code the API itself answers with (the services' and the audio checks' codes are
# passed through as they are: see ``ErrorCodes`` in the document).
API_ERROR_CODES = {
    "bad_request": "the request could not be read",
    "invalid_json": "the body is not valid JSON",
    "invalid_body": "the body is not an object of parameters",
    "invalid_param": "a parameter is out of range or of the wrong type (see field)",
    "unknown_param": "a parameter the endpoint does not take (see field)",
    "unknown_style": "the style is not one of GET /api/styles",
    "missing_file": "no audio file in the 'file' field",
    "unsupported_format": "the file's type is not one of the accepted audio formats",
    "unsupported_media_type": "the request body's Content-Type is not accepted here",
    "file_too_large": "the upload is over the size limit (MAX_UPLOAD_MB)",
    "request_too_large": "a form field is over the size limit",
    "lyrics_too_long": "the lyrics are over the length limit",
    "lyrics_conflict": "both 'lyrics' and a non-empty 'lyrics_file' were sent",
    "lyrics_not_text": "the lyrics file is not a text file",
    "lyrics_unreadable": "the lyrics file could not be read",
    "unauthorized": "no API key, or an unknown one (or a file link that is not valid or has expired)",
    "too_many_failures": "too many wrong API keys from this address; wait Retry-After seconds",
    "not_found": "no such endpoint",
    "job_not_found": "no job with that id (or it belongs to another API key)",
    "file_not_found": "the job has no file of that name",
    "method_not_allowed": "the endpoint does not take this method",
    "job_finished": "the job has already finished (cancel)",
    "job_not_finished": "the job is queued or running; cancel it first (delete)",
    "input_missing": "the job's input file is gone (rerun)",
    "no_takes": "the job has no takes (yet): takes.json is written when its vocal stage has finished",
    "take_not_found": "the job has no take of that number",
    "job_not_succeeded": "a take can be chosen only once the job has succeeded (it is queued or running, or failed "
                         "before it had takes); an edit is made only from a job that has succeeded",
    "melody_missing": "the job's melody files are gone, so no edit can keep them (edits)",
    "service_unavailable": "the vocal-mix service cannot be reached",
    "database_unavailable": "the jobs database cannot be reached",
    "internal_error": "a fault of the server",
}
# Codes of the upload's audio check (tmik_common.audio.AudioError), answered with 422 and field "file".
AUDIO_ERROR_CODES = ("empty_file", "not_audio", "corrupt_audio", "too_short", "too_long", "silent_audio",
                     "unsupported_sample_rate", "non_finite_samples", "out_of_range_samples", "too_large_decoded")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _json(description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _disposition(field: str, filename: str) -> dict[str, Any]:
    """A multipart part's Content-Disposition: the file name's extension says the format."""
    return {"description": "the file's name; its extension (.wav, .flac, .mp3, .ogg) says its format",
            "schema": {"type": "string"}, "example": f'form-data; name="{field}"; filename="{filename}"'}


def _param_properties(*, json_types: bool) -> dict[str, Any]:
    """The musician's parameters; for JSON bodies null means "the default" (seed: a new random one)."""
    def nullable(schema: dict[str, Any]) -> dict[str, Any]:
        if not json_types:
            return schema
        return {**schema, "type": [schema["type"], "null"]}

    return {
        "sensitivity": nullable({"type": "number", "minimum": 0, "maximum": 1,
                                 "description": f"Beat Detection Sensitivity (default {submit.DEFAULT_SENSITIVITY})"}),
        "randomness": nullable({"type": "number", "minimum": 0, "maximum": 1,
                                "description": f"Creative Randomness (default {submit.DEFAULT_RANDOMNESS})"}),
        "style": nullable({"type": "string", "pattern": submit.STYLE_PATTERN,
                           "description": f"Vocal Style: a name from GET /api/styles (default "
                                          f"{submit.DEFAULT_STYLE})"}),
        "seed": nullable({"type": "integer", "minimum": 0, "maximum": MAX_SEED,
                          "description": "random seed; left out: a random one, recorded in the job's params"}),
        "lyrics": nullable({"type": "string", "maxLength": submit.MAX_LYRICS_CHARS,
                            "description": "lyrics with optional [Section] tags; empty: a vocalise"}),
        "target_lufs": nullable({"type": "number", "minimum": -30, "maximum": -6,
                                 "description": "integrated loudness of the mix (default -14)"}),
        "tempo": {"oneOf": [{"type": "number", "minimum": MIN_BPM, "maximum": MAX_BPM},
                            {"type": "string", "enum": list(TEMPO_LEVELS)},
                            *([{"type": "null"}] if json_types else [])],
                  "description": "the tempo a singer counts, in beats per minute, or 'half' / 'double' the "
                                 "detected one; the analysis is run at that level (left out: automatic; the "
                                 "levels it considered are analysis.json's tempo_candidates)"},
        "time_signature": nullable({"type": "string", "enum": [*TIME_SIGNATURES, *([None] if json_types else [])],
                                    "description": "the meter the bars are counted in (left out: automatic)"}),
        "takes": nullable({"type": "integer", "minimum": submit.MIN_TAKES, "maximum": submit.MAX_TAKES,
                           "description": "how many takes the voice sings, each with its own seeds; the checks "
                                          "make the best one the result, all are kept (GET .../takes) and another "
                                          "can be chosen (POST .../takes/{take}); left out: the vocal service's "
                                          f"default (TAKES, {submit.DEFAULT_TAKES})"}),
    }


def _schemas() -> dict[str, Any]:
    nullable_str = {"type": ["string", "null"]}
    file_props = {"name": {"type": "string", "description": "the artifact's name ('input', 'mix', ...)"},
                  "url": {"type": "string", "description": "where to GET it"},
                  "size": {"type": "integer", "minimum": 0, "description": "bytes"}}
    job_props: dict[str, Any] = {
        "id": {"type": "string", "format": "uuid"},
        "state": {"type": "string", "enum": list(STATES)},
        "stage": {"type": "string", "description": "the stage running now"},
        "progress": {"type": "number", "minimum": 0, "maximum": 1},
        "stages": {"type": "object", "description": "per pipeline stage: {state, progress, detail}"},
        "params": {"type": "object", "description": "the parameters the job runs with (seed filled in)"},
        "input_name": {"type": "string", "description": "the uploaded file's name"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "started_at": {"type": ["string", "null"], "format": "date-time"},
        "finished_at": {"type": ["string", "null"], "format": "date-time"},
        "duration_seconds": {"type": ["number", "null"]},
        "files": {"type": "array", "items": _ref("File"), "description": "what can be downloaded now"},
        "checks": {"type": "object", "description": "the take's automatic checks"},
        "warnings": {"type": "array", "description": "messages about the take"},
        "error": {"oneOf": [{"type": "null"}, {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": nullable_str}}]},
        "attempts": {"type": "integer", "minimum": 0},
        "cancel_requested": {"type": "boolean"},
        "parent_id": {"type": ["string", "null"], "format": "uuid",
                      "description": "the job this version was made from (a re-run or an edit); null for an "
                                     "original or once that job is deleted"},
        "root_id": {"type": "string", "format": "uuid",
                    "description": "the first job of the song's family (GET .../versions lists them)"},
        "version": {"type": "integer", "minimum": 1, "description": "the version number in the family (1: "
                                                                    "the original)"},
    }
    event = {"type": "object", "additionalProperties": False,
             "required": ["at", "state", "stage", "message", "worker"],
             "properties": {"at": {"type": "string", "format": "date-time"},
                            "state": {"type": "string", "enum": list(STATES)},
                            "stage": {"type": "string"}, "message": {"type": "string"},
                            "worker": nullable_str}}
    service = {"type": "object", "required": ["ok"],
               "properties": {"ok": {"type": "boolean"}, "version": nullable_str, "model": nullable_str,
                              "error": nullable_str}}
    nullable_num = {"type": ["number", "null"]}
    take_props: dict[str, Any] = {
        "take": {"type": "integer", "minimum": 1, "description": "the take's number"},
        "seed": {"type": "integer", "description": "the take's seed"},
        "phrase_seeds": {"type": "array", "items": {"type": "integer"}, "description": "each phrase's seed"},
        "resung_phrases": {"type": "array", "items": {"type": "integer"},
                           "description": "the phrases sung again for this take (the others are take 1's)"},
        "score": nullable_num, "word_error_rate": nullable_num, "pitch_accuracy": nullable_num,
        "expression": {"type": "object", "description": "the take's expression figures (vibrato, ...)"},
        "files": {"type": "object", "additionalProperties": {"type": "string"},
                  "description": "the take's files by kind (vocal: the dry vocal, mix_mp3: the take over the "
                                 "background)"},
        "urls": {"type": "object", "additionalProperties": {"type": "string"},
                 "description": "where to GET each of the take's files (those the job has)"},
    }
    takes_props: dict[str, Any] = {
        "job_id": {"type": "string", "format": "uuid"},
        "state": {"type": "string", "enum": list(STATES), "description": "the job's state"},
        "chosen": {"type": ["integer", "null"], "description": "the take that is the job's result"},
        "chosen_by": {"type": ["string", "null"], "description": "checks (the best-scored take) or user"},
        "reason": nullable_str,
        "requested": {"type": ["integer", "null"],
                      "description": "the take the user chose last (the job remixes it while queued or running)"},
        "takes": {"type": "array", "items": {"type": "object", "required": ["take", "urls"],
                                             "properties": take_props}},
    }
    return {
        "Versions": {"type": "object", "additionalProperties": False, "required": ["root_id", "versions"],
                     "properties": {"root_id": {"type": "string", "format": "uuid"}, "versions": {
                         "type": "array", "items": {
                             "type": "object", "required": ["id", "version", "parent_id", "state", "params",
                                                            "created_at", "edit"],
                             "properties": {
                                 "id": {"type": "string", "format": "uuid"}, "version": {"type": "integer"},
                                 "parent_id": {"type": ["string", "null"]}, "state": {"type": "string"},
                                 "params": {"type": "object"}, "created_at": {"type": "string"},
                                 "finished_at": {"type": ["string", "null"]},
                                 "edit": {"description": "how this version was made from its parent: {kind "
                                                         "(rerun, restyle), from, changes {name: {from, to}}}; "
                                                         "null for an original",
                                          "oneOf": [{"type": "null"}, {"type": "object"}]}}}}}},
        "Takes": {"type": "object", "additionalProperties": False, "required": list(takes_props),
                  "properties": takes_props},
        "Error": {
            "type": "object", "additionalProperties": False, "required": ["error"],
            "properties": {"error": {
                "type": "object", "additionalProperties": False, "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "stable, machine-readable: "
                             + "; ".join(f"{k}: {v}" for k, v in API_ERROR_CODES.items())
                             + "; and the upload's audio checks (422, field 'file'): "
                             + ", ".join(AUDIO_ERROR_CODES) + "; and the lyrics checks (422, field 'lyrics')"},
                    "message": {"type": "string", "description": "what went wrong and what to do"},
                    "field": {"type": "string", "description": "the parameter at fault"}}}}},
        "File": {"type": "object", "additionalProperties": False, "required": list(file_props),
                 "properties": file_props},
        "Job": {"type": "object", "additionalProperties": False, "required": list(job_props),
                "properties": job_props},
        "JobDetail": {"type": "object", "additionalProperties": False, "required": [*job_props, "events"],
                      "properties": {**job_props, "events": {"type": "array", "items": event,
                                                             "description": "the job's history, oldest first"}}},
        "JobList": {"type": "object", "additionalProperties": False,
                    "required": ["jobs", "page", "per_page", "total", "pages"],
                    "properties": {"jobs": {"type": "array", "items": _ref("Job")},
                                   "page": {"type": "integer", "minimum": 1},
                                   "per_page": {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE},
                                   "total": {"type": "integer", "minimum": 0},
                                   "pages": {"type": "integer", "minimum": 1}}},
        "Health": {"type": "object", "additionalProperties": False,
                   "required": ["status", "version", "database", "services", "keys_required"],
                   "properties": {
                       "status": {"type": "string", "enum": ["ok", "degraded", "error"],
                                  "description": "degraded: a service is down (jobs wait for it); error: the "
                                                 "database is down"},
                       "version": {"type": "string"},
                       "database": {"type": "object", "required": ["ok"],
                                    "properties": {"ok": {"type": "boolean"}, "error": nullable_str}},
                       "services": {"type": "object", "required": ["melody", "vocal"],
                                    "properties": {"melody": service, "vocal": service}},
                       "keys_required": {"type": "boolean"}}},
        "Styles": {"type": "object", "required": ["styles"],
                   "properties": {"styles": {"type": "array", "items": {
                       "type": "object", "required": ["name"],
                       "properties": {"name": {"type": "string"}, "description": {"type": "string"}}}}}},
    }


def build_document(cfg: Config, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document for an API run with ``cfg`` (API keys on or off change the security)."""
    keys = bool(cfg.api_keys)
    retry_after = {"description": "seconds to wait", "schema": {"type": "string", "pattern": "^[0-9]+$"}}
    secured: dict[str, Any] = {}
    if keys:
        secured = {"security": [{"bearer": []}, {"apiKey": []}]}

    def responses(**codes: dict[str, Any]) -> dict[str, Any]:
        out = {str(k.lstrip("_")): v for k, v in codes.items()}
        out["405"] = _error("the endpoint does not take this method (Allow lists those it takes)")
        if keys:
            out["401"] = _error("no API key or an unknown one (unauthorized)")
            out["429"] = {**_error(f"{AUTH_FAILURE_LIMIT} wrong API keys from this address within "
                                   f"{AUTH_FAILURE_WINDOW_S:g} s (too_many_failures); nothing is checked until "
                                   "Retry-After seconds have passed"), "headers": {"Retry-After": retry_after}}
        out["503"] = _error("the jobs database cannot be reached (database_unavailable)")
        return out

    job_id = {"name": "job_id", "in": "path", "required": True,
              "schema": {"type": "string", "pattern": UUID_PATTERN}, "description": "the job's id (a UUID)"}
    not_found = _error("no such job (job_not_found); also when another API key owns it")
    location = {"Location": {"description": "the new job's URL", "schema": {"type": "string"}}}
    mb = cfg.max_upload_bytes / 1048576
    upload_props = {"file": {"type": "string", "format": "binary",
                             "description": f"the background track: {submit.accepted_input(cfg)}; at most {mb:g} MB"},
                    **_param_properties(json_types=False),
                    "lyrics_file": {"type": "string", "format": "binary",
                                    "description": "lyrics as a UTF-8 text file (instead of 'lyrics')"}}
    paths: dict[str, Any] = {
        "/api/health": {"get": {
            "operationId": "health", "summary": "Is the app up, and can it reach its database and services?",
            "security": [],
            "responses": {"200": _json("up (status says whether a service is down)", _ref("Health")),
                          "503": _json("the database cannot be reached", _ref("Health")),
                          "405": _error("the endpoint does not take this method")}}},
        "/api/openapi.json": {"get": {
            "operationId": "openapi", "summary": "This document", "security": [],
            "responses": {"200": {"description": "the OpenAPI document",
                                  "content": {"application/json": {"schema": {"type": "object"}}}},
                          "405": _error("the endpoint does not take this method")}}},
        "/api/styles": {"get": {
            "operationId": "listStyles", "summary": "The vocal styles (names and descriptions)", **secured,
            "responses": responses(
                _200=_json("the styles", _ref("Styles")),
                _503=_error("the vocal-mix service (service_unavailable) or the database cannot be reached"))}},
        "/api/jobs": {
            "get": {
                "operationId": "listJobs", "summary": "Jobs, newest first, one page at a time", **secured,
                "parameters": [
                    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE,
                                                               "default": 1}},
                    {"name": "per_page", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                   "maximum": MAX_PER_PAGE,
                                                                   "default": DEFAULT_PER_PAGE}},
                    {"name": "state", "in": "query", "schema": {"type": "string", "enum": list(STATES)}}],
                "responses": responses(_200=_json("one page of jobs", _ref("JobList")),
                                       _400=_error("a bad page, per_page or state (invalid_param)"))},
            "post": {
                "operationId": "createJob", "summary": "Upload a background track and queue a job", **secured,
                "requestBody": {"required": True, "content": {"multipart/form-data": {
                    "schema": {"type": "object", "required": ["file"], "additionalProperties": False,
                               "properties": upload_props},
                    "encoding": {"file": {"contentType": "audio/wav, audio/x-wav, audio/flac, audio/mpeg, "
                                                         "audio/ogg, application/octet-stream",
                                          "headers": {"Content-Disposition": _disposition("file", "track.wav")}},
                                 "lyrics_file": {"contentType": "text/plain",
                                                 "headers": {"Content-Disposition": _disposition("lyrics_file",
                                                                                                 "lyrics.txt")}}}}}},
                "responses": responses(
                    _201=_json("queued", _ref("Job"), location),
                    _400=_error("no file (missing_file) or an unreadable request (bad_request)"),
                    _413=_error(f"the upload is larger than {mb:g} MB (file_too_large) or a field is too large "
                                "(request_too_large)"),
                    _415=_error("not one of the accepted audio formats (unsupported_format), or not "
                                "multipart/form-data (unsupported_media_type)"),
                    _422=_error("a parameter or the audio is refused: invalid_param, unknown_param, "
                                "unknown_style, lyrics_too_long, lyrics_not_text, lyrics_conflict, a lyrics code or an "
                                "audio code"))}},
        "/api/jobs/{job_id}": {
            "get": {
                "operationId": "getJob", "summary": "One job with its history and files", **secured,
                "parameters": [job_id],
                "responses": responses(_200=_json("the job", _ref("JobDetail")), _404=not_found)},
            "delete": {
                "operationId": "deleteJob", "summary": "Delete a finished job and all its files", **secured,
                "parameters": [job_id],
                "responses": responses(_204={"description": "deleted"}, _404=not_found,
                                       _409=_error("the job is queued or running (job_not_finished)"))}},
        "/api/jobs/{job_id}/cancel": {"post": {
            "operationId": "cancelJob", "summary": "Cancel a queued job, or ask a running one to stop", **secured,
            "parameters": [job_id],
            "responses": responses(_200=_json("the job was queued and is now cancelled", _ref("Job")),
                                   _202=_json("the job is running; it stops within 2 s", _ref("Job")),
                                   _404=not_found, _409=_error("the job has already finished (job_finished)"))}},
        "/api/jobs/{job_id}/rerun": {"post": {
            "operationId": "rerunJob", "summary": "A new job on the same input, with changed parameters",
            "description": "Parameters left out keep the old job's values (the seed too, so the same melody "
                           "can be sung another way); null, or an empty form value, means the default (seed: "
                           "a new random one).", **secured,
            "parameters": [job_id],
            "requestBody": {"required": False, "content": {
                "application/json": {"schema": {"type": "object", "additionalProperties": False,
                                                "properties": _param_properties(json_types=True)}},
                "application/x-www-form-urlencoded": {"schema": {"type": "object", "additionalProperties": False,
                                                                 "properties": _param_properties(json_types=False)}}}},
            "responses": responses(
                _201=_json("queued", _ref("Job"), location), _404=not_found,
                _400=_error("the body is not JSON (invalid_json) or not an object (invalid_body)"),
                _409=_error("the old job's input is gone (input_missing)"),
                _413=_error("the body is too large (request_too_large)"),
                _415=_error("the body is neither JSON nor a form (unsupported_media_type)"),
                _422=_error("a parameter is refused: invalid_param, unknown_param, unknown_style, "
                            "lyrics_too_long or a lyrics code"))}},
        "/api/jobs/{job_id}/edits": {"post": {
            "operationId": "editJob", "summary": "A new version of the song, editing this job instead of re-rolling it",
            "description": "kind restyle: the same melody (melody.json, melody.mid, analysis.json copied from this "
                           "job) sung in another style and/or mastered to another loudness; only the vocal stage "
                           "runs, with this job's other parameters, seed and takes. The new job is the next "
                           "version of the family (parent_id: this job) and belongs to the same owner.",
            **secured, "parameters": [job_id],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False, "required": ["kind"],
                "properties": {"kind": {"type": "string", "enum": ["restyle"]},
                               "style": {**_param_properties(json_types=True)["style"],
                                         "description": "the new vocal style (GET /api/styles); left out: "
                                                        "this job's"},
                               "target_lufs": {**_param_properties(json_types=True)["target_lufs"],
                                               "description": "the new master loudness; left out: this job's"}}}}}},
            "responses": responses(
                _201=_json("queued: the new version", _ref("Job"), location), _404=not_found,
                _400=_error("the body is not JSON (invalid_json) or not an object (invalid_body)"),
                _409=_error("the job has not succeeded (job_not_succeeded), or its input or melody is gone "
                            "(input_missing, melody_missing)"),
                _415=_error("the body is not JSON (unsupported_media_type)"),
                _422=_error("an unknown kind or a loudness out of -30..-6 (invalid_param), a field the kind "
                            "does not take (unknown_param), or unknown_style"))}},
        "/api/jobs/{job_id}/versions": {"get": {
            "operationId": "listVersions", "summary": "Every version of the job's song, by version number",
            **secured, "parameters": [job_id],
            "responses": responses(_200=_json("the song's family", _ref("Versions")), _404=not_found)}},
        "/api/jobs/{job_id}/takes": {"get": {
            "operationId": "listTakes", "summary": "The job's takes: their figures, which one is the result and why",
            **secured, "parameters": [job_id],
            "responses": responses(_200=_json("the takes (takes.json) with their file URLs", _ref("Takes")),
                                   _404=_error("no such job (job_not_found) or it has no takes (no_takes)"))}},
        "/api/jobs/{job_id}/takes/{take}": {"post": {
            "operationId": "chooseTake", "summary": "Make another take the job's result",
            "description": "The job is queued again and runs only its vocal stage: take {take}'s vocal is remixed "
                           "(nothing is sung again), so the job ends with that take's mix, exports and checks; "
                           "takes.json then says chosen_by user. Also allowed on a job whose previous choice "
                           "failed or was cancelled.", **secured,
            "parameters": [job_id, {"name": "take", "in": "path", "required": True,
                                    "schema": {"type": "integer", "minimum": 1, "maximum": submit.MAX_TAKES},
                                    "description": "the take's number (GET .../takes lists them)"}],
            "responses": responses(
                _202=_json("queued to remix that take", _ref("Job")),
                _404=_error("no such job (job_not_found), it has no takes (no_takes) or not that one "
                            "(take_not_found)"),
                _409=_error("the job is queued or running, or has not succeeded (job_not_succeeded)"))}},
        "/api/jobs/{job_id}/files/{name}": {"get": {
            "operationId": "getJobFile", "summary": "Download one of a job's files (range requests work)",
            **secured,
            "parameters": [job_id,
                           {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
                            "description": "an artifact name from the job's files ('input', 'mix', ...)"},
                           {"name": "download", "in": "query", "schema": {"type": "string",
                                                                         "enum": ["0", "1", "true", "false"]},
                            "description": "1 or true: as an attachment (Content-Disposition)"},
                           {"name": "exp", "in": "query", "schema": {"type": "string"},
                            "description": "with sig: a signed link's expiry (unix time); the web UI makes these"},
                           {"name": "sig", "in": "query", "schema": {"type": "string"},
                            "description": "with exp: a signed link (HMAC of job, file, owner and exp); when API "
                                           "keys are on it stands in for the key on this route, for this file "
                                           "only, until exp; ignored when a key is sent"}],
            "responses": responses(
                _200={"description": "the file, with its media type",
                      "content": {"*/*": {"schema": {}}}},
                _206={"description": "the part of the file a Range header asked for",
                      "content": {"*/*": {"schema": {}}}},
                _304={"description": "not modified since (If-None-Match / If-Modified-Since)"},
                _400=_error("a bad download value (invalid_param)"),
                _404=_error("no such job (job_not_found) or file (file_not_found)"),
                _416={"description": "the Range cannot be satisfied"})}},
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "TMIK music generation API", "version": version,
                 "description": "Upload a background track, get a sung, mixed song. Every error is JSON "
                                "{\"error\": {\"code\", \"message\", \"field\"?}} with a stable code."
                                + (" Every endpoint except /api/health and /api/openapi.json needs an API key "
                                   "('Authorization: Bearer KEY' or 'X-API-Key: KEY'); a key sees only its own "
                                   "jobs." if keys else "")},
        "paths": paths,
        "components": {"schemas": _schemas()},
    }
    if keys:
        doc["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
    return doc
