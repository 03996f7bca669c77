"""`tim register`: a rig's IR -> VIS homography from one pair or folders of pairs, written only when it converged."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..files import ImageFileError, pair_paths, read_image, write_text_atomic
from ..registration import coverage, registration_yaml
from ..rig_search import SearchConfig, register_pairs
from .common import positive_int

DESCRIPTION = "Pairs of one rig (same two cameras, different scenes) are registered jointly."
ERRORS = (ImageFileError,)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ir", required=True, help="infrared image or folder")
    p.add_argument("--vis", required=True, help="visible image or folder (paired with --ir by file stem)")
    p.add_argument("--out", required=True, help="registration YAML to write")
    p.add_argument("--max-pairs", type=positive_int, default=10,
                   help="pairs used, spread over the folder (default %(default)s)")
    p.add_argument("--scale-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="VIS px per IR px searched, relative to the image width ratio (default: SearchConfig's)")
    p.add_argument("--shift", type=float, help="largest centre offset searched, fraction of the VIS width")
    p.add_argument("--finest-width", type=int, help="VIS width of the last refinement level (0: full resolution)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    """0: written; 1: the estimate did not converge (nothing written)."""
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ImageFileError(f"{out} exists; pass --overwrite to replace it")
    pairs, unpaired = pair_paths(args.ir, args.vis)
    if not pairs:
        raise ImageFileError(f"{args.ir} and {args.vis}: no IR/VIS pairs (folders pair files by stem)")
    if len(pairs) > args.max_pairs:  # evenly spread over the folder: scenes differ more than neighbours do
        pairs = [pairs[round(i * (len(pairs) - 1) / max(args.max_pairs - 1, 1))] for i in range(args.max_pairs)]
    images = [(read_image(p.a), read_image(p.b)) for p in pairs]
    for role, k in (("IR", 0), ("VIS", 1)):
        for pair, imgs in zip(pairs, images):
            if imgs[k].shape[:2] != images[0][k].shape[:2]:
                raise ImageFileError(f"{pair.b if k else pair.a}: {role} size {imgs[k].shape[1]}x{imgs[k].shape[0]}"
                                     f" differs from {pairs[0].b if k else pairs[0].a}; one rig has one size")
    for name, reason in unpaired:
        print(f"  skipped {name}: {reason}", file=sys.stderr)
    given = {"scale_range": args.scale_range and tuple(args.scale_range), "shift_fraction": args.shift,
             "finest_width": args.finest_width}
    cfg = SearchConfig(**{k: v for k, v in given.items() if v is not None})
    reg = register_pairs(images, cfg)
    print("IR -> VIS homography (row-major): " + ", ".join(f"{v:.6g}" for v in reg.homography.ravel()))
    print(f"residual {reg.residual:.3f} (1 - NGF similarity), IR covers "
          f"{coverage(reg.homography, reg.ir_size, reg.vis_size):.0%} of the VIS image, {len(images)} pair(s)")
    if not reg.converged:
        print(f"tim register: did not converge: {reg.message}. Nothing written. Use more pairs (daylight scenes "
              "with edges over the whole image), or set --scale-range / --shift to the rig's geometry",
              file=sys.stderr)
        return 1
    write_text_atomic(out, registration_yaml(reg))
    print(f"tim register: -> {out}")
    return 0
