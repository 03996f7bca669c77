"""ONNX export of a bundle's fusion network (dynamic height/width), checked against PyTorch, and an
ONNX Runtime module that `Fuser(backend="onnxruntime")` runs in place of the PyTorch network.

The exported graph takes `ir`, `vis` (N, 1, H, W) float32 in [0, 1] and returns `fused` (N, 1, H, W),
unclamped like FusionNet. Its metadata carries the SHA-256 of the bundle's weights, so a stale
`model.onnx` next to retrained weights is detected and re-exported.
"""

from __future__ import annotations

import copy
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .bundle import WEIGHTS, BundleError, load_bundle, resolve_bundle
from .color import luma, to_unit
from .files import pair_paths, read_image
from .network import FusionNet

ONNX_FILE = "model.onnx"
OPSET = 17
TOLERANCE = 1e-4  # max |ONNX - PyTorch| on real pairs, fused luma in [0, 1]


class ExportableFusionNet(nn.Module):
    """FusionNet with padding written as graph ops, so the ONNX model accepts any H x W (>= 4)."""

    def __init__(self, net: FusionNet):
        super().__init__()
        self.net = leaky_copy(net)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        x = torch.cat((ir, vis), dim=1)
        h, w = x.shape[-2], x.shape[-1]
        m = self.net.multiple
        if m > 1:  # FusionNet pads only when needed; a traced graph must always pad (by 0..m-1)
            x = F.pad(x, (0, (m - w % m) % m, 0, (m - h % m) % m), mode="reflect")
        return self.net.body(x)[:, :, :h, :w]


def leaky_copy(net: nn.Module) -> nn.Module:
    """An eval copy with every one-slope PReLU as the identical LeakyReLU, which ONNX Runtime fuses into Conv."""
    net = copy.deepcopy(net).float().eval()
    for module in list(net.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.PReLU) and child.weight.numel() == 1:
                setattr(module, name, nn.LeakyReLU(float(child.weight)))
    return net


def weights_digest(bundle: Path) -> str:
    """SHA-256 of a bundle's weights file."""
    return hashlib.sha256((bundle / WEIGHTS).read_bytes()).hexdigest()


def export_onnx(model: str | Path, out: str | Path | None = None, opset: int = OPSET) -> Path:
    """Export a bundle's fusion network to ONNX with dynamic N, H, W; returns the .onnx path."""
    import onnx

    bundle = resolve_bundle(model)
    net, _, _ = load_bundle(bundle)
    out = Path(out) if out else bundle / ONNX_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(1, 1, 64, 80)
    axes = {0: "batch", 2: "height", 3: "width"}
    tmp = out.with_suffix(".onnx.tmp")
    with warnings.catch_warnings():  # the tracer warns about shape arithmetic, which is what we want traced
        warnings.simplefilter("ignore")
        torch.onnx.export(ExportableFusionNet(net), (example, example), str(tmp), input_names=["ir", "vis"],
                          output_names=["fused"], dynamic_axes={"ir": axes, "vis": axes, "fused": axes},
                          opset_version=opset, dynamo=False)
    proto = onnx.load(str(tmp))
    for key, value in (("tim_weights_sha256", weights_digest(bundle)), ("tim_genotype", net.genotype.name),
                       ("tim_genotype_fingerprint", net.genotype.fingerprint())):
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(tmp))
    os.replace(tmp, out)
    return out


def onnx_file(bundle: str | Path) -> Path:
    """The bundle's model.onnx (`tim export`) if it matches the weights, else an export cached per user (made on
    first use; never written into the bundle: it may be shipped read-only). ONNX Runtime and OpenVINO run it."""
    import onnx

    bundle = resolve_bundle(bundle)
    digest = weights_digest(bundle)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tim_fusion" / digest[:16] / ONNX_FILE
    for path in (bundle / ONNX_FILE, cache):
        if path.is_file():
            metadata = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            if metadata.get("tim_weights_sha256") == digest:
                return path
    return export_onnx(bundle, cache)


def _session(path: Path, threads: int | None):
    try:
        import onnxruntime as ort
    except ImportError:
        raise BundleError("backend 'onnxruntime' needs the onnxruntime package: pip install onnxruntime "
                          "(or use backend 'torch')") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default, one per physical core
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxRuntimeNet:
    """Callable like FusionNet on CPU tensors: (ir, vis) (N, 1, H, W) float32 -> fused (N, 1, H, W)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        self.path = Path(path)
        self.session = _session(self.path, threads)
        self.metadata = self.session.get_modelmeta().custom_metadata_map

    @classmethod
    def for_bundle(cls, bundle: str | Path, threads: int | None = None) -> OnnxRuntimeNet:
        """The bundle's ONNX file (see onnx_file) in an ONNX Runtime session."""
        return cls(onnx_file(bundle), threads)

    def __call__(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        if ir.device.type != "cpu" or ir.dtype != torch.float32:
            raise ValueError("backend 'onnxruntime' runs float32 on CPU; use backend 'torch' for CUDA or half")
        fused = self.session.run(["fused"], {"ir": ir.contiguous().numpy(), "vis": vis.contiguous().numpy()})[0]
        return torch.from_numpy(fused)


def real_pairs(limit: int = 3) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, IR luma, visible luma) float32 [0, 1] planes from samples/, as Fuser prepares them."""
    samples = Path(__file__).resolve().parents[1] / "samples"
    pairs, _ = pair_paths(samples / "ir", samples / "vis")
    out = []
    for pair in pairs[:limit]:
        ir, vis = to_unit(read_image(pair.a), "percentile"), to_unit(read_image(pair.b))
        ir, vis = (luma(x) if x.ndim == 3 else x for x in (ir, vis))
        if ir.shape == vis.shape:
            out.append((pair.name, ir, vis))
    return out


def verify_onnx(path: str | Path, net: FusionNet, pairs: list[tuple[str, np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Max |ONNX Runtime - PyTorch| of the fused luma per pair."""
    session = OnnxRuntimeNet(path)
    net = net.float().eval()
    diffs = {}
    with torch.inference_mode():
        for name, ir, vis in pairs:
            a, b = (torch.from_numpy(np.ascontiguousarray(x))[None, None] for x in (ir, vis))
            diffs[name] = float((session(a, b) - net(a, b)).abs().max())
    return diffs
