"""`tim meta`: pretext meta-initialization (PMI) from a YAML config plus --field value overrides."""

from __future__ import annotations

import argparse

from ..config import ConfigError
from ..files import ImageFileError
from ..genotype import GenotypeError
from ..meta import MetaConfig, run_meta
from .common import config_from

DESCRIPTION = "Config fields can be overridden as --field value (e.g. --steps 100)."
TAKES_OVERRIDES = True
ERRORS = (ConfigError, ImageFileError, GenotypeError, FileNotFoundError, ValueError)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file mirroring MetaConfig (tim_core/configs/meta_*.yaml)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt at its step")
    p.add_argument("--overwrite", action="store_true", help="start over in a folder that holds a previous run")


def run(args: argparse.Namespace) -> int:
    bundle = run_meta(config_from(MetaConfig, args), resume=args.resume, command=args.command_line,
                      overwrite=args.overwrite)
    print(f"tim meta: initialization bundle written to {bundle}")
    return 0
