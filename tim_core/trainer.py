"""The skeleton every trainer runs in (train, guide, search, meta): threads, seed, run folder, checkpoint, steps.

`training_run(...)` sets torch's thread count for the run (restored after it), seeds torch, applies the run
folder rule (tim_core.checkpoint) and, under torchrun, joins the process group. The `TrainingRun` it yields
gives the trainer its device, its `Checkpoint`, the resume step, the step loop with its progress bar, the
per-step batch generator seeded by (seed, step, rank) (so a resumed run draws exactly the uninterrupted run's
batches) and the "every N steps" test. Each trainer keeps its own maths; this module holds none.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from .bundle import pick_device
from .checkpoint import OVERWRITE_HINT, Checkpoint, prepare_run_folder
from .threads import torch_threads


def lr_lambda(steps: int, warmup_steps: int):
    """Linear warm-up over `warmup_steps`, then cosine decay to zero at `steps`."""
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return f


def warmup_cosine(opt: torch.optim.Optimizer, steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The trainers' schedule: `lr_lambda` on every parameter group of `opt`."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps, warmup_steps))


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


def bundle_path(cfg: Any) -> Path:
    """Where a trainer exports its bundle: cfg.export, else OUT/bundle."""
    return Path(cfg.export) if cfg.export else Path(cfg.out) / "bundle"


def tensorboard_writer(out: Path, rank: int):
    """TensorBoard writer under OUT/tb on rank 0 (None on other ranks)."""
    if rank != 0:
        return None
    from torch.utils.tensorboard import SummaryWriter  # optional: only trainers log, and only on rank 0

    return SummaryWriter(str(out / "tb"))


@dataclass
class TrainingRun:
    """One run's shared scaffolding; made by `training_run`."""

    trainer: str  # the command's name: train, guide, search, meta
    out: Path
    steps: int
    seed: int
    resume: bool
    checkpoint_path: Path
    hint: str = OVERWRITE_HINT  # how to start over, for checkpoint errors
    rank: int = 0
    world: int = 1
    bar: Any = field(default=None, repr=False)  # the progress bar while `loop` runs

    def device(self, spec: str) -> torch.device:
        """pick_device(spec); under torchrun on CUDA, this rank's GPU."""
        device = pick_device(spec)
        if self.world > 1 and device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return device

    def checkpoint(self, **states: Any) -> Checkpoint:
        """The run's Checkpoint of these named states (None: a part this run does not have)."""
        return Checkpoint(self.checkpoint_path, self.trainer, states, self.hint)

    def restore(self, checkpoint: Checkpoint, device: torch.device, **options: Any) -> tuple[int, dict]:
        """(start step, extra): the checkpoint's with --resume, else (0, {})."""
        return checkpoint.restore(device, **options) if self.resume else (0, {})

    def loop(self, start: int, desc: str) -> Iterator[int]:
        """Steps start .. steps-1 with a progress bar (`self.bar`, rank 0 only)."""
        with tqdm(range(start, self.steps), initial=start, total=self.steps, desc=desc, disable=self.rank != 0,
                  dynamic_ncols=True) as self.bar:
            yield from self.bar

    def generator(self, step: int) -> torch.Generator:
        """The batch generator of `step` on this rank."""
        return torch.Generator().manual_seed(batch_seed(self.seed, step, self.rank))

    def due(self, done: int, every: int) -> bool:
        """True every `every` steps and at the last step (`done` steps finished)."""
        return done % every == 0 or done == self.steps

    def barrier(self) -> None:
        """Wait for every rank (a no-op outside torchrun)."""
        if self.world > 1:
            dist.barrier()


@contextmanager
def training_run(trainer: str, out: str | Path, steps: int, seed: int, threads: int = 0, *, resume: bool = False,
                 overwrite: bool = False, export: Path | None = None,
                 distributed: bool = False) -> Iterator[TrainingRun]:
    """Threads (restored afterwards), torch seed, run folder and, with `distributed`, the torchrun process group.

    The run folder rule (checkpoint.prepare_run_folder) covers `export` too: a folder holding a previous run needs
    `resume` or `overwrite`, for every trainer (train, guide, search, meta), so hours of training are never
    replaced by a forgotten flag.
    """
    rank, world = dist_info() if distributed else (0, 1)
    try:
        with torch_threads(threads):
            torch.manual_seed(seed)
            ckpt = prepare_run_folder(Path(out), resume, overwrite, export)
            yield TrainingRun(trainer, Path(out), steps, seed, resume, ckpt, OVERWRITE_HINT, rank, world)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
