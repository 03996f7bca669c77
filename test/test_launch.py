"""launch/fusion.launch.py: compiles; with a FAKE launch runtime (launch/launch_ros cannot be installed without a ROS
distro) every argument it forwards is a parameter of config/fusion.yaml that the node declares, and the command line
it describes starts the node, which answers on the remapped topics over real DDS."""

from __future__ import annotations

import importlib.util
import py_compile
import sys
import types

import pytest
import yaml
from conftest import ROOT

LAUNCH = ROOT / "launch" / "fusion.launch.py"
ARGS = {"namespace", "params_file", "ir_topic", "vis_topic", "use_sim_time", "device", "autostart", "respawn",
        "respawn_delay"}


def test_launch_file_compiles() -> None:
    py_compile.compile(str(LAUNCH), doraise=True)


class _Recorder:
    """Stands in for a launch action or substitution: remembers its arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _Shutdown(_Recorder):
    """launch.actions.Shutdown: ends the whole launch when executed."""


class _LaunchConfiguration(_Recorder):
    values: dict[str, str] = {}

    def perform(self, context) -> str:
        return self.values[self.args[0]]


@pytest.fixture
def fake_launch_runtime(monkeypatch):
    modules = {
        "launch": {"LaunchDescription": lambda actions: actions},
        "launch.actions": {"DeclareLaunchArgument": _Recorder, "OpaqueFunction": _Recorder, "Shutdown": _Shutdown},
        "launch.substitutions": {"LaunchConfiguration": _LaunchConfiguration},
        "launch_ros": {},
        "launch_ros.actions": {"Node": _Recorder},
        "launch_ros.substitutions": {"FindPackageShare": _Recorder},
    }
    for name, attrs in modules.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("fusion_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _node_action(module, **values):
    actions = module.generate_launch_description()
    declared = {a.args[0] for a in actions if "function" not in a.kwargs}
    assert declared == ARGS
    _LaunchConfiguration.values = {"namespace": "", "params_file": "p.yaml", "ir_topic": "ir/image",
                                   "vis_topic": "vis/image", "use_sim_time": "false", "device": "", "autostart": "",
                                   "respawn": "false", "respawn_delay": "2.0", **values}
    opaque = next(a for a in actions if "function" in a.kwargs)
    (node,) = opaque.kwargs["function"](None)
    return node.kwargs


def test_launch_with_fake_runtime_forwards_only_declared_parameters(fake_launch_runtime) -> None:
    defaults = yaml.safe_load((ROOT / "config" / "fusion.yaml").read_text())["/**"]["ros__parameters"]
    node = _node_action(fake_launch_runtime)
    assert node["executable"] == "fusion_node" and node["package"] == "tim_fusion_ros"
    params_file, overrides = node["parameters"]
    assert overrides == {"use_sim_time": False}  # device/autostart not given: the params file decides
    node = _node_action(fake_launch_runtime, device="cuda:0", autostart="false", use_sim_time="true",
                        ir_topic="/cam/ir", vis_topic="/cam/vis")
    overrides = node["parameters"][1]
    assert overrides == {"use_sim_time": True, "device": "cuda:0", "autostart": False}
    assert set(overrides) <= set(defaults), "the launch file passes a parameter fusion.yaml does not define"
    remaps = {a: b.args[0] for a, b in node["remappings"]}
    assert remaps == {"ir/image": "ir_topic", "vis/image": "vis_topic"}
    source = LAUNCH.read_text()
    for name, value in defaults.items():  # defaults are never restated in the launch file
        assert f'"{name}", default_value' not in source or name in ARGS


def test_node_exit_ends_the_launch_unless_respawn(fake_launch_runtime) -> None:
    node = _node_action(fake_launch_runtime)
    assert isinstance(node["on_exit"], _Shutdown), "the node's exit must end the launch (on_exit=Shutdown())"
    assert "respawn" not in node
    node = _node_action(fake_launch_runtime, respawn="True", respawn_delay="5")
    assert node["respawn"] is True and node["respawn_delay"] == 5.0
    assert "on_exit" not in node, "Shutdown on exit would end the launch a respawn is meant to keep alive"


def test_node_declares_every_fusion_yaml_parameter() -> None:
    rclpy = pytest.importorskip("rclpy", reason="rclpy not installed; run `make test`")
    from rosgraph import DOMAIN_ID

    from tim_fusion_ros.fusion_node import FusionNode

    defaults = yaml.safe_load((ROOT / "config" / "fusion.yaml").read_text())["/**"]["ros__parameters"]
    rclpy.init(domain_id=DOMAIN_ID)
    try:
        node = FusionNode()
        for name, value in defaults.items():
            assert node.has_parameter(name), name
            assert node.get_parameter(name).value == value, name
        assert node.describe_parameters(["sync_slop"])[0].floating_point_range[0].to_value == 10.0
        for desc in node.describe_parameters([n for n in defaults if n != "use_sim_time"]):
            assert any(tag in desc.description for tag in ("[live", "[applies on activate", "[applies on configure",
                                                            "[read-only")), (desc.name, desc.description)
            assert desc.read_only == (desc.name == "autostart"), desc.name
        assert "[live" in node.describe_parameters(["sync_slop"])[0].description
        assert "deactivate" in node.describe_parameters(["model"])[0].description
        node.destroy_node()
    finally:
        rclpy.shutdown()


def test_command_line_from_launch_starts_the_node(tmp_path, tiny_bundle, fake_launch_runtime) -> None:
    rclpy = pytest.importorskip("rclpy", reason="rclpy not installed; run `make test`")
    from rosgraph import DOMAIN_ID, Probe, start_node, stop_node

    node = _node_action(fake_launch_runtime, namespace="/robot", ir_topic="/robot/thermal/image_raw",
                        vis_topic="/robot/color/image_raw", device="cpu")
    ros_args = ["-r", f"__ns:={_LaunchConfiguration.values['namespace']}"]
    for src, dst in node["remappings"]:
        ros_args += ["-r", f"{src}:={_LaunchConfiguration.values[dst.args[0]]}"]
    for key, value in node["parameters"][1].items():
        ros_args += ["-p", f"{key}:={str(value).lower() if isinstance(value, bool) else value}"]
    proc = start_node(tmp_path, *ros_args, "-p", f"model:={tiny_bundle}")
    rclpy.init(domain_id=DOMAIN_ID)
    try:
        probe = Probe(None, "/robot", ir_topic="thermal/image_raw", vis_topic="color/image_raw")
        probe.wait_matched()
        fused = probe.good_pair_answered()
        assert fused.header.frame_id == "vis_cam"
    finally:
        rclpy.shutdown()
        stop_node(proc)
