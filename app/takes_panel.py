"""The Jobs Dashboard's Takes section: every take of a job, which one is the result and why, and "Use this take".

Each take gets a player of its ``take<n>_mix.mp3`` (a signed link to the API's file route, like the other
players: nothing passes through Gradio), its figures from takes.json (word error rate, pitch accuracy, the
checks' score, the phrases sung again) and a mark on the one that is the result, with the reason the checks
gave or "chosen by you". Choosing another take calls :func:`app.takes.choose_take`, the function behind
``POST /api/jobs/<id>/takes/<n>``; the job is then queued and remixes that take, and the dashboard shows it
running. :mod:`app.ui` places the section (:func:`build`) and wires its button; the rest is plain data,
tested in ``tests/test_takes_app.py``.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gradio as gr
from sqlalchemy.orm import Session, sessionmaker

from . import jobs, submit, takes
from .access import LinkSigner
from .config import Config
from .models import QUEUED, RUNNING, Job

log = logging.getLogger(__name__)

CSS = """
.tmik-takes { display: flex; flex-direction: column; gap: 0.6em; }
.tmik-take { padding: 0.5em 0.7em; border: 1px solid #e5e7eb; border-radius: 0.4em; }
.tmik-take-chosen { border-color: #16a34a; background: #f0fdf4; }
.tmik-take-figures { font-size: 0.88em; color: #374151; margin-top: 0.25em; }
"""


def artifact_descriptions(most: int = submit.MAX_TAKES) -> dict[str, str]:
    """What the take files are, for the downloads list (after the song's own files)."""
    out = {"takes.json": "every take's checks, and which one is the song and why (JSON)"}
    for n in range(1, most + 1):
        out[f"take{n}_mix.mp3"] = f"take {n} over the background (MP3, for listening)"
        out[f"take{n}_vocal.wav"] = f"take {n}'s dry vocal"
    return out


def _percent(value: Any) -> str:
    return "—" if value is None else f"{float(value) * 100:.0f} %"


def take_figures(take: Mapping[str, Any]) -> str:
    """A take's figures in one line: word error rate, pitch accuracy, score, the phrases sung again."""
    parts = [f"word error rate {_percent(take.get('word_error_rate'))}",
             f"pitch accuracy {_percent(take.get('pitch_accuracy'))}"]
    if take.get("score") is not None:
        parts.append(f"score {float(take['score']):.2f}")
    resung = take.get("resung_phrases")
    if isinstance(resung, list):
        if take.get("take") == 1 or not resung:
            parts.append("every phrase sung" if take.get("take") == 1 else "no phrase sung again")
        else:
            parts.append(f"phrases sung again: {', '.join(str(int(k) + 1) for k in resung)}")
    if take.get("seed") is not None:
        parts.append(f"seed {take['seed']}")
    return " · ".join(parts)


def chosen_text(record: Mapping[str, Any], job: Job) -> str:
    """Which take is the result and why, and (while the job remixes) the take the musician chose."""
    count = len(record.get("takes") or [])
    chosen = record.get("chosen")
    if record.get("chosen_by") == takes.CHOSEN_BY_USER:
        why = "chosen by you"
    else:
        why = f"chosen by the checks: {record.get('reason') or 'the best score'}"
    text = f"Take {chosen} of {count} is the song — {why}."
    requested = (job.params or {}).get("take")
    if job.state in (QUEUED, RUNNING) and isinstance(requested, int):
        text += f" Remixing take {requested} (your choice) now…"
    return text


def takes_html(cfg: Config, job: Job, links: LinkSigner, record: Mapping[str, Any] | None = None) -> str:
    """The Takes section's HTML: what was chosen and why, then each take's player and figures."""
    from .ui import player_html  # ui imports this module

    record = record if record is not None else takes.read_takes(cfg, job)
    if not record or not record.get("takes"):
        return ""
    cards = []
    for take in record["takes"]:
        n = take["take"]
        files = takes.take_files(cfg, job, take)
        url = links.file_url(job.id, files["mix_mp3"], job.owner) if "mix_mp3" in files else None
        is_chosen = n == record.get("chosen")
        label = f"Take {n}" + (" — the song" if is_chosen else "")
        player = player_html(label, url) or f'<div class="tmik-label">{html.escape(label)} (no mix to play)</div>'
        cls = "tmik-take tmik-take-chosen" if is_chosen else "tmik-take"
        cards.append(f'<div class="{cls}" data-take="{int(n)}">{player}'
                     f'<div class="tmik-take-figures">{html.escape(take_figures(take))}</div></div>')
    head = f'<div class="tmik-label">{html.escape(chosen_text(record, job))}</div>'
    return f'<div class="tmik-takes">{head}{"".join(cards)}</div>'


def take_choices(record: Mapping[str, Any] | None) -> list[tuple[str, int]]:
    """The take dropdown's (label, take) choices."""
    out = []
    for take in (record or {}).get("takes") or []:
        n = take["take"]
        extra = " (the song)" if n == (record or {}).get("chosen") else ""
        score = f" — score {float(take['score']):.2f}" if take.get("score") is not None else ""
        out.append((f"Take {n}{score}{extra}", int(n)))
    return out


def use_take(cfg: Config, sessions: sessionmaker[Session], job_id: str | None, choice: Any,
             owner: str | None = None) -> tuple[bool, str]:
    """Make take ``choice`` the song of job ``job_id`` (as ``POST /api/jobs/<id>/takes/<n>`` does):
    (True, what happens now) or (False, why not)."""
    if not job_id:
        return False, "Select a job first."
    try:
        take = int(choice)
    except (TypeError, ValueError):
        return False, "Choose a take first."
    try:
        takes.choose_take(cfg, sessions, job_id, take, owner=owner)
    except jobs.JobNotFound:
        return False, "That job no longer exists."
    except jobs.JobConflict as exc:
        return False, str(exc)
    except takes.TakeNotFound as exc:
        return False, exc.message
    return True, f"Take {take} chosen; the job remixes it now (nothing is sung again)."


@dataclass
class TakesPanel:
    """The components of the Takes section."""

    box: Any
    view: Any
    choice: Any
    button: Any

    @property
    def outputs(self) -> list[Any]:
        return [self.box, self.view, self.choice, self.button]

    @staticmethod
    def values(cfg: Config | None, job: Job | None, links: LinkSigner | None) -> list[Any]:
        record = takes.read_takes(cfg, job) if cfg is not None and job is not None else None
        if job is None or not record or not record.get("takes"):
            return [gr.update(visible=False), "", gr.update(choices=[], value=None), gr.update(interactive=False)]
        assert cfg is not None and links is not None
        choices = take_choices(record)
        return [gr.update(visible=True), takes_html(cfg, job, links, record),
                gr.update(choices=choices, value=record.get("chosen")),
                gr.update(interactive=takes.can_choose(job))]

    @staticmethod
    def unchanged() -> list[Any]:
        return [gr.skip()] * 4


def build(prefix: str) -> TakesPanel:
    """The Takes section (hidden until the job has takes); ``app.ui`` wires its button."""
    with gr.Accordion("Takes", open=True, visible=False, elem_id=f"{prefix}-takes") as box:
        view = gr.HTML(elem_id=f"{prefix}-takes-list")
        with gr.Row():
            choice = gr.Dropdown(choices=[], value=None, label="Take", scale=3, elem_id=f"{prefix}-take-choice",
                                 info="The take to make the song: its vocal is remixed, nothing is sung again.")
            button = gr.Button("Use this take", variant="primary", scale=1, interactive=False,
                               elem_id=f"{prefix}-use-take")
    return TakesPanel(box, view, choice, button)
