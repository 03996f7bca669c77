"""What every trainer shares: the run folder rule, atomic checkpoints, the LR schedule, distributed info.

Checkpoints are written to a temporary file and renamed (a kill never leaves half a file) and read with
`weights_only=True` (tensors and plain data only, never arbitrary pickled objects). A run folder that already
holds a checkpoint is continued with `resume` or replaced with `overwrite`, never silently reused.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.distributed as dist

from .config import ConfigError

CHECKPOINT = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed; the message names the file and the fix."""


def prepare_run_folder(out: Path, resume: bool, overwrite: bool, export: Path | None = None) -> Path:
    """Create OUT; refuse to start over a previous run unless told. Returns OUT/checkpoint.pt."""
    out = Path(out)
    ckpt = out / CHECKPOINT
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other: continue the run or replace it")
    if resume and not ckpt.is_file():
        raise CheckpointError(f"{ckpt}: no checkpoint to resume; start without --resume")
    if not resume and not overwrite:
        if ckpt.exists():
            raise ConfigError(f"{out}: holds a previous run ({CHECKPOINT}); pass --resume to continue it or "
                              "--overwrite to start over (or choose another --out)")
        if export is not None and Path(export).exists():
            raise ConfigError(f"{export}: the export path exists already; pass --overwrite to replace it or "
                              "choose another --export")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{out}: cannot create the run folder ({e.strerror}); choose a writable --out") from None
    return ckpt


def save_atomic(obj: dict, path: Path) -> None:
    """torch.save to a temporary file, then rename: a kill never leaves a half-written checkpoint."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, device: torch.device, required: tuple[str, ...] = ("step",)) -> dict:
    """A checkpoint written by save_atomic (tensors and plain data only: weights_only loading)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint to resume; start without --resume")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated, corrupt or not a checkpoint: torch raises several types
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:120]});"
                              " start over with --overwrite") from None
    if not isinstance(state, dict) or any(k not in state for k in required):
        missing = [k for k in required if not isinstance(state, dict) or k not in state]
        raise CheckpointError(f"{path}: written by another trainer or an older layout (missing {', '.join(missing)}); "
                              "start over with --overwrite")
    return state


def restore(module, state: dict, key: str, path: Path) -> None:
    """module.load_state_dict(state[key]) with a message naming the checkpoint when it does not fit."""
    try:
        module.load_state_dict(state[key])
    except (RuntimeError, KeyError, ValueError) as e:
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: its {key!r} state does not fit this run's configuration (another genotype "
                              f"or optimizer?): {first}; resume with the config it was written with, "
                              "or --overwrite") from None


def lr_lambda(steps: int, warmup_steps: int):
    """Linear warm-up over `warmup_steps`, then cosine decay to zero at `steps`."""
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return f


def batch_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed of the batch generator at `step`: a resumed run draws exactly the uninterrupted run's batches."""
    return seed * 1_000_003 + step * 131 + rank


def dist_info() -> tuple[int, int]:
    """(rank, world size), initialising the process group under torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
