"""Vocal styles: the spec's "Vocal Style" parameter, as named presets that really differ.

A style fixes what the musician hears: which engine sings, the range the melody must stay
in (the melody service is told it, so it writes notes the voice can sing), how the shipped
neural voice sings (it is accurate in about D3-E5; notes far outside are sung there by
octaves and moved back by WORLD), vibrato, breathiness, formant shift (voice colour), doubling and
the effect chain (:data:`..mixing.FX_PRESETS`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

DEFAULT_STYLE = "pop_bright"


@dataclass(frozen=True)
class VocalStyle:
    """One preset. Ranges are MIDI pitches (inclusive)."""

    name: str
    description: str
    low: int
    high: int
    engine: str  # "neural": the neural voice as is; "world": neural voice re-pitched/re-coloured by WORLD
    formant_shift: float  # >1 brighter/smaller, <1 darker/larger voice colour
    vibrato_cents: float
    breathiness: float  # 0..1 noise mixed into the voice
    doubles: int  # extra detuned, slightly offset voices (0 = solo)
    fx: str  # key of mixing.FX_PRESETS
    vocal_offset_db: float  # the vocal's level over the background in sung passages
    vowel: str  # the open vowel of a vocalise (no lyrics)
    # key of expression.EXPRESSIONS: how it sings pitch (vibrato, scoops, glides...); "" = the style's name
    expression: str = ""

    def __post_init__(self) -> None:
        if not self.expression:
            object.__setattr__(self, "expression", self.name)

    def to_dict(self) -> dict:
        return asdict(self)


STYLES: dict[str, VocalStyle] = {s.name: s for s in (
    VocalStyle("pop_bright", "Bright, present pop lead: close, compressed, a short plate reverb.",
               55, 72, "neural", 1.0, 28.0, 0.05, 0, "pop_bright", 2.0, "a"),
    VocalStyle("soft_breathy", "Soft, breathy and intimate: gentle vibrato, airy top, long warm reverb.",
               55, 69, "world", 1.03, 18.0, 0.35, 0, "soft_breathy", 1.0, "u"),
    VocalStyle("low_warm", "Low, warm voice an octave down (baritone colour): darker formants, little air.",
               45, 60, "world", 0.84, 22.0, 0.08, 0, "low_warm", 1.5, "o"),
    # The neural voice sings choir's range as it is; the doubles are its own take, detuned and offset
    # phrase by phrase (WORLD re-singing would only blur the words, and costs 15 s a song).
    VocalStyle("choir", "Doubled choir lead: four detuned, slightly offset voices in a wide hall.",
               55, 72, "neural", 1.0, 20.0, 0.12, 3, "choir", 0.5, "a"),
    VocalStyle("ballad", "Ballad voice: wide vibrato on long notes, warm EQ, long delay and reverb.",
               53, 70, "neural", 1.0, 38.0, 0.1, 0, "ballad", 1.5, "o"),
)}


class StyleError(ValueError):
    def __init__(self, name: str):
        self.code = "unknown_style"
        self.message = f"unknown vocal style {name!r}; choose one of: {', '.join(STYLES)}"
        super().__init__(self.message)


def get_style(name: str | None) -> VocalStyle:
    """The style called ``name`` (default :data:`DEFAULT_STYLE`)."""
    name = name or DEFAULT_STYLE
    if name not in STYLES:
        raise StyleError(name)
    return STYLES[name]


def list_styles() -> list[dict]:
    """Every style with its description and range, for the API, the CLI and the melody service."""
    return [{"name": s.name, "description": s.description, "vocal_range": [s.low, s.high]} for s in STYLES.values()]
