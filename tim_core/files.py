"""Image files on disk: reading, writing, and pairing two folders by file stem."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class ImageFileError(ValueError):
    """An image file that cannot be used; the message names the file and the fix."""


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as uint8/uint16, (H, W) grey or (H, W, 3) RGB (alpha dropped)."""
    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"{path}: no such file")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ImageFileError(f"{path}: not a readable image (supported: {', '.join(IMAGE_EXTS)})")
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageFileError(f"{path}: unsupported pixel type {img.dtype}; save it as 8- or 16-bit")
    if img.ndim == 3:
        if img.shape[2] == 1:
            img = img[:, :, 0]
        elif img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        else:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


def write_image(path: str | Path, img: np.ndarray) -> None:
    """Write a (H, W) grey or (H, W, 3) RGB image; the folder is created if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    if not cv2.imwrite(str(path), out):
        raise ImageFileError(f"{path}: could not write (check the folder and the extension)")


@dataclass(frozen=True)
class Pair:
    """Two source images of one scene, matched by file stem."""

    name: str
    a: Path
    b: Path


def _images_by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS:
            found.setdefault(p.stem, p)
    return found


def pair_paths(a: str | Path, b: str | Path) -> tuple[list[Pair], list[tuple[str, str]]]:
    """Pair two files, or two folders by stem; returns (pairs, [(name, reason), ...] unpaired)."""
    a, b = Path(a), Path(b)
    for p in (a, b):
        if not p.exists():
            raise ImageFileError(f"{p}: no such file or folder")
    if a.is_file() and b.is_file():
        return [Pair(a.stem, a, b)], []
    if a.is_dir() != b.is_dir():
        raise ImageFileError(f"{a} and {b}: give two files or two folders, not one of each")
    in_a, in_b = _images_by_stem(a), _images_by_stem(b)
    if not in_a and not in_b:
        raise ImageFileError(f"{a} and {b}: no images found (supported: {', '.join(IMAGE_EXTS)})")
    pairs = [Pair(s, in_a[s], in_b[s]) for s in sorted(in_a) if s in in_b]
    unpaired = [(s, f"no partner in {b}") for s in sorted(in_a) if s not in in_b]
    unpaired += [(s, f"no partner in {a}") for s in sorted(in_b) if s not in in_a]
    return pairs, unpaired
