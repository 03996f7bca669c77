"""Weight-space interpolation of two fusion bundles of one genotype (WiSE-FT, Wortsman et al., CVPR 2022):
    weights = (1 - alpha) * A + alpha * B

    python tools/interpolate_bundles.py models/tim_ivif_base runs/base_v2/bundle --alpha 0.5 --out runs/soup_050

Both bundles must share the genotype (a fine-tune and its start do). The card records both parents and alpha in
`lineage`, so the result is reproducible from the two bundles. --screen N scores alphas on N validation pairs
(matlab convention) without writing a bundle, to pick alpha; the validation pairs only score.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tim_core.bundle import BundleError, load_bundle, save_bundle  # noqa: E402


def interpolate(a: str, b: str, alpha: float):
    net_a, card_a, extra_a = load_bundle(a)
    net_b, card_b, _ = load_bundle(b)
    if net_a.genotype.fingerprint() != net_b.genotype.fingerprint():
        raise BundleError(f"{a} and {b} have different genotypes; only one genotype's weights interpolate")
    sa, sb = net_a.state_dict(), net_b.state_dict()
    mixed = {k: (1 - alpha) * v + alpha * sb[k] if v.is_floating_point() else sb[k] for k, v in sa.items()}
    net_b.load_state_dict(mixed)
    lineage = [f"A = {a}: " + " ; ".join(card_a.get("lineage", [card_a.get("command", "?")])),
               f"B = {b}: " + " ; ".join(card_b.get("lineage", [card_b.get("command", "?")])),
               f"python tools/interpolate_bundles.py {a} {b} --alpha {alpha}"]
    card = {k: v for k, v in card_b.items() if k not in ("name", "validation")}
    card.update(lineage=lineage, command=lineage[-1], interpolation={"a": a, "b": b, "alpha": alpha})
    return net_b, card


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--alpha", type=float, nargs="+", default=[0.5])
    p.add_argument("--out", help="bundle folder to write (one alpha)")
    p.add_argument("--screen", type=int, default=0, help="score each alpha on this many validation pairs")
    args = p.parse_args()
    if args.screen:
        sys.path.insert(0, str(ROOT / "bench"))
        import numpy as np
        from quality_eval import MATLAB, sources

        from tim_core.evaluate import _read_8bit
        from tim_core.files import read_image, write_image
        from tim_core.metrics import compute_metrics
        from tim_core.runtime import Fuser

        cache = ROOT / "out" / "quality_sources"
        sets = sources(cache)
        names = {s: sets[s][: args.screen // 2] for s in ("msrs", "roadscene")}
        for alpha in args.alpha:
            net, card = interpolate(args.a, args.b, alpha)
            tmp = ROOT / "out" / "soup_screen" / f"a{alpha:.2f}"
            save_bundle(tmp / "bundle", net, card)
            fuser = Fuser(tmp / "bundle", device="cpu")
            rows = []
            for s, ns in names.items():
                for n in ns:
                    ir, vis = cache / s / "ir" / f"{n}.png", cache / s / "vis" / f"{n}.png"
                    write_image(tmp / s / f"{n}.png", fuser(read_image(ir), read_image(vis)).fused)
                    a, b, f = (_read_8bit(x) for x in (ir, vis, tmp / s / f"{n}.png"))
                    rows.append(compute_metrics(a, b, f, "matlab", MATLAB))
            print(f"alpha={alpha:.2f} " + " ".join(f"{m}={np.mean([r[m] for r in rows]):.3f}" for m in MATLAB),
                  flush=True)
        return 0
    if not args.out or len(args.alpha) != 1:
        p.error("--out needs exactly one --alpha")
    net, card = interpolate(args.a, args.b, args.alpha[0])
    print(save_bundle(args.out, net, card))
    return 0


if __name__ == "__main__":
    sys.exit(main())
