"""The vocal-mix service package: lyrics and phonemes, note/syllable alignment, singing engines and
vocal styles, mixing and mastering, and exports (MIDI with lyrics, MusicXML, .svp, .ustx, stems).

Implemented in a later issue; see shared/DESIGN.md for its contracts.
"""
