"""The vocal-mix service package: lyrics and phonemes, note/syllable alignment, singing engines and
vocal styles, mixing and mastering, and exports (MIDI with lyrics, MusicXML, .svp, .ustx, stems).

Entry points: ``render.py`` (CLI and :func:`render.run_render`); see shared/DESIGN.md for its contracts.
"""

__version__ = "0.1.0"
