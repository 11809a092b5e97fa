"""Versions of a song (issue 15, first slice): parent / root / version of every job, the restyle edit that keeps
the melody and runs only the vocal stage, GET .../versions, the dashboard's Versions section and
``python -m app.cli restyle``.

The services are the stand-ins of tests/fake_services.py behind their real task HTTP edge; the database is
SQLite, migrated by Alembic as the app does.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import test_takes_app
from alembic import command
from alembic.config import Config as AlembicConfig
from fake_services import InProcessTasks
from sqlalchemy import inspect, text, update
from test_takes_app import KEY, OTHER_KEY, run_to_success, upload, wait_for

from app import cli, db, jobs, ui, versions_panel
from app.api import create_api
from app.context import create_context
from app.models import RUNNING, SUCCEEDED, Job

UNKNOWN = "00000000-0000-4000-8000-000000000000"
# The app over the fake services, as the takes tests run it (fixtures: the shared data folder, the app).
services = test_takes_app.services
app_env = test_takes_app.app_env


def err(resp) -> dict:
    return resp.get_json()["error"]


def restyle(client, job_id: str, headers=None, **body):
    return client.post(f"/api/jobs/{job_id}/edits", json={"kind": "restyle", **body}, headers=headers or {})


# --------------------------------------------------------------------------- the schema


def _alembic(engine, fn, revision: str) -> None:
    cfg = AlembicConfig(str(db.ALEMBIC_INI))
    cfg.attributes["configure_logger"] = False
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        fn(cfg, revision)


PG_URL = os.environ.get("TEST_DATABASE_URL")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(
    not PG_URL, reason="TEST_DATABASE_URL is not set (PostgreSQL integration tests)"))])
def empty_database(request, tmp_path: Path):
    """An engine on an empty database: SQLite in a file, or the PostgreSQL of TEST_DATABASE_URL (emptied)."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'jobs.db'}" if request.param == "sqlite" else str(PG_URL))
    if request.param == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS job_events, jobs, alembic_version CASCADE"))
    yield engine
    engine.dispose()


def test_the_migration_adds_the_version_columns_and_goes_back_keeping_the_history(empty_database):
    engine = empty_database
    _alembic(engine, command.upgrade, "0001")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO jobs (id, created_at, updated_at, state, stage, progress, stages, params, "
                          "input_file, input_name, artifacts, checks, warnings, attempts, cancel_requested) VALUES "
                          "('old', '2026-01-01', '2026-01-01', 'succeeded', 'succeeded', 1, '{}', '{}', 'x', 'x', "
                          "'{}', '{}', '{}', 1, false)"))
        conn.execute(text("INSERT INTO job_events (job_id, at, state, stage, message) VALUES "
                          "('old', '2026-01-01', 'queued', 'queued', 'job created')"))
    _alembic(engine, command.upgrade, "head")
    columns = {c["name"] for c in inspect(engine).get_columns("jobs")}
    assert {"parent_id", "root_id", "version"} <= columns
    assert {"ix_jobs_parent_id", "ix_jobs_root_id"} <= {i["name"] for i in inspect(engine).get_indexes("jobs")}
    (fk,) = inspect(engine).get_foreign_keys("jobs")
    assert fk["constrained_columns"] == ["parent_id"] and fk["referred_table"] == "jobs"
    with engine.begin() as conn:
        # A job from before is the original of its own family.
        assert conn.execute(text("SELECT root_id, version, parent_id FROM jobs")).one() == ("old", 1, None)
        conn.execute(text("INSERT INTO jobs SELECT id || '-2', created_at, updated_at, started_at, finished_at, "
                          "state, stage, progress, stages, params, input_file, input_name, artifacts, checks, "
                          "warnings, error_code, error_message, attempts, lease_owner, lease_expires_at, "
                          "cancel_requested, service_task, owner, 'old', 'old', 2 FROM jobs"))
    with engine.begin() as conn:
        # Deleting a parent leaves its children, without a parent.
        conn.execute(text("DELETE FROM jobs WHERE id = 'old'"))
        assert conn.execute(text("SELECT id, parent_id, root_id FROM jobs")).one() == ("old-2", None, "old")
        conn.execute(text("INSERT INTO job_events (job_id, at, state, stage, message) VALUES "
                          "('old-2', '2026-01-01', 'queued', 'queued', 'made')"))
    _alembic(engine, command.downgrade, "0001")
    assert not {"parent_id", "root_id", "version"} & {c["name"] for c in inspect(engine).get_columns("jobs")}
    with engine.connect() as conn:
        # SQLite's table copy would have deleted the events through their cascade: they are kept.
        assert conn.execute(text("SELECT job_id, message FROM job_events")).all() == [("old-2", "made")]
    _alembic(engine, command.upgrade, "head")
    assert {"parent_id", "root_id", "version"} <= {c["name"] for c in inspect(engine).get_columns("jobs")}


# --------------------------------------------------------------------------- re-runs are versions


def test_a_rerun_is_the_next_version_of_the_song(app_env):
    _, ctx, client, _, _ = app_env
    first = upload(client).get_json()
    assert (first["version"], first["parent_id"], first["root_id"]) == (1, None, first["id"])
    second = client.post(f"/api/jobs/{first['id']}/rerun", json={"style": "low_warm"}).get_json()
    third = client.post(f"/api/jobs/{second['id']}/rerun", json={"seed": 5}).get_json()
    fourth = client.post(f"/api/jobs/{first['id']}/rerun", json={}).get_json()
    assert [(j["version"], j["parent_id"], j["root_id"]) for j in (second, third, fourth)] == [
        (2, first["id"], first["id"]), (3, second["id"], first["id"]), (4, first["id"], first["id"])]
    assert second["params"]["edit"] == {"kind": "rerun", "from": first["id"],
                                        "changes": {"style": {"from": "pop_bright", "to": "low_warm"}}}
    events = [e["message"] for e in client.get(f"/api/jobs/{first['id']}").get_json()["events"]]
    assert f"version 2 made from this job: re-run (style low_warm) (job {second['id']})" in events
    assert f"job created as version 3, made from job {second['id']}: re-run (seed 5)" in \
        [e["message"] for e in client.get(f"/api/jobs/{third['id']}").get_json()["events"]]
    assert jobs.get_job(ctx.sessions, third["id"])[0].root_id == first["id"]


# --------------------------------------------------------------------------- restyle


def test_restyle_keeps_the_melody_and_runs_only_the_vocal_stage(app_env):
    cfg, ctx, client, behaviour, _ = app_env
    parent = run_to_success(app_env, takes="2", target_lufs="-12")
    resp = restyle(client, parent.id, style="low_warm", target_lufs=-10)
    assert resp.status_code == 201, resp.get_json()
    child = resp.get_json()
    assert resp.headers["Location"] == f"/api/jobs/{child['id']}"
    assert (child["version"], child["parent_id"], child["root_id"]) == (2, parent.id, parent.id)
    assert child["params"]["style"] == "low_warm" and child["params"]["target_lufs"] == -10.0
    assert child["params"]["seed"] == parent.params["seed"] and child["params"]["takes"] == 2
    assert child["params"]["edit"] == {"kind": "restyle", "from": parent.id, "changes": {
        "style": {"from": "pop_bright", "to": "low_warm"}, "target_lufs": {"from": -12.0, "to": -10.0}}}
    done = wait_for(ctx, child["id"], SUCCEEDED)
    for name in ("melody.json", "melody.mid", "analysis.json"):
        mine, theirs = (cfg.shared_data_dir / done.artifacts[name]), (cfg.shared_data_dir / parent.artifacts[name])
        assert mine.parent == cfg.shared_data_dir / "melody_results" / done.id
        assert mine.read_bytes() == theirs.read_bytes() and not mine.samefile(theirs)
    assert done.input_file == f"input/{done.id}/background.wav"
    assert behaviour.submissions[("generate", done.id)] == 0  # no melody written again
    assert behaviour.submissions[("generate", parent.id)] == 1
    render = [p for name, job_id, p in behaviour.params if name == "render" and job_id == done.id]
    assert render == [{"style": "low_warm", "seed": parent.params["seed"], "target_lufs": -10.0, "takes": 2}]
    (rendered,) = [i for name, job_id, i in behaviour.inputs if name == "render" and job_id == done.id]
    assert rendered["melody"] == done.artifacts["melody.json"]
    assert done.stages["melody"]["detail"] == f"melody kept from job {parent.id}"
    assert "melody stage started" not in [e["message"] for e in jobs.get_job(ctx.sessions, done.id,
                                                                             with_events=True)[1]]
    parent_events = [e["message"] for e in client.get(f"/api/jobs/{parent.id}").get_json()["events"]]
    assert (f"version 2 made from this job: restyle (style low_warm, target_lufs -10.0) (job {done.id})"
            in parent_events)
    assert client.get(f"/api/jobs/{done.id}/files/mix.wav").status_code == 200


def test_edits_are_refused_with_the_reason(app_env):
    _, ctx, client, _, _ = app_env
    assert err(restyle(client, UNKNOWN))["code"] == "job_not_found"
    queued = upload(client).get_json()
    resp = restyle(client, queued["id"], style="low_warm")
    assert resp.status_code == 409 and err(resp)["code"] == "job_not_succeeded" and "queued" in err(resp)["message"]
    with ctx.sessions.begin() as s:
        s.execute(update(Job).where(Job.id == queued["id"]).values(state=RUNNING))
    resp = restyle(client, queued["id"])
    assert resp.status_code == 409 and "is running" in err(resp)["message"]
    done = run_to_success(app_env)
    resp = client.post(f"/api/jobs/{done.id}/edits", json={"kind": "remix"})
    assert resp.status_code == 422 and err(resp)["code"] == "invalid_param" and err(resp)["field"] == "kind"
    assert "one of restyle" in err(resp)["message"]
    resp = restyle(client, done.id, style="opera_bass")
    assert resp.status_code == 422 and err(resp)["code"] == "unknown_style" and "low_warm" in err(resp)["message"]
    for lufs in (-40, -5, "loud"):
        resp = restyle(client, done.id, target_lufs=lufs)
        assert resp.status_code == 422 and err(resp)["code"] == "invalid_param", lufs
        assert err(resp)["field"] == "target_lufs"
    resp = restyle(client, done.id, seed=3)
    assert resp.status_code == 422 and err(resp)["code"] == "unknown_param" and err(resp)["field"] == "seed"
    assert client.post(f"/api/jobs/{done.id}/edits", data={"kind": "restyle"}).status_code == 415
    resp = client.post(f"/api/jobs/{done.id}/edits", data="{", content_type="application/json")
    assert resp.status_code == 400 and err(resp)["code"] == "invalid_json"
    resp = client.post(f"/api/jobs/{done.id}/edits", json=["restyle"])
    assert resp.status_code == 400 and err(resp)["code"] == "invalid_body"
    # Nothing was made by the refusals.
    assert client.get(f"/api/jobs/{done.id}/versions").get_json()["versions"][0]["id"] == done.id
    assert len(client.get(f"/api/jobs/{done.id}/versions").get_json()["versions"]) == 1


def test_versions_are_listed_in_order_and_a_child_outlives_its_parent(app_env):
    cfg, ctx, client, _, _ = app_env
    parent = run_to_success(app_env)
    child = restyle(client, parent.id, style="low_warm").get_json()
    rerun = client.post(f"/api/jobs/{parent.id}/rerun", json={"randomness": 0.9}).get_json()
    body = client.get(f"/api/jobs/{rerun['id']}/versions").get_json()
    assert body["root_id"] == parent.id
    assert [(v["version"], v["id"], v["parent_id"]) for v in body["versions"]] == [
        (1, parent.id, None), (2, child["id"], parent.id), (3, rerun["id"], parent.id)]
    assert [v["edit"] and v["edit"]["kind"] for v in body["versions"]] == [None, "restyle", "rerun"]
    assert body["versions"][1]["edit"]["changes"] == {"style": {"from": "pop_bright", "to": "low_warm"}}
    assert "edit" not in body["versions"][1]["params"] and body["versions"][1]["params"]["style"] == "low_warm"
    assert client.get(f"/api/jobs/{UNKNOWN}/versions").status_code == 404
    doc = client.get("/api/openapi.json").get_json()
    assert {"201", "404", "409", "422"} <= set(doc["paths"]["/api/jobs/{job_id}/edits"]["post"]["responses"])
    assert "versions" in doc["components"]["schemas"]["Versions"]["properties"]

    wait_for(ctx, child["id"], SUCCEEDED)
    wait_for(ctx, rerun["id"], SUCCEEDED)
    assert client.delete(f"/api/jobs/{parent.id}").status_code == 204
    assert not (cfg.shared_data_dir / "melody_results" / parent.id).exists()
    kept = client.get(f"/api/jobs/{child['id']}").get_json()
    assert kept["parent_id"] is None and kept["root_id"] == parent.id and kept["version"] == 2
    for name in ("input", "melody.json", "mix.wav"):
        assert client.get(f"/api/jobs/{child['id']}/files/{name}").status_code == 200, name
    body = client.get(f"/api/jobs/{child['id']}/versions").get_json()
    assert [v["version"] for v in body["versions"]] == [2, 3]
    # The child's own melody and input carry a further edit.
    grandchild = restyle(client, child["id"], style="pop_bright").get_json()
    assert grandchild["version"] == 4 and grandchild["parent_id"] == child["id"]
    assert wait_for(ctx, grandchild["id"], SUCCEEDED).params["style"] == "pop_bright"


def test_only_the_owner_edits_and_lists_versions(app_env):
    cfg, ctx, _, _, start_worker = app_env
    keyed = create_context(dataclasses.replace(cfg, api_keys=(KEY, OTHER_KEY)))
    client = create_api(keyed).test_client()
    mine, theirs = {"X-API-Key": KEY}, {"X-API-Key": OTHER_KEY}
    resp = upload(client, headers=mine)
    start_worker()
    job = wait_for(ctx, resp.get_json()["id"], SUCCEEDED)
    for call in (restyle(client, job.id, headers=theirs, style="low_warm"),
                 client.get(f"/api/jobs/{job.id}/versions", headers=theirs)):
        assert call.status_code == 404 and err(call)["code"] == "job_not_found"
    assert restyle(client, job.id, style="low_warm").status_code == 401
    child = restyle(client, job.id, headers=mine, style="low_warm").get_json()
    assert jobs.get_job(ctx.sessions, child["id"])[0].owner == job.owner
    assert len(client.get(f"/api/jobs/{job.id}/versions", headers=mine).get_json()["versions"]) == 2
    keyed.engine.dispose()


# --------------------------------------------------------------------------- the dashboard


def test_the_versions_section_lists_plays_and_makes_a_version(app_env):
    cfg, ctx, client, _, _ = app_env
    parent = run_to_success(app_env)
    blocks = ui.build_ui(ctx)
    handlers = {f.fn.__name__: f.fn for f in blocks.fns.values() if f.fn is not None}
    new_id, page = handlers["make_version"](parent.id, "low_warm", -11, None)
    assert page == 1
    child = wait_for(ctx, new_id, SUCCEEDED)
    assert child.parent_id == parent.id and child.params["style"] == "low_warm"
    assert child.params["target_lufs"] == -11.0
    assert child.artifacts["melody.json"] == f"melody_results/{child.id}/melody.json"
    box, view, style, lufs, button = versions_panel.VersionsPanel.values(cfg, ctx.sessions, child, ctx.links)
    assert box["visible"] is True and button["interactive"] is True
    assert style["value"] == "low_warm" and lufs == -11.0
    assert "Version 1 · succeeded · the original" in view
    assert "Version 2 · succeeded · restyle (style low_warm, target_lufs -11.0) — shown" in view
    # The stand-in vocal service writes mix.wav only; the real one writes mix.mp3 too, which is played then.
    assert view.count("<audio controls") == 2 and f"/api/jobs/{child.id}/files/mix.wav?exp=" in view
    assert str(cfg.shared_data_dir) not in view
    # Refusals come back as messages, nothing is made.
    assert versions_panel.make_version(cfg, ctx.sessions, None, "low_warm", -14) == (None, "Select a job first.")
    new, message = versions_panel.make_version(cfg, ctx.sessions, parent.id, "low_warm", -50)
    assert new is None and "target_lufs" in message
    queued = upload(client).get_json()
    new, message = versions_panel.make_version(cfg, ctx.sessions, queued["id"], "low_warm", -14)
    assert new is None and "has succeeded" in message
    assert not isinstance(handlers["make_version"](queued["id"], "low_warm", -14, None)[0], str)


# --------------------------------------------------------------------------- the CLI


def test_cli_restyle_copies_the_melody_and_sings_only_the_voice(tmp_path: Path, monkeypatch, capsys):
    from tmik_make_vocal_mix import render

    song = tmp_path / "song"
    (song / "melody").mkdir(parents=True)
    sf.write(song / "melody" / "background.wav", np.zeros(800, dtype=np.float32), 8000)
    for name, body in (("melody.json", '{"notes": []}'), ("melody.mid", "MThd"), ("analysis.json", "{}")):
        (song / "melody" / name).write_text(body)
    (song / "takes.json").write_text(json.dumps({"chosen": 1, "takes": [{"take": 1, "seed": 41},
                                                                         {"take": 2, "seed": 42}]}))
    (song / "qc.json").write_text(json.dumps({"style": "pop_bright", "target_lufs": -12.0}))
    calls = []

    def run_render(background, melody, out_dir, *, style, seed, target_lufs, progress=None, **kwargs):
        calls.append((Path(background), Path(melody), Path(out_dir), style, seed, target_lufs, kwargs))
        (Path(out_dir) / "qc.json").write_text(json.dumps({"pitch_accuracy": 0.97, "integrated_lufs": -12.0}))
        progress("mix", 1.0)
        return type("Result", (), {"outputs": {"qc": Path(out_dir) / "qc.json"}})()

    def no_generation(*_args, **_kwargs):
        raise AssertionError("restyle wrote a melody")

    from tmik_bgm_conditional_melody_generation import generate as melody_generate

    monkeypatch.setattr(cli, "TaskProcess", InProcessTasks)
    monkeypatch.setattr(render, "run_render", run_render)
    monkeypatch.setattr(melody_generate, "run_generation", no_generation)
    out = tmp_path / "v2"
    assert cli.main(["restyle", str(song), "--style", "opera_bass", "--out", str(out), "--no-progress"]) == 2
    assert "opera_bass" in capsys.readouterr().err
    assert cli.main(["restyle", str(song), "--style", "low_warm", "--out", str(song), "--no-progress"]) == 2
    assert cli.main(["restyle", str(tmp_path), "--style", "low_warm", "--out", str(out), "--no-progress"]) == 2
    assert "has no melody/melody.json" in capsys.readouterr().err
    assert cli.main(["restyle", str(song), "--style", "low_warm", "--out", str(out), "--no-progress"]) == 0, \
        capsys.readouterr().err
    assert "sung as low_warm" in capsys.readouterr().err
    for name in cli.MELODY_FILES:
        assert (out / "melody" / name).read_bytes() == (song / "melody" / name).read_bytes()
    assert calls == [(out.resolve() / "melody" / "background.wav", out.resolve() / "melody" / "melody.json",
                      out.resolve(), "low_warm", 41, -12.0, {"takes": 2})]
    assert cli.main(["restyle", str(song), "--style", "low_warm", "--target-lufs", "-9", "--out",
                     str(tmp_path / "v3"), "--no-progress"]) == 0
    assert calls[-1][5] == -9.0


@pytest.mark.parametrize("lufs", ["-31", "-5"])
def test_cli_restyle_refuses_a_loudness_out_of_range(tmp_path: Path, capsys, lufs):
    song = tmp_path / "song"
    (song / "melody").mkdir(parents=True)
    for name in cli.MELODY_FILES:
        (song / "melody" / name).write_text("x")
    assert cli.main(["restyle", str(song), "--style", "low_warm", "--target-lufs", lufs, "--out",
                     str(tmp_path / "o")]) == 2
    assert "--target-lufs must be from -30 to -6" in capsys.readouterr().err
