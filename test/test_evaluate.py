"""`tim eval` logic: three folders paired by stem, CSV/Markdown/JSON reports, clear errors."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tim_core.commands import eval as eval_command
from tim_core.commands.common import run_command
from tim_core.evaluate import evaluate_folders
from tim_core.files import ImageFileError, read_image, write_image
from tim_core.metrics import FAST_METRICS, METRIC_NAMES, compute_metrics

NAMES = ("a01", "b02", "c03")


def _image(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    noise = rng.integers(0, 256, shape).astype(np.float64)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 1.5) * 2 - 128, 0, 255).astype(np.uint8)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    """ir/ (grey PNG), vis/ (RGB PNG, one JPEG), fused/ (grey PNG = max of IR and luma), 48x64."""
    rng = np.random.default_rng(0)
    ir, vis, fused = (tmp_path / d for d in ("ir", "vis", "fused"))
    for name in NAMES:
        a, rgb = _image(rng, (48, 64)), _image(rng, (48, 64, 3))
        write_image(ir / f"{name}.png", a)
        write_image(vis / f"{name}{'.jpg' if name == 'b02' else '.png'}", rgb)
        write_image(fused / f"{name}.png", np.maximum(a, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)))
    return ir, vis, fused


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tim eval")
    eval_command.add_arguments(parser)
    return parser.parse_args(list(argv))


def run_eval(args: argparse.Namespace) -> int:
    """`tim eval` as the `tim` command runs it (errors: one line, exit status 2)."""
    return run_command("tim eval", eval_command.run, args, eval_command.ERRORS)


def test_reports_match_per_image_metrics(folders: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ir, vis, fused = folders
    prefix = tmp_path / "reports" / "run.v1"  # a dot in the prefix must not become a suffix
    res = evaluate_folders(ir, vis, fused, out_prefix=prefix, progress=False)
    assert res["convention"] == "matlab" and res["n"] == 3
    assert list(res["per_image"]) == list(NAMES) and list(res["mean"]) == list(METRIC_NAMES)
    direct = compute_metrics(read_image(ir / "b02.png"), read_image(vis / "b02.jpg"), read_image(fused / "b02.png"))
    assert res["per_image"]["b02"] == direct
    for m in METRIC_NAMES:
        assert res["mean"][m] == pytest.approx(np.mean([v[m] for v in res["per_image"].values()]))

    rows = list(csv.reader((tmp_path / "reports" / "run.v1.csv").open()))
    assert rows[0] == ["name", *METRIC_NAMES] and [r[0] for r in rows[1:]] == list(NAMES)
    assert float(rows[2][METRIC_NAMES.index("SSIM") + 1]) == direct["SSIM"]  # full precision in the CSV
    md = (tmp_path / "reports" / "run.v1.md").read_text().splitlines()
    assert "matlab" in md[0] and "3 image" in md[0]
    assert md[2].startswith("| convention | n | EN |") and md[4].startswith("| matlab | 3 |")
    assert json.loads((tmp_path / "reports" / "run.v1.json").read_text()) == res


def test_cddfuse_subset_and_single_files(folders: tuple[Path, Path, Path]) -> None:
    ir, vis, fused = folders
    res = evaluate_folders(ir, vis, fused, convention="cddfuse", progress=False)
    assert list(res["mean"]) == list(FAST_METRICS)  # no Nabf in the cddfuse convention
    one = evaluate_folders(ir / "a01.png", vis / "a01.png", fused / "a01.png", "cddfuse", ["MI", "EN"], progress=False)
    assert one["n"] == 1 and list(one["mean"]) == ["EN", "MI"]
    assert one["per_image"]["a01"] == {k: res["per_image"]["a01"][k] for k in ("EN", "MI")}


def test_unpaired_file_is_named(folders: tuple[Path, Path, Path]) -> None:
    ir, vis, fused = folders
    write_image(fused / "zz99.png", np.zeros((48, 64), np.uint8))
    with pytest.raises(ImageFileError, match=r"zz99: no partner in .*ir.*same stem"):
        evaluate_folders(ir, vis, fused, progress=False)
    (fused / "zz99.png").unlink()
    (vis / "c03.png").unlink()
    with pytest.raises(ImageFileError, match=r"c03: no partner in .*vis"):
        evaluate_folders(ir, vis, fused, progress=False)


def test_size_mismatch_names_the_files(folders: tuple[Path, Path, Path]) -> None:
    ir, vis, fused = folders
    write_image(fused / "b02.png", np.zeros((40, 64), np.uint8))
    with pytest.raises(ImageFileError, match=r"b02\.png \(64x40\).*sizes differ"):
        evaluate_folders(ir, vis, fused, progress=False)


def test_16_bit_input_is_refused(folders: tuple[Path, Path, Path]) -> None:
    ir, vis, fused = folders
    write_image(ir / "a01.png", np.full((48, 64), 3000, np.uint16))
    with pytest.raises(ImageFileError, match=r"a01\.png: uint16 image.*8-bit"):
        evaluate_folders(ir, vis, fused, progress=False)


def test_run_eval_prints_table_and_writes_reports(folders: tuple[Path, Path, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    ir, vis, fused = folders
    out = tmp_path / "res"
    args = _parse("--ir", str(ir), "--vis", str(vis), "--fused", str(fused), "--convention", "cddfuse",
                  "--metrics", "SSIM, EN", "--out", str(out), "--no-progress")
    assert run_eval(args) == 0
    printed = capsys.readouterr().out
    assert "| convention | n | EN | SSIM |" in printed and "| cddfuse | 3 |" in printed
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["convention"] == "cddfuse" and list(saved["mean"]) == ["EN", "SSIM"]


@pytest.mark.parametrize("extra, message", [
    (["--metrics", "EN,FMI"], "unknown metric(s) 'FMI'"),
    (["--convention", "cddfuse", "--metrics", "Nabf"], "'Nabf' for convention 'cddfuse'"),
    (["--fused", "/nonexistent/fused"], "/nonexistent/fused: no such file or folder"),
])
def test_run_eval_bad_input_exits_2_with_one_line(folders: tuple[Path, Path, Path], extra: list[str], message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    ir, vis, fused = folders
    args = _parse("--ir", str(ir), "--vis", str(vis), "--fused", str(fused), "--no-progress", *extra)
    assert run_eval(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
