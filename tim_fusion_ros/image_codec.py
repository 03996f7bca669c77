"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge.

Arrays on the numpy side are always (H, W) grey in the pixel type of the encoding (uint8, uint16 or
float32) or (H, W, 3) RGB uint8: BGR, alpha and Bayer inputs are converted to RGB, and
`numpy_to_image` takes RGB whatever colour encoding goes on the wire.

Decoding reads any object with the Image fields (rclpy messages, rosbags messages, test stubs), so
this module imports no ROS package except inside `numpy_to_image`. It copies only when it must: an
unpadded, native-endian mono/rgb8 image comes back as a view of `msg.data` (read-only when the data
is `bytes`); row padding, a foreign byte order or a colour conversion costs one copy.
"""

from __future__ import annotations

import array
import struct
import sys
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


class ImageCodecError(ValueError):
    """An image message that cannot be converted; the message names the field and the fix.

    `reason` is a drop-counter name: unsupported_encoding, empty_image, malformed_image (step or
    data length inconsistent, or an array that does not fit the encoding) or undecodable.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class _Layout:
    dtype: np.dtype
    channels: int
    to_rgb: int | None  # cv2.cvtColor code to RGB, None when already grey or RGB


# OpenCV names a Bayer pattern by the 2x2 block at pixel (1, 1), ROS by the block at (0, 0):
# ROS rggb is OpenCV "BG" (these names mean the same in OpenCV 4 and 5).
_LAYOUTS: dict[str, _Layout] = {
    "mono8": _Layout(np.dtype(np.uint8), 1, None),
    "8UC1": _Layout(np.dtype(np.uint8), 1, None),
    "mono16": _Layout(np.dtype(np.uint16), 1, None),
    "16UC1": _Layout(np.dtype(np.uint16), 1, None),
    "32FC1": _Layout(np.dtype(np.float32), 1, None),
    "rgb8": _Layout(np.dtype(np.uint8), 3, None),
    "bgr8": _Layout(np.dtype(np.uint8), 3, cv2.COLOR_BGR2RGB),
    "rgba8": _Layout(np.dtype(np.uint8), 4, cv2.COLOR_RGBA2RGB),
    "bgra8": _Layout(np.dtype(np.uint8), 4, cv2.COLOR_BGRA2RGB),
    "bayer_rggb8": _Layout(np.dtype(np.uint8), 1, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": _Layout(np.dtype(np.uint8), 1, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": _Layout(np.dtype(np.uint8), 1, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": _Layout(np.dtype(np.uint8), 1, cv2.COLOR_BayerGB2RGB),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUTS)
OUTPUT_ENCODINGS: tuple[str, ...] = ("mono8", "8UC1", "mono16", "16UC1", "32FC1", "rgb8", "bgr8")


def _byte_view(data: Any) -> np.ndarray:
    """The message's data as a flat uint8 array, shared with it where the type allows."""
    if isinstance(data, (list, tuple)):
        return np.asarray(data, dtype=np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def image_to_numpy(msg: Any) -> np.ndarray:
    """Decode a sensor_msgs/Image to (H, W) grey of its pixel type or (H, W, 3) RGB uint8."""
    encoding = msg.encoding
    layout = _LAYOUTS.get(encoding)
    if layout is None:
        raise ImageCodecError(
            f"Image.encoding '{encoding}' is not supported; publish one of "
            f"{', '.join(SUPPORTED_ENCODINGS)} (set the camera driver's pixel format, or convert "
            "upstream with image_proc)", "unsupported_encoding")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageCodecError(
            f"Image ({encoding}) is empty: width={width}, height={height}; the publisher sent no "
            "pixels (check the camera driver)", "empty_image")
    pixel_bytes = layout.dtype.itemsize * layout.channels
    row_bytes = width * pixel_bytes
    if step < row_bytes:
        raise ImageCodecError(
            f"Image.step {step} is smaller than width*bytes_per_pixel = {width}*{pixel_bytes} = "
            f"{row_bytes} for encoding '{encoding}'; the publisher must set step >= {row_bytes}",
            "malformed_image")
    raw = _byte_view(msg.data)
    if raw.size != step * height:
        raise ImageCodecError(
            f"Image.data has {raw.size} bytes but step*height = {step}*{height} = {step * height} "
            f"for encoding '{encoding}'; the message is truncated or its step/height is wrong "
            "(fix the publisher)", "malformed_image")

    # Rows of `step` bytes, of which the first `row_bytes` are pixels; a view, no copy yet.
    rows = raw.reshape(height, step)[:, :row_bytes]
    # is_bigendian describes the multi-byte pixel values; for 8-bit data it has no meaning.
    dtype = layout.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    pixels = rows.view(dtype).reshape(height, width, layout.channels)
    if layout.channels == 1:
        pixels = pixels[:, :, 0]
    if not dtype.isnative:
        pixels = pixels.astype(layout.dtype)
    if layout.to_rgb is not None:
        try:
            return cv2.cvtColor(pixels, layout.to_rgb)
        except cv2.error as e:  # e.g. a Bayer mosaic too small to demosaic
            raise ImageCodecError(f"Image ({encoding}, {width}x{height}) could not be converted to RGB: "
                                  f"{str(e).strip().splitlines()[-1]}", "malformed_image") from None
    return np.ascontiguousarray(pixels)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT, JPG, DAC)


def compressed_size(data: Any) -> tuple[int, int] | None:
    """(height, width) from a PNG or JPEG header without decoding; None when the header is not readable."""
    raw = bytes(data[:8]) if isinstance(data, (list, tuple)) else bytes(memoryview(data)[:8])
    if raw == _PNG_SIGNATURE:
        head = bytes(data[:24]) if isinstance(data, (list, tuple)) else bytes(memoryview(data)[:24])
        if len(head) == 24 and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            return height, width
        return None
    if raw[:2] != b"\xff\xd8":
        return None
    buf = _byte_view(data)
    i = 2
    while i + 9 <= buf.size:  # walk the marker segments up to the frame header
        if buf[i] != 0xFF:
            return None
        marker = int(buf[i + 1])
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker in _JPEG_SOF:
            height, width = (int(buf[i + 5]) << 8) | int(buf[i + 6]), (int(buf[i + 7]) << 8) | int(buf[i + 8])
            return height, width
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        i += 2 + ((int(buf[i + 2]) << 8) | int(buf[i + 3]))
    return None


def compressed_to_numpy(msg: Any) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (jpeg/png) to (H, W) grey or (H, W, 3) RGB."""
    raw = _byte_view(msg.data)
    fmt = getattr(msg, "format", "")
    if raw.size == 0:
        raise ImageCodecError(
            f"CompressedImage.data is empty (format '{fmt}'); the publisher sent no image", "empty_image")
    try:
        img = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    except cv2.error:  # OpenCV refuses some corrupt or oversized headers by raising instead of returning None
        img = None
    if img is None or img.size == 0:
        raise ImageCodecError(
            f"CompressedImage.data ({raw.size} bytes, format '{fmt}') could not be decoded; "
            "publish jpeg or png (image_transport 'compressed'), or subscribe to the raw topic",
            "undecodable")
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    if img.ndim == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


def numpy_to_image(arr: np.ndarray, encoding: str, header: Any = None) -> Any:
    """Encode (H, W) grey or (H, W, 3) RGB as a sensor_msgs/Image with the given encoding."""
    from sensor_msgs.msg import Image

    if encoding not in OUTPUT_ENCODINGS:
        raise ImageCodecError(
            f"numpy_to_image: encoding '{encoding}' is not supported for output; use one of "
            f"{', '.join(OUTPUT_ENCODINGS)}", "unsupported_encoding")
    layout = _LAYOUTS[encoding]
    expected_shape = "(H, W)" if layout.channels == 1 else "(H, W, 3) RGB"
    shape_ok = arr.ndim == 2 if layout.channels == 1 else (arr.ndim == 3 and arr.shape[2] == 3)
    if not shape_ok or arr.dtype != layout.dtype:
        raise ImageCodecError(
            f"numpy_to_image: encoding '{encoding}' needs a {layout.dtype} {expected_shape} array, "
            f"got {arr.dtype} {arr.shape}; convert it first (e.g. arr.astype(np.{layout.dtype}))",
            "malformed_image")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageCodecError(f"numpy_to_image: the array for '{encoding}' is empty {arr.shape}", "empty_image")
    if encoding == "bgr8":
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    arr = np.ascontiguousarray(arr)

    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = sys.byteorder == "big"
    msg.step = int(arr.strides[0])
    # array('B') passes the generated setter without its per-byte Python check; one copy.
    data = array.array("B")
    data.frombytes(memoryview(arr).cast("B"))
    msg.data = data
    return msg
