"""`tim search`: profile the latency table, or search (resumable) and write the genotype JSON."""

from __future__ import annotations

import argparse

from tqdm import tqdm

from ..config import ConfigError
from ..cost import profile
from ..files import ImageFileError
from ..hypergrad import METHODS
from ..search import SearchConfig, search, space_of
from .common import config_from

DESCRIPTION = "Config fields can be overridden as --field value (e.g. --steps 20)."
TAKES_OVERRIDES = True
ERRORS = (ConfigError, ImageFileError, FileNotFoundError, ValueError)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file mirroring SearchConfig (tim_core/configs/search_*.yaml)")
    p.add_argument("--hypergrad", choices=METHODS, help="hypergradient: ias (default), neumann, darts1")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt at its step")
    p.add_argument("--overwrite", action="store_true", help="start over in a folder that holds a previous run")
    p.add_argument("--profile", action="store_true",
                   help="measure the latency lookup table (profile_widths at cost_size) into latency_table and exit")


def run(args: argparse.Namespace) -> int:
    cfg = config_from(SearchConfig, args, **({"hypergrad": args.hypergrad} if args.hypergrad else {}))
    if args.profile:
        space = space_of(cfg)
        with tqdm(desc="profiling parts", unit="part") as bar:
            table = profile(list(cfg.profile_widths), space.candidates, space.cell_types, tuple(cfg.cost_size),
                            cfg.profile_threads, cfg.profile_repeats, lambda key: bar.update(), space.scale,
                            space.output == "blend")
        print(f"tim search: latency table ({len(table.entries)} parts) written to {table.save(cfg.latency_table)}")
        return 0
    summary = search(cfg, resume=args.resume, command=args.command_line, overwrite=args.overwrite)
    cells = "; ".join(f"{c['type']}: {' -> '.join(c['ops'])}" for c in summary["genotype"]["cells"])
    print(f"tim search: {cells} (predicted {summary['predicted_cost']} {summary['cost_unit']}) -> {summary['path']}")
    return 0
