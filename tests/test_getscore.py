"""GETScore: encoding, decoding, transposition and the MIDI round trip."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tmik_bgm_conditional_melody_generation import getscore as gs


def _song(meter: str = "4/4", first_downbeat: int = 0) -> gs.Song:
    notes = [(0, 4, 60), (4, 2, 62), (6, 2, 64), (8, 8, 65), (20, 4, 67), (24, 3, 69), (27, 1, 71), (28, 4, 72)]
    chords = [(0, 16, 0, "maj"), (16, 24, 9, "min"), (24, 28, 7, "7"), (28, 32, 5, "maj7")]
    return gs.Song("t", meter, 32, first_downbeat, 0, "major", notes, chords)


def test_encode_decode_round_trip() -> None:
    song = _song()
    grid = gs.encode(song)
    assert grid.shape == (len(gs.ROWS), 32)
    assert gs.decode_notes(grid) == song.notes
    assert gs.decode_chords(grid) == song.chords
    # Every token is inside its row's vocabulary.
    for r, size in enumerate(gs.ROW_SIZES):
        assert grid[r].min() >= 0 and grid[r].max() < size


def test_decode_cuts_overlapping_notes_monophonic() -> None:
    grid = gs.encode(gs.Song("t", "4/4", 16, 0, 0, "major", [(0, 8, 60), (4, 4, 64)], []))
    assert gs.decode_notes(grid) == [(0, 4, 60), (4, 4, 64)]


def test_long_notes_are_capped() -> None:
    grid = gs.encode(gs.Song("t", "4/4", 32, 0, 0, "major", [(0, 30, 60)], []))
    assert gs.decode_notes(grid) == [(0, gs.MAX_DURATION, 60)]


def test_meter_row_counts_from_the_downbeat() -> None:
    grid = gs.encode(_song("3/4", first_downbeat=4))
    positions = [gs.METER_TOKENS[t][1] for t in grid[gs.METER]]
    assert positions[:6] == [8, 9, 10, 11, 0, 1]
    assert gs.METER_TOKENS[grid[gs.METER, 4]] == ("3/4", 0)


def test_unknown_meter_is_refused() -> None:
    with pytest.raises(ValueError, match="5/4"):
        gs.encode(gs.Song("t", "5/4", 16, 0, 0, "major", [], []))


def test_transpose_moves_pitches_roots_and_key() -> None:
    song = _song()
    moved = gs.transpose(gs.encode(song), 3)
    assert [p for *_, p in gs.decode_notes(moved)] == [p + 3 for *_, p in song.notes]
    assert [c[2] for c in gs.decode_chords(moved)] == [(c[2] + 3) % 12 for c in song.chords]
    assert gs.token_key(moved[gs.KEY, 0]) == (3, "major")
    assert gs.transpose(gs.encode(song), 40) is None  # would leave the pitch range


@pytest.mark.parametrize("meter", ["4/4", "3/4", "6/8", "2/4"])
def test_midi_round_trip(tmp_path, meter: str) -> None:
    song = _song(meter, first_downbeat=0)
    song.lyrics = ["la", "li", "lu", "le", "lo", "ma", "mi", "mo"]
    path = tmp_path / "song.mid"
    gs.song_to_midi(song, path)
    back = gs.song_from_midi(path)
    assert back.meter == meter
    assert back.notes == song.notes
    assert back.chords == song.chords
    assert (back.tonic, back.mode) == (0, "major")
    assert back.lyrics == song.lyrics
    assert np.array_equal(gs.encode(back), gs.encode(song))


def test_midi_on_a_recording_timeline(tmp_path) -> None:
    """With column times, notes sound at those times (tempo map from the beats)."""
    import pretty_midi

    song = _song()
    # A drifting beat: 0.5 s per beat speeding up to 0.4 s, starting 1.3 s into the audio.
    beats = 1.3 + np.cumsum(np.r_[0, np.linspace(0.5, 0.4, 8)])
    col_times = np.concatenate([np.linspace(a, b, 4, endpoint=False) for a, b in itertools.pairwise(beats)])
    col_times = np.append(col_times, beats[-1])
    path = tmp_path / "timed.mid"
    gs.song_to_midi(song, path, column_times=col_times, chords_track=False)
    pm = pretty_midi.PrettyMIDI(str(path))
    starts = [n.start for n in pm.instruments[0].notes]
    assert np.allclose(starts, [col_times[c] for c, _, _ in song.notes], atol=2e-3)


def test_chords_inferred_when_the_file_has_no_labels(tmp_path) -> None:
    import miditoolkit
    from miditoolkit.midi.containers import Instrument, Note

    midi = miditoolkit.MidiFile(ticks_per_beat=480)
    lead = Instrument(0, name="lead")
    lead.notes = [Note(90, 64, 0, 960), Note(90, 65, 960, 1920)]
    comp = Instrument(0, name="piano")
    comp.notes = [Note(60, p, 0, 960) for p in (48, 52, 55)] + [Note(60, p, 960, 1920) for p in (53, 57, 60)]
    midi.instruments = [lead, comp]
    path = tmp_path / "plain.mid"
    midi.dump(str(path))
    song = gs.song_from_midi(path)
    assert song.notes == [(0, 8, 64), (8, 8, 65)]
    assert [(c[2], c[3]) for c in song.chords] == [(0, "maj"), (5, "maj")]
