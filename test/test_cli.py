"""The `tim` command: fuse on real sample pairs, info, and its error messages."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import SAMPLES

from tim_core.cli import main
from tim_core.files import read_image


def test_fuse_samples_folder(tiny_bundle, tmp_path, capsys) -> None:
    out = tmp_path / "fused"
    assert (
        main(
            [
                "fuse",
                "--ir",
                str(SAMPLES / "ir"),
                "--vis",
                str(SAMPLES / "vis"),
                "--out",
                str(out),
                "--model",
                str(tiny_bundle),
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    names = sorted(p.stem for p in (SAMPLES / "vis").iterdir())
    assert sorted(p.stem for p in out.glob("*.png")) == names
    for name in names:
        vis = read_image(next((SAMPLES / "vis").glob(name + ".*")))
        fused = read_image(out / f"{name}.png")
        assert fused.shape == vis.shape and fused.dtype == np.uint8  # colour visible -> colour output
    assert f"{len(names)} fused, 0 failed" in capsys.readouterr().out


def test_fuse_reports_missing_partner_and_size_mismatch(tiny_bundle, tmp_path, capsys) -> None:
    ir_dir, vis_dir = tmp_path / "ir", tmp_path / "vis"
    shutil.copytree(SAMPLES / "ir", ir_dir)
    shutil.copytree(SAMPLES / "vis", vis_dir)
    (vis_dir / "00055D.png").unlink()
    shutil.copy(SAMPLES / "ir" / "FLIR_00018.jpg", ir_dir / "00127D.png")  # wrong size for its partner
    code = main(
        [
            "fuse",
            "--ir",
            str(ir_dir),
            "--vis",
            str(vis_dir),
            "--out",
            str(tmp_path / "o"),
            "--model",
            str(tiny_bundle),
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "00055D: no partner in" in captured.err
    assert "00127D" in captured.err and "resize" in captured.err
    assert "3 fused, 2 failed" in captured.out
    assert (
        main(
            [
                "fuse",
                "--ir",
                str(ir_dir),
                "--vis",
                str(vis_dir),
                "--out",
                str(tmp_path / "o2"),
                "--model",
                str(tiny_bundle),
                "--device",
                "cpu",
                "--quiet",
                "--resize-ir",
            ]
        )
        == 1
    )  # only the partner missing
    assert "4 fused, 1 failed" in capsys.readouterr().out


def test_fuse_without_trained_model_says_how(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("tim_core.bundle.models_dirs", lambda: [tmp_path])
    code = main(["fuse", "--ir", str(SAMPLES / "ir"), "--vis", str(SAMPLES / "vis"), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "no trained model yet" in err and "tim train" in err


def test_info_published_genotype(capsys) -> None:
    assert main(["info", "tim_ivif", "--size", "64x64"]) == 0
    assert "994,917 parameters" in capsys.readouterr().out
    assert main(["info", "tim_light", "--json", "--size", "64x64"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 127_358 and info["macs"] > 0 and info["genotype"]["cells"][0]["ops"][1] == "eca_k3"


def test_info_bundle_shows_card(tiny_bundle, capsys) -> None:
    assert main(["info", str(tiny_bundle)]) == 0
    assert "random weights for tests" in capsys.readouterr().out


def test_info_unknown(capsys) -> None:
    assert main(["info", "nonexistent"]) == 2
    assert "neither a genotype nor a bundle" in capsys.readouterr().err


def test_info_shipped_bundle_by_name(capsys) -> None:
    assert main(["info", "tim_ivif_base", "--size", "64x64", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 15_088 and info["card"]["genotype"] == "tim_blend_w16"  # base_v16 (quality report)
    assert info["card"]["validation"]["convention"] == "matlab"


def test_bad_size_flag() -> None:
    with pytest.raises(SystemExit):
        main(["info", "tim_ivif", "--size", "640"])


def test_every_documented_subcommand_exists(capsys) -> None:
    from tim_core.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == {"fuse", "info", "eval", "train", "search", "meta", "adapt", "guide", "bench", "export",
                                "register", "calibrate"}
