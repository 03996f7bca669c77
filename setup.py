"""ament_python package tim_fusion_ros: installs tim_core and tim_fusion_ros plus the ROS data files.

`colcon build` uses it on a ROS 2 distro; `pip install .` uses it in a plain virtualenv (the data
files make the package visible to ament_index_python with AMENT_PREFIX_PATH set to the venv).
"""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

package_name = "tim_fusion_ros"


def model_files():
    """One data_files entry per shipped model bundle folder."""
    entries = []
    for folder in sorted(p for p in Path("models").iterdir() if p.is_dir()) if Path("models").is_dir() else []:
        files = sorted(str(f) for f in folder.iterdir() if f.is_file())
        if files:
            entries.append((f"share/{package_name}/models/{folder.name}", files))
    return entries


setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["tim_core", "tim_core.*", "tim_fusion_ros", "tim_fusion_ros.*"]),
    package_data={"tim_core": ["genotypes/*.json", "configs/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", glob("launch/*.launch.py")),
        (f"share/{package_name}/config", glob("config/*.yaml")),
        *model_files(),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="tim-fusion maintainers",
    maintainer_email="maintainers@tim-fusion.dev",
    description="TIM infrared-visible image fusion: PyTorch library and ROS 2 perception node",
    license="MIT",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "tim = tim_core.cli:main",
            "tim-bag = tim_fusion_ros.bag_cli:main",
            "fusion_node = tim_fusion_ros.fusion_node:main",
        ],
    },
)
