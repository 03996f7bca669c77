"""Dataclass configs mirrored 1:1 by YAML files; unknown keys are rejected with their name."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit its dataclass; names the key and the file."""


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Convert a YAML/CLI value to the field's declared type (str from the command line is parsed as YAML)."""
    if isinstance(value, str) and hint is not str:
        try:
            value = float(value) if hint in (int, float) else yaml.safe_load(value)
        except ValueError:
            pass  # reported below with the field's name
    origin = typing.get_origin(hint)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{source}: {key} must be true/false, got {value!r}")
    if hint in (int, float) and not isinstance(value, bool) and isinstance(value, (int, float)):
        if hint is int and float(value) != int(value):
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        return hint(value)
    if hint in (int, float):
        raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
    if hint is str:
        return str(value)
    if (hint is dict or origin is dict) and not isinstance(value, dict):
        raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        return list(value) if origin is list else tuple(value)
    return value


INF = float("inf")
# Ranges by field name, shared by every config dataclass: (low, high, low_exclusive). A dataclass may narrow
# or widen them with a class attribute BOUNDS of the same form; a class attribute CHOICES {field: valid values}
# restricts string fields.
RANGES: dict[str, tuple[float, float, bool]] = {
    "steps": (1, 10_000_000, False), "batch": (1, 4096, False), "crop": (8, 8192, False),
    "ckpt_every": (1, INF, False), "log_every": (1, INF, False), "val_every": (0, INF, False),
    "warmup_steps": (0, INF, False), "threads": (0, 1024, False), "eval_limit": (0, INF, False),
    "val_images": (1, 10_000, False), "val_crop": (8, 8192, False), "meta_batch": (1, 1024, False),
    "inner_steps": (0, 1000, False), "bn_batches": (0, 10_000, False), "head_width": (1, 512, False),
    "lr": (0.0, 10.0, True), "outer_lr": (0.0, 10.0, True), "inner_lr": (0.0, 10.0, True),
    "alpha_lr": (0.0, 10.0, True), "neumann_lr": (0.0, 10.0, True), "fusion_lr": (0.0, 10.0, False),
    "weight_decay": (0.0, 10.0, False), "alpha_weight_decay": (0.0, 10.0, False),
    "w_intensity": (0.0, 1e6, False), "w_gradient": (0.0, 1e6, False), "w_ssim": (0.0, 1e6, False),
    "w_teacher": (0.0, 1e6, False), "w_mi": (0.0, 1e6, False), "w_scd": (0.0, 1e6, False),
    "grad_gain": (0.0, 10.0, True),
    "ema": (0.0, 0.999999, False),
    "val_fraction": (0.0, 0.95, True), "upper_fraction": (0.0, 0.95, True), "cost_weight": (0.0, 1e6, False),
    "lam": (0.0, 1e6, False), "dice": (0.0, 1e6, False), "seed": (0, 2**31 - 1, False),
}


def check_ranges(cfg: Any, source: str = "config") -> None:
    """Every out-of-range or non-finite field of a config, in one ConfigError (one line per problem)."""
    bounds = {**RANGES, **getattr(type(cfg), "BOUNDS", {})}
    problems = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if value != value or value in (INF, -INF):
            problems.append(f"{f.name}: {value!r} is not a finite number")
            continue
        if f.name in bounds:
            low, high, exclusive = bounds[f.name]
            if (value <= low if exclusive else value < low) or value > high:
                low_txt = f"({low}" if exclusive else f"[{low}"
                problems.append(f"{f.name}: {value!r} is outside {low_txt}, {high}]")
    for name, valid in getattr(type(cfg), "CHOICES", {}).items():
        if getattr(cfg, name) not in valid:
            problems.append(f"{name}: {getattr(cfg, name)!r} is not one of {', '.join(map(str, valid))}")
    device = getattr(cfg, "device", "auto")
    if isinstance(device, str) and device not in ("auto", "cpu", "cuda") and not (
            device.startswith("cuda:") and device[5:].isdigit()):
        problems.append(f"device: {device!r} is not one of auto, cpu, cuda, cuda:N")
    if problems:
        raise ConfigError(f"{source}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))


def load_config(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Build `cls` from a YAML file then `overrides` (field name -> value); unknown keys and out-of-range
    values are errors (all of them in one message)."""
    data: dict[str, Any] = {}
    source = str(path) if path else "config"
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except (IsADirectoryError, UnicodeDecodeError, PermissionError) as e:
            raise ConfigError(f"{path}: not a readable YAML text file ({type(e).__name__})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of field: value")
        data.update(loaded)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values, problems = {}, []
    for where, items in ((source, data), ("command line", overrides or {})):
        for key, value in items.items():
            key = str(key).replace("-", "_")
            if key not in names:
                problems.append(f"{where}: unknown key {key!r}; valid keys: {', '.join(names)}")
                continue
            try:
                values[key] = _coerce(value, hints[key], key, where)
            except ConfigError as e:
                problems.append(str(e))
    if problems:
        raise ConfigError("\n".join(problems) if len(problems) == 1 else
                          f"{len(problems)} problems:\n  " + "\n  ".join(problems))
    cfg = cls(**values)
    check_ranges(cfg, source if not overrides else f"{source} + command line")
    return cfg


def parse_overrides(tokens: list[str]) -> dict[str, str]:
    """['--steps', '10', '--lr=1e-3'] -> {'steps': '10', 'lr': '1e-3'}."""
    out: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--"):
            raise ConfigError(f"command line: expected --key value, got {tok!r}")
        if "=" in tok:
            key, value = tok[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(tokens):
                raise ConfigError(f"command line: {tok} needs a value")
            key, value = tok[2:], tokens[i + 1]
            i += 2
        out[key] = value
    return out


def dump_config(cfg: Any) -> str:
    """The config as YAML text (what a card or checkpoint records)."""
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)
