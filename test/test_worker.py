"""The inference thread survives every failure of one pair (counted under its reason), stops or says it cannot,
and the node's diagnostics turn ERROR when it is gone."""

from __future__ import annotations

import threading
import time

import pytest

from tim_core.runtime import InputError
from tim_fusion_ros.image_codec import ImageCodecError
from tim_fusion_ros.stats import DropCounter
from tim_fusion_ros.worker import InferenceWorker, failure_reason


class Logger:
    def __init__(self):
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, text: str, **_) -> None:
        self.errors.append(text)

    def warning(self, text: str, **_) -> None:
        self.warnings.append(text)


def _run(failures: list[BaseException | None]):
    """Feed one pair per entry to a worker whose process raises that entry (None: succeeds)."""
    pairs = list(range(len(failures)))
    done: list[int] = []
    drops, logger = DropCounter(), Logger()

    def process(pair: int) -> None:
        if failures[pair] is not None:
            raise failures[pair]
        done.append(pair)

    worker = InferenceWorker(lambda: pairs.pop(0) if pairs else None, process, drops, logger)
    worker.start()
    deadline = time.monotonic() + 10.0
    while pairs and time.monotonic() < deadline:  # one pair per wake, as the image callback wakes it
        worker.wake()
        time.sleep(0.02)
    time.sleep(0.2)  # the last pair
    return worker, drops.snapshot(), logger, done


def test_every_failure_is_counted_and_the_thread_keeps_going() -> None:
    def bug() -> None:
        raise KeyError("unexpected")

    try:
        bug()
    except KeyError as e:
        same_place = e
    failures = [RuntimeError("Padding size should be less than the corresponding input dimension"),
                InputError("1x1", "too_small"), ImageCodecError("bad", "undecodable"), MemoryError(),
                RuntimeError("DefaultCPUAllocator: can't allocate memory"), same_place, same_place, None]
    worker, drops, logger, done = _run(failures)
    try:
        assert worker.alive
        assert done == [7], "the good pair after the failures was not processed"
        assert drops == {"internal_error": 3, "too_small": 1, "undecodable": 1, "out_of_memory": 2}
        assert len(logger.errors) == 2, "an internal error's traceback is logged once per place"
        assert all("Traceback" in e for e in logger.errors)
        assert any("max_pixels" in w for w in logger.warnings)
    finally:
        assert worker.stop(timeout=5.0)
    assert not worker.alive


def test_failure_reason() -> None:
    assert failure_reason(InputError("x", "size_mismatch")) == "size_mismatch"
    assert failure_reason(RuntimeError("CUDA out of memory. Tried to allocate 14.00 GiB")) == "out_of_memory"
    assert failure_reason(ValueError("no reason")) == "internal_error"


def test_stop_waits_for_the_pair_in_progress_or_reports() -> None:
    release = threading.Event()
    logger = Logger()
    taken = [1]
    worker = InferenceWorker(lambda: taken.pop() if taken else None, lambda pair: release.wait(10.0), DropCounter(),
                             logger)
    worker.start()
    worker.wake()
    deadline = time.monotonic() + 5.0
    while worker.busy_since is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.busy_since is not None
    assert not worker.stop(timeout=0.3, report_every=0.1)
    assert worker.alive and logger.warnings and "still running" in logger.errors[-1]
    release.set()
    assert worker.stop(timeout=5.0)


def test_diagnostics_turn_error_when_the_inference_thread_is_gone(tiny_bundle) -> None:
    rclpy = pytest.importorskip("rclpy", reason="rclpy not installed; run `make test`")
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.lifecycle import TransitionCallbackReturn
    from rosgraph import DOMAIN_ID

    from tim_fusion_ros.fusion_node import FusionNode

    rclpy.init(args=["--ros-args", "-r", "__ns:=/w1", "-p", f"model:={tiny_bundle}", "-p", "device:=cpu"],
               domain_id=DOMAIN_ID)
    try:
        node = FusionNode()
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        status = node.diagnostics.report(node).status[0]
        assert status.level != DiagnosticStatus.ERROR and status.name == "/w1/fusion_node: fusion"
        assert node.worker.stop(timeout=5.0)  # the thread ends while the node still says active
        status = node.diagnostics.report(node).status[0]
        assert status.level == DiagnosticStatus.ERROR and "inference thread has stopped" in status.message
        assert node.release()
        node.destroy_node()
    finally:
        rclpy.shutdown()
