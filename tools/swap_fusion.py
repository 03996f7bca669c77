"""Put another fusion network's weights under a task bundle's heads (same genotype):

    python tools/swap_fusion.py models/tim_ivif_det models/tim_ivif_compact --out runs/det_swap/bundle

The result keeps TASK's heads and card (classes, head widths, input size) with FUSION's fusion weights, so a
detector trained on one compact can be continued (`tim guide --init OUT`) on a newer compact of the same network.
The card records both parents in `lineage`; TASK's measured scores (task_validation, detection_eval) are dropped,
since they were measured on the old fused images. Refuses genotypes that differ and an existing OUT.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tim_core.bundle import BundleError, load_bundle, save_bundle  # noqa: E402

STALE = ("name", "validation", "task_validation", "detection_eval", "note", "notes")


def swap(task: str, fusion: str, out: str) -> Path:
    task_net, task_card, heads = load_bundle(task)
    fusion_net, fusion_card, _ = load_bundle(fusion)
    if not task_card.get("heads"):
        raise BundleError(f"{task}: has no task heads (card 'heads'); nothing to keep")
    if task_net.genotype.fingerprint() != fusion_net.genotype.fingerprint():
        raise BundleError(f"{task} and {fusion} have different fusion genotypes; the heads were trained on "
                          f"{task_net.genotype.name}'s output size and range, so only its weights swap in")
    if Path(out).exists():
        raise BundleError(f"{out}: exists; choose a new --out (this tool replaces nothing)")
    command = f"python tools/swap_fusion.py {task} {fusion} --out {out}"
    lineage = [f"fusion = {fusion}: " + " ; ".join(fusion_card.get("lineage", [fusion_card.get("command", "?")])),
               f"heads = {task}: " + " ; ".join(task_card.get("lineage", [task_card.get("command", "?")])),
               command]
    card = {k: v for k, v in task_card.items() if k not in STALE}
    card.update(lineage=lineage, command=command, init=task, fusion_from=fusion)
    return save_bundle(out, fusion_net, card, heads)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("task", help="bundle with task heads (e.g. models/tim_ivif_det)")
    p.add_argument("fusion", help="fusion bundle of the same genotype (e.g. models/tim_ivif_compact)")
    p.add_argument("--out", required=True, help="new bundle folder")
    args = p.parse_args()
    try:
        print(swap(args.task, args.fusion, args.out))
    except BundleError as e:
        print(f"swap_fusion: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
