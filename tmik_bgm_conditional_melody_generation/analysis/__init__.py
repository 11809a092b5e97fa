"""Music analysis of a background track: beats, downbeats, meter, key, chords, sections."""

from tmik_common.tasks import Cancelled

from .pipeline import ProgressCallback, analyze, analyze_file, warm_up
from .result import Analysis

__all__ = ["Analysis", "Cancelled", "ProgressCallback", "analyze", "analyze_file", "warm_up"]
