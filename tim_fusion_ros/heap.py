"""Keep the node's per-frame buffers in the heap instead of fresh pages from the kernel (glibc only).

Every pair allocates several 1-4 MB arrays (the received images, float planes, YCbCr, the fused image). glibc
serves blocks above its mmap threshold with a fresh mmap and unmaps them on free, so each new block costs a
page fault per 4 KiB page when it is first written: in the node at 30 Hz this tripled the per-pair work outside
the model (640x512: normalise + YCbCr 7.4 ms against 2.7 ms; docs/performance.md). A fixed threshold above the
largest frame buffer, and a trim threshold that keeps freed memory, make those blocks reusable heap memory.
It is what MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ do, applied from inside the process by the node's
`main`, so `ros2 run` and `ros2 launch` get it without an environment variable. The resident size grows by about
one frame's buffers.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc malloc.h parameter numbers
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest (HEAP_MAX / 2 on 64 bit); 640x512 RGB float is 3.9 MB
TRIM_THRESHOLD = 256 * 1024 * 1024


def keep_frame_buffers() -> bool:
    """Apply the thresholds; False where the C library is not glibc (musl, macOS) or refuses them."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
