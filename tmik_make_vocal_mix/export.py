"""Project exports of a :class:`VocalScore`, so a musician can go on in a singing synthesizer.

Our own writers: Standard MIDI with lyric events, MusicXML, Synthesizer V 1.x ``.svp``, OpenUtau
``.ustx`` (with the backing track as a wave part) and LRC. Vocaloid ``.vsqx``, UTAU ``.ust``,
DiffSinger ``.ds`` and ACE Studio ``.acep`` are converted from our ``.svp`` with LibreSVIP.
All positions are on a 480-PPQ grid taken from the melody's own tempo map (``score.tempo``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import unicodedata
import uuid
from pathlib import Path
from xml.sax.saxutils import escape

from .score import MELISMA, VocalScore

log = logging.getLogger(__name__)

PPQ = 480  # ticks per quarter in every export
BLICKS_PER_TICK = 1_470_000  # Synthesizer V: 705,600,000 blicks per quarter
VOCALISE = "a"  # what a note without a syllable sings in the synthesizer formats
USTX_MELISMA = "+~"  # OpenUtau: extend the previous note's vowel (LibreSVIP reads it back as "-")
CONVERTED = ("vsqx", "ust", "ds", "acep")  # formats written by LibreSVIP from our .svp
# LibreSVIP plugin options per suffix (plain dicts: each plugin builds its own option class from them)
CONVERT_OPTIONS: dict[str, dict] = {
    "ust": {"version": 2.0, "encoding": "utf-8"},  # default is UST 1.2 in Shift-JIS: fails on non-Japanese text
}
_STEPS = [("C", 0), ("C", 1), ("D", 0), ("D", 1), ("E", 0), ("F", 0), ("F", 1), ("G", 0), ("G", 1), ("A", 0),
          ("A", 1), ("B", 0)]


# ---------------------------------------------------------------------------- helpers


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _tempos(score: VocalScore) -> list[tuple[int, float]]:
    """The tempo map at 480 PPQ, starting at tick 0, without repeats."""
    tpb = score.tempo.ticks_per_beat or PPQ
    out: list[tuple[int, float]] = []
    for tick, bpm in sorted(score.tempo.tempos or [(0, 120.0)]):
        t = round(tick * PPQ / tpb)
        if out and t == out[-1][0]:
            out[-1] = (t, float(bpm))
        elif not out or abs(out[-1][1] - bpm) > 1e-9:
            out.append((t, float(bpm)))
    if not out or out[0][0] != 0:
        out.insert(0, (0, out[0][1] if out else 120.0))
    return out


def _seconds_to_tick(tempos: list[tuple[int, float]], sec: float) -> int:
    acc = 0.0
    for i, (tick, bpm) in enumerate(tempos):
        nxt = tempos[i + 1][0] if i + 1 < len(tempos) else None
        span = (nxt - tick) * 60.0 / (bpm * PPQ) if nxt is not None else math.inf
        if sec < acc + span:
            return round(tick + (sec - acc) * bpm * PPQ / 60.0)
        acc += span
    return 0


def _tick_to_seconds(tempos: list[tuple[int, float]], tick: int) -> float:
    sec = 0.0
    for i, (t, bpm) in enumerate(tempos):
        nxt = tempos[i + 1][0] if i + 1 < len(tempos) else None
        if nxt is None or tick <= nxt:
            return sec + (tick - t) * 60.0 / (bpm * PPQ)
        sec += (nxt - t) * 60.0 / (bpm * PPQ)
    return sec


def note_ticks(score: VocalScore) -> list[tuple[int, int]]:
    """(start, end) of each note at 480 PPQ: ``score.tempo.note_ticks`` scaled, else from the seconds.

    Overlaps are cut at the next onset and every note keeps at least one tick.
    """
    tpb = score.tempo.ticks_per_beat or PPQ
    if len(score.tempo.note_ticks) == len(score.notes):
        raw = [(round(s * PPQ / tpb), round(e * PPQ / tpb)) for s, e in score.tempo.note_ticks]
    else:
        tempos = _tempos(score)
        raw = [(_seconds_to_tick(tempos, n.start), _seconds_to_tick(tempos, n.end)) for n in score.notes]
    out: list[tuple[int, int]] = []
    for i, (s, e) in enumerate(raw):
        if i + 1 < len(raw):
            e = min(e, raw[i + 1][0])
        out.append((s, max(e, s + 1)))
    return out


def _meter(score: VocalScore) -> tuple[int, int]:
    num, den = score.tempo.time_signature or (4, 4)
    return (int(num) or 4, int(den) or 4)


def _is_cjk(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in "WF" and ch.isalpha()


def _norm(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).casefold() if ch.isalnum())


def syllabics(score: VocalScore, lines: list[str] | None = None) -> list[str | None]:
    """MusicXML ``syllabic`` per note (None for melisma/empty notes).

    Word boundaries come from the notes where they carry them (melody.json: ``word_start``), else
    from ``lines`` (one per phrase) when their words spell the phrase's syllables; otherwise every
    syllable is ``single``.
    """
    out: list[str | None] = [None if n.syllable in (MELISMA, "") else "single" for n in score.notes]
    if score.has_words:
        for phrase in score.phrases:
            sung = [i for i in phrase if out[i] is not None]
            for k, i in enumerate(sung):
                starts = score.notes[i].word_start is not False
                ends = k + 1 == len(sung) or score.notes[sung[k + 1]].word_start is not False
                out[i] = {(True, True): "single", (True, False): "begin", (False, False): "middle",
                          (False, True): "end"}[(starts, ends)]
        return out
    if not lines or len(lines) != len(score.phrases):
        return out
    for phrase, line in zip(score.phrases, lines, strict=True):
        sung = [i for i in phrase if score.notes[i].syllable not in (MELISMA, "")]
        spaced = "".join(f" {ch} " if _is_cjk(ch) else ch for ch in line)
        words = [w for w in (_norm(w) for w in re.split(r"\s+", spaced)) if w]
        marks: dict[int, str] = {}
        k = 0
        ok = True
        for word in words:
            got, members = "", []
            while k < len(sung) and len(got) < len(word):
                got += _norm(score.notes[sung[k]].syllable)
                members.append(sung[k])
                k += 1
            if got != word or not members:
                ok = False
                break
            if len(members) == 1:
                marks[members[0]] = "single"
            else:
                marks[members[0]] = "begin"
                marks[members[-1]] = "end"
                for m in members[1:-1]:
                    marks[m] = "middle"
        if ok and k == len(sung):
            for i, mark in marks.items():
                out[i] = mark
    return out


def _phrase_words(score: VocalScore, phrase: list[int], syll: list[str | None]) -> str:
    """The phrase's syllables joined into words (by ``syll`` marks; unmarked syllables are words)."""
    words: list[str] = []
    open_word = False
    for i in phrase:
        text = score.notes[i].syllable
        if text in (MELISMA, ""):
            continue
        if open_word and syll[i] in ("middle", "end"):
            words[-1] += text
        else:
            words.append(text)
        open_word = syll[i] in ("begin", "middle")
    return " ".join(words)


# ---------------------------------------------------------------------------- MIDI


def write_midi(score: VocalScore, path: Path) -> Path:
    """Standard MIDI file (type 1, 480 PPQ): tempo/meter track and a "Lead" track with a UTF-8 lyric per note."""
    import mido

    path = Path(path)
    mid = mido.MidiFile(type=1, ticks_per_beat=PPQ, charset="utf-8")
    events: list[tuple[int, int, mido.MetaMessage | mido.Message]] = []
    num, den = _meter(score)
    events.append((0, 0, mido.MetaMessage("time_signature", numerator=num, denominator=den)))
    for tick, bpm in _tempos(score):
        events.append((tick, 1, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))))
    conductor = _to_track(events, "Tempo")
    events = [(0, 0, mido.Message("program_change", program=52, channel=0))]
    for n, (s, e) in zip(score.notes, note_ticks(score), strict=True):
        if n.syllable:
            events.append((s, 2, mido.MetaMessage("lyrics", text=n.syllable)))
        events.append((s, 3, mido.Message("note_on", note=n.pitch, velocity=90, channel=0)))
        events.append((e, 1, mido.Message("note_off", note=n.pitch, velocity=0, channel=0)))
    mid.tracks.extend([conductor, _to_track(events, "Lead")])
    with tempfile.TemporaryDirectory(dir=path.parent if path.parent.exists() else None) as tmp:
        out = Path(tmp) / "x.mid"
        mid.save(str(out))
        _write_atomic(path, out.read_bytes())
    return path


def _to_track(events: list, name: str):
    import mido

    track = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)])
    now = 0
    for tick, _, msg in sorted(events, key=lambda ev: (ev[0], ev[1])):
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track


# ---------------------------------------------------------------------------- MusicXML


_TYPES = [(1920, "whole"), (960, "half"), (480, "quarter"), (240, "eighth"), (120, "16th"), (60, "32nd"),
          (30, "64th")]


def _note_type(ticks: int) -> tuple[str, int] | None:
    for base, name in _TYPES:
        if ticks == base:
            return name, 0
        if ticks == base * 3 // 2:
            return name, 1
    return None


def write_musicxml(score: VocalScore, path: Path, lines: list[str] | None = None) -> Path:
    """MusicXML 4.0 partwise score: one voice part, rests in the gaps, ties across barlines, lyrics.

    ``lines`` (the original lyric lines, one per phrase) give word boundaries for ``syllabic``.
    """
    path = Path(path)
    num, den = _meter(score)
    bar = num * PPQ * 4 // den
    spans = note_ticks(score)
    tempos = _tempos(score)
    end = max([e for _, e in spans] + [bar])
    n_bars = max(1, -(-end // bar))
    g = math.gcd(PPQ, bar, *[v for s, e in spans for v in (s, e)], *[t for t, _ in tempos])
    div = PPQ // g
    syll = syllabics(score, lines)

    # segments: (start, end, note index or None for rest), split at barlines
    segs: list[tuple[int, int, int | None]] = []
    cursor = 0
    for i, (s, e) in enumerate(spans):
        if s > cursor:
            segs.append((cursor, s, None))
        segs.append((s, e, i))
        cursor = e
    if cursor < n_bars * bar:
        segs.append((cursor, n_bars * bar, None))

    out = ['<?xml version="1.0" encoding="UTF-8" standalone="no"?>',
           ('<!DOCTYPE score-partwise PUBLIC "-//Recordare//DTD MusicXML 4.0 Partwise//EN" '
            '"http://www.musicxml.org/dtds/partwise.dtd">'),
           '<score-partwise version="4.0">',
           "  <work><work-title>Vocal</work-title></work>",
           '  <part-list><score-part id="P1"><part-name>Voice</part-name></score-part></part-list>',
           '  <part id="P1">']
    pending_tempos = list(tempos)
    for m in range(n_bars):
        m0, m1 = m * bar, (m + 1) * bar
        out.append(f'    <measure number="{m + 1}">')
        if m == 0:
            out.append(f"      <attributes><divisions>{div}</divisions><key><fifths>0</fifths></key>"
                       f"<time><beats>{num}</beats><beat-type>{den}</beat-type></time>"
                       "<clef><sign>G</sign><line>2</line></clef></attributes>")
        for s, e, idx in segs:
            a, b = max(s, m0), min(e, m1)
            if a >= b:
                continue
            while pending_tempos and pending_tempos[0][0] < b:
                t, bpm = pending_tempos.pop(0)
                offset = f"<offset>{(max(t, a) - a) // g}</offset>" if t > a else ""
                out.append(f'      <direction placement="above"><direction-type><metronome>'
                           f"<beat-unit>quarter</beat-unit><per-minute>{bpm:g}</per-minute></metronome>"
                           f'</direction-type>{offset}<sound tempo="{bpm:g}"/></direction>')
            out.append(_xml_note(score, idx, a, b, s, e, g, syll))
        out.append("    </measure>")
    out += ["  </part>", "</score-partwise>", ""]
    _write_atomic(path, "\n".join(out).encode("utf-8"))
    return path


def _xml_note(score: VocalScore, idx: int | None, a: int, b: int, s: int, e: int, g: int,
              syll: list[str | None]) -> str:
    dur = (b - a) // g
    typ = _note_type(b - a)
    type_xml = (f"<type>{typ[0]}</type>" + "<dot/>" * typ[1]) if typ else ""
    if idx is None:
        return f"      <note><rest/><duration>{dur}</duration>{type_xml}</note>"
    note = score.notes[idx]
    step, alter = _STEPS[note.pitch % 12]
    pitch = (f"<pitch><step>{step}</step>" + ("<alter>1</alter>" if alter else "")
             + f"<octave>{note.pitch // 12 - 1}</octave></pitch>")
    tie_start, tie_stop = b < e, a > s
    ties = ('<tie type="stop"/>' if tie_stop else "") + ('<tie type="start"/>' if tie_start else "")
    notations = ('<tied type="stop"/>' if tie_stop else "") + ('<tied type="start"/>' if tie_start else "")
    lyric = ""
    if not tie_stop and note.syllable not in (MELISMA, ""):
        nxt = idx + 1
        extend = "<extend/>" if nxt < len(score.notes) and score.notes[nxt].syllable == MELISMA else ""
        lyric = (f'<lyric number="1"><syllabic>{syll[idx] or "single"}</syllabic>'
                 f"<text>{escape(note.syllable)}</text>{extend}</lyric>")
    elif not tie_stop and note.syllable == MELISMA:
        lyric = '<lyric number="1"><extend/></lyric>'
    return (f"      <note>{pitch}<duration>{dur}</duration>{ties}<voice>1</voice>{type_xml}"
            + (f"<notations>{notations}</notations>" if notations else "") + lyric + "</note>")


# ---------------------------------------------------------------------------- Synthesizer V


def svp_project(score: VocalScore) -> dict:
    """The Synthesizer V Studio 1.x project as a dict (blicks = ticks * 1,470,000)."""
    num, den = _meter(score)
    group_id = str(uuid.uuid4())
    notes = []
    for n, (s, e) in zip(score.notes, note_ticks(score), strict=True):
        notes.append({"onset": s * BLICKS_PER_TICK, "duration": (e - s) * BLICKS_PER_TICK,
                      "lyrics": n.syllable or VOCALISE, "phonemes": "", "pitch": int(n.pitch), "detune": 0,
                      "attributes": {}})
    curve = {"mode": "cubic", "points": []}
    params = {k: dict(curve) for k in ("pitchDelta", "vibratoEnv", "loudness", "tension", "breathiness",
                                       "voicing", "gender")}
    return {
        "version": 113,
        "time": {"meter": [{"index": 0, "numerator": num, "denominator": den}],
                 "tempo": [{"position": t * BLICKS_PER_TICK, "bpm": bpm} for t, bpm in _tempos(score)]},
        "library": [],
        "tracks": [{
            "name": "Vocal", "dispColor": "ff7db235", "dispOrder": 0, "renderEnabled": False,
            "mixer": {"gainDecibel": 0.0, "pan": 0.0, "mute": False, "solo": False, "display": True},
            "mainGroup": {"name": "main", "uuid": group_id, "parameters": params, "notes": notes},
            "mainRef": {"groupID": group_id, "blickOffset": 0, "pitchOffset": 0, "isInstrumental": False,
                        "database": {"name": "", "language": "", "phoneset": ""}, "dictionary": "",
                        "voice": {}, "audio": {"filename": "", "duration": 0.0}},
            "groups": [],
        }],
        "renderConfig": {"destination": "", "filename": "song", "numChannels": 1, "aspirationFormat": "noAspiration",
                         "bitDepth": 16, "sampleRate": 44100, "exportMixDown": True},
    }


def write_svp(score: VocalScore, path: Path) -> Path:
    """Synthesizer V Studio 1.x ``.svp`` (JSON, UTF-8, NUL-terminated like SynthV's own saves)."""
    path = Path(path)
    _write_atomic(path, json.dumps(svp_project(score), ensure_ascii=False).encode("utf-8") + b"\x00")
    return path


# ---------------------------------------------------------------------------- OpenUtau


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON string syntax is valid YAML)."""
    return json.dumps(text, ensure_ascii=False)


def write_ustx(score: VocalScore, path: Path, background_audio: Path | None = None,
               background_duration_ms: float = 0.0) -> Path:
    """OpenUtau ``.ustx`` (YAML, ustx_version 0.6, 480 PPQ): one voice part; the backing track as a wave part.

    ``background_audio`` is referenced relative to the ``.ustx`` folder, aligned at tick 0.
    """
    path = Path(path)
    num, den = _meter(score)
    tempos = _tempos(score)
    spans = note_ticks(score)
    y = ["name: " + _q(path.stem), 'comment: ""', "output_dir: Vocal", "cache_dir: UCache", 'ustx_version: "0.6"',
         "resolution: 480", f"bpm: {tempos[0][1]:g}", f"beat_per_bar: {num}", f"beat_unit: {den}",
         "time_signatures:", f"- bar_position: 0\n  beat_per_bar: {num}\n  beat_unit: {den}", "tempos:"]
    y += [f"- position: {t}\n  bpm: {bpm:g}" for t, bpm in tempos]
    track = ("- singer: null\n  phonemizer: OpenUtau.Core.DefaultPhonemizer\n  renderer_settings:\n"
             "    renderer: null\n    resampler: null\n    wavtool: null\n"
             "  track_name: {name}\n  mute: false\n  solo: false\n  volume: 0\n  pan: 0")
    y += ["tracks:", track.format(name="Vocal")]
    if background_audio is not None:
        y.append(track.format(name="Backing"))
    end = max([e for _, e in spans] + [PPQ])
    y += ["voice_parts:", "- name: Vocal", '  comment: ""', "  track_no: 0", "  position: 0", f"  duration: {end}",
          "  notes:" if spans else "  notes: []"]
    prev_end = None
    for n, (s, e) in zip(score.notes, spans, strict=True):
        lyric = n.syllable or VOCALISE
        if n.syllable == MELISMA:
            lyric = USTX_MELISMA if prev_end == s else VOCALISE  # "+" only extends a touching note
        y.append(f"  - position: {s}\n    duration: {e - s}\n    tone: {n.pitch}\n    lyric: {_q(lyric)}\n"
                 "    pitch:\n      data:\n      - {x: -25, y: 0, shape: io}\n      - {x: 25, y: 0, shape: io}\n"
                 "      snap_first: true\n"
                 "    vibrato: {length: 0, period: 175, depth: 25, in: 10, out: 10, shift: 0, drift: 0}\n"
                 "    note_expressions: []\n    phoneme_expressions: []\n    phoneme_overrides: []")
        prev_end = e
    y.append("  curves: []")
    if background_audio is not None:
        rel = os.path.relpath(Path(background_audio).resolve(), path.resolve().parent).replace(os.sep, "/")
        y += ["wave_parts:", f"- name: {_q(Path(background_audio).name)}", '  comment: ""', "  track_no: 1",
              "  position: 0", f"  relative_path: {_q(rel)}", f"  file_duration_ms: {float(background_duration_ms):g}",
              "  skip_ms: 0", "  trim_ms: 0"]
    else:
        y.append("wave_parts: []")
    _write_atomic(path, ("\n".join(y) + "\n").encode("utf-8"))
    return path


# ---------------------------------------------------------------------------- LRC


def write_lrc(score: VocalScore, path: Path, lines: list[str] | None = None) -> Path:
    """LRC lyrics: one ``[mm:ss.xx]`` line per phrase, at its first note's onset.

    Uses ``lines`` (the original lyric lines) when there is one per phrase, else the phrase's syllables.
    """
    path = Path(path)
    use_lines = lines is not None and len(lines) == len(score.phrases)
    syll = syllabics(score, lines)
    out = []
    for k, phrase in enumerate(score.phrases):
        if not phrase:
            continue
        text = lines[k].strip() if use_lines else _phrase_words(score, phrase, syll)  # type: ignore[index]
        cs = max(0, round(score.notes[phrase[0]].start * 100))
        out.append(f"[{cs // 6000:02d}:{cs // 100 % 60:02d}.{cs % 100:02d}]{text}")
    _write_atomic(path, ("\n".join(out) + "\n").encode("utf-8"))
    return path


# ---------------------------------------------------------------------------- LibreSVIP


def _acep_base_pitch(note_list: list) -> list[float]:
    """LibreSVIP 2.9's ACE Studio base pitch curve (``acep.base_pitch_curve._convolve``) with numpy.

    The same curve: one point per millisecond holding each note's semitone until the midpoint of the
    gap to the next note (at most one note further per millisecond, as the original steps), smoothed
    by the same 119-point raised-cosine kernel. The original does this in pure Python from time 0 to
    each pattern's end, once per pattern: 11 of the 12 s a 3-minute song's export took.
    Equal to the original within float rounding (``tests/test_export.py``).
    """
    import numpy as np

    total = round(1000 * (note_list[-1].end + 0.12)) + 1
    # The step at which the original moves on from note k: the first millisecond i after its previous
    # move with 0.001 * i >= the midpoint (computed with the same float expression, so ties agree).
    moves: list[int] = []
    for k in range(len(note_list) - 1):
        mid = 0.5 * (note_list[k].end + note_list[k + 1].start)
        i = max(0, math.ceil(mid * 1000) - 1)
        while 0.001 * i < mid:
            i += 1
        while i > 0 and 0.001 * (i - 1) >= mid:
            i -= 1
        moves.append(max(i, moves[-1] + 1) if moves else i)
    index = np.searchsorted(np.asarray(moves, dtype=np.int64), np.arange(total), side="left")
    values = np.asarray([n.semitone for n in note_list], dtype=np.float64)[index]
    kernel = [math.cos(math.pi * 0.001 * (i - 59) / 0.12) for i in range(119)]
    kernel_sum = sum(kernel)
    smooth = np.convolve(values, np.asarray([k / kernel_sum for k in kernel]))
    return smooth[59:-59].tolist()


def _patch_libresvip() -> None:
    """Compat shim: LibreSVIP's ACE Studio writer uses :func:`_acep_base_pitch` (same output, ~100x faster)."""
    try:
        from libresvip.plugins.acep import base_pitch_curve
    except ImportError:  # no such plugin: nothing to speed up
        return
    if getattr(base_pitch_curve._convolve, "__name__", "") != _acep_base_pitch.__name__:
        base_pitch_curve._original_convolve = base_pitch_curve._convolve  # kept for the equality test
        base_pitch_curve._convolve = _acep_base_pitch


def load_converters() -> None:
    """Import LibreSVIP's plugins (about 3 s, once per process; the service's warm-up pays it)."""
    from libresvip.extension.manager import get_svs_plugin_by_suffix

    for suffix in ("svp", *CONVERTED):
        get_svs_plugin_by_suffix(suffix)
    _patch_libresvip()


def convert(src: Path, dst: Path, options: dict | None = None) -> Path:
    """Convert ``src`` to ``dst`` with the LibreSVIP plugins chosen by the two suffixes.

    ``options`` are the writer plugin's output options (default: :data:`CONVERT_OPTIONS` for the suffix).
    Raises ``ValueError`` when no plugin handles a suffix; plugin errors propagate.
    """
    from libresvip.extension.manager import get_svs_plugin_by_suffix

    _patch_libresvip()
    src, dst = Path(src), Path(dst)
    out_suffix = dst.suffix.lstrip(".").lower()
    reader = get_svs_plugin_by_suffix(src.suffix.lstrip(".").lower())
    writer = get_svs_plugin_by_suffix(out_suffix)
    if reader is None or writer is None:
        raise ValueError(f"LibreSVIP has no plugin for {src.suffix if reader is None else dst.suffix}")
    project = reader.load(src, {})
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.stem}.", suffix=dst.suffix, dir=dst.parent)
    os.close(fd)
    try:
        writer.dump(Path(tmp), project, dict(CONVERT_OPTIONS.get(out_suffix, {}) if options is None else options))
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dst


def export_all(score: VocalScore, out_dir: Path, *, background_audio: Path | None = None,
               background_duration_ms: float | None = None, lines: list[str] | None = None) -> dict:
    """Write every project format into ``out_dir``; return ``{name: Path}`` plus ``"warnings": [str]``.

    Our own writers raise on failure; a failing LibreSVIP conversion is logged and only reported.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if background_audio is not None and background_duration_ms is None:
        background_duration_ms = _audio_ms(Path(background_audio))
    files: dict = {
        "midi": write_midi(score, out_dir / "melody_lyrics.mid"),
        "musicxml": write_musicxml(score, out_dir / "score.musicxml", lines),
        "svp": write_svp(score, out_dir / "song.svp"),
        "ustx": write_ustx(score, out_dir / "song.ustx", background_audio, background_duration_ms or 0.0),
        "lrc": write_lrc(score, out_dir / "lyrics.lrc", lines),
    }
    warnings: list[str] = []
    for fmt in CONVERTED:
        try:
            files[fmt] = convert(files["svp"], out_dir / f"song.{fmt}")
        except Exception as exc:  # noqa: BLE001 - a converter bug must not break the render
            if fmt == "ds" and "pronunciation" in str(exc):
                msg = ("song.ds (DiffSinger) not written: its dictionaries know Chinese (pinyin) and Japanese "
                       "lyrics only; open song.svp or song.ustx instead")
            else:
                msg = f"song.{fmt} not written: LibreSVIP {type(exc).__name__}: {exc}"
            log.warning(msg)
            warnings.append(msg)
    files["warnings"] = warnings
    return files


def _audio_ms(path: Path) -> float:
    try:
        import soundfile as sf

        info = sf.info(str(path))
        return 1000.0 * info.frames / info.samplerate
    except Exception:  # noqa: BLE001 - the duration is a hint; OpenUtau re-reads the file
        return 0.0
