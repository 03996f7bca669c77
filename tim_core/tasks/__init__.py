"""Task networks N_T on the fused image (detection, segmentation, visual enhancement): the task registry.

Every task network reads the fused luma (N, 1, H, W) in [0, 1]; enhancement also reads both sources.
This module is what run-time loading needs (build a head from a card); losses, evaluation and labelled data
live in `tim_core.tasks.training`, which only trainers import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .detection import CenterNet
from .enhancement import EnhancementNet
from .segmentation import SegNet


@dataclass(frozen=True)
class Task:
    """One task: how to build its network and which card field lists its classes (None: no classes)."""

    name: str
    build: Callable[[int, int], nn.Module]  # (num_classes, width) -> network
    classes_key: str | None


REGISTRY: dict[str, Task] = {
    "detection": Task("detection", lambda n, w: CenterNet(n, w), "classes"),
    "segmentation": Task("segmentation", lambda n, w: SegNet(n, w), "segmentation_classes"),
    "enhancement": Task("enhancement", lambda n, w: EnhancementNet(w), None),
}
TASKS = tuple(REGISTRY)


def get_task(task: str) -> Task:
    if task not in REGISTRY:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    return REGISTRY[task]


def build_task_net(task: str, num_classes: int, width: int) -> nn.Module:
    """The task network of `task` (width: channels of the light encoders; 48 is TIM's enhancement width)."""
    return get_task(task).build(num_classes, width)
