"""Project exports of a hand-made VocalScore, read back with LibreSVIP (and mido / the raw files)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf
import yaml

from tmik_make_vocal_mix import export
from tmik_make_vocal_mix.score import SungNote, TempoInfo, VocalScore, read_melody

pytest.importorskip("libresvip")
from libresvip.extension.manager import get_svs_plugin_by_suffix

# 4/4; 120 BPM, then 90 BPM from bar 3 (tick 3840); "world" crosses the bar line; a rest before "sing"
TICKS = [(0, 480), (480, 960), (960, 1440), (1440, 2400), (2880, 3360), (3360, 3840), (3840, 4320), (4320, 5280)]
PITCHES = [60, 62, 64, 65, 67, 65, 64, 61]
SYLLABLES = ["Hel", "lo", "-", "world", "sing", "a", "long", "söng"]
LINES = ["Hello world", "sing a long söng"]
TEMPOS = [(0, 120.0), (3840, 90.0)]


def _sec(tick: int) -> float:
    return tick / 960 if tick <= 3840 else 4 + (tick - 3840) / 720


def make_score(syllables: list[str] = SYLLABLES, ppq: int = 480) -> VocalScore:
    k = ppq / 480
    notes = [SungNote(_sec(s), _sec(e), p, y) for (s, e), p, y in zip(TICKS, PITCHES, syllables, strict=True)]
    info = TempoInfo(ppq, [(round(t * k), b) for t, b in TEMPOS], (4, 4),
                     [(round(s * k), round(e * k)) for s, e in TICKS])
    return VocalScore(notes, [[0, 1, 2, 3], [4, 5, 6, 7]], info)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("export")
    bg = root / "audio" / "backing.wav"
    bg.parent.mkdir()
    sf.write(bg, np.zeros(8000 * 6, dtype=np.float32), 8000)
    files = export.export_all(make_score(), root / "project", background_audio=bg, lines=LINES)
    return files, bg


def _load(path: Path, options: dict | None = None):
    project = get_svs_plugin_by_suffix(path.suffix[1:]).load(path, options or {})
    singing = [t for t in project.track_list if t.type_ == "Singing"]
    assert len(singing) == 1
    return project, singing[0].note_list


def test_export_all_writes_every_format(exported):
    files, _ = exported
    names = {p.name for k, p in files.items() if k != "warnings"}
    assert {"melody_lyrics.mid", "score.musicxml", "song.svp", "song.ustx", "lyrics.lrc",
            "song.vsqx", "song.ust", "song.acep"} <= names
    assert all(p.is_file() and p.stat().st_size > 0 for k, p in files.items() if k != "warnings")
    # DiffSinger's .ds writer only knows pinyin/kana dictionaries: English lyrics are a warning, not a crash
    assert "ds" not in files
    assert any("song.ds" in w for w in files["warnings"])
    assert not list(files["svp"].parent.glob(".*.tmp"))  # atomic writes leave no temp files


# lyrics as LibreSVIP reports them for each format
EXPECTED_LYRICS = {
    "svp": SYLLABLES, "ustx": SYLLABLES, "mid": SYLLABLES, "acep": SYLLABLES, "ust": SYLLABLES,
    "vsqx": [s.lower() for s in SYLLABLES],  # LibreSVIP lower-cases, and spaces non-ASCII letters ("s ö ng")
    "musicxml": ["Hello", "+", "+~", "world", "sing", "a", "long", "söng"],  # its reader joins words, "+~" = melisma
}
# tempo positions in LibreSVIP's model: its svp/ustx/acep readers count tempo changes with a one-bar prefix
EXPECTED_TEMPOS = {"svp": 5760, "ustx": 5760, "acep": 5760, "mid": 3840, "musicxml": 3840}


@pytest.mark.parametrize("name", ["song.svp", "song.ustx", "score.musicxml", "melody_lyrics.mid", "song.vsqx",
                                  "song.ust", "song.acep"])
def test_round_trip_through_libresvip(exported, name):
    files, _ = exported
    path = files["svp"].parent / name
    suffix = path.suffix[1:]
    project, notes = _load(path, {"encoding": "utf-8"} if suffix == "ust" else None)
    assert [n.start_pos for n in notes] == [s for s, _ in TICKS]
    assert [n.length for n in notes] == [e - s for s, e in TICKS]
    assert [n.key_number for n in notes] == PITCHES
    lyrics = [n.lyric.replace(" ", "") for n in notes]
    assert lyrics == EXPECTED_LYRICS[suffix]
    tempos = [(t.position, t.bpm) for t in project.song_tempo_list]
    assert tempos[0] == (0, 120.0)
    if suffix in EXPECTED_TEMPOS:
        assert tempos == [(0, 120.0), (EXPECTED_TEMPOS[suffix], 90.0)]
    assert [(ts.numerator, ts.denominator) for ts in project.time_signature_list] == [(4, 4)]


def test_svp_raw_layout(exported):
    files, _ = exported
    data = json.loads(files["svp"].read_bytes().rstrip(b"\x00"))
    assert data["time"]["tempo"] == [{"position": 0, "bpm": 120.0}, {"position": 3840 * 1_470_000, "bpm": 90.0}]
    assert data["time"]["meter"] == [{"index": 0, "numerator": 4, "denominator": 4}]
    (track,) = data["tracks"]
    assert track["mainRef"]["groupID"] == track["mainGroup"]["uuid"]
    notes = track["mainGroup"]["notes"]
    assert [n["onset"] for n in notes] == [s * 1_470_000 for s, _ in TICKS]
    assert notes[3]["duration"] == 2 * 705_600_000  # a half note
    assert [n["lyrics"] for n in notes] == SYLLABLES


def test_ustx_raw_layout_and_wave_part(exported):
    files, bg = exported
    data = yaml.safe_load(files["ustx"].read_text(encoding="utf-8"))
    assert data["ustx_version"] == "0.6" and data["resolution"] == 480
    assert data["tempos"] == [{"position": 0, "bpm": 120}, {"position": 3840, "bpm": 90}]
    notes = data["voice_parts"][0]["notes"]
    assert [n["lyric"] for n in notes][:4] == ["Hel", "lo", "+~", "world"]
    (wave,) = data["wave_parts"]
    assert wave["track_no"] == 1 and wave["position"] == 0 and len(data["tracks"]) == 2
    assert wave["relative_path"] == "../audio/backing.wav"
    assert (files["ustx"].parent / wave["relative_path"]).resolve() == bg.resolve()
    assert wave["file_duration_ms"] == pytest.approx(6000)
    project = get_svs_plugin_by_suffix("ustx").load(files["ustx"], {})
    (inst,) = [t for t in project.track_list if t.type_ == "Instrumental"]
    assert Path(inst.audio_file_path).resolve() == bg.resolve() and inst.offset == 0


def test_midi_utf8_lyrics_and_read_melody(exported):
    files, _ = exported
    mid = mido.MidiFile(files["midi"], charset="utf-8")
    assert mid.ticks_per_beat == 480
    lyrics = [m.text for t in mid.tracks for m in t if m.type == "lyrics"]
    assert lyrics == SYLLABLES
    score = read_melody(files["midi"])
    assert score.tempo.note_ticks == TICKS
    assert [n.pitch for n in score.notes] == PITCHES
    assert [round(t) for t, _ in score.tempo.tempos] == [0, 3840]
    assert score.tempo.time_signature == (4, 4)


def test_musicxml_structure(exported):
    files, _ = exported
    xml = files["musicxml"].read_text(encoding="utf-8")
    assert "<divisions>" in xml and "<beats>4</beats><beat-type>4</beat-type>" in xml
    assert xml.count('<tie type="start"/>') == 1  # "world" tied over the bar line
    assert "<syllabic>begin</syllabic><text>Hel</text><extend/>" not in xml  # extend goes on the last lyric note
    assert "<syllabic>begin</syllabic><text>Hel</text>" in xml
    assert "<syllabic>end</syllabic><text>lo</text><extend/>" in xml
    assert '<sound tempo="90"/>' in xml and '<sound tempo="120"/>' in xml
    assert len(re.findall(r"<rest/>", xml)) >= 1


def test_lrc_lines_and_syllable_fallback(exported, tmp_path):
    files, _ = exported
    assert files["lrc"].read_text(encoding="utf-8") == "[00:00.00]Hello world\n[00:03.00]sing a long söng\n"
    export.write_lrc(make_score(), tmp_path / "x.lrc", lines=None)
    assert (tmp_path / "x.lrc").read_text(encoding="utf-8") == "[00:00.00]Hel lo world\n[00:03.00]sing a long söng\n"


def test_other_ppq_is_scaled_to_480(tmp_path):
    path = export.write_ustx(make_score(ppq=220), tmp_path / "s.ustx")
    _, notes = _load(path)
    assert [n.start_pos for n in notes] == [s for s, _ in TICKS]


def test_diffsinger_with_pinyin_lyrics(tmp_path):
    score = make_score(["la", "la", "-", "a", "ni", "hao", "ma", "la"])
    files = export.export_all(score, tmp_path)
    assert "ds" in files, files["warnings"]
    _, notes = _load(files["ds"])
    assert [n.key_number for n in notes] == PITCHES


def test_acep_base_pitch_shim_equals_libresvips_own_curve(tmp_path):
    """The numpy base pitch curve gives LibreSVIP's pure-Python one, including very short notes and gaps."""
    import random

    export._patch_libresvip()
    from libresvip.plugins.acep import base_pitch_curve as curve

    assert curve._convolve is export._acep_base_pitch
    rng = random.Random(0)
    for _ in range(40):
        notes, t = [], rng.uniform(0.0, 2.0)
        for _ in range(rng.randint(1, 8)):
            d = rng.choice([0.0005, 0.001, 0.01, 0.25, rng.uniform(0.05, 0.8)])
            notes.append(curve.NoteInSeconds(semitone=rng.randint(40, 80), start=t, end=t + d))
            t += d + rng.choice([0.0, 0.0003, 0.001, rng.uniform(0.0, 0.4)])
        ours, theirs = curve._convolve(notes), curve._original_convolve(notes)
        assert len(ours) == len(theirs)
        assert np.allclose(ours, theirs, rtol=0.0, atol=1e-9)
    # the .acep written with the shim still carries the melody
    files = export.export_all(make_score(), tmp_path)
    _, notes = _load(files["acep"])
    assert [n.key_number for n in notes] == PITCHES
