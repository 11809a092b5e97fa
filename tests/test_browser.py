"""The whole system through a browser: headless Chromium (the system's, driven by Playwright).

Starts everything as `make run` does (``python -m app.launcher``: melody service, vocal-mix
service, job manager, app) on free ports with its own data folder and SQLite database and two API
keys, logs in with the first, uploads a short synthesised track on the Create tab, types lyrics,
presses "Generate Music", waits for the finished song, and checks what the musician gets: the mix
and vocal players (their signed links answer 200 with audio, the browser decodes it, and the other
key gets 404), the analysis picture and piano roll, and the downloads (mix.mp3 and melody.mid are
fetched and checked by their content). Then it opens the job on the Jobs Dashboard, and checks that
no result was copied into Gradio's folder. Screenshots go to the test's tmp folder (printed).

Needs Debian's ``chromium`` (apt) and the ``playwright`` Python package (pip; its wheel brings its
driver, no browser is downloaded). Skipped, with the reason, when either is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import synth_music

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = next((p for p in (os.environ.get("CHROMIUM_PATH"), "/usr/bin/chromium", shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p and Path(p).is_file()), None)
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="the system Chromium is not installed (apt-get install chromium)"),
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install playwright)"),
]

START_TIMEOUT_S = 240.0  # the services load their models on start
SONG_TIMEOUT_S = 180.0
KEYS = ("browser-key-one", "browser-key-two")
LYRICS = "[Verse]\nHello my friend\nSing along with me\n\n[Chorus]\nLa la la la\nHere we go again"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except (OSError, ValueError):
        return None


def _tail(path: Path, chars: int = 6000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """The four processes, started by the launcher; yields the app's base URL and the log path."""
    tmp = tmp_path_factory.mktemp("system")
    ports = {name: free_port() for name in ("APP_PORT", "MELODY_SERVICE_PORT", "VOCAL_SERVICE_PORT")}
    env = dict(os.environ)
    env.update({k: str(v) for k, v in ports.items()})
    env.update({
        "SHARED_DATA_DIR": str(tmp / "shared_data"),
        "DATABASE_URL": f"sqlite:///{tmp / 'shared_data' / 'jobs.db'}",
        "MELODY_SERVICE_URL": f"http://127.0.0.1:{ports['MELODY_SERVICE_PORT']}",
        "VOCAL_SERVICE_URL": f"http://127.0.0.1:{ports['VOCAL_SERVICE_PORT']}",
        "JOB_POLL_SECONDS": "0.2", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1",
        "GRADIO_TEMP_DIR": str(tmp / "gradio"),
        "API_KEYS": ",".join(KEYS),  # set, so a developer's .env cannot change it for this test
    })
    log_path = tmp / "system.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "app.launcher"], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{ports['APP_PORT']}"
    healths = [f"{base}/api/health", f"{env['MELODY_SERVICE_URL']}/health", f"{env['VOCAL_SERVICE_URL']}/health"]
    started = time.monotonic()
    try:
        while not all(_get(u) == 200 for u in healths):
            if proc.poll() is not None:
                pytest.fail(f"the launcher exited with {proc.returncode}:\n{_tail(log_path)}")
            if time.monotonic() - started > START_TIMEOUT_S:
                pytest.fail(f"the system was not up after {START_TIMEOUT_S:.0f} s:\n{_tail(log_path)}")
            time.sleep(0.5)
        print(f"system up in {time.monotonic() - started:.1f} s; log: {log_path}")
        yield {"base": base, "log": log_path, "tmp": tmp, "gradio": tmp / "gradio"}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # the launcher stops its children in order
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture(scope="module")
def track(tmp_path_factory) -> Path:
    """About 22 s of a four-chord song with drums, as a 44.1 kHz stereo WAV: room for the four lyric lines
    (a line takes two bars at 96 BPM; a shorter track refuses them with ``lyrics_do_not_fit``)."""
    t = synth_music.song(["C:maj", "A:min", "F:maj", "G:maj"], bpm=96, bars=8, sr=44100)
    path = tmp_path_factory.mktemp("track") / "my_song.wav"
    sf.write(path, np.stack([t.audio, t.audio], axis=1), t.sr, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def _fetch(page, url: str, headers: dict[str, str] | None = None) -> tuple[bytes, str]:
    resp = page.request.get(url, headers=headers)
    assert resp.ok, f"{url} answered {resp.status}"
    return resp.body(), resp.headers.get("content-type", "")


def _wait_duration(page, player: str, timeout_ms: int = 60_000) -> None:
    """Wait until ``player`` (a gr.Audio) shows a length: its audio was loaded and decoded."""
    page.wait_for_function(f"() => {{ const d = document.querySelector('{player} #duration');"
                           " return d && d.textContent.trim() !== '' && d.textContent.trim() !== '0:00'; }",
                           timeout=timeout_ms)


def _wait_playable(page, player: str, timeout_ms: int = 60_000) -> str:
    """Wait until the ``<audio>`` in ``player`` has decoded its source's length; its source URL."""
    page.wait_for_function(f"() => {{ const a = document.querySelector('{player} audio');"
                           " return a && a.readyState >= 1 && a.duration > 0.5; }", timeout=timeout_ms)
    return page.locator(f"{player} audio").first.evaluate("a => a.currentSrc")


def _is_mp3(data: bytes) -> bool:
    return data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0)


def test_create_song_in_browser(system, track, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    t0 = time.monotonic()
    page.goto(system["base"] + "/")
    # The server needs an API key: any user name, the key as the password.
    page.get_by_label("Username").fill("ann")
    page.get_by_label("Password").fill(KEYS[0])
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#create-generate", timeout=60_000)
    # The accepted formats and the size limit are stated next to the upload.
    assert "WAV, FLAC, MP3 or OGG" in page.locator("#create-accepted").inner_text()
    # The vocal styles come from the service, each with its description.
    page.wait_for_function("() => document.querySelector('#create-style-info')?.innerText.includes('pop_bright')",
                           timeout=30_000)

    # A track that is too short is refused, and the page says why.
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(44100 * 2, dtype=np.float32) + 0.1, 44100)
    page.locator("#create-audio input[type=file]").set_input_files(str(short))
    _wait_duration(page, "#create-audio")
    page.locator("#create-generate").click()
    page.wait_for_function("() => document.querySelector('#tmik-submit-error')?.innerText.includes('Not started')",
                           timeout=30_000)
    assert "short" in page.locator("#tmik-submit-error").inner_text()
    page.locator("#create-audio button[aria-label='Clear']").first.click()

    page.locator("#create-audio input[type=file]").set_input_files(str(track))
    _wait_duration(page, "#create-audio")  # the upload is done when the player shows the track's length
    page.locator("#create-lyrics textarea").fill(LYRICS)
    page.locator("#create-seed input, #create-seed textarea").first.fill("7")
    page.locator("#create-generate").click()

    # The new job appears at once, then finishes.
    page.wait_for_selector("#create-status .tmik-status", timeout=30_000)
    submitted = time.monotonic()
    page.wait_for_function("() => ['succeeded', 'failed', 'cancelled'].includes("
                           "document.querySelector('#create-status .tmik-status')?.dataset.state)",
                           timeout=SONG_TIMEOUT_S * 1000)
    status = page.locator("#create-status").inner_text()
    state = page.locator("#create-status .tmik-status").get_attribute("data-state")
    song_s = time.monotonic() - submitted
    assert state == "succeeded", f"the job ended {state}: {status}\n{_tail(system['log'])}"

    # Players: each plays a signed link of the API's own file route, which the browser decoded; the
    # link answers 200 with audio, and 404 to the other key.
    page.wait_for_selector("#create-results", state="visible", timeout=30_000)
    for player in ("#create-mix", "#create-vocal"):
        src = _wait_playable(page, player, 30_000)
        assert "/api/jobs/" in src and "sig=" in src, f"{player} plays {src}"
        data, ctype = _fetch(page, src)
        assert len(data) > 10_000, f"{player}: {len(data)} bytes"
        assert ctype.startswith("audio/") and (data[:4] == b"RIFF" or _is_mp3(data)), (player, ctype, data[:8])
        other = page.request.get(src, headers={"X-API-Key": KEYS[1]})
        assert other.status == 404, f"{player}: the other key got {other.status}"
        assert page.request.get(src.split("?")[0]).status == 401  # the link is the credential

    # The analysis picture and the piano roll are shown.
    for pic in ("#create-analysis img", "#create-roll img"):
        page.wait_for_function(f"() => (document.querySelector('{pic}')?.naturalWidth || 0) > 100", timeout=30_000)

    # The checks and every download.
    assert "Pitch accuracy" in page.locator("#create-checks").inner_text()
    links = page.eval_on_selector_all("#create-files a[download]", "els => els.map(e => [e.download, e.href])")
    names = {name: href for name, href in links}
    for expected in ("mix.mp3", "mix.wav", "vocal.wav", "melody.mid", "score.musicxml", "song.svp", "song.ustx"):
        assert expected in names, f"{expected} is not offered for download: {sorted(names)}"
    mp3, _ = _fetch(page, names["mix.mp3"])
    assert len(mp3) > 10_000 and _is_mp3(mp3), mp3[:8]
    midi, _ = _fetch(page, names["melody.mid"])
    assert midi[:4] == b"MThd" and len(midi) > 50
    with page.expect_download() as dl:  # a real click on a download link saves the file
        page.locator("#create-files a[download='melody.mid']").first.click()
    saved = tmp_path / "melody.mid"
    dl.value.save_as(saved)
    assert saved.read_bytes()[:4] == b"MThd"

    create_png = tmp_path / "create.png"
    page.screenshot(path=str(create_png), full_page=True)

    # The Jobs Dashboard lists the job; selecting it shows its details, players and history.
    page.get_by_role("tab", name="Jobs Dashboard").click()
    page.wait_for_function("() => document.querySelector('#dash-page')?.innerText.includes('of 1')",
                           timeout=30_000)
    page.locator("#dash-table .body-cell", has_text=track.name).first.click()
    page.wait_for_selector("#dash-detail", state="visible", timeout=30_000)
    page.wait_for_function("() => document.querySelector('#dash-status .tmik-status')?.dataset.state === "
                           "'succeeded'", timeout=30_000)
    _wait_playable(page, "#dash-mix", 30_000)
    assert "seed 7" in page.locator("#dash-detail-md").inner_text()
    # Showing the results twice copied none of them into Gradio's folder (only the uploads are there).
    kept = sorted(p.name for p in system["gradio"].rglob("*") if p.is_file())
    assert set(kept) <= {"short.wav", track.name}, f"copied into Gradio's folder: {kept}"
    dash_png = tmp_path / "dashboard.png"
    page.screenshot(path=str(dash_png), full_page=True)

    # Re-run it with another seed (the form starts with this job's settings), then cancel the new job.
    page.locator("#dash-rerun").get_by_text("Re-run with changed parameters").click()
    seed_box = page.locator("#dash-rerun-seed input, #dash-rerun-seed textarea").first
    assert seed_box.input_value() == "7"
    seed_box.fill("8")
    page.locator("#dash-rerun-btn").click()
    page.wait_for_function("() => document.querySelector('#dash-page')?.innerText.includes('of 2')",
                           timeout=30_000)
    page.wait_for_function("() => document.querySelector('#dash-detail-md')?.innerText.includes('seed 8')",
                           timeout=30_000)
    page.locator("#dash-cancel").click()
    page.wait_for_function("() => document.querySelector('#dash-status .tmik-status')?.dataset.state === "
                           "'cancelled'", timeout=30_000)
    cancel_png = tmp_path / "dashboard_cancelled.png"
    page.screenshot(path=str(cancel_png), full_page=False)
    page.close()

    assert not errors, f"JavaScript errors on the page: {errors}"
    print(f"song finished {song_s:.1f} s after Generate; whole browser test {time.monotonic() - t0:.1f} s; "
          f"screenshots: {create_png} {dash_png} {cancel_png}")
