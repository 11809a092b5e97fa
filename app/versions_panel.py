"""The Jobs Dashboard's Versions section: every version of the selected job's song, and "New version".

Each version shows its number, its state, what changed from the job it was made from (a re-run's changed
settings, an edit's kind and changes) and, once it has succeeded, a player of its ``mix.mp3`` (else ``mix.wav``) (a signed link
to the API's file route, as the other players). "Make a version with this voice" calls
:func:`app.versions.make_edit`, the function behind ``POST /api/jobs/<id>/edits``: the new job keeps this
job's melody and sings it in the chosen style and loudness (only the vocal stage runs); the dashboard then
selects it. :mod:`app.ui` places the section (:func:`build`) and wires its button; the rest is plain data,
tested in ``tests/test_versions.py``.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr
from sqlalchemy.orm import Session, sessionmaker

from . import jobs, submit, versions
from .access import LinkSigner
from .config import Config
from .models import SUCCEEDED, Job

log = logging.getLogger(__name__)

CSS = """
.tmik-versions { display: flex; flex-direction: column; gap: 0.5em; }
.tmik-version { padding: 0.45em 0.7em; border: 1px solid #e5e7eb; border-radius: 0.4em; }
.tmik-version-current { border-color: #2563eb; background: #eff6ff; }
"""
# The song's mix, as the results panel plays it: the MP3, else the WAV.
MIXES = ("mix.mp3", "mix.wav")
DEFAULT_LUFS = -14.0


def version_line(job: Job) -> str:
    """ "Version 2 · succeeded · restyle (style low_warm)" for one version."""
    edit = (job.params or {}).get("edit")
    how = versions.edit_summary(edit) if isinstance(edit, dict) else "the original"
    return f"Version {job.version or 1} · {job.state} · {how}"


def versions_html(cfg: Config, links: LinkSigner, family: list[Job], current: str | None) -> str:
    """The section's HTML: one card per version (the selected one marked), a player for each finished mix."""
    from .ui import player_html  # ui imports this module

    cards = []
    for job in family:
        url = None
        if job.state == SUCCEEDED:
            mix = next((name for name in MIXES if submit.resolve_artifact(cfg, job, name) is not None), None)
            url = None if mix is None else links.file_url(job.id, mix, job.owner)
        label = version_line(job) + (" — shown" if job.id == current else "")
        player = player_html(label, url) or f'<div class="tmik-label">{html.escape(label)}</div>'
        cls = "tmik-version tmik-version-current" if job.id == current else "tmik-version"
        cards.append(f'<div class="{cls}" data-version="{int(job.version or 1)}">{player}</div>')
    return f'<div class="tmik-versions">{"".join(cards)}</div>'


def make_version(cfg: Config, sessions: sessionmaker[Session], job_id: str | None, style: Any, lufs: Any, *,
                 owner: str | None = None, styles: list[str] | None = None) -> tuple[str | None, str]:
    """A restyle of job ``job_id`` (as ``POST /api/jobs/<id>/edits`` makes): (the new job's id, what happens
    now) or (None, why not)."""
    if not job_id:
        return None, "Select a job first."
    body: dict[str, Any] = {"kind": versions.RESTYLE, "style": style or None}
    if lufs not in (None, ""):
        try:
            body["target_lufs"] = float(lufs)
        except (TypeError, ValueError):
            return None, f"Not made (target_lufs): {lufs!r} is not a number."
    try:
        new = versions.make_edit(cfg, sessions, job_id, body, owner=owner, styles=styles)
    except jobs.JobNotFound:
        return None, "That job no longer exists."
    except jobs.JobConflict as exc:
        return None, str(exc)
    except submit.SubmitError as exc:
        return None, f"Not made ({exc.field or exc.code}): {exc.message}"
    return new.id, (f"Version {new.version} queued as job {new.id[:8]}: the same melody, sung as "
                    f"{new.params['style']}; only the voice is made again.")


@dataclass
class VersionsPanel:
    """The components of the Versions section."""

    box: Any
    view: Any
    style: Any
    lufs: Any
    button: Any

    @property
    def outputs(self) -> list[Any]:
        return [self.box, self.view, self.style, self.lufs, self.button]

    @staticmethod
    def values(cfg: Config | None, sessions: sessionmaker[Session] | None, job: Job | None,
               links: LinkSigner | None, owner: str | None = None) -> list[Any]:
        if cfg is None or sessions is None or job is None or links is None:
            return [gr.update(visible=False), "", gr.skip(), gr.skip(), gr.update(interactive=False)]
        try:
            _root, family = versions.family(sessions, job.id, owner=owner)
        except jobs.JobNotFound:  # deleted meanwhile
            return [gr.update(visible=False), "", gr.skip(), gr.skip(), gr.update(interactive=False)]
        params = job.params or {}
        return [gr.update(visible=True), versions_html(cfg, links, family, job.id),
                gr.update(value=params.get("style", submit.DEFAULT_STYLE)),
                params.get("target_lufs", DEFAULT_LUFS), gr.update(interactive=job.state == SUCCEEDED)]

    @staticmethod
    def unchanged() -> list[Any]:
        return [gr.skip()] * 5


def build(prefix: str, style_choices: list[tuple[str, str]]) -> VersionsPanel:
    """The Versions section (hidden until a job is selected); ``app.ui`` wires its button and its styles."""
    with gr.Accordion("Versions", open=True, visible=False, elem_id=f"{prefix}-versions") as box:
        view = gr.HTML(elem_id=f"{prefix}-versions-list")
        with gr.Row():
            style = gr.Dropdown(choices=style_choices, value=submit.DEFAULT_STYLE, label="Vocal Style", scale=2,
                                elem_id=f"{prefix}-version-style",
                                info="A new version keeps this job's melody; only the voice is sung again.")
            lufs = gr.Number(value=DEFAULT_LUFS, minimum=-30, maximum=-6, step=0.5, label="Target loudness (LUFS)",
                             scale=1, elem_id=f"{prefix}-version-lufs")
            button = gr.Button("Make a version with this voice", variant="primary", scale=1, interactive=False,
                               elem_id=f"{prefix}-make-version")
    return VersionsPanel(box, view, style, lufs, button)
