"""Image files on disk: reading, writing, and pairing two folders by file stem."""

from __future__ import annotations

import os
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
    try:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # e.g. a header claiming more pixels than OpenCV's decoding limit
        raise ImageFileError(f"{path}: cannot decode ({e.msg.strip() or 'OpenCV error'})") from None
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
    """Write a (H, W) grey or (H, W, 3) RGB image atomically; the folder is created if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")  # same extension: cv2 picks the codec
    try:
        ok = cv2.imwrite(str(tmp), out)
    except cv2.error as e:
        raise ImageFileError(f"{path}: could not write ({e.msg.strip()})") from None
    if not ok:
        tmp.unlink(missing_ok=True)
        raise ImageFileError(f"{path}: could not write (check the folder and the extension)")
    os.replace(tmp, path)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Text to a temporary file beside `path`, then rename: readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Pair:
    """Two source images of one scene, matched by file stem."""

    name: str
    a: Path
    b: Path


def _images_by_stem(folder: Path) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """Images of a folder by stem, and the stems held by two files (a.png and a.jpg): those are not guessed."""
    found: dict[str, Path] = {}
    clashes: dict[str, list[str]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS:
            if p.stem in found:
                clashes.setdefault(p.stem, [found[p.stem].name]).append(p.name)
            else:
                found[p.stem] = p
    for stem in clashes:
        del found[stem]
    return found, [(s, f"{' and '.join(names)} in {folder} share a name; keep one") for s, names in clashes.items()]


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
    (in_a, clash_a), (in_b, clash_b) = _images_by_stem(a), _images_by_stem(b)
    if not in_a and not in_b and not clash_a and not clash_b:
        raise ImageFileError(f"{a} and {b}: no images found (supported: {', '.join(IMAGE_EXTS)})")
    clashed = {s for s, _ in clash_a + clash_b}
    pairs = [Pair(s, in_a[s], in_b[s]) for s in sorted(in_a) if s in in_b]
    unpaired = clash_a + clash_b
    unpaired += [(s, f"no partner in {b}") for s in sorted(in_a) if s not in in_b and s not in clashed]
    unpaired += [(s, f"no partner in {a}") for s in sorted(in_b) if s not in in_a and s not in clashed]
    return pairs, unpaired


def check_output_folder(out: Path, inputs: list[Path], files: list[str], overwrite: bool, command: str) -> None:
    """Refuse an output folder that is an input folder, that cannot be written, or whose files would be replaced.

    `files` are the names the command will write into `out`; existing ones are only replaced with `overwrite`.
    """
    out_r = out.resolve()
    for src in inputs:
        folder = src if src.is_dir() else src.parent
        if folder.resolve() == out_r:
            raise ImageFileError(f"{out}: is also an input folder ({src}); choose another --out so no input "
                                 "is overwritten")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ImageFileError(f"{out}: cannot create the output folder ({e.strerror}); "
                             "choose a writable --out") from None
    if not os.access(out, os.W_OK):
        raise ImageFileError(f"{out}: the output folder is not writable; choose a writable --out")
    existing = [f for f in files if (out / f).exists()]
    if existing and not overwrite:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise ImageFileError(f"{out}: would replace {shown}; pass --overwrite to replace them or choose another "
                             f"--out ({command})")
