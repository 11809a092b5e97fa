"""The GETDiff denoiser: a RoFormer-style transformer over GETScore columns.

As in GETMusic, each token of a column is embedded (each row has its own table, the
row's mask token included), a learned "is condition" vector is added to it, the column's
token vectors are concatenated and projected to the model width, a step embedding is
added, and a stack of pre-norm transformer layers with rotary position encoding (over
columns, so any length works and attention is relative) mixes the columns. The output is
projected back to one vector per row and read out against that row's embedding table
(weights tied), giving logits over the row's real tokens.

The default sizes (:class:`ModelConfig`) are what 2 CPU cores can train in the
``make train-melody`` budget; the official 86 M model is :mod:`.official`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .diffusion import NUM_STEPS
from .getscore import ROW_SIZES


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the denoiser."""

    row_sizes: tuple[int, ...] = ROW_SIZES
    token_dim: int = 64
    width: int = 256
    layers: int = 6
    heads: int = 4
    ffn: int = 1024
    dropout: float = 0.1
    num_steps: int = NUM_STEPS

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        d["row_sizes"] = tuple(d["row_sizes"])
        return cls(**d)


def _rotary(n: int, dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2, device=device).float() / dim))
    ang = torch.arange(n, device=device).float()[:, None] * inv[None, :]
    return ang.cos(), ang.sin()


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class Block(nn.Module):
    """Pre-norm transformer layer with rotary self-attention over columns."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.norm1 = nn.LayerNorm(cfg.width)
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)
        self.norm2 = nn.LayerNorm(cfg.width)
        self.ff = nn.Sequential(nn.Linear(cfg.width, cfg.ffn), nn.GELU(), nn.Linear(cfg.ffn, cfg.width))
        self.drop = nn.Dropout(cfg.dropout)
        self.p = cfg.dropout

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        q, k = _apply_rotary(q, cos, sin), _apply_rotary(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, t, w)))
        return x + self.drop(self.ff(self.norm2(x)))


class GETDiffModel(nn.Module):
    """The default GETDiff denoiser; implements :class:`..diffusion.Denoiser`."""

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or ModelConfig()
        n_rows = len(cfg.row_sizes)
        self.embed = nn.ModuleList(nn.Embedding(s + 1, cfg.token_dim) for s in cfg.row_sizes)
        self.cond_embed = nn.Embedding(2, cfg.token_dim)
        self.row_embed = nn.Parameter(torch.zeros(n_rows, cfg.token_dim))
        self.in_norm = nn.LayerNorm(n_rows * cfg.token_dim)
        self.in_proj = nn.Linear(n_rows * cfg.token_dim, cfg.width)
        self.step_mlp = nn.Sequential(nn.Linear(128, cfg.width), nn.SiLU(), nn.Linear(cfg.width, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.out_norm = nn.LayerNorm(cfg.width)
        self.out_proj = nn.Linear(cfg.width, n_rows * cfg.token_dim)
        self.out_bias = nn.ParameterList(nn.Parameter(torch.zeros(s)) for s in cfg.row_sizes)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def _step_features(self, step: torch.Tensor) -> torch.Tensor:
        half = 64
        freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=step.device).float() / half)
        ang = step.float()[:, None] * freq[None, :] * (1000.0 / self.cfg.num_steps)
        return torch.cat([ang.sin(), ang.cos()], dim=-1)

    def x0_logits(self, tokens: torch.Tensor, is_cond: torch.Tensor, step: torch.Tensor) -> list[torch.Tensor]:
        b, n_rows, t = tokens.shape
        cond = self.cond_embed(is_cond.long())  # (B, R, T, D)
        vecs = [self.embed[r](tokens[:, r]) + cond[:, r] + self.row_embed[r] for r in range(n_rows)]
        x = self.in_proj(self.in_norm(torch.cat(vecs, dim=-1)))  # (B, T, W)
        x = x + self.step_mlp(self._step_features(step))[:, None, :]
        cos, sin = _rotary(t, self.cfg.width // self.cfg.heads, x.device)
        for blk in self.blocks:
            x = blk(x, cos, sin)
        out = self.out_proj(self.out_norm(x)).view(b, t, n_rows, self.cfg.token_dim)
        return [out[:, :, r] @ self.embed[r].weight[:size].T + self.out_bias[r]
                for r, size in enumerate(self.cfg.row_sizes)]

    def forward(self, tokens: torch.Tensor, is_cond: torch.Tensor, step: torch.Tensor) -> list[torch.Tensor]:
        return self.x0_logits(tokens, is_cond, step)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
