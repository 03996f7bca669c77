"""Rolling latency percentiles and rates for the node's diagnostics (pure Python, bounded memory)."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict, deque


class RollingStats:
    """Per-stage latencies (ms) over the last `window` samples, and event times for rates."""

    def __init__(self, window: int = 300):
        self._lock = threading.Lock()
        self._lat: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=window))
        self._events: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=window))

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            self._lat[stage].append(ms)

    def tick(self, name: str, now: float | None = None) -> None:
        with self._lock:
            self._events[name].append(time.monotonic() if now is None else now)

    def percentiles(self) -> dict[str, tuple[float, float]]:
        """stage -> (p50, p95) in ms."""
        with self._lock:
            out = {}
            for stage, values in self._lat.items():
                if values:
                    s = sorted(values)
                    out[stage] = (s[len(s) // 2], s[min(len(s) - 1, int(0.95 * len(s)))])
            return out

    def rate(self, name: str, horizon: float = 5.0, now: float | None = None) -> float:
        """Events per second over the last `horizon` seconds."""
        now = time.monotonic() if now is None else now
        with self._lock:
            n = sum(1 for t in self._events[name] if now - t <= horizon)
        return n / horizon

    def age(self, name: str, now: float | None = None) -> float | None:
        """Seconds since the last event, None if never."""
        now = time.monotonic() if now is None else now
        with self._lock:
            ev = self._events[name]
            return now - ev[-1] if ev else None


class DropCounter:
    """Dropped pairs or frames by reason, incremented from the callback and inference threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self._counts[reason] += n

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counts)
