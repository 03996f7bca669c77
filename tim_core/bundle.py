"""Model bundles on disk: finding, validating, loading and atomically writing them; device choice; result types.

A bundle is a folder: `model.safetensors` (weights, keys prefixed by part, e.g. `fusion.`, and `inner_lr.` for the
learned rates of a Meta-SGD initialization, whose card's `adaptation.optimizer` is metasgd), `genotype.json`
and `card.json` (what the model is, how it was made, what it measured). Loading is strict: a missing,
unexpected or mis-shaped key, a weight that is not a finite float, weights trained for another genotype, JSON of
the wrong shape or size, or card fields outside their bounds are errors naming the file, the field and the fix.
Writing is atomic: the bundle is assembled in a temporary folder beside the target and renamed into place, so a
kill leaves either the old bundle or the new one, never a mix.

Trainers, task heads, export and `Fuser` import this module; it imports no inference or training code.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .files import write_text_atomic
from .genotype import Genotype, GenotypeError
from .inner import RATES_PREFIX
from .network import FusionNet

WEIGHTS, GENOTYPE, CARD = "model.safetensors", "genotype.json", "card.json"
DEFAULT_MODEL = "tim_ivif_compact"  # the node's and the commands' default (docs/quality_report.md)
MAX_JSON_BYTES = 1 << 20  # genotype.json and card.json: a few kB in practice
MAX_WEIGHTS_BYTES = 512 << 20
# Card fields that size tensors at load time, with their bounds (a card is data from disk: never trust it).
CARD_BOUNDS = {"head_width": (1, 512), "task_input": (8, 4096), "classes": (1, 1000)}


class BundleError(ValueError):
    """A model bundle that cannot be used; the message names the file or key and the fix."""


class InputError(ValueError):
    """An input pair that cannot be fused; `reason` is a short counter name (e.g. size_mismatch).

    Arguments in the order of tim_fusion_ros.image_codec.ImageCodecError: the message, then the reason.
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


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


def models_dirs() -> list[Path]:
    """Where bundles are looked up by name: $TIM_MODELS_DIR, the source checkout, the installed share/."""
    dirs = [Path(os.environ["TIM_MODELS_DIR"])] if os.environ.get("TIM_MODELS_DIR") else []
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "package.xml").is_file():  # a source checkout (an installed package has no models/ there)
        dirs.append(checkout / "models")
    prefixes = [sys.prefix, *os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)]
    for prefix in prefixes:  # installed packages: pip's share/ and every colcon/ament prefix
        share = Path(prefix) / "share" / "tim_fusion_ros" / "models"
        if prefix and share.is_dir() and share not in dirs:
            dirs.append(share)
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
            "`tim train --config tim_core/configs/quality/compact_v7.yaml`, then compact_v8.yaml (their teacher is "
            "the base's sixth link, base_v6: README, 'Measured: the compact default'), or pass --model PATH to a bundle"
        )
    raise BundleError(f"model {str(model)!r} not found: not a bundle folder and not a name in {where}")


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


# ---------------------------------------------------------------------------------------------- reading


def read_small_file(path: Path, limit: int, what: str) -> bytes:
    """Bytes of a regular file of at most `limit` bytes (no directories, devices, FIFOs or huge files)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise BundleError(f"{path.parent}: missing {path.name}") from None
    except OSError as e:
        raise BundleError(f"{path}: cannot read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise BundleError(f"{path}: not a regular file; {what} must be a plain file")
    if st.st_size > limit:
        raise BundleError(f"{path}: {st.st_size} bytes, more than the {limit}-byte limit for {what}")
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise BundleError(f"{path}: more than the {limit}-byte limit for {what}")
    return data


def read_json_object(path: Path, what: str) -> dict:
    """A JSON object from a small regular file; any other shape is a BundleError naming the file."""
    raw = read_small_file(path, MAX_JSON_BYTES, what)
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BundleError(f"{path}: not UTF-8 text; {what} must be a JSON object") from None
    except json.JSONDecodeError as e:
        raise BundleError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise BundleError(f"{path}: JSON nested too deeply; {what} must be a flat JSON object") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def check_card(card: dict, source: str) -> None:
    """Bounds on the card fields that size tensors (head_width, task_input, classes)."""
    def bad(msg: str) -> BundleError:
        return BundleError(f"{source}: {msg}")

    heads = card.get("heads", [])
    if not isinstance(heads, list) or not all(isinstance(h, str) for h in heads):
        raise bad(f"'heads' must be a list of names, got {heads!r}")
    lo, hi = CARD_BOUNDS["head_width"]
    widths = card.get("head_width", {})
    if not isinstance(widths, dict):
        raise bad(f"'head_width' must be an object {{head: width}}, got {widths!r}")
    for k, v in widths.items():
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise bad(f"head_width[{k!r}] = {v!r} must be an integer in [{lo}, {hi}]")
    if "task_input" in card:
        size = card["task_input"]
        lo, hi = CARD_BOUNDS["task_input"]
        if (not isinstance(size, list) or len(size) != 2
                or not all(isinstance(s, int) and not isinstance(s, bool) and lo <= s <= hi for s in size)):
            raise bad(f"task_input = {size!r} must be [H, W] with integers in [{lo}, {hi}]")
    lo, hi = CARD_BOUNDS["classes"]
    for key in ("classes", "segmentation_classes"):
        if key in card:
            names = card[key]
            if not isinstance(names, list) or not lo <= len(names) <= hi or not all(isinstance(n, str) for n in names):
                raise bad(f"{key} must be a list of {lo} to {hi} names, got {str(names)[:80]}")


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise BundleError(f"{path}: missing or not a regular file; a bundle needs its {WEIGHTS}")
    if path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise BundleError(f"{path}: larger than the {MAX_WEIGHTS_BYTES >> 20} MB limit for model weights")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, (f.metadata() or {})
    except Exception as e:  # safetensors raises several types for a corrupt header
        raise BundleError(f"{path}: not a readable safetensors file ({e})") from None
    for key, value in tensors.items():
        if not value.is_floating_point():
            raise BundleError(f"{path}: weight {key!r} has dtype {value.dtype}; bundle weights must be floating point")
        if not bool(torch.isfinite(value).all()):
            raise BundleError(f"{path}: weight {key!r} holds NaN or infinite values; the model is broken, retrain it")
    return tensors, meta


def load_bundle(model: str | Path) -> tuple[FusionNet, dict, dict[str, torch.Tensor]]:
    """Strictly load (FusionNet, card, other tensors such as task heads) from a bundle."""
    path = resolve_bundle(model)
    try:
        genotype = Genotype.from_dict(read_json_object(path / GENOTYPE, "genotype.json"), str(path / GENOTYPE))
    except GenotypeError as e:
        raise BundleError(str(e)) from None
    card = read_json_object(path / CARD, "card.json")
    check_card(card, str(path / CARD))
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
    extra = {k: v for k, v in tensors.items() if not k.startswith("fusion.")}
    listed = card.get("heads", [])
    rates = isinstance(card.get("adaptation"), dict) and card["adaptation"].get("optimizer") == "metasgd"
    for key in extra:
        group = key.split(".", 1)[0]
        if group == RATES_PREFIX and rates:
            continue  # Meta-SGD's learned inner rates: `tim adapt` checks them against the parameters
        if group not in listed:
            raise BundleError(f"{path / WEIGHTS}: unexpected tensor {key!r}: it belongs to no head in card['heads'] "
                              f"= {listed}; remove it or list its head")
    net.load_state_dict(fusion, strict=False)  # strictness checked above, integer buffers (BN counters) excluded
    return net, card, extra


# ---------------------------------------------------------------------------------------------- writing


def write_json_atomic(path: Path, data: object) -> None:
    """JSON to a temporary file beside `path`, then rename: readers see the old or the new file, never half."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def save_bundle(path: str | Path, model: FusionNet, card: dict, extra: dict[str, torch.Tensor] | None = None) -> Path:
    """Write weights (+ genotype fingerprint), genotype JSON and card atomically; returns the bundle folder.

    The files are written into a temporary folder beside `path`, which then replaces `path` by renames; an
    existing folder at `path` must be a bundle (holding model.safetensors), anything else is refused.
    """
    path = Path(path)
    if path.exists() and not (path / WEIGHTS).is_file():
        if not path.is_dir() or any(path.iterdir()):
            raise BundleError(f"{path}: exists and is not a model bundle; refusing to replace it (choose another "
                              "export path)")
    tensors = {
        f"fusion.{k}": v.detach().cpu().contiguous().float()
        for k, v in model.state_dict().items()
        if v.is_floating_point()
    }
    tensors.update({k: v.detach().cpu().contiguous() for k, v in (extra or {}).items()})
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise BundleError(f"{path}: weight {key!r} is NaN or infinite (training diverged); nothing written")
    meta = {"format": "tim-bundle-1", "genotype_fingerprint": model.genotype.fingerprint()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    old = path.with_name(f".{path.name}.{os.getpid()}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(tensors, str(tmp / WEIGHTS), metadata=meta)
    (tmp / GENOTYPE).write_text(model.genotype.to_json())
    (tmp / CARD).write_text(json.dumps(_json_safe({"name": path.name, **card}), indent=2) + "\n")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def card_lineage(init_card: dict) -> list[str]:
    """The commands from scratch that made a bundle: its card's lineage, or its one command, or none."""
    return list(init_card.get("lineage") or ([init_card["command"]] if init_card.get("command") else []))


def lineage_after(init: str, command: str) -> list[str]:
    """Every command from scratch to a bundle made by `command` from the bundle `init` ("" for none); reads only
    the init bundle's card."""
    return (card_lineage(read_json_object(resolve_bundle(init) / CARD, "card.json")) if init else []) + [command]


def update_card(bundle: str | Path, **fields: object) -> dict:
    """Set card fields of an existing bundle, atomically; returns the new card."""
    path = Path(bundle) / CARD
    card = read_json_object(path, "card.json")
    card.update(fields)
    write_json_atomic(path, _json_safe(card))
    return card


def _json_safe(obj: object) -> object:
    """NaN/inf (e.g. a metric of a blank image) as null, so cards stay strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj
