"""package.xml as rosdep reads it: every key resolves on Humble, Jazzy and Kilted (lists in ../shared/ros), and the
declared dependencies are exactly what tim_core, tim_fusion_ros and the launch file import; Python packages
without a rosdep key are in requirements.txt and the README's distro set-up instead."""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET

import pytest
from conftest import ROOT

DISTROS = ("humble", "jazzy", "kilted")
SHARED_ROS = ROOT.parent / "shared" / "ros"
# import name -> rosdep key, for imports that are not ROS packages of the same name
ROSDEP_KEYS = {"numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml", "tqdm": "python3-tqdm",
               "torch": "python3-pytorch-pip", "onnxruntime": "python3-onnxruntime-pip",
               "rosbags": "python3-rosbags-pip"}
PIP_ONLY = {"safetensors": "safetensors", "onnx": "onnx", "faster_coco_eval": "faster-coco-eval"}  # -> distribution
# Optional engines, imported only when chosen (tim_core.backends raises BackendError naming `pip install X`): not
# dependencies, so neither package.xml nor requirements.txt lists them.
OPTIONAL = {"openvino"}
FIRST_PARTY = {"tim_core", "tim_fusion_ros"}


def package_dependencies(kinds: tuple[str, ...] = ("depend", "exec_depend", "build_depend", "buildtool_depend",
                                                   "test_depend", "build_export_depend")) -> set[str]:
    root = ET.parse(ROOT / "package.xml").getroot()
    return {el.text.strip() for kind in kinds for el in root.iter(kind)}


def third_party_imports() -> dict[str, str]:
    """Top-level module -> one file importing it, over the package sources and the launch file."""
    found: dict[str, str] = {}
    files = [*(ROOT / "tim_core").rglob("*.py"), *(ROOT / "tim_fusion_ros").rglob("*.py"),
             *(ROOT / "launch").glob("*.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_declared_dependencies_are_what_the_code_imports() -> None:
    imports = third_party_imports()
    needed = {ROSDEP_KEYS.get(name, name) for name in imports if name not in PIP_ONLY and name not in OPTIONAL}
    declared = package_dependencies(("depend", "exec_depend"))
    missing = {dep: next(f for n, f in imports.items() if ROSDEP_KEYS.get(n, n) == dep) for dep in needed - declared}
    assert not missing, f"imported but not in package.xml (dependency: importing file): {missing}"
    assert not declared - needed, f"declared in package.xml but never imported: {sorted(declared - needed)}"


def test_pip_only_dependencies_are_in_requirements_and_the_readme() -> None:
    imported = set(third_party_imports())
    requirements = {re.split(r"[<>=\[ ]", line)[0].lower()
                    for line in (ROOT / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")}
    readme = (ROOT / "README.md").read_text()
    ros_section = readme[readme.index("## The ROS 2 node"):].split("\n## ")[0]
    pip_lines = [line for line in ros_section.splitlines() if "pip install" in line]
    for module, distribution in PIP_ONLY.items():
        if module in imported:
            assert distribution in requirements, f"{distribution} (imported as {module}) missing in requirements.txt"
            assert any(distribution in line for line in pip_lines), f"README's distro set-up omits {distribution}"


def test_every_dependency_resolves_with_rosdep_on_every_distro() -> None:
    if not SHARED_ROS.is_dir():
        pytest.skip(f"{SHARED_ROS} not present (rosdep name lists; in CI and on dev machines)")
    keys = set((SHARED_ROS / "rosdep_keys.txt").read_text().split())
    unresolved = {}
    for distro in DISTROS:
        packages = set((SHARED_ROS / f"ros_packages_{distro}.txt").read_text().split())
        for dep in package_dependencies():
            if dep not in packages and dep not in keys:
                unresolved.setdefault(dep, []).append(distro)
    assert not unresolved, f"not a ROS package nor a rosdep key (rosdep install fails): {unresolved}"
