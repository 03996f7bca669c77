"""What the commands share: the error and exit-status wrapper, config files with overrides, argparse types."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from ..config import load_config, parse_overrides

T = TypeVar("T")


def run_command(prog: str, run: Callable[[argparse.Namespace], int], args: argparse.Namespace,
                errors: tuple[type[BaseException], ...]) -> int:
    """run(args); an exception of `errors` is one line on stderr and exit status 2, Ctrl-C is status 130."""
    try:
        return run(args)
    except errors as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def config_from(cls: type[T], args: argparse.Namespace, **given: Any) -> T:
    """`cls` from the --config file, then the command's own flags (`given`), then --field value overrides."""
    return load_config(cls, args.config, {**given, **parse_overrides(args.overrides)})


def parse_size(text: str) -> tuple[int, int]:
    """argparse type: 'HxW' (e.g. 480x640) -> (H, W)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} must be HxW, e.g. 480x640") from None
    return h, w


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
