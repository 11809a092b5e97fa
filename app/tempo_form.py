"""The web UI's tempo and time-signature controls, and what a job's detail says about its meter.

A musician who hears the melody counted at the wrong level (a 108 BPM rock track read as 54 BPM)
sets the tempo, as the BPM a singer counts or as half / double the detected one, and the time
signature; the analysis is then run at that level (the rules are :mod:`tmik_common.tempo`'s). The
job detail shows what the analysis found and the other levels it weighed (analysis.json's
``tempo_candidates``), and the re-run form offers those levels as choices. :mod:`app.ui` lays the
controls out; everything here is plain data, tested in ``tests/test_ui.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from tmik_common.tempo import MAX_BPM, MIN_BPM, TIME_SIGNATURES

from . import submit
from .models import Job

log = logging.getLogger(__name__)

AUTO = "auto"  # the controls' value for "automatic": the job's params then hold no tempo / time_signature
_TEMPO_FIXED = [("Automatic", AUTO), ("Half the detected tempo", "half"), ("Double the detected tempo", "double")]
_LEVEL_WORDS = {"chosen": "detected", "half": "half time", "double": "double time", "third": "a third",
                "triple": "triple"}


def tempo_choices(candidates: Sequence[Mapping[str, Any]] | None = None, current: str = AUTO) -> list[tuple[str, str]]:
    """The tempo dropdown's (label, value) choices: automatic, half, double, then each tempo level the
    analysis weighed (value: its BPM), and ``current`` when it is a BPM of none of them."""
    choices = list(_TEMPO_FIXED)
    for c in candidates or []:
        try:
            bpm, score = round(float(c["bpm"]), 1), float(c["score"])
        except (KeyError, TypeError, ValueError):
            continue
        if MIN_BPM <= bpm <= MAX_BPM:
            level = _LEVEL_WORDS.get(str(c.get("level")), str(c.get("level", "")))
            choices.append((f"{bpm:g} BPM ({level}, score {score:.2f})", f"{bpm:g}"))
    if current not in {value for _, value in choices}:
        choices.append((f"{current} BPM", current))
    return choices


def tempo_control(candidates: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The tempo dropdown's settings (``gr.Dropdown(**tempo_control())``): a choice, or a typed BPM."""
    return {"choices": tempo_choices(candidates), "value": AUTO, "allow_custom_value": True,
            "label": "Tempo (BPM a singer counts)",
            "info": f"Automatic, half or double the detected tempo, or type a BPM ({MIN_BPM:g}–{MAX_BPM:g}). "
                    "The analysis is run at that level."}


def meter_control() -> dict[str, Any]:
    """The time-signature dropdown's settings (``gr.Dropdown(**meter_control())``)."""
    return {"choices": [("Automatic", AUTO), *[(ts, ts) for ts in TIME_SIGNATURES]], "value": AUTO,
            "label": "Time signature", "info": "Automatic, or the meter the bars are counted in."}


def param_value(value: Any) -> str:
    """A control's value as :func:`app.submit.parse_params` takes it: ``""`` for automatic, a choice's
    value for its label (what a typed label gives), a typed ``"120 BPM"`` as ``"120"``."""
    text = "" if value is None else str(value).strip()
    labels = {label.lower(): v for label, v in _TEMPO_FIXED}
    text = labels.get(text.lower(), text)
    if text.lower().endswith("bpm"):
        text = text[:-3].strip()
    return "" if text == AUTO else text


def control_value(value: Any) -> str:
    """The value a control shows for a job's stored ``tempo`` / ``time_signature`` (absent: automatic)."""
    if value is None or value == "":
        return AUTO
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def fmt_overrides(params: Mapping[str, Any]) -> list[str]:
    """The tempo and time signature a job was asked to run at, for its one-line summary."""
    parts = []
    tempo = params.get("tempo")
    if tempo is not None:
        parts.append(f"{tempo} tempo" if isinstance(tempo, str) else f"{float(tempo):g} BPM")
    if params.get("time_signature"):
        parts.append(str(params["time_signature"]))
    return parts


def read_analysis(cfg, job: Job) -> dict[str, Any] | None:
    """The job's analysis.json, or None while there is none (or it cannot be read)."""
    path = submit.resolve_artifact(cfg, job, "analysis.json")
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("cannot read the analysis of job %s", job.id)
        return None
    return data if isinstance(data, dict) else None


def analysis_markdown(analysis: Mapping[str, Any] | None, params: Mapping[str, Any]) -> str:
    """What the analysis found about the meter, whether the musician set it, and the other tempo levels
    it weighed (Markdown; empty while there is no analysis)."""
    if not analysis or analysis.get("tempo") is None:
        return ""
    text = f"**Analysed**: {float(analysis['tempo']):.1f} BPM in {analysis.get('time_signature', '?')}"
    asked = fmt_overrides(params)
    text += f" (you asked for {', '.join(asked)})" if asked else " (automatic)"
    levels = [f"{float(c['bpm']):.1f} BPM ({_LEVEL_WORDS.get(str(c.get('level')), c.get('level'))}, "
              f"{float(c['score']):.2f})" for c in analysis.get("tempo_candidates") or []
              if isinstance(c, Mapping) and "bpm" in c and "score" in c]
    if levels:
        text += ("  \n**Tempo levels weighed**: " + " · ".join(levels)
                 + ". If the beat is counted wrong, re-run at another tempo below.")
    return text
