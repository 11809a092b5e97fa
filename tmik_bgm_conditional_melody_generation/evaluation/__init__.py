"""Evaluation of the analysis: development set, accuracy (``make eval``) and speed (``make bench``)."""
