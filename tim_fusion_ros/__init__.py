"""tim_fusion_ros: the ROS 2 adapter over tim_core (node, image codec, sync, bag tools)."""
