"""`tim info`: architecture summary of a genotype (name or JSON) or a bundle: parameters, MACs, cells, card."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..bundle import BundleError, load_bundle
from ..genotype import GENOTYPE_DIR, GenotypeError, load_genotype
from ..network import FusionNet, count_macs, count_parameters
from .common import parse_size

ERRORS = (GenotypeError, BundleError)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="built-in genotype name (tim_ivif, tim_light), genotype JSON, or bundle folder")
    p.add_argument("--size", type=parse_size, default=(480, 640), help="HxW for MACs (default 480x640)")
    p.add_argument("--json", action="store_true", help="print JSON (keys params, macs, genotype)")


def run(args: argparse.Namespace) -> int:
    card = None
    target = Path(args.target)
    if target.is_file() or (GENOTYPE_DIR / f"{args.target}.json").is_file():
        net = FusionNet(load_genotype(args.target))
    else:  # a bundle folder or a shipped bundle name
        try:
            net, card, _ = load_bundle(args.target)
        except BundleError as e:
            raise GenotypeError(f"{args.target}: neither a genotype nor a bundle ({e})") from None
    h, w = args.size
    name = card.get("name", net.genotype.name) if card else net.genotype.name
    info = {"name": name, "params": count_parameters(net), "macs": count_macs(net, h, w),
            "size": [h, w], "genotype": net.genotype.to_dict()}
    if card is not None:
        info["card"] = card
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['name']}: {info['params']:,} parameters, {info['macs'] / 1e9:.2f} GMACs at {h}x{w}, "
          f"genotype {net.genotype.name}, width {net.genotype.width}")
    for i, cell in enumerate(net.genotype.cells):
        print(f"  cell {i} ({cell.type}): {' -> '.join(cell.ops)}")
    if card is not None:
        print("card:")
        print(json.dumps(card, indent=2))
    return 0
