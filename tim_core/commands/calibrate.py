"""`tim calibrate`: stereo calibration of a rig from checkerboard pairs, written as a registration file."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..calibration import CalibrationError, calibrate_rig, calibration_yaml, find_corners
from ..files import ImageFileError, pair_paths, read_image, write_text_atomic

DESCRIPTION = ("A (heated) checkerboard seen by both cameras, 10-20 pairs with the board tilted and all over the "
               "image; IR is searched in both polarities. Writes K of both cameras, R, t (X_vis = R X_ir + t) and the "
               "IR -> VIS homography for --distance, the file `tim fuse --registration` and the node read.")
ERRORS = (ImageFileError, CalibrationError)


def parse_pattern(text: str) -> tuple[int, int]:
    """argparse type: 'COLSxROWS' inner corners (9x6 for a board of 10x7 squares), columns != rows."""
    try:
        cols, rows = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"pattern {text!r} must be COLSxROWS inner corners, e.g. 9x6") from None
    if min(cols, rows) < 2:
        raise argparse.ArgumentTypeError(f"pattern {text!r}: at least 2 inner corners per side")
    if cols == rows:
        raise argparse.ArgumentTypeError(f"pattern {text!r}: a square pattern has no defined orientation; use a "
                                         "board with different numbers of inner corners per side (e.g. 9x6)")
    return cols, rows


def positive_float(text: str) -> float:
    """argparse type: a number > 0 (inf allowed)."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ir", required=True, help="infrared board image or folder")
    p.add_argument("--vis", required=True, help="visible board image or folder (paired with --ir by file stem)")
    p.add_argument("--pattern", required=True, type=parse_pattern, help="inner corners COLSxROWS, e.g. 9x6")
    p.add_argument("--square", required=True, type=positive_float, help="side of one square, metres")
    p.add_argument("--out", required=True, help="registration YAML to write")
    p.add_argument("--distance", type=positive_float, default=math.inf,
                   help="metres from the IR camera to the scene plane the homography is exact for (default: inf)")
    p.add_argument("--no-distortion", action="store_true",
                   help="fit pinhole cameras without lens distortion (the homography ignores distortion)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    """0: written (exit 2 through ERRORS: unusable input, too few boards found, --out exists)."""
    out = Path(args.out)
    if out.is_dir():
        raise ImageFileError(f"{out} is a folder; --out names the YAML file to write")
    if out.exists() and not args.overwrite:
        raise ImageFileError(f"{out} exists; pass --overwrite to replace it")
    pairs, unpaired = pair_paths(args.ir, args.vis)
    if not pairs:
        raise ImageFileError(f"{args.ir} and {args.vis}: no IR/VIS pairs (folders pair files by stem)")
    for name, reason in unpaired:
        print(f"  skipped {name}: {reason}", file=sys.stderr)
    detections, sizes = [], {}
    for pair in pairs:
        found = []
        for role, path in (("IR", pair.a), ("VIS", pair.b)):
            img = read_image(path)
            size, first = (img.shape[1], img.shape[0]), sizes.setdefault(role, ((img.shape[1], img.shape[0]), path))
            if size != first[0]:
                raise ImageFileError(f"{path}: {role} size {size[0]}x{size[1]} differs from {first[1]} "
                                     f"({first[0][0]}x{first[0][1]}); one camera has one size: leave it out")
            found.append(find_corners(img, args.pattern))
        detections.append((pair.name, *found))
        if any(c is None for c in found):
            print(f"  board not found in {pair.name}: "
                  + " and ".join(r for r, c in zip(("IR", "VIS"), found) if c is None), file=sys.stderr)
    cal = calibrate_rig(detections, args.pattern, args.square, sizes["IR"][0], sizes["VIS"][0],
                        not args.no_distortion)
    print(f"{cal.pairs} of {len(pairs)} pairs with the board in both images; reprojection RMS: IR {cal.rms_ir:.3f} px, "
          f"VIS {cal.rms_vis:.3f} px, stereo {cal.rms_stereo:.3f} px")
    print("t (X_vis = R X_ir + t): " + ", ".join(f"{v:.4f}" for v in cal.translation) + " m; IR -> VIS homography at "
          f"{args.distance} m: " + ", ".join(f"{v:.6g}" for v in cal.homography(args.distance).ravel()))
    if max(cal.rms_ir, cal.rms_vis, cal.rms_stereo) > 1.0:
        print("tim calibrate: warning: reprojection RMS above 1 px; check --pattern and --square, leave out blurred "
              "pairs, or fit distortion (without --no-distortion)", file=sys.stderr)
    write_text_atomic(out, calibration_yaml(cal, args.distance, args.pattern, args.square))
    print(f"tim calibrate: -> {out}")
    return 0
