"""The analysis result, as written to analysis.json (see shared/DESIGN.md)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Analysis:
    """Everything the melody generator needs to know about a background track.

    All times are seconds on the input file's own timeline. ``key`` uses mir_eval's form
    ("G major", "E minor"); chords are Harte labels ("G:maj", "N").
    """

    duration: float
    tempo: float
    time_signature: str
    beats: list[float]
    downbeats: list[float]
    key: str
    chords: list[tuple[float, float, str]] = field(default_factory=list)
    sections: list[tuple[float, float, str]] = field(default_factory=list)
    tempo_candidates: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        r3 = lambda x: round(float(x), 3)
        return {
            "duration": r3(self.duration),
            "tempo": round(float(self.tempo), 2),
            "time_signature": self.time_signature,
            "beats": [r3(b) for b in self.beats],
            "downbeats": [r3(b) for b in self.downbeats],
            "key": self.key,
            "chords": [[r3(s), r3(e), lab] for s, e, lab in self.chords],
            "sections": [[r3(s), r3(e), lab] for s, e, lab in self.sections],
            "tempo_candidates": [
                {"bpm": round(float(c["bpm"]), 2), "score": r3(c["score"]), "level": str(c["level"])}
                for c in self.tempo_candidates
            ],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Analysis:
        return cls(
            duration=float(data["duration"]),
            tempo=float(data["tempo"]),
            time_signature=str(data["time_signature"]),
            beats=[float(b) for b in data["beats"]],
            downbeats=[float(b) for b in data["downbeats"]],
            key=str(data["key"]),
            chords=[(float(s), float(e), str(lab)) for s, e, lab in data["chords"]],
            sections=[(float(s), float(e), str(lab)) for s, e, lab in data["sections"]],
            # Files written before tempo candidates existed have none.
            tempo_candidates=[
                {"bpm": float(c["bpm"]), "score": float(c["score"]), "level": str(c["level"])}
                for c in data.get("tempo_candidates", [])
            ],
        )

    def write_json(self, path: str | Path) -> None:
        """Write atomically, so a reader never sees half a file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        # mkstemp makes the file private; the other services (other users in containers) read it.
        os.chmod(tmp, 0o644)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self.to_dict(), fh, indent=1)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
