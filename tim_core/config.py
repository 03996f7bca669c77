"""Dataclass configs mirrored 1:1 by YAML files; unknown keys are rejected with their name."""

from __future__ import annotations

import argparse
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
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        return list(value) if origin is list else tuple(value)
    return value


def load_config(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Build `cls` from a YAML file then `overrides` (field name -> value); unknown keys are errors."""
    data: dict[str, Any] = {}
    source = str(path) if path else "config"
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of field: value")
        data.update(loaded)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for where, items in ((source, data), ("command line", overrides or {})):
        for key, value in items.items():
            key = key.replace("-", "_")
            if key not in names:
                raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(names)}")
            values[key] = _coerce(value, hints[key], key, where)
    return cls(**values)


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


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' (e.g. 480x640) -> (H, W), as an argparse type."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} must be HxW, e.g. 480x640") from None
    return h, w
