"""Background-conditioned melody generation: audio analysis, GETScore/GETDiff, HTTP service."""

__version__ = "0.1.0"
