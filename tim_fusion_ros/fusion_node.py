"""FusionNode: synchronized IR + VIS images in; fused image, segmentation and detections out.

Lifecycle: configure checks parameters and the bundle and creates topics; activate loads and warms up
the model and starts the inference thread; deactivate releases the model. `main()` is the plain entry
point and, with `autostart` (default), drives configure + activate itself.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy._rclpy_pybind11 import RCLError
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from tim_core.runtime import BundleError, Fuser, InputError, pick_device, resolve_bundle

from .image_codec import ImageCodecError, compressed_to_numpy, image_to_numpy, numpy_to_image
from .outputs import RELIABLE_5, TaskPublishers
from .params import DESCRIPTIONS, RANGES, check, load_defaults
from .stats import RollingStats
from .sync import PairSynchronizer, stamp_to_ns


class FusionNode(LifecycleNode):
    """The tim_fusion_ros perception node (see README, ROS section, for topics and parameters)."""

    def __init__(self, **kwargs):
        super().__init__("fusion_node", **kwargs)
        self.defaults = load_defaults()
        for name, value in self.defaults.items():
            if not self.has_parameter(name):  # use_sim_time is declared by rclpy itself
                self.declare_parameter(name, value, self._descriptor(name, value))
        self.fuser: Fuser | None = None
        self.active = False
        self.stats = RollingStats()
        self.drops: Counter[str] = Counter()
        self.camera_info: dict[str, CameraInfo] = {}
        self._wake, self._stop = threading.Event(), threading.Event()
        self._worker: threading.Thread | None = None
        self._entities: list = []
        self.tasks: TaskPublishers | None = None
        self._last_pair = time.monotonic()

    @staticmethod
    def _descriptor(name: str, value) -> ParameterDescriptor:
        desc = ParameterDescriptor(description=DESCRIPTIONS.get(name, ""))
        if name in RANGES:
            low, high = RANGES[name]
            if isinstance(value, float):
                desc.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high))]
            else:
                desc.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
        return desc

    # ---- lifecycle -------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = {name: self.get_parameter(name).value for name in self.defaults}
        problems = check(p)
        try:
            resolve_bundle(p["model"])
            pick_device(p["device"])
        except (BundleError, ValueError) as e:
            problems.append(str(e))
        if problems:
            self.get_logger().error("configuration rejected: " + "; ".join(problems))
            return TransitionCallbackReturn.FAILURE
        self.p = p
        self.sync = PairSynchronizer(p["sync_slop"], p["sync_queue_size"])
        self.pub_fused = self.create_publisher(Image, "fused/image", RELIABLE_5)
        self.pub_info = self.create_publisher(CameraInfo, "fused/camera_info", RELIABLE_5)
        self.pub_debug = self.create_publisher(Image, "debug/image", RELIABLE_5)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        compressed = p["input_transport"] == "compressed"
        events = SubscriptionEventCallbacks(incompatible_qos=self._incompatible_qos_callback)
        for camera in ("ir", "vis"):
            topic = f"{camera}/image/compressed" if compressed else f"{camera}/image"
            self._entities.append(
                self.create_subscription(
                    CompressedImage if compressed else Image,
                    topic,
                    lambda msg, c=camera: self.image_callback(c, msg),
                    qos_profile_sensor_data,
                    qos_overriding_options=QoSOverridingOptions.with_default_policies(),
                    event_callbacks=events,
                )
            )
            self._entities.append(
                self.create_subscription(
                    CameraInfo,
                    f"{camera}/camera_info",
                    lambda msg, c=camera: self.camera_info.__setitem__(c, msg),
                    qos_profile_sensor_data,
                )
            )
        self._entities += [
            self.pub_fused,
            self.pub_info,
            self.pub_debug,
            self.pub_diag,
            self.create_timer(p["diagnostic_period"], self.diagnostics_callback),
        ]
        self.get_logger().info(f"configured: model {p['model']}, device {p['device']}, slop {p['sync_slop']} s")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self.p
        try:
            self.fuser = Fuser(
                p["model"],
                device=p["device"],
                half=p["half"],
                ir_norm=p["ir_normalization"],
                ir_range=tuple(p["ir_range"]),
                size_mismatch=p["size_mismatch"],
                threads=p["threads"] or None,
                warmup=True,
                score_threshold=p["score_threshold"],
                nms_iou=p["nms_iou"],
                backend=p["backend"],
            )
        except (BundleError, ValueError, RuntimeError) as e:
            self.get_logger().error(f"activation failed: {e}")
            return TransitionCallbackReturn.FAILURE
        self.tasks = TaskPublishers(self, self.fuser, p)
        self._stop.clear()
        self._worker = threading.Thread(target=self._inference_loop, name="fusion_inference", daemon=True)
        self._worker.start()
        self.active = True
        self.get_logger().info(f"active: {self.fuser.bundle} on {self.fuser.device}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        return super().on_deactivate(state)

    def release(self) -> None:
        """Stop the inference thread and free the model (GPU memory included)."""
        self.active = False
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
        if self.tasks is not None:
            self.tasks.destroy()
        self.fuser, self.tasks = None, None
        self.sync.reset()

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for entity in self._entities:
            (
                self.destroy_timer
                if hasattr(entity, "timer_period_ns")
                else self.destroy_publisher
                if hasattr(entity, "publish")
                else self.destroy_subscription
            )(entity)
        self._entities = []
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.active:
            self.release()
        return TransitionCallbackReturn.SUCCESS

    # ---- reception: cheap, never blocks on the model ------------------------------------------

    def image_callback(self, camera: str, msg) -> None:
        self.stats.tick(f"{camera}_in")
        if not self.active:
            self.drops["inactive"] += 1  # configured but not activated: frames are not queued
            return
        stamp = stamp_to_ns(msg.header.stamp)
        pair = self.sync.add_ir(stamp, msg) if camera == "ir" else self.sync.add_vis(stamp, msg)
        if pair is not None:
            self._last_pair = time.monotonic()
            self._wake.set()

    def _incompatible_qos_callback(self, info) -> None:
        self.get_logger().warning(
            f"incompatible QoS on an input (last policy {info.last_policy_kind}): the publisher must offer what "
            "the node requests; set qos_overrides.<topic>.subscription.reliability to match it"
        )

    # ---- inference thread: newest pair only ---------------------------------------------------

    def _inference_loop(self) -> None:
        while not self._stop.is_set():
            if not self._wake.wait(0.1):
                continue
            self._wake.clear()
            pair = self.sync.take()
            if pair is None or self.fuser is None:
                continue
            try:
                self._process(pair)
            except RCLError:
                if not self.context.ok():
                    return  # shutting down (Ctrl-C / SIGTERM): the publishers are gone
                raise

    def _drop(self, reason: str, detail: str) -> None:
        self.drops[reason] += 1
        self.get_logger().warning(f"dropped pair ({reason}): {detail}", throttle_duration_sec=2.0)

    def _process(self, pair) -> None:
        t0 = time.perf_counter()
        decode = compressed_to_numpy if self.p["input_transport"] == "compressed" else image_to_numpy
        try:
            ir, vis = decode(pair.ir), decode(pair.vis)
        except ImageCodecError as e:
            return self._drop(e.reason, str(e))
        t1 = time.perf_counter()
        try:
            result = self.fuser(ir, vis)
        except InputError as e:
            return self._drop(e.reason, str(e))
        t2 = time.perf_counter()
        header = (pair.vis if self.p["reference_camera"] == "vis" else pair.ir).header
        fused_msg = numpy_to_image(result.fused, "rgb8" if result.fused.ndim == 3 else "mono8", header)
        t3 = time.perf_counter()
        self.pub_fused.publish(fused_msg)
        info = self.camera_info.get(self.p["reference_camera"])
        if info is not None and (info.height, info.width) == result.fused.shape[:2]:
            info.header = header
            self.pub_info.publish(info)
        self.tasks.publish(result, header, self.pub_debug)
        t4 = time.perf_counter()
        latency = (self.get_clock().now().nanoseconds - stamp_to_ns(header.stamp)) * 1e-6
        for stage, ms in (
            ("decode", (t1 - t0) * 1e3),
            ("fuse", result.timings["model"]),
            ("prepare_finish", result.timings["prepare"] + result.timings["finish"]),
            ("tasks", result.timings.get("tasks", 0.0)),
            ("encode", (t3 - t2) * 1e3),
            ("publish", (t4 - t3) * 1e3),
            ("end_to_end", latency),
        ):
            self.stats.add(stage, ms)
        self.stats.tick("fused_out")

    # ---- diagnostics ------------------------------------------------------------------------

    def diagnostics_callback(self) -> None:
        status = DiagnosticStatus(name=f"{self.get_name()}: fusion", hardware_id=str(self.p["device"]))
        drops = Counter(self.drops)
        drops.update(self.sync.drops())
        values = {
            "state": "active" if self.active else "inactive",
            "pairs_formed": self.sync.pairs_formed,
            "fused_rate_hz": self.stats.rate("fused_out"),
        }
        warnings = []
        for camera in ("ir", "vis"):
            rate, age = self.stats.rate(f"{camera}_in"), self.stats.age(f"{camera}_in")
            values[f"{camera}_rate_hz"], values[f"{camera}_age_s"] = rate, -1.0 if age is None else age
            if self.active and rate < 0.5 * self.p["expected_rate_hz"]:
                warnings.append(f"{camera} input at {rate:.1f} Hz, expected {self.p['expected_rate_hz']:.0f}")
        for reason, n in sorted(drops.items()):
            values[f"drops_{reason}"] = n
        if sum(drops.values()) > getattr(self, "_drops_reported", 0):
            warnings.append(f"{sum(drops.values()) - self._drops_reported} pairs dropped since last report")
        self._drops_reported = sum(drops.values())
        for stage, (p50, p95) in self.stats.percentiles().items():
            values[f"{stage}_ms_p50"], values[f"{stage}_ms_p95"] = p50, p95
        warnings += self._sync_watchdog()
        if self.fuser is not None:
            values["device"] = str(self.fuser.device)
            if self.fuser.device.type == "cuda":
                import torch

                values["gpu_memory_mb"] = torch.cuda.memory_allocated(self.fuser.device) / 2**20
        status.level = DiagnosticStatus.WARN if warnings else DiagnosticStatus.OK
        status.message = "; ".join(warnings) if warnings else "fusing"
        status.values = [
            KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in values.items()
        ]
        self.pub_diag.publish(DiagnosticArray(header=self._diag_header(), status=[status]))

    def _diag_header(self):
        from std_msgs.msg import Header

        return Header(stamp=self.get_clock().now().to_msg())

    def _sync_watchdog(self) -> list[str]:
        limit = self.p["sync_watchdog"]
        ages = [self.stats.age(f"{c}_in") for c in ("ir", "vis")]
        streaming = all(a is not None and a < limit for a in ages)
        if not (self.active and streaming and time.monotonic() - self._last_pair > limit):
            return []
        offset = self.sync.last_offset_s
        text = (
            (
                f"no IR/VIS pair for {limit:.0f} s: stamp offset {offset:+.3f} s vs sync_slop {self.p['sync_slop']} s; "
                "increase sync_slop or time-synchronize the cameras"
            )
            if offset is not None
            else (f"no IR/VIS pair for {limit:.0f} s; cameras not time-synchronized?")
        )
        self.get_logger().warning(text, throttle_duration_sec=5.0)
        return [text]


def main(args=None) -> None:
    rclpy.init(args=args)
    node = FusionNode()
    try:
        if node.get_parameter("autostart").value:
            if (
                node.trigger_configure() != TransitionCallbackReturn.SUCCESS
                or node.trigger_activate() != TransitionCallbackReturn.SUCCESS
            ):
                raise SystemExit(1)
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node.active:
            node.release()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
