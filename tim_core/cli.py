"""The `tim` command: one entry point with subcommands (fuse, info, eval, train, ...)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

from .config import parse_size

# Subcommands that live beside their concept: each module defines add_cli(subparsers), whose parsers set
# `func` via set_defaults (and `takes_overrides=True` when they accept --field value config overrides).
PLUGIN_MODULES = ("tim_core.search", "tim_core.meta", "tim_core.guided", "tim_core.bench", "tim_core.export")



def cmd_fuse(args: argparse.Namespace) -> int:
    """Fuse single files or folders paired by stem; never skips silently, never replaces a file unasked."""
    from .files import ImageFileError, check_output_folder, pair_paths, read_image, write_image, write_text_atomic
    from .registration import IrToVisWarp, load_registration
    from .runtime import BundleError, Fuser
    from .tasks.boxes import coco_results

    out = Path(args.out)
    try:
        pairs, unpaired = pair_paths(args.ir, args.vis)
        names = [f"{p.name}.png" for p in pairs] + ["detections.json"]
        check_output_folder(out, [Path(args.ir), Path(args.vis)], names, args.overwrite, "tim fuse")
        warp = IrToVisWarp.from_registration(load_registration(args.registration)) if args.registration else None
        fuser = Fuser(args.model, device=args.device, half=args.half,
                      size_mismatch="resize_ir" if args.resize_ir else "reject", registration=warp)
    except (ImageFileError, BundleError, ValueError) as e:
        print(f"tim fuse: {e}", file=sys.stderr)
        return 2
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


def cmd_register(args: argparse.Namespace) -> int:
    """A rig's IR -> VIS homography from one pair or folders of pairs; written only when the estimate converged."""
    from .files import ImageFileError, pair_paths, read_image, write_text_atomic
    from .registration import coverage, registration_yaml
    from .rig_search import SearchConfig, register_pairs

    out = Path(args.out)
    try:
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
    except ImageFileError as e:
        print(f"tim register: {e}", file=sys.stderr)
        return 2
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


def cmd_info(args: argparse.Namespace) -> int:
    """Architecture summary of a genotype (name or JSON) or a bundle: parameters, MACs, cells, card."""
    from .genotype import GENOTYPE_DIR, GenotypeError, load_genotype
    from .network import FusionNet, count_macs, count_parameters
    from .runtime import BundleError, load_bundle

    card = None
    try:
        target = Path(args.target)
        is_genotype = target.is_file() or (GENOTYPE_DIR / f"{args.target}.json").is_file()
        if is_genotype:
            net = FusionNet(load_genotype(args.target))
        else:  # a bundle folder or a shipped bundle name
            try:
                net, card, _ = load_bundle(args.target)
            except BundleError as e:
                raise GenotypeError(f"{args.target}: neither a genotype nor a bundle ({e})") from None
    except (GenotypeError, BundleError) as e:
        print(f"tim info: {e}", file=sys.stderr)
        return 2
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


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import run_eval

    return run_eval(args)


def cmd_train(args: argparse.Namespace) -> int:
    """Fusion training from a YAML config plus --key value overrides."""
    import shlex

    from .bundle import BundleError
    from .checkpoint import CheckpointError
    from .config import ConfigError, load_config, parse_overrides
    from .files import ImageFileError
    from .genotype import GenotypeError
    from .train import TrainConfig, train

    try:
        cfg = load_config(TrainConfig, args.config, parse_overrides(args.overrides))
        flags = [f for f, on in (("--resume", args.resume), ("--overwrite", args.overwrite)) if on]
        command = shlex.join(["tim", "train", *(["--config", args.config] if args.config else []), *args.overrides,
                              *flags])
        bundle = train(cfg, resume=args.resume, command=command, overwrite=args.overwrite)
    except (ConfigError, ImageFileError, FileNotFoundError, CheckpointError, BundleError, GenotypeError) as e:
        print(f"tim train: {e}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(f"tim train: bundle written to {bundle}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tim", description="TIM infrared-visible image fusion")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fuse", help="fuse image pairs (files or folders paired by stem)")
    p.add_argument("--ir", "--a", dest="ir", required=True, help="infrared image or folder (modality A)")
    p.add_argument("--vis", "--b", dest="vis", required=True, help="visible image or folder (modality B)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", default="tim_ivif_base", help="bundle folder or shipped name (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--half", action="store_true", help="FP16 inference (CUDA only)")
    p.add_argument("--resize-ir", action="store_true", help="resize IR to the visible size when they differ")
    p.add_argument("--registration", help="YAML from `tim register`: warp IR onto the VIS grid before fusion")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace fused images already in --out")
    p.set_defaults(func=cmd_fuse)

    p = sub.add_parser("register", help="estimate a camera rig's IR -> VIS homography from image pairs",
                       description="Pairs of one rig (same two cameras, different scenes) are registered jointly.")
    p.add_argument("--ir", required=True, help="infrared image or folder")
    p.add_argument("--vis", required=True, help="visible image or folder (paired with --ir by file stem)")
    p.add_argument("--out", required=True, help="registration YAML to write")
    p.add_argument("--max-pairs", type=_positive_int, default=10,
                   help="pairs used, spread over the folder (default %(default)s)")
    p.add_argument("--scale-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="VIS px per IR px searched, relative to the image width ratio (default: SearchConfig's)")
    p.add_argument("--shift", type=float, help="largest centre offset searched, fraction of the VIS width")
    p.add_argument("--finest-width", type=int, help="VIS width of the last refinement level (0: full resolution)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("info", help="architecture summary of a genotype or bundle")
    p.add_argument("target", help="built-in genotype name (tim_ivif, tim_light), genotype JSON, or bundle folder")
    p.add_argument("--size", type=parse_size, default=(480, 640), help="HxW for MACs (default 480x640)")
    p.add_argument("--json", action="store_true", help="print JSON (keys params, macs, genotype)")
    p.set_defaults(func=cmd_info)

    from .evaluate import add_eval_arguments

    p = sub.add_parser("eval", help="fusion metrics over IR/VIS/fused folders")
    add_eval_arguments(p)
    p.set_defaults(func=cmd_eval)

    for module in PLUGIN_MODULES:
        importlib.import_module(module).add_cli(sub)

    p = sub.add_parser("train", help="train a fusion network (unsupervised fusion loss)",
                       description="Config fields can be overridden as --field value (e.g. --steps 100).")
    p.add_argument("--config", help="YAML file mirroring TrainConfig (tim_core/configs/*.yaml)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt at its step")
    p.add_argument("--overwrite", action="store_true", help="start over in a used run folder / replace the export")
    p.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "train" or getattr(args, "takes_overrides", False):
        args.overrides = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
