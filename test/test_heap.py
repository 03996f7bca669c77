"""The node's malloc thresholds: applied on glibc (where the page-fault cost was measured), a no-op elsewhere."""

from __future__ import annotations

import platform

import numpy as np
import pytest

from tim_fusion_ros.heap import MMAP_THRESHOLD, keep_frame_buffers


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")
def test_thresholds_apply_on_glibc_and_frames_still_allocate() -> None:
    assert keep_frame_buffers() is True
    frame = np.ones((2048, 2560, 3), np.float32)  # a 5 MP float RGB frame, 63 MB: above the threshold, still fine
    assert frame.nbytes > MMAP_THRESHOLD and float(frame.sum()) == frame.size
