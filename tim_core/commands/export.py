"""`tim export`: write a bundle's ONNX file, then check it against PyTorch on real sample pairs."""

from __future__ import annotations

import argparse
import sys

from ..bundle import DEFAULT_MODEL, BundleError, load_bundle
from ..export import ONNX_FILE, OPSET, TOLERANCE, export_onnx, real_pairs, verify_onnx
from ..files import ImageFileError

ERRORS = (BundleError, ImageFileError, ImportError, RuntimeError)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help="bundle folder or shipped name (default: %(default)s)")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="export format (default: onnx)")
    p.add_argument("--out", help=f"output file (default: BUNDLE/{ONNX_FILE}, which Fuser(backend='onnxruntime') uses)")
    p.add_argument("--opset", type=int, default=OPSET, help="ONNX opset (default: %(default)s)")
    p.add_argument("--verify-pairs", type=int, default=3, help="sample pairs to verify on (default: %(default)s)")
    p.add_argument("--no-verify", action="store_true", help="skip the check against PyTorch")


def run(args: argparse.Namespace) -> int:
    """0: written (and verified); 1: verification failed."""
    path = export_onnx(args.model, args.out, args.opset)
    net, _, _ = load_bundle(args.model)
    print(f"tim export: wrote {path} ({path.stat().st_size / 1e6:.2f} MB, opset {args.opset}, dynamic N/H/W)")
    if args.no_verify:
        return 0
    pairs = real_pairs(args.verify_pairs)
    if not pairs:
        raise ImageFileError("no sample pairs in samples/ to verify against")
    diffs = verify_onnx(path, net, pairs)
    worst = max(diffs.values())
    for name, ir, _ in pairs:
        print(f"  {name} {ir.shape[1]}x{ir.shape[0]}: max |onnx - torch| = {diffs[name]:.2e}")
    if worst >= TOLERANCE:
        print(f"tim export: verification failed: max difference {worst:.2e} >= {TOLERANCE:g}", file=sys.stderr)
        return 1
    print(f"tim export: verified on {len(diffs)} real pair(s), max difference {worst:.2e} < {TOLERANCE:g}")
    return 0
