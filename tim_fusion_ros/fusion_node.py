"""FusionNode: synchronized IR + VIS images in; fused image, segmentation and detections out.

Lifecycle: configure checks parameters and the bundle and creates topics; activate loads and warms up
the model and starts the inference thread; deactivate releases the model. `main()` is the plain entry
point and, with `autostart` (default), drives configure + activate itself.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from tim_core.runtime import BundleError, Fuser, pick_device

try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble names the module qos_event
    from rclpy.qos_event import SubscriptionEventCallbacks

from . import node_params
from .diagnostics import FusionDiagnostics
from .heap import keep_frame_buffers
from .image_codec import numpy_to_image
from .inputs import decode_pair
from .outputs import RELIABLE_5, TaskPublishers
from .params import APPLIES, LISTS, check, load_defaults, refuse_change
from .registration import NodeRegistration, file_problems
from .stats import DropCounter, RollingStats
from .sync import PairSynchronizer, stamp_to_ns
from .worker import InferenceWorker

CAMERAS = ("ir", "vis")


class FusionNode(LifecycleNode):
    """The tim_fusion_ros perception node (see README, ROS section, for topics and parameters)."""

    def __init__(self, **kwargs):
        super().__init__("fusion_node", **kwargs)
        self.declare_problems = node_params.declare(self, load_defaults())
        self.params = node_params.read(self)
        self.state_name = "unconfigured"  # unconfigured | inactive | active: which parameter changes apply
        self.active = False
        self.fuser: Fuser | None = None
        self.registration: NodeRegistration | None = None  # the IR -> VIS warp, made on activate
        self.tasks: TaskPublishers | None = None
        self.worker: InferenceWorker | None = None
        self.sync: PairSynchronizer | None = None
        self.stats, self.drops, self.diagnostics = RollingStats(), DropCounter(), FusionDiagnostics()
        self.camera_info: dict[str, CameraInfo] = {}
        self.frame_ids: dict[str, str] = {}
        self.input_topics: dict[str, str] = {}
        self.configured_at = self.last_pair = time.monotonic()
        self.pub_fused = self.pub_info = self.pub_debug = self.pub_diag = None  # made by on_configure
        self._subscriptions_made: list = []
        self._publishers_made: list = []
        self._diag_timer = None
        self._tasks_lock = threading.Lock()  # the inference thread publishes while a live change rebuilds tasks
        self.add_on_set_parameters_callback(self.parameters_callback)

    def problems(self, resolve: bool) -> list[str]:
        """Every configuration problem, from overrides, ranges and (with `resolve`) the bundle and device."""
        problems = self.declare_problems + check(self.params)
        if resolve:
            problems += file_problems(self.params)
            try:
                node_params.model_path(self.params.model)
            except BundleError as e:
                problems.append(str(e))
            if not any(text.startswith("device=") for text in problems):
                try:
                    pick_device(self.params.device)
                except ValueError as e:
                    problems.append(str(e))
        if problems:
            self.get_logger().error("configuration rejected: " + "; ".join(problems))
        return problems

    # ---- lifecycle -------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.params = p = node_params.read(self)
        if self.problems(resolve=True):
            return TransitionCallbackReturn.FAILURE
        self.sync = PairSynchronizer(p.sync_slop, p.sync_queue_size, p.clock_reset_threshold)
        self.pub_fused = self.create_publisher(Image, "fused/image", RELIABLE_5)
        self.pub_info = self.create_publisher(CameraInfo, "fused/camera_info", RELIABLE_5)
        self.pub_debug = self.create_publisher(Image, "debug/image", RELIABLE_5)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._publishers_made = [self.pub_fused, self.pub_info, self.pub_debug, self.pub_diag]
        compressed = p.input_transport == "compressed"
        events = SubscriptionEventCallbacks(incompatible_qos=self._incompatible_qos_callback)
        for camera in CAMERAS:
            image_sub = self.create_subscription(
                CompressedImage if compressed else Image,
                f"{camera}/image/compressed" if compressed else f"{camera}/image",
                lambda msg, c=camera: self.image_callback(c, msg),
                qos_profile_sensor_data,  # best effort: a late frame is worth less than the next one
                qos_overriding_options=QoSOverridingOptions.with_default_policies(),
                event_callbacks=events,
            )
            self.input_topics[camera] = image_sub.topic_name
            info_sub = self.create_subscription(CameraInfo, f"{camera}/camera_info",
                                                lambda msg, c=camera: self.camera_info.__setitem__(c, msg),
                                                qos_profile_sensor_data)
            self._subscriptions_made += [image_sub, info_sub]
        self._diag_timer = self.create_timer(p.diagnostic_period, self.diagnostics_callback)
        self.configured_at = time.monotonic()
        self.state_name = "inactive"
        self.get_logger().info(f"configured: model {p.model}, device {p.device}, slop {p.sync_slop} s")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.params = p = node_params.read(self)
        if self.problems(resolve=True):
            return TransitionCallbackReturn.FAILURE
        try:
            self.registration = NodeRegistration(p)
            self.fuser = Fuser(node_params.model_path(p.model), device=p.device, half=p.half,
                               ir_norm=p.ir_normalization, ir_range=tuple(p.ir_range), size_mismatch=p.size_mismatch,
                               threads=p.threads or None, warmup=True, score_threshold=p.score_threshold,
                               nms_iou=p.nms_iou, backend=p.backend, min_side=p.min_side, max_pixels=p.max_pixels)
        except (BundleError, ValueError, RuntimeError) as e:
            self.get_logger().error(f"activation failed: {e}")
            return TransitionCallbackReturn.FAILURE
        self.tasks = TaskPublishers(self, self.fuser, p)
        self.worker = InferenceWorker(self.sync.take, self._process, self.drops, self.get_logger(),
                                      shutting_down=lambda: not self.context.ok())
        self.worker.start()
        self.active = True
        self.state_name = "active"
        self.get_logger().info(f"active: {self.fuser.bundle} on {self.fuser.device}, backend {self.fuser.backend}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if not self.release():
            return TransitionCallbackReturn.FAILURE
        self.state_name = "inactive"
        return super().on_deactivate(state)

    def release(self) -> bool:
        """Stop the inference thread, then free the model (GPU memory included); False if the thread still runs."""
        self.active = False
        if self.worker is not None:
            if not self.worker.stop():
                return False  # the model and publishers stay: the thread may still be using them
            self.worker = None
        with self._tasks_lock:
            if self.tasks is not None:
                self.tasks.destroy()
            self.fuser, self.tasks = None, None
        if self.sync is not None:
            self.sync.reset()
        return True

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for sub in self._subscriptions_made:
            self.destroy_subscription(sub)
        for pub in self._publishers_made:
            self.destroy_publisher(pub)
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
        self._subscriptions_made, self._publishers_made, self._diag_timer = [], [], None
        self.state_name = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        released = self.release()
        self.state_name = "finalized"
        return TransitionCallbackReturn.SUCCESS if released else TransitionCallbackReturn.FAILURE

    # ---- parameters: live ones apply at once, the others are refused with the step that applies them ----------

    def parameters_callback(self, parameters) -> SetParametersResult:
        changes = {q.name: list(q.value) if q.name in LISTS else q.value
                   for q in parameters if q.name in APPLIES}  # not qos_overrides.*: rclpy makes those read-only
        reason = refuse_change(self.params, changes, self.state_name) if changes else None
        if not changes or reason is not None:
            return SetParametersResult(successful=reason is None, reason=reason or "")
        self.params = p = dataclasses.replace(self.params, **changes)
        if self.sync is not None:
            self.sync.set_slop(p.sync_slop)
            self.sync.set_clock_reset(p.clock_reset_threshold)
        if self._diag_timer is not None and "diagnostic_period" in changes:
            self._diag_timer.timer_period_ns = int(p.diagnostic_period * 1e9)
        if self.fuser is not None and self.fuser.heads is not None:
            self.fuser.heads.score_threshold, self.fuser.heads.nms_iou = p.score_threshold, p.nms_iou
        if self.fuser is not None and {"publish_detections", "publish_segmentation"} & set(changes):
            with self._tasks_lock:
                self.tasks.destroy()
                self.tasks = TaskPublishers(self, self.fuser, p)
        self.get_logger().info("parameters set: " + ", ".join(f"{k}={v!r}" for k, v in changes.items()))
        return SetParametersResult(successful=True)

    # ---- reception: cheap, never blocks on the model ------------------------------------------

    def image_callback(self, camera: str, msg) -> None:
        self.stats.tick(f"{camera}_in")
        self.frame_ids[camera] = msg.header.frame_id
        if not self.active:
            self.drops.add("inactive")  # configured but not activated: frames are not queued
            return
        resets = self.sync.clock_resets
        stamp = stamp_to_ns(msg.header.stamp)
        pair = self.sync.add_ir(stamp, msg) if camera == "ir" else self.sync.add_vis(stamp, msg)
        if self.sync.clock_resets != resets:
            who, jump = self.sync.last_clock_jump
            self.get_logger().warning(
                f"{who} clock jumped back {jump:.3f} s (more than clock_reset_threshold "
                f"{self.params.clock_reset_threshold} s): camera or bag restarted? pairing restarts from this frame")
        worker = self.worker
        if pair is not None and worker is not None:
            self.last_pair = time.monotonic()
            worker.wake()

    def _incompatible_qos_callback(self, info) -> None:
        self.get_logger().warning(
            f"incompatible QoS on an input (last policy {info.last_policy_kind}): the publisher must offer what "
            "the node requests; set qos_overrides.<topic>.subscription.reliability to match it"
        )

    # ---- inference thread: one pair, newest first (failures are dropped and counted by the worker) ----------

    def _process(self, pair) -> None:
        p = self.params  # one snapshot per pair: a live change applies from the next pair
        t0 = time.perf_counter()
        ir, vis = decode_pair(pair, p.input_transport, p.min_side, p.max_pixels)
        t1 = time.perf_counter()
        self.fuser.registration = self.registration.warp(self.camera_info)  # None, fixed, or from the latest K
        result = self.fuser(ir, vis)
        t2 = time.perf_counter()
        header = (pair.vis if p.reference_camera == "vis" else pair.ir).header
        listened = self.pub_fused.get_subscription_count() > 0  # nobody listening: no encode (a 1 MB copy), no send
        if listened:
            fused_msg = numpy_to_image(result.fused, "rgb8" if result.fused.ndim == 3 else "mono8", header)
        t3 = time.perf_counter()
        if listened:
            self.pub_fused.publish(fused_msg)
        info = self.camera_info.get(p.reference_camera)
        if info is not None and (info.height, info.width) == result.fused.shape[:2]:
            info.header = header
            self.pub_info.publish(info)
        with self._tasks_lock:
            self.tasks.publish(result, header, self.pub_debug, p.score_threshold)
        t4 = time.perf_counter()
        latency = (self.get_clock().now().nanoseconds - stamp_to_ns(header.stamp)) * 1e-6
        for stage, ms in (
            ("decode", (t1 - t0) * 1e3),
            ("fuse", result.timings["model"]),
            ("prepare_finish", result.timings["prepare"] + result.timings["finish"]),
            *((part, result.timings[part]) for part in ("normalise", "ycbcr", "to_uint8")),  # of prepare_finish
            ("tasks", result.timings.get("tasks", 0.0)),
            ("encode", (t3 - t2) * 1e3),
            ("publish", (t4 - t3) * 1e3),
            ("end_to_end", latency),
        ):
            self.stats.add(stage, ms)
        self.stats.tick("fused_out")
        refine_ms = self.registration.refine(ir, vis)  # registration_refine_every: after publishing, bounded
        if refine_ms is not None:
            self.stats.add("registration_refine", refine_ms)

    def diagnostics_callback(self) -> None:
        self.pub_diag.publish(self.diagnostics.report(self))


def main(args=None) -> None:
    """Plain entry point: with autostart, configure + activate or exit 1 with one message naming every problem."""
    keep_frame_buffers()  # the node owns this process: per-frame buffers from the heap, not fresh pages (heap.py)
    rclpy.init(args=args)
    node = None
    try:
        node = FusionNode()
        if node.params.autostart:
            started = (node.trigger_configure() == TransitionCallbackReturn.SUCCESS
                       and node.trigger_activate() == TransitionCallbackReturn.SUCCESS)
        else:
            started = not node.problems(resolve=False)
        if not started:
            raise SystemExit(1)
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.release()
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
