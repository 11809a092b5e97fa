"""Train the default GETDiff checkpoint (``make train-melody``).

``python -m tmik_bgm_conditional_melody_generation.training.train [--steps N] [--out PATH]``

1. Builds the tune file from the music21 corpus when it is missing (:mod:`.corpus`).
2. Encodes every tune as a GETScore grid (:func:`..getscore.encode`).
3. Trains :class:`..model.GETDiffModel` with the GETDiff loss (:func:`..diffusion.loss`) on
   random windows of :data:`WINDOW` columns, each transposed by a random interval so the
   model sees every key, with a random task per window (lead from chords, infill a span,
   harmonise a lead: :func:`..diffusion.training_condition`).
4. Every :data:`EVAL_EVERY` steps measures the loss and accuracy on a fixed set of windows
   of the held-out tunes (fixed noise), and writes the curve to ``training_curve.csv``.
5. Writes the checkpoint (EMA weights, float16, with config, vocabulary and figures) and
   ``training_summary.json`` beside it.

Everything is seeded and runs in one process with a fixed thread count, so a rerun on the
same machine gives the same checkpoint. On 2 CPU cores the default run takes about an hour.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from .. import diffusion
from ..checkpoint import DEFAULT_CHECKPOINT, save_checkpoint
from ..getscore import CHORD_ROOT, KEY, LEAD_PITCH, METER, encode, meter_row, transpose
from ..model import GETDiffModel, ModelConfig
from . import corpus

log = logging.getLogger(__name__)

SEED = 20261127
WINDOW = 128
BATCH = 32
STEPS = 4000
LR = 1e-3
WARMUP = 150
EVAL_EVERY = 250
EVAL_WINDOWS = 256
EMA_DECAY = 0.998
THREADS = 2
DEFAULT_CONFIG = ModelConfig(token_dim=64, width=256, layers=4, heads=4, ffn=1024, dropout=0.1)


def _pad_grid(grid: np.ndarray, meter: str, first_downbeat: int, length: int) -> tuple[np.ndarray, int]:
    """``grid`` extended with empty columns (metre continued) to ``length``."""
    n = grid.shape[1]
    if n >= length:
        return grid, n
    out = np.zeros((grid.shape[0], length), dtype=np.int64)
    out[:, :n] = grid
    out[METER] = meter_row(meter, length, first_downbeat)
    out[KEY, n:] = grid[KEY, 0]  # the key row continues
    return out, n


class Windows:
    """Random training windows (crop, transposition, task) from encoded tunes."""

    def __init__(self, songs: list, rng: np.random.Generator) -> None:
        self.grids = []
        for s in songs:
            g, n = _pad_grid(encode(s), s.meter, s.first_downbeat, WINDOW)
            self.grids.append((g, n))
        lengths = np.array([n for _, n in self.grids], dtype=float)
        self.p = lengths / lengths.sum()
        self.rng = rng

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = self.rng
        while True:
            g, n = self.grids[rng.choice(len(self.grids), p=self.p)]
            start = int(rng.integers(0, g.shape[1] - WINDOW + 1))
            w = g[:, start:start + WINDOW]
            moved = transpose_window(w, int(rng.integers(-6, 6)))
            if moved is None or not (moved[LEAD_PITCH] > 0).any() or not (moved[CHORD_ROOT] > 0).any():
                continue
            valid = np.arange(start, start + WINDOW) < n
            return moved, diffusion.training_condition(WINDOW, rng), valid

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        items = [self.sample() for _ in range(size)]
        return (torch.from_numpy(np.stack([i[0] for i in items])),
                torch.from_numpy(np.stack([i[1] for i in items])),
                torch.from_numpy(np.stack([i[2] for i in items])))


def transpose_window(w: np.ndarray, semitones: int) -> np.ndarray | None:
    """``w`` moved by ``semitones``, or an octave nearer when that leaves the pitch range."""
    out = transpose(w, semitones)
    return out if out is not None else transpose(w, semitones - 12 if semitones > 0 else semitones + 12)


def lr_at(step: int, steps: int) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    p = (step - WARMUP) / max(1, steps - WARMUP)
    return LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


@torch.no_grad()
def evaluate(model: GETDiffModel, batches: list) -> dict:
    """Loss and accuracies on fixed validation batches with fixed noise."""
    model.eval()
    gen = torch.Generator().manual_seed(SEED + 1)
    losses, stats_sum, weights = [], {}, {}
    for grid, cond, valid in batches:
        loss, stats = diffusion.loss(model, grid, cond, gen, valid)
        losses.append(float(loss))
        for k, v in stats.items():
            if k.startswith("acc_"):
                row = k[4:]
                n = stats[f"n_{row}"]
                stats_sum[k] = stats_sum.get(k, 0.0) + v * n
                weights[k] = weights.get(k, 0.0) + n
    model.train()
    out = {"valid_loss": float(np.mean(losses))}
    out.update({k: stats_sum[k] / max(weights[k], 1.0) for k in stats_sum})
    return out


def train(steps: int = STEPS, out: Path = DEFAULT_CHECKPOINT, tunes: Path = corpus.DEFAULT_OUT,
          config: ModelConfig = DEFAULT_CONFIG) -> dict:
    """Run the whole training; returns the summary written beside the checkpoint."""
    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    t0 = time.time()
    if not tunes.exists():
        log.info("building the tune file %s", tunes)
        corpus.build(tunes)
    songs = corpus.load(tunes)
    train_songs = [s for s in songs if s.split == "train"]
    valid_songs = [s for s in songs if s.split == "valid"]
    log.info("%d training tunes, %d validation tunes", len(train_songs), len(valid_songs))
    data = Windows(train_songs, np.random.default_rng(SEED))
    vdata = Windows(valid_songs, np.random.default_rng(SEED + 2))
    valid_batches = [vdata.batch(BATCH) for _ in range(EVAL_WINDOWS // BATCH)]
    model = GETDiffModel(config)
    ema = GETDiffModel(config)
    ema.load_state_dict(model.state_dict())
    ema.eval()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(SEED + 3)
    out.parent.mkdir(parents=True, exist_ok=True)
    curve_path = out.parent / "training_curve.csv"
    curve = []
    running = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps)
        grid, cond, valid = data.batch(BATCH)
        loss, _ = diffusion.loss(model, grid, cond, gen, valid)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            d = min(EMA_DECAY, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.mul_(d).add_(pm.detach(), alpha=1 - d)
        running.append(loss.item())
        if (step + 1) % EVAL_EVERY == 0 or step + 1 == steps:
            figures = evaluate(ema, valid_batches)
            row = {"step": step + 1, "train_loss": float(np.mean(running)), **figures,
                   "minutes": round((time.time() - t0) / 60, 1)}
            running = []
            curve.append(row)
            log.info("step %d: %s", step + 1, {k: round(v, 4) for k, v in row.items()})
            with open(curve_path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(row))
                w.writeheader()
                w.writerows(curve)
    final = curve[-1]
    summary = {
        "steps": steps, "batch": BATCH, "window": WINDOW, "seed": SEED,
        "parameters": ema.parameter_count(), "config": config.to_dict(),
        "training_tunes": len(train_songs), "validation_tunes": len(valid_songs),
        "training_columns": int(sum(s.n_cols for s in train_songs)),
        "final": final, "minutes": round((time.time() - t0) / 60, 1), "threads": THREADS,
    }
    save_checkpoint(ema, out, training=summary)
    (out.parent / "training_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    log.info("wrote %s (%.1f MB) in %.1f min", out, out.stat().st_size / 1e6, summary["minutes"])
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--out", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--tunes", type=Path, default=corpus.DEFAULT_OUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    train(args.steps, args.out, args.tunes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
