#!/usr/bin/env bash
# Model benchmark on a CUDA machine, from a fresh checkout: bash bench/gpu.sh [VENV_DIR]
# Creates a venv with a CUDA build of torch (reuses the system's torch when it already sees a GPU),
# then times every bundle in models/ and the tim_ivif / tim_light baselines (random weights) at
# 640x512 and 1280x1024: FP32 and FP16, NCHW and channels-last, and torch.compile with CUDA graphs
# ("reduce-overhead") for the default tim_ivif_compact. Model-only: tensors already on the GPU, as the node's
# fuse stage minus the host<->device copies. Prints a table and writes bench/results/gpu.json.
# Then bench/gpu_fidelity.py: the fused image and detections on the GPU against the CPU, and the whole
# Fuser call (host arrays in and out) per device and precision (bench/results/gpu_fidelity.json).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-${TMPDIR:-/tmp}/tim_gpu_venv}
PY=python3
if ! $PY -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  [ -x "$VENV/bin/python" ] || $PY -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check torch numpy opencv-python-headless safetensors pyyaml tqdm
  PY="$VENV/bin/python"
else
  $PY -c "import safetensors, cv2, yaml" 2>/dev/null || $PY -m pip install -q safetensors opencv-python-headless pyyaml tqdm
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
PYTHONPATH=$PWD "$PY" - <<'EOF'
import json, statistics, time, tempfile
from pathlib import Path
import torch
from tim_core.bench import format_table, machine_info, materialize, nearest_rank
from tim_core.runtime import load_bundle

assert torch.cuda.is_available(), "no CUDA device visible to torch"
torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
dev = torch.device("cuda")
specs = sorted(str(p.parent) for p in Path("models").glob("*/model.safetensors")) + ["tim_ivif", "tim_light"]

def timed(fn, runs=50, warmup=10):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter(); fn(); torch.cuda.synchronize(); times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), nearest_rank(times, 0.95)

rows = []
with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
    for spec in specs:
        bundle, label = materialize(spec, Path(tmp))
        net = load_bundle(bundle)[0].to(dev).eval()
        for h, w in ((512, 640), (1024, 1280)):
            for dtype in (torch.float32, torch.float16):
                variants = [("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)]
                for name, fmt in variants:
                    m = net.to(dtype=dtype, memory_format=fmt)
                    x = torch.rand(1, 1, h, w, device=dev, dtype=dtype)
                    torch.cuda.reset_peak_memory_stats()
                    med, p95 = timed(lambda: m(x, x))
                    rows.append({"model": label, "size": f"{h}x{w}", "dtype": str(dtype)[6:], "variant": name,
                                 "median_ms": med, "p95_ms": p95, "fps": 1e3 / med,
                                 "peak_mb": torch.cuda.max_memory_allocated() / 2 ** 20})
                if label == "tim_ivif_compact":
                    try:
                        compiled = torch.compile(net.to(dtype=dtype, memory_format=torch.channels_last),
                                                 mode="reduce-overhead", dynamic=False)
                        x = torch.rand(1, 1, h, w, device=dev, dtype=dtype)
                        med, p95 = timed(lambda: compiled(x, x).clone())
                        rows.append({"model": label, "size": f"{h}x{w}", "dtype": str(dtype)[6:],
                                     "variant": "compile+cudagraphs", "median_ms": med, "p95_ms": p95, "fps": 1e3 / med})
                    except Exception as e:  # compile needs triton and a compiler; report and go on
                        print(f"torch.compile skipped for {label} {h}x{w}: {type(e).__name__}: {e}")
        print(f"  {label}: done", flush=True)

print(format_table(rows, [("model", "model", "s"), ("size", "HxW", "s"), ("dtype", "dtype", "s"),
                          ("variant", "variant", "s"), ("median_ms", "median ms", ".2f"), ("p95_ms", "p95 ms", ".2f"),
                          ("fps", "frames/s", ".0f"), ("peak_mb", "peak MiB", ".0f")]))
out = Path("bench/results/gpu.json")
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps({"benchmark": "model-only CUDA latency", "machine": machine_info(), "results": rows},
                          indent=2) + "\n")
print(f"wrote {out}")
EOF
# the fused image and detections on the GPU against the CPU, and the whole Fuser call's latency
PYTHONPATH=$PWD "$PY" bench/gpu_fidelity.py
