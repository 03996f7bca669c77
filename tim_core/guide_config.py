"""The configuration of `tim guide` (tim_core.guided): every field with its default, and the checks before a run."""

from __future__ import annotations

from dataclasses import dataclass, field

from .tasks import TASKS
from .tasks.augment import Augment

COUPLINGS = ("frozen", "alternating", "bilevel")
INPUTS = ("fused", "ir", "vis")


@dataclass
class GuideConfig:
    task: str = "detection"  # detection | segmentation | enhancement (also --task on the command line)
    coupling: str = "alternating"  # frozen | alternating | bilevel (see the module docstring)
    input: str = "fused"  # what N_T sees: fused, or ir / vis for single-camera baselines (coupling frozen)
    hypergrad: str = "ias"  # bilevel only: ias | neumann | darts1
    lam: float = 0.1  # weight of the task loss in the fusion network's objective
    init: str = ""  # bundle: fusion weights, and the task head too when it carries one for this task
    genotype: str = "tim_light"  # fusion genotype when init is empty
    data: list = field(default_factory=lambda: ["../shared/data/msrs"])
    labels: str = "labels/fusion"  # detection labels under each data root: YOLO .txt or VOC .xml per image
    classes: list = field(default_factory=lambda: ["person", "bicycle", "car"])  # detection classes
    seg_classes: list = field(default_factory=list)  # segmentation class names (empty: the 9 MSRS classes)
    synthetic: int = 0  # > 0: use this many generated scenes (tim_core.synthetic) instead of data
    height: int = 240  # task input size: images (and boxes) are resized to it; MSRS 640x480 -> half
    width: int = 320
    crop: int = 128  # random training crops of the task-size images (0: whole images)
    scale_min: float = 1.0  # random zoom of each training image, boxes follow (0.5-1.5: multi-scale; 1: off)
    scale_max: float = 1.0
    mosaic: float = 0.0  # probability that a training sample is a 2x2 mosaic of four training images
    jitter: float = 0.0  # per-camera brightness/contrast/gamma strength, IR and VIS drawn apart (0: off; 0.3)
    min_box: float = 2.0  # augmented boxes under this many pixels on a side after clipping are dropped
    val_fraction: float = 0.2  # name-hash validation split, never trained on
    out: str = "runs/guide"
    export: str = ""  # final bundle (default OUT/bundle); input ir|vis runs export none
    steps: int = 800
    batch: int = 8
    lr: float = 2e-3  # task network, AdamW
    fusion_lr: float = 2e-4  # fusion network: small, it starts from a trained fusion
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    ema: float = 0.0  # task network weight EMA decay (e.g. 0.999): validation and export use the average; 0: off
    head_width: int = 24  # channels of the light task encoders (enhancement: 48 is TIM's)
    dice: float = 0.0  # segmentation: weight of the Dice term next to cross-entropy
    w_intensity: float = 1.0
    w_gradient: float = 10.0
    w_ssim: float = 1.0
    neumann_terms: int = 5
    neumann_lr: float = 0.01
    ckpt_every: int = 50
    log_every: int = 10
    val_every: int = 0  # task validation every N steps (0: at the end only)
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    eval_fusion: bool = False  # fusion metrics of the final N_F on the validation split, into the card
    eval_limit: int = 0

    BOUNDS = {"crop": (0, 8192, False), "scale_min": (0.0, 8.0, True), "scale_max": (0.0, 8.0, True),
              "mosaic": (0.0, 1.0, False), "jitter": (0.0, 2.0, False), "min_box": (0.0, 1000.0, False)}

    def augment(self) -> Augment:
        """The training augmentation these fields describe."""
        return Augment((self.scale_min, self.scale_max), self.mosaic, self.jitter, self.min_box)


def check_config(cfg: GuideConfig) -> None:
    """Names and combinations the dataclass cannot check by type; ValueError names the field and the fix."""
    for name, value, valid in (
        ("task", cfg.task, TASKS),
        ("coupling", cfg.coupling, COUPLINGS),
        ("input", cfg.input, INPUTS),
        ("hypergrad", cfg.hypergrad, ("ias", "neumann", "darts1")),
    ):
        if value not in valid:
            raise ValueError(f"{name} {value!r} is unknown; valid: {', '.join(valid)}")
    if cfg.input != "fused" and cfg.coupling != "frozen":
        raise ValueError(f"input {cfg.input!r} has no fusion network to guide; use coupling frozen")
    if cfg.scale_min > cfg.scale_max:
        raise ValueError(f"scale_min {cfg.scale_min} is above scale_max {cfg.scale_max}; give scale_min <= scale_max "
                         "(both 1.0: no zoom)")
