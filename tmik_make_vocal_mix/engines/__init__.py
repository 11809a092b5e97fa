"""Singing engines: turn a :class:`~tmik_make_vocal_mix.score.VocalScore` into a vocal waveform."""
