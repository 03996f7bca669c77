"""The node's task outputs: detections, segmentation mask/colour/label_info, and the on-demand debug image."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from .image_codec import numpy_to_image
from .overlay import blend_mask, colorize, draw_detections
from .params import FusionParams

RELIABLE_5 = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def detection_array(detections, header):
    """tim_core Detections -> vision_msgs/Detection2DArray (center + size in pixels, class_id as the label)."""
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

    out = Detection2DArray(header=header)
    for det in detections:
        x1, y1, x2, y2 = det.box
        d = Detection2D(header=header)
        d.bbox.center.position.x, d.bbox.center.position.y = (x1 + x2) / 2.0, (y1 + y2) / 2.0
        d.bbox.size_x, d.bbox.size_y = float(x2 - x1), float(y2 - y1)
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id, hyp.hypothesis.score = det.label, float(det.score)
        d.results.append(hyp)
        out.detections.append(d)
    return out


class TaskPublishers:
    """Publishers for the bundle's task heads; created only for heads the bundle has and the parameters enable
    (a change of publish_* builds a new TaskPublishers)."""

    def __init__(self, node, fuser, params: FusionParams):
        self.node = node
        heads = set(fuser.card.get("heads", []))
        self.detect = "detection" in heads and params.publish_detections
        self.segment = "segmentation" in heads and params.publish_segmentation
        self.pubs = []
        if self.detect:
            from vision_msgs.msg import Detection2DArray
            self.pub_det = node.create_publisher(Detection2DArray, "detections", RELIABLE_5)
            self.pubs.append(self.pub_det)
        if self.segment:
            from sensor_msgs.msg import Image
            from vision_msgs.msg import LabelInfo, VisionClass
            self.pub_mask = node.create_publisher(Image, "segmentation/mask", RELIABLE_5)
            self.pub_color = node.create_publisher(Image, "segmentation/color", RELIABLE_5)
            self.pub_labels = node.create_publisher(LabelInfo, "segmentation/label_info", LATCHED)
            self.pubs += [self.pub_mask, self.pub_color, self.pub_labels]
            classes = fuser.card.get("segmentation_classes", [])
            self.pub_labels.publish(LabelInfo(class_map=[VisionClass(class_id=i, class_name=n)
                                                         for i, n in enumerate(classes)]))

    def publish(self, result, header, pub_debug, score_threshold: float) -> None:
        dets = [d for d in result.detections if d.score >= score_threshold]
        if self.detect:
            self.pub_det.publish(detection_array(dets, header))
        if self.segment and result.mask is not None:  # images are encoded only for topics someone subscribes to
            if self.pub_mask.get_subscription_count() > 0:
                self.pub_mask.publish(numpy_to_image(result.mask, "mono8", header))
            if self.pub_color.get_subscription_count() > 0:
                self.pub_color.publish(numpy_to_image(colorize(result.mask), "rgb8", header))
        if pub_debug.get_subscription_count() > 0:  # the overlay is drawn only while someone watches
            img = blend_mask(result.fused, result.mask) if result.mask is not None else result.fused
            pub_debug.publish(numpy_to_image(draw_detections(img, dets), "rgb8", header))

    def destroy(self) -> None:
        for pub in self.pubs:
            self.node.destroy_publisher(pub)
        self.pubs = []
