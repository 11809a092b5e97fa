"""The web UI without a browser: its pictures (app/plots.py), its data functions (app/ui.py) and the
app's dispatcher between the REST API and the UI (app/app.py)."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from app import config as app_config
from app import jobs, plots, ui
from app.context import create_context
from app.models import CANCELLED, FAILED, RUNNING, SUCCEEDED, Job, utcnow

# What the melody service wrote for a 31 s four-chord track (analysis.json and melody.json, trimmed).
ANALYSIS = {
    "duration": 30.8, "tempo": 99.38, "time_signature": "4/4", "key": "C major",
    "beats": [round(0.488 + 0.6 * i, 3) for i in range(49)],
    "downbeats": [round(0.488 + 2.4 * i, 3) for i in range(13)],
    "chords": [[0.0, 0.488, "C:sus4"], [0.488, 2.891, "C:maj"], [2.891, 5.294, "A:min"], [5.294, 7.686, "F:maj"],
               [7.686, 10.089, "G:maj"], [10.089, 12.5, "C:maj"], [12.5, 14.9, "A:min7"], [14.9, 17.3, "F:maj7"],
               [17.3, 19.7, "G:7"], [19.7, 29.2, "C:maj"], [29.2, 30.8, "N"]],
    "sections": [[0.0, 10.089, "A"], [10.089, 19.7, "B"], [19.7, 30.8, "A"]],
}
MELODY = {
    "key": "C major", "time_signature": "4/4", "tempo": 99.38, "model": "getdiff-getdiff_default", "seed": 3,
    "randomness": 0.5, "vocal_range": [57, 76],
    "phrases": [[0.4876, 5.2941], [5.2941, 10.0891]],
    "notes": [{"start": 0.4876, "end": 1.6951, "pitch": 72, "syllable": "Hel"},
              {"start": 2.2988, "end": 2.8909, "pitch": 67, "syllable": "lo"},
              {"start": 2.8909, "end": 3.5062, "pitch": 69, "syllable": "my"},
              {"start": 3.5062, "end": 4.7, "pitch": 71, "syllable": "friend"},
              {"start": 5.2941, "end": 6.0, "pitch": 65, "syllable": "Good"},
              {"start": 6.0, "end": 6.6, "pitch": 65, "syllable": "-"},
              {"start": 6.6, "end": 8.9, "pitch": 64, "syllable": "bye"}],
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png(path: Path) -> Image.Image:
    assert path.is_file() and path.stat().st_size > 5000
    assert path.read_bytes()[:8] == PNG_MAGIC
    return Image.open(path)


# --------------------------------------------------------------------------- plots


def test_analysis_png_with_waveform(tmp_path):
    sr = 8000
    t = np.arange(int(30.8 * sr)) / sr
    samples = (0.5 * np.sin(2 * np.pi * 220 * t) * np.exp(-3 * (t % 0.6))).astype(np.float32)
    out = plots.analysis_png(ANALYSIS, tmp_path / "a" / "analysis.png", samples, sr, title="song.wav")
    img = _png(out)
    assert img.width >= 900 and img.height >= 300
    # The picture is not blank: many colours (waveform, beat lines, chord boxes).
    assert len(img.convert("RGB").getcolors(1 << 20) or []) > 20
    assert not list(tmp_path.glob("a/.*tmp*"))  # written atomically


def test_analysis_png_without_audio_and_with_sparse_analysis(tmp_path):
    out = plots.analysis_png({"duration": 12.0, "beats": [], "downbeats": [], "chords": []}, tmp_path / "x.png")
    _png(out)


def test_piano_roll_png(tmp_path):
    out = plots.piano_roll_png(MELODY, tmp_path / "melody.png", chords=ANALYSIS["chords"])
    img = _png(out)
    assert img.width >= 900
    empty = plots.piano_roll_png({"notes": []}, tmp_path / "empty.png")
    assert empty.read_bytes()[:8] == PNG_MAGIC


def test_chord_and_note_names():
    assert plots.chord_display("G:maj") == "G"
    assert plots.chord_display("E:min") == "Em"
    assert plots.chord_display("A:min7") == "Am7"
    assert plots.chord_display("N") == "N.C."
    assert plots.note_name(60) == "C4" and plots.note_name(69) == "A4" and plots.note_name(57) == "A3"


def test_envelope_keeps_peaks():
    x = np.zeros(10_000, dtype=np.float32)
    x[1234] = 0.9
    x[5000] = -0.7
    low, high = plots.envelope(x, points=100)
    assert len(low) == len(high) == 100
    assert high.max() == pytest.approx(0.9) and low.min() == pytest.approx(-0.7)


# --------------------------------------------------------------------------- formatting


def test_fmt_duration():
    assert ui.fmt_duration(None) == ""
    assert ui.fmt_duration(4.24) == "4.2 s"
    assert ui.fmt_duration(75) == "1 min 15 s"
    assert ui.fmt_duration(3725) == "1 h 02 min"


def test_fmt_params():
    text = ui.fmt_params({"style": "ballad", "seed": 7, "sensitivity": 0.5, "randomness": 0.25,
                          "target_lufs": -16.0, "lyrics": "[Verse]\nOne line\nTwo line\n"})
    assert text == "ballad · seed 7 · sens 0.50 · rand 0.25 · -16 LUFS · lyrics: 2 lines"
    assert ui.fmt_params({"style": "choir", "seed": 1}).endswith("vocalise")
    assert ui.fmt_params({"style": "choir", "tempo": 108.0, "time_signature": "6/8"}) == "choir · 108 BPM · 6/8 · vocalise"
    assert ui.fmt_params({"style": "choir", "tempo": "double"}) == "choir · double tempo · vocalise"
    assert ui.fmt_params({"style": "choir", "takes": 4}) == "choir · 4 takes · vocalise"


CHECKS = {"pitch_accuracy": 0.9712, "voiced_fraction": 0.91, "integrated_lufs": -14.04, "target_lufs": -14.0,
          "true_peak_dbtp": -1.21, "clipped_samples": 0,
          "passed": {"pitch_accuracy": True, "loudness": True, "true_peak": True, "no_clipping": True},
          "all_passed": True}


def test_checks_formatting():
    assert ui.fmt_checks_short(CHECKS) == "pitch 97% ✓ · -14.0 LUFS ✓ · peak -1.2 dBTP ✓"
    assert ui.fmt_checks_short({}) == ""
    md = ui.checks_markdown(CHECKS)
    assert "| Pitch accuracy | 97.1 % |" in md and "-14.04 LUFS" in md and "All checks passed" in md
    failing = dict(CHECKS, passed=dict(CHECKS["passed"], loudness=False), all_passed=False, integrated_lufs=-12.0)
    md = ui.checks_markdown(failing)
    assert "✗ fail" in md and "did not pass" in md
    words = {"word_error_rate": 0.12, "intelligibility_seconds": 20.0, "passed": {"intelligibility": True}}
    assert "WER 12% ✓" in ui.fmt_checks_short(words)
    assert "| Word error rate | 12.0 % | ≤ 25 % (20 s sung, phrase by phrase) | ✓ pass |" in ui.checks_markdown(words)
    assert "No automatic checks" in ui.checks_markdown(None)


def test_paging():
    assert ui.page_count(0) == 1 and ui.page_count(20) == 1 and ui.page_count(21) == 2
    assert ui.clamp_page(0, 230) == 1 and ui.clamp_page(99, 230) == 12 and ui.clamp_page("3", 230) == 3
    assert ui.page_label(12, 230) == "Page 12 of 12 · jobs 221–230 of 230 (newest first)"
    assert "No jobs yet" in ui.page_label(1, 0)


def test_style_choices_and_info():
    styles = [{"name": "pop_bright", "description": "Bright pop lead.", "vocal_range": [55, 72]},
              {"name": "low_warm", "description": "Low and warm.", "vocal_range": [43, 60]}]
    assert ui.style_choices(styles) == [("pop_bright — Bright pop lead.", "pop_bright"),
                                        ("low_warm — Low and warm.", "low_warm")]
    assert "G2–C4" in ui.style_info(styles, "low_warm")
    down = ui.style_choices(None)
    assert down[0][1] == "pop_bright" and "not reachable" in down[0][0]
    assert "not reachable" in ui.style_info(None, "pop_bright")


def test_form_params_feed_parse_params():
    from app.submit import SubmitError, parse_params

    raw = ui.form_params(0.3, 0.8, "ballad", " 42 ", "[Chorus]\nLa la la", -16)
    params = parse_params(raw)
    assert params["seed"] == 42 and params["style"] == "ballad" and params["target_lufs"] == -16
    assert params["sensitivity"] == 0.3 and params["lyrics"].startswith("[Chorus]")
    assert isinstance(parse_params(ui.form_params(0.5, 0.5, None, "", "", None))["seed"], int)  # blank: random
    # Tempo and time signature: automatic leaves them out; a choice or a typed BPM is kept.
    automatic = parse_params(ui.form_params(0.5, 0.5, None, "", "", None, "auto", "auto"))
    assert "tempo" not in automatic and "time_signature" not in automatic
    assert "tempo" not in parse_params(ui.form_params(0.5, 0.5, None, "", "", None, "Automatic", None))
    chosen = parse_params(ui.form_params(0.5, 0.5, None, "", "", None, "half", "3/4"))
    assert chosen["tempo"] == "half" and chosen["time_signature"] == "3/4"
    assert parse_params(ui.form_params(0.5, 0.5, None, "", "", None, " 126 bpm", "12/8"))["tempo"] == 126.0
    with pytest.raises(SubmitError) as refused:
        parse_params(ui.form_params(0.5, 0.5, None, "", "", None, "fast", "auto"))
    assert refused.value.field == "tempo" and "got 'fast'" in refused.value.message


def test_tempo_choices_offer_the_levels_the_analysis_weighed():
    from app import tempo_form

    levels = [{"bpm": 107.66, "score": 0.62, "level": "chosen"}, {"bpm": 53.83, "score": 0.3, "level": "half"},
              {"bpm": 322.9, "score": 0.08, "level": "triple"}]  # over 300 BPM: not a tempo one can ask for
    choices = tempo_form.tempo_choices(levels)
    assert [v for _, v in choices] == ["auto", "half", "double", "107.7", "53.8"]
    assert choices[3][0] == "107.7 BPM (detected, score 0.62)" and choices[4][0] == "53.8 BPM (half time, score 0.30)"
    assert tempo_form.tempo_choices(None, "96")[-1] == ("96 BPM", "96")  # a job's own BPM stays selectable
    text = tempo_form.analysis_markdown({"tempo": 107.66, "time_signature": "4/4", "tempo_candidates": levels},
                                        {"tempo": "double"})
    assert "107.7 BPM in 4/4 (you asked for double tempo)" in text and "53.8 BPM (half time, 0.30)" in text
    assert "(automatic)" in tempo_form.analysis_markdown({"tempo": 90.0, "time_signature": "3/4"}, {})
    assert tempo_form.analysis_markdown(None, {}) == ""


def test_ordered_artifacts():
    names = ["qc.json", "song.svp", "melody.mid", "mix.wav", "mix.mp3", "extra.bin", "input"]
    assert ui.ordered_artifacts(names) == ["mix.mp3", "mix.wav", "melody.mid", "song.svp", "qc.json", "extra.bin"]


# --------------------------------------------------------------------------- over a real database


@pytest.fixture()
def ctx(tmp_path, monkeypatch):
    monkeypatch.setenv("SHARED_DATA_DIR", str(tmp_path / "shared"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("API_KEYS", raising=False)
    monkeypatch.setenv("VOCAL_SERVICE_URL", "http://127.0.0.1:9")  # nothing listens: styles unavailable
    monkeypatch.setenv("SERVICE_TIMEOUT_SECONDS", "1")
    return create_context(app_config.load())


def _make_job(ctx, i: int, *, state: str = "queued", minutes_ago: int = 0, **values) -> Job:
    job_id = f"{i:08d}-0000-4000-8000-000000000000"
    folder = ctx.cfg.shared_data_dir / "input" / job_id
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / "background.wav", np.zeros(8000 * 6, dtype=np.float32) + 0.01, 8000)
    jobs.create_job(ctx.sessions, job_id=job_id, input_file=f"input/{job_id}/background.wav",
                    input_name=f"track{i}.wav", params={"style": "pop_bright", "seed": i, "sensitivity": 0.5,
                                                        "randomness": 0.5, "input_seconds": 6.0})
    with ctx.sessions.begin() as s:
        job = s.get(Job, job_id)
        job.created_at = utcnow() - timedelta(minutes=minutes_ago)
        job.state = state
        for k, v in values.items():
            setattr(job, k, v)
    return jobs.get_job(ctx.sessions, job_id)[0]


def test_job_rows_and_paging_with_many_jobs(ctx):
    n = 230
    for i in range(n):
        _make_job(ctx, i, minutes_ago=n - i)
    t0 = time.perf_counter()
    page_jobs, total = jobs.list_jobs(ctx.sessions, page=ui.clamp_page(12, n), per_page=ui.PER_PAGE)
    rows = ui.job_rows(page_jobs)
    elapsed = time.perf_counter() - t0
    assert total == n and len(rows) == 10
    assert rows[0][1] == "track9.wav" and rows[-1][1] == "track0.wav"  # newest first: the last page is the oldest
    assert all(len(r) == len(ui.TABLE_HEADERS) for r in rows)
    assert elapsed < 1.0, f"one dashboard page took {elapsed:.2f} s"
    first, _ = jobs.list_jobs(ctx.sessions, page=1, per_page=ui.PER_PAGE)
    assert ui.job_rows(first)[0][1] == f"track{n - 1}.wav"


def test_job_rows_states(ctx):
    now = utcnow()
    failed = _make_job(ctx, 1, state=FAILED, stage="failed", started_at=now - timedelta(seconds=30),
                       finished_at=now - timedelta(seconds=26), error_code="not_audio",
                       error_message="x.wav is not audio")
    running = _make_job(ctx, 2, state=RUNNING, stage="melody: beats", progress=0.3,
                        started_at=now - timedelta(seconds=65), cancel_requested=True)
    done = _make_job(ctx, 3, state=SUCCEEDED, stage="succeeded", progress=0.99, checks=CHECKS,
                     started_at=now - timedelta(seconds=40), finished_at=now - timedelta(seconds=20))
    rows = {r[1]: r for r in ui.job_rows([failed, running, done], now=now)}
    assert rows["track1.wav"][2] == "failed" and rows["track1.wav"][5] == "4.0 s"
    assert rows["track1.wav"][8] == "x.wav is not audio [not_audio]"
    assert rows["track2.wav"][3] == "melody: beats (cancelling)" and rows["track2.wav"][4] == "30 %"
    assert rows["track2.wav"][5] == "1 min 05 s"
    assert rows["track3.wav"][4] == "100 %" and rows["track3.wav"][7].startswith("pitch 97%")
    assert rows["track3.wav"][9] == done.id[:8]


def test_status_html(ctx):
    job = _make_job(ctx, 1, state=RUNNING, stage="vocal: sing", progress=0.62,
                    stages={"melody": {"state": "done", "progress": 1.0, "detail": "melody written"},
                            "vocal": {"state": "running", "progress": 0.25, "detail": "sing"}})
    job.input_name = "<b>evil</b>.wav"
    html = ui.status_html(job)
    assert 'data-state="running"' in html and "width:62.0%" in html and 'aria-valuenow="62"' in html
    assert "vocal: running 25 % — sing" in html and "melody: done — melody written" in html
    assert "<b>evil</b>" not in html and "&lt;b&gt;evil" in html
    failed = _make_job(ctx, 2, state=CANCELLED, error_code="cancelled", error_message="cancelled by the user")
    assert "tmik-error" in ui.status_html(failed) and "cancelled by the user" in ui.status_html(failed)
    assert ui.status_html(None) == ""


def _finished_job(ctx, i: int = 5) -> Job:
    job_id = f"{i:08d}-0000-4000-8000-000000000000"
    shared = ctx.cfg.shared_data_dir
    mel, voc = shared / "melody_results" / job_id, shared / "vocal_results" / job_id
    mel.mkdir(parents=True)
    voc.mkdir(parents=True)
    (mel / "analysis.json").write_text(json.dumps(ANALYSIS))
    (mel / "melody.json").write_text(json.dumps(MELODY))
    (mel / "melody.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0")
    sf.write(voc / "mix.wav", np.zeros(8000, dtype=np.float32), 8000)
    sf.write(voc / "vocal.wav", np.zeros(8000, dtype=np.float32), 8000)
    (voc / "mix.mp3").write_bytes(b"ID3" + b"\x00" * 100)
    artifacts = {"analysis.json": f"melody_results/{job_id}/analysis.json",
                 "melody.json": f"melody_results/{job_id}/melody.json",
                 "melody.mid": f"melody_results/{job_id}/melody.mid", "mix.wav": f"vocal_results/{job_id}/mix.wav",
                 "mix.mp3": f"vocal_results/{job_id}/mix.mp3", "vocal.wav": f"vocal_results/{job_id}/vocal.wav",
                 "song.svp": f"vocal_results/{job_id}/song.svp",  # recorded, but the file is missing
                 "evil.txt": "jobs.db"}  # outside the job's folders: never offered
    return _make_job(ctx, i, state=SUCCEEDED, stage="succeeded", progress=1.0, artifacts=artifacts, checks=CHECKS)


def test_artifacts_and_media(ctx, tmp_path, monkeypatch):
    job = _finished_job(ctx)
    files = ui.artifact_files(ctx.cfg, job)
    assert [name for name, _ in files] == ["mix.mp3", "mix.wav", "vocal.wav", "melody.mid", "melody.json",
                                           "analysis.json"]
    media = ui.job_media(ctx.cfg, job, ctx.links)
    # Kept in the job's own folder, so deleting the job removes them.
    assert Path(media.analysis_png).parent == ctx.cfg.shared_data_dir / "melody_results" / job.id
    _png(Path(media.analysis_png))
    _png(Path(media.roll_png))
    # The players and downloads are signed links to the API's file route, never file paths.
    assert media.mix.startswith(f"/api/jobs/{job.id}/files/mix.mp3?exp=") and "&sig=" in media.mix
    assert media.vocal.startswith(f"/api/jobs/{job.id}/files/vocal.wav?")
    assert [(n, size) for n, _, size in media.files] == [(n, p.stat().st_size) for n, p in files]
    assert all(url.endswith("&download=1") for _, url, _ in media.files)
    assert "Pitch accuracy" in media.checks_md
    values = ui._Results.values(media)
    players, pictures, downloads = values[1] + values[2], values[3] + values[4], values[6]
    assert players.count("<audio controls") == 2 and "&amp;sig=" in players
    assert pictures.count('src="data:image/png;base64,') == 2 and str(ctx.cfg.shared_data_dir) not in pictures
    assert 'download="mix.mp3"' in downloads and "the finished song (MP3)" in downloads
    assert str(ctx.cfg.shared_data_dir) not in "".join(str(v) for v in values)
    # The pictures are drawn once and then reused.
    stamp = Path(media.analysis_png).stat().st_mtime_ns
    assert ui.job_media(ctx.cfg, job, ctx.links).analysis_png == media.analysis_png
    assert Path(media.analysis_png).stat().st_mtime_ns == stamp
    queued = _make_job(ctx, 6)
    assert ui.job_media(ctx.cfg, queued, ctx.links).empty
    assert ui._Results.values(ui.job_media(ctx.cfg, queued, ctx.links))[1:] == ["", "", "", "", "", ""]


def test_rerun_defaults_and_detail(ctx):
    job = _make_job(ctx, 1, params={"style": "ballad", "seed": 9, "sensitivity": 0.2, "randomness": 0.7,
                                    "lyrics": "[Verse]\nHi there", "target_lufs": -12.0, "input_seconds": 6.0})
    assert ui.rerun_defaults(job) == {"sensitivity": 0.2, "randomness": 0.7, "style": "ballad", "seed": "9",
                                      "lyrics": "[Verse]\nHi there", "target_lufs": -12.0, "tempo": "auto",
                                      "time_signature": "auto", "takes": 3}
    md = ui.detail_markdown(job)
    assert "track1.wav (6.0 s)" in md and "seed 9" in md and "> Hi there" in md and "Analysed" not in md
    # A job run at a tempo the musician set: the re-run form starts there, the detail shows what was found.
    job = _make_job(ctx, 2, params={"style": "ballad", "seed": 9, "tempo": 96.0, "time_signature": "3/4"},
                    artifacts={"analysis.json": "melody_results/00000002-0000-4000-8000-000000000000/analysis.json"})
    folder = ctx.cfg.shared_data_dir / "melody_results" / job.id
    folder.mkdir(parents=True)
    (folder / "analysis.json").write_text(json.dumps({**ANALYSIS, "tempo": 96.2, "time_signature": "3/4",
                                                      "tempo_candidates": [{"bpm": 48.1, "score": 0.7,
                                                                            "level": "chosen"}]}))
    d = ui.rerun_defaults(job)
    assert d["tempo"] == "96" and d["time_signature"] == "3/4"
    assert ui.rerun_defaults(_make_job(ctx, 3, params={"takes": 5}))["takes"] == 5
    md = ui.detail_markdown(job, ui.tempo_form.read_analysis(ctx.cfg, job))
    assert "96.2 BPM in 3/4 (you asked for 96 BPM, 3/4)" in md and "48.1 BPM (detected, 0.70)" in md


def test_events_rows(ctx):
    job = _make_job(ctx, 1)
    jobs.request_cancel(ctx.sessions, job.id)
    _, events = jobs.get_job(ctx.sessions, job.id, with_events=True)
    rows = ui.event_rows(events)
    assert [r[1] for r in rows] == ["queued", "cancelled"] and rows[1][3] == "cancelled while queued"


def test_key_auth_binds_user_names(ctx, monkeypatch):
    monkeypatch.setenv("API_KEYS", "key-one,key-two")
    keyed = create_context(app_config.load(), migrate=False)
    auth = ui.KeyAuth(keyed)
    assert not auth("ann", "wrong")
    assert auth("ann", "key-one")
    assert auth("ann", "key-one")  # again, e.g. from another browser
    assert not auth("ann", "key-two")  # the name is taken by another key
    assert auth("bob", "key-two")
    assert auth.owner("ann") == keyed.owner_for_key("key-one") != auth.owner("bob")
    with pytest.raises(Exception, match="log in"):
        auth.owner("nobody")


def test_build_ui_while_the_vocal_service_is_down(ctx):
    import gradio as gr

    blocks = ui.build_ui(ctx)
    assert isinstance(blocks, gr.Blocks)
    ids = {getattr(b, "elem_id", None) for b in blocks.blocks.values()}
    assert {"create-audio", "create-generate", "create-status", "dash-table", "dash-cancel", "create-files",
            "dash-files", "create-analysis", "create-roll"} <= ids


def test_asgi_dispatch_api_and_ui(ctx):
    """``/api...`` reaches the Flask app unchanged; everything else is the Gradio UI."""
    from fastapi.testclient import TestClient
    from flask import Flask, request

    from app.app import create_asgi

    flask_app = Flask("stand-in")

    @flask_app.route("/api/<path:rest>", methods=["GET", "POST"])
    def echo(rest):
        return {"path": request.path, "method": request.method, "query": request.query_string.decode()}

    with TestClient(create_asgi(ctx, api_app=flask_app)) as client:
        r = client.get("/api/jobs?page=2")
        assert r.status_code == 200 and r.json() == {"path": "/api/jobs", "method": "GET", "query": "page=2"}
        assert client.post("/api/jobs/x/cancel").json()["method"] == "POST"
        page = client.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        other = client.get("/apiary")  # only /api and /api/... are the API's
        assert not other.headers.get("content-type", "").startswith("application/json") or \
            other.json().get("path") != "/apiary"
        config = client.get("/config")
        assert config.status_code == 200 and "Generate Music" in config.text


@pytest.mark.parametrize("env", [{"MAX_UPLOAD_MB": "-1"}, {"DATABASE_URL": "not a url"},
                                 {"DATABASE_URL": "sqlite:////proc/no/such/place/jobs.db"}])
def test_app_main_exits_2_on_bad_configuration(env, tmp_path, monkeypatch, capsys):
    from app import app as app_module

    monkeypatch.setenv("SHARED_DATA_DIR", str(tmp_path / "shared"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    started = []
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: started.append(a))
    assert app_module.main() == 2
    assert not started


# --------------------------------------------------------------------------- signed links, failed keys, uploads


def test_signed_links_open_one_file_of_one_owner_until_they_expire():
    from app.access import LinkSigner

    now = [1_000_000.0]
    links = LinkSigner("k" * 32, ttl_s=3600, clock=lambda: now[0])
    job = "0a0a0a0a-0000-4000-8000-000000000000"
    url = links.file_url(job, "mix.mp3", "owner-a")
    path, _, query = url.partition("?")
    assert path == f"/api/jobs/{job}/files/mix.mp3"
    args = dict(kv.split("=", 1) for kv in query.split("&"))
    assert int(args["exp"]) >= now[0] + 3600
    assert links.check(job, "mix.mp3", "owner-a", args["exp"], args["sig"]) == "ok"
    # Another file, job or owner, another expiry, another key: not valid.
    assert links.check(job, "mix.wav", "owner-a", args["exp"], args["sig"]) == "invalid"
    assert links.check(job.replace("0a", "0b"), "mix.mp3", "owner-a", args["exp"], args["sig"]) == "invalid"
    assert links.check(job, "mix.mp3", "owner-b", args["exp"], args["sig"]) == "invalid"
    assert links.check(job, "mix.mp3", None, args["exp"], args["sig"]) == "invalid"
    assert links.check(job, "mix.mp3", "owner-a", str(int(args["exp"]) + 1), args["sig"]) == "invalid"
    assert LinkSigner("x" * 32).check(job, "mix.mp3", "owner-a", args["exp"], args["sig"]) == "invalid"
    for exp, sig in [(None, args["sig"]), (args["exp"], None), ("-1", args["sig"]), ("1e9", args["sig"])]:
        assert links.check(job, "mix.mp3", "owner-a", exp, sig) == "invalid"
    now[0] += 3600 + 301
    assert links.check(job, "mix.mp3", "owner-a", args["exp"], args["sig"]) == "expired"
    assert links.file_url(job, "a b.wav", None, download=True).startswith(f"/api/jobs/{job}/files/a%20b.wav?")


def test_failure_limiter_counts_failures_per_address_in_a_window(caplog):
    from app.access import FailureLimiter

    now = [100.0]
    limiter = FailureLimiter(limit=3, window_s=60, clock=lambda: now[0])
    assert limiter.retry_after("1.2.3.4") is None
    assert limiter.failed("1.2.3.4", "wrong API key") is None
    now[0] += 10
    assert limiter.failed("1.2.3.4", "wrong API key") is None
    assert limiter.retry_after("1.2.3.4") is None
    with caplog.at_level("WARNING", logger="app.access"):
        assert limiter.failed("1.2.3.4", "wrong API key") == 50  # the first failure leaves the window in 50 s
    assert "1.2.3.4" in caplog.text and "429" in caplog.text
    assert limiter.retry_after("1.2.3.4") == 50
    assert limiter.retry_after("5.6.7.8") is None  # other addresses are not affected
    now[0] += 50
    assert limiter.retry_after("1.2.3.4") is None  # one failure fell out of the window: one more try
    assert limiter.failed("1.2.3.4", "wrong API key") == 10
    now[0] += 60
    assert limiter.retry_after("1.2.3.4") is None


def test_uploads_open_only_this_sessions_regular_files(tmp_path):
    folder = tmp_path / "gradio" / "abc123"
    folder.mkdir(parents=True)
    mine = folder / "track.wav"
    mine.write_bytes(b"RIFF....WAVE")
    theirs = folder / "theirs.wav"
    theirs.write_bytes(b"RIFF....WAVE")
    fifo = folder / "pipe.wav"
    os.mkfifo(fifo)
    link = folder / "link.wav"
    link.symlink_to("/etc/passwd")
    uploads = ui.Uploads()
    uploads.record("session-a", [str(mine), str(fifo), str(link), 42, None])
    uploads.record("session-b", [str(theirs)])
    with uploads.open("session-a", str(mine)) as fh:
        assert fh.read() == b"RIFF....WAVE"
    with uploads.open("session-a", str(folder / ".." / "abc123" / "track.wav")) as fh:  # the same file
        assert fh.read(4) == b"RIFF"
    mine.unlink()  # e.g. swept from Gradio's folder
    with pytest.raises(ui.UploadRefused):
        uploads.open("session-a", str(mine))
    mine.write_bytes(b"RIFF....WAVE")
    refused = [("session-a", str(theirs)), ("session-b", str(mine)), (None, str(mine)), ("session-a", "/etc/passwd"),
               ("session-a", "/dev/zero"), ("session-a", str(fifo)), ("session-a", "track.wav"),
               ("session-a", {"path": str(mine)}), ("nobody", str(mine))]
    for session, path in refused:
        with pytest.raises(ui.UploadRefused):
            uploads.open(session, path)
    # A link, even one recorded as an upload, is not followed.
    with pytest.raises(ui.UploadRefused):
        uploads.open("session-a", str(link))
    assert ui.session_of(f"a=1; {ui.SESSION_COOKIE}=s3cr3t; b=2") == "s3cr3t"
    assert ui.session_of("a=1") is None and ui.session_of(None) is None and ui.session_of('x="unterminated') is None


@pytest.mark.parametrize("host, keys, warned", [
    ("127.0.0.1", False, False), ("localhost", False, False), ("::1", False, False), ("[::1]", False, False),
    ("0.0.0.0", False, True), ("::", False, True), ("192.168.1.5", False, True), ("myhost.example", False, True),
    ("0.0.0.0", True, False)])
def test_exposure_warning(host, keys, warned):
    from app.app import exposure_warning

    text = exposure_warning(host, keys)
    assert (text is not None) == warned
    if warned:
        assert "API_KEYS" in text and host in text


# --------------------------------------------------------------------------- attacks through Gradio's own API


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wav_bytes(seconds: float = 6.0, sr: int = 8000) -> bytes:
    import io

    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.02 * np.random.default_rng(0).standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def served_app(tmp_path_factory):
    """``python -m app.app`` in its own process (a frozen server can be killed), services down."""
    import subprocess
    import sys

    import httpx

    tmp = tmp_path_factory.mktemp("served")
    port = _free_port()
    env = dict(os.environ, SHARED_DATA_DIR=str(tmp / "shared"), GRADIO_TEMP_DIR=str(tmp / "gradio"),
               APP_PORT=str(port), APP_HOST="127.0.0.1", MELODY_SERVICE_URL="http://127.0.0.1:9",
               VOCAL_SERVICE_URL="http://127.0.0.1:9", SERVICE_TIMEOUT_SECONDS="1", API_KEYS="",
               PYTHONUNBUFFERED="1")
    env.pop("DATABASE_URL", None)
    log_path = tmp / "app.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "app.app"], cwd=Path(__file__).resolve().parent.parent,
                                env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(base + "/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.3)
        yield {"base": base, "tmp": tmp, "log": log_path}
    finally:
        proc.kill()  # also when a test froze it
        proc.wait(timeout=30)


def _generate_event(client, base: str, data: list) -> dict:
    """Call the Create tab's ``generate`` the way a script would: queue/join, then read the event stream."""
    import uuid

    config = client.get(base + "/config", timeout=30).json()
    fn = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "generate")
    session_hash = uuid.uuid4().hex[:11]
    joined = client.post(base + "/gradio_api/queue/join", timeout=30,
                         json={"data": data, "fn_index": fn, "session_hash": session_hash, "event_data": None,
                               "trigger_id": None})
    assert joined.status_code == 200, joined.text
    event_id = joined.json()["event_id"]
    with client.stream("GET", base + f"/gradio_api/queue/data?session_hash={session_hash}", timeout=30) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_completed" and msg.get("event_id") == event_id:
                    return msg
    raise AssertionError("the event stream ended without a result")


def _file_data(path: str, name: str = "track.wav") -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}, "orig_name": name}


def _form(audio, tempo: str = "auto", meter: str = "auto", takes: int = 3) -> list:
    return [audio, "", 0.5, 0.5, "pop_bright", "", -14, tempo, meter, takes]


def test_generate_refuses_server_paths_and_keeps_serving(served_app, tmp_path):
    """The attacks of issue 12: a server path, another job's stored input, the database, /dev/zero and a
    FIFO as the track (and a server path smuggled into another input): each is refused, nothing is
    copied into Gradio's folder, no job is made, and the app (UI and REST) answers throughout."""
    import httpx

    base, shared = served_app["base"], served_app["tmp"] / "shared"
    gradio_dir = served_app["tmp"] / "gradio"
    secret = tmp_path / "secret_song.wav"
    secret.write_bytes(_wav_bytes())
    victim = httpx.post(base + "/api/jobs", files={"file": ("victim.wav", _wav_bytes(), "audio/wav")}, timeout=30)
    assert victim.status_code == 201, victim.text
    victim_input = shared / "input" / victim.json()["id"] / "background.wav"
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    before = {p for p in gradio_dir.rglob("*")} if gradio_dir.exists() else set()
    attacks = {"a readable WAV elsewhere": _form(_file_data(str(secret))),
               "another job's stored input": _form(_file_data(str(victim_input))),
               "the jobs database": _form(_file_data(str(shared / "jobs.db"), "jobs.db")),
               "/etc/passwd": _form(_file_data("/etc/passwd", "passwd")),
               "/dev/zero": _form(_file_data("/dev/zero", "zero.wav")),
               "a FIFO": _form(_file_data(str(fifo))),
               "a relative path": _form(_file_data("../../etc/passwd", "passwd")),
               "a path inside the lyrics": [None, _file_data("/etc/passwd", "passwd"), 0.5, 0.5, "pop_bright", "",
                                            -14, "auto", "auto"]}
    with httpx.Client() as client:
        client.get(base + "/", timeout=30)  # a browser session (its cookie)
        for what, data in attacks.items():
            msg = _generate_event(client, base, data)
            refused = msg.get("success") is False or "Not started" in str(msg["output"]["data"][0])
            assert refused, (what, msg)
            health = httpx.get(base + "/api/health", timeout=30)  # never frozen: a read timeout fails the test
            assert health.status_code == 200, what
            assert httpx.get(base + "/config", timeout=30).status_code == 200, what
    assert httpx.get(base + "/api/jobs", timeout=30).json()["total"] == 1  # the victim's job only
    after = {p for p in gradio_dir.rglob("*")} if gradio_dir.exists() else set()
    assert after == before, f"copied into Gradio's folder: {sorted(map(str, after - before))}"


def test_generate_takes_only_this_sessions_upload(served_app):
    """A real upload through Gradio's upload route works in its own session and in no other."""
    import httpx

    base = served_app["base"]
    with httpx.Client() as mine, httpx.Client() as other:
        mine.get(base + "/", timeout=30)
        other.get(base + "/", timeout=30)
        assert mine.cookies.get(ui.SESSION_COOKIE) and mine.cookies.get(ui.SESSION_COOKIE) != other.cookies.get(
            ui.SESSION_COOKIE)
        stored = mine.post(base + "/gradio_api/upload", files={"files": ("my_track.wav", _wav_bytes())}, timeout=30)
        assert stored.status_code == 200, stored.text
        path = stored.json()[0]
        total = httpx.get(base + "/api/jobs", timeout=30).json()["total"]
        stolen = _generate_event(other, base, _form(_file_data(path, "my_track.wav")))
        assert "Not started (file)" in str(stolen["output"]["data"][0]), stolen
        assert httpx.get(base + "/api/jobs", timeout=30).json()["total"] == total
        ok = _generate_event(mine, base, _form(_file_data(path, "my_track.wav"), tempo="96", meter="3/4", takes=2))
        assert ok.get("success") is True and ok["output"]["data"][0] == "", ok
        listed = httpx.get(base + "/api/jobs", timeout=30).json()
        assert listed["total"] == total + 1
        job = listed["jobs"][0]
        assert job["state"] == "queued" and job["input_name"] == "my_track.wav"
        assert job["params"]["tempo"] == 96.0 and job["params"]["time_signature"] == "3/4"  # the form's choices
        assert job["params"]["takes"] == 2
        assert job["id"] in str(ok["output"]["data"][2])  # the status panel shows the new job


# --------------------------------------------------------------------------- the app with API keys (one process)


@pytest.fixture()
def keyed(ctx, monkeypatch):
    """The whole app (UI and API) with two API keys, through an in-process client."""
    from fastapi.testclient import TestClient

    from app.app import create_asgi

    monkeypatch.setenv("API_KEYS", "key-one,key-two")
    keyed_ctx = create_context(app_config.load())
    keyed_ctx.vocal.styles = lambda: [{"name": "pop_bright", "description": "bright"}]
    keyed_ctx.vocal.style_names = lambda: ["pop_bright"]
    with TestClient(create_asgi(keyed_ctx)) as client:
        yield keyed_ctx, client


def test_result_links_open_only_the_owners_files(keyed):
    from app.access import LinkSigner
    from app.context import key_fingerprint
    from tmik_common.secrets import shared_secret

    kctx, client = keyed
    job = _finished_job(kctx, 5)
    other = _finished_job(kctx, 6)
    with kctx.sessions.begin() as s:
        s.get(Job, job.id).owner = key_fingerprint("key-one")
        s.get(Job, other.id).owner = key_fingerprint("key-two")
    job = jobs.get_job(kctx.sessions, job.id)[0]
    media = ui.job_media(kctx.cfg, job, kctx.links)
    mp3 = client.get(media.mix)  # what the browser's <audio> asks for: no key, the signed link only
    assert mp3.status_code == 200 and mp3.headers["content-type"].startswith("audio/mpeg")
    assert mp3.content.startswith(b"ID3")
    wav = client.get(media.vocal, headers={"Range": "bytes=0-3"})  # players seek with ranges
    assert wav.status_code == 206 and wav.content == b"RIFF"
    url = next(link for name, link, _ in media.files if name == "melody.mid")
    got = client.get(url)
    assert got.status_code == 200 and got.content.startswith(b"MThd") and "attachment" in got.headers[
        "content-disposition"]
    # Another key gets 404 for the same link; the link opens no other file and no other job.
    assert client.get(media.mix, headers={"X-API-Key": "key-two"}).status_code == 404
    assert client.get(media.mix.replace(job.id, other.id)).status_code == 401
    assert client.get(media.mix.replace("mix.mp3", "mix.wav")).status_code == 401
    assert client.get(media.mix.split("?")[0]).status_code == 401
    expired = LinkSigner(shared_secret(kctx.cfg.shared_data_dir, "media_key", "APP_SECRET_KEY"),
                         clock=lambda: time.time() - 7200).file_url(job.id, "mix.mp3", job.owner)
    resp = client.get(expired)
    assert resp.status_code == 401 and "expired" in resp.json()["error"]["message"]
    # Gradio serves none of the shared data (not even to someone logged in), directly or from its cache.
    assert client.post("/login", data={"username": "bob", "password": "key-two"}).status_code == 200
    for path in (kctx.cfg.shared_data_dir / "vocal_results" / job.id / "mix.wav", kctx.cfg.shared_data_dir / "jobs.db"):
        assert client.get(f"/gradio_api/file={path}").status_code in (403, 404)
    # A deleted job's links are dead.
    assert client.delete(f"/api/jobs/{job.id}", headers={"X-API-Key": "key-one"}).status_code == 204
    assert client.get(media.mix).status_code == 404
    assert client.get(media.vocal).status_code == 404


def test_failed_logins_and_keys_are_limited_per_address(keyed):
    from app.access import AUTH_FAILURE_LIMIT

    _, client = keyed
    for _ in range(3):  # successes are never counted
        assert client.post("/login", data={"username": "ann", "password": "key-one"}).status_code == 200
    for i in range(AUTH_FAILURE_LIMIT - 1):
        assert client.post("/login", data={"username": "ann", "password": f"guess{i}"}).status_code == 400
    assert client.post("/login", data={"username": "ann", "password": "key-one"}).status_code == 200
    assert client.get("/api/jobs", headers={"X-API-Key": "key-one"}).status_code == 200
    assert client.get("/api/jobs").status_code == 401  # no key at all is not a guess
    assert client.get("/api/jobs", headers={"X-API-Key": "wrong"}).status_code == 401  # the 10th failure
    refused = client.post("/login", data={"username": "ann", "password": "key-one"})
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    api = client.get("/api/jobs", headers={"X-API-Key": "key-one"})  # not even checked now
    assert api.status_code == 429 and api.json()["error"]["code"] == "too_many_failures"
    assert int(api.headers["Retry-After"]) >= 1
    assert client.get("/api/health").status_code == 200  # the open routes stay open


def test_ui_handlers_show_a_plain_message_when_the_database_fails(ctx, monkeypatch):
    import gradio as gr
    from sqlalchemy.exc import OperationalError

    blocks = ui.build_ui(ctx)
    handlers = {f.fn.__name__: f.fn for f in blocks.fns.values() if f.fn is not None}

    def broken(*args, **kwargs):
        raise OperationalError("SELECT jobs.id, jobs.owner FROM jobs LIMIT ?", {}, Exception("database is locked"))

    monkeypatch.setattr(jobs, "list_jobs", broken)
    monkeypatch.setattr(jobs, "get_job", broken)
    with pytest.raises(gr.Error) as info:
        handlers["dash_page"](1, None, "", None)
    assert info.value.message == ui.DATABASE_DOWN and "SELECT" not in str(info.value)
    with pytest.raises(gr.Error) as info:
        handlers["follow"]("00000001-0000-4000-8000-000000000000", None)
    assert info.value.message == ui.DATABASE_DOWN


@pytest.mark.parametrize("host, keys, warned", [("0.0.0.0", "", True), ("0.0.0.0", "k1", False),
                                                ("127.0.0.1", "", False)])
def test_app_main_warns_loudly_when_open_to_the_network(host, keys, warned, tmp_path, monkeypatch, caplog):
    from app import app as app_module

    monkeypatch.setenv("SHARED_DATA_DIR", str(tmp_path / "shared"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("APP_HOST", host)
    monkeypatch.setenv("API_KEYS", keys)
    served = []
    monkeypatch.setattr(app_module._Server, "run", lambda self, *a, **k: served.append(self.config.host))
    with caplog.at_level("WARNING", logger="app"):
        assert app_module.main() == 0
    assert served == [host]
    warnings = [r for r in caplog.records if r.name == "app" and r.levelname == "WARNING" and "API_KEYS" in r.message]
    assert bool(warnings) == warned
