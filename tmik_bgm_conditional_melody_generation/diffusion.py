"""GETDiff: discrete absorbing-state (mask) diffusion over GETScore grids.

Forward process: at step ``t`` of :data:`NUM_STEPS` every token that is to be generated
has independently been replaced by its row's mask token with probability
``t / NUM_STEPS`` (a linear schedule: nothing masked at 0, everything at ``NUM_STEPS``).
Condition tokens are never masked. The denoiser predicts the clean token (the
x0-parametrisation) of every position from the partly masked grid, the step and which
positions are conditions; training minimises the cross-entropy of the masked positions
(the absorbing-state ELBO up to its per-step weights, which we drop for a steadier
gradient on a small model). Condition positions carry no loss: the model sees them.

Any subset of rows, or of columns within a row, can be the condition: the training tasks
(:func:`training_condition`) mix generating the lead from chords, infilling a span of the
lead, and harmonising a given lead, so one model serves all of them. Sampling lives in
:mod:`.sampling`; the denoisers (:mod:`.model`, :mod:`.official`) implement
:class:`Denoiser`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from .getscore import CHORD_QUALITY, CHORD_ROOT, KEY, LEAD_DURATION, LEAD_PITCH, METER, ROW_SIZES, ROWS

NUM_STEPS = 100
# Rows the model is asked to generate; the key and meter rows are always given.
GENERATED_ROWS = (LEAD_PITCH, LEAD_DURATION, CHORD_ROOT, CHORD_QUALITY)
ALWAYS_GIVEN = (KEY, METER)


class Denoiser(Protocol):
    """What the sampler needs from a model: clean-token logits per row."""

    def x0_logits(self, tokens: torch.Tensor, is_cond: torch.Tensor, step: torch.Tensor) -> list[torch.Tensor]:
        """Logits of the clean tokens.

        ``tokens``: ``(B, len(ROWS), T)`` int64, mask tokens where unknown
        (``ROW_SIZES[r]`` for row ``r``); ``is_cond``: ``(B, len(ROWS), T)`` bool;
        ``step``: ``(B,)`` int64 in ``1..NUM_STEPS``. Returns one ``(B, T, ROW_SIZES[r])``
        tensor per row (the mask itself is never a prediction).
        """
        ...


def mask_tokens() -> torch.Tensor:
    """``(len(ROWS), 1)`` tensor of each row's mask id, for broadcasting over columns."""
    return torch.tensor(ROW_SIZES, dtype=torch.long).view(len(ROWS), 1)


def training_condition(grid_len: int, rng: np.random.Generator) -> np.ndarray:
    """Which positions of one training grid are given, for a randomly chosen task.

    * 70 %: lead from chords (lead rows generated, chord rows given);
    * 20 %: infill: the lead is given except one span of 1-8 bars' worth of columns;
    * 10 %: harmonise: the lead is given, the chord rows generated.
    The key and meter rows are always given. Returns ``(len(ROWS), grid_len)`` bool.
    """
    cond = np.zeros((len(ROWS), grid_len), dtype=bool)
    cond[list(ALWAYS_GIVEN)] = True
    task = rng.random()
    if task < 0.7:
        cond[[CHORD_ROOT, CHORD_QUALITY]] = True
    elif task < 0.9:
        cond[[CHORD_ROOT, CHORD_QUALITY]] = True
        span = int(rng.integers(16, min(grid_len, 128) + 1)) if grid_len > 16 else grid_len
        start = int(rng.integers(0, grid_len - span + 1))
        cond[[LEAD_PITCH, LEAD_DURATION]] = True
        cond[[LEAD_PITCH, LEAD_DURATION], start:start + span] = False
    else:
        cond[[LEAD_PITCH, LEAD_DURATION]] = True
    return cond


def noise(grid: torch.Tensor, cond: torch.Tensor, step: torch.Tensor, generator: torch.Generator | None = None
          ) -> torch.Tensor:
    """The forward process: mask each non-condition token with probability ``step / NUM_STEPS``."""
    p = (step.float() / NUM_STEPS).view(-1, 1, 1)
    drop = (torch.rand(grid.shape, generator=generator) < p) & ~cond
    return torch.where(drop, mask_tokens().unsqueeze(0).expand_as(grid), grid)


def loss(model: Denoiser, grid: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None,
         valid: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Training loss of a batch of clean grids, and accuracy figures.

    ``valid`` (``(B, T)`` bool) marks real columns (padding columns of short tunes carry
    no loss). Returns the loss and ``{"acc_<row>": accuracy on masked positions, ...}``.
    """
    b = grid.shape[0]
    step = torch.randint(1, NUM_STEPS + 1, (b,), generator=generator)
    noisy = noise(grid, cond, step, generator)
    logits = model.x0_logits(noisy, cond, step)
    masked = noisy == mask_tokens().unsqueeze(0)
    if valid is None:
        valid = torch.ones(b, grid.shape[2], dtype=torch.bool)
    total = torch.zeros(())
    weight_sum = torch.zeros(())
    stats = {}
    for r in GENERATED_ROWS:
        target = grid[:, r]
        ce = F.cross_entropy(logits[r].transpose(1, 2), target, reduction="none")  # (B, T)
        w = masked[:, r].float() * valid.float()
        total = total + (ce * w).sum()
        weight_sum = weight_sum + w.sum()
        with torch.no_grad():
            hit = (logits[r].argmax(-1) == target).float()
            n = w.sum().clamp(min=1.0)
            stats[f"acc_{ROWS[r]}"] = float((hit * w).sum() / n)
            stats[f"n_{ROWS[r]}"] = float(w.sum())
    return total / weight_sum.clamp(min=1.0), stats
