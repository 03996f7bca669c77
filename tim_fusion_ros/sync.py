"""Pairing IR and VIS frames by header stamp: approximate time within a slop, latest pair wins.

Pure Python, no ROS import, so it is tested with plain stamps (as message_filters' tests do).

Semantics, for each frame `add_ir(stamp_ns, item)` / `add_vis(stamp_ns, item)` receives:

1. Rejected on arrival: `zero_stamp` when stamp_ns <= 0 (the driver never set the header);
   `stamp_backwards` when it is not newer than the last frame accepted from the same camera (an
   older stamp or a repeat: reordered or duplicated frame). The camera's last stamp stays.
   A stamp more than `clock_reset` seconds older than that camera's last one is a clock reset
   (camera or bag restarted, sim clock looped): the queued frames of both cameras are dropped as
   `clock_reset`, both cameras' last stamps are forgotten, `clock_resets` counts the event, and the
   frame goes on as the first of the new timeline. The pending pair (already formed) stays.
2. Paired when the other camera has a queued frame within `slop` seconds (|dt| <= slop; the closest
   wins, the newer one on a tie). The pair becomes the pending pair. Every queued frame older than
   the pair, of either camera, can then only form an older pair and is dropped as `too_old`;
   frames of the other camera newer than its partner stay queued.
3. Otherwise queued, after dropping as `too_old` the other camera's queued frames more than `slop`
   older than it (stamps only grow, so they can never pair). A frame that is itself more than
   `slop` older than the other camera's newest stamp is dropped as `too_old` instead of queued.
   A full queue (`queue_size` per camera) evicts its oldest frame as `no_partner`: the other
   camera is silent or lags by more than `queue_size` frames.

Only the newest pair is handed out: `take()` returns and clears the pending pair, so a node can run
inference on another thread while frames keep arriving. A pending pair replaced by a newer one before
`take()` counts once as `superseded` (a pair, not two frames). All other counters count frames.

For every camera: frames received = rejected + paired + too_old + no_partner + still queued.
`last_offset_s` is the IR minus VIS stamp difference the sync watchdog reports when no pair forms:
each arriving frame is measured against the nearest frame of the other camera (queued, else the last
one seen), and of the latest IR and the latest VIS measurement the smaller in magnitude is reported
(one of the two compares against a frame a period away when the cameras are out of phase).
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
CAMERAS = ("ir", "vis")
DROP_REASONS = ("no_partner", "too_old", "zero_stamp", "stamp_backwards", "clock_reset", "superseded")


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (anything with sec and nanosec) to integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


@dataclass(frozen=True)
class Pair(Generic[T]):
    """One IR frame and one VIS frame whose stamps lie within the slop."""

    ir_stamp_ns: int
    vis_stamp_ns: int
    ir: T
    vis: T

    @property
    def offset_s(self) -> float:
        """IR stamp minus VIS stamp, in seconds."""
        return (self.ir_stamp_ns - self.vis_stamp_ns) * 1e-9


class PairSynchronizer(Generic[T]):
    """Approximate-time IR/VIS pairing with a latest-pair-wins hand-off; thread-safe."""

    def __init__(self, slop: float, queue_size: int, clock_reset: float | None = None) -> None:
        if queue_size < 1:
            raise ValueError(f"sync_queue_size must be >= 1, got {queue_size}")
        self.queue_size = int(queue_size)
        self._lock = threading.Lock()
        self.set_slop(slop)
        self.set_clock_reset(clock_reset)
        self.clock_resets = 0
        self.last_clock_jump: tuple[str, float] | None = None  # (camera, seconds back) of the latest reset
        self._queues: dict[str, deque[tuple[int, T]]] = {c: deque() for c in CAMERAS}
        self._last_stamp: dict[str, int | None] = dict.fromkeys(CAMERAS)
        self._drops: dict[str, Counter[str]] = {c: Counter() for c in CAMERAS}
        self._superseded = 0
        self._pending: Pair[T] | None = None
        self._pairs_formed = 0
        self._offset_ns: dict[str, int | None] = dict.fromkeys(CAMERAS)

    def set_slop(self, slop: float) -> None:
        """Change the pairing tolerance (seconds); applies to the next frame."""
        if not slop >= 0.0:
            raise ValueError(f"sync_slop must be >= 0 seconds, got {slop}")
        with self._lock:
            self.slop = float(slop)
            self._slop_ns = round(self.slop * 1e9)

    def set_clock_reset(self, seconds: float | None) -> None:
        """A step back of more than `seconds` resets pairing (None: every step back is `stamp_backwards`)."""
        if seconds is not None and not seconds > 0.0:
            raise ValueError(f"clock_reset_threshold must be > 0 seconds, got {seconds}")
        with self._lock:
            self._reset_ns = None if seconds is None else round(seconds * 1e9)

    def add_ir(self, stamp_ns: int, item: T) -> Pair[T] | None:
        """Offer an IR frame; returns the pair it completed (now pending for take()) or None."""
        return self._add("ir", stamp_ns, item)

    def add_vis(self, stamp_ns: int, item: T) -> Pair[T] | None:
        """Offer a VIS frame; returns the pair it completed (now pending for take()) or None."""
        return self._add("vis", stamp_ns, item)

    def take(self) -> Pair[T] | None:
        """Return the newest pending pair and clear it (None when no new pair formed)."""
        with self._lock:
            pair, self._pending = self._pending, None
            return pair

    def drops(self, camera: str | None = None) -> dict[str, int]:
        """Dropped frames by reason, for one camera or both ('superseded' counts pairs)."""
        with self._lock:
            cameras = CAMERAS if camera is None else (camera,)
            counts = {reason: sum(self._drops[c][reason] for c in cameras) for reason in DROP_REASONS}
            counts["superseded"] = self._superseded if camera is None else 0
            return counts

    @property
    def pairs_formed(self) -> int:
        """Pairs formed since construction, whether taken or superseded."""
        with self._lock:
            return self._pairs_formed

    @property
    def last_offset_s(self) -> float | None:
        """Latest measured IR minus VIS stamp difference in seconds (None before both arrived)."""
        with self._lock:
            measured = [o for o in self._offset_ns.values() if o is not None]
            return min(measured, key=abs) * 1e-9 if measured else None

    def queued(self) -> dict[str, int]:
        """Frames waiting for a partner, per camera."""
        with self._lock:
            return {c: len(q) for c, q in self._queues.items()}

    def reset(self) -> None:
        """Forget queued frames, last stamps and the pending pair (after a clock jump); keep counters."""
        with self._lock:
            for c in CAMERAS:
                self._queues[c].clear()
                self._last_stamp[c] = None
            self._pending = None
            self._offset_ns = dict.fromkeys(CAMERAS)

    def _add(self, camera: str, stamp_ns: int, item: T) -> Pair[T] | None:
        other = "vis" if camera == "ir" else "ir"
        stamp_ns = int(stamp_ns)
        with self._lock:
            drops = self._drops[camera]
            if stamp_ns <= 0:
                drops["zero_stamp"] += 1
                return None
            last = self._last_stamp[camera]
            if last is not None and self._reset_ns is not None and last - stamp_ns > self._reset_ns:
                self._clock_reset(camera, last - stamp_ns)
                last = None
            if last is not None and stamp_ns <= last:
                drops["stamp_backwards"] += 1
                return None
            self._last_stamp[camera] = stamp_ns

            mine, theirs = self._queues[camera], self._queues[other]
            partner = self._nearest(theirs, stamp_ns)
            nearest = partner[0] if partner is not None else self._last_stamp[other]
            if nearest is not None:
                offset = stamp_ns - nearest if camera == "ir" else nearest - stamp_ns
                self._offset_ns[camera] = offset

            if partner is not None and abs(partner[0] - stamp_ns) <= self._slop_ns:
                return self._pair(camera, stamp_ns, item, partner)

            while theirs and stamp_ns - theirs[0][0] > self._slop_ns:
                theirs.popleft()
                self._drops[other]["too_old"] += 1
            newest_other = self._last_stamp[other]
            if newest_other is not None and newest_other - stamp_ns > self._slop_ns:
                drops["too_old"] += 1
                return None
            if len(mine) >= self.queue_size:
                mine.popleft()
                drops["no_partner"] += 1
            mine.append((stamp_ns, item))
            return None

    def _clock_reset(self, camera: str, jump_ns: int) -> None:
        for c in CAMERAS:
            self._drops[c]["clock_reset"] += len(self._queues[c])
            self._queues[c].clear()
            self._last_stamp[c] = None
        self._offset_ns = dict.fromkeys(CAMERAS)
        self.clock_resets += 1
        self.last_clock_jump = (camera, jump_ns * 1e-9)

    def _nearest(self, queue: deque[tuple[int, T]], stamp_ns: int) -> tuple[int, T] | None:
        # `<=` keeps scanning on a tie, so the newer of two equally close frames wins.
        best = None
        for entry in queue:
            if best is None or abs(entry[0] - stamp_ns) <= abs(best[0] - stamp_ns):
                best = entry
        return best

    def _pair(self, camera: str, stamp_ns: int, item: T, partner: tuple[int, T]) -> Pair[T]:
        other = "vis" if camera == "ir" else "ir"
        mine, theirs = self._queues[camera], self._queues[other]
        self._drops[camera]["too_old"] += len(mine)
        mine.clear()
        while theirs[0][0] < partner[0]:
            theirs.popleft()
            self._drops[other]["too_old"] += 1
        theirs.popleft()
        if camera == "ir":
            pair = Pair(stamp_ns, partner[0], item, partner[1])
        else:
            pair = Pair(partner[0], stamp_ns, partner[1], item)
        if self._pending is not None:
            self._superseded += 1
        self._pending = pair
        self._pairs_formed += 1
        return pair
