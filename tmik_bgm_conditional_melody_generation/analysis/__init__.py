"""Music analysis of a background track: beats, downbeats, meter, key, chords, sections."""

from tmik_common.tasks import Cancelled
from tmik_common.tempo import TEMPO_LEVELS, TIME_SIGNATURES

from .pipeline import (
    ProgressCallback,
    TempoRequest,
    analyze,
    analyze_file,
    check_tempo,
    check_time_signature,
    warm_up,
)
from .result import Analysis

__all__ = [
    "TEMPO_LEVELS",
    "TIME_SIGNATURES",
    "Analysis",
    "Cancelled",
    "ProgressCallback",
    "TempoRequest",
    "analyze",
    "analyze_file",
    "check_tempo",
    "check_time_signature",
    "warm_up",
]
