"""tim_core: TIM infrared-visible image fusion (Liu et al., TPAMI 2024) re-implemented in PyTorch.

No ROS import anywhere in this package: the ROS node in ``tim_fusion_ros`` is a thin adapter.
"""

__version__ = "0.1.0"
