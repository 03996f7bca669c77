"""IAS vs Neumann vs DARTS-1st vs random genotypes: search, retrain, score, time (docs/search_report.md).

    nice -n 10 python bench/search_experiment.py [--stages fidelity,profile,search,random,retrain,sweep,latency,report]

Every finished unit (one search, one retraining) is stored in OUT/results.json at once, so a killed run resumes
where it stopped. Work runs on one torch thread (on a shared 2-core machine two threads mostly wait on each
other); latency is measured with two threads at 640x480, every network in the same interleaved rounds.
Writes bench/results/search_experiment.json and docs/search_quality_latency.png.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tim_core import train as train_module
from tim_core.config import load_config
from tim_core.cost import CostModel, LatencyTable, profile
from tim_core.data import is_validation, load_pairs, resolve_layout
from tim_core.files import pair_paths, read_image
from tim_core.genotype import Genotype, load_genotype
from tim_core.metrics import compute_metrics
from tim_core.network import FusionNet
from tim_core.plots import scatter_plot
from tim_core.runtime import Fuser
from tim_core.search import SearchConfig, search, space_of, split_for_search
from tim_core.supernet import SearchSpace
from tim_core.train import TrainConfig

SEARCH_CONFIG = ROOT / "tim_core/configs/search_experiment.yaml"
RETRAIN_CONFIG = ROOT / "tim_core/configs/search_retrain.yaml"
METHODS = ("ias", "neumann", "darts1")
SEEDS = (0, 1, 2)
SWEEP = ("ias_s0", (6, 8))  # the pre-registered genotype (IAS, seed 0) re-trained at other widths
VAL_SUBSET = 16  # validation pairs scored per model (every k-th of the split, both data sets)
METRICS = ("MI", "VIF", "Qabf", "SSIM")
REFERENCES = ("tim_ivif_base", "tim_ivif_compact")  # shipped bundles scored on the same subset
STAGES = ("fidelity", "profile", "search", "random", "retrain", "sweep", "latency", "report")


class Results:
    """A JSON file of finished units, rewritten after each one."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}

    def section(self, name: str) -> dict:
        return self.data.setdefault(name, {})

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=1) + "\n")


def _hyper(method: str, upper, lower, theta: torch.Tensor, alpha: torch.Tensor, **kw) -> torch.Tensor:
    from tim_core.hypergrad import hypergradient

    t, a = theta.detach().clone().requires_grad_(), alpha.detach().clone().requires_grad_()
    return hypergradient(method, lambda: upper(t, a), lambda: lower(t, a), [t], [a], **kw)[0]


def stage_fidelity(res: Results) -> None:
    """Cosine with the exact hypergradient on two families of ridge bilevel problems (float64). The upper loss has
    no direct alpha term, so only the implicit part is compared ('darts1' is zero here)."""

    def problem(seed: int, family: str):
        g = torch.Generator().manual_seed(seed)
        r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
        x, xv, b, y, yv = r(40, 5), r(40, 5), r(40, 4), r(40), r(40)
        if family == "alpha shifts the targets":
            alpha = r(4)
            lower = lambda t, a: 0.5 * ((x @ t - y - b @ a) ** 2).mean() + 0.025 * (t**2).sum()
        else:  # alpha = log ridge penalty per coordinate
            alpha = r(5) + 1.5
            lower = lambda t, a: 0.5 * ((x @ t - y) ** 2).mean() + 0.5 * (a.exp() * t**2).sum() / 40
        upper = lambda t, a: 0.5 * ((xv @ t - yv) ** 2).mean()
        return alpha, lower, upper

    out = {}
    for family in ("alpha shifts the targets", "alpha is a log ridge penalty"):
        cos = {k: [] for k in ("ias", "ias with the released (+) sign", "neumann (100 terms, at theta*)")}
        for seed in range(20):
            alpha0, lower, upper = problem(seed, family)
            alpha = alpha0.clone().requires_grad_()
            zero = torch.zeros(5, dtype=torch.float64, requires_grad=True)
            (g0,) = torch.autograd.grad(lower(zero, alpha), zero, create_graph=True)
            hess = torch.stack(
                [torch.autograd.grad(g0[i], zero, retain_graph=True, create_graph=True)[0] for i in range(5)]
            )
            theta_star = -torch.linalg.solve(hess, g0)  # quadratic in theta: one Newton step from 0 is exact
            (exact,) = torch.autograd.grad(upper(theta_star, alpha), alpha)
            theta_k = torch.zeros(5, dtype=torch.float64)
            eta = 1.0 / float(torch.linalg.eigvalsh(hess.detach()).max())
            for _ in range(3):  # where a search evaluates it: a few descent steps short of theta*
                t = theta_k.clone().requires_grad_()
                theta_k = theta_k - eta * torch.autograd.grad(lower(t, alpha0), t)[0]

            d_ias = _hyper("ias", upper, lower, theta_k, alpha0)
            pairs = {
                "ias": d_ias,
                "ias with the released (+) sign": -d_ias,
                "neumann (100 terms, at theta*)": _hyper(
                    "neumann", upper, lower, theta_star, alpha0, neumann_terms=100, neumann_lr=eta
                ),
            }
            for k, d in pairs.items():
                cos[k].append(float(d @ exact / (d.norm() * exact.norm())))
        out[family] = {
            k: {"mean": round(statistics.mean(v), 3), "positive": sum(c > 0 for c in v), "of": len(v)}
            for k, v in cos.items()
        }
    res.data["fidelity"] = out


def stage_profile(res: Results, scfg: SearchConfig) -> None:
    space = space_of(scfg)
    t = time.perf_counter()
    table = profile(
        list(scfg.profile_widths),
        space.candidates,
        ("chain", "multiscale"),
        tuple(scfg.cost_size),
        scfg.profile_threads,
        scfg.profile_repeats,
    )
    table.save(scfg.latency_table)
    res.data["profile"] = {"path": scfg.latency_table, "parts": len(table.entries), "seconds": time.perf_counter() - t}


def stage_search(res: Results, scfg: SearchConfig, out: Path) -> None:
    done = res.section("search")
    data = None
    for seed in SEEDS:
        for method in METHODS:
            run = f"{method}_s{seed}"
            if run in done:
                continue
            if data is None:
                data = split_for_search(load_pairs(scfg.data, "train", scfg.val_fraction), scfg.upper_fraction)
            cfg = load_config(
                SearchConfig,
                SEARCH_CONFIG,
                {"hypergrad": method, "seed": seed, "name": run, "out": str(out / "search" / run)},
            )
            cpu = time.process_time()
            summary = search(cfg, command=f"bench/search_experiment.py ({run})", data=data, overwrite=True)
            done[run] = {
                "genotype": summary["genotype"],
                "seconds": summary["seconds"],
                "cpu_seconds": round(time.process_time() - cpu, 1),
                "predicted_ms": summary["predicted_cost"],
                "cost_unit": summary["cost_unit"],
            }
            res.save()


def stage_random(res: Results, scfg: SearchConfig) -> None:
    """Uniform samples of the same space: cell type and every op drawn independently."""
    space = space_of(scfg)
    for seed in SEEDS:
        rng = random.Random(seed)
        cells = [
            {
                "type": rng.choice(space.cell_types),
                "ops": [rng.choice(space.candidates) for _ in range(space.positions)],
            }
            for _ in range(space.cells)
        ]
        res.section("random")[f"random_s{seed}"] = {
            "genotype": {"name": f"random_s{seed}", "width": space.width, "cells": cells}
        }
    res.save()


@functools.lru_cache(maxsize=8)
def _cached_pairs(specs: tuple[str, ...], split: str, val_fraction: float):
    return load_pairs(list(specs), split, val_fraction)


def _validation_subset(specs: list[str], fraction: float, n: int) -> list[tuple[str, Path, Path]]:
    pairs = []
    for spec in specs:
        a_dir, b_dir = resolve_layout(spec)
        pairs += [
            (f"{Path(spec).name}/{p.name}", p.a, p.b)
            for p in pair_paths(a_dir, b_dir)[0]
            if is_validation(p.name, fraction)
        ]
    step = max(1, len(pairs) // n)
    return pairs[::step][:n]


def score(bundle: Path, subset: list[tuple[str, Path, Path]]) -> dict:
    """Mean matlab-convention metrics of the bundle's fused images over the subset."""
    fuser = Fuser(bundle, device="cpu", threads=1)
    rows = []
    for _name, a_path, b_path in subset:
        ir, vis = read_image(a_path), read_image(b_path)
        rows.append(compute_metrics(ir, vis, fuser(ir, vis).fused, "matlab", list(METRICS)))
    return {m: round(statistics.mean(r[m] for r in rows), 4) for m in METRICS}


def retrain_and_score(run: str, genotype: dict, out: Path, subset) -> dict:
    path = out / "genotypes" / f"{run}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(Genotype.from_dict(genotype).to_json())
    cfg = load_config(
        TrainConfig,
        RETRAIN_CONFIG,
        {"genotype": str(path), "out": str(out / "retrain" / run), "export": str(out / "retrain" / run / "bundle")},
    )
    cpu, t = time.process_time(), time.perf_counter()
    bundle = train_module.train(cfg, command=f"bench/search_experiment.py retrain {run}")
    return {
        "genotype": genotype,
        "train_seconds": round(time.perf_counter() - t, 1),
        "train_cpu_seconds": round(time.process_time() - cpu, 1),
        "metrics": score(bundle, subset),
    }


def stage_retrain(res: Results, scfg: SearchConfig, out: Path, units: dict[str, dict]) -> None:
    # Every retraining loads the same pairs: read them once (tim_core.train looks load_pairs up at call time).
    train_module.load_pairs = lambda specs, split, vf, min_size=0: _cached_pairs(tuple(specs), split, vf)
    subset = _validation_subset(scfg.data, scfg.val_fraction, VAL_SUBSET)
    done = res.section("retrain")
    for name in REFERENCES:
        bundle = ROOT / "models" / name
        if name not in res.section("reference") and (bundle / "model.safetensors").is_file():
            res.section("reference")[name] = {"metrics": score(bundle, subset), "n": len(subset)}
            res.save()
    for run, unit in units.items():
        if run not in done:
            done[run] = retrain_and_score(run, unit["genotype"], out, subset)
            res.save()


def _latency(net: FusionNet, x: torch.Tensor) -> float:
    with torch.inference_mode():
        t = time.perf_counter()
        net(x, x)
        return (time.perf_counter() - t) * 1e3


def stage_latency(res: Results, scfg: SearchConfig, rounds: int = 5) -> None:
    """Forward latency at cost_size with 2 and 1 threads; rounds interleave all networks so load hits them alike."""
    genotypes = {"tim_light": load_genotype("tim_light")}
    genotypes.update({run: Genotype.from_dict(u["genotype"]) for run, u in res.section("retrain").items()})
    shipped = ROOT / "models" / "tim_ivif_compact" / "genotype.json"
    if shipped.is_file():
        genotypes["tim_ivif_compact"] = load_genotype(shipped)
    nets = {k: FusionNet(g).eval() for k, g in genotypes.items()}
    x = torch.rand(1, 1, *scfg.cost_size)
    table = LatencyTable.load(scfg.latency_table) if Path(scfg.latency_table).is_file() else None
    lat = res.section("latency")
    for threads, suffix in ((2, ""), (1, "_1t")):
        torch.set_num_threads(threads)
        times: dict[str, list[float]] = {k: [] for k in nets}
        for net in nets.values():
            _latency(net, x)  # warm-up
        for _ in range(rounds):
            for k, net in nets.items():
                times[k].append(_latency(net, x))
        for k, ts in times.items():
            lat.setdefault(k, {}).update(
                {f"min_ms{suffix}": round(min(ts), 1), f"median_ms{suffix}": round(statistics.median(ts), 1)}
            )
    for k, g in genotypes.items():
        space = SearchSpace(g.width, candidates=tuple(scfg.candidates), cell_types=("chain", "multiscale"))
        costs = CostModel(space, tuple(scfg.cost_size), table)
        lat[k].update({"predicted": round(costs.genotype_cost(g), 2), "predicted_unit": costs.unit})
    torch.set_num_threads(1)
    res.data["latency_meta"] = {
        "threads": [2, 1],
        "size": list(scfg.cost_size),
        "rounds": rounds,
        "table_threads": table.threads if table else None,
    }
    res.save()


def stage_report(res: Results) -> None:
    """Markdown table on stdout, the JSON under bench/results, the quality-vs-latency PNG under docs/."""
    refs = res.section("reference")
    base = refs.get("tim_ivif_base", {}).get("metrics")
    lat = res.section("latency")
    light = lat.get("tim_light", {})
    rows = [(run, unit["genotype"], unit["metrics"]) for run, unit in res.section("retrain").items()]
    rows += [(name, None, ref["metrics"]) for name, ref in refs.items()]
    groups: dict[str, list] = {}
    print(
        "| run | genotype | MI | VIF | Qabf | SSIM | ms, 2 threads (min / median) | x tim_light | "
        "ms, 1 thread (min / median) | x tim_light | predicted ms (1 thread) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for run, g, m in rows:
        ms = lat.get("tim_light" if run == "tim_ivif_base" else run, {})
        cells = " / ".join(f"{'+'.join(c['ops'])}" for c in g["cells"]) if g else "(shipped bundle)"
        x2 = light["min_ms"] / ms["min_ms"] if ms else float("nan")
        x1 = light["min_ms_1t"] / ms["min_ms_1t"] if ms else float("nan")
        print(
            f"| {run} | {'w' + str(g['width']) + ' ' if g else ''}{cells} "
            f"| {m['MI']:.3f} | {m['VIF']:.3f} | {m['Qabf']:.3f} | {m['SSIM']:.3f} "
            f"| {ms.get('min_ms')} / {ms.get('median_ms')} | {x2:.1f} "
            f"| {ms.get('min_ms_1t')} / {ms.get('median_ms_1t')} "
            f"| {x1:.1f} | {ms.get('predicted') if ms.get('predicted_unit') == 'ms' else '-'} |"
        )
        if base and ms:
            rel = statistics.mean(100 * m[k] / base[k] for k in ("MI", "VIF", "Qabf"))
            if run in refs:
                group, label = f"shipped {run}", run.replace("tim_ivif_", "")
            else:
                group = "width sweep (ias_s0 ops)" if "_w" in run else run.rsplit("_s", 1)[0]
                label = run.rsplit("_", 1)[1] if "_w" in run else ""
            groups.setdefault(group, []).append((ms["min_ms_1t"], rel, label))
    if groups:
        scatter_plot(
            groups,
            ROOT / "docs" / "search_quality_latency.png",
            "quality vs CPU latency at 640x480 (1 thread, min of 5)",
            "latency ms",
            "mean of MI, VIF, Qabf in % of tim_ivif_base (16 val pairs)",
        )
    out = ROOT / "bench" / "results" / "search_experiment.json"
    out.write_text(json.dumps(res.data, indent=1) + "\n")
    print(f"wrote {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {', '.join(STAGES)}")
    parser.add_argument("--out", default="runs/search_experiment", help="work folder (results.json, runs)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    res = Results(out / "results.json")
    scfg = load_config(SearchConfig, SEARCH_CONFIG)
    for stage in args.stages.split(","):
        cpu, t = time.process_time(), time.perf_counter()
        print(f"== {stage}", flush=True)
        if stage == "fidelity":
            stage_fidelity(res)
        elif stage == "profile":
            stage_profile(res, scfg)
        elif stage == "search":
            stage_search(res, scfg, out)
        elif stage == "random":
            stage_random(res, scfg)
        elif stage == "retrain":
            stage_retrain(res, scfg, out, {**res.section("search"), **res.section("random")})
        elif stage == "sweep":
            source, widths = SWEEP
            g = res.section("search")[source]["genotype"]
            units = {f"{source}_w{w}": {"genotype": {**g, "name": f"{source}_w{w}", "width": w}} for w in widths}
            stage_retrain(res, scfg, out, units)
        elif stage == "latency":
            stage_latency(res, scfg)
        elif stage == "report":
            stage_report(res)
        else:
            parser.error(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}")
        res.section("cpu_seconds")[stage] = round(
            res.section("cpu_seconds").get(stage, 0) + time.process_time() - cpu, 1
        )
        res.section("wall_seconds")[stage] = round(
            res.section("wall_seconds").get(stage, 0) + time.perf_counter() - t, 1
        )
        res.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
