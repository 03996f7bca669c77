"""Latency harness and `tim bench`: median / p95 ms and frames/s of the fusion model, as Fuser runs it.

A model is a bundle (folder or shipped name) or a bare genotype (built-in name or JSON), which gets
seeded random weights: speed does not depend on the weight values. Every model goes through
`Fuser.infer` (numpy planes in, clamped luma out: the fusion network, then a bundle's task heads when it has
any), so the numbers are the node's model and tasks stages: a detection bundle is timed with its detector.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .genotype import GenotypeError, load_genotype
from .network import FusionNet
from .runtime import BundleError, Fuser, resolve_bundle, save_bundle


@dataclass
class Timing:
    """Wall-clock statistics of repeated calls, in milliseconds."""

    median_ms: float
    p95_ms: float
    runs: int

    @property
    def fps(self) -> float:
        return 1e3 / self.median_ms if self.median_ms > 0 else math.inf


def nearest_rank(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank: with few runs, p95 is the slowest run."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def time_call(fn: Callable[[], object], warmup: int = 1, min_runs: int = 3, max_runs: int = 50,
              budget_s: float = 2.0, sync: Callable[[], None] = lambda: None) -> Timing:
    """Time fn() after `warmup` calls: at least min_runs, more until budget_s is spent (at most max_runs)."""
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or (len(times) < max_runs and time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return Timing(float(np.median(times)), nearest_rank(times, 0.95), len(times))


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mb(field: str = "VmHWM", pid: int | str = "self") -> float:
    """VmHWM (peak) or VmRSS (current) of a process from /proc, in MiB; NaN where /proc is missing."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return math.nan


def materialize(spec: str, workdir: Path) -> tuple[Path, str]:
    """(bundle path, label) for a bundle or a genotype; a genotype is saved with seeded random weights."""
    try:
        bundle = resolve_bundle(spec)
        return bundle, bundle.name
    except BundleError as missing:
        try:
            genotype = load_genotype(spec)
        except GenotypeError:
            raise BundleError(f"{spec!r} is neither a bundle nor a genotype ({missing})") from None
    torch.manual_seed(0)
    bundle = save_bundle(workdir / f"{genotype.name}_random", FusionNet(genotype),
                         {"task": "fusion", "note": "random weights, for timing only"})
    return bundle, f"{genotype.name} (random)"


def bench_fuser(fuser: Fuser, height: int, width: int, **timing) -> dict:
    """Time fuser.infer (fusion, and task heads if any) on one random HxW pair; dict with median_ms, p95_ms, fps,
    runs, peak memory."""
    rng = np.random.default_rng(0)
    a, b = (rng.random((height, width), dtype=np.float32) for _ in range(2))
    cuda = fuser.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(fuser.device)
    before, exact = rss_mb("VmRSS"), reset_peak_rss()
    t = time_call(lambda: fuser.infer(a, b), sync=torch.cuda.synchronize if cuda else lambda: None, **timing)
    row = {"height": height, "width": width, **asdict(t), "fps": t.fps,
           "peak_rss_mb": rss_mb("VmHWM"), "rss_before_mb": before, "peak_rss_exact": exact}
    if cuda:
        row["peak_cuda_mb"] = torch.cuda.max_memory_allocated(fuser.device) / 2 ** 20
    return row


def machine_info() -> dict:
    """CPU model, core count, load average, library versions: printed and stored with every result."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "logical_cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    if hasattr(os, "getloadavg"):
        info["load_average_1m"] = os.getloadavg()[0]
    try:
        import onnxruntime
        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Fixed-width text table: columns are (key, header, format spec)."""
    cells = [[h for _, h, _ in columns]] + [[format(r[k], f) if k in r else "-" for k, _, f in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in cells)
