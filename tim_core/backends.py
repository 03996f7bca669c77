"""Inference backends of the fusion network: one registry for `Fuser(backend=...)`, the node's `backend`
parameter and bench/bench_backends.py.

A backend is a callable like FusionNet: (ir, vis) (N, 1, H, W) float32 tensors in [0, 1] -> fused (N, 1, H, W),
unclamped. `torch` is the eager network itself (CPU or CUDA); the others run float32 on CPU, compiled from the
network (torch.compile) or from its ONNX export (tim_core.export.onnx_file: BUNDLE/model.onnx or a per-user cached
export). On the sample pairs each keeps the fused 8-bit image within 1 grey level of eager PyTorch
(bench/results/backends.json, test/test_backends.py). An engine that is not installed raises BackendError naming
the package to install and the backend that needs nothing more.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .bundle import BundleError
from .export import OnnxRuntimeNet, onnx_file

Net = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class BackendError(BundleError):
    """A backend that cannot run here (engine not installed, no C++ compiler); the message names the fix."""


def _check_cpu_float32(name: str, ir: torch.Tensor) -> None:
    if ir.device.type != "cpu" or ir.dtype != torch.float32:
        raise ValueError(f"backend {name!r} runs float32 on CPU; use backend 'torch' for CUDA or half")


class OpenVinoNet:
    """OpenVINO on the CPU, compiled once per input shape (static shapes run faster than the dynamic model).

    precision "f32" is set explicitly: on CPUs with AVX512-BF16 or AMX, OpenVINO's default is bf16, which moves
    fused pixels by several grey levels (bench/results/backends.json, `openvino_bf16`).
    """

    MAX_SHAPES = 4  # compiled models kept; a camera changing size often recompiles (about 0.3 s each)

    def __init__(self, path: str | Path, threads: int | None = None, precision: str = "f32"):
        import openvino

        self.path, self.core = Path(path), openvino.Core()
        self.config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self._requests: dict[tuple[int, ...], object] = {}

    def _request(self, shape: tuple[int, ...]):
        if shape not in self._requests:
            if len(self._requests) >= self.MAX_SHAPES:
                self._requests.clear()
            model = self.core.read_model(str(self.path))
            model.reshape({"ir": list(shape), "vis": list(shape)})
            self._requests[shape] = self.core.compile_model(model, "CPU", self.config).create_infer_request()
        return self._requests[shape]

    def __call__(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        _check_cpu_float32("openvino", ir)
        out = self._request(tuple(ir.shape)).infer({"ir": ir.contiguous().numpy(), "vis": vis.contiguous().numpy()})
        return torch.from_numpy(out[0])  # infer() copies its outputs: the array is ours


def compile_net(net: nn.Module) -> Net:
    """torch.compile (TorchInductor) with frozen weights; each new input shape compiles on its first call."""
    import torch._inductor.config as inductor_config

    compiled = torch.compile(net, dynamic=False)

    def run(ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        _check_cpu_float32("torch_compile", ir)
        # freezing folds the weights into the graph and pre-packs them for oneDNN (docs/performance.md: faster
        # than plain compile); it applies to inference-mode calls, which is how Fuser calls its network.
        with inductor_config.patch(freezing=True):
            return compiled(ir, vis)

    return run


def _torch(bundle: Path, net: nn.Module, threads: int | None) -> Net:
    return net


def _onnxruntime(bundle: Path, net: nn.Module, threads: int | None) -> Net:
    return OnnxRuntimeNet.for_bundle(bundle, threads)


def _openvino(bundle: Path, net: nn.Module, threads: int | None) -> Net:
    return OpenVinoNet(onnx_file(bundle), threads)


def _torch_compile(bundle: Path, net: nn.Module, threads: int | None) -> Net:
    return compile_net(net)


def _cxx_missing() -> str | None:
    cxx = os.environ.get("CXX", "g++")  # the compiler TorchInductor's CPU code generation calls
    if shutil.which(cxx) is None:
        return f"a C++ compiler ({cxx!r} not found; install g++ or set CXX)"
    return None


@dataclass(frozen=True)
class Backend:
    """One registry entry: what it is, what it needs beyond torch, and how to build it for a bundle."""

    summary: str
    build: Callable[[Path, nn.Module, int | None], Net]
    package: str | None = None  # Python package (import name = pip name) it needs; None: torch alone
    requirement: Callable[[], str | None] = lambda: None  # a missing non-Python requirement, described, or None


BACKENDS: dict[str, Backend] = {
    "torch": Backend("eager PyTorch, CPU or CUDA, float32 or half", _torch),
    "onnxruntime": Backend("ONNX Runtime, CPU float32", _onnxruntime, "onnxruntime"),
    "openvino": Backend("OpenVINO, CPU float32, compiled per input size", _openvino, "openvino"),
    "torch_compile": Backend("torch.compile (TorchInductor, frozen weights), CPU float32; compiles on the first "
                             "pair of each size (seconds to a minute)", _torch_compile, requirement=_cxx_missing),
}


AUTO = "auto"
CHOICES: tuple[str, ...] = (AUTO, *BACKENDS)  # what Fuser, the node's `backend` and `tim bench --backend` accept


def choose(name: str, device_type: str = "cpu", half: bool = False) -> str:
    """The backend `name` stands for: `auto` is the fastest float32 CPU engine installed here (openvino: 1.5-3.2x
    eager within 1 grey level, docs/performance.md), else eager torch; on CUDA or in half precision, torch."""
    if name not in CHOICES:
        raise ValueError(f"unknown backend {name!r}; valid: {', '.join(CHOICES)}")
    if name != AUTO:
        return name
    if device_type == "cpu" and not half and unavailable("openvino") is None:
        return "openvino"
    return "torch"


def unavailable(name: str) -> str | None:
    """Why backend `name` cannot run here (with the fix), or None when it can; unknown names raise ValueError."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
    backend = BACKENDS[name]
    if backend.package and importlib.util.find_spec(backend.package) is None:
        return (f"backend {name!r} needs the {backend.package} package: pip install {backend.package} "
                "(or use backend 'torch', which needs nothing more)")
    missing = backend.requirement()
    if missing:
        return f"backend {name!r} needs {missing} (or use backend 'torch', which needs nothing more)"
    return None


def build_backend(name: str, bundle: str | Path, net: nn.Module, threads: int | None = None) -> Net:
    """The callable that runs `net` (loaded from `bundle`, eval, on its device) with backend `name`."""
    problem = unavailable(name)
    if problem:
        raise BackendError(problem)
    try:
        return BACKENDS[name].build(Path(bundle), net, threads)
    except ImportError as e:  # installed but broken (a missing shared library, a version clash)
        raise BackendError(f"backend {name!r} could not load its engine ({e}); reinstall it or use backend "
                           "'torch'") from None
