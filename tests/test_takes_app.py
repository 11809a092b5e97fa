"""Takes in the app: the ``takes`` parameter, GET/POST /api/jobs/<id>/takes, the job manager's select_take
stage, the dashboard's Takes section and the CLI's ``--takes`` / ``take``.

The services are the stand-ins of tests/fake_services.py (the real task HTTP edge; the vocal one sings
takes and remixes a chosen one as interface 6 of the takes brief says), the database is SQLite.
"""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fake_services import STYLES, TAKE_SCORES, FakeBehaviour, FakeService, InProcessTasks
from sqlalchemy import update

from app import cli, jobs, takes_panel, ui
from app import config as app_config
from app.api import create_api
from app.context import create_context, key_fingerprint
from app.job_manager import Worker, service_clients
from app.models import QUEUED, RUNNING, SUCCEEDED, Job


def wav_bytes(seconds: float = 6.0, sr: int = 8000) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.02 * np.random.default_rng(0).standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


WAV = wav_bytes()
KEY, OTHER_KEY = "key-one", "key-two"


@pytest.fixture
def services(tmp_path: Path):
    data = tmp_path / "shared"
    for sub in ("input", "melody_results", "vocal_results"):
        (data / sub).mkdir(parents=True)
    behaviour = FakeBehaviour(seconds=0.1)
    melody, vocal = FakeService("melody", data, behaviour), FakeService("vocal", data, behaviour)
    yield data, melody, vocal, behaviour
    melody.stop()
    vocal.stop()


@pytest.fixture
def app_env(tmp_path: Path, services, monkeypatch):
    """(cfg, ctx, Flask client, behaviour, start_worker) over the fake services."""
    data, melody, vocal, behaviour = services
    monkeypatch.setenv("SHARED_DATA_DIR", str(data))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
    for name in ("API_KEYS", "MAX_UPLOAD_MB"):
        monkeypatch.delenv(name, raising=False)
    cfg = dataclasses.replace(app_config.load(), melody_service_url=melody.url, vocal_service_url=vocal.url,
                              lease_seconds=3.0, poll_seconds=0.05, max_attempts=3, service_timeout=2.0,
                              service_wait_seconds=60.0)
    ctx = create_context(cfg)
    client = create_api(ctx).test_client()
    workers: list[tuple[Worker, threading.Thread]] = []

    def start_worker() -> Worker:
        m, v = service_clients(cfg)
        worker = Worker(cfg=cfg, sessions=ctx.sessions, melody=m, vocal=v)
        thread = threading.Thread(target=worker.run_forever, daemon=True)
        thread.start()
        workers.append((worker, thread))
        return worker

    start_worker.workers = workers  # type: ignore[attr-defined]

    yield cfg, ctx, client, behaviour, start_worker
    for worker, thread in workers:
        worker.stop_event.set()
        thread.join(timeout=10)
    ctx.engine.dispose()


def upload(client, headers=None, **fields):
    return client.post("/api/jobs", data={"file": (io.BytesIO(WAV), "track.wav"), **fields},
                       content_type="multipart/form-data", headers=headers or {})


def wait_for(ctx, job_id: str, state: str, timeout: float = 30.0) -> Job:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = jobs.get_job(ctx.sessions, job_id)[0]
        if job.state == state:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not become {state}: it is {job.state} ({job.error_message})")


def run_to_success(app_env, **fields) -> Job:
    _cfg, ctx, client, _behaviour, start_worker = app_env
    resp = upload(client, **fields)
    assert resp.status_code == 201, resp.get_json()
    start_worker()
    return wait_for(ctx, resp.get_json()["id"], SUCCEEDED)


def takes_json(cfg, job: Job) -> dict:
    return json.loads((cfg.shared_data_dir / job.artifacts["takes.json"]).read_text())


# --------------------------------------------------------------------------- the takes parameter


def test_create_and_rerun_with_takes(app_env):
    _, _, client, _, _ = app_env
    job = upload(client, takes="2").get_json()
    assert job["params"]["takes"] == 2
    assert "takes" not in upload(client).get_json()["params"]  # left out: the vocal service's default
    again = client.post(f"/api/jobs/{job['id']}/rerun", json={"takes": 5})
    assert again.status_code == 201 and again.get_json()["params"]["takes"] == 5
    kept = client.post(f"/api/jobs/{job['id']}/rerun", json={"seed": 3})
    assert kept.get_json()["params"]["takes"] == 2  # a re-run keeps the old job's takes


@pytest.mark.parametrize("value", ["0", "6", "two", "2.5", "-1"])
def test_invalid_takes_are_refused_naming_the_field(app_env, value):
    _, _, client, _, _ = app_env
    resp = upload(client, takes=value)
    assert resp.status_code == 422
    error = resp.get_json()["error"]
    assert error["code"] == "invalid_param" and error["field"] == "takes" and "from 1 to 5" in error["message"]


@pytest.mark.parametrize("value", ["3", True, 0, 9])
def test_invalid_takes_in_a_json_rerun(app_env, value):
    _, _, client, _, _ = app_env
    job = upload(client).get_json()
    resp = client.post(f"/api/jobs/{job['id']}/rerun", json={"takes": value})
    assert resp.status_code == 422 and resp.get_json()["error"]["field"] == "takes"


def test_the_document_describes_takes(app_env):
    _, _, client, _, _ = app_env
    doc = client.get("/api/openapi.json").get_json()
    assert doc["paths"]["/api/jobs/{job_id}/takes"]["get"]["operationId"] == "listTakes"
    choose = doc["paths"]["/api/jobs/{job_id}/takes/{take}"]["post"]
    assert {"202", "404", "409"} <= set(choose["responses"])
    upload_props = doc["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload_props["properties"]["takes"]["maximum"] == 5
    assert set(doc["components"]["schemas"]["Takes"]["required"]) >= {"chosen", "chosen_by", "reason", "takes"}


# --------------------------------------------------------------------------- takes through the pipeline


def test_takes_reach_the_render_and_the_job_keeps_every_take(app_env):
    _cfg, _, client, behaviour, _ = app_env
    job = run_to_success(app_env, takes="4")
    render = [p for name, _, p in behaviour.params if name == "render"]
    assert render == [{"style": "pop_bright", "seed": job.params["seed"], "takes": 4}]
    assert {f"take{n}_{kind}" for n in range(1, 5) for kind in ("mix.mp3", "vocal.wav")} | {"takes.json"} \
        <= set(job.artifacts)
    assert job.checks["take"] == 2 and job.checks["takes"] == 4 and job.checks["chosen_by"] == "checks"
    body = client.get(f"/api/jobs/{job.id}/takes").get_json()
    assert body["chosen"] == 2 and body["chosen_by"] == "checks" and body["requested"] is None
    assert [t["take"] for t in body["takes"]] == [1, 2, 3, 4]
    assert body["takes"][2]["urls"] == {"vocal": f"/api/jobs/{job.id}/files/take3_vocal.wav",
                                        "mix_mp3": f"/api/jobs/{job.id}/files/take3_mix.mp3"}
    assert body["takes"][1]["word_error_rate"] == TAKE_SCORES[2][1]
    assert client.get(body["takes"][2]["urls"]["mix_mp3"]).status_code == 200
    schema = client.get("/api/openapi.json").get_json()["components"]["schemas"]["Takes"]
    assert set(body) == set(schema["properties"]) == set(schema["required"])  # what the document says


def test_choosing_a_take_remixes_only_that_take(app_env):
    cfg, ctx, client, behaviour, _ = app_env
    job = run_to_success(app_env)
    resp = client.post(f"/api/jobs/{job.id}/takes/3")
    assert resp.status_code == 202, resp.get_json()
    queued = resp.get_json()
    assert queued["state"] == QUEUED and queued["params"]["take"] == 3
    done = wait_for(ctx, job.id, SUCCEEDED)
    events = [e["message"] for e in client.get(f"/api/jobs/{job.id}").get_json()["events"]]
    assert "take 3 chosen by the user" in events
    assert events.index("take 3 chosen by the user") < len(events) - 1 and events[-1] == "finished"
    # Only the vocal stage ran again, as select_take with the job's files and the chosen take.
    assert behaviour.submissions[("generate", job.id)] == 1 and behaviour.submissions[("render", job.id)] == 1
    assert behaviour.submissions[("select_take", job.id)] == 1
    (_, _, params), = [p for p in behaviour.params if p[0] == "select_take"]
    (_, _, inputs), = [i for i in behaviour.inputs if i[0] == "select_take"]
    assert params == {"take": 3, "style": "pop_bright"}
    assert inputs == {"background": job.input_file, "melody": job.artifacts["melody.json"],
                      "takes": job.artifacts["takes.json"]}
    assert takes_json(cfg, done)["chosen"] == 3 and takes_json(cfg, done)["chosen_by"] == "user"
    assert done.checks["take"] == 3 and done.checks["chosen_by"] == "user"
    assert ui.fmt_checks_short(done.checks).endswith("take 3/3 (yours)")
    assert done.checks["pitch_accuracy"] == TAKE_SCORES[3][2]  # the chosen take's checks
    assert done.stages["vocal"]["detail"] == "take 3 remixed" and done.stages["melody"]["state"] == "done"
    body = client.get(f"/api/jobs/{job.id}/takes").get_json()
    assert (body["chosen"], body["chosen_by"], body["requested"]) == (3, "user", 3)
    # Back to the checks' choice: just another remix.
    assert client.post(f"/api/jobs/{job.id}/takes/2").status_code == 202
    assert takes_json(cfg, wait_for(ctx, job.id, SUCCEEDED))["chosen"] == 2


def test_a_remix_interrupted_by_a_stopping_worker_is_run_again_by_the_next(app_env):
    cfg, ctx, client, behaviour, start_worker = app_env
    job = run_to_success(app_env)
    behaviour.seconds = 1.5  # the remix takes long enough to stop its worker mid-way
    assert client.post(f"/api/jobs/{job.id}/takes/1").status_code == 202
    end = time.monotonic() + 20
    while behaviour.submissions[("select_take", job.id)] == 0 and time.monotonic() < end:
        time.sleep(0.02)
    assert jobs.get_job(ctx.sessions, job.id)[0].state == RUNNING
    for worker, thread in start_worker.workers:  # it hands the job back and cancels its service task
        worker.stop_event.set()
        thread.join(timeout=15)
    assert jobs.get_job(ctx.sessions, job.id)[0].state == QUEUED
    behaviour.seconds = 0.1
    start_worker()
    done = wait_for(ctx, job.id, SUCCEEDED)
    assert behaviour.submissions[("select_take", job.id)] == 2  # submitted again, nothing sung again
    assert behaviour.submissions[("render", job.id)] == 1 and behaviour.submissions[("generate", job.id)] == 1
    assert takes_json(cfg, done)["chosen"] == 1 and done.checks["take"] == 1


# --------------------------------------------------------------------------- refusals


def test_choosing_is_refused_while_running_and_for_unknown_takes_or_jobs(app_env):
    _cfg, ctx, client, _, _ = app_env
    job = run_to_success(app_env, takes="2")
    for take in ("3", "0", "abc", "99999999"):
        resp = client.post(f"/api/jobs/{job.id}/takes/{take}")
        assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "take_not_found", take
    assert client.post("/api/jobs/00000000-0000-4000-8000-000000000000/takes/1").get_json()["error"]["code"] \
        == "job_not_found"
    with ctx.sessions.begin() as s:
        s.execute(update(Job).where(Job.id == job.id).values(state=RUNNING))
    resp = client.post(f"/api/jobs/{job.id}/takes/1")
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "job_not_succeeded"
    assert jobs.get_job(ctx.sessions, job.id)[0].params.get("take") is None  # nothing changed
    # A queued job without takes: 409 to choose, 404 to list.
    fresh = upload(client).get_json()
    assert client.post(f"/api/jobs/{fresh['id']}/takes/1").status_code == 409
    resp = client.get(f"/api/jobs/{fresh['id']}/takes")
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "no_takes"


def test_a_succeeded_job_without_takes_has_none_to_choose(app_env):
    _cfg, ctx, client, _, _ = app_env
    fresh = upload(client).get_json()
    with ctx.sessions.begin() as s:
        s.execute(update(Job).where(Job.id == fresh["id"]).values(state=SUCCEEDED))
    resp = client.post(f"/api/jobs/{fresh['id']}/takes/1")
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "no_takes"


def test_only_the_owner_sees_and_chooses_takes(app_env, monkeypatch):
    cfg, ctx, _, _behaviour, start_worker = app_env
    keyed = create_context(dataclasses.replace(cfg, api_keys=(KEY, OTHER_KEY)))
    client = create_api(keyed).test_client()
    mine, theirs = {"X-API-Key": KEY}, {"X-API-Key": OTHER_KEY}
    resp = upload(client, headers=mine)
    assert resp.status_code == 201
    start_worker()
    job = wait_for(ctx, resp.get_json()["id"], SUCCEEDED)
    assert job.owner == key_fingerprint(KEY)
    assert client.get(f"/api/jobs/{job.id}/takes").status_code == 401
    for call in (client.get(f"/api/jobs/{job.id}/takes", headers=theirs),
                 client.post(f"/api/jobs/{job.id}/takes/1", headers=theirs)):
        assert call.status_code == 404 and call.get_json()["error"]["code"] == "job_not_found"
    assert client.post(f"/api/jobs/{job.id}/takes/1", headers=mine).status_code == 202
    keyed.engine.dispose()


# --------------------------------------------------------------------------- the dashboard


def test_the_takes_section_plays_each_take_and_says_why(app_env):
    cfg, ctx, _, _, _ = app_env
    job = run_to_success(app_env)
    box, view, choice, button = takes_panel.TakesPanel.values(cfg, job, ctx.links)
    assert box["visible"] is True and button["interactive"] is True
    assert view.count("<audio controls") == 3
    for n in (1, 2, 3):
        assert f"/api/jobs/{job.id}/files/take{n}_mix.mp3?exp=" in view
    assert "Take 2 of 3 is the song — chosen by the checks: take 2: fewest word errors" in view
    assert "word error rate 4 %" in view and "pitch accuracy 98 %" in view and "score 0.93" in view
    assert "phrases sung again: 1, 2" in view and "every phrase sung" in view
    assert 'class="tmik-take tmik-take-chosen" data-take="2"' in view
    assert choice["value"] == 2 and [c[1] for c in choice["choices"]] == [1, 2, 3]
    assert str(cfg.shared_data_dir) not in view
    # The downloads say what the take files are.
    assert ui.ARTIFACTS["take2_mix.mp3"].startswith("take 2 over the background")
    queued = upload(create_api(ctx).test_client()).get_json()
    hidden = takes_panel.TakesPanel.values(cfg, jobs.get_job(ctx.sessions, queued["id"])[0], ctx.links)
    assert hidden[0]["visible"] is False and hidden[1] == ""


def test_use_this_take_requeues_the_job_and_the_dashboard_shows_it_running(app_env):
    cfg, ctx, _, _behaviour, _ = app_env
    job = run_to_success(app_env)
    blocks = ui.build_ui(ctx)
    handlers = {f.fn.__name__: f.fn for f in blocks.fns.values() if f.fn is not None}
    out = handlers["use_take"](job.id, 1, "", None)
    status = out[1]
    assert 'data-state="queued"' in status or 'data-state="running"' in status
    takes_out = out[-9:-5]  # the Takes section's 4 outputs; the Versions section's 5 follow
    assert "Remixing take 1 (your choice)" in takes_out[1] and takes_out[3]["interactive"] is False
    done = wait_for(ctx, job.id, SUCCEEDED)
    assert takes_json(cfg, done)["chosen"] == 1
    after = handlers["use_take"](None, 1, "", None)  # no job selected: a warning, nothing shown
    assert after[0]["visible"] is False
    view = takes_panel.TakesPanel.values(cfg, done, ctx.links)[1]
    assert "Take 1 of 3 is the song — chosen by you." in view


def test_use_take_refusals_are_plain_messages(app_env):
    cfg, ctx, _client, _, _ = app_env
    job = run_to_success(app_env)
    assert takes_panel.use_take(cfg, ctx.sessions, job.id, 7) == (False, (f"job {job.id} has no take 7; its takes "
                                                                          "are 1, 2, 3"))
    assert takes_panel.use_take(cfg, ctx.sessions, job.id, None) == (False, "Choose a take first.")
    assert takes_panel.use_take(cfg, ctx.sessions, "00000000-0000-4000-8000-000000000000", 1)[0] is False
    ok, message = takes_panel.use_take(cfg, ctx.sessions, job.id, 3)
    assert ok and "Take 3 chosen" in message
    ok, message = takes_panel.use_take(cfg, ctx.sessions, job.id, 2)  # already queued for take 3
    assert not ok and "queued" in message


def test_create_and_rerun_forms_carry_takes():
    raw = ui.form_params(0.5, 0.5, "pop_bright", "", "", -14, "auto", "auto", 4.0)
    assert raw["takes"] == 4.0
    from app import submit

    assert submit.parse_params(raw, [s["name"] for s in STYLES])["takes"] == 4
    assert "takes" not in ui.form_params(0.5, 0.5, "pop_bright", "", "", -14)
    assert ui.fmt_params({"style": "pop_bright", "takes": 1}).startswith("pop_bright · 1 take ·")


# --------------------------------------------------------------------------- the CLI


def test_cli_refuses_bad_takes_and_folders_without_takes(tmp_path: Path, capsys):
    assert cli.main(["generate", str(tmp_path / "in.wav"), "--out", str(tmp_path / "o"), "--takes", "6"]) == 2
    assert "--takes must be from 1 to 5, got 6" in capsys.readouterr().err
    assert cli.main(["take", str(tmp_path), "1"]) == 2
    assert "has no takes.json" in capsys.readouterr().err


def test_cli_take_remixes_the_chosen_take_over_the_kept_background(tmp_path: Path, monkeypatch, capsys):
    from tmik_make_vocal_mix import render

    out = tmp_path / "song"
    (out / "melody").mkdir(parents=True)
    sf.write(out / "melody" / "background.wav", np.zeros(800, dtype=np.float32), 8000)
    (out / "melody" / "melody.json").write_text("{}")
    (out / "takes.json").write_text(json.dumps({"chosen": 2, "chosen_by": "checks", "reason": "r",
                                                "takes": [{"take": 1}, {"take": 2}]}))
    (out / "qc.json").write_text(json.dumps({"style": "ballad", "target_lufs": -12.0}))
    calls = []

    def select_take(background, melody, out_dir, take, *, style, target_lufs, progress=None, **_):
        calls.append((Path(background), Path(melody), Path(out_dir), take, style, target_lufs))
        (Path(out_dir) / "qc.json").write_text(json.dumps({"pitch_accuracy": 0.97, "word_error_rate": 0.1,
                                                           "integrated_lufs": -12.0}))
        progress("mix", 1.0)
        return type("Result", (), {"outputs": {"qc": Path(out_dir) / "qc.json"}})()

    monkeypatch.setattr(cli, "TaskProcess", InProcessTasks)
    monkeypatch.setattr(render, "select_take", select_take, raising=False)
    assert cli.main(["take", str(out), "3", "--no-progress"]) == 2
    assert "has no take 3; its takes are 1, 2" in capsys.readouterr().err
    assert cli.main(["take", str(out), "1", "--no-progress"]) == 0, capsys.readouterr().err
    assert "take 1 is the song now (it was take 2)" in capsys.readouterr().err
    assert calls == [(out.resolve() / "melody" / "background.wav", out.resolve() / "melody" / "melody.json",
                      out.resolve(), 1, "ballad", -12.0)]
    assert cli.main(["take", str(out), "1", "--style", "choir", "--target-lufs", "-16", "--no-progress"]) == 0
    assert calls[-1][4:] == ("choir", -16.0)


def test_cli_generate_passes_takes_to_the_render(tmp_path: Path, monkeypatch, capsys):
    from tmik_make_vocal_mix import render

    seen = {}

    def run_render(background, melody, out_dir, **kwargs):
        seen.update(kwargs)
        raise render_error()

    def render_error():
        from tmik_common.errors import CodedError

        return CodedError("silent_audio", "stopped here by the test")

    def run_generation(background, out, **_):
        seen["background"] = Path(background)

    from tmik_bgm_conditional_melody_generation import generate as melody_generate

    track = tmp_path / "in.wav"
    sf.write(track, 0.1 * np.sin(np.arange(8000 * 6) / 8000 * 2 * np.pi * 220).astype(np.float32), 8000)
    monkeypatch.setattr(cli, "TaskProcess", InProcessTasks)
    monkeypatch.setattr(render, "run_render", run_render)
    monkeypatch.setattr(melody_generate, "run_generation", run_generation)
    monkeypatch.setattr(melody_generate, "checkpoint_from_env", lambda: None)
    assert cli.main(["generate", str(track), "--out", str(tmp_path / "o"), "--takes", "2", "--no-progress"]) == 2
    assert "stopped here by the test [silent_audio]" in capsys.readouterr().err
    assert seen["takes"] == 2
    # The working copy is kept beside the melody, for a later ``take``.
    assert seen["background"] == (tmp_path / "o").resolve() / "melody" / "background.wav"
    assert seen["background"].is_file()
    seen.clear()
    assert cli.main(["generate", str(track), "--out", str(tmp_path / "p"), "--no-progress"]) == 2
    assert "takes" not in seen  # left out: the render's default
