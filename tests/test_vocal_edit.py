"""Editing a render: an edited melody is sung again only where it changed; the rest is the parent's samples."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_render import background, run_cli

from tmik_make_vocal_mix import edit, render
from tmik_make_vocal_mix.engines import neural

LINES = [["hel", "lo", "my", "friend"], ["sing", "a", "song", "now"], ["the", "night", "is", "young"]]
WORDS = [["hello", "hello", "my", "friend"], ["sing", "a", "song", "now"], ["the", "night", "is", "young"]]


def three_phrases(path: Path, lines: list[list[str]] = LINES, words: list[list[str]] = WORDS,
                  phrases: int = 3, every: float = 2.2) -> Path:
    """Three phrases of four notes (0.4 s each), one every ``every`` seconds (0.62 s rests by default), 120 BPM."""
    notes = []
    for k in range(phrases):
        for j in range(4):
            start = 0.8 + every * k + 0.4 * j
            notes.append({"start": round(start, 4), "end": round(start + 0.38, 4), "pitch": 60 + (j % 3) * 2,
                          "word": words[k][j], "syllable": lines[k][j], "stress": 1 if j != 1 else 0, "phrase": k})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"tempo": 120.0, "tempo_map": [[0, 120.0]], "time_signature": "4/4", "notes": notes}))
    return path


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("edit")
    bg = background(d / "bg.wav", seconds=8.0)
    song = three_phrases(d / "parent" / "melody.json")
    out = d / "parent_render"
    render.run_render(bg, song, out, style="pop_bright", seed=3, takes=1)
    return bg, song, out


def _chosen_vocal(out: Path) -> tuple[np.ndarray, int]:
    record = json.loads((out / "takes.json").read_text())
    row = next(r for r in record["takes"] if r["take"] == record["chosen"])
    vocal, sr = sf.read(out / row["files"]["vocal"], dtype="float32")
    return vocal, sr


def test_editing_one_phrase_sings_only_that_phrase_again(parent, tmp_path) -> None:
    bg, song, out = parent
    lines = [list(x) for x in LINES]
    words = [list(x) for x in WORDS]
    lines[1], words[1] = ["dance", "a", "while", "more"], ["dance", "a", "while", "more"]
    edited = three_phrases(tmp_path / "new" / "melody.json", lines, words)
    result = edit.run_edit(bg, out, edited, tmp_path / "e", parent_melody=song)
    old, sr = _chosen_vocal(out)
    new, sr2 = _chosen_vocal(tmp_path / "e")
    assert sr == sr2 and len(old) == len(new)
    # phrase 1's notes lie at 3.0-4.58 s; its audio reaches from the rest after phrase 0 (2.38 s: its breath)
    # to its gated tail (65 ms after the last note); 50 ms more for the crossfade
    inside = np.zeros(len(old), bool)
    inside[int(2.38 * sr):int((4.58 + 0.065 + 0.05) * sr) + 1] = True
    assert np.array_equal(old[~inside], new[~inside])  # sample for sample outside the edit
    notes = slice(int(3.0 * sr), int(4.58 * sr))
    assert not np.allclose(old[notes], new[notes], atol=1e-3)  # other words are sung there
    record = json.loads((tmp_path / "e" / "takes.json").read_text())
    assert [t["take"] for t in record["takes"]] == [1] and record["chosen_by"] == "edit"
    row = record["takes"][0]
    assert row["edited_phrases"] == [1] and row["resung_phrases"] == [1]
    assert row["from_parent"]["dir"] == str(out) and row["from_parent"]["full_render"] is False
    assert row["phrase_seeds"] == json.loads((out / "takes.json").read_text())["takes"][0]["phrase_seeds"]
    q = json.loads((tmp_path / "e" / "qc.json").read_text())
    assert [p["phrase"] for p in q["phrases"]] == [0, 1, 2] and q["word_error_rate"] is not None
    assert {"mix", "mix_mp3", "vocal", "qc", "takes", "take1_vocal"} <= set(result.outputs)


def test_a_loudness_only_edit_sings_nothing(parent, tmp_path, monkeypatch) -> None:
    bg, song, out = parent
    calls: list[int] = []
    real = neural.NeuralVoice.sing_phrase

    def spy(self, score, k, **kw):
        calls.append(k)
        return real(self, score, k, **kw)

    monkeypatch.setattr(neural.NeuralVoice, "sing_phrase", spy)
    edit.run_edit(bg, out, song, tmp_path / "l", parent_melody=song, target_lufs=-18.0)
    assert calls == []
    old, _ = _chosen_vocal(out)
    new, _ = _chosen_vocal(tmp_path / "l")
    assert np.array_equal(old, new)
    q = json.loads((tmp_path / "l" / "qc.json").read_text())
    assert q["target_lufs"] == -18.0 and abs(q["integrated_lufs"] + 18.0) <= 0.5
    row = json.loads((tmp_path / "l" / "takes.json").read_text())["takes"][0]
    assert row["edited_phrases"] == []


def test_another_phrase_count_falls_back_to_a_full_render(parent, tmp_path, caplog) -> None:
    bg, song, out = parent
    shorter = three_phrases(tmp_path / "two" / "melody.json", phrases=2)
    with caplog.at_level(logging.INFO, logger="tmik_make_vocal_mix.edit"):
        edit.run_edit(bg, out, shorter, tmp_path / "f", parent_melody=song)
    assert any("singing everything" in r.message and "phrase count" in r.message for r in caplog.records)
    row = json.loads((tmp_path / "f" / "takes.json").read_text())["takes"][0]
    assert row["from_parent"]["full_render"] is True and row["edited_phrases"] == [0, 1]


def test_changed_phrases_follows_the_breath_and_refuses_a_moved_song(tmp_path) -> None:
    from tmik_make_vocal_mix.score import load_score

    a = load_score(three_phrases(tmp_path / "a.json"))
    engine = ("neural", 0)
    assert edit.changed_phrases(a, a, engine, engine).changed == []
    raw = json.loads((tmp_path / "a.json").read_text())
    raw["notes"][7]["end"] -= 0.1  # phrase 1 ends earlier: phrase 2's breath has another rest
    (tmp_path / "b.json").write_text(json.dumps(raw))
    plan = edit.changed_phrases(a, load_score(tmp_path / "b.json"), engine, engine)
    assert plan.changed == [1, 2] and not plan.full
    raw = json.loads((tmp_path / "a.json").read_text())
    for n in raw["notes"][8:]:
        n["start"], n["end"] = n["start"] + 0.25, n["end"] + 0.25  # the last phrase moved as a whole
    (tmp_path / "c.json").write_text(json.dumps(raw))
    assert edit.changed_phrases(a, load_score(tmp_path / "c.json"), engine, engine).full


def test_crossfade_splice_joins_inside_the_window() -> None:
    parent, fresh = np.zeros(1000, np.float32), np.ones(1000, np.float32)
    out = edit.crossfade_splice(parent, fresh, [(200, 600)], 50)
    assert np.all(out[:200] == 0) and np.all(out[600:] == 0) and np.all(out[250:550] == 1)
    assert np.all(np.diff(out[200:250]) > 0) and np.all(np.diff(out[550:600]) < 0)  # linear ramps in and out


def test_render_cli_edit_of(parent, tmp_path) -> None:
    bg, song, out = parent
    lines = [list(x) for x in LINES]
    lines[2] = ["the", "day", "is", "long"]
    words = [list(x) for x in WORDS]
    words[2] = ["the", "day", "is", "long"]
    edited = three_phrases(tmp_path / "new" / "melody.json", lines, words)
    r = run_cli("--edit-of", out, "--parent-melody", song, "--melody", edited, "--background", bg,
                "--out", tmp_path / "c")
    assert r.returncode == 0, r.stderr
    row = json.loads((tmp_path / "c" / "takes.json").read_text())["takes"][0]
    assert row["edited_phrases"] == [2]
    assert (tmp_path / "c" / "mix.mp3").stat().st_size > 0
    (tmp_path / "empty").mkdir()
    r = run_cli("--edit-of", tmp_path / "empty", "--parent-melody", song, "--melody", edited, "--background", bg,
                "--out", tmp_path / "d")
    assert r.returncode == 2 and "takes_not_found" in r.stderr


def test_a_doubled_style_reprocesses_only_the_stretch_of_the_edit(tmp_path) -> None:
    bg = background(tmp_path / "bg.wav", seconds=8.0)
    # rests of 1 s: WORLD and the doubling work in stretches split at rests longer than a breath lead and pad
    song = three_phrases(tmp_path / "parent" / "melody.json", every=2.6)
    render.run_render(bg, song, tmp_path / "p", style="choir", seed=2, takes=1)
    lines, words = [list(x) for x in LINES], [list(x) for x in WORDS]
    lines[0] = words[0] = ["come", "and", "see", "me"]
    edited = three_phrases(tmp_path / "new" / "melody.json", lines, words, every=2.6)
    edit.run_edit(bg, tmp_path / "p", edited, tmp_path / "e", parent_melody=song)
    old, sr = _chosen_vocal(tmp_path / "p")
    new, _ = _chosen_vocal(tmp_path / "e")
    row = json.loads((tmp_path / "e" / "takes.json").read_text())["takes"][0]
    assert row["edited_phrases"] == [0] and row["from_parent"]["style"] == "choir"
    inside = np.zeros(len(old), bool)
    for a, b in row["resung_spans"]:
        inside[int(a * sr):int(b * sr) + 1] = True
    assert inside.any() and not inside[int(3.0 * sr):].any()  # the stretch ends in the rest after phrase 0
    assert np.array_equal(old[~inside], new[~inside])
    assert not np.allclose(old[int(0.8 * sr):int(2.38 * sr)], new[int(0.8 * sr):int(2.38 * sr)], atol=1e-3)


def test_another_style_sings_everything_with_the_parent_seeds(parent, tmp_path) -> None:
    bg, song, out = parent
    edit.run_edit(bg, out, song, tmp_path / "s", parent_melody=song, style="ballad")
    row = json.loads((tmp_path / "s" / "takes.json").read_text())["takes"][0]
    assert row["from_parent"]["full_render"] is True and "style changed" in row["from_parent"]["reason"]
    assert row["edited_phrases"] == [0, 1, 2]
    assert row["phrase_seeds"] == json.loads((out / "takes.json").read_text())["takes"][0]["phrase_seeds"]
    assert json.loads((tmp_path / "s" / "qc.json").read_text())["style"] == "ballad"
