"""A received IR/VIS pair to numpy, with the size limits checked before any pixel is decoded.

A raw Image states its size in its fields and a PNG/JPEG states it in its header, so a 1-pixel frame or a
header claiming 60000x60000 is dropped (`too_small` / `too_large`) for the cost of reading a few bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tim_core.runtime import check_size

from .image_codec import compressed_size, compressed_to_numpy, image_to_numpy

ROLES = {"ir": "infrared", "vis": "visible"}


def declared_size(msg: Any, transport: str) -> tuple[int, int] | None:
    """(height, width) a message declares, None when a compressed header cannot be read (decoding decides)."""
    if transport == "compressed":
        return compressed_size(msg.data)
    return int(msg.height), int(msg.width)


def decode(msg: Any, camera: str, transport: str, min_side: int, max_pixels: int) -> np.ndarray:
    """One camera's frame to numpy; raises InputError (too_small, too_large) or ImageCodecError (reason)."""
    size = declared_size(msg, transport)
    if size is not None and size[0] > 0 and size[1] > 0:  # empty frames get the codec's more specific message
        check_size(size[0], size[1], f"{ROLES[camera]} ({camera}) {transport}", min_side, max_pixels)
    return compressed_to_numpy(msg) if transport == "compressed" else image_to_numpy(msg)


def decode_pair(pair: Any, transport: str, min_side: int, max_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """(ir, vis) arrays of a sync.Pair of Image or CompressedImage messages."""
    return (decode(pair.ir, "ir", transport, min_side, max_pixels),
            decode(pair.vis, "vis", transport, min_side, max_pixels))
