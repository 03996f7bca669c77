"""FusionParams, the checks and the live/activate/configure split, without a ROS graph."""

from __future__ import annotations

import dataclasses

import pytest

from tim_fusion_ros.params import APPLIES, DESCRIPTIONS, NAMES, FusionParams, check, load_defaults, refuse_change


@pytest.fixture
def defaults() -> FusionParams:
    return FusionParams(**load_defaults())


def test_fusion_yaml_and_the_dataclass_hold_the_same_parameters(defaults: FusionParams) -> None:
    assert set(load_defaults()) == set(NAMES) == set(APPLIES) == set(DESCRIPTIONS)
    assert check(defaults) == []


def test_check_names_every_problem(defaults: FusionParams) -> None:
    bad = dataclasses.replace(defaults, threads=-3, device="tpu", reference_camera="left", ir_range=[5.0, 1.0])
    problems = check(bad)
    assert len(problems) == 4
    assert any("threads=-3 is outside [0, 256]" in p for p in problems)


@pytest.mark.parametrize("state, name, value, refused", [
    ("active", "sync_slop", 0.05, None),
    ("active", "model", "other", "deactivate"),
    ("inactive", "model", "other", None),
    ("inactive", "input_transport", "compressed", "configure"),
    ("unconfigured", "input_transport", "compressed", None),
    ("unconfigured", "autostart", False, "read-only"),
    ("active", "nms_iou", 3.0, "nms_iou=3.0 is outside"),
])
def test_refuse_change(defaults: FusionParams, state: str, name: str, value, refused: str | None) -> None:
    reason = refuse_change(defaults, {name: value}, state)
    assert reason is None if refused is None else refused in reason
