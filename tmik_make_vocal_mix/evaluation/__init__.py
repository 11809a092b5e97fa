"""Evaluation of the vocal mix (``make eval`` / ``make bench``): intelligibility, quality targets, speed."""
