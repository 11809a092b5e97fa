"""The official GETMusic loader: key layout, strict loading, dictionary checks, and the 6 <-> 14 row translation.

The real checkpoint is not available, so a randomly initialised model with the official
key layout and sizes is saved the way the original trainer saves (``model``, ``ema``,
``last_epoch`` ...), with a synthetic ``dict.txt`` that follows the documented layout.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from tmik_bgm_conditional_melody_generation import getscore
from tmik_bgm_conditional_melody_generation.diffusion import mask_tokens
from tmik_bgm_conditional_melody_generation.getscore import (
    CHORD_QUALITY,
    CHORD_ROOT,
    KEY,
    LEAD_DURATION,
    LEAD_PITCH,
    METER,
    ROW_SIZES,
    Song,
)
from tmik_bgm_conditional_melody_generation.official import (
    IMPOSSIBLE,
    CheckpointError,
    OfficialGETMusic,
    apply_rotary,
    code_length,
    detect_official,
    duration_code,
    find_official_checkpoint,
    load_dictionary,
    load_official,
)

PREFIX = "rfm.roformer.input_transformers."
ROOTS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
KINDS = ("null", "m", "+", "dim", "seven", "maj7", "m7", "m7b5")
TRACKS = (("B", 144, 996, 0), ("D", 997, 5365, 128), ("G", 5366, 6920, 0), ("P", 6921, 10488, 0),
          ("S", 10489, 11858, 0))
SMALL = {"hidden": 64, "layers": 2, "heads": 4, "ffn": 128}


def dictionary_lines() -> list[str]:
    """A dict.txt following the documented layout: ids are line numbers."""
    lines = [f"T{k}\t0" for k in range(1, 16)] + ["<pad>\t0"] + [f"M{p}\t0" for p in range(128)]
    for letter, first, last, offset in TRACKS:
        singles = [f"{letter}{p + offset}" for p in range(128)]
        groups = (f"{letter}{a + offset} {b + offset}" for a, b in itertools.combinations(range(128), 2))
        need = last - first + 1
        lines += [f"{t}\t{need - i}" for i, t in enumerate(itertools.islice(itertools.chain(singles, groups), need))]
    lines += [f"{r}\t0" for r in ROOTS] + [f"{k}\t0" for k in KINDS]
    assert len(lines) == 11879
    return lines


def write_dictionary(path: Path, lines: list[str] | None = None) -> Path:
    path.write_text("\n".join(dictionary_lines() if lines is None else lines) + "\n", encoding="utf-8")
    return path


def save_checkpoint(path: Path, model: OfficialGETMusic, *, ema_bias_offset: float | None = 0.5,
                    edit=None) -> Path:
    """Save like the original Solver: the DFM state under 'model', the EMA'd diffusion module under 'ema'."""
    state = dict(model.state_dict())
    if edit is not None:
        edit(state)
    adamw = {"state": {0: {"step": torch.tensor(1000.0), "exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)}},
             "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01, "amsgrad": False,
                               "maximize": False, "foreach": None, "capturable": False, "params": [0]}]}
    scheduler = {"T_max": 300000, "last_epoch": 1000, "verbose": False, "warmup_lr": 1e-4, "warmup": 1000,
                 "min_lrs": [1e-6], "max_lrs": [1e-4], "warmup_lrs": [1e-4], "warmup_lr_steps": None}
    payload = {"last_epoch": 3, "last_iter": 1000, "model": state,
               "optimizer_and_scheduler": {"none": {
                   "name": "none", "start_epoch": 0, "end_epoch": -1, "start_iteration": 0, "end_iteration": -1,
                   "optimizer": {"module": adamw, "step_iteration": 1},
                   "scheduler": {"module": scheduler, "step_iteration": 1}}},
               "clip_grad_norm": {"start_iteration": 0, "end_iteration": 5000, "max_norm": 0.5, "last_epoch": 1000}}
    if ema_bias_offset is not None:
        ema = {k[len("rfm."):]: v for k, v in state.items()}  # shares storage: saved once
        bias = "roformer.input_transformers.lm_head.bias"
        ema[bias] = state["rfm." + bias] + ema_bias_offset
        payload["ema"] = ema
    torch.save(payload, path)
    return path


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """The full-size official model, saved and loaded back once."""
    folder = tmp_path_factory.mktemp("official")
    torch.manual_seed(0)
    model = OfficialGETMusic()
    ckpt = save_checkpoint(folder / "getmusic.pth", model)
    dictionary = write_dictionary(folder / "dict.txt")
    denoiser = load_official(ckpt, dictionary)
    return {"folder": folder, "ckpt": ckpt, "dict": dictionary, "model": model, "denoiser": denoiser}


@pytest.fixture(scope="module")
def small_dict(tmp_path_factory) -> Path:
    return write_dictionary(tmp_path_factory.mktemp("dict") / "dict.txt")


def d_major_song(n_cols: int = 64) -> Song:
    notes = [(c, 4, p) for c, p in zip(range(0, n_cols, 4), itertools.cycle([62, 64, 66, 67, 69, 71, 73, 74]),
                                       strict=False)]
    chords = [(0, 16, 2, "maj"), (16, 32, 7, "maj"), (32, 48, 9, "7"), (48, 64, 11, "min")]
    return Song("t", "4/4", n_cols, 0, 2, "major", notes, chords)


# --------------------------------------------------------------------------------------


def test_official_checkpoint_loads_strictly(official):
    den = official["denoiser"]
    got, want = den.model.state_dict(), official["model"].state_dict()
    assert list(got) == list(want)
    assert all(k.startswith("rfm.") for k in got)
    assert got[PREFIX + "embeddings.word_embeddings.weight"].shape == (11881, 96)
    assert got[PREFIX + "encoder.layer.11.attention.self.query.weight"].shape == (768, 768)
    assert got[PREFIX + "encoder.layer.0.intermediate.dense.weight"].shape == (3072, 768)
    assert got[PREFIX + "embeddings.LayerNorm.weight"].shape == (1344,)
    assert got["rfm.log_at"].shape == (100,)
    assert 85e6 < sum(p.numel() for p in den.model.parameters()) < 95e6
    # the EMA weights are the ones used (as the original samples with them)
    assert den.source == "ema"
    bias = PREFIX + "lm_head.bias"
    assert torch.allclose(got[bias], want[bias] + 0.5)
    for k in (PREFIX + "encoder.layer.5.output.dense.weight", "rfm.log_cumprod_at"):
        assert torch.equal(got[k], want[k])


def test_denoiser_logits_shapes_and_translation(official):
    den = official["denoiser"]
    song = d_major_song(48)
    grid = torch.from_numpy(getscore.encode(song))[None]
    cond = torch.ones_like(grid, dtype=torch.bool)
    tokens = grid.clone()
    tokens[:, [LEAD_PITCH, LEAD_DURATION], 8:24] = mask_tokens()[[LEAD_PITCH, LEAD_DURATION]]
    cond[:, [LEAD_PITCH, LEAD_DURATION], 8:24] = False
    step = torch.tensor([50])
    ids, types, shift = den.to_official(tokens, cond)
    assert shift.tolist() == [-2]  # D major -> C major
    assert ids.shape == (1, 14, 48) and types.shape == (1, 14, 48)
    assert ids[0, 0, 0] == 16 + 60 and ids[0, 1, 0] == 3  # D4 -> M60, 4 columns -> T4 (id 3)
    assert ids[0, 0, 1] == 15 and ids[0, 1, 1] == 15  # no onset -> <pad>
    assert (ids[0, 0:2, 8:24] == 11880).all() and (types[0, 0:2, 8:24] == 0).all()
    assert (ids[0, 2:12] == 11879).all() and (types[0, 2:12] == 0).all()  # absent tracks are empty
    assert ids[0, 12, 0] == 11859 and ids[0, 13, 0] == 11871  # D maj -> C null
    assert ids[0, 12, 16] == 11859 + 5 and ids[0, 13, 16] == 11871  # G maj -> F null
    assert ids[0, 12, 40] == 11859 + 7 and ids[0, 13, 40] == 11871 + 4  # A7 -> G seven
    assert (types[0, 12:] == 1).all()

    logits = den.x0_logits(tokens, cond, step)
    assert [tuple(x.shape) for x in logits] == [(1, 48, s) for s in ROW_SIZES]
    assert all(torch.isfinite(x).all() for x in logits)
    # the lead logits are the official ones, moved back by the transposition
    with torch.no_grad():
        full = den.model(ids, types, den.timestep(step))
    p = 70  # our pitch token of MIDI 70 reads the official M68
    assert torch.allclose(logits[LEAD_PITCH][0, 10, getscore.pitch_token(p)], full[0, 0, 10, 16 + p - 2], atol=1e-4)
    assert torch.allclose(logits[LEAD_PITCH][0, 10, 0], full[0, 0, 10, 15], atol=1e-4)
    assert torch.allclose(logits[LEAD_DURATION][0, 10, 6], full[0, 1, 10, 4], atol=1e-4)  # 6 columns = T5
    assert (logits[LEAD_DURATION][0, :, 5] == IMPOSSIBLE).all()  # the original writes no 5-column note
    assert torch.allclose(logits[CHORD_ROOT][0, 3, 1 + 2], full[0, 12, 3, 11859], atol=1e-4)  # D <- C
    assert (logits[CHORD_QUALITY][0, :, 7] == IMPOSSIBLE).all()  # sus4 is never predicted
    # key and meter are conditions: all mass on the given token
    assert torch.equal(logits[KEY][0].argmax(-1), grid[0, KEY])
    assert torch.equal(logits[METER][0].argmax(-1), grid[0, METER])


def test_sampling_a_few_steps_gives_valid_lead_tokens(official):
    den = official["denoiser"]
    song = d_major_song(64)
    grid = torch.from_numpy(getscore.encode(song))[None]
    cond = torch.ones_like(grid, dtype=torch.bool)
    cond[:, [LEAD_PITCH, LEAD_DURATION]] = False
    tokens = grid.clone()
    tokens[:, [LEAD_PITCH, LEAD_DURATION]] = mask_tokens()[[LEAD_PITCH, LEAD_DURATION]]
    masks = mask_tokens().view(1, -1, 1)
    for i, step in enumerate((100, 70, 40, 10)):
        logits = den.x0_logits(tokens, cond, torch.tensor([step]))
        for r in (LEAD_PITCH, LEAD_DURATION):
            masked = torch.nonzero(tokens[0, r] == masks[0, r, 0]).flatten()
            keep = masked[: max(1, len(masked) // (4 - i))] if i < 3 else masked
            tokens[0, r, keep] = logits[r][0, keep].argmax(-1)
    assert not (tokens == masks).any()
    lead, dur = tokens[0, LEAD_PITCH], tokens[0, LEAD_DURATION]
    assert ((lead >= 0) & (lead < ROW_SIZES[LEAD_PITCH])).all()
    assert set(dur.tolist()) <= {0, 1, 2, 3, 4, 6, 8, 10, 12, 16}
    assert torch.equal(tokens[0, 2:], grid[0, 2:])  # conditions untouched
    getscore.decode_notes(tokens[0].numpy())  # decodes


def test_longer_than_512_columns_raises(official):
    den = official["denoiser"]
    tokens = torch.zeros(1, 6, 513, dtype=torch.long)
    with pytest.raises(ValueError, match="512"):
        den.x0_logits(tokens, torch.ones_like(tokens, dtype=torch.bool), torch.tensor([10]))


def test_detect_and_find(official, tmp_path):
    assert detect_official(official["ckpt"])
    assert find_official_checkpoint(official["folder"]) == (official["ckpt"], official["dict"])
    ours = tmp_path / "ours.pt"
    torch.save({"format": "tmik-getdiff", "model": {"embed.0.weight": torch.zeros(3, 2)}}, ours)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    assert not detect_official(ours)
    assert not detect_official(text)
    assert not detect_official(tmp_path / "missing.pth")
    assert find_official_checkpoint(tmp_path) is None


def test_official_checkpoint_without_dictionary_is_an_error_not_a_fallback(tmp_path):
    save_checkpoint(tmp_path / "small.pth", OfficialGETMusic(**SMALL), ema_bias_offset=None)
    assert detect_official(tmp_path / "small.pth")
    with pytest.raises(CheckpointError, match="dict.txt"):
        find_official_checkpoint(tmp_path)
    write_dictionary(tmp_path / "dict.txt")
    assert find_official_checkpoint(tmp_path) == (tmp_path / "small.pth", tmp_path / "dict.txt")


def test_sizes_are_inferred_and_model_weights_used_without_ema(tmp_path, small_dict):
    torch.manual_seed(1)
    model = OfficialGETMusic(**SMALL)
    ckpt = save_checkpoint(tmp_path / "small.pth", model)
    den = load_official(ckpt, small_dict, use_ema=False)
    assert den.source == "model"
    assert len(den.model.backbone.encoder.layer) == 2
    assert torch.equal(den.model.state_dict()[PREFIX + "lm_head.bias"], model.state_dict()[PREFIX + "lm_head.bias"])
    assert load_official(ckpt, small_dict).source == "ema"


def _drop(key):
    return lambda s: s.pop(key)


def _reshape(key):
    return lambda s: s.__setitem__(key, torch.zeros(64, 60))


def _extra(key):
    return lambda s: s.__setitem__(key, torch.zeros(3))


@pytest.mark.parametrize(("edit", "named"), [
    (_drop(PREFIX + "encoder.layer.1.output.LayerNorm.bias"), "encoder.layer.1.output.LayerNorm.bias"),
    (_drop("rfm.log_cumprod_ct"), "rfm.log_cumprod_ct"),
    (_reshape(PREFIX + "encoder.layer.0.attention.self.query.weight"), "attention.self.query.weight is [64, 60]"),
    (_extra(PREFIX + "encoder.layer.0.crossattention.self.query.bias"), "crossattention"),
    (_drop(PREFIX + "embeddings.word_embeddings.weight"), "word_embeddings"),
])
def test_mismatched_checkpoint_raises_naming_the_key(tmp_path, small_dict, edit, named):
    ckpt = save_checkpoint(tmp_path / "bad.pth", OfficialGETMusic(**SMALL), ema_bias_offset=None, edit=edit)
    with pytest.raises(CheckpointError) as err:
        load_official(ckpt, small_dict)
    assert named in str(err.value)
    assert "GETMusic" in str(err.value)


def test_not_a_getmusic_checkpoint_raises(tmp_path, small_dict):
    ours = tmp_path / "ours.pt"
    torch.save({"format": "tmik-getdiff", "model_state": {"x": torch.zeros(1)}}, ours)
    with pytest.raises(CheckpointError, match="'model'"):
        load_official(ours, small_dict)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_official(tmp_path / "nope.pth", small_dict)


def test_checkpoint_and_dictionary_must_belong_together(tmp_path, small_dict):
    ckpt = save_checkpoint(tmp_path / "v.pth", OfficialGETMusic(vocab_size=1000, **SMALL), ema_bias_offset=None)
    with pytest.raises(CheckpointError, match="do not belong together"):
        load_official(ckpt, small_dict)


def _set(i, text):
    def edit(lines):
        lines[i] = text
        return lines
    return edit


@pytest.mark.parametrize(("edit", "named"), [
    (lambda lines: lines[:-1], "11,879"),
    (_set(15, "<blank>\t0"), "'<pad>'"),
    (_set(16, "M1000\t0"), "'M0'"),
    (_set(0, "T0\t0"), "'T1'"),
    (_set(500, "X5 6\t0"), "bass token"),
    (_set(6000, "P60 64\t0"), "guitar token"),
    (_set(11859, "Db\t0"), "'C'"),
    (_set(11878, "sus4\t0"), "'m7b5'"),
    (_set(3000, "D129\t0"), "twice"),
    (_set(20, "M4"), "token<TAB>count"),
])
def test_wrong_dictionary_raises_naming_the_problem(tmp_path, edit, named):
    path = write_dictionary(tmp_path / "dict.txt", edit(dictionary_lines()))
    with pytest.raises(CheckpointError) as err:
        load_dictionary(path)
    assert named in str(err.value)


def test_dictionary_layout(small_dict):
    vocab = load_dictionary(small_dict)
    assert vocab.size == 11879 and vocab.pad_id == 15 and vocab.empty_id == 11879 and vocab.mask_id == 11880
    assert vocab.tokens[vocab.lead_pitch_id(60)] == "M60"
    assert vocab.tokens[vocab.root_id(10)] == "Bb" and vocab.tokens[vocab.quality_id("m7b5")] == "m7b5"


def test_duration_codes_follow_the_original():
    # T1..T3 exact, then codes covering 2, 4 and 8 lengths each
    assert [duration_code(d) for d in range(1, 17)] == [1, 2, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 8, 8, 9]
    assert [code_length(c) for c in range(1, 16)] == [1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 28, 36, 44, 52]
    assert duration_code(200) == 15


def test_minor_keys_move_to_a_minor(official):
    den = official["denoiser"]
    song = Song("m", "3/4", 12, 0, 4, "minor", [(0, 12, 64)], [(0, 12, 4, "min")])
    grid = torch.from_numpy(getscore.encode(song))[None]
    ids, _, shift = den.to_official(grid, torch.ones_like(grid, dtype=torch.bool))
    assert shift.tolist() == [5]  # E minor -> A minor
    assert ids[0, 0, 0] == 16 + 69 and ids[0, 12, 0] == 11859 + 9 and ids[0, 13, 0] == 11871 + 1
    assert ids[0, 1, 0] == 7  # 12 columns -> T8


def test_rotary_attention_is_relative():
    torch.manual_seed(2)
    table = OfficialGETMusic(**SMALL).backbone.encoder.embed_positions.weight
    q, k = torch.randn(16), torch.randn(16)

    def rot(x, pos):
        return apply_rotary(x.expand(40, 16), table[:40])[pos]

    assert torch.allclose(rot(q, 3).norm(), q.norm(), atol=1e-5)
    assert np.isclose(float(rot(q, 3) @ rot(k, 10)), float(rot(q, 23) @ rot(k, 30)), atol=1e-4)


def test_service_picks_an_official_checkpoint_placed_in_the_folder_and_writes_a_melody(official, tmp_path):
    """checkpoints/ with an official checkpoint + dict.txt: resolve_checkpoint loads it, compose samples with it."""
    from test_generate import pop_analysis

    from tmik_bgm_conditional_melody_generation import melody
    from tmik_bgm_conditional_melody_generation.checkpoint import resolve_checkpoint

    loaded = resolve_checkpoint(folder=official["folder"])
    assert loaded.kind == "official" and loaded.max_window <= 512
    comp = melody.compose(pop_analysis(bars=8), seed=1, model=loaded, steps=3, vocal_range=(60, 76))
    assert comp.song.notes, "the official model writes notes"
    assert all(60 <= p <= 76 for *_, p in comp.song.notes)
    # Explicitly named, the same file loads too; without its dictionary it is a clear error.
    assert resolve_checkpoint(official["ckpt"]).kind == "official"
    lone = tmp_path / "lonely.pth"
    lone.symlink_to(official["ckpt"])
    with pytest.raises(CheckpointError, match="dict.txt"):
        resolve_checkpoint(lone)
