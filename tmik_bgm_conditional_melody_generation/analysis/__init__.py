"""Music analysis of a background track: beats, downbeats, meter, key, chords, sections."""

from .pipeline import Cancelled, ProgressCallback, analyze, analyze_file, warm_up
from .result import Analysis

__all__ = ["Analysis", "Cancelled", "ProgressCallback", "analyze", "analyze_file", "warm_up"]
