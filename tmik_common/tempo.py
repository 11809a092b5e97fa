"""The musician's override of the analysed meter: the tempo a singer counts and the time signature.

The beat tracker picks a metrical level (:mod:`tmik_bgm_conditional_melody_generation.analysis`);
when the musician hears another one, they set it and the analysis is run again at that level:

* ``tempo``: ``None`` (automatic), a number of beats per minute from :data:`MIN_BPM` to
  :data:`MAX_BPM`, or ``"half"`` / ``"double"`` (the level below or above the detected tempo);
* ``time_signature``: ``None`` (automatic) or one of :data:`TIME_SIGNATURES`.

Every surface (the REST API, the web UI, both CLIs, the melody service's task params) checks the
values with :func:`tempo_override` and :func:`time_signature_override`, so they accept and refuse
the same things with the same words.

>>> tempo_override("108"), tempo_override("half"), tempo_override(""), time_signature_override("6/8")
(108.0, 'half', None, '6/8')
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "MAX_BPM",
    "MIN_BPM",
    "TEMPO_LEVELS",
    "TEMPO_RULE",
    "TIME_SIGNATURES",
    "TIME_SIGNATURE_RULE",
    "tempo_override",
    "time_signature_override",
]

MIN_BPM = 30.0  # beats per minute
MAX_BPM = 300.0
TEMPO_LEVELS = ("half", "double")  # half or twice the tempo the analysis detects
TIME_SIGNATURES = ("2/4", "3/4", "4/4", "6/8", "12/8")
TEMPO_RULE = (f"a number of beats per minute from {MIN_BPM:g} to {MAX_BPM:g}, or 'half' or 'double' "
              "(the detected tempo halved or doubled)")
TIME_SIGNATURE_RULE = f"one of {', '.join(TIME_SIGNATURES)}"


def tempo_override(value: Any, name: str = "tempo", *, text_numbers: bool = True) -> float | str | None:
    """The tempo override in ``value``: None (automatic), a BPM (float) or ``"half"``/``"double"``.

    ``None`` and ``""`` mean automatic. A number (or, when ``text_numbers``, a number written as
    text, as form fields send it) must lie within MIN_BPM..MAX_BPM. Raises ``ValueError`` whose
    message names ``name``, the value and what is allowed.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str) and value.strip() in TEMPO_LEVELS:
        return value.strip()
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and text_numbers:
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or not MIN_BPM <= number <= MAX_BPM:
        raise ValueError(f"{name} must be {TEMPO_RULE}, got {value!r}; leave it empty for automatic")
    return number


def time_signature_override(value: Any, name: str = "time_signature") -> str | None:
    """The time signature override in ``value``: None (automatic; also for ``""``) or one of
    :data:`TIME_SIGNATURES`. Raises ``ValueError`` naming ``name``, the value and what is allowed."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str) and value.strip() in TIME_SIGNATURES:
        return value.strip()
    raise ValueError(f"{name} must be {TIME_SIGNATURE_RULE}, got {value!r}; leave it empty for automatic")
