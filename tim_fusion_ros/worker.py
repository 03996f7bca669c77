"""The inference thread: runs the node's per-pair work on the newest pair; no failure of one pair ends it.

Each failure drops that pair under a reason: an exception carrying a string `reason` (tim_core InputError,
ImageCodecError) is an expected drop; MemoryError or a torch out-of-memory error is `out_of_memory`; anything
else is `internal_error`, logged with its traceback the first time it occurs at that place. Only a
BaseException (interpreter exit) or the ROS context shutting down ends the loop, and `alive` then says so,
which the diagnostics report as ERROR.
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import Any, Callable

from .stats import DropCounter

OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")


def failure_reason(error: BaseException) -> str:
    """The drop-counter name for an exception raised while processing one pair."""
    reason = getattr(error, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    if isinstance(error, MemoryError) or any(m in str(error).lower() for m in OOM_MARKERS):
        return "out_of_memory"
    return "internal_error"


class InferenceWorker:
    """`wake()` after a pair is pending; the thread then calls `process(take())` until `stop()`."""

    def __init__(self, take: Callable[[], Any], process: Callable[[Any], None], drops: DropCounter, logger,
                 shutting_down: Callable[[], bool] = lambda: False) -> None:
        self._take, self._process, self.drops, self._logger = take, process, drops, logger
        self._shutting_down = shutting_down
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._tracebacks_logged: set[tuple[str, str]] = set()
        self.busy_since: float | None = None  # monotonic start of the pair in progress

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="fusion_inference", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 60.0, report_every: float = 5.0) -> bool:
        """Ask the thread to stop and wait for the pair in progress; False (logged) if it is still running."""
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            return True
        waited = 0.0
        while waited < timeout:
            self._thread.join(min(report_every, timeout - waited))
            if not self._thread.is_alive():
                return True
            waited += report_every
            self._logger.warning(f"waiting for the inference thread to finish its pair ({waited:.0f} s)")
        self._logger.error(f"the inference thread is still running after {timeout:.0f} s; the model and "
                           "publishers stay allocated (a hung device driver? check the GPU)")
        return False

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._wake.wait(0.1):
                continue
            self._wake.clear()
            try:
                pair = self._take()
                if pair is None:
                    continue
                self.busy_since = time.monotonic()
                self._process(pair)
            except Exception as error:  # one pair's failure, whatever it is, never ends the thread
                if self._shutting_down():
                    return  # Ctrl-C / SIGTERM while publishing: the publishers are gone
                self._failed(error)
            finally:
                self.busy_since = None

    def _failed(self, error: Exception) -> None:
        reason = failure_reason(error)
        self.drops.add(reason)
        if reason == "internal_error":
            frames = traceback.extract_tb(error.__traceback__)
            where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
            if (type(error).__name__, where) not in self._tracebacks_logged:
                self._tracebacks_logged.add((type(error).__name__, where))
                self._logger.error("dropped pair (internal_error), please report this with the traceback:\n"
                                   + "".join(traceback.format_exception(type(error), error, error.__traceback__)))
                return
        fix = " (lower max_pixels or downscale upstream)" if reason == "out_of_memory" else ""
        self._logger.warning(f"dropped pair ({reason}): {error}{fix}", throttle_duration_sec=2.0)
