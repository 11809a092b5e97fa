"""Key estimation from chroma and chords: the dominant and relative-key confusions."""

from __future__ import annotations

import numpy as np

from tmik_bgm_conditional_melody_generation.analysis.key import MAJOR_PROFILE, MINOR_PROFILE, estimate_key


def chroma_of(*chords: tuple[int, ...]) -> np.ndarray:
    c = np.zeros(12)
    for tones in chords:
        c[list(tones)] += 1.0
    return c


def test_profiles_alone_find_an_unambiguous_key():
    assert estimate_key(np.roll(MAJOR_PROFILE, 7), []) == "G major"
    assert estimate_key(np.roll(MINOR_PROFILE, 9), []) == "A minor"


def test_tonic_and_dominant_alone_give_the_tonic_not_the_dominant():
    # A tune that sits on its dominant D more than on its tonic G and ends on G: the pitch
    # classes alone say D major; the chords' functions and the final chord say G major.
    g, d = (7, 11, 2), (2, 6, 9)
    chords = [(7, "maj", 1.0), (2, "maj", 2.0)] * 8 + [(7, "maj", 1.0)]
    assert estimate_key(chroma_of(g, d, d), chords) == "G major"


def test_minor_key_with_its_major_dominant_beats_the_relative_major():
    # A minor with long stays on C major: the profile alone says C major, the E major
    # dominant and the final A minor say A minor.
    am, c, e = (9, 0, 4), (0, 4, 7), (4, 8, 11)
    chords = [(9, "min", 1.0), (0, "maj", 2.0), (4, "maj", 1.0)] * 4 + [(9, "min", 1.0)]
    assert estimate_key(chroma_of(am, c, c, e), chords) == "A minor"
