"""Model bundles on disk and `Fuser`, the one inference entry point (CLI, ROS node, bag evaluator, benchmarks).

A bundle is a folder: `model.safetensors` (weights, keys prefixed by part, e.g. `fusion.`), `genotype.json`
and `card.json` (what the model is, how it was made, what it measured). Loading is strict: a missing,
unexpected or mis-shaped key, or weights trained for another genotype, is an error naming the problem.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .color import luma, rgb_to_ycbcr, to_unit, ycbcr_to_rgb
from .genotype import Genotype, GenotypeError
from .network import FusionNet

WEIGHTS, GENOTYPE, CARD = "model.safetensors", "genotype.json", "card.json"
DEFAULT_MODEL = "tim_ivif_base"
SIZE_POLICIES = ("reject", "resize_ir", "resize_vis")
BACKENDS = ("torch", "onnxruntime")


class BundleError(ValueError):
    """A model bundle that cannot be used; the message names the file or key and the fix."""


class InputError(ValueError):
    """An input pair that cannot be fused; `reason` is a short counter name (e.g. size_mismatch)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def models_dirs() -> list[Path]:
    """Where bundles are looked up by name: $TIM_MODELS_DIR, the source checkout, the installed share/."""
    dirs = [Path(os.environ["TIM_MODELS_DIR"])] if os.environ.get("TIM_MODELS_DIR") else []
    dirs.append(Path(__file__).resolve().parents[1] / "models")
    dirs.append(Path(sys.prefix) / "share" / "tim_fusion_ros" / "models")
    return dirs


def resolve_bundle(model: str | Path) -> Path:
    """A bundle path from a path or a shipped name; raises BundleError saying how to get one."""
    path = Path(model)
    if (path / WEIGHTS).is_file():
        return path
    for d in models_dirs():
        if (d / str(model) / WEIGHTS).is_file():
            return d / str(model)
    if path.exists():
        raise BundleError(f"{path}: not a model bundle (no {WEIGHTS}); a bundle holds {WEIGHTS}, {GENOTYPE}, {CARD}")
    where = ", ".join(str(d) for d in models_dirs())
    if str(model) == DEFAULT_MODEL:
        raise BundleError(
            f"no trained model yet: the default bundle {DEFAULT_MODEL!r} is not in {where}. Train it with "
            "`tim train --config tim_core/configs/tim_ivif_base.yaml` or pass --model PATH to a bundle"
        )
    raise BundleError(f"model {str(model)!r} not found: not a bundle folder and not a name in {where}")


def save_bundle(path: str | Path, model: FusionNet, card: dict, extra: dict[str, torch.Tensor] | None = None) -> Path:
    """Write weights (+ genotype fingerprint), genotype JSON and card; returns the bundle folder."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"fusion.{k}": v.detach().cpu().contiguous().float()
        for k, v in model.state_dict().items()
        if v.is_floating_point()
    }
    tensors.update({k: v.detach().cpu().contiguous() for k, v in (extra or {}).items()})
    meta = {"format": "tim-bundle-1", "genotype_fingerprint": model.genotype.fingerprint()}
    save_file(tensors, str(path / WEIGHTS), metadata=meta)
    (path / GENOTYPE).write_text(model.genotype.to_json())
    (path / CARD).write_text(json.dumps({"name": path.name, **card}, indent=2) + "\n")
    return path


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, (f.metadata() or {})
    except Exception as e:  # safetensors raises several types for a corrupt header
        raise BundleError(f"{path}: not a readable safetensors file ({e})") from None


def load_bundle(model: str | Path) -> tuple[FusionNet, dict, dict[str, torch.Tensor]]:
    """Strictly load (FusionNet, card, other tensors such as task heads) from a bundle."""
    path = resolve_bundle(model)
    try:
        genotype = Genotype.from_json((path / GENOTYPE).read_text(), str(path / GENOTYPE))
    except FileNotFoundError:
        raise BundleError(f"{path}: missing {GENOTYPE}") from None
    except GenotypeError as e:
        raise BundleError(str(e)) from None
    try:
        card = json.loads((path / CARD).read_text())
    except FileNotFoundError:
        raise BundleError(f"{path}: missing {CARD}") from None
    except json.JSONDecodeError as e:
        raise BundleError(f"{path / CARD}: not valid JSON ({e})") from None
    tensors, meta = _read_weights(path / WEIGHTS)
    if meta.get("genotype_fingerprint") != genotype.fingerprint():
        raise BundleError(
            f"{path / GENOTYPE}: genotype does not match the one {WEIGHTS} was trained with "
            f"(fingerprint {genotype.fingerprint()[:12]} vs {meta.get('genotype_fingerprint', 'none')[:12]}); "
            "restore the bundle's own genotype.json"
        )
    net = FusionNet(genotype)
    expected = {k: v for k, v in net.state_dict().items() if v.is_floating_point()}
    fusion = {k[len("fusion.") :]: v for k, v in tensors.items() if k.startswith("fusion.")}
    for key in expected:
        if key not in fusion:
            raise BundleError(f"{path / WEIGHTS}: missing weight 'fusion.{key}' that genotype {genotype.name!r} needs")
    for key, value in fusion.items():
        if key not in expected:
            raise BundleError(f"{path / WEIGHTS}: unexpected weight 'fusion.{key}' for genotype {genotype.name!r}")
        if value.shape != expected[key].shape:
            raise BundleError(
                f"{path / WEIGHTS}: weight 'fusion.{key}' has shape {tuple(value.shape)}, "
                f"genotype {genotype.name!r} needs {tuple(expected[key].shape)}"
            )
    net.load_state_dict(fusion, strict=False)  # strictness checked above, integer buffers (BN counters) excluded
    extra = {k: v for k, v in tensors.items() if not k.startswith("fusion.")}
    return net, card, extra


def pick_device(device: str) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> torch.device, with a clear error when CUDA is absent."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
        dev = torch.device(device)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    raise ValueError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N")


@dataclass(frozen=True)
class Detection:
    """One detected object: class index and name from the bundle's card, score in [0, 1], box in pixels."""

    class_id: int
    label: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the fused image


@dataclass
class FusionResult:
    """Output of one fusion: the fused image (uint8, visible image's layout), task outputs, timings in ms."""

    fused: np.ndarray
    mask: np.ndarray | None = None  # (H, W) uint8 class ids, 255 = unlabeled (bundles with a segmentation head)
    detections: list[Detection] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def _check_image(img: np.ndarray, role: str) -> None:
    if not isinstance(img, np.ndarray):
        raise TypeError(f"{role} image must be a numpy array, got {type(img).__name__}")
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise InputError("bad_shape", f"{role} image must be (H, W) or (H, W, 3), got shape {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise InputError("empty_image", f"{role} image is empty (shape {img.shape})")


def _unit(img: np.ndarray, role: str, norm: str, value_range: tuple[float, float]) -> np.ndarray:
    try:
        return to_unit(img, norm, value_range)
    except ValueError as e:
        reason = "non_finite" if "NaN" in str(e) else "bad_pixel_type"
        raise InputError(reason, f"{role} image: {e}") from None


class Fuser:
    """Load a bundle once, then fuse (ir, vis) numpy pairs: `Fuser(model)(ir, vis) -> FusionResult`."""

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        device: str = "auto",
        half: bool = False,
        ir_norm: str = "percentile",
        ir_range: tuple[float, float] = (0.0, 65535.0),
        size_mismatch: str = "reject",
        threads: int | None = None,
        warmup: bool = True,
        score_threshold: float = 0.3,
        nms_iou: float = 0.5,
        backend: str = "torch",
    ):
        if size_mismatch not in SIZE_POLICIES:
            raise ValueError(f"unknown size_mismatch {size_mismatch!r}; valid: {', '.join(SIZE_POLICIES)}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        self.device = pick_device(device)
        if half and self.device.type != "cuda":
            raise ValueError("half=True needs a CUDA device; use half=False on CPU")
        if backend == "onnxruntime" and (half or self.device.type != "cpu"):
            raise ValueError("backend 'onnxruntime' runs float32 on CPU; use device 'cpu' or backend 'torch'")
        if threads:
            torch.set_num_threads(threads)
        self.net, self.card, self.extra = load_bundle(model)
        self.bundle = resolve_bundle(model)
        self.dtype = torch.float16 if half else torch.float32
        self.net = self.net.to(self.device, self.dtype).eval()
        if self.device.type == "cpu":  # oneDNN convolutions run faster channels-last (docs/performance.md)
            self.net = self.net.to(memory_format=torch.channels_last)
        self.backend = backend
        if backend == "onnxruntime":
            from .export import OnnxRuntimeNet

            self.net = OnnxRuntimeNet.for_bundle(self.bundle, threads)
        self.ir_norm, self.ir_range, self.size_mismatch = ir_norm, ir_range, size_mismatch
        self.heads = None  # task heads (detection / segmentation / enhancement) listed in card["heads"]
        if self.card.get("heads"):
            from .tasks.heads import HeadError, TaskHeads

            try:
                self.heads = TaskHeads(
                    self.card, self.extra, str(self.bundle / WEIGHTS), self.device, self.dtype, score_threshold, nms_iou
                )
            except HeadError as e:
                raise BundleError(str(e)) from None
        if warmup:
            self(np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8))

    def _prepare(self, ir: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        _check_image(ir, "infrared")
        _check_image(vis, "visible")
        ir_u = _unit(ir, "infrared", self.ir_norm, self.ir_range)
        if ir_u.ndim == 3:
            ir_u = luma(ir_u)
        vis_u = _unit(vis, "visible", "minmax", self.ir_range)
        ycc = rgb_to_ycbcr(vis_u) if vis_u.ndim == 3 else None
        vis_y = ycc[..., 0] if ycc is not None else vis_u
        if ir_u.shape != vis_y.shape:
            if self.size_mismatch == "reject":
                raise InputError(
                    "size_mismatch",
                    f"infrared {ir_u.shape[:2]} and visible {vis_y.shape[:2]} sizes differ; "
                    "register the cameras or set size_mismatch to resize_ir / resize_vis",
                )
            if self.size_mismatch == "resize_ir":
                ir_u = cv2.resize(ir_u, vis_y.shape[::-1], interpolation=cv2.INTER_LINEAR)
            else:
                size = ir_u.shape[::-1]
                vis_y = cv2.resize(vis_y, size, interpolation=cv2.INTER_LINEAR)
                ycc = cv2.resize(ycc, size, interpolation=cv2.INTER_LINEAR) if ycc is not None else None
        return ir_u, vis_y, ycc

    def fuse_luma(self, ir_u: np.ndarray, vis_y: np.ndarray) -> np.ndarray:
        """Run N_F on two float32 [0, 1] (H, W) planes; returns the fused luma in [0, 1]."""
        to = {"device": self.device, "dtype": self.dtype}
        with torch.inference_mode():
            a = torch.from_numpy(np.ascontiguousarray(ir_u))[None, None].to(**to)
            b = torch.from_numpy(np.ascontiguousarray(vis_y))[None, None].to(**to)
            y = self.net(a, b).clamp_(0.0, 1.0)
            return y[0, 0].float().cpu().numpy()

    def __call__(self, ir: np.ndarray, vis: np.ndarray) -> FusionResult:
        t0 = time.perf_counter()
        ir_u, vis_y, ycc = self._prepare(ir, vis)
        t1 = time.perf_counter()
        fused_y = self.fuse_luma(ir_u, vis_y)
        t2 = time.perf_counter()
        mask, detections = None, []
        if self.heads is not None:
            fused_y, mask, detections = self.heads(ir_u, vis_y, fused_y)
        t_tasks = time.perf_counter()
        if ycc is not None:
            ycc[..., 0] = fused_y
            fused = ycbcr_to_rgb(ycc)
        else:
            fused = fused_y
        out = (fused * 255.0 + 0.5).astype(np.uint8)
        t3 = time.perf_counter()
        timings = {"prepare": (t1 - t0) * 1e3, "model": (t2 - t1) * 1e3, "finish": (t3 - t_tasks) * 1e3}
        if self.heads is not None:
            timings["tasks"] = (t_tasks - t2) * 1e3
        return FusionResult(out, mask, detections, timings)
