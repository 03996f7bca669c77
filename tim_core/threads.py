"""torch's CPU thread count, set for a scope and restored after it: the one place the project changes it.

torch keeps one count per process (with OpenMP, per calling thread), so a library call that set it and left
it would change every later caller's speed. Every user (Fuser calls, trainers, the latency profiler, rig
search) runs inside `torch_threads(n)` instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with `threads` torch CPU threads, then restore the count; None or 0 leaves it alone."""
    if not threads or threads == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
