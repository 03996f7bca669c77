"""`tim train`: fusion training from a YAML config plus --field value overrides (also under torchrun)."""

from __future__ import annotations

import argparse
import os

from ..bundle import BundleError
from ..checkpoint import CheckpointError
from ..config import ConfigError
from ..files import ImageFileError
from ..genotype import GenotypeError
from ..train import TrainConfig, train
from .common import config_from

DESCRIPTION = "Config fields can be overridden as --field value (e.g. --steps 100)."
TAKES_OVERRIDES = True
ERRORS = (ConfigError, ImageFileError, FileNotFoundError, CheckpointError, BundleError, GenotypeError)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file mirroring TrainConfig (tim_core/configs/*.yaml)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt at its step")
    p.add_argument("--overwrite", action="store_true", help="start over in a used run folder / replace the export")


def run(args: argparse.Namespace) -> int:
    cfg = config_from(TrainConfig, args)
    bundle = train(cfg, resume=args.resume, command=args.command_line, overwrite=args.overwrite)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(f"tim train: bundle written to {bundle}")
    return 0
