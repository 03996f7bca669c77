"""The `tim` command: one entry point with subcommands (fuse, info, eval, train, ...).

Each subcommand lives in its own module under tim_core.commands; only the one that runs is imported, so
`tim --help` and `tim fuse` do not pay for the training code (or torch, for `tim --help`).
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys

from .commands.common import run_command

# name -> one-line help; the module is tim_core.commands.<name>
COMMANDS = {
    "fuse": "fuse image pairs (files or folders paired by stem)",
    "register": "estimate a camera rig's IR -> VIS homography from image pairs",
    "calibrate": "stereo-calibrate a camera rig from checkerboard pairs (K, R, t, IR -> VIS homography)",
    "info": "architecture summary of a genotype or bundle",
    "eval": "fusion metrics over IR/VIS/fused folders",
    "search": "implicit architecture search of a compact fusion network",
    "meta": "meta-learn a fusion initialization over several tasks (PMI)",
    "adapt": "adapt an initialization bundle to a new pair set",
    "guide": "task-guided fusion: train a task network with (or on) the fusion network",
    "bench": "model latency (median/p95 ms, frames/s), ratios to the first model",
    "export": "export a bundle to ONNX (dynamic H/W), verified against PyTorch",
    "train": "train a fusion network (unsupervised fusion loss)",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `tim` parser with every subcommand listed; only `command`'s module is imported, for its arguments."""
    parser = argparse.ArgumentParser(prog="tim", description="TIM infrared-visible image fusion")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"tim_core.commands.{name}") if name == command else None
        p = sub.add_parser(name, help=help_text, description=getattr(module, "DESCRIPTION", None))
        if module is not None:
            module.add_arguments(p)
            p.set_defaults(module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args, extra = parser.parse_known_args(argv)
    if getattr(args.module, "TAKES_OVERRIDES", False):
        args.overrides = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.command_line = shlex.join(["tim", *argv])
    return run_command(f"tim {args.command}", args.module.run, args, args.module.ERRORS)


if __name__ == "__main__":
    sys.exit(main())
