"""`tim fuse`: fuse single files or folders paired by stem; never skips silently, never replaces a file unasked."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from ..bundle import DEFAULT_MODEL, BundleError
from ..files import ImageFileError, check_output_folder, pair_paths, read_image, write_image, write_text_atomic
from ..registration import IrToVisWarp, load_registration
from ..runtime import Fuser
from ..tasks.boxes import coco_results

ERRORS = (ImageFileError, BundleError, ValueError)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ir", "--a", dest="ir", required=True, help="infrared image or folder (modality A)")
    p.add_argument("--vis", "--b", dest="vis", required=True, help="visible image or folder (modality B)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", default=DEFAULT_MODEL, help="bundle folder or shipped name (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--half", action="store_true", help="FP16 inference (CUDA only)")
    p.add_argument("--resize-ir", action="store_true", help="resize IR to the visible size when they differ")
    p.add_argument("--registration", help="YAML from `tim register`: warp IR onto the VIS grid before fusion")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace fused images already in --out")


def run(args: argparse.Namespace) -> int:
    """0: every pair fused; 1: some failed (each listed); 2 (ERRORS): nothing could start."""
    out = Path(args.out)
    pairs, unpaired = pair_paths(args.ir, args.vis)
    names = [f"{p.name}.png" for p in pairs] + ["detections.json"]
    check_output_folder(out, [Path(args.ir), Path(args.vis)], names, args.overwrite, "tim fuse")
    warp = IrToVisWarp.from_registration(load_registration(args.registration)) if args.registration else None
    fuser = Fuser(args.model, device=args.device, half=args.half,
                  size_mismatch="resize_ir" if args.resize_ir else "reject", registration=warp)
    failed = [(name, reason) for name, reason in unpaired]
    done, coco = 0, []  # detections in the COCO results format (image_id = file stem) when the bundle detects
    for pair in tqdm(pairs, desc="fusing", unit="pair", disable=args.quiet or len(pairs) < 2):
        try:
            result = fuser(read_image(pair.a), read_image(pair.b))
            write_image(out / f"{pair.name}.png", result.fused)
            if result.mask is not None:
                write_image(out / "masks" / f"{pair.name}.png", result.mask)
            dets = result.detections
            coco += coco_results(pair.name, [d.box for d in dets], [d.score for d in dets], [d.class_id for d in dets])
            done += 1
        except (ImageFileError, ValueError) as e:
            failed.append((pair.name, str(e)))
        except (RuntimeError, MemoryError) as e:  # one pair the model cannot run (e.g. out of memory): go on
            failed.append((pair.name, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
    if "detection" in fuser.card.get("heads", []):
        write_text_atomic(out / "detections.json", json.dumps(coco) + "\n")
    for name, reason in failed:
        print(f"  failed {name}: {reason}", file=sys.stderr)
    print(f"tim fuse: {done} fused, {len(failed)} failed -> {out}")
    return 0 if not failed else 1
