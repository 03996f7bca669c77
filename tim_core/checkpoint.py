"""Checkpoints of every trainer: one state layout, written atomically, read back strictly; the run folder rule.

Layout 2 (`LAYOUT`), the only one written:
    {"layout": 2, "trainer": "train" | "guide" | "search" | "meta", "step": int, "torch_rng": ByteTensor | None,
     "config": {field: value}, "states": {name: state_dict}, "extra": {name: plain data}}
Layout 1, the flat dict the trainers wrote before (state dicts, step, RNG state and extras side by side, no
"layout" key), is read by moving its state dicts under "states"; any other layout is an error that says so.
Checkpoints are written to a temporary file and renamed (a kill never leaves half a file) and read with
`weights_only=True` (tensors and plain data only, never arbitrary pickled objects). A run folder that already
holds a checkpoint is continued with `resume` or replaced with `overwrite`, never silently reused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError

CHECKPOINT = "checkpoint.pt"
LAYOUT = 2
OVERWRITE_HINT = "start over with --overwrite"


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


def _from_layout_1(state: dict) -> dict:
    """A flat checkpoint of the trainers before layout 2, in layout 2 (its trainer is unknown)."""
    plain = ("step", "torch_rng", "config")
    return {"layout": LAYOUT, "trainer": None, "step": state["step"], "torch_rng": state.get("torch_rng"),
            "config": state.get("config", {}),
            "states": {k: v for k, v in state.items() if isinstance(v, dict) and k not in plain},
            "extra": {k: v for k, v in state.items() if not isinstance(v, dict) and k not in plain}}


def read_checkpoint(path: Path, device: torch.device, hint: str = OVERWRITE_HINT) -> dict:
    """A checkpoint in layout 2 (layout 1 converted); CheckpointError for anything else, saying what it is."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint to resume; start without --resume")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated, corrupt or not a checkpoint: torch raises several types
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:120]});"
                              f" {hint}") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path}: not a checkpoint of this project (no step); {hint}")
    layout = state.get("layout", 1)
    if layout == 1:
        return _from_layout_1(state)
    if layout != LAYOUT or not isinstance(state.get("states"), dict):
        raise CheckpointError(f"{path}: checkpoint layout {layout!r}, which this version cannot read (it reads "
                              f"layouts 1 and {LAYOUT}); resume with the version that wrote it, or {hint}")
    return state


class Checkpoint:
    """One trainer's checkpoint: named states (networks, optimizers, schedulers, scaler, EMA), step, RNG, extras.

    `states` maps a name to an object with state_dict / load_state_dict; None entries (a part this run does not
    have, e.g. no EMA) are neither saved nor expected. `hint` is the way to start over, for error messages.
    """

    def __init__(self, path: Path, trainer: str, states: dict[str, Any], hint: str = OVERWRITE_HINT):
        self.path, self.trainer, self.hint = Path(path), trainer, hint
        self.states = {k: v for k, v in states.items() if v is not None}

    def save(self, step: int, config: dict, **extra: Any) -> None:
        """Write every state, the step, torch's RNG state, the config and `extra` (plain data), atomically."""
        save_atomic({"layout": LAYOUT, "trainer": self.trainer, "step": step, "torch_rng": torch.get_rng_state(),
                     "config": config, "states": {k: v.state_dict() for k, v in self.states.items()},
                     "extra": extra}, self.path)

    def restore(self, device: torch.device, fallbacks: dict[str, str] | None = None,
                rng: bool = True) -> tuple[int, dict]:
        """Load every state (a state missing from the file loads from `fallbacks[name]`, e.g. the EMA from the
        model) and, with `rng`, torch's RNG state; returns (step, extra)."""
        state = read_checkpoint(self.path, device, self.hint)
        if state["trainer"] not in (None, self.trainer):
            raise CheckpointError(f"{self.path}: written by `tim {state['trainer']}`, not `tim {self.trainer}`; "
                                  f"resume it with `tim {state['trainer']}`, or {self.hint}")
        saved, fallbacks = state["states"], fallbacks or {}
        sources = {k: k if k in saved else fallbacks.get(k, k) for k in self.states}
        missing = sorted({s for s in sources.values() if s not in saved} |
                         ({"torch_rng"} if rng and state["torch_rng"] is None else set()))
        if missing:
            raise CheckpointError(f"{self.path}: written by another trainer or configuration (missing "
                                  f"{', '.join(missing)}); resume with the command and config that wrote it, "
                                  f"or {self.hint}")
        for name, obj in self.states.items():
            try:
                obj.load_state_dict(saved[sources[name]])
            except (RuntimeError, KeyError, ValueError) as e:
                first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
                raise CheckpointError(f"{self.path}: its {name!r} state does not fit this run's configuration "
                                      f"(another genotype or optimizer?): {first}; resume with the config it was "
                                      f"written with, or {self.hint}") from None
        if rng:
            torch.set_rng_state(state["torch_rng"])
        return state["step"], state["extra"]
