"""Alpha curves of the compact search sweep (issue 19, docs/quality_report.md): for every width's search run, the
probability of the leading candidate at each cell position over the steps (uniform is 1/candidates), as a PNG, and
the derived operations with their final probabilities as a Markdown table on stdout.

    python bench/search_alpha_plot.py runs/search_compact/w8 runs/search_compact/w16 runs/search_compact/w24 \
        --png docs/search_compact_alpha.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tim_core.plots import line_plot  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="search run folders (each with log.jsonl and genotype.json)")
    p.add_argument("--png", type=Path, default=ROOT / "docs" / "search_compact_alpha.png")
    args = p.parse_args()
    series: dict[str, tuple[list[float], list[float]]] = {}
    print("| run | width | position | derived op | final p | uniform |")
    print("|---|---:|---|---|---:|---:|")
    for run in args.runs:
        log = run / "log.jsonl"
        if not log.is_file():
            sys.exit(f"search_alpha_plot: {log} is missing; run `tim search` into {run} first")
        history = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        genotype = json.loads((run / "genotype.json").read_text())
        steps = [h["step"] for h in history]
        for c, cell in enumerate(history[-1]["p_ops"]):
            for q, probs in enumerate(cell):
                top = max(range(len(probs)), key=probs.__getitem__)
                series[f"w{genotype['width']} cell{c}.op{q}"] = (steps, [h["p_ops"][c][q][top] for h in history])
                print(f"| {run.name} | {genotype['width']} | cell{c}.op{q} | {genotype['cells'][c]['ops'][q]} | "
                      f"{probs[top]:.3f} | {1 / len(probs):.3f} |")
    line_plot(series, args.png, "compact search: probability of the leading op per position",
              ylabel="softmax(alpha) of the final argmax")
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
