"""The official GETMusic model (86 M RoFormer + GETDiff), loadable from its own checkpoint.

Users who have the original checkpoint (its public link is dead) and its ``dict.txt`` can
put both in ``checkpoints/``; this module rebuilds the original network with the original
parameter names and shapes, so the checkpoint's state dict loads with ``strict=True``, and
wraps it as our :class:`~.diffusion.Denoiser` (:class:`OfficialDenoiser`), translating our
6-row GETScore into the original 14-row grid and its logits back.

What the translation does, following the original inference code:

* our lead rows become the lead track (pitch ``M<p>``, duration code ``T<k>``, ``<pad>``
  where no note starts); our chord rows become the chord track (root and quality
  tokens, ``<pad>`` where there is no chord); the five other tracks are "empty"; our mask
  becomes the original mask; condition flags become the token types;
* the piece is transposed to C major / A minor first (major keys down by the tonic,
  minor keys by ``9 - tonic``, as the original does) and the logits moved back;
* durations use the original's coarse codes (``T1``-``T3``: 1-3 columns, ``T4``-``T7``:
  4-11 in steps of 2, ``T8``-``T11``: 12-27 in steps of 4, ``T12``-``T15``: 28 and more
  in steps of 8); the original decodes a code to the shortest length it covers, so our
  durations get the logit of their code where they are that length (1, 2, 3, 4, 6, 8,
  10, 12), 16 (our cap) gets the codes of 16 columns and more, the other lengths are
  impossible (:data:`IMPOSSIBLE`, a finite large negative);
* chord qualities: maj <-> ``null`` (and augmented ``+``), min <-> ``m``, 7 <-> ``seven``,
  maj7, min7 <-> ``m7``, dim <-> ``dim`` (and ``m7b5``); sus4 is written as major and is
  never predicted;
* key and meter rows are always conditions: their logits put all mass on the given token.

The original was trained on 512-column windows (32 bars of 4/4) with one chord per bar;
columns are passed one to one (its attention is relative), so other meters and chords
that change within a bar are outside what it saw. Windows longer than 512 columns raise.
"""

from __future__ import annotations

import logging
import math
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointError
from .diffusion import NUM_STEPS
from .getscore import (
    CHORD_QUALITY,
    CHORD_ROOT,
    HIGH_PITCH,
    KEY,
    LEAD_DURATION,
    LEAD_PITCH,
    LOW_PITCH,
    MAX_DURATION,
    METER,
    QUALITIES,
    ROW_SIZES,
    ROWS,
)

__all__ = [
    "IMPOSSIBLE", "MAX_COLUMNS", "CheckpointError", "OfficialDenoiser", "OfficialGETMusic", "OfficialVocabulary",
    "code_length", "detect_official", "duration_code", "find_official_checkpoint", "key_shift", "load_dictionary",
    "load_official",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------
# The original vocabulary (getmusic/utils/dict.txt)
# --------------------------------------------------------------------------------------

DICT_LINES = 11879
N_DURATION_CODES = 15  # T1..T15 = ids 0..14
PAD_ID = 15
LEAD_START = 16  # M0..M127 = ids 16..143
# (track, token letter, first id, last id inclusive); the lead track holds single pitches only.
TRACK_RANGES: tuple[tuple[str, str, int, int], ...] = (
    ("lead", "M", 16, 143), ("bass", "B", 144, 996), ("drums", "D", 997, 5365),
    ("guitar", "G", 5366, 6920), ("piano", "P", 6921, 10488), ("strings", "S", 10489, 11858),
)
ROOT_TOKENS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
ROOT_START = 11859
QUALITY_TOKENS = ("null", "m", "+", "dim", "seven", "maj7", "m7", "m7b5")
QUALITY_START = 11871
# our quality -> the official quality it is written as (sus4 has no counterpart: major)
QUALITY_TO_OFFICIAL = {"maj": "null", "min": "m", "7": "seven", "maj7": "maj7", "min7": "m7", "dim": "dim",
                       "sus4": "null"}
# our quality <- the official qualities whose probability it collects (sus4: none)
QUALITY_FROM_OFFICIAL = {"maj": ("null", "+"), "min": ("m",), "7": ("seven",), "maj7": ("maj7",),
                         "min7": ("m7",), "dim": ("dim", "m7b5"), "sus4": ()}
N_TRACK_ROWS = 14
LEAD_ROWS = (0, 1)
CHORD_ROWS = (12, 13)
MAX_COLUMNS = 512  # the original's training window and inference truncation
IMPOSSIBLE = -1.0e4  # logit of a token the official model cannot produce (finite: safe in softmax and CE)

DICT_EXPECTED = ("the original getmusic/utils/dict.txt: 11,879 lines 'token<TAB>count'; T1..T15, <pad>, "
                 "M0..M127, bass B.. (ids 144-996), drums D.. (997-5365), guitar G.. (5366-6920), "
                 "piano P.. (6921-10488), strings S.. (10489-11858), roots C..B (11859-11870), "
                 "qualities null m + dim seven maj7 m7 m7b5 (11871-11878)")


@dataclass(frozen=True)
class OfficialVocabulary:
    """The original token list (ids are line numbers), validated against the documented layout."""

    tokens: tuple[str, ...]
    path: str = ""

    @property
    def size(self) -> int:
        return len(self.tokens)

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def empty_id(self) -> int:
        """Token of a track absent from the piece: one past the dictionary."""
        return len(self.tokens)

    @property
    def mask_id(self) -> int:
        """The diffusion's absorbing state: one past the empty token."""
        return len(self.tokens) + 1

    def duration_id(self, code: int) -> int:
        return code - 1

    def lead_pitch_id(self, pitch: int) -> int:
        return LEAD_START + pitch

    def root_id(self, pitch_class: int) -> int:
        return ROOT_START + pitch_class % 12

    def quality_id(self, name: str) -> int:
        return QUALITY_START + QUALITY_TOKENS.index(name)


def load_dictionary(path: str | Path) -> OfficialVocabulary:
    """Read and validate the original ``dict.txt``; a file of another layout raises CheckpointError.

    The check matters because the checkpoint's token ids only mean something with this exact list.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"GETMusic dictionary {path} does not exist; expected {DICT_EXPECTED}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"GETMusic dictionary {path} cannot be read ({exc}); expected {DICT_EXPECTED}") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    tokens = []
    for i, line in enumerate(lines):
        parts = line.strip().split("\t")
        if len(parts) != 2 or not parts[0]:
            raise CheckpointError(f"{path} line {i + 1} is {line[:40]!r}, not 'token<TAB>count'; expected {DICT_EXPECTED}")
        tokens.append(parts[0])
    if len(tokens) != DICT_LINES:
        raise CheckpointError(f"{path} has {len(tokens)} tokens, the GETMusic dictionary has {DICT_LINES:,}; "
                              f"expected {DICT_EXPECTED}")
    seen: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        if tok in seen:
            raise CheckpointError(f"{path} lists token {tok!r} twice (lines {seen[tok] + 1} and {i + 1}); "
                                  f"expected {DICT_EXPECTED}")
        seen[tok] = i

    def expect(i: int, want: str, what: str) -> None:
        if tokens[i] != want:
            raise CheckpointError(f"{path} line {i + 1} (id {i}) is {tokens[i]!r}, expected {want!r} ({what}); "
                                  f"this is not {DICT_EXPECTED}")

    for k in range(1, N_DURATION_CODES + 1):
        expect(k - 1, f"T{k}", "duration tokens T1..T15 come first")
    expect(PAD_ID, "<pad>", "the pad token follows the durations")
    for p in range(128):
        expect(LEAD_START + p, f"M{p}", "lead pitches M0..M127")
    for track, letter, first, last in TRACK_RANGES[1:]:
        for i in range(first, last + 1):
            if not tokens[i].startswith(letter):
                raise CheckpointError(f"{path} line {i + 1} (id {i}) is {tokens[i]!r}, expected a {track} token "
                                      f"'{letter}<pitches>' (ids {first}-{last}); this is not {DICT_EXPECTED}")
    for k, name in enumerate(ROOT_TOKENS):
        expect(ROOT_START + k, name, "chord roots C..B")
    for k, name in enumerate(QUALITY_TOKENS):
        expect(QUALITY_START + k, name, "chord qualities")
    return OfficialVocabulary(tuple(tokens), str(path))


# --------------------------------------------------------------------------------------
# Durations and keys
# --------------------------------------------------------------------------------------

def _code_starts() -> list[int]:
    # Four groups of four codes; within group g a code covers 2**g lengths (the original's scheme).
    starts, length = [], 0
    for g in range(4):
        for _ in range(4):
            starts.append(length)
            length += 2 ** g
    return starts


_CODE_STARTS = _code_starts()  # code -> shortest length it covers: 0, 1, 2, 3, 4, 6, 8, 10, 12, 16, ...


def duration_code(length: int) -> int:
    """The original's duration code (``T<code>``) of a length in 16th-note columns."""
    length = max(1, int(length))
    return max(c for c, s in enumerate(_CODE_STARTS) if s <= length)


def code_length(code: int) -> int:
    """The length the original writes for a duration code (the shortest it covers)."""
    return _CODE_STARTS[code]


def key_shift(tonic: int, mode: str) -> int:
    """Semitones the original moves a piece by: major tonic to C (down), minor tonic to A."""
    return -(tonic % 12) if mode == "major" else 9 - tonic % 12


# --------------------------------------------------------------------------------------
# The network (parameter names and shapes as in the original / HuggingFace RoFormer)
# --------------------------------------------------------------------------------------

def _sinusoid_table(n_pos: int, dim: int) -> torch.Tensor:
    """RoFormer's position table: sines in the first half of the columns, cosines in the second."""
    half = dim // 2
    inv = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64) * 2.0 / dim)
    ang = torch.arange(n_pos, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cat([ang.sin(), ang.cos()], dim=1).float()


def apply_rotary(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs of ``x`` (..., L, d) by the angles of ``table`` (L, d) (sin | cos halves)."""
    sin, cos = table.chunk(2, dim=-1)
    x_even, x_odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([x_even * cos - x_odd * sin, x_odd * cos + x_even * sin], dim=-1).flatten(-2)


def _timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    ang = t.float()[:, None] * freq[None, :]
    out = torch.cat([ang.cos(), ang.sin()], dim=-1)
    return F.pad(out, (0, dim % 2))


class _SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.p = heads, dropout
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, table: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, n, w = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, n, self.heads, w // self.heads).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        q, k = apply_rotary(q, table), apply_rotary(k, table)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=self.p if self.training else 0.0)
        return a.transpose(1, 2).reshape(b, n, w)


class _DenseNorm(nn.Module):
    """``LayerNorm(dropout(dense(x)) + residual)`` (RoFormer's SelfOutput / Output)."""

    def __init__(self, d_in: int, d_out: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.self = _SelfAttention(hidden, heads, dropout)
        self.output = _DenseNorm(hidden, hidden, eps, dropout)

    def forward(self, x: torch.Tensor, table: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, table, bias), x)


class _Intermediate(nn.Module):
    def __init__(self, hidden: int, ffn: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, ffn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, ffn: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.attention = _Attention(hidden, heads, eps, dropout)
        self.intermediate = _Intermediate(hidden, ffn)
        self.output = _DenseNorm(ffn, hidden, eps, dropout)

    def forward(self, x: torch.Tensor, table: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x = self.attention(x, table, bias)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self, hidden: int, heads: int, ffn: int, layers: int, max_positions: int, eps: float,
                 dropout: float) -> None:
        super().__init__()
        self.embed_positions = nn.Embedding(max_positions, hidden // heads)
        self.embed_positions.weight.requires_grad_(False)
        with torch.no_grad():
            self.embed_positions.weight.copy_(_sinusoid_table(max_positions, hidden // heads))
        self.layer = nn.ModuleList(_Layer(hidden, heads, ffn, eps, dropout) for _ in range(layers))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        table = self.embed_positions.weight[: x.shape[1]]
        for layer in self.layer:
            x = layer(x, table, bias)
        return x


class _Embeddings(nn.Module):
    def __init__(self, n_embed: int, token_dim: int, tracks: int, type_vocab: int, time_dim: int, pad_id: int,
                 eps: float, dropout: float) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.word_embeddings = nn.Embedding(n_embed, token_dim, padding_idx=pad_id)
        self.token_type_embeddings = nn.Embedding(type_vocab, token_dim)
        self.time_embeddings = nn.Sequential(nn.Linear(time_dim, token_dim), nn.SiLU(), nn.Linear(token_dim, token_dim))
        self.LayerNorm = nn.LayerNorm(token_dim * tracks, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor, types: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b, _, n = ids.shape
        step = self.time_embeddings(_timestep_features(t, self.time_dim))[:, None, None, :]
        e = self.word_embeddings(ids) + self.token_type_embeddings(types.long()) + step  # (B, R, L, D)
        e = e.permute(0, 2, 1, 3).reshape(b, n, -1)  # a column's R token vectors side by side
        return self.dropout(self.LayerNorm(e))


class _Backbone(nn.Module):
    def __init__(self, n_embed: int, token_dim: int, tracks: int, hidden: int, layers: int, heads: int, ffn: int,
                 max_positions: int, type_vocab: int, time_dim: int, eps: float, dropout: float) -> None:
        super().__init__()
        wide = token_dim * tracks
        self.embeddings = _Embeddings(n_embed, token_dim, tracks, type_vocab, time_dim, n_embed - 2, eps, dropout)
        self.embeddings_project = nn.Sequential(nn.Linear(wide, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.encoder = _Encoder(hidden, heads, ffn, layers, max_positions, eps, dropout)
        self.outputs_project = nn.Sequential(nn.Linear(hidden, wide), nn.SiLU(), nn.Linear(wide, wide))
        self.lm_head = nn.Linear(token_dim, n_embed)
        self.lm_head.weight = self.embeddings.word_embeddings.weight  # tied, as in the original


class _Roformer(nn.Module):
    def __init__(self, **sizes) -> None:
        super().__init__()
        self.input_transformers = _Backbone(**sizes)


def _alpha1_schedule(steps: int, n: int) -> dict[str, torch.Tensor]:
    """GETDiff's linear 'alpha1' absorbing schedule, as log buffers (kept so checkpoints load)."""
    k = np.arange(steps) / (steps - 1)
    att = np.concatenate(([1.0], 0.99999 + k * (0.000009 - 0.99999)))
    ctt = np.concatenate(([0.0], 0.000009 + k * (0.99999 - 0.000009)))
    at = att[1:] / att[:-1]
    ct = 1 - (1 - ctt[1:]) / (1 - ctt[:-1])
    bt = (1 - at - ct) / n
    att_c = np.concatenate((att[1:], [1.0]))
    ctt_c = np.concatenate((ctt[1:], [0.0]))
    btt_c = (1 - att_c - ctt_c) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = {name: torch.tensor(np.log(v), dtype=torch.float64)
                for name, v in (("log_at", at), ("log_bt", bt), ("log_ct", ct), ("log_cumprod_at", att_c),
                                ("log_cumprod_bt", btt_c), ("log_cumprod_ct", ctt_c))}
    logs["log_1_min_ct"] = torch.log(1 - logs["log_ct"].exp() + 1e-40)
    logs["log_1_min_cumprod_ct"] = torch.log(1 - logs["log_cumprod_ct"].exp() + 1e-40)
    out = {name: v.float() for name, v in logs.items()}
    out["Lt_history"] = torch.zeros(steps)
    out["Lt_count"] = torch.zeros(steps)
    return out


_BUFFERS = ("log_at", "log_bt", "log_ct", "log_cumprod_at", "log_cumprod_bt", "log_cumprod_ct", "log_1_min_ct",
            "log_1_min_cumprod_ct", "Lt_history", "Lt_count")


class _Diffusion(nn.Module):
    def __init__(self, steps: int, **sizes) -> None:
        super().__init__()
        self.roformer = _Roformer(**sizes)
        for name, value in _alpha1_schedule(steps, sizes["n_embed"] - 1).items():
            self.register_buffer(name, value)


class OfficialGETMusic(nn.Module):
    """The original GETMusic network; ``state_dict()`` keys match an original checkpoint's ``model``.

    ``vocab_size`` is the original's (dictionary + empty token = 11,880); the embedding
    table has one more row (the mask). ``forward`` gives logits over the dictionary tokens
    (the empty and mask classes are never predicted), per row and column.
    """

    def __init__(self, vocab_size: int = 11880, tracks: int = N_TRACK_ROWS, token_dim: int = 96, hidden: int = 768,
                 layers: int = 12, heads: int = 12, ffn: int = 3072, max_positions: int = 1536, steps: int = 100,
                 type_vocab: int = 2, time_dim: int = 128, eps: float = 1e-12, dropout: float = 0.1) -> None:
        super().__init__()
        if hidden % heads or (hidden // heads) % 2:
            raise ValueError(f"hidden {hidden} must split into {heads} heads of even width")
        self.vocab_size, self.tracks, self.token_dim, self.steps = vocab_size, tracks, token_dim, steps
        self.rfm = _Diffusion(steps, n_embed=vocab_size + 1, token_dim=token_dim, tracks=tracks, hidden=hidden,
                              layers=layers, heads=heads, ffn=ffn, max_positions=max_positions, type_vocab=type_vocab,
                              time_dim=time_dim, eps=eps, dropout=dropout)

    @property
    def backbone(self) -> _Backbone:
        return self.rfm.roformer.input_transformers

    def features(self, ids: torch.Tensor, types: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Output token vectors ``(B, tracks, L, token_dim)`` before the read-out.

        ``ids``/``types``: ``(B, tracks, L)``; ``t``: ``(B,)`` diffusion index ``0..steps-1``
        (99 = all masked). Past 512 columns attention is banded (+-255), as in the original.
        """
        m = self.backbone
        b, r, n = ids.shape
        if r != self.tracks:
            raise ValueError(f"expected {self.tracks} rows, got {r}")
        if n > m.encoder.embed_positions.num_embeddings:
            raise ValueError(f"{n} columns exceed the {m.encoder.embed_positions.num_embeddings} positions")
        bias = None
        if not self.training and n > MAX_COLUMNS:
            i = torch.arange(n, device=ids.device)
            far = (i[None, :] - i[:, None]).abs() > 255
            bias = torch.zeros(n, n, device=ids.device).masked_fill(far, -10000.0)
        x = m.embeddings_project(m.embeddings(ids, types, t))
        x = m.outputs_project(m.encoder(x, bias))
        return x.view(b, n, r, self.token_dim).permute(0, 2, 1, 3)

    def read_out(self, feats: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of ``feats`` (..., token_dim) over all dictionary tokens, or only over ``ids``."""
        head = self.backbone.lm_head
        if ids is None:
            return F.linear(feats, head.weight[: self.vocab_size - 1], head.bias[: self.vocab_size - 1])
        return F.linear(feats, head.weight[ids], head.bias[ids])

    def forward(self, ids: torch.Tensor, types: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, tracks, L, vocab_size - 1)`` of the clean tokens."""
        return self.read_out(self.features(ids, types, t))


# --------------------------------------------------------------------------------------
# Our Denoiser on top of it
# --------------------------------------------------------------------------------------

class OfficialDenoiser(nn.Module):
    """Implements :class:`..diffusion.Denoiser` with the official model (our 6 rows <-> its 14)."""

    max_columns = MAX_COLUMNS

    def __init__(self, model: OfficialGETMusic, vocab: OfficialVocabulary, *, source: str = "model") -> None:
        super().__init__()
        if model.tracks != N_TRACK_ROWS:
            raise CheckpointError(f"the official layout has {N_TRACK_ROWS} rows, this model has {model.tracks}")
        if model.vocab_size != vocab.size + 1:
            raise CheckpointError(f"the model's vocabulary ({model.vocab_size} = dictionary + empty) does not match "
                                  f"the dictionary {vocab.path or ''} ({vocab.size} tokens)")
        self.model, self.vocab, self.source = model, vocab, source
        v = vocab
        self._dur_in = torch.tensor([v.pad_id] + [v.duration_id(duration_code(d)) for d in range(1, MAX_DURATION + 1)]
                                    + [v.mask_id])
        self._qual_in = torch.tensor([v.pad_id] + [v.quality_id(QUALITY_TO_OFFICIAL[q]) for q in QUALITIES]
                                     + [v.mask_id])
        self._root_in = torch.tensor([v.root_id(pc) for pc in range(12)])
        # read-out subsets: lead pitch [pad, M0..M127]; duration [T1..T15, pad]; root [pad, C..B];
        # quality [pad, null..m7b5]
        self._ids_pitch = torch.tensor([v.pad_id] + [v.lead_pitch_id(p) for p in range(128)])
        self._ids_dur = torch.tensor([v.duration_id(c) for c in range(1, N_DURATION_CODES + 1)] + [v.pad_id])
        self._ids_root = torch.tensor([v.pad_id] + [v.root_id(pc) for pc in range(12)])
        self._ids_qual = torch.tensor([v.pad_id] + [v.quality_id(q) for q in QUALITY_TOKENS])

    # ---- our grid -> the official grid

    def shifts(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-item transposition to C major / A minor, from the key row's most common key."""
        key = tokens[:, KEY]
        out = []
        for i in range(key.shape[0]):
            given = key[i][(key[i] >= 0) & (key[i] < ROW_SIZES[KEY])]
            if given.numel() == 0:
                raise ValueError(f"the official model needs the key row as a condition; item {i} has none")
            k = int(torch.mode(given).values)
            out.append(key_shift(k % 12, "minor" if k >= 12 else "major"))
        return torch.tensor(out, dtype=torch.long, device=tokens.device)

    def to_official(self, tokens: torch.Tensor, is_cond: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(ids, types, shift)``: the 14-row token grid, its condition flags and the transposition."""
        if tokens.dim() != 3 or tokens.shape[1] != len(ROWS):
            raise ValueError(f"tokens must be (B, {len(ROWS)}, T), got {tuple(tokens.shape)}")
        for r in (LEAD_PITCH, LEAD_DURATION, CHORD_ROOT, CHORD_QUALITY):
            row = tokens[:, r]
            if row.numel() and (row.min() < 0 or row.max() > ROW_SIZES[r]):
                raise ValueError(f"row {ROWS[r]} holds tokens outside 0..{ROW_SIZES[r]}")
        b, _, n = tokens.shape
        dev = tokens.device
        v = self.vocab
        shift = self.shifts(tokens)
        ids = torch.full((b, N_TRACK_ROWS, n), v.empty_id, dtype=torch.long, device=dev)
        lp = tokens[:, LEAD_PITCH]
        pitch = (lp + (LOW_PITCH - 1) + shift[:, None]).clamp(0, 127)
        ids[:, 0] = torch.where(lp == ROW_SIZES[LEAD_PITCH], v.mask_id,
                                torch.where(lp == 0, v.pad_id, LEAD_START + pitch))
        ids[:, 1] = self._dur_in.to(dev)[tokens[:, LEAD_DURATION]]
        root = tokens[:, CHORD_ROOT]
        moved = self._root_in.to(dev)[(root - 1 + shift[:, None]) % 12]
        ids[:, 12] = torch.where(root == ROW_SIZES[CHORD_ROOT], v.mask_id, torch.where(root == 0, v.pad_id, moved))
        ids[:, 13] = self._qual_in.to(dev)[tokens[:, CHORD_QUALITY]]
        types = torch.zeros((b, N_TRACK_ROWS, n), dtype=torch.long, device=dev)
        types[:, 0], types[:, 1] = is_cond[:, LEAD_PITCH], is_cond[:, LEAD_DURATION]
        types[:, 12], types[:, 13] = is_cond[:, CHORD_ROOT], is_cond[:, CHORD_QUALITY]
        return ids, types, shift

    def timestep(self, step: torch.Tensor) -> torch.Tensor:
        """Our step (mask rate ``step / NUM_STEPS``) -> the original's index of the same mask rate."""
        s = self.model.steps
        return torch.round(step.float() * (s - 1) / NUM_STEPS).long().clamp(0, s - 1)

    # ---- official logits -> our rows

    def x0_logits(self, tokens: torch.Tensor, is_cond: torch.Tensor, step: torch.Tensor) -> list[torch.Tensor]:
        """Logits of the clean tokens of our 6 rows (see :class:`..diffusion.Denoiser`)."""
        n = tokens.shape[-1]
        if n > MAX_COLUMNS:
            raise ValueError(f"the official GETMusic model takes at most {MAX_COLUMNS} columns per call "
                             f"(its training window); got {n}: sample in windows")
        param = self.model.backbone.lm_head.weight
        out_dev = tokens.device
        tokens, is_cond, step = tokens.to(param.device), is_cond.to(param.device), step.to(param.device)
        with torch.set_grad_enabled(self.training and torch.is_grad_enabled()):
            ids, types, shift = self.to_official(tokens, is_cond)
            feats = self.model.features(ids, types, self.timestep(step))
            return [x.to(out_dev) for x in self._our_logits(feats, tokens, shift)]

    def _our_logits(self, feats: torch.Tensor, tokens: torch.Tensor, shift: torch.Tensor) -> list[torch.Tensor]:
        dev = feats.device
        b, _, n, _ = feats.shape
        m = self.model
        # lead pitch: [PAD, our pitch tokens] <- [pad, M(p + shift)]
        lp = m.read_out(feats[:, 0], self._ids_pitch.to(dev))  # (B, L, 129)
        our_p = torch.arange(LOW_PITCH, HIGH_PITCH + 1, device=dev)
        idx = torch.cat([torch.zeros(b, 1, dtype=torch.long, device=dev), 1 + our_p[None, :] + shift[:, None]], 1)
        pitch = lp.gather(2, idx[:, None, :].expand(b, n, -1))
        # duration: our length d <- its code where the original writes exactly d; 16 <- codes of 16+
        ld = m.read_out(feats[:, 1], self._ids_dur.to(dev))  # (B, L, 16): T1..T15, pad
        dur = torch.full((b, n, ROW_SIZES[LEAD_DURATION]), IMPOSSIBLE, device=dev)
        dur[..., 0] = ld[..., N_DURATION_CODES]
        for d in range(1, MAX_DURATION):
            c = duration_code(d)
            if code_length(c) == d:
                dur[..., d] = ld[..., c - 1]
        long_codes = [c - 1 for c in range(1, N_DURATION_CODES + 1) if code_length(c) >= MAX_DURATION]
        dur[..., MAX_DURATION] = torch.logsumexp(ld[..., long_codes], dim=-1)
        # chord root: [N, C..B] <- [pad, root (r + shift)]
        lr = m.read_out(feats[:, 12], self._ids_root.to(dev))  # (B, L, 13)
        ridx = torch.cat([torch.zeros(b, 1, dtype=torch.long, device=dev),
                          1 + (torch.arange(12, device=dev)[None, :] + shift[:, None]) % 12], 1)
        root = lr.gather(2, ridx[:, None, :].expand(b, n, -1))
        # chord quality: [N, ours] <- [pad, official qualities collected]
        lq = m.read_out(feats[:, 13], self._ids_qual.to(dev))  # (B, L, 9)
        qual = torch.full((b, n, ROW_SIZES[CHORD_QUALITY]), IMPOSSIBLE, device=dev)
        qual[..., 0] = lq[..., 0]
        for k, q in enumerate(QUALITIES):
            cols = [1 + QUALITY_TOKENS.index(name) for name in QUALITY_FROM_OFFICIAL[q]]
            if cols:
                qual[..., k + 1] = torch.logsumexp(lq[..., cols], dim=-1)
        return [pitch, dur, root, qual, self._given(tokens[:, KEY], KEY), self._given(tokens[:, METER], METER)]

    @staticmethod
    def _given(row: torch.Tensor, r: int) -> torch.Tensor:
        """Logits with all mass on the given tokens (uniform where the row is masked)."""
        size = ROW_SIZES[r]
        known = row < size
        out = torch.full((*row.shape, size), IMPOSSIBLE, device=row.device)
        out.scatter_(2, row.clamp(max=size - 1).unsqueeze(-1), 0.0)
        return torch.where(known.unsqueeze(-1), out, torch.zeros_like(out))

    def forward(self, tokens: torch.Tensor, is_cond: torch.Tensor, step: torch.Tensor) -> list[torch.Tensor]:
        return self.x0_logits(tokens, is_cond, step)


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------

PREFIX = "rfm.roformer.input_transformers."
CKPT_EXPECTED = (
    "a GETMusic checkpoint is a torch.save dict with 'model' (and optionally 'ema', 'last_epoch', 'last_iter', "
    "'optimizer_and_scheduler', 'clip_grad_norm'); 'model' holds keys "
    f"'{PREFIX}embeddings.word_embeddings.weight' [11881, 96], 'embeddings.token_type_embeddings.weight' [2, 96], "
    "'embeddings.time_embeddings.{0,2}.*', 'embeddings.LayerNorm.*' [1344], 'embeddings_project.{0,2}.*', "
    "'encoder.embed_positions.weight' [1536, 64], 'encoder.layer.<0-11>.attention.self.{query,key,value}.*', "
    "'...attention.output.{dense,LayerNorm}.*', '...intermediate.dense.*', '...output.{dense,LayerNorm}.*', "
    "'outputs_project.{0,2}.*', 'lm_head.{weight,bias}', plus diffusion buffers 'rfm.log_at', "
    "'rfm.log_cumprod_at', ... 'rfm.Lt_history', 'rfm.Lt_count'")
_REQUIRED = ("embeddings.word_embeddings.weight", "embeddings.token_type_embeddings.weight",
             "embeddings.time_embeddings.0.weight", "embeddings.LayerNorm.weight", "embeddings_project.0.weight",
             "encoder.embed_positions.weight", "encoder.layer.0.intermediate.dense.weight")
# Strings that the pickle of an official checkpoint (model or EMA state) contains.
_MARKERS = (b"input_transformers.embeddings.word_embeddings.weight",
            b"input_transformers.encoder.layer.0.attention.self.query.weight", b"log_cumprod_at")


def _torch_load(path: Path, allow_pickle: bool) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"GETMusic checkpoint {path} does not exist") from None
    except pickle.UnpicklingError as exc:
        if not allow_pickle:
            raise CheckpointError(f"{path} holds Python objects that a weights-only load refuses ({exc}); "
                                  "load it with allow_pickle=True only if you trust the file") from None
    except Exception as exc:  # noqa: BLE001 - any failure to read means an unusable file
        raise CheckpointError(f"GETMusic checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); "
                              f"{CKPT_EXPECTED}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"GETMusic checkpoint {path} cannot be read ({type(exc).__name__}: {exc})") from None


def _is_state(obj: object) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(k, str) for k in obj)


def _pick_state(payload: object, use_ema: bool, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict to load (keys under ``rfm.``) and which one it is ("ema" or "model")."""
    if not isinstance(payload, Mapping):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not a checkpoint dict; {CKPT_EXPECTED}")
    if "model" in payload and _is_state(payload["model"]):
        model_state, source = dict(payload["model"]), "model"
    elif _is_state(payload) and any(str(k).startswith("rfm.") for k in payload):
        model_state, source = dict(payload), "model"
    else:
        keys = sorted(map(str, payload))[:6]
        raise CheckpointError(f"{path} has no 'model' state dict (top-level keys {keys}); {CKPT_EXPECTED}")
    if use_ema:
        ema = payload.get("ema")
        if _is_state(ema):
            # The original's EMA holds the diffusion module itself: its keys lack the "rfm." prefix.
            return {(k if k.startswith("rfm.") else "rfm." + k): v for k, v in ema.items()}, "ema"
        log.warning("%s has no EMA weights; using its 'model' weights", path)
    return model_state, source


def _infer_sizes(state: Mapping[str, object], path: Path) -> dict[str, int]:
    missing = [PREFIX + k for k in _REQUIRED if not isinstance(state.get(PREFIX + k), torch.Tensor)]
    if not isinstance(state.get("rfm.log_at"), torch.Tensor):
        missing.append("rfm.log_at")
    if missing:
        raise CheckpointError(f"{path} is not a GETMusic checkpoint: missing {missing[:4]}; {CKPT_EXPECTED}")

    def shape(k: str) -> tuple[int, ...]:
        return tuple(state[PREFIX + k].shape)

    try:
        n_embed, token_dim = shape("embeddings.word_embeddings.weight")
        (wide,) = shape("embeddings.LayerNorm.weight")
        hidden = shape("embeddings_project.0.weight")[0]
        max_positions, head_dim = shape("encoder.embed_positions.weight")
        ffn = shape("encoder.layer.0.intermediate.dense.weight")[0]
        type_vocab = shape("embeddings.token_type_embeddings.weight")[0]
        time_dim = shape("embeddings.time_embeddings.0.weight")[1]
        (steps,) = tuple(state["rfm.log_at"].shape)
    except (ValueError, IndexError) as exc:
        raise CheckpointError(f"{path}: unexpected tensor rank in a GETMusic key ({exc}); {CKPT_EXPECTED}") from None
    layer_ids = {int(m.group(1)) for k in state if (m := re.match(re.escape(PREFIX) + r"encoder\.layer\.(\d+)\.", k))}
    if wide % token_dim or hidden % head_dim or (head_dim % 2):
        raise CheckpointError(f"{path}: inconsistent sizes (token {token_dim}, tracks x token {wide}, hidden {hidden}, "
                              f"head {head_dim}); {CKPT_EXPECTED}")
    return {"vocab_size": n_embed - 1, "tracks": wide // token_dim, "token_dim": token_dim, "hidden": hidden,
            "layers": max(layer_ids) + 1, "heads": hidden // head_dim, "ffn": ffn, "max_positions": max_positions,
            "steps": steps, "type_vocab": type_vocab, "time_dim": time_dim}


def _check_keys(model: nn.Module, state: Mapping[str, object], path: Path) -> None:
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    wrong = [f"{k} is {list(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}, "
             f"expected {list(want[k].shape)}"
             for k, v in state.items() if k in want and (not isinstance(v, torch.Tensor) or v.shape != want[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {missing[:4]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {unexpected[:4]}")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatch(es): {wrong[:4]}")
        raise CheckpointError(f"{path} does not match the GETMusic architecture: {'; '.join(parts)}. {CKPT_EXPECTED}")


def load_official(checkpoint_path: str | Path, dictionary_path: str | Path, *, use_ema: bool = True,
                  allow_pickle: bool = False) -> OfficialDenoiser:
    """Load an original GETMusic checkpoint (strictly) as our Denoiser.

    Sizes are read from the tensor shapes; every key must match (no partial loads), since a
    half-loaded model would sample noise without saying so. ``use_ema`` prefers the EMA
    weights the original samples with (its default). ``allow_pickle`` permits a full
    (code-executing) unpickle for files a weights-only load refuses: trusted files only.
    """
    path = Path(checkpoint_path)
    vocab = load_dictionary(dictionary_path)
    payload = _torch_load(path, allow_pickle)
    state, source = _pick_state(payload, use_ema, path)
    sizes = _infer_sizes(state, path)
    if sizes["tracks"] != N_TRACK_ROWS:
        raise CheckpointError(f"{path} has {sizes['tracks']} rows, the GETMusic layout has {N_TRACK_ROWS}")
    if sizes["vocab_size"] != vocab.size + 1:
        raise CheckpointError(f"{path} has {sizes['vocab_size'] + 1} token embeddings, but the dictionary "
                              f"{dictionary_path} gives {vocab.size} tokens (+ empty + mask = {vocab.size + 2}); "
                              "the checkpoint and dict.txt do not belong together")
    model = OfficialGETMusic(**sizes)
    _check_keys(model, state, path)
    model.load_state_dict(state, strict=True)
    model.eval()
    log.info("loaded official GETMusic %s (%s weights, %d layers, %.1f M parameters)", path, source,
             sizes["layers"], sum(p.numel() for p in model.parameters()) / 1e6)
    return OfficialDenoiser(model, vocab, source=source).eval()


def detect_official(path: str | Path) -> bool:
    """Whether ``path`` looks like an original GETMusic checkpoint, reading only its pickled key names.

    Cheap: for the zip format torch saves, only the small ``data.pkl`` entry is read (no
    tensors, nothing unpickled).
    """
    path = Path(path)
    if not path.is_file():
        return False
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = [i for i in zf.infolist() if i.filename.endswith("data.pkl")]
                if not names or names[0].file_size > 256 * 2 ** 20:
                    return False
                data = zf.read(names[0])
            return all(marker in data for marker in _MARKERS)
        payload = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
        state, _ = _pick_state(payload, False, path)
        return all(any(marker.decode() in k for k in state) for marker in _MARKERS)
    except Exception:  # noqa: BLE001 - anything unreadable is simply not an official checkpoint
        return False


def find_official_checkpoint(folder: str | Path) -> tuple[Path, Path] | None:
    """The first official checkpoint (``*.pth``/``*.pt``) under ``folder``, with the ``dict.txt`` beside it.

    One without its dictionary is an error, not skipped: whoever put it there wants it used.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for ckpt in sorted(p for p in folder.rglob("*") if p.suffix in (".pth", ".pt") and p.is_file()):
        if detect_official(ckpt):
            dictionary = ckpt.parent / "dict.txt"
            if dictionary.is_file():
                return ckpt, dictionary
            raise CheckpointError(f"{ckpt} looks like an official GETMusic checkpoint but {dictionary} is missing; "
                                  "place the original getmusic/utils/dict.txt beside it (or remove the checkpoint)")
    return None

