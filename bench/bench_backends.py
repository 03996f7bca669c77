"""CPU backends of one fusion bundle, measured in one run against this machine's roofline.

    python bench/bench_backends.py runs/compact_v1/bundle [--sizes 480x640,512x640] [--threads 1,2] [--rounds 9]
                                   [--backends torch,onnxruntime,...] [--node-seconds 20] [--out FILE]

Every backend runs through Fuser.fuse_luma (the node's `fuse` stage) on real sample pairs resized to each size,
interleaved round by round with a large convolution (128 -> 128 channels, 3x3, 96x96, channels-last), whose
GMAC/s is the machine's achieved compute throughput in that same round; a model's `x roofline` is its median
time over the time its MACs (tim_core.network.count_macs) need at that throughput. Quality: the fused 8-bit RGB
image of each backend vs eager PyTorch on the sample pairs (Fuser's full path), largest difference in grey levels.

Backends: those of tim_core.backends (torch, onnxruntime, openvino, torch_compile) plus variants measured here
only: TorchScript (trace + freeze + optimize_for_inference), ONNX Runtime with the size fixed per session,
OpenVINO bf16, bfloat16 autocast (bench_cpu_options.py) and static int8 (ONNX Runtime QDQ, calibrated on the
sample pairs). A backend that fails to build or run is recorded with its error, one that is not installed with
the install hint. Then the node's stages at 640x512 mono16 + rgb8: in process (decode, normalise, YCbCr, model,
uint8, encode; no DDS) and, with --node-seconds > 0, the real node over DDS (bench_node.py) with eager PyTorch and
the recommended backend. Writes bench/results/backends.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_cpu_options import cpu_flags, run_option  # noqa: E402

from tim_core.backends import BACKENDS, OpenVinoNet, build_backend, compile_net, unavailable  # noqa: E402
from tim_core.bench import format_table, machine_info, nearest_rank  # noqa: E402
from tim_core.export import ExportableFusionNet, onnx_file  # noqa: E402
from tim_core.files import pair_paths, read_image, write_text_atomic  # noqa: E402
from tim_core.network import count_macs  # noqa: E402
from tim_core.runtime import Fuser, load_bundle, resolve_bundle  # noqa: E402
from tim_core.threads import torch_threads  # noqa: E402

VARIANTS = ("torch", "torch_compile", "torchscript_freeze", "onnxruntime", "onnxruntime_static", "openvino",
            "openvino_bf16", "bf16_autocast", "int8_onnxruntime")
NOT_IN_RUNTIME = set(VARIANTS) - set(BACKENDS)
ROOFLINE_CONV = (128, 96)  # channels, side: 1.36 GMAC, large enough for oneDNN's best kernels, ~30 ms a call


class OnnxRuntimeStatic:
    """ONNX Runtime with batch/height/width fixed per session (free-dimension overrides): one session per shape."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        self.ort, self.path, self.threads, self.sessions = ort, path, threads, {}

    def __call__(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        shape = tuple(ir.shape)
        if shape not in self.sessions:
            opts = self.ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = self.threads, 1
            opts.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            for name, size in zip(("batch", "height", "width"), (shape[0], shape[2], shape[3])):
                opts.add_free_dimension_override_by_name(name, size)
            self.sessions[shape] = self.ort.InferenceSession(str(self.path), opts,
                                                             providers=["CPUExecutionProvider"])
        fused = self.sessions[shape].run(["fused"], {"ir": ir.contiguous().numpy(), "vis": vis.contiguous().numpy()})
        return torch.from_numpy(fused[0])


def int8_onnxruntime(path: Path, planes: list[tuple[np.ndarray, np.ndarray]], threads: int, tmp: Path):
    """Static int8 (QDQ, per-channel weights, uint8 activations) calibrated on the sample planes, in ONNX Runtime."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from tim_core.export import OnnxRuntimeNet

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"ir": ir[None, None], "vis": vis[None, None]} for ir, vis in planes])

        def get_next(self):
            return next(self.feeds, None)

    pre, out = tmp / "pre.onnx", tmp / "int8.onnx"
    quant_pre_process(str(path), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return OnnxRuntimeNet(out, threads)


def build_variant(name: str, bundle: Path, fuser: Fuser, threads: int, planes, tmp: Path):
    """The callable for one variant (FusionNet's calling convention), or raises."""
    net = fuser.net
    if name in BACKENDS:
        if name == "torch_compile":
            torch._dynamo.reset()  # kernels are specialised on the thread count: compile afresh per count
            return compile_net(net)
        return build_backend(name, bundle, net, threads)
    if name == "torchscript_freeze":
        example = torch.from_numpy(planes[0][0])[None, None]
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on shape arithmetic, which is meant to be traced
            traced = torch.jit.trace(ExportableFusionNet(net).eval(), (example, example))
            return torch.jit.optimize_for_inference(torch.jit.freeze(traced))
    if name == "onnxruntime_static":
        return OnnxRuntimeStatic(onnx_file(bundle), threads)
    if name == "openvino_bf16":
        return OpenVinoNet(onnx_file(bundle), threads, precision="bf16")
    if name == "bf16_autocast":
        return lambda a, b: run_option(net, a, b, "bf16_autocast")
    if name == "int8_onnxruntime":
        return int8_onnxruntime(onnx_file(bundle), planes, threads, tmp)
    raise ValueError(name)


def not_installed(name: str) -> str | None:
    needs = {"onnxruntime_static": "onnxruntime", "int8_onnxruntime": "onnxruntime", "openvino_bf16": "openvino"}
    return unavailable(needs.get(name, name)) if name in BACKENDS or name in needs else None


def roofline_probe(threads: int):
    """A call of the large convolution and its MACs: the machine's achieved throughput, timed like the models."""
    c, side = ROOFLINE_CONV
    conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, c, side, side).contiguous(memory_format=torch.channels_last)

    def call() -> None:
        with torch_threads(threads), torch.inference_mode():
            conv(x)

    return call, c * c * 9 * side * side


def copy_bandwidth_gbps(threads: int, mib: int = 64) -> float:
    """Read + write GB/s of a large tensor copy (context: this network moves 8-channel maps, it is memory-bound)."""
    x = torch.rand(mib * 2**20 // 4)
    y = torch.empty_like(x)
    times = []
    with torch_threads(threads):
        for _ in range(7):
            t0 = time.perf_counter()
            y.copy_(x)
            times.append(time.perf_counter() - t0)
    return 2 * x.numel() * 4 / float(np.median(times)) / 1e9


def sample_pairs(limit: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, IR, VIS) of samples/: the real MSRS pairs of equal size, IR as 16 bit like the node's mono16."""
    pairs = pair_paths(ROOT / "samples" / "ir", ROOT / "samples" / "vis")[0]
    out = []
    for pair in pairs:
        ir, vis = read_image(pair.a), read_image(pair.b)
        if ir.shape[:2] == vis.shape[:2]:
            ir = ir if ir.ndim == 2 else cv2.cvtColor(ir, cv2.COLOR_RGB2GRAY)
            out.append((pair.name, ir.astype(np.uint16) * 257, vis))
    return out[:limit]


def error(e: Exception) -> str:
    """An exception as one line for the JSON: type and the first line of its message."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}"


def measure_threads(bundle: Path, threads: int, sizes, rounds: int, pairs, names, tmp: Path) -> tuple[list, dict]:
    """Rows of every variant at every size with `threads` threads, and the roofline of each size."""
    fuser = Fuser(bundle, device="cpu", threads=threads, warmup=False)
    eager = fuser.net
    planes = [fuser._prepare(ir, vis)[:2] for _, ir, vis in pairs]
    nets, status, build_s = {}, {}, {}
    for name in names:
        missing = not_installed(name)
        if missing:
            status[name] = f"not installed: {missing}"
            continue
        t0 = time.perf_counter()
        try:
            nets[name] = build_variant(name, bundle, fuser, threads, planes, tmp)
            status[name], build_s[name] = "ok", time.perf_counter() - t0
        except Exception as e:  # a backend that cannot build here is a result, recorded with its error
            status[name] = f"failed to build: {error(e)}"
    rows, rooflines, timed = [], {}, {}
    conv, conv_macs = roofline_probe(threads)
    for h, w in sizes:
        macs = count_macs(load_bundle(bundle)[0], h, w)
        a, b = (cv2.resize(p, (w, h), interpolation=cv2.INTER_AREA) for p in planes[0])
        first = {}
        for name, net in list(nets.items()):  # first call: compiles (torch_compile, openvino), allocates
            fuser.net = net
            t0 = time.perf_counter()
            try:
                fuser.fuse_luma(a, b)
                first[name] = time.perf_counter() - t0
            except Exception as e:
                status[name] = f"failed at {h}x{w}: {error(e)}"
                del nets[name]
        conv()
        times: dict[str, list[float]] = {name: [] for name in [*nets, "roofline_conv"]}
        for r in range(rounds):
            order = [*nets, "roofline_conv"]
            for name in order if r % 2 == 0 else order[::-1]:  # alternate the order: drift hits all alike
                t0 = time.perf_counter()
                if name == "roofline_conv":
                    conv()
                else:
                    fuser.net = nets[name]
                    fuser.fuse_luma(a, b)
                times[name].append((time.perf_counter() - t0) * 1e3)
        gmacs = conv_macs / float(np.median(times["roofline_conv"])) / 1e6  # MAC per ms / 1e6 = GMAC/s
        best = conv_macs / min(times["roofline_conv"]) / 1e6
        rooflines[f"{h}x{w}"] = {"achieved_gmac_per_s": gmacs, "best_gmac_per_s": best, "model_gmac": macs / 1e9,
                                 "roofline_ms": macs / gmacs / 1e6}
        timed[(h, w)] = (times, first)
    # Quality after timing (so first calls above include compilation): Fuser's full path, 8-bit RGB out.
    fuser.net = eager
    reference = [fuser(ir, vis).fused.astype(int) for _, ir, vis in pairs]
    grey = {}
    for name, net in list(nets.items()):
        fuser.net = net
        try:
            grey[name] = max(float(np.abs(fuser(ir, vis).fused - ref).max())
                             for (_, ir, vis), ref in zip(pairs, reference))
        except Exception as e:
            status[name] = f"failed to run: {error(e)}"
            del nets[name]
    for (h, w), (times, first) in timed.items():
        roofline_ms = rooflines[f"{h}x{w}"]["roofline_ms"]
        eager_ms = float(np.median(times["torch"]))
        for name in names:
            row = {"backend": name, "size": f"{h}x{w}", "threads": threads, "status": status[name],
                   "in_runtime": name not in NOT_IN_RUNTIME}
            if name in nets:
                med = float(np.median(times[name]))
                row.update(median_ms=med, p95_ms=nearest_rank(times[name], 0.95), runs=len(times[name]),
                           speedup_vs_eager=eager_ms / med, x_roofline=med / roofline_ms,
                           max_grey_diff=grey[name], first_call_s=first[name], build_s=build_s[name])
            rows.append(row)
    fuser.net = eager
    return rows, rooflines


def recommend(rows: list[dict]) -> dict:
    """Fastest runtime backend (geometric mean of speed-ups over sizes and threads) within 1 grey level everywhere."""
    scores = {}
    for name in {r["backend"] for r in rows}:
        mine = [r for r in rows if r["backend"] == name]
        if all(r["status"] == "ok" and r.get("max_grey_diff", 99) <= 1 for r in mine):
            scores[name] = float(np.exp(np.mean([np.log(r["speedup_vs_eager"]) for r in mine])))
    runtime = {n: s for n, s in scores.items() if n in BACKENDS}
    return {"cpu_backend": max(runtime, key=runtime.get) if runtime else "torch",
            "geomean_speedup_vs_eager": dict(sorted(scores.items(), key=lambda kv: -kv[1])),
            "rule": "fastest runtime backend whose fused 8-bit image stays within 1 grey level of eager on every "
                    "sample pair, by the geometric mean of its speed-up over eager across sizes and threads"}


def stages_in_process(bundle: Path, backend: str, threads: int, pairs, calls: int) -> dict:
    """Per-stage medians (ms) of the node's per-pair work at 640x512 mono16 + rgb8, without DDS."""
    try:
        from tim_fusion_ros.image_codec import image_to_numpy, numpy_to_image
        numpy_to_image(np.zeros((2, 2), np.uint8), "mono8")
    except ImportError as e:
        return {"status": f"skipped: ROS 2 message packages not importable ({e})"}
    _, ir, vis = pairs[0]
    msgs = (numpy_to_image(cv2.resize(ir, (640, 512)), "mono16"), numpy_to_image(cv2.resize(vis, (640, 512)), "rgb8"))
    fuser = Fuser(bundle, device="cpu", threads=threads, backend=backend)
    samples: dict[str, list[float]] = {}
    for i in range(calls + 1):  # call 0 is the warm-up at this size
        t0 = time.perf_counter()
        ir_a, vis_a = image_to_numpy(msgs[0]), image_to_numpy(msgs[1])
        t1 = time.perf_counter()
        result = fuser(ir_a, vis_a)
        t2 = time.perf_counter()
        numpy_to_image(result.fused, "rgb8")
        t3 = time.perf_counter()
        if i:
            stage = {"decode": t1 - t0, "encode": t3 - t2, "fuser_total": t2 - t1}
            stage = {k: v * 1e3 for k, v in stage.items()} | result.timings
            for k, v in stage.items():
                samples.setdefault(k, []).append(v)
    med = {k: float(np.median(v)) for k, v in samples.items()}
    outside = med["decode"] + med["prepare"] + med["finish"] + med["encode"]
    return {"status": "ok", "backend": backend, "threads": threads, "size": "512x640", "calls": calls,
            "median_ms": med, "outside_model_ms": outside, "outside_model_share": outside / med["model"]}


def node_over_dds(bundle: Path, backends: list[str], seconds: float) -> dict:
    """bench_node.py's measurement (the real node, 640x512 at 30 Hz) for each backend."""
    try:
        import bench_node
    except ImportError as e:
        return {"status": f"skipped: {e}"}
    out = {}
    for backend in backends:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                out[backend] = bench_node.run(bundle, backend, seconds, 30.0, (512, 640), Path(tmp))
            except Exception as e:
                out[backend] = {"status": f"failed: {type(e).__name__}: {e}"}
    return out


COLUMNS = [("backend", "backend", "s"), ("size", "HxW", "s"), ("threads", "thr", "d"),
           ("median_ms", "median ms", ".1f"), ("p95_ms", "p95 ms", ".1f"), ("speedup_vs_eager", "x eager", ".2f"),
           ("x_roofline", "x roofline", ".1f"), ("max_grey_diff", "max grey diff", ".0f"),
           ("first_call_s", "first call s", ".2f")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="bundle folder or shipped name, e.g. runs/compact_v1/bundle")
    parser.add_argument("--sizes", default="480x640,512x640", help="HxW list (default %(default)s)")
    parser.add_argument("--threads", default="1,2", help="CPU thread counts (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=9, help="timed calls per backend and case (interleaved)")
    parser.add_argument("--pairs", type=int, default=3, help="sample pairs for the grey-level check")
    parser.add_argument("--backends", default=",".join(VARIANTS), help="subset of: " + ", ".join(VARIANTS))
    parser.add_argument("--stage-calls", type=int, default=15, help="calls for the in-process stage costs")
    parser.add_argument("--node-seconds", type=float, default=20.0, help="node over DDS per backend; 0 skips it")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "backends.json")
    args = parser.parse_args(argv)
    bundle = resolve_bundle(args.model)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    names = [n for n in args.backends.split(",") if n]
    if "torch" not in names or set(names) - set(VARIANTS):
        parser.error(f"--backends must include torch and name only: {', '.join(VARIANTS)}")
    pairs = sample_pairs(args.pairs)
    info = machine_info() | {"cpu_bf16_amx_flags": cpu_flags()}
    try:
        import openvino
        info["openvino"] = openvino.__version__
    except ImportError:
        pass
    print(f"backends of {bundle} on {info['cpu']} ({info['logical_cpus']} CPUs), load {info['load_average_1m']:.1f}",
          flush=True)
    start, rows, rooflines, bandwidth = time.perf_counter(), [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for t in threads:
            bandwidth[t] = copy_bandwidth_gbps(t)
            got, roof = measure_threads(bundle, t, sizes, args.rounds, pairs, names, Path(tmp))
            rows += got
            rooflines[t] = roof
            print(format_table([r for r in got if "median_ms" in r], COLUMNS), flush=True)
            for r in got:
                if r["status"] != "ok":
                    print(f"  {r['backend']} {r['size']} {t} thr: {r['status']}")
    choice = recommend(rows)
    print(f"recommended CPU backend: {choice['cpu_backend']} ({choice['geomean_speedup_vs_eager']})", flush=True)
    node_threads = max(threads)
    stages = [stages_in_process(bundle, b, node_threads, pairs, args.stage_calls)
              for b in dict.fromkeys(["torch", choice["cpu_backend"]])]
    for s in stages:
        print(f"stages in process ({s.get('backend')}): " + (", ".join(f"{k} {v:.2f}" for k, v in
                                                                     s["median_ms"].items()) if "median_ms" in s
                                                            else s["status"]))
    node = node_over_dds(bundle, list(dict.fromkeys(["torch", choice["cpu_backend"]])), args.node_seconds) \
        if args.node_seconds > 0 else {"status": "skipped (--node-seconds 0)"}
    info["load_average_1m_end"] = machine_info().get("load_average_1m")
    result = {"benchmark": "CPU backends of one bundle vs the roofline", "model": str(args.model),
              "bundle": str(bundle), "machine": info, "seconds": time.perf_counter() - start,
              "method": {"rounds": args.rounds, "statistic": "median of interleaved rounds, ms",
                         "model_timing": "Fuser.fuse_luma on real sample planes resized to the size",
                         "roofline": f"conv {ROOFLINE_CONV[0]}->{ROOFLINE_CONV[0]} 3x3 on "
                                     f"{ROOFLINE_CONV[1]}x{ROOFLINE_CONV[1]}, channels-last, eager, same rounds",
                         "grey_diff": f"fused uint8 RGB vs eager on {len(pairs)} sample pair(s) "
                                      f"({', '.join(p[0] for p in pairs)}), Fuser's full path"},
              "copy_bandwidth_gbps": bandwidth, "roofline": rooflines, "rows": rows, "recommendation": choice,
              "stages_in_process": stages, "node_over_dds": node}
    write_text_atomic(args.out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
