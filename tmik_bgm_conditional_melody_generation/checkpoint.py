"""Finding, loading and saving GETDiff checkpoints.

Two kinds load:

* **ours** (``format: "tmik-getdiff"``): the default checkpoint this repository trains
  (``make train-melody``) and ships in ``checkpoints/getdiff_default.pt``, or any other
  trained the same way;
* **official GETMusic** checkpoints (the original 86 M model, with its ``dict.txt``),
  through :mod:`.official`.

Which one: the ``--checkpoint`` option or ``MELODY_CHECKPOINT`` names a file; otherwise an
official checkpoint placed in ``checkpoints/`` (with its dictionary beside it) wins over
the default, because a user who put it there wants it. A missing, unreadable or
mismatched checkpoint raises :class:`CheckpointError` naming what is wrong; there is no
silent fallback to another model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .getscore import METER_TOKENS, ROW_SIZES, ROWS
from .model import GETDiffModel, ModelConfig

log = logging.getLogger(__name__)

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
DEFAULT_CHECKPOINT = CHECKPOINT_DIR / "getdiff_default.pt"
FORMAT = "tmik-getdiff"
FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable, or not one this service can use.

    Not a ValueError: it is the operator's to fix, not the musician's; its message is
    still shown as is (``public``), because it says exactly what to do.
    """

    code = "model_unavailable"
    public = True

    @property
    def message(self) -> str:
        return str(self)


@dataclass
class LoadedModel:
    """A denoiser ready to sample, and where it came from."""

    denoiser: object  # implements diffusion.Denoiser
    name: str
    path: Path
    kind: str  # "default" | "official"
    max_window: int  # longest window (columns) the model is used with
    info: dict


def vocabulary() -> dict:
    """The GETScore vocabulary a checkpoint of ours was trained with (checked on load)."""
    return {"rows": list(ROWS), "row_sizes": list(ROW_SIZES), "meter_tokens": [list(t) for t in METER_TOKENS]}


def save_checkpoint(model: GETDiffModel, path: Path, training: dict | None = None) -> None:
    """Save weights (float16) with config and vocabulary, atomically."""
    state = {k: v.detach().to(torch.float16) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "version": FORMAT_VERSION, "config": model.cfg.to_dict(),
               "vocabulary": vocabulary(), "model": state, "training": training or {}}
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_default_format(path: Path) -> LoadedModel:
    """Load one of our checkpoints; raises CheckpointError when it does not fit."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); "
                              "re-download or retrain it (make train-melody)") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a GETDiff checkpoint of this project (no format {FORMAT!r}); "
                              "official GETMusic checkpoints need their dict.txt beside them")
    if payload.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {payload.get('version')}, "
                              f"this service reads version {FORMAT_VERSION}")
    if payload.get("vocabulary") != vocabulary():
        raise CheckpointError(f"{path} was trained with a different GETScore vocabulary; retrain it "
                              "(make train-melody)")
    cfg = ModelConfig.from_dict(payload["config"])
    model = GETDiffModel(cfg)
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["model"].items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.eval()
    info = payload.get("training", {})
    return LoadedModel(model, f"getdiff-{path.stem}", Path(path), "default", int(info.get("window", 128)) * 2,
                       info)


def resolve_checkpoint(explicit: str | Path | None = None, folder: Path = CHECKPOINT_DIR) -> LoadedModel:
    """Load the checkpoint to use: explicit path, else official in ``folder``, else the default."""
    from . import official

    if explicit:
        path = Path(explicit)
        if not path.exists():
            raise CheckpointError(f"checkpoint {path} does not exist (set by --checkpoint or MELODY_CHECKPOINT)")
        if official.detect_official(path):
            dictionary = path.parent / "dict.txt"
            if not dictionary.exists():
                raise CheckpointError(f"{path} is an official GETMusic checkpoint but {dictionary} is missing; "
                                      "place the original getmusic/utils/dict.txt beside it")
            return _official(path, dictionary)
        return load_default_format(path)
    found = official.find_official_checkpoint(folder)
    if found is not None:
        return _official(*found)
    if not DEFAULT_CHECKPOINT.exists():
        raise CheckpointError(f"the default checkpoint {DEFAULT_CHECKPOINT} is missing; run make train-melody")
    return load_default_format(DEFAULT_CHECKPOINT)


def _official(path: Path, dictionary: Path) -> LoadedModel:
    from . import official

    denoiser = official.load_official(path, dictionary)
    return LoadedModel(denoiser, f"getmusic-official-{path.stem}", path, "official", 512, {})
