"""`tim guide`: task-guided fusion from a YAML config, --task and --field value overrides."""

from __future__ import annotations

import argparse
import json

from ..config import ConfigError
from ..files import ImageFileError
from ..guide_config import GuideConfig
from ..guided import guide
from ..tasks import TASKS
from .common import config_from

DESCRIPTION = "Config fields can be overridden as --field value (e.g. --steps 100)."
TAKES_OVERRIDES = True
ERRORS = (ConfigError, ImageFileError, FileNotFoundError, ValueError)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file mirroring GuideConfig (tim_core/configs/guide_*.yaml)")
    p.add_argument("--task", choices=TASKS, help="overrides the config's task")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt at its step")
    p.add_argument("--overwrite", action="store_true", help="start over in a folder that holds a previous run")


def run(args: argparse.Namespace) -> int:
    cfg = config_from(GuideConfig, args, **({"task": args.task} if args.task else {}))
    result = guide(cfg, resume=args.resume, command=args.command_line, overwrite=args.overwrite)
    print(f"tim guide: {json.dumps(result['task'])}" + (f" -> {result['bundle']}" if result["bundle"] else ""))
    return 0
