"""The demo's report.html: what ran (model card, device, threads, backend, inputs, rates), fusion metrics next to the
mean/max baselines and the card's validation, per-frame latency, the node's stages, and every pair with a zoomed crop.

Every number comes from eval/eval.json (`tim-bag eval`) or the bundle's card; each numeric cell names its source
in `data-src` ("eval:metrics/EN", "card:validation/model/EN"), so a test can check the page against them. Links
are relative: the output folder can be zipped and sent.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from .report_plots import END_TO_END, STAGES, latency_plot, stage_ms, stage_plot, write_crops

CONVENTIONS = {
    "matlab": "the MATLAB toolbox of SeAFusion/PIAFusion-era tables (MI in bits, SSIM the mean over the two "
              "sources, PSNR ~60 dB)",
    "cddfuse": "the Python evaluator of CDDFuse/DDFM/EMMA (MI in nats, SSIM the sum over the two sources, "
               "PSNR ~12-20 dB)",
}
# metric -> (better, what it rewards), after ../shared/docs/METRICS.md
GUIDE = {
    "EN": ("higher", "information in the fused histogram (entropy); noise raises it too"),
    "SD": ("higher", "global contrast"),
    "SF": ("higher", "activity of row/column differences: detail, and noise"),
    "AG": ("higher", "sharpness of edges and texture"),
    "MI": ("higher", "intensity information kept from IR + VIS; copying source pixels (max) scores high"),
    "SCD": ("higher", "complementary information taken from each source"),
    "VIF": ("higher", "visual information fidelity to both sources"),
    "Qabf": ("higher", "source edges (strength and orientation) transferred"),
    "SSIM": ("higher", "local structure shared with the sources"),
    "CC": ("higher", "linear correlation with the sources"),
    "PSNR": ("higher", "pixel closeness to the sources; averaging (mean) wins it"),
    "Nabf": ("lower", "artifacts: fused detail found in neither source"),
}
COLUMNS = [  # (heading, source, path prefix) of the metric table
    ("this model", "eval", "metrics"),
    ("mean baseline", "eval", "baselines/mean"),
    ("max baseline", "eval", "baselines/max"),
    ("model", "card", "validation/model"),
    ("mean", "card", "validation/baseline_mean"),
    ("max", "card", "validation/baseline_max"),
]
CSS = """body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222;max-width:1400px}
h1{font-size:1.5em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}table{border-collapse:collapse}
.t td,.t th{border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap}
.t td.l,.t th.l{text-align:left}.t td.guide{white-space:normal}
.best{font-weight:bold;background:#e6f4e6}.guide{color:#555;font-size:.9em}.kv th{text-align:left;padding-right:1em}
.pair{display:flex;flex-wrap:wrap;gap:8px;margin-bottom:8px}
.pair figure{margin:0;flex:1 1 0;min-width:180px;max-width:420px}figcaption{font-size:.85em;color:#555}
.frame{position:relative;display:block}.frame img{width:100%;display:block}
.crop img{image-rendering:pixelated}.pair figure.crop{max-width:320px}
.box{position:absolute;border:2px solid #ff0;box-shadow:0 0 0 1px #000}
.side{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}code{background:#f4f4f4;padding:0 3px}"""


def fmt(v: float | None, kind: str = "metric") -> str:
    """A number as the report shows it: metrics 4 decimals (tiny values in e-notation), ms 1-2 decimals."""
    if v is None:
        return "n/a"
    if kind == "ms":
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
    if kind == "hz":
        return f"{v:.2f}"
    return f"{v:.4f}" if v == 0 or abs(v) >= 0.01 else f"{v:.3e}"


def _num(v: float | None, src: str, kind: str = "metric", cls: str = "") -> str:
    attr = f" class='{cls}'" if cls else ""
    return f"<td{attr} data-src='{html.escape(src)}'>{fmt(v, kind)}</td>"


def lookup(data: dict | list, path: str):
    """The value at a data-src path ("metrics/EN", "frames/0/latency_ms") in eval.json or the card; None if absent."""
    for key in path.split("/"):
        if isinstance(data, list):
            data = data[int(key)] if key.isdigit() and int(key) < len(data) else None
        else:
            data = data.get(key) if isinstance(data, dict) else None
    return data


def _header(summary: dict, run: dict, out: Path) -> str:
    card, p = run.get("card", {}), run["params"]
    val = card.get("validation", {})
    data = " + ".join(Path(d).name for d in card.get("data", [])) or "n/a"
    heads = ", ".join(card.get("heads", [])) or "none (fusion only)"
    classes = f" ({', '.join(card['classes'])})" if card.get("classes") else ""
    threads = p.get("threads", 0)
    threads = f"{threads}" if threads else f"torch default ({run.get('default_threads', '?')} on this machine)"
    inputs = "; ".join(f"{c.upper()} {', '.join(v['encodings'])} at {', '.join(v['sizes'])}"
                       for c, v in summary["inputs"].items())
    drops = ", ".join(f"{k} {v}" for k, v in summary["dropped_by_reason"].items() if v) or "none"
    rows = [
        ("model", f"<b>{html.escape(card.get('name', run['model']))}</b>: {html.escape(card.get('task', '?'))}, "
                  f"genotype <code>{html.escape(str(card.get('genotype', '?')))}</code>, task heads "
                  f"{html.escape(heads + classes)}"),
        ("card", f"trained {card.get('steps', '?')} steps on {html.escape(data)}; validation on {val.get('n', '?')} "
                 f"held-out pairs ({html.escape(str(val.get('convention', 'n/a')))} convention)"),
        ("bundle", f"<code>{html.escape(os.path.relpath(Path(run['bundle']).resolve(), out.resolve()))}</code> "
                   "(relative to this report)"),
        ("device", f"{html.escape(str(summary.get('node_device') or '?'))} (requested "
                   f"<code>{html.escape(str(p.get('device')))}</code>), {'fp16' if p.get('half') else 'fp32'}"),
        ("threads, backend", f"{html.escape(threads)}, <code>{html.escape(str(p.get('backend')))}</code>"),
        ("inputs", html.escape(inputs)),
        ("rates", f"bag {run.get('bag_rate_hz')} pairs/s replayed at {summary.get('replay_rate')}x; node "
                  f"expected_rate_hz {p.get('expected_rate_hz')}; fused output <span data-src='eval:throughput_hz'>"
                  f"{fmt(summary['throughput_hz'], 'hz')}</span> Hz"),
        ("pairs", f"<span data-src='eval:pairs_sent'>{summary['pairs_sent']}</span> sent, "
                  f"<span data-src='eval:fused_received'>{summary['fused_received']}</span> fused, "
                  f"<span data-src='eval:not_answered'>{summary['not_answered']}</span> not answered; "
                  f"node drops: {html.escape(drops)}"),
    ]
    return "<table class='kv'>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _metric_table(summary: dict, card: dict) -> str:
    sources = {"eval": summary, "card": card}
    val = card.get("validation") or {}
    same = val.get("convention") == summary["convention"]
    cols = [c for c in COLUMNS if c[1] == "eval" or same]
    n_card = len(cols) - 3
    head = (f"<tr><th class='l' rowspan=2>metric</th><th colspan=3>demo pairs (n = {summary['fused_received']})</th>"
            + (f"<th colspan={n_card}>model card validation (n = {val.get('n')})</th>" if n_card else "")
            + "<th rowspan=2>better</th><th class='l' rowspan=2>rewards</th></tr><tr>"
            + "".join(f"<th>{h}</th>" for h, _, _ in cols) + "</tr>")
    rows = []
    for m in summary["metrics"]:
        better, rewards = GUIDE.get(m, ("?", ""))
        cells = []
        for group in ("eval", "card"):
            group_cols = [(s, f"{pre}/{m}") for _, s, pre in cols if s == group]
            values = [lookup(sources[s], path) for s, path in group_cols]
            finite = [v for v in values if v is not None]
            best = (max if better == "higher" else min)(finite) if finite and better in ("higher", "lower") else None
            cells += [_num(v, f"{s}:{path}", cls="best" if v is not None and v == best else "")
                      for (s, path), v in zip(group_cols, values)]
        rows.append(f"<tr><td class='l'>{m}</td>{''.join(cells)}<td>{better}</td>"
                    f"<td class='l guide'>{html.escape(rewards)}</td></tr>")
    note = "" if same or not val else (f"<p>The card's validation uses the {html.escape(str(val.get('convention')))}"
                                       " convention, not comparable here; run the demo with that convention.</p>")
    return f"<table class='t'>{head}{''.join(rows)}</table>{note}"


def _latency(summary: dict, out: Path, bag_rate_hz: float | None) -> str:
    latency_plot(summary, out / "report" / "latency.png")
    lat, frames = summary["latency_ms"], summary["frames"]
    fused = [f for f in frames if f["latency_ms"] is not None]
    first, slowest = fused[0], max(fused, key=lambda f: f["latency_ms"])
    ratio = first["latency_ms"] / lat["p50"]
    story = (f"{'Warm-up' if ratio > 1.5 else 'No warm-up cost'}: the first fused pair "
             f"({html.escape(first['name'])}) took {fmt(first['latency_ms'], 'ms')} ms, {ratio:.1f}x the median. "
             f"Slowest: {html.escape(slowest['name'])}, {fmt(slowest['latency_ms'], 'ms')} ms. ")
    if bag_rate_hz and lat["p50"] > 1e3 / bag_rate_hz:
        story += (f"The median exceeds the {fmt(1e3 / bag_rate_hz, 'ms')} ms between pairs: the node cannot keep up, "
                  "and its latest-pair policy supersedes pairs waiting for the inference thread. ")
    missing = [f for f in frames if f["latency_ms"] is None]
    story += (("Not answered (marked on the plot): "
               + ", ".join(f"{html.escape(f['name'])} ({f['status']})" for f in missing) + ".")
              if missing else "Every pair was answered.")
    cells = "".join(_num(lat[k], f"eval:latency_ms/{k}", "ms") for k in ("p50", "p95", "max"))
    return (f"<table class='t'><tr><th>p50 ms</th><th>p95 ms</th><th>max ms</th><th>throughput Hz</th></tr><tr>"
            f"{cells}{_num(summary['throughput_hz'], 'eval:throughput_hz', 'hz')}</tr></table>"
            f"<p>{story}</p><img src='report/latency.png' alt='latency per pair' width='960'>")


def _stages(summary: dict, out: Path) -> str:
    stage_plot(summary, out / "report" / "stages.png")
    rows = [(s, label) for s, label in STAGES.items()] + [(END_TO_END, "end to end (stamp to published)")]
    body = "".join(
        f"<tr><td class='l' title='{s}_ms_p50 / _p95'>{label}</td>"
        + "".join(_num(stage_ms(summary, s, pct), f"eval:node_stage_ms/{s}_ms_{pct}", "ms") for pct in ("p50", "p95"))
        + "</tr>"
        for s, label in rows
    )
    return ("<div class='side'><table class='t'><tr><th class='l'>stage</th><th>p50 ms</th><th>p95 ms</th></tr>"
            f"{body}</table><img src='report/stages.png' alt='node stages' width='960'></div>")


def _figure(src: str, caption: str, box: tuple | None = None, size: tuple | None = None, cls: str = "img") -> str:
    mark = ""
    if box and size:
        x, y, w, h = box
        mark = (f"<div class='box' style='left:{100 * x / size[0]:.2f}%;top:{100 * y / size[1]:.2f}%;"
                f"width:{100 * w / size[0]:.2f}%;height:{100 * h / size[1]:.2f}%'></div>")
    return (f"<figure class='{cls}'><div class='frame'><img src='{html.escape(src)}' alt='{html.escape(caption)}'>"
            f"{mark}</div>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _pairs(summary: dict, out: Path) -> str:
    ev, parts = out / "eval", []
    frame = {f["name"]: i for i, f in enumerate(summary["frames"])}
    for name, scores in summary["per_pair"].items():
        crops = write_crops(ev, name, out / "report" / "crops")
        box, size = crops["box"], crops["size"]
        figs = [_figure(f"eval/{k}/{name}.png", k if k != "overlay" else "fused + task outputs", box, size)
                for k in ("ir", "vis", "fused", "overlay") if (ev / k / f"{name}.png").is_file()]
        zoom = [_figure(os.path.relpath(crops[k], out), f"{k}, crop", cls="crop") for k in ("ir", "vis", "fused")
                if k in crops]
        metrics = list(scores["model"])
        table = ("<table class='t'><tr><th class='l'></th>" + "".join(f"<th>{m}</th>" for m in metrics) + "</tr>"
                 + "".join(f"<tr><td class='l'>{label}</td>"
                           + "".join(_num(scores[key][m], f"eval:per_pair/{name}/{key}/{m}") for m in metrics)
                           + "</tr>"
                           for key, label in (("model", "this model"), ("baseline_mean", "mean"),
                                              ("baseline_max", "max")))
                 + "</table>")
        parts.append(f"<h3>{html.escape(name)} <small>latency "
                     f"<span data-src='eval:frames/{frame[name]}/latency_ms'>"
                     f"{fmt(summary['frames'][frame[name]]['latency_ms'], 'ms')}</span>"
                     f" ms; crop {box[2]}x{box[3]} px at ({box[0]}, {box[1]}), highest gradient energy of the fused "
                     f"image</small></h3><div class='pair'>{''.join(figs)}</div><div class='pair'>{''.join(zoom)}</div>"
                     f"{table}")
    return "".join(parts)


def write_report(out: Path, run: dict) -> Path:
    """out/report.html (+ out/report/*.png) from out/eval (written by evaluate_replay) and the run's context:
    run = {model, bundle, card, params (the node's effective parameters), bag_rate_hz, default_threads}."""
    summary = json.loads((out / "eval" / "eval.json").read_text())
    conv = summary["convention"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>tim-fusion demo report</title>
<style>{CSS}</style></head><body>
<h1>tim-fusion demo: sample pairs replayed as a rosbag2 through the ROS 2 fusion node</h1>
{_header(summary, run, out)}
<h2>Fusion metrics</h2>
<p>Convention <b>{html.escape(conv)}</b>: {html.escape(CONVENTIONS.get(conv, conv))}. Means over the fused pairs,
next to two baselines scored by the same code on the same pairs (pixel-wise mean and max of IR and visible luma)
and to the model card's validation. Bold: the best of each group of three.</p>
{_metric_table(summary, run.get("card", {}))}
<h2>Latency</h2>
{_latency(summary, out, run.get("bag_rate_hz"))}
<h2>Node stages</h2>
<p>From the node's /diagnostics; each stage's own p50/p95, so the stages need not add up to end to end, which also
holds the wait for the inference thread.</p>
{_stages(summary, out)}
<h2>Pairs</h2>
<p>IR, visible, fused (and the task heads' output when the bundle has heads); the yellow box is the crop below.</p>
{_pairs(summary, out)}
</body></html>
"""
    path = out / "report.html"
    path.write_text(page)
    return path
