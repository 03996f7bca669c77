"""Declaring the node's parameters on a ROS node and reading them back as FusionParams.

Declaration never raises: an override of the wrong type is noted as a problem and the default declared instead,
and ranges are attached to a descriptor only once the value is inside them, so every configuration problem of
every source (params file, launch argument, `--ros-args -p`) is gathered into one message by the node.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

from tim_core.runtime import WEIGHTS, BundleError, resolve_bundle

from .params import APPLIES, APPLY_NOTES, DESCRIPTIONS, LISTS, RANGES, FusionParams


def descriptor(name: str, value, with_range: bool = True) -> ParameterDescriptor:
    """Description (with when a change applies), range and read-only flag, as `ros2 param describe` shows them."""
    applies = APPLIES.get(name, "live")
    desc = ParameterDescriptor(description=f"{DESCRIPTIONS.get(name, '')} {APPLY_NOTES[applies]}",
                               read_only=applies == "start")
    if with_range and name in RANGES:
        low, high = RANGES[name]
        if isinstance(value, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high))]
        else:
            desc.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
    return desc


def declare(node, defaults: dict) -> list[str]:
    """Declare every parameter of `defaults` on `node`; returns the overrides that could not be applied."""
    problems = []
    for name, default in defaults.items():
        if node.has_parameter(name):  # use_sim_time is declared by rclpy itself
            continue
        try:
            value = node.declare_parameter(name, default, descriptor(name, default, with_range=False)).value
        except (InvalidParameterTypeException, InvalidParameterValueException) as e:
            hint = " (write floating-point values with a decimal point, e.g. 1.0)" if isinstance(default, float) else ""
            problems.append(f"{str(e).removesuffix(f': {name}')}{hint}")
            value = node.declare_parameter(name, default, descriptor(name, default, False), ignore_override=True).value
        if name in RANGES and RANGES[name][0] <= value <= RANGES[name][1]:
            ranged = descriptor(name, default)
            ranged.type = node.describe_parameter(name).type
            node.set_descriptor(name, ranged)
    return problems


def read(node) -> FusionParams:
    """The node's current parameter values as a FusionParams."""
    values = {f.name: node.get_parameter(f.name).value for f in dataclasses.fields(FusionParams)}
    for name in LISTS:
        values[name] = [float(v) for v in values[name]]
    return FusionParams(**values)


def model_path(model: str) -> Path:
    """A bundle folder from a path or a shipped name; names are also looked up in this package's ament share,
    where `colcon build` installs the shipped models on a ROS 2 distro."""
    try:
        return resolve_bundle(model)
    except BundleError as error:
        try:
            shipped = Path(get_package_share_directory("tim_fusion_ros")) / "models" / model
        except (PackageNotFoundError, ValueError):  # not installed through ament: tim_core's message stands
            shipped = None
        if shipped is None or Path(model).name != model or str(shipped.parent) in str(error):
            raise  # a path, or a share tim_core already searched
        if (shipped / WEIGHTS).is_file():
            return shipped
        raise BundleError(f"{error}; nor in this package's share {shipped.parent}") from None
