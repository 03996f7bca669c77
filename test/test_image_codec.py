"""image_codec: every encoding both ways, row padding, byte order, Bayer colour, rejections."""

from __future__ import annotations

import array
import struct
import zlib
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from tim_fusion_ros.image_codec import (
    OUTPUT_ENCODINGS,
    SUPPORTED_ENCODINGS,
    ImageCodecError,
    compressed_size,
    compressed_to_numpy,
    image_to_numpy,
    numpy_to_image,
)

H, W = 6, 10
RNG = np.random.default_rng(7)
WIRE = {  # encoding -> (dtype, channels) as laid out in Image.data
    "mono8": (np.uint8, 1), "8UC1": (np.uint8, 1), "mono16": (np.uint16, 1), "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1), "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4), "bayer_rggb8": (np.uint8, 1), "bayer_bggr8": (np.uint8, 1),
    "bayer_gbrg8": (np.uint8, 1), "bayer_grbg8": (np.uint8, 1),
}


def random_pixels(encoding: str, h: int = H, w: int = W) -> np.ndarray:
    """Random wire-order pixels of an encoding: (h, w) or (h, w, channels)."""
    dtype, channels = WIRE[encoding]
    shape = (h, w) if channels == 1 else (h, w, channels)
    if dtype == np.float32:
        return RNG.normal(0, 100, shape).astype(np.float32)
    return RNG.integers(0, np.iinfo(dtype).max, shape, endpoint=True, dtype=dtype)


def wire_msg(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> SimpleNamespace:
    """An Image-like stub carrying `pixels` with `pad` junk bytes after every row."""
    h, w = pixels.shape[:2]
    order = ">" if bigendian else "<"
    rows = pixels.astype(pixels.dtype.newbyteorder(order)).reshape(h, -1)
    junk = bytes([0xAB]) * pad
    data = b"".join(row.tobytes() + junk for row in rows)
    return SimpleNamespace(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian),
                           step=rows.strides[0] + pad, data=data)


def expected_rgb(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """What image_to_numpy must return for wire pixels of a non-Bayer encoding."""
    return {"bgr8": lambda p: p[:, :, ::-1], "rgba8": lambda p: p[:, :, :3],
            "bgra8": lambda p: p[:, :, 2::-1]}.get(encoding, lambda p: p)(pixels)


def test_supported_encodings_cover_the_spec() -> None:
    assert set(SUPPORTED_ENCODINGS) == set(WIRE)


@pytest.mark.parametrize("encoding", [e for e in WIRE if not e.startswith("bayer")])
@pytest.mark.parametrize("pad", [0, 1, 3, 16])
def test_decode_every_encoding_with_and_without_row_padding(encoding: str, pad: int) -> None:
    pixels = random_pixels(encoding)
    out = image_to_numpy(wire_msg(pixels, encoding, pad=pad))
    want = expected_rgb(pixels, encoding)
    assert out.dtype == want.dtype and out.shape == want.shape
    np.testing.assert_array_equal(out, want)
    assert out.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("encoding", ["mono16", "16UC1", "32FC1"])
@pytest.mark.parametrize("pad", [0, 5])
def test_big_endian_multibyte_pixels(encoding: str, pad: int) -> None:
    pixels = random_pixels(encoding)
    out = image_to_numpy(wire_msg(pixels, encoding, pad=pad, bigendian=True))
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, pixels)


def test_big_endian_flag_is_ignored_for_8_bit_data() -> None:
    pixels = random_pixels("rgb8")
    np.testing.assert_array_equal(image_to_numpy(wire_msg(pixels, "rgb8", bigendian=True)), pixels)


@pytest.mark.parametrize("encoding", OUTPUT_ENCODINGS)
def test_numpy_to_image_round_trip(encoding: str) -> None:
    from std_msgs.msg import Header

    dtype, channels = WIRE[encoding]
    arr = random_pixels("rgb8" if channels == 3 else encoding)
    header = Header(frame_id="vis_optical")
    header.stamp.sec, header.stamp.nanosec = 12, 34
    msg = numpy_to_image(arr, encoding, header)
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (H, W, encoding, 0)
    assert msg.step == W * channels * np.dtype(dtype).itemsize
    assert msg.header.frame_id == "vis_optical" and msg.header.stamp.nanosec == 34
    np.testing.assert_array_equal(image_to_numpy(msg), arr)


def test_bgr8_output_is_bgr_on_the_wire() -> None:
    arr = np.zeros((2, 2, 3), np.uint8)
    arr[..., 0] = 200  # red
    msg = numpy_to_image(arr, "bgr8")
    assert bytes(msg.data[:3]) == bytes([0, 0, 200])


def test_unpadded_decode_shares_memory_with_the_message() -> None:
    msg = numpy_to_image(random_pixels("mono16"), "mono16")
    assert isinstance(msg.data, array.array)
    out = image_to_numpy(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize("as_data", [bytes, list, lambda b: array.array("B", b),
                                     lambda b: np.frombuffer(b, np.uint8).copy()],
                         ids=["bytes", "list", "rclpy-array", "rosbags-ndarray"])
def test_data_field_types_from_rclpy_rosbags_and_tests(as_data) -> None:
    pixels = random_pixels("mono8")
    msg = wire_msg(pixels, "mono8")
    msg.data = as_data(msg.data)
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)


# The 2x2 Bayer tile at (0, 0) per ROS encoding, as colour indices into RGB.
BAYER_TILES = {"bayer_rggb8": ((0, 1), (1, 2)), "bayer_bggr8": ((2, 1), (1, 0)),
               "bayer_gbrg8": ((1, 2), (0, 1)), "bayer_grbg8": ((1, 0), (2, 1))}


@pytest.mark.parametrize("encoding", sorted(BAYER_TILES))
@pytest.mark.parametrize("pad", [0, 2])
def test_bayer_demosaics_a_flat_scene_to_its_colour(encoding: str, pad: int) -> None:
    colour = np.array([200, 100, 30], np.uint8)
    mosaic = np.empty((16, 16), np.uint8)
    for dy in (0, 1):
        for dx in (0, 1):
            mosaic[dy::2, dx::2] = colour[BAYER_TILES[encoding][dy][dx]]
    out = image_to_numpy(wire_msg(mosaic, encoding, pad=pad))
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[2:-2, 2:-2], np.broadcast_to(colour, (12, 12, 3)))


def compressed(img_bgr: np.ndarray, ext: str) -> SimpleNamespace:
    ok, buf = cv2.imencode(ext, img_bgr)
    assert ok
    return SimpleNamespace(format=ext.strip("."), data=buf.tobytes())


def test_compressed_png_colour_grey_and_16_bit() -> None:
    rgb = random_pixels("rgb8")
    np.testing.assert_array_equal(compressed_to_numpy(compressed(rgb[:, :, ::-1], ".png")), rgb)
    grey = random_pixels("mono8")
    np.testing.assert_array_equal(compressed_to_numpy(compressed(grey, ".png")), grey)
    thermal = random_pixels("mono16")
    out = compressed_to_numpy(compressed(thermal, ".png"))
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, thermal)


def test_compressed_jpeg_keeps_the_colour() -> None:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[...] = (220, 40, 10)
    out = compressed_to_numpy(compressed(np.ascontiguousarray(rgb[:, :, ::-1]), ".jpg"))
    assert out.shape == (32, 32, 3)
    assert np.abs(out.astype(int) - rgb).max() <= 4


def test_compressed_from_a_real_message() -> None:
    from sensor_msgs.msg import CompressedImage

    grey = random_pixels("mono8")
    msg = CompressedImage(format="png")
    msg.data = array.array("B", cv2.imencode(".png", grey)[1].tobytes())
    np.testing.assert_array_equal(compressed_to_numpy(msg), grey)


def good_msg(**changes) -> SimpleNamespace:
    msg = wire_msg(random_pixels("mono16"), "mono16")
    for key, value in changes.items():
        setattr(msg, key, value)
    return msg


@pytest.mark.parametrize(("msg", "reason", "words"), [
    (good_msg(encoding="yuv422"), "unsupported_encoding", ["Image.encoding", "'yuv422'", "mono8", "publish one of"]),
    (good_msg(encoding="MONO16"), "unsupported_encoding", ["Image.encoding", "'MONO16'"]),
    (good_msg(width=0, data=b"", step=0), "empty_image", ["mono16", "empty", "width=0"]),
    (good_msg(height=0, data=b""), "empty_image", ["mono16", "empty", "height=0"]),
    (good_msg(step=2 * W - 1), "malformed_image", ["Image.step", f"{2 * W - 1}", "mono16", f"step >= {2 * W}"]),
    (good_msg(data=b"\0" * (2 * W * H - 2)), "malformed_image",
     ["Image.data", f"{2 * W * H - 2} bytes", "step*height", "mono16"]),
    (good_msg(data=b"\0" * (2 * W * H + 1)), "malformed_image", ["Image.data", "mono16", "fix the publisher"]),
], ids=["unsupported", "wrong-case", "zero-width", "zero-height", "step-short", "data-short", "data-long"])
def test_rejections_name_the_field_and_the_fix(msg: SimpleNamespace, reason: str, words: list[str]) -> None:
    with pytest.raises(ImageCodecError) as err:
        image_to_numpy(msg)
    for word in words:
        assert word in str(err.value)
    assert err.value.reason == reason
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize(("data", "reason", "words"), [
    (b"", "empty_image", ["CompressedImage.data", "empty", "'jpeg'"]),
    (b"definitely not an image", "undecodable", ["CompressedImage.data", "'jpeg'", "could not be decoded", "png"]),
])
def test_compressed_rejections(data: bytes, reason: str, words: list[str]) -> None:
    with pytest.raises(ImageCodecError) as err:
        compressed_to_numpy(SimpleNamespace(format="jpeg", data=data))
    for word in words:
        assert word in str(err.value)
    assert err.value.reason == reason


@pytest.mark.parametrize(("arr", "encoding", "reason", "words"), [
    (np.zeros((4, 4), np.uint8), "bayer_rggb8", "unsupported_encoding",
     ["'bayer_rggb8'", "not supported for output", "mono8"]),
    (np.zeros((4, 4), np.float64), "mono16", "malformed_image", ["'mono16'", "uint16", "float64", "astype"]),
    (np.zeros((4, 4), np.uint8), "rgb8", "malformed_image", ["'rgb8'", "(H, W, 3) RGB", "(4, 4)"]),
    (np.zeros((4, 4, 4), np.uint8), "bgr8", "malformed_image", ["'bgr8'", "(4, 4, 4)"]),
    (np.zeros((0, 4), np.uint8), "mono8", "empty_image", ["'mono8'", "empty"]),
], ids=["bayer-out", "dtype", "grey-as-rgb", "rgba-as-bgr", "empty"])
def test_numpy_to_image_rejections(arr: np.ndarray, encoding: str, reason: str, words: list[str]) -> None:
    with pytest.raises(ImageCodecError) as err:
        numpy_to_image(arr, encoding)
    for word in words:
        assert word in str(err.value)
    assert err.value.reason == reason


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_compressed_size_reads_the_header_without_decoding(ext: str) -> None:
    ok, buf = cv2.imencode(ext, np.zeros((37, 53, 3), np.uint8))
    assert compressed_size(buf.tobytes()) == (37, 53)
    assert compressed_size(list(buf.tobytes())) == (37, 53)  # rosbags / test stubs hand a list
    assert compressed_size(buf.tobytes()[:6]) is None
    assert compressed_size(b"garbage bytes") is None


def test_oversized_png_header_is_undecodable_not_an_opencv_exception() -> None:
    ok, buf = cv2.imencode(".png", np.zeros((8, 8), np.uint8))
    data = bytearray(buf.tobytes())
    data[16:24] = struct.pack(">II", 60000, 60000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    assert compressed_size(bytes(data)) == (60000, 60000)
    with pytest.raises(ImageCodecError) as err:
        compressed_to_numpy(SimpleNamespace(format="png", data=bytes(data)))
    assert err.value.reason == "undecodable"
