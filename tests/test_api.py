"""The REST API (app/api.py) through Flask's test client, on a temporary data folder and SQLite DB."""

from __future__ import annotations

import dataclasses
import io
import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import update

from app import config, jobs
from app.api import create_api
from app.context import create_context
from app.models import FINISHED, RUNNING, SUCCEEDED, Job
from app.services import ServiceUnavailable

STYLES = [{"name": "pop_bright", "description": "bright pop"}, {"name": "soft_warm", "description": "warm"}]
AUDIO_CODES = {"empty_file", "not_audio", "corrupt_audio", "too_short", "too_long", "silent_audio",
               "unsupported_sample_rate", "non_finite_samples"}


def wav_bytes(seconds: float = 6.0, sr: int = 8000) -> bytes:
    """A small, real, non-silent mono WAV: a sine with a little noise."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(0)
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.02 * rng.standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


WAV = wav_bytes()


@pytest.fixture
def make_api(tmp_path, monkeypatch):
    """make_api(**config overrides) -> (Flask test client, AppContext)."""
    monkeypatch.setenv("SHARED_DATA_DIR", str(tmp_path / "shared"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
    # Nothing listens on the discard port: the services are "down", and fail fast.
    monkeypatch.setenv("MELODY_SERVICE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("VOCAL_SERVICE_URL", "http://127.0.0.1:9")
    for name in ("API_KEYS", "MAX_UPLOAD_MB"):
        monkeypatch.delenv(name, raising=False)

    def make(**overrides):
        cfg = dataclasses.replace(config.load(), **overrides)
        ctx = create_context(cfg)
        monkeypatch.setattr(ctx.vocal, "style_names", lambda: [s["name"] for s in STYLES])
        monkeypatch.setattr(ctx.vocal, "styles", lambda: STYLES)
        app = create_api(ctx)
        app.testing = True
        return app.test_client(), ctx

    return make


@pytest.fixture
def api(make_api):
    return make_api()


def upload(client, data: bytes = WAV, filename: str = "track.wav", headers=None, **fields):
    form = {"file": (io.BytesIO(data), filename), **fields}
    return client.post("/api/jobs", data=form, content_type="multipart/form-data", headers=headers or {})


def err(resp) -> dict:
    body = resp.get_json()
    assert resp.mimetype == "application/json", resp.data[:200]
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    return body["error"]


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def set_state(ctx, job_id: str, state: str, **values) -> None:
    with ctx.sessions.begin() as s:
        s.execute(update(Job).where(Job.id == job_id).values(state=state, **values))


# --------------------------------------------------------------------------- health, document, errors


def test_health_answers_quickly_when_the_services_are_down(api):
    client, _ = api
    start = time.monotonic()
    resp = client.get("/api/health")
    assert time.monotonic() - start < 5
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["status"] == "degraded" and body["database"]["ok"] is True
    assert body["services"]["melody"]["ok"] is False and body["services"]["vocal"]["ok"] is False
    assert body["version"] and body["keys_required"] is False


def test_openapi_document_lists_every_route(api):
    client, _ = api
    doc = client.get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {"/api/health", "/api/openapi.json", "/api/styles", "/api/jobs",
                                 "/api/jobs/{job_id}", "/api/jobs/{job_id}/cancel", "/api/jobs/{job_id}/rerun",
                                 "/api/jobs/{job_id}/files/{name}", "/api/jobs/{job_id}/takes",
                                 "/api/jobs/{job_id}/takes/{take}", "/api/jobs/{job_id}/edits",
                                 "/api/jobs/{job_id}/versions"}
    body = doc["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["file"] and body["properties"]["file"]["format"] == "binary"
    job = upload(client).get_json()
    assert set(job) == set(doc["components"]["schemas"]["Job"]["properties"])


def test_unknown_routes_and_methods_answer_json(api):
    client, _ = api
    resp = client.get("/api/nothing")
    assert resp.status_code == 404 and err(resp)["code"] == "not_found"
    resp = client.put("/api/jobs")
    assert resp.status_code == 405 and err(resp)["code"] == "method_not_allowed"
    assert "POST" in resp.headers["Allow"]


def test_styles_proxy_and_service_down(api, monkeypatch):
    client, ctx = api
    assert client.get("/api/styles").get_json() == {"styles": STYLES}

    def down():
        raise ServiceUnavailable("vocal-mix-service", "down")

    monkeypatch.setattr(ctx.vocal, "styles", down)
    resp = client.get("/api/styles")
    assert resp.status_code == 503 and err(resp)["code"] == "service_unavailable"


# --------------------------------------------------------------------------- uploads


def test_upload_queues_a_job(api):
    client, ctx = api
    resp = upload(client, sensitivity="0.7", randomness="0.2", style="soft_warm", seed="42",
                  lyrics="[Verse]\nhello world", target_lufs="-16")
    assert resp.status_code == 201, resp.get_json()
    job = resp.get_json()
    assert resp.headers["Location"] == f"/api/jobs/{job['id']}"
    assert job["state"] == "queued" and job["input_name"] == "track.wav"
    assert job["params"] == {"sensitivity": 0.7, "randomness": 0.2, "style": "soft_warm", "seed": 42,
                             "lyrics": "[Verse]\nhello world", "target_lufs": -16.0, "input_seconds": 6.0}
    stored = ctx.cfg.shared_data_dir / "input" / job["id"] / "original.wav"  # as uploaded; stages read background.wav
    assert stored.read_bytes() == WAV
    assert job["files"] == [{"name": "input", "url": f"/api/jobs/{job['id']}/files/input", "size": len(WAV)}]
    detail = client.get(f"/api/jobs/{job['id']}").get_json()
    assert detail["events"][0]["state"] == "queued" and detail["id"] == job["id"]


def test_tempo_and_time_signature_are_set_left_automatic_and_rerun(api):
    client, _ = api
    job = upload(client, tempo="108", time_signature="3/4").get_json()
    assert job["params"]["tempo"] == 108.0 and job["params"]["time_signature"] == "3/4"
    assert upload(client, tempo="half").get_json()["params"]["tempo"] == "half"
    automatic = upload(client, tempo="", time_signature="").get_json()["params"]
    assert "tempo" not in automatic and "time_signature" not in automatic
    # A musician who hears the wrong level reruns at the right one; null goes back to automatic.
    resp = client.post(f"/api/jobs/{job['id']}/rerun", json={"tempo": "double"})
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["params"]["tempo"] == "double" and resp.get_json()["params"]["time_signature"] == "3/4"
    again = client.post(f"/api/jobs/{job['id']}/rerun", json={"tempo": 54.5, "time_signature": None}).get_json()
    assert again["params"]["tempo"] == 54.5 and "time_signature" not in again["params"]


@pytest.mark.parametrize("fields, message", [
    ({"tempo": "301"}, ("tempo must be a number of beats per minute from 30 to 300, or 'half' or 'double' "
                       "(the detected tempo halved or doubled), got '301'")),
    ({"time_signature": "5/4"}, "time_signature must be one of 2/4, 3/4, 4/4, 6/8, 12/8, got '5/4'"),
])
def test_a_refused_tempo_or_meter_says_the_field_the_value_and_what_is_allowed(api, fields, message):
    client, _ = api
    error = err(upload(client, **fields))
    assert error["field"] == next(iter(fields)) and message in error["message"]


def test_lyrics_file_upload(api):
    client, _ = api
    form = {"file": (io.BytesIO(WAV), "t.wav"), "lyrics_file": (io.BytesIO("\ufeffla la la\n".encode()), "l.txt")}
    resp = client.post("/api/jobs", data=form, content_type="multipart/form-data")
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["params"]["lyrics"] == "la la la\n"
    form = {"file": (io.BytesIO(WAV), "t.wav"), "lyrics_file": (io.BytesIO(b"%PDF-1.4\x00\x01"), "song.pdf")}
    resp = client.post("/api/jobs", data=form, content_type="multipart/form-data")
    assert resp.status_code == 422 and err(resp)["code"] == "lyrics_not_text"
    assert err(resp)["field"] == "lyrics_file" and "song.pdf" in err(resp)["message"]
    form = {"file": (io.BytesIO(WAV), "t.wav"), "lyrics_file": (io.BytesIO(b"x" * 200_000), "big.txt")}
    resp = client.post("/api/jobs", data=form, content_type="multipart/form-data")
    assert resp.status_code == 422 and err(resp)["code"] == "lyrics_too_long"
    form = {"file": (io.BytesIO(WAV), "t.wav"), "lyrics_file": (io.BytesIO(b"a b"), "l.txt"), "lyrics": "c d"}
    resp = client.post("/api/jobs", data=form, content_type="multipart/form-data")
    assert resp.status_code == 422 and err(resp)["code"] == "lyrics_conflict"


@pytest.mark.parametrize("data, filename, status, codes", [
    (WAV[:2000], "truncated.wav", 422, AUDIO_CODES),
    (WAV[:44], "header_only.wav", 422, AUDIO_CODES),
    (b"these are not the samples you are looking for\n" * 50, "notes.wav", 422, AUDIO_CODES),
    (b"", "empty.wav", 422, {"empty_file"}),
    (WAV, "track.txt", 415, {"unsupported_format"}),
    (WAV, "no_extension", 415, {"unsupported_format"}),
    (b"hello", "../../etc/passwd.wav", 422, AUDIO_CODES),
])
def test_bad_uploads_are_refused_and_the_app_keeps_serving(api, data, filename, status, codes):
    client, ctx = api
    resp = upload(client, data, filename)
    assert resp.status_code == status, resp.get_json()
    error = err(resp)
    assert error["code"] in codes and error["field"] == "file"
    assert not any((ctx.cfg.shared_data_dir / "input").iterdir()), "a refused upload left files behind"
    assert client.get("/api/jobs").get_json()["total"] == 0
    assert upload(client).status_code == 201
    assert client.get("/api/health").status_code == 200


def test_missing_file_and_wrong_content_type(api):
    client, _ = api
    resp = client.post("/api/jobs", data={"style": "pop_bright"}, content_type="multipart/form-data")
    assert resp.status_code == 400 and err(resp)["code"] == "missing_file"
    resp = client.post("/api/jobs", json={"style": "pop_bright"})
    assert resp.status_code == 415 and err(resp)["code"] == "unsupported_media_type"
    resp = client.post("/api/jobs", data={"file": (io.BytesIO(WAV), "")}, content_type="multipart/form-data")
    assert resp.status_code == 400 and err(resp)["code"] == "missing_file"


def test_uploads_over_the_size_limit(make_api):
    client, ctx = make_api(max_upload_bytes=100_000)
    assert len(WAV) < 100_000 < len(wav_bytes(seconds=7.0))
    # Over the upload limit but within the request's slack: refused while it is copied.
    resp = upload(client, wav_bytes(seconds=7.0))
    assert resp.status_code == 413 and err(resp) == {"code": "file_too_large", "field": "file",
                                                     "message": err(resp)["message"]}
    # Far over it: werkzeug refuses the request before reading it.
    resp = upload(client, WAV * 20)
    assert resp.status_code == 413 and err(resp)["code"] == "file_too_large"
    assert not any((ctx.cfg.shared_data_dir / "input").iterdir())
    assert upload(client).status_code == 201
    assert client.get("/api/health").status_code == 200


@pytest.mark.parametrize("filename", ["../../etc/passwd.wav", "..\\..\\evil.wav", "/tmp/abs.wav", "a/../../b.wav"])
def test_a_path_in_the_file_name_stays_inside_the_jobs_folder(api, tmp_path, filename):
    client, ctx = api
    before = files_under(tmp_path)
    resp = upload(client, WAV, filename)
    assert resp.status_code == 201, resp.get_json()
    job = resp.get_json()
    assert "/" not in job["input_name"] and "\\" not in job["input_name"] and ".." not in job["input_name"]
    new = {p for p in files_under(tmp_path) - before if not p.name.startswith("jobs.db")}
    assert new == {ctx.cfg.shared_data_dir / "input" / job["id"] / name for name in ("original.wav", "background.wav")}


@pytest.mark.parametrize("fields, code, field", [
    ({"sensitivity": "2"}, "invalid_param", "sensitivity"),
    ({"sensitivity": "nan"}, "invalid_param", "sensitivity"),
    ({"randomness": "lots"}, "invalid_param", "randomness"),
    ({"seed": "-1"}, "invalid_param", "seed"),
    ({"seed": "1.5"}, "invalid_param", "seed"),
    ({"seed": "9" * 400}, "invalid_param", "seed"),
    ({"target_lufs": "0"}, "invalid_param", "target_lufs"),
    ({"style": "opera_dramatic"}, "unknown_style", "style"),
    ({"style": "pop_bright\n"}, "unknown_style", "style"),
    ({"bpm": "120"}, "unknown_param", "bpm"),
    ({"tempo": "301"}, "invalid_param", "tempo"),
    ({"tempo": "29.9"}, "invalid_param", "tempo"),
    ({"tempo": "nan"}, "invalid_param", "tempo"),
    ({"tempo": "triple"}, "invalid_param", "tempo"),
    ({"time_signature": "5/4"}, "invalid_param", "time_signature"),
    ({"lyrics": "x" * 20_001}, "lyrics_too_long", "lyrics"),
])
def test_bad_parameters_are_refused(api, fields, code, field):
    client, ctx = api
    resp = upload(client, **fields)
    assert resp.status_code == 422, resp.get_json()
    assert err(resp)["code"] == code and err(resp)["field"] == field
    assert not any((ctx.cfg.shared_data_dir / "input").iterdir())


def test_styles_are_checked_by_form_only_when_the_service_is_down(api, monkeypatch):
    client, ctx = api
    monkeypatch.setattr(ctx.vocal, "style_names", lambda: None)
    assert upload(client, style="some_new_style").status_code == 201
    resp = upload(client, style="Not A Style")
    assert resp.status_code == 422 and err(resp)["code"] == "unknown_style"


# --------------------------------------------------------------------------- listing, cancel, delete


def queue_fake_jobs(ctx, n: int, owner=None) -> list[str]:
    ids = []
    for i in range(n):
        job_id = str(uuid.uuid4())
        jobs.create_job(ctx.sessions, job_id=job_id, input_file=f"input/{job_id}/background.wav",
                        input_name=f"t{i}.wav", params={"seed": i}, owner=owner)
        ids.append(job_id)
        time.sleep(0.002)
    return ids


def test_pagination_newest_first(api):
    client, ctx = api
    ids = queue_fake_jobs(ctx, 5)
    set_state(ctx, ids[0], SUCCEEDED)
    body = client.get("/api/jobs?per_page=2").get_json()
    assert (body["page"], body["per_page"], body["total"], body["pages"]) == (1, 2, 5, 3)
    assert [j["id"] for j in body["jobs"]] == ids[::-1][:2]
    assert [j["id"] for j in client.get("/api/jobs?per_page=2&page=3").get_json()["jobs"]] == [ids[0]]
    assert client.get("/api/jobs?page=9").get_json()["jobs"] == []
    only = client.get("/api/jobs?state=succeeded").get_json()
    assert only["total"] == 1 and only["jobs"][0]["id"] == ids[0]
    assert client.get("/api/jobs").get_json()["per_page"] == 20
    for query, field in [("per_page=101", "per_page"), ("per_page=0", "per_page"), ("page=0", "page"),
                         ("page=-1", "page"), ("page=abc", "page"), ("page=99999999999999999999", "page"),
                         ("state=done", "state")]:
        resp = client.get(f"/api/jobs?{query}")
        assert resp.status_code == 400 and err(resp)["code"] == "invalid_param" and err(resp)["field"] == field


def test_get_and_cancel_a_queued_job(api):
    client, _ = api
    job = upload(client).get_json()
    got = client.get(f"/api/jobs/{job['id']}")
    assert got.status_code == 200 and got.get_json()["state"] == "queued"
    resp = client.post(f"/api/jobs/{job['id']}/cancel")
    assert resp.status_code == 200 and resp.get_json()["state"] == "cancelled"
    resp = client.post(f"/api/jobs/{job['id']}/cancel")
    assert resp.status_code == 409 and err(resp)["code"] == "job_finished"
    states = [e["state"] for e in client.get(f"/api/jobs/{job['id']}").get_json()["events"]]
    assert states == ["queued", "cancelled"]


def test_cancel_a_running_job_asks_its_worker(api):
    client, ctx = api
    job = upload(client).get_json()
    set_state(ctx, job["id"], RUNNING)
    resp = client.post(f"/api/jobs/{job['id']}/cancel")
    assert resp.status_code == 202
    assert resp.get_json()["state"] == "running" and resp.get_json()["cancel_requested"] is True


@pytest.mark.parametrize("job_id", ["not-a-uuid", "12345", str(uuid.uuid4()), "..", "%2e%2e"])
def test_unknown_or_malformed_job_ids_are_404(api, job_id):
    client, _ = api
    for method, path in [("get", ""), ("post", "/cancel"), ("delete", ""), ("post", "/rerun"),
                         ("get", "/files/input")]:
        resp = getattr(client, method)(f"/api/jobs/{job_id}{path}")
        assert resp.status_code == 404, (method, path, resp.data)
        assert err(resp)["code"] in ("job_not_found", "not_found")


def test_delete_removes_the_job_and_its_folders(api):
    client, ctx = api
    job = upload(client).get_json()
    resp = client.delete(f"/api/jobs/{job['id']}")
    assert resp.status_code == 409 and err(resp)["code"] == "job_not_finished"
    result = ctx.cfg.shared_data_dir / "vocal_results" / job["id"]
    result.mkdir(parents=True)
    (result / "mix.wav").write_bytes(WAV)
    client.post(f"/api/jobs/{job['id']}/cancel")
    assert client.delete(f"/api/jobs/{job['id']}").status_code == 204
    assert all(not f.exists() for f in [result, ctx.cfg.shared_data_dir / "input" / job["id"]])
    assert client.get(f"/api/jobs/{job['id']}").status_code == 404
    assert client.delete(f"/api/jobs/{job['id']}").status_code == 404


# --------------------------------------------------------------------------- rerun


def test_rerun_with_changed_parameters(api):
    client, ctx = api
    old = upload(client, seed="7", lyrics="la la", sensitivity="0.3").get_json()
    resp = client.post(f"/api/jobs/{old['id']}/rerun", json={"style": "soft_warm", "randomness": 0.9})
    assert resp.status_code == 201, resp.get_json()
    new = resp.get_json()
    assert new["id"] != old["id"] and resp.headers["Location"] == f"/api/jobs/{new['id']}"
    assert new["params"] == {**old["params"], "style": "soft_warm", "randomness": 0.9, "edit": {
        "kind": "rerun", "from": old["id"], "changes": {"randomness": {"from": 0.5, "to": 0.9},
                                                        "style": {"from": "pop_bright", "to": "soft_warm"}}}}
    data = ctx.cfg.shared_data_dir
    assert (data / "input" / new["id"] / "original.wav").read_bytes() == WAV
    # Form body; an empty seed asks for a new random one; the old job can go, the new keeps its input.
    resp = client.post(f"/api/jobs/{old['id']}/rerun", data={"seed": "", "lyrics": ""})
    assert resp.status_code == 201
    assert "lyrics" not in resp.get_json()["params"] and 0 <= resp.get_json()["params"]["seed"] < 2**31
    assert client.post(f"/api/jobs/{old['id']}/rerun").status_code == 201
    resp = client.post(f"/api/jobs/{old['id']}/rerun", json={"seed": 11759.0})  # JSON Schema: an integer
    assert resp.status_code == 201 and resp.get_json()["params"]["seed"] == 11759
    client.post(f"/api/jobs/{old['id']}/cancel")
    assert client.delete(f"/api/jobs/{old['id']}").status_code == 204
    assert client.get(f"/api/jobs/{new['id']}/files/input").data == WAV


@pytest.mark.parametrize("kwargs, status, code", [
    ({"json": {"style": "nope"}}, 422, "unknown_style"),
    ({"json": {"bpm": 3}}, 422, "unknown_param"),
    ({"json": {"tempo": 3}}, 422, "invalid_param"),
    ({"json": {"tempo": "120"}}, 422, "invalid_param"),  # JSON numbers are numbers
    ({"json": {"tempo": True}}, 422, "invalid_param"),
    ({"json": {"time_signature": 4}}, 422, "invalid_param"),
    ({"json": {"time_signature": "7/8"}}, 422, "invalid_param"),
    ({"json": {"seed": 10**400}}, 422, "invalid_param"),
    ({"json": {"seed": True}}, 422, "invalid_param"),
    ({"json": {"seed": 1.5}}, 422, "invalid_param"),
    ({"json": {"seed": float("inf")}}, 422, "invalid_param"),
    ({"json": {"sensitivity": "0.5"}}, 422, "invalid_param"),
    ({"json": {"style": 0}}, 422, "invalid_param"),
    ({"json": [1, 2]}, 400, "invalid_body"),
    ({"data": "{not json", "content_type": "application/json"}, 400, "invalid_json"),
    ({"data": "x", "content_type": "text/plain"}, 415, "unsupported_media_type"),
])
def test_rerun_refusals(api, kwargs, status, code):
    client, ctx = api
    old = upload(client).get_json()
    resp = client.post(f"/api/jobs/{old['id']}/rerun", **kwargs)
    assert resp.status_code == status and err(resp)["code"] == code
    assert [p.name for p in (ctx.cfg.shared_data_dir / "input").iterdir()] == [old["id"]]


# --------------------------------------------------------------------------- files


def test_files_are_served_only_from_the_jobs_folders(api, tmp_path):
    client, ctx = api
    job = upload(client).get_json()
    other = upload(client).get_json()
    data = ctx.cfg.shared_data_dir
    (data / "vocal_results" / job["id"]).mkdir(parents=True)
    (data / "vocal_results" / job["id"] / "mix.wav").write_bytes(WAV)
    (data / "melody_results" / job["id"]).mkdir(parents=True)
    (data / "melody_results" / job["id"] / "analysis.json").write_text('{"tempo": 96}')
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    artifacts = {"mix": f"vocal_results/{job['id']}/mix.wav", "analysis": f"melody_results/{job['id']}/analysis.json",
                 "other": f"input/{other['id']}/background.wav", "secret": "../secret.txt",
                 "absolute": str(secret), "sneaky": f"vocal_results/{job['id']}/../../../secret.txt"}
    set_state(ctx, job["id"], SUCCEEDED, artifacts=artifacts)

    got = client.get(f"/api/jobs/{job['id']}").get_json()
    assert [f["name"] for f in got["files"]] == ["input", "analysis", "mix"]
    url = next(f["url"] for f in got["files"] if f["name"] == "mix")
    resp = client.get(url)
    assert resp.status_code == 200 and resp.mimetype == "audio/wav" and resp.data == WAV
    assert "attachment" not in resp.headers.get("Content-Disposition", "")
    resp = client.get(url + "?download=1")
    assert resp.headers["Content-Disposition"].startswith("attachment") and "mix.wav" in resp.headers[
        "Content-Disposition"]
    resp = client.get(f"/api/jobs/{job['id']}/files/analysis")
    assert resp.mimetype == "application/json" and json.loads(resp.data) == {"tempo": 96}
    resp = client.get(url, headers={"Range": "bytes=0-9"})
    assert resp.status_code == 206 and resp.data == WAV[:10]
    etag = client.get(url).headers["ETag"]
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert client.get(url + "?download=maybe").status_code == 400
    for name in ["other", "secret", "absolute", "sneaky", "missing", "..", "../input", "%2e%2e%2finput",
                 "..%2f..%2fsecret.txt", "mix/../mix"]:
        resp = client.get(f"/api/jobs/{job['id']}/files/{name}")
        assert resp.status_code == 404, name
        assert err(resp)["code"] in ("file_not_found", "not_found")


# --------------------------------------------------------------------------- API keys


def test_api_keys(make_api):
    client, _ = make_api(api_keys=("key-one", "key-two"))
    resp = client.get("/api/jobs")
    assert resp.status_code == 401 and err(resp)["code"] == "unauthorized"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = client.get("/api/jobs", headers={"Authorization": "Bearer wrong"})
    assert resp.status_code == 401 and err(resp)["code"] == "unauthorized"
    assert upload(client).status_code == 401
    assert client.get("/api/styles").status_code == 401
    assert client.get("/api/health").status_code == 200
    doc = client.get("/api/openapi.json").get_json()
    assert doc["paths"]["/api/jobs"]["get"]["security"] and "401" in doc["paths"]["/api/jobs"]["get"]["responses"]

    one = {"Authorization": "Bearer key-one"}
    two = {"X-API-Key": "key-two"}
    job = upload(client, headers=one).get_json()
    assert client.get(f"/api/jobs/{job['id']}", headers=one).status_code == 200
    assert client.get(f"/api/jobs/{job['id']}", headers={"X-API-Key": "key-one"}).status_code == 200
    assert client.get("/api/jobs", headers=one).get_json()["total"] == 1
    for method, path in [("get", ""), ("post", "/cancel"), ("delete", ""), ("post", "/rerun"),
                         ("get", "/files/input")]:
        resp = getattr(client, method)(f"/api/jobs/{job['id']}{path}", headers=two)
        assert resp.status_code == 404 and err(resp)["code"] == "job_not_found", (method, path)
    assert client.get("/api/jobs", headers=two).get_json()["total"] == 0
    rerun = client.post(f"/api/jobs/{job['id']}/rerun", headers=one, json={})
    assert rerun.status_code == 201
    assert client.get("/api/jobs", headers=one).get_json()["total"] == 2
    assert client.get(f"/api/jobs/{job['id']}/files/input", headers=one).data == WAV


def test_finished_states_cover_delete(api):
    # delete accepts exactly the finished states
    client, ctx = api
    for state in FINISHED:
        job = upload(client).get_json()
        set_state(ctx, job["id"], state)
        assert client.delete(f"/api/jobs/{job['id']}").status_code == 204


# --------------------------------------------------------------------------- issue 12: chunked bodies, rerun, errors, limits


def _multipart(data: bytes, filename: str = "track.wav", **fields: str) -> tuple[bytes, str]:
    boundary = "tmikboundary1234"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 "Content-Type: audio/wav\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@pytest.fixture
def asgi_api(make_api):
    """make(**config) -> (an HTTP client of the whole app as it is served, through a2wsgi, ctx)."""
    from fastapi.testclient import TestClient

    from app.app import create_asgi

    clients = []

    def make(**overrides):
        flask_client, ctx = make_api(**overrides)
        client = TestClient(create_asgi(ctx, api_app=flask_client.application))
        clients.append(client)
        return client, ctx

    yield make
    for client in clients:
        client.close()


def test_a_chunked_upload_is_read_and_bounded(asgi_api):
    client, ctx = asgi_api(max_upload_bytes=100_000)
    body, ctype = _multipart(WAV, seed="5")

    def chunks(data: bytes):  # a generator body: sent with Transfer-Encoding: chunked, no Content-Length
        for i in range(0, len(data), 4096):
            yield data[i:i + 4096]

    resp = client.post("/api/jobs", content=chunks(body), headers={"Content-Type": ctype})
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert job["params"]["seed"] == 5 and job["input_name"] == "track.wav"
    assert job["params"]["input_seconds"] == 6.0  # the whole track arrived
    big, ctype = _multipart(WAV * 40)  # far over MAX_UPLOAD_MB: refused while it streams in
    resp = client.post("/api/jobs", content=chunks(big), headers={"Content-Type": ctype})
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "file_too_large"
    assert [p.name for p in (ctx.cfg.shared_data_dir / "input").iterdir()] == [job["id"]]


@pytest.mark.parametrize("kwargs", [{"json": {"file": "other.wav"}}, {"json": {"file": None, "seed": 3}},
                                    {"data": {"file": "x.wav"}}])
def test_rerun_refuses_a_file_field(api, kwargs):
    client, ctx = api
    old = upload(client).get_json()
    resp = client.post(f"/api/jobs/{old['id']}/rerun", **kwargs)
    assert resp.status_code == 422 and err(resp)["code"] == "unknown_param" and err(resp)["field"] == "file"
    assert "old job's input" in err(resp)["message"]
    assert [p.name for p in (ctx.cfg.shared_data_dir / "input").iterdir()] == [old["id"]]


@pytest.mark.parametrize("error", ["operational", "interface", "pool"])
def test_database_errors_are_503_without_sql(api, monkeypatch, error):
    from sqlalchemy.exc import InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    client, _ = api
    fault = {"operational": OperationalError("SELECT jobs.id FROM jobs WHERE jobs.owner = ?", {}, Exception("locked")),
             "interface": InterfaceError("UPDATE jobs SET state=%(state)s", {}, Exception("connection closed")),
             "pool": PoolTimeout("QueuePool limit of size 5 overflow 10 reached")}[error]

    def broken(*args, **kwargs):
        raise fault

    monkeypatch.setattr(jobs, "list_jobs", broken)
    monkeypatch.setattr(jobs, "get_job", broken)
    for path in ("/api/jobs", f"/api/jobs/{uuid.uuid4()}"):
        resp = client.get(path)
        assert resp.status_code == 503 and resp.headers["Retry-After"]
        assert err(resp) == {"code": "database_unavailable", "message": "the jobs database cannot be reached; try "
                                                                        "again soon"}
        assert "SELECT" not in resp.text and "UPDATE" not in resp.text and "QueuePool" not in resp.text


def test_wrong_keys_are_limited_per_address(make_api):
    from app.access import AUTH_FAILURE_LIMIT

    client, _ = make_api(api_keys=("key-one",))
    for _ in range(AUTH_FAILURE_LIMIT * 2):  # no key at all is not a guess, and successes do not count
        assert client.get("/api/jobs").status_code == 401
        assert client.get("/api/jobs", headers={"X-API-Key": "key-one"}).status_code == 200
    for i in range(AUTH_FAILURE_LIMIT):
        assert client.get("/api/jobs", headers={"Authorization": f"Bearer guess{i}"}).status_code == 401
    for headers in ({"X-API-Key": "key-one"}, {"X-API-Key": "guess"}, {}):  # refused before any check
        resp = client.get("/api/jobs", headers=headers)
        assert resp.status_code == 429 and err(resp)["code"] == "too_many_failures"
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert client.get("/api/health").status_code == 200
    # Another address is not affected.
    resp = client.get("/api/jobs", headers={"X-API-Key": "key-one"}, environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert resp.status_code == 200
    doc = client.get("/api/openapi.json").get_json()
    assert "429" in doc["paths"]["/api/jobs"]["get"]["responses"]
    assert {p["name"] for p in doc["paths"]["/api/jobs/{job_id}/files/{name}"]["get"]["parameters"]} >= {"exp", "sig"}


def test_forged_file_links_count_as_failures(make_api):
    from app.access import AUTH_FAILURE_LIMIT
    from app.context import key_fingerprint

    client, ctx = make_api(api_keys=("key-one",))
    job = upload(client, headers={"X-API-Key": "key-one"}).get_json()
    good = ctx.links.file_url(job["id"], "input", key_fingerprint("key-one"))
    assert client.get(good).data == WAV
    assert client.get(ctx.links.file_url(job["id"], "input", None)).status_code == 401  # made for another owner
    for i in range(AUTH_FAILURE_LIMIT - 1):
        resp = client.get(f"/api/jobs/{job['id']}/files/input?exp=9999999999&sig=forged{i}")
        assert resp.status_code == 401 and err(resp)["code"] == "unauthorized"
    assert client.get(good).status_code == 429
