"""Takes: a render sings several takes, re-singing only some phrases, keeps them all, chooses the best by
its checks, and lets the user make another take the result; the word check covers the whole song."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from test_render import background
from test_vocal_service import melody_json

from tmik_make_vocal_mix import config, qc, render
from tmik_make_vocal_mix.score import SungNote


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, Path, Path, render.RenderResult]:
    d = tmp_path_factory.mktemp("takes")
    bg = background(d / "bg.wav", seconds=7.0)
    song = melody_json(d / "melody.json")
    out = d / "out"
    result = render.run_render(bg, song, out, style="pop_bright", seed=5, takes=3)
    return bg, song, out, result


def test_a_render_keeps_three_whole_takes_and_chooses_the_best(rendered) -> None:
    _, _, out, result = rendered
    record = json.loads((out / "takes.json").read_text())
    assert [t["take"] for t in record["takes"]] == [1, 2, 3]
    assert record["chosen_by"] == "checks"
    for t in record["takes"]:
        for name in t["files"].values():
            assert (out / name).is_file() and (out / name).stat().st_size > 0, name
        assert len(t["phrase_seeds"]) == 2  # each take is a whole song: a seed for every phrase
        assert result.outputs[f"take{t['take']}_vocal"].name == t["files"]["vocal"]
        assert result.outputs[f"take{t['take']}_mix_mp3"].name == t["files"]["mix_mp3"]
        assert t["pitch_accuracy"] is not None and t["word_error_rate"] is not None
        # the documented score: pitch accuracy minus whole-song word error rate
        assert t["score"] == pytest.approx(t["pitch_accuracy"] - t["word_error_rate"], abs=1e-3)
    first = record["takes"][0]
    assert first["seed"] == 5 and first["phrase_seeds"] == [5, 5] and first["resung_phrases"] == [0, 1]
    for t in record["takes"][1:]:
        assert t["resung_phrases"] and len(t["resung_phrases"]) < 2  # only a third of the phrases again
        assert all(t["phrase_seeds"][k] == t["seed"] for k in t["resung_phrases"])
    best = max(record["takes"], key=lambda t: (t["score"], -t["take"]))
    assert record["chosen"] == best["take"]
    assert record["reason"].startswith(f"take {best['take']}:") and "best of 3" in record["reason"]
    # the top-level outputs are the chosen take's
    q = json.loads((out / "qc.json").read_text())
    assert q["take"] == best["take"] and q["word_error_rate"] == best["word_error_rate"]
    assert [p["phrase"] for p in q["phrases"]] == [0, 1]
    assert all(p["words"] > 0 and p["word_errors"] is not None and p["pitch_accuracy"] is not None
               for p in q["phrases"])
    assert sum(p["word_errors"] for p in q["phrases"]) / sum(p["words"] for p in q["phrases"]) == pytest.approx(
        q["word_error_rate"], abs=1e-3)
    chosen, sr = sf.read(out / f"take{best['take']}_vocal.wav", dtype="float32")
    dry, dry_sr = sf.read(out / "vocal.wav", dtype="float32")
    import soxr

    again = soxr.resample(chosen, sr, dry_sr, quality="HQ")
    n = min(len(again), len(dry))
    assert np.any(np.abs(chosen) > 0.01) and np.allclose(dry[:n], again[:n], atol=1e-4)  # vocal.wav is that take


def test_a_new_take_differs_only_inside_its_resung_phrases(rendered) -> None:
    _, _, out, _ = rendered
    record = json.loads((out / "takes.json").read_text())
    takes = {t["take"]: t for t in record["takes"]}
    second = takes[2]
    base = takes[1]  # take 2 starts from the only take before it
    one, sr = sf.read(out / "take1_vocal.wav", dtype="float32")
    two, _ = sf.read(out / "take2_vocal.wav", dtype="float32")
    assert len(one) == len(two)
    inside = np.zeros(len(one), bool)
    for a, b in second["resung_spans"]:
        inside[int(a * sr):math.ceil(b * sr)] = True
    assert inside.any() and not inside.all()
    assert np.array_equal(one[~inside], two[~inside])  # sample-equal outside the re-sung phrases
    assert not np.allclose(one[inside], two[inside], atol=1e-4)  # a new seed sings them differently
    # the spans are where the re-sung phrases' notes are
    notes = json.loads((out.parent / "melody.json").read_text())["notes"]
    for k in second["resung_phrases"]:
        sung = [n for n in notes if n["phrase"] == k]
        assert any(a <= sung[0]["start"] and sung[-1]["end"] <= b for a, b in second["resung_spans"])
    assert [s for k, s in enumerate(second["phrase_seeds"]) if k not in second["resung_phrases"]] == [
        s for k, s in enumerate(base["phrase_seeds"]) if k not in second["resung_phrases"]]


def test_select_take_makes_another_take_the_result(rendered) -> None:
    bg, song, out, _ = rendered
    record = json.loads((out / "takes.json").read_text())
    other = next(t for t in record["takes"] if t["take"] != record["chosen"])
    before, _ = sf.read(out / "mix.wav", dtype="float32")
    result = render.select_take(bg, song, out, other["take"], style="pop_bright", target_lufs=-14.0)
    after, _ = sf.read(out / "mix.wav", dtype="float32")
    assert before.shape == after.shape and not np.allclose(before, after, atol=1e-3)
    now = json.loads((out / "takes.json").read_text())
    assert now["chosen"] == other["take"] and now["chosen_by"] == "user" and now["reason"] == "chosen by the user"
    assert [t["take"] for t in now["takes"]] == [1, 2, 3]
    q = json.loads((out / "qc.json").read_text())
    assert q["take"] == other["take"] and q["word_error_rate"] == other["word_error_rate"]
    assert abs(q["integrated_lufs"] + 14.0) <= 0.5
    assert {"mix", "mix_mp3", "qc", "takes", "take1_vocal", "take3_mix_mp3", "acep"} <= set(result.outputs)
    with pytest.raises(render.RenderError) as err:
        render.select_take(bg, song, out, 7, style="pop_bright")
    assert err.value.code == "take_not_found"
    with pytest.raises(render.RenderError) as err:
        render.select_take(bg, song, out.parent, 1, style="pop_bright")
    assert err.value.code == "takes_not_found"


def test_render_cli_select_take(rendered) -> None:
    from test_render import run_cli

    bg, song, out, _ = rendered
    r = run_cli("--background", bg, "--melody", song, "--out", out, "--select-take", "1")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "takes.json").read_text())["chosen"] == 1
    r = run_cli("--background", bg, "--melody", song, "--out", out, "--select-take", "9")
    assert r.returncode == 2 and "take_not_found" in r.stderr


@pytest.mark.parametrize("takes", [0, 6, 2.5, True])
def test_run_render_refuses_a_bad_number_of_takes(tmp_path, takes) -> None:
    with pytest.raises(render.RenderError) as err:
        render.run_render(tmp_path / "none.wav", tmp_path / "none.json", tmp_path / "o", takes=takes)
    assert err.value.code == "invalid_param"


def test_phrases_to_resing_takes_the_flawed_worst_first_then_the_weakest() -> None:
    def row(k: int, errors: int, pitch: float) -> dict:
        return {"phrase": k, "words": 4, "word_errors": errors, "pitch_accuracy": pitch}

    checks = {"phrases": [row(0, 0, 0.99), row(1, 2, 0.99), row(2, 0, 0.90), row(3, 0, 0.98), row(4, 0, 0.97),
                          row(5, 0, 0.99)]}
    assert render.phrases_to_resing(checks, 6) == [1, 2]  # a third: the two flawed ones
    checks["phrases"][1] = row(1, 0, 0.99)
    checks["phrases"][2] = row(2, 0, 0.99)
    assert render.phrases_to_resing(checks, 6) == [3, 4]  # nothing flawed: the weakest


class FakeRecogniser:
    """Hears the words of the phrases by their tone: 220 Hz and 330 Hz sing the right words, 440 Hz wrong ones."""

    def __init__(self) -> None:
        self.heard = {220.0: "one two three", 330.0: "four five six", 440.0: "wrong words here"}
        self.calls = 0

    def transcribe(self, audio: np.ndarray, **_kwargs):
        self.calls += 1
        spectrum = np.abs(np.fft.rfft(audio))
        freqs = np.fft.rfftfreq(len(audio), 1 / 16000)
        # a tone is heard when its bin stands out; the phrases come in time order
        present = [f for f in self.heard if spectrum[np.argmin(np.abs(freqs - f))] > 0.05 * spectrum.max()]
        return [SimpleNamespace(text=self.heard[f]) for f in sorted(present)], None


def _three_phrase_song(sr: int) -> tuple[np.ndarray, list[SungNote], list[list[int]]]:
    """Phrases at 1-4 s, 8-11 s and 30-33 s, each three words on three notes, each phrase one tone."""
    words = [["one", "two", "three"], ["four", "five", "six"], ["seven", "eight", "nine"]]
    starts, tones = [1.0, 8.0, 30.0], [220.0, 330.0, 440.0]
    notes, phrases = [], []
    vocal = np.zeros(int(35 * sr), np.float32)
    for k, (t0, tone) in enumerate(zip(starts, tones, strict=True)):
        phrases.append([])
        for j, w in enumerate(words[k]):
            phrases[-1].append(len(notes))
            notes.append(SungNote(t0 + j, t0 + j + 0.9, 57, w, word=w, stress=1, word_start=True))
        t = np.arange(int(3 * sr)) / sr
        vocal[int(t0 * sr):int(t0 * sr) + len(t)] = 0.3 * np.sin(2 * np.pi * tone * t)
    return vocal, notes, phrases


def test_the_word_check_covers_the_whole_song_phrase_by_phrase() -> None:
    sr = 16000
    vocal, notes, phrases = _three_phrase_song(sr)
    model = FakeRecogniser()
    record = qc.check_phrases(vocal, sr, notes, phrases, None, model=model)
    # the last phrase, 30 s in, is misheard: the first-20-s check never heard it
    assert [p["word_errors"] for p in record["phrases"]] == [0, 0, 3]
    assert record["word_error_rate"] == pytest.approx(3 / 9, abs=1e-3)
    assert record["intelligibility_phrases"] == 3 and model.calls == len(record["windows"]) == 1
    assert record["windows"][0]["phrases"] == [0, 1, 2]  # the rests are cut: 12 s of audio, one window
    capped = qc.check_phrases(vocal, sr, notes, phrases, None, seconds=20.0, model=FakeRecogniser())
    assert capped["word_error_rate"] == 0.0 and capped["phrases"][2]["word_errors"] is None
    # a take that re-sang only phrase 1 is heard again on phrase 1 only; the others keep their errors
    again = FakeRecogniser()
    partial = qc.check_phrases(vocal, sr, notes, phrases, None, only={1}, previous=record, model=again)
    assert again.calls == 1 and [p["word_errors"] for p in partial["phrases"]] == [0, 0, 3]
    assert partial["phrases"][0] == record["phrases"][0]


def test_takes_setting(monkeypatch) -> None:
    monkeypatch.delenv("TAKES", raising=False)
    monkeypatch.delenv("QC_INTELLIGIBILITY_SECONDS", raising=False)
    cfg = config.load()
    assert cfg.takes == 3 and cfg.intelligibility_seconds == math.inf
    monkeypatch.setenv("TAKES", "2")
    assert config.load().takes == 2
    for bad in ("0", "6", "2.5", "many"):
        monkeypatch.setenv("TAKES", bad)
        with pytest.raises(ValueError, match="TAKES"):
            config.load()


@pytest.mark.parametrize("style", ["soft_breathy", "choir"])
def test_a_world_or_doubled_take_is_processed_again_only_where_it_was_resung(tmp_path, style) -> None:
    bg = background(tmp_path / "bg.wav", seconds=7.0)
    song = melody_json(tmp_path / "melody.json")
    render.run_render(bg, song, tmp_path / "out", style=style, seed=2, takes=2)
    record = json.loads((tmp_path / "out" / "takes.json").read_text())
    one, sr = sf.read(tmp_path / "out" / "take1_vocal.wav", dtype="float32")
    two, _ = sf.read(tmp_path / "out" / "take2_vocal.wav", dtype="float32")
    inside = np.zeros(len(one), bool)
    for a, b in record["takes"][1]["resung_spans"]:
        inside[int(a * sr):math.ceil(b * sr)] = True
    assert inside.any() and not inside.all()
    assert np.array_equal(one[~inside], two[~inside])
    assert not np.allclose(one[inside], two[inside], atol=1e-4)


def test_word_windows_hold_at_most_25_s_of_whole_phrases() -> None:
    notes = [SungNote(20.0 * k, 20.0 * k + 10.0, 60, "la", word="la", word_start=True) for k in range(5)]
    phrases = [[k] for k in range(5)]
    windows = qc.word_windows(notes, phrases, [0, 1, 2, 3, 4])
    assert windows == [[0, 1], [2, 3], [4]]  # 10.5 + 1 + 10.5 s; a third phrase would pass 25 s
    assert qc.word_windows(notes, phrases, [1, 3]) == [[1, 3]]  # only the phrases asked for (a re-sung take)
    audio = qc._window_audio(np.ones(110 * 100, np.float32), 100, notes, phrases, [1, 3])
    assert len(audio) == 1050 + 100 + 1050 and not audio[1050:1150].any()
