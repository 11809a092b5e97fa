"""The web UI (Gradio): the Create tab and the Jobs Dashboard.

The UI holds no rules of its own: it submits, lists, cancels and re-runs jobs through
:mod:`app.submit` and :mod:`app.jobs`, exactly as the REST API does. The module has two halves:

- plain data functions (formatting, table rows, paging, status HTML, which files a job offers),
  tested without a browser in ``tests/test_ui.py``;
- :func:`build_ui`, which lays out the components and wires the events to those functions.

Live updates use ``gr.Timer``: the Create tab polls only the job it just started (about once a
second, and stops when the job ends); the dashboard refreshes the page of jobs on screen every two
seconds, and only while its tab is open. Every read is one page of jobs (or one job), so the UI
stays quick with thousands of jobs.

When API keys are configured the UI asks for one (Gradio's login form; the password is the key).
A user name is bound to the key it is first used with, so each login sees only its own key's jobs.

Files: the track a musician gives "Generate Music" must be one this browser session uploaded
(:class:`Uploads`; never a path on the server), and it is read in the handler's worker thread.
Results are never handed to Gradio as files (which would copy them into its cache, served to
anyone, kept after the job is deleted): players and downloads are plain ``<audio>``/``<a>``
elements with signed links to the REST API's own file route (:mod:`app.access`), the pictures
are inlined.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import logging
import math
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any, BinaryIO

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
from sqlalchemy.exc import SQLAlchemyError

from . import jobs, plots, submit, takes_panel, tempo_form, versions_panel
from .access import LinkSigner
from .context import AppContext, Unauthorized
from .models import CANCELLED, FAILED, FINISHED, QUEUED, RUNNING, SUCCEEDED, Job
from .services import ServiceUnavailable

log = logging.getLogger(__name__)

PER_PAGE = 20
UPLOAD_SWEEP_S = 3600  # how often Gradio's upload folder is swept ...
UPLOAD_KEEP_S = 6 * 3600  # ... of uploads older than this (a job has its own copy from the start)
CREATE_POLL_S = 1.0
DASHBOARD_POLL_S = 2.0
DEFAULT_LUFS = -14.0

TABLE_HEADERS = ["Created (UTC)", "Track", "State", "Stage", "Progress", "Duration", "Parameters", "Checks",
                 "Error", "Job"]
EVENT_HEADERS = ["Time (UTC)", "State", "Stage", "Message", "Worker"]

# The order downloads are listed in, with what each file is (anything else follows, by name).
ARTIFACTS: dict[str, str] = {
    "mix.mp3": "the finished song (MP3)",
    "mix.wav": "the finished song (WAV, 24-bit)",
    "vocal.wav": "the dry vocal",
    "vocal_fx.wav": "the vocal with its effects",
    "instrumental.wav": "the background as mixed",
    "melody.mid": "the melody (MIDI, on the track's tempo map)",
    "melody_lyrics.mid": "the melody with its lyrics (MIDI)",
    "score.musicxml": "the vocal line as a score (MusicXML)",
    "song.svp": "Synthesizer V project",
    "song.ustx": "OpenUtau project",
    "song.vsqx": "Vocaloid project",
    "song.ust": "UTAU project",
    "song.acep": "ACE Studio project",
    "song.ds": "DiffSinger project",
    "lyrics.lrc": "timed lyrics (LRC)",
    "melody.json": "the melody's notes and syllables (JSON)",
    "analysis.json": "tempo, beats, key, chords and sections (JSON)",
    "qc.json": "the take's quality checks (JSON)",
    **takes_panel.artifact_descriptions(),
}

LYRICS_PLACEHOLDER = ("[Verse]\nWalking down an empty street\nCounting every heartbeat\n\n"
                      "[Chorus]\nSing it out, sing it loud\nWe are dancing through the crowd\n\n"
                      "(optional: leave empty for a wordless vocalise; [Section] tags guide the phrasing)")

CSS = """
.tmik-status { font-size: 0.95rem; }
.tmik-head { display: flex; gap: 0.6em; align-items: center; margin-bottom: 0.35em; flex-wrap: wrap; }
.tmik-state { padding: 0.1em 0.55em; border-radius: 0.8em; font-weight: 600; font-size: 0.85em; color: #fff; }
.tmik-state-queued { background: #6c757d; } .tmik-state-running { background: #1d4ed8; }
.tmik-state-succeeded { background: #15803d; } .tmik-state-failed { background: #b91c1c; }
.tmik-state-cancelled { background: #a16207; }
.tmik-bar { height: 0.8em; background: #e5e7eb; border-radius: 0.4em; overflow: hidden; }
.tmik-fill { height: 100%; background: linear-gradient(90deg, #2563eb, #7c3aed); transition: width 0.5s; }
.tmik-fill-succeeded { background: #16a34a; } .tmik-fill-failed { background: #dc2626; }
.tmik-fill-cancelled { background: #ca8a04; }
.tmik-stages { margin-top: 0.35em; color: #4b5563; font-size: 0.88em; }
.tmik-error { margin-top: 0.4em; padding: 0.5em 0.7em; border-left: 4px solid #dc2626; background: #fef2f2;
              color: #7f1d1d; }
.tmik-warn { margin-top: 0.4em; color: #92400e; font-size: 0.88em; }
#tmik-submit-error .tmik-error { margin-top: 0; }
.tmik-player { display: flex; flex-direction: column; gap: 0.35em; }
.tmik-player audio { width: 100%; }
.tmik-label { font-weight: 600; font-size: 0.9em; color: #374151; }
.tmik-picture img { max-width: 100%; height: auto; border-radius: 0.3em; }
.tmik-files ul { margin: 0.3em 0 0 1.1em; padding: 0; }
.tmik-files li { margin: 0.15em 0; }
.tmik-small { font-size: 0.85em; color: #6b7280; }
""" + takes_panel.CSS + versions_panel.CSS


# =========================================================================== plain data functions


def parse_time(value: datetime | str | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value.rstrip("Z"))


def fmt_time(value: datetime | str | None) -> str:
    """A UTC time as ``2025-01-31 14:05:09`` (naive UTC, as the database holds it)."""
    t = parse_time(value)
    return "" if t is None else t.strftime("%Y-%m-%d %H:%M:%S")


def fmt_duration(seconds: float | None) -> str:
    """``None`` -> ``""``, ``4.2`` -> ``4.2 s``, ``75`` -> ``1 min 15 s``, ``3725`` -> ``1 h 02 min``."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return ""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def job_duration(job: Job, now: datetime | None = None) -> float | None:
    """Seconds from the job's start to its end (or to now while it runs); None before it starts."""
    if job.started_at is None:
        return None
    end = job.finished_at or now or datetime.now(UTC).replace(tzinfo=None)
    return max(0.0, (end - job.started_at).total_seconds())


def fmt_params(params: Mapping[str, Any] | None) -> str:
    """The musician's choices in one line: style, seed, sensitivity, randomness, loudness, tempo, time
    signature, lyrics."""
    p = dict(params or {})
    parts = []
    if p.get("style"):
        parts.append(str(p["style"]))
    if p.get("seed") is not None:
        parts.append(f"seed {p['seed']}")
    if p.get("sensitivity") is not None:
        parts.append(f"sens {float(p['sensitivity']):.2f}")
    if p.get("randomness") is not None:
        parts.append(f"rand {float(p['randomness']):.2f}")
    if p.get("target_lufs") is not None:
        parts.append(f"{float(p['target_lufs']):g} LUFS")
    parts += tempo_form.fmt_overrides(p)
    if p.get("takes") is not None:
        parts.append(f"{int(p['takes'])} take{'s' if int(p['takes']) != 1 else ''}")
    lyrics = str(p.get("lyrics") or "")
    lines = [ln for ln in lyrics.splitlines() if ln.strip() and not ln.strip().startswith("[")]
    parts.append(f"lyrics: {len(lines)} line{'s' if len(lines) != 1 else ''}" if lines else "vocalise")
    return " · ".join(parts)


def _mark(passed: Mapping[str, Any], key: str) -> str:
    if key not in passed:
        return ""
    return " ✓" if passed[key] else " ✗"


def fmt_checks_short(checks: Mapping[str, Any] | None) -> str:
    """The take's checks in one line for the table: pitch, intelligibility, loudness, peak."""
    c = dict(checks or {})
    if not c:
        return ""
    passed = c.get("passed") or {}
    parts = []
    if c.get("pitch_accuracy") is not None:
        parts.append(f"pitch {float(c['pitch_accuracy']) * 100:.0f}%{_mark(passed, 'pitch_accuracy')}")
    if c.get("word_error_rate") is not None:
        parts.append(f"WER {float(c['word_error_rate']) * 100:.0f}%{_mark(passed, 'intelligibility')}")
    if c.get("integrated_lufs") is not None:
        parts.append(f"{float(c['integrated_lufs']):.1f} LUFS{_mark(passed, 'loudness')}")
    if c.get("true_peak_dbtp") is not None:
        parts.append(f"peak {float(c['true_peak_dbtp']):.1f} dBTP{_mark(passed, 'true_peak')}")
    if c.get("take") is not None and c.get("takes"):
        parts.append(f"take {c['take']}/{c['takes']}" + (" (yours)" if c.get("chosen_by") == "user" else ""))
    return " · ".join(parts)


def checks_markdown(checks: Mapping[str, Any] | None) -> str:
    """The take's checks as a Markdown table: what was measured, the value, the bar and pass/fail."""
    c = dict(checks or {})
    if not c:
        return "_No automatic checks for this job (yet)._"
    passed = c.get("passed") or {}

    def verdict(key: str) -> str:
        if key not in passed:
            return ""
        return "✓ pass" if passed[key] else "✗ fail"

    rows = []
    if "pitch_accuracy" in c:
        v = c["pitch_accuracy"]
        rows.append(("Pitch accuracy", "—" if v is None else f"{float(v) * 100:.1f} %",
                     "≥ 95 % of voiced frames within 50 cents", verdict("pitch_accuracy")))
    if c.get("voiced_fraction") is not None:
        rows.append(("Voiced share of the notes", f"{float(c['voiced_fraction']) * 100:.1f} %", "", ""))
    if c.get("word_error_rate") is not None:
        span = f" ({float(c['intelligibility_seconds']):g} s sung, phrase by phrase)" if c.get("intelligibility_seconds") else ""
        rows.append(("Word error rate", f"{float(c['word_error_rate']) * 100:.1f} %", f"≤ 25 %{span}",
                     verdict("intelligibility")))
    elif c.get("intelligibility_note"):
        rows.append(("Words", "—", str(c["intelligibility_note"]), ""))
    if "integrated_lufs" in c:
        v, target = c["integrated_lufs"], c.get("target_lufs")
        rows.append(("Loudness", "—" if v is None else f"{float(v):.2f} LUFS",
                     "" if target is None else f"{float(target):g} LUFS ± 0.5", verdict("loudness")))
    if "true_peak_dbtp" in c:
        v = c["true_peak_dbtp"]
        rows.append(("True peak", "—" if v is None else f"{float(v):.2f} dBTP", "≤ -1 dBTP", verdict("true_peak")))
    if "clipped_samples" in c:
        rows.append(("Clipped samples", str(c["clipped_samples"]), "0", verdict("no_clipping")))
    out = ["| Check | Value | Bar | Result |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {d} | {e} |" for a, b, d, e in rows]
    if "all_passed" in c:
        out.append("")
        out.append("**All checks passed.**" if c["all_passed"] else "**Some checks did not pass.**")
    return "\n".join(out)


def fmt_progress(progress: float | None) -> str:
    return f"{max(0.0, min(1.0, float(progress or 0.0))) * 100:.0f} %"


def error_text(job: Job) -> str:
    if job.state not in (FAILED, CANCELLED) or not (job.error_code or job.error_message):
        return ""
    return f"{job.error_message or ''} [{job.error_code}]".strip() if job.error_code else str(job.error_message)


def job_rows(job_list: Sequence[Job], now: datetime | None = None) -> list[list[str]]:
    """The dashboard table's rows (columns: TABLE_HEADERS) for one page of jobs."""
    rows = []
    for job in job_list:
        stage = job.stage or ""
        if job.cancel_requested and job.state == RUNNING:
            stage = f"{stage} (cancelling)"
        rows.append([
            fmt_time(job.created_at), job.input_name or "", job.state, stage,
            fmt_progress(1.0 if job.state == SUCCEEDED else job.progress), fmt_duration(job_duration(job, now)),
            fmt_params(job.params), fmt_checks_short(job.checks), error_text(job), job.id[:8],
        ])
    return rows


def page_count(total: int, per_page: int = PER_PAGE) -> int:
    return max(1, math.ceil(max(0, total) / per_page))


def clamp_page(page: float | None, total: int, per_page: int = PER_PAGE) -> int:
    try:
        page = int(page or 1)
    except (TypeError, ValueError):
        page = 1
    return min(max(1, page), page_count(total, per_page))


def page_label(page: int, total: int, per_page: int = PER_PAGE) -> str:
    if total == 0:
        return "No jobs yet — create one on the Create tab."
    first = (page - 1) * per_page + 1
    last = min(total, page * per_page)
    return f"Page {page} of {page_count(total, per_page)} · jobs {first}–{last} of {total} (newest first)"


def status_html(job: Job | None) -> str:
    """The job's state, stage, a progress bar, its per-stage states and (failed) its error."""
    if job is None:
        return ""
    state = job.state
    progress = 1.0 if state == SUCCEEDED else max(0.0, min(1.0, float(job.progress or 0.0)))
    stage = job.stage or ""
    if job.cancel_requested and state == RUNNING:
        stage += " (cancelling…)"
    name = html.escape(job.input_name or "")
    duration = fmt_duration(job_duration(job))
    head = (f'<div class="tmik-head"><span class="tmik-state tmik-state-{html.escape(state)}">{html.escape(state)}'
            f'</span><span>{html.escape(stage)}</span><span>· {progress * 100:.0f} %</span>'
            + (f"<span>· {duration}</span>" if duration else "")
            + f'<span style="color:#6b7280">· {name} · job {html.escape(job.id)}</span></div>')
    fill = f"tmik-fill tmik-fill-{html.escape(state)}" if state in FINISHED else "tmik-fill"
    bar = (f'<div class="tmik-bar" role="progressbar" aria-valuemin="0" aria-valuemax="100" '
           f'aria-valuenow="{progress * 100:.0f}"><div class="{fill}" style="width:{progress * 100:.1f}%">'
           "</div></div>")
    stage_parts = []
    for key in ("melody", "vocal"):
        st = (job.stages or {}).get(key)
        if not st:
            stage_parts.append(f"{key}: waiting")
            continue
        detail = f" — {st['detail']}" if st.get("detail") else ""
        pct = f" {float(st.get('progress') or 0) * 100:.0f} %" if st.get("state") == "running" else ""
        stage_parts.append(f"{key}: {st.get('state', '')}{pct}{detail}")
    stages = f'<div class="tmik-stages">{html.escape(" · ".join(stage_parts))}</div>'
    extra = ""
    if state in (FAILED, CANCELLED) and (job.error_message or job.error_code):
        extra += f'<div class="tmik-error">{html.escape(error_text(job))}</div>'
    for w in (job.warnings or {}).get("messages", [])[:5]:
        extra += f'<div class="tmik-warn">⚠ {html.escape(str(w))}</div>'
    return f'<div class="tmik-status" data-state="{html.escape(state)}">{head}{bar}{stages}{extra}</div>'


def table_frame(rows: list[list[str]], headers: list[str]):
    """A table's value (a DataFrame keeps the headers even with no rows)."""
    import pandas as pd

    return pd.DataFrame(rows, columns=headers)


def error_html(message: str) -> str:
    return f'<div class="tmik-error">{html.escape(message)}</div>' if message else ""


def event_rows(events: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [[fmt_time(e.get("at")), e.get("state", ""), e.get("stage", ""), e.get("message", ""),
             e.get("worker") or ""] for e in events]


def style_choices(styles: Sequence[Mapping[str, Any]] | None) -> list[tuple[str, str]]:
    """Dropdown choices ``(label, name)``; each label carries the style's description."""
    if not styles:
        label = f"{submit.DEFAULT_STYLE} (the vocal-mix service is not reachable; other styles appear when it is)"
        return [(label, submit.DEFAULT_STYLE)]
    return [(f"{s['name']} — {s.get('description', '')}".rstrip(" —"), str(s["name"])) for s in styles]


def style_info(styles: Sequence[Mapping[str, Any]] | None, name: str | None) -> str:
    """Markdown describing the chosen style (its description and the range the melody is written in)."""
    for s in styles or []:
        if s["name"] == name:
            rng = s.get("vocal_range") or []
            extra = (f" Melody range: {plots.note_name(int(rng[0]))}–{plots.note_name(int(rng[1]))}."
                     if len(rng) == 2 else "")
            return f"**{s['name']}**: {s.get('description', '')}{extra}"
    if not styles:
        return ("_The vocal-mix service is not reachable right now, so its styles are not listed; "
                f"`{submit.DEFAULT_STYLE}` is used. Press ↻ to try again._")
    return ""


def ordered_artifacts(names: Sequence[str]) -> list[str]:
    """Artifact names in download order: the song first, the data files last."""
    known = [n for n in ARTIFACTS if n in names]
    rest = sorted(n for n in names if n not in ARTIFACTS and n != "input")
    return known + rest


def artifact_files(cfg, job: Job) -> list[tuple[str, Path]]:
    """The files a job offers for download, as (artifact name, path), in download order; only those
    inside the job's own folders (:func:`submit.resolve_artifact`)."""
    out = []
    for name in ordered_artifacts(list((job.artifacts or {}).keys())):
        path = submit.resolve_artifact(cfg, job, name)
        if path is not None:
            out.append((name, path))
    return out


def fmt_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n / 1048576:.1f} MB"


def rerun_defaults(job: Job) -> dict[str, Any]:
    """The Re-run form's values, taken from the job's parameters."""
    p = dict(job.params or {})
    return {
        "sensitivity": float(p.get("sensitivity", submit.DEFAULT_SENSITIVITY)),
        "randomness": float(p.get("randomness", submit.DEFAULT_RANDOMNESS)),
        "style": str(p.get("style") or submit.DEFAULT_STYLE),
        "seed": "" if p.get("seed") is None else str(p["seed"]),
        "lyrics": str(p.get("lyrics") or ""),
        "target_lufs": float(p.get("target_lufs", DEFAULT_LUFS)),
        "tempo": tempo_form.control_value(p.get("tempo")),
        "time_signature": tempo_form.control_value(p.get("time_signature")),
        "takes": int(p.get("takes") or submit.DEFAULT_TAKES),
    }


def form_params(sensitivity: Any, randomness: Any, style: Any, seed: Any, lyrics: Any,
                target_lufs: Any, tempo: Any = None, time_signature: Any = None, takes: Any = None) -> dict[str, Any]:
    """The raw parameters (as :func:`submit.parse_params` takes them) from the form's values."""
    raw: dict[str, Any] = {"sensitivity": sensitivity, "randomness": randomness, "style": style or None,
                           "seed": "" if seed is None else str(seed).strip(), "lyrics": lyrics or "",
                           "tempo": tempo_form.param_value(tempo),
                           "time_signature": tempo_form.param_value(time_signature)}
    if target_lufs not in (None, ""):
        raw["target_lufs"] = target_lufs
    if takes not in (None, ""):
        raw["takes"] = takes
    return raw


# --------------------------------------------------------------------------- pictures and media


def _newer(target: Path, source: Path) -> bool:
    return target.is_file() and target.stat().st_mtime >= source.stat().st_mtime


def job_plots(cfg, job: Job, cache: Path | None = None) -> tuple[str | None, str | None]:
    """The analysis picture and the melody's piano roll for ``job`` (made once, then kept beside the
    melody in ``melody_results/<job>/``, so they go when the job is deleted)."""
    analysis_path = submit.resolve_artifact(cfg, job, "analysis.json")
    melody_path = submit.resolve_artifact(cfg, job, "melody.json")
    folder = cache / job.id if cache is not None else cfg.shared_data_dir / "melody_results" / job.id
    analysis_png = roll_png = None
    analysis: dict[str, Any] | None = None
    if analysis_path is not None:
        out = folder / "analysis.png"
        try:
            analysis = json.loads(analysis_path.read_text(encoding="utf-8"))
            if not _newer(out, analysis_path):
                samples, rate = _waveform(cfg, job)
                plots.analysis_png(analysis, out, samples, rate, title=job.input_name or None)
            analysis_png = str(out)
        except Exception:  # a picture is never worth failing the page for
            log.exception("cannot draw the analysis of job %s", job.id)
    if melody_path is not None:
        out = folder / "melody.png"
        try:
            if not _newer(out, melody_path):
                melody = json.loads(melody_path.read_text(encoding="utf-8"))
                plots.piano_roll_png(melody, out, chords=(analysis or {}).get("chords"))
            roll_png = str(out)
        except Exception:
            log.exception("cannot draw the melody of job %s", job.id)
    return analysis_png, roll_png


def _waveform(cfg, job: Job):
    from tmik_common.audio import AudioError, load_audio

    path = submit.resolve_artifact(cfg, job, "input")
    if path is None:
        return None, None
    try:
        audio = load_audio(path, sample_rate=4000, mono=True)
    except AudioError:
        return None, None
    return audio.samples, audio.sample_rate


@dataclass
class JobMedia:
    """What the results panel shows for a job. Links are signed URLs of the API's file route."""

    mix: str | None = None  # the player's link
    vocal: str | None = None
    analysis_png: str | None = None  # pictures on disk, inlined into the page
    roll_png: str | None = None
    checks_md: str = ""
    files: list[tuple[str, str, int]] = field(default_factory=list)  # (name, download link, bytes)

    @property
    def empty(self) -> bool:
        return not (self.mix or self.vocal or self.analysis_png or self.roll_png or self.files)


def job_media(cfg, job: Job, links: LinkSigner) -> JobMedia:
    """Everything the results panel shows for a job: players, pictures, checks, downloads. Every link
    is made for the job's owner, so it opens this job's files only, for ``links.ttl_s`` seconds."""
    def link(name: str, download: bool = False) -> str:
        return links.file_url(job.id, name, job.owner, download=download)

    def first(*names: str) -> str | None:
        for name in names:
            if submit.resolve_artifact(cfg, job, name) is not None:
                return link(name)
        return None

    analysis_png, roll_png = job_plots(cfg, job)
    files = [(name, link(name, download=True), path.stat().st_size) for name, path in artifact_files(cfg, job)]
    return JobMedia(mix=first("mix.mp3", "mix.wav"), vocal=first("vocal_fx.wav", "vocal.wav"),
                    analysis_png=analysis_png, roll_png=roll_png,
                    checks_md=checks_markdown(job.checks) if job.state == SUCCEEDED or job.checks else "",
                    files=files)


def player_html(label: str, url: str | None) -> str:
    """A plain ``<audio>`` player of ``url`` (a signed link) with its label and a download link."""
    if not url:
        return ""
    src = html.escape(url, quote=True)
    name = html.escape(url.split("?", 1)[0].rsplit("/", 1)[-1])
    return (f'<div class="tmik-player"><div class="tmik-label">{html.escape(label)}</div>'
            f'<audio controls preload="metadata" src="{src}"></audio>'
            f'<a class="tmik-small" href="{src}&amp;download=1" download="{name}">Download {name}</a></div>')


def picture_html(path: str | None, alt: str) -> str:
    """A picture inlined as a data URI (it is drawn for this page; nothing to serve or to cache)."""
    if not path:
        return ""
    try:
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    except OSError:
        log.exception("cannot read the picture %s", path)
        return ""
    name = html.escape(Path(path).name)
    return (f'<figure class="tmik-picture"><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
            f'<figcaption class="tmik-small">{html.escape(alt)} · <a href="data:image/png;base64,{data}" '
            f'download="{name}">Download {name}</a></figcaption></figure>')


def downloads_html(files: Sequence[tuple[str, str, int]]) -> str:
    """Every file of the job as a download link (a signed link), with what it is and its size."""
    if not files:
        return ""
    items = "".join(f'<li><a href="{html.escape(url, quote=True)}" download="{html.escape(name)}">{html.escape(name)}'
                    f'</a> — {html.escape(ARTIFACTS.get(name, "result file"))} '
                    f'<span class="tmik-small">({fmt_bytes(size)})</span></li>' for name, url, size in files)
    return f'<div class="tmik-files"><div class="tmik-label">Downloads</div><ul>{items}</ul></div>'


# =========================================================================== uploads

SESSION_COOKIE = "tmik_session"  # set by app.app on the first response; names a browser session
UPLOAD_PATHS = ("/gradio_api/upload",)  # Gradio's upload route (app.app records what it stores)
_MAX_SESSIONS = 10_000
_MAX_UPLOADS_PER_SESSION = 200


class UploadRefused(ValueError):
    """The track an event names is not a file this session uploaded."""


def session_of(cookie_header: str | None) -> str | None:
    """The UI session id from a ``Cookie`` header (None when there is none)."""
    if not cookie_header:
        return None
    try:
        jar = SimpleCookie(cookie_header)
    except CookieError:
        return None
    morsel = jar.get(SESSION_COOKIE)
    return morsel.value if morsel is not None and morsel.value else None


def _header(request: gr.Request | None, name: str) -> str | None:
    """One header of the request an event came with (Gradio hands a mapping or, restored, an object)."""
    headers = getattr(request, "headers", None) if request is not None else None
    try:
        value = headers.get(name) if hasattr(headers, "get") else headers[name]  # type: ignore[index]
    except (KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None


class Uploads:
    """Which browser session uploaded which file (through Gradio's upload route), so an event can
    only use a track its own session uploaded: never a path on the server, nor another session's
    upload. Thread-safe; remembers the latest uploads of the most recent sessions."""

    def __init__(self) -> None:
        self._by_session: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, session: str, paths: Iterable[Any]) -> None:
        """The files Gradio's upload route stored for ``session`` (its answer: a list of paths)."""
        with self._lock:
            mine = self._by_session.setdefault(session, OrderedDict())
            self._by_session.move_to_end(session)
            for path in paths:
                if isinstance(path, str) and path:
                    key = os.path.abspath(path)
                    mine[key] = None
                    mine.move_to_end(key)
            while len(mine) > _MAX_UPLOADS_PER_SESSION:
                mine.popitem(last=False)
            while len(self._by_session) > _MAX_SESSIONS:
                self._by_session.popitem(last=False)

    def open(self, session: str | None, path: Any) -> BinaryIO:
        """The upload ``path`` of ``session``, opened for reading (a regular file, not a link; nothing
        is read yet). UploadRefused otherwise."""
        if not isinstance(path, str) or not os.path.isabs(path):
            raise UploadRefused("not an uploaded file")
        key = os.path.abspath(path)  # the folders are Gradio's own; the file itself must not be a link
        with self._lock:
            known = session is not None and key in self._by_session.get(session, ())
        if not known:
            raise UploadRefused("not uploaded in this session")
        try:  # non-blocking: not even a FIFO could hold this thread
            fd = os.open(key, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise UploadRefused(f"cannot be opened ({exc.strerror})") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UploadRefused("not a regular file")
        return os.fdopen(fd, "rb")


# =========================================================================== API keys


class KeyAuth:
    """Gradio's login check when API keys are on: the password is an API key.

    A user name is bound to the key first used with it (for the life of the process), so a second
    person cannot log in under the same name with another key and see the first one's jobs.
    """

    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        self._owners: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def __call__(self, username: str, password: str) -> bool:
        try:
            owner = self.ctx.owner_for_key(password)
        except Unauthorized:
            return False
        with self._lock:
            bound = self._owners.setdefault(username, owner)
        if bound != owner:
            log.warning("UI login refused: user name %r is already used with another API key", username)
            return False
        return True

    def owner(self, username: str | None) -> str | None:
        with self._lock:
            if username in self._owners:
                return self._owners[username]
        raise gr.Error("Your session is no longer logged in; reload the page and log in with your API key.")


AUTH_MESSAGE = ("This server needs an API key. Enter any user name and your API key as the password. "
                "A user name stays tied to the key it was first used with. After 10 wrong keys within a "
                "minute, logins from your address are paused for up to a minute (the form does not react).")

DATABASE_DOWN = "The jobs database cannot be reached right now; try again in a moment."
SERVICE_DOWN = "A service this needs cannot be reached right now; try again in a moment."


def plain_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """An event handler whose database and service faults reach the page as a plain message (never
    the driver's SQL or a service's address; the details go to the log)."""
    @functools.wraps(fn)
    def handler(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SQLAlchemyError:
            log.exception("database error in the web UI (%s)", fn.__name__)
            raise gr.Error(DATABASE_DOWN) from None
        except ServiceUnavailable as exc:
            log.warning("service unavailable in the web UI (%s): %s", fn.__name__, exc)
            raise gr.Error(SERVICE_DOWN) from None
    return handler


# =========================================================================== the Blocks


@dataclass
class _Results:
    """The components of one results panel (the Create tab's, the dashboard's): plain HTML, so no
    result file ever passes through Gradio (see the module's docstring)."""

    box: Any
    mix: Any
    vocal: Any
    analysis: Any
    roll: Any
    checks: Any
    files: Any

    @property
    def outputs(self) -> list[Any]:
        return [self.box, self.mix, self.vocal, self.analysis, self.roll, self.checks, self.files]

    @staticmethod
    def values(media: JobMedia | None) -> list[Any]:
        if media is None or media.empty:
            return [gr.update(visible=False), "", "", "", "", "", ""]
        return [gr.update(visible=True), player_html("Mix (the finished song)", media.mix),
                player_html("Vocal", media.vocal),
                picture_html(media.analysis_png, "Analysis: waveform, beats (grey), downbeats (red), chords, "
                                                 "sections"),
                picture_html(media.roll_png, "Melody: piano roll with the sung syllables"),
                media.checks_md, downloads_html(media.files)]

    @staticmethod
    def unchanged() -> list[Any]:
        return [gr.skip()] * 7


def _results_panel(prefix: str) -> _Results:
    with gr.Column(visible=False, elem_id=f"{prefix}-results") as box:
        with gr.Row():
            mix = gr.HTML(elem_id=f"{prefix}-mix")
            vocal = gr.HTML(elem_id=f"{prefix}-vocal")
        analysis = gr.HTML(elem_id=f"{prefix}-analysis")
        roll = gr.HTML(elem_id=f"{prefix}-roll")
        checks = gr.Markdown(elem_id=f"{prefix}-checks")
        files = gr.HTML(elem_id=f"{prefix}-files")
    return _Results(box, mix, vocal, analysis, roll, checks, files)


def build_ui(ctx: AppContext, auth: KeyAuth | None = None, uploads: Uploads | None = None) -> gr.Blocks:
    """The Gradio app: the Create tab and the Jobs Dashboard, over ``ctx``'s database and services.

    ``uploads`` is filled by the app's wrapper around Gradio's upload route (:mod:`app.app`); the
    Create tab only takes a track found there for the event's session.
    """
    cfg = ctx.cfg
    if ctx.keys_required and auth is None:
        auth = KeyAuth(ctx)
    uploads = uploads if uploads is not None else Uploads()

    def owner_of(request: gr.Request | None) -> str | None:
        if not ctx.keys_required:
            return None
        assert auth is not None
        return auth.owner(getattr(request, "username", None))

    def styles_now() -> list[dict[str, Any]] | None:
        try:
            return ctx.vocal.styles()
        except ServiceUnavailable as exc:
            log.info("vocal styles unavailable: %s", exc)
            return None

    def load_job(job_id: str | None, request: gr.Request | None) -> Job | None:
        if not job_id:
            return None
        try:
            job, _ = jobs.get_job(ctx.sessions, job_id, owner=owner_of(request))
        except jobs.JobNotFound:
            return None
        return job

    limit_mb = cfg.max_upload_bytes / 1048576
    # Gradio's own uploads (its upload folder) are removed after UPLOAD_KEEP_S; each job keeps its own copy.
    with gr.Blocks(title="TMIK — AI music generation", analytics_enabled=False,
                   delete_cache=(UPLOAD_SWEEP_S, UPLOAD_KEEP_S)) as blocks:
        gr.Markdown("# TMIK: upload an instrumental, get back a sung song")
        with gr.Tabs():
            # ------------------------------------------------------------------ Create
            with gr.Tab("Create", id="create") as create_tab:
                with gr.Row():
                    with gr.Column(scale=1):
                        audio_in = gr.Audio(label="Background track", sources=["upload"], type="filepath",
                                            buttons=["download"],
                                            elem_id="create-audio")
                        gr.Markdown(f"Accepted: {submit.accepted_input(ctx.cfg)}; at most {limit_mb:.0f} MB.",
                                    elem_id="create-accepted")
                        lyrics_in = gr.Textbox(label="Lyrics", lines=8, max_lines=30, placeholder=LYRICS_PLACEHOLDER,
                                               info="One sung line per line; [Verse], [Chorus] … tags mark sections. "
                                                    "Empty: a wordless vocalise.", elem_id="create-lyrics")
                    with gr.Column(scale=1):
                        sens_in = gr.Slider(0, 1, value=submit.DEFAULT_SENSITIVITY, step=0.05,
                                            label="Beat Detection Sensitivity",
                                            info="Low: hold a steady tempo grid (loops, electronic music). High: "
                                                 "follow tempo changes and soft onsets (live band, rubato).",
                                            elem_id="create-sensitivity")
                        rand_in = gr.Slider(0, 1, value=submit.DEFAULT_RANDOMNESS, step=0.05,
                                            label="Creative Randomness",
                                            info="Low: safe, predictable melody that repeats its sections. High: "
                                                 "more adventurous notes, rhythms and variation.",
                                            elem_id="create-randomness")
                        with gr.Row():
                            tempo_in = gr.Dropdown(**tempo_form.tempo_control(), elem_id="create-tempo")
                            meter_in = gr.Dropdown(**tempo_form.meter_control(), elem_id="create-time-signature")
                        with gr.Row():
                            style_in = gr.Dropdown(choices=style_choices(None), value=submit.DEFAULT_STYLE,
                                                   label="Vocal Style", scale=5, elem_id="create-style")
                            style_refresh = gr.Button("↻", scale=0, min_width=40, size="sm")
                        style_md = gr.Markdown(elem_id="create-style-info")
                        with gr.Row():
                            seed_in = gr.Textbox(label="Seed", placeholder="blank = random",
                                                 info="The same seed, track and settings give the same song.",
                                                 elem_id="create-seed")
                            lufs_in = gr.Slider(-30, -6, value=DEFAULT_LUFS, step=0.5, label="Target loudness (LUFS)",
                                                info="Integrated loudness of the master; -14 suits streaming.",
                                                elem_id="create-lufs")
                        takes_in = gr.Slider(submit.MIN_TAKES, submit.MAX_TAKES, value=submit.DEFAULT_TAKES, step=1,
                                             label="Takes", info="The voice sings this many takes; the checks keep "
                                             "the best as the song, and you can choose another on the dashboard.",
                                             elem_id="create-takes")
                        generate_btn = gr.Button("Generate Music", variant="primary", elem_id="create-generate")
                create_error = gr.HTML(elem_id="tmik-submit-error")
                create_status = gr.HTML(elem_id="create-status")
                create_results = _results_panel("create")
                create_job = gr.State(None)
                create_timer = gr.Timer(CREATE_POLL_S, active=False)

            # ------------------------------------------------------------------ Jobs Dashboard
            with gr.Tab("Jobs Dashboard", id="dashboard") as dash_tab:
                with gr.Row():
                    first_btn = gr.Button("« First", size="sm", min_width=60)
                    prev_btn = gr.Button("◀ Previous", size="sm", min_width=60)
                    next_btn = gr.Button("Next ▶", size="sm", min_width=60)
                    last_btn = gr.Button("Last »", size="sm", min_width=60)
                    refresh_btn = gr.Button("↻ Refresh", size="sm", min_width=60)
                page_md = gr.Markdown(elem_id="dash-page")
                table = gr.Dataframe(headers=TABLE_HEADERS, value=[], interactive=False, wrap=True,
                                     elem_id="dash-table", max_height=640,
                                     column_widths=["11%", "10%", "7%", "10%", "6%", "7%", "19%", "15%", "10%", "5%"])
                gr.Markdown("Select a row to see the job's details, play and download its results, cancel it or "
                            "run it again with other settings.")
                page_state = gr.State(1)
                ids_state = gr.State([])
                selected = gr.State(None)
                shown_state = gr.State("")  # "<job id>:<state>" whose media the details panel shows
                dash_timer = gr.Timer(DASHBOARD_POLL_S, active=False)
                with gr.Column(visible=False, elem_id="dash-detail") as detail_box:
                    detail_status = gr.HTML(elem_id="dash-status")
                    with gr.Row():
                        cancel_btn = gr.Button("Cancel job", variant="stop", size="sm", visible=False,
                                               elem_id="dash-cancel")
                    detail_md = gr.Markdown(elem_id="dash-detail-md")
                    dash_results = _results_panel("dash")
                    dash_takes = takes_panel.build("dash")
                    dash_versions = versions_panel.build("dash", style_choices(None))
                    with gr.Accordion("Re-run with changed parameters", open=False, elem_id="dash-rerun"):
                        gr.Markdown("A new job on the same track; the settings start as this job's. Blank seed: "
                                    "a new random one.")
                        with gr.Row():
                            r_sens = gr.Slider(0, 1, value=submit.DEFAULT_SENSITIVITY, step=0.05,
                                               label="Beat Detection Sensitivity")
                            r_rand = gr.Slider(0, 1, value=submit.DEFAULT_RANDOMNESS, step=0.05,
                                               label="Creative Randomness")
                        with gr.Row():
                            r_style = gr.Dropdown(choices=style_choices(None), value=submit.DEFAULT_STYLE,
                                                  label="Vocal Style")
                            r_seed = gr.Textbox(label="Seed", placeholder="blank = random", elem_id="dash-rerun-seed")
                            r_lufs = gr.Slider(-30, -6, value=DEFAULT_LUFS, step=0.5, label="Target loudness (LUFS)")
                            r_takes = gr.Slider(submit.MIN_TAKES, submit.MAX_TAKES, value=submit.DEFAULT_TAKES, step=1,
                                                label="Takes", elem_id="dash-rerun-takes")
                        with gr.Row():
                            r_tempo = gr.Dropdown(**tempo_form.tempo_control(), elem_id="dash-rerun-tempo")
                            r_meter = gr.Dropdown(**tempo_form.meter_control(), elem_id="dash-rerun-time-signature")
                        r_lyrics = gr.Textbox(label="Lyrics", lines=5, max_lines=30, placeholder=LYRICS_PLACEHOLDER)
                        rerun_btn = gr.Button("Re-run", variant="primary", elem_id="dash-rerun-btn")
                    with gr.Accordion("History", open=False):
                        events_table = gr.Dataframe(headers=EVENT_HEADERS, value=[], interactive=False, wrap=True,
                                                    elem_id="dash-events")

        # ====================================================================== events: styles
        def refresh_styles(current: str | None, current_r: str | None):
            styles = styles_now()
            names = [s["name"] for s in styles or []]
            value = current if current in names else (submit.DEFAULT_STYLE if not names or submit.DEFAULT_STYLE
                                                      in names else names[0])
            value_r = current_r if current_r in names else value
            choices = style_choices(styles)
            return (gr.update(choices=choices, value=value), style_info(styles, value),
                    gr.update(choices=choices, value=value_r), gr.update(choices=choices))

        style_outputs = [style_in, style_md, r_style, dash_versions.style]
        blocks.load(refresh_styles, [style_in, r_style], style_outputs, show_progress="hidden")
        style_refresh.click(refresh_styles, [style_in, r_style], style_outputs, show_progress="hidden")
        style_in.change(lambda name: style_info(styles_now(), name), style_in, style_md, show_progress="hidden")

        # ====================================================================== events: Create
        @plain_errors
        def generate(audio_path, lyrics, sensitivity, randomness, style, seed, lufs, tempo, meter, takes,
                     request: gr.Request):
            # A plain (not async) handler: Gradio runs it in a worker thread, so reading the track never
            # holds up the event loop.
            owner = owner_of(request)
            refused = [gr.skip()] * 3 + _Results.unchanged()

            def refuse(msg: str) -> list[Any]:
                gr.Warning(msg)
                return [error_html(msg), *refused]

            if not audio_path:
                return refuse(f"Upload a background track first ({submit.accepted_input(ctx.cfg)}).")
            raw = form_params(sensitivity, randomness, style, seed, lyrics, lufs, tempo, meter, takes)
            session = session_of(_header(request, "cookie"))
            try:
                fh = uploads.open(session, audio_path)
            except (UploadRefused, OSError) as exc:
                log.warning("generate refused from %s: %s is %s", getattr(request, "client", None), audio_path,
                            exc if isinstance(exc, UploadRefused) else f"unreadable ({exc})")
                return refuse("Not started (file): use the upload box for the track; the file this request names "
                              "was not uploaded in this browser session (reload the page and upload it again).")
            styles = [s["name"] for s in styles_now() or []] or None
            try:
                with fh:
                    job = submit.submit_job(cfg, ctx.sessions, fh, Path(audio_path).name, raw, owner=owner,
                                            styles=styles)
            except submit.SubmitError as exc:
                where = f" ({exc.field})" if exc.field else ""
                return refuse(f"Not started{where}: {exc.message}")
            except OSError:
                log.exception("generate: cannot read the upload %s", audio_path)
                return refuse("Not started: the upload could not be read; upload it again.")
            return ["", job.id, status_html(job), gr.Timer(active=True), *_Results.values(None)]

        generate_btn.click(
            generate, [audio_in, lyrics_in, sens_in, rand_in, style_in, seed_in, lufs_in, tempo_in, meter_in, takes_in],
            [create_error, create_job, create_status, create_timer, *create_results.outputs],
            concurrency_limit=4)

        @plain_errors
        def follow(job_id, request: gr.Request):
            job = load_job(job_id, request)
            if job is None:
                return ["", gr.Timer(active=False), *_Results.unchanged()]
            if job.state not in FINISHED:
                return [status_html(job), gr.skip(), *_Results.unchanged()]
            return [status_html(job), gr.Timer(active=False), *_Results.values(job_media(cfg, job, ctx.links))]

        create_timer.tick(follow, create_job, [create_status, create_timer, *create_results.outputs],
                          show_progress="hidden", concurrency_limit=None)

        # ====================================================================== events: dashboard
        @plain_errors
        def dash_page(page, selected_id, shown, request: gr.Request):
            """The table for ``page``, and the selected job's status (its media once it changes state)."""
            owner = owner_of(request)
            page = int(page or 1)
            job_list, total = jobs.list_jobs(ctx.sessions, owner=owner, page=page, per_page=PER_PAGE)
            fixed = clamp_page(page, total)
            if fixed != page:
                page = fixed
                job_list, total = jobs.list_jobs(ctx.sessions, owner=owner, page=page, per_page=PER_PAGE)
            out = [page, [j.id for j in job_list], table_frame(job_rows(job_list), TABLE_HEADERS),
                   page_label(page, total)]
            return out + _detail(selected_id, shown, request, full=False)

        def _detail(job_id, shown, request, full: bool) -> list[Any]:
            """Outputs of the details panel; media only when ``full`` or the job's state changed."""
            hidden = [gr.update(visible=False), "", gr.update(visible=False), "", gr.skip(), "",
                      *_Results.values(None), *takes_panel.TakesPanel.values(None, None, None),
                      *versions_panel.VersionsPanel.values(None, None, None, None)]
            if not job_id:
                return hidden
            try:
                job, events = jobs.get_job(ctx.sessions, job_id, owner=owner_of(request), with_events=True)
            except jobs.JobNotFound:
                return hidden
            key = f"{job.id}:{job.state}"
            media = ([*_Results.values(job_media(cfg, job, ctx.links)),
                      *takes_panel.TakesPanel.values(cfg, job, ctx.links),
                      *versions_panel.VersionsPanel.values(cfg, ctx.sessions, job, ctx.links, owner_of(request))]
                     if full or key != shown
                     else [*_Results.unchanged(), *takes_panel.TakesPanel.unchanged(),
                           *versions_panel.VersionsPanel.unchanged()])
            return [gr.update(visible=True), status_html(job),
                    gr.update(visible=job.state in (QUEUED, RUNNING) and not job.cancel_requested),
                    detail_markdown(job, tempo_form.read_analysis(cfg, job)),
                    table_frame(event_rows(events), EVENT_HEADERS), key, *media]

        detail_outputs = [detail_box, detail_status, cancel_btn, detail_md, events_table, shown_state,
                          *dash_results.outputs, *dash_takes.outputs, *dash_versions.outputs]
        page_outputs = [page_state, ids_state, table, page_md, *detail_outputs]

        def goto(delta: int | None, absolute: int | None = None):
            def handler(page, selected_id, shown, request: gr.Request):
                if absolute is not None:
                    target = absolute if absolute > 0 else 10**9  # clamped to the last page
                else:
                    target = max(1, int(page or 1) + int(delta or 0))
                return dash_page(target, selected_id, shown, request)
            return handler

        dash_inputs = [page_state, selected, shown_state]
        first_btn.click(goto(None, 1), dash_inputs, page_outputs, show_progress="hidden")
        prev_btn.click(goto(-1), dash_inputs, page_outputs, show_progress="hidden")
        next_btn.click(goto(1), dash_inputs, page_outputs, show_progress="hidden")
        last_btn.click(goto(None, -1), dash_inputs, page_outputs, show_progress="hidden")
        refresh_btn.click(dash_page, dash_inputs, page_outputs, show_progress="hidden")
        dash_timer.tick(dash_page, dash_inputs, page_outputs, show_progress="hidden", concurrency_limit=None)
        dash_tab.select(lambda: gr.Timer(active=True), None, dash_timer).then(
            dash_page, dash_inputs, page_outputs, show_progress="hidden")
        create_tab.select(lambda: gr.Timer(active=False), None, dash_timer)

        rerun_fields = [r_sens, r_rand, r_style, r_seed, r_lyrics, r_lufs, r_tempo, r_meter, r_takes]

        @plain_errors
        def select_job(ids, evt: gr.SelectData, request: gr.Request):
            row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
            if not isinstance(row, int) or not 0 <= row < len(ids or []):
                return [gr.skip()] * (1 + len(detail_outputs) + len(rerun_fields))
            job_id = ids[row]
            job = load_job(job_id, request)
            if job is None:
                return [None, *_detail(None, "", request, True), *([gr.skip()] * len(rerun_fields))]
            d = rerun_defaults(job)
            levels = (tempo_form.read_analysis(cfg, job) or {}).get("tempo_candidates")
            return [job_id, *_detail(job_id, "", request, True), d["sensitivity"], d["randomness"],
                    d["style"], d["seed"], d["lyrics"], d["target_lufs"],
                    gr.update(choices=tempo_form.tempo_choices(levels, d["tempo"]), value=d["tempo"]),
                    d["time_signature"], d["takes"]]

        table.select(select_job, ids_state, [selected, *detail_outputs, *rerun_fields], show_progress="hidden")

        @plain_errors
        def cancel(job_id, shown, request: gr.Request):
            if job_id:
                try:
                    job = jobs.request_cancel(ctx.sessions, job_id, owner=owner_of(request))
                    gr.Info("Cancelled." if job.state == CANCELLED else "Cancel requested; the job stops within "
                                                                        "a few seconds.")
                except jobs.JobConflict as exc:
                    gr.Warning(str(exc))
                except jobs.JobNotFound:
                    gr.Warning("That job no longer exists.")
            return _detail(job_id, shown, request, False)

        cancel_btn.click(cancel, [selected, shown_state], detail_outputs, show_progress="hidden")

        @plain_errors
        def use_take(job_id, choice, shown, request: gr.Request):
            """The "Use this take" button: the function behind POST /api/jobs/<id>/takes/<n>; the job re-runs."""
            ok, message = takes_panel.use_take(cfg, ctx.sessions, job_id, choice, owner=owner_of(request))
            (gr.Info if ok else gr.Warning)(message)
            return _detail(job_id, shown, request, True)

        dash_takes.button.click(use_take, [selected, dash_takes.choice, shown_state], detail_outputs,
                                show_progress="hidden")

        @plain_errors
        def rerun(job_id, sensitivity, randomness, style, seed, lyrics, lufs, tempo, meter, takes,
                  request: gr.Request):
            owner = owner_of(request)
            job = load_job(job_id, request)
            if job is None:
                gr.Warning("Select a job first.")
                return [gr.skip(), 1]
            styles = [s["name"] for s in styles_now() or []] or None
            raw = form_params(sensitivity, randomness, style, seed, lyrics, lufs, tempo, meter, takes)
            try:
                new = submit.rerun_job(cfg, ctx.sessions, job, raw, owner=owner, styles=styles)
            except submit.SubmitError as exc:
                gr.Warning(f"Not started ({exc.field or exc.code}): {exc.message}")
                return [gr.skip(), gr.skip()]
            gr.Info(f"Queued as job {new.id[:8]}; it is at the top of the list.")
            return [new.id, 1]

        @plain_errors
        def show_new(page, selected_id, request: gr.Request):
            return dash_page(page, selected_id, "", request)

        rerun_btn.click(rerun, [selected, *rerun_fields], [selected, page_state],
                        concurrency_limit=4).then(show_new, [page_state, selected], page_outputs,
                                                  show_progress="hidden")

        @plain_errors
        def make_version(job_id, style, lufs, request: gr.Request):
            """ "Make a version with this voice": the function behind POST /api/jobs/<id>/edits (restyle)."""
            styles = [s["name"] for s in styles_now() or []] or None
            new_id, message = versions_panel.make_version(cfg, ctx.sessions, job_id, style, lufs,
                                                          owner=owner_of(request), styles=styles)
            if new_id is None:
                gr.Warning(message)
                return [gr.skip(), gr.skip()]
            gr.Info(message)
            return [new_id, 1]

        dash_versions.button.click(make_version, [selected, dash_versions.style, dash_versions.lufs],
                                   [selected, page_state], concurrency_limit=4).then(
            show_new, [page_state, selected], page_outputs, show_progress="hidden")

        blocks.queue(default_concurrency_limit=4)
    return blocks


def detail_markdown(job: Job, analysis: Mapping[str, Any] | None = None) -> str:
    """The selected job's facts: track, times, parameters, the analysed meter (from ``analysis``, its
    analysis.json), lyrics, attempts, error."""
    p = dict(job.params or {})
    lines = [
        f"**Job** `{job.id}` · **track** {job.input_name or '—'}"
        + (f" ({float(p['input_seconds']):.1f} s)" if p.get("input_seconds") else ""),
        "",
        (f"**Created** {fmt_time(job.created_at)} UTC · **started** {fmt_time(job.started_at) or '—'} · "
         f"**finished** {fmt_time(job.finished_at) or '—'} · **duration** {fmt_duration(job_duration(job)) or '—'}"
         f" · **attempts** {job.attempts}"),
        "",
        f"**Parameters**: {fmt_params(p)}",
    ]
    if meter := tempo_form.analysis_markdown(analysis, p):
        lines += ["", meter]
    if p.get("lyrics"):
        quoted = "\n".join(f"> {ln}  " if ln.strip() else ">" for ln in str(p["lyrics"]).splitlines())
        lines += ["", quoted]
    if job.state in (FAILED, CANCELLED) and (job.error_message or job.error_code):
        lines += ["", f"**Error** (`{job.error_code}`): {job.error_message or ''}"]
    return "\n".join(lines)
