"""`tim adapt`: fine-tune an initialization bundle on a new pair set for K steps."""

from __future__ import annotations

import argparse

from ..adapt import AdaptConfig, run_adapt
from ..bundle import BundleError
from ..config import ConfigError
from ..files import ImageFileError
from .common import config_from

DESCRIPTION = ("Fine-tunes with the fusion loss on the pairs' training split; other AdaptConfig fields can be given "
               "as --field value (e.g. --lr 5e-4).")
TAKES_OVERRIDES = True
ERRORS = (ConfigError, ImageFileError, BundleError, FileNotFoundError, ValueError)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--init", required=True, help="initialization bundle (e.g. models/tim_meta_init)")
    p.add_argument("--a", required=True, help="folder of modality A (e.g. MRI)")
    p.add_argument("--b", required=True, help="folder of modality B (e.g. PET, SPECT, CT), paired by stem")
    p.add_argument("--steps", type=int, required=True, help="adaptation steps K")
    p.add_argument("--out", help="bundle to write (default runs/adapt/<data set>/bundle)")
    p.add_argument("--config", help="YAML file mirroring AdaptConfig")


def run(args: argparse.Namespace) -> int:
    given = {"init": args.init, "a": args.a, "b": args.b, "steps": args.steps}
    if args.out:
        given["out"] = args.out
    bundle = run_adapt(config_from(AdaptConfig, args, **given), command=args.command_line)
    print(f"tim adapt: bundle written to {bundle}")
    return 0
