"""Hostile inputs to the commands and the bundle loader: each gets one clear message, and nothing is lost.

Every case here was a crash, a raw traceback, silent acceptance or lost files before (issue "Reliability").
Node-side cases (frames over DDS) are in test_hostile_node.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, SAMPLES
from safetensors.torch import load_file, save_file

from tim_core.bundle import CARD, GENOTYPE, WEIGHTS, BundleError, load_bundle, save_bundle
from tim_core.cli import main
from tim_core.files import write_image


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _pairs(tmp_path: Path, n: int = 3, size: tuple[int, int] = (40, 48)) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    ir, vis = tmp_path / "ir", tmp_path / "vis"
    for i in range(n):
        write_image(ir / f"p{i}.png", rng.integers(0, 255, size, dtype=np.uint8))
        write_image(vis / f"p{i}.png", rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    return ir, vis


# ------------------------------------------------------------------------------------------- tim fuse


def test_fuse_out_equal_to_input_is_refused(tmp_path, tiny_bundle, capsys) -> None:
    ir, vis = _pairs(tmp_path)
    before = _digest(tmp_path)
    for out in (vis, ir):
        code = main(["fuse", "--ir", str(ir), "--vis", str(vis), "--out", str(out), "--model", str(tiny_bundle),
                     "--quiet", "--overwrite"])
        assert code == 2
        assert "is also an input folder" in capsys.readouterr().err
    assert _digest(tmp_path) == before


def test_fuse_never_replaces_files_unasked(tmp_path, tiny_bundle, capsys) -> None:
    ir, vis = _pairs(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "p1.png").write_bytes(b"my own file")
    args = ["fuse", "--ir", str(ir), "--vis", str(vis), "--out", str(out), "--model", str(tiny_bundle), "--quiet"]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "p1.png").read_bytes() == b"my own file"
    assert main([*args, "--overwrite"]) == 0
    assert (out / "p1.png").read_bytes() != b"my own file"


def test_one_bad_pair_does_not_abort_the_batch(tmp_path, tiny_bundle, capsys) -> None:
    ir, vis = _pairs(tmp_path, 3)
    (ir / "p1.png").write_bytes(b"\x89PNG not really")  # unreadable
    write_image(ir / "p2.png", np.zeros((3, 3), np.uint8))  # too small for the network
    write_image(vis / "p2.png", np.zeros((3, 3, 3), np.uint8))
    out = tmp_path / "out"
    code = main(["fuse", "--ir", str(ir), "--vis", str(vis), "--out", str(out), "--model", str(tiny_bundle),
                 "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    assert "1 fused, 2 failed" in captured.out
    assert "failed p1" in captured.err and "failed p2" in captured.err and "at least" in captured.err
    assert (out / "p0.png").is_file() and not (out / "p1.png").exists()
    assert "Traceback" not in captured.err


def test_unwritable_out_is_one_message(tmp_path, tiny_bundle, capsys) -> None:
    ir, vis = _pairs(tmp_path, 1)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code = main(["fuse", "--ir", str(ir), "--vis", str(vis), "--out", str(blocker / "sub"), "--model",
                 str(tiny_bundle), "--quiet"])
    assert code == 2
    assert "cannot create the output folder" in capsys.readouterr().err


def test_two_files_with_one_stem_are_reported_not_guessed(tmp_path, tiny_bundle, capsys) -> None:
    ir, vis = _pairs(tmp_path, 2)
    shutil.copy(SAMPLES / "ir" / "FLIR_00018.jpg", ir / "p0.jpg")
    code = main(["fuse", "--ir", str(ir), "--vis", str(vis), "--out", str(tmp_path / "o"), "--model",
                 str(tiny_bundle), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    assert "p0.jpg and p0.png" in captured.err or "p0.png and p0.jpg" in captured.err
    assert "1 fused, 1 failed" in captured.out


# ---------------------------------------------------------------------------------------------- bundles


def _broken(tiny_bundle: Path, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    shutil.copytree(tiny_bundle, path)
    return path


GENOTYPE_CASES = {
    "cells_int": lambda g: {**g, "cells": 5},
    "nested_lists": lambda g: {**g, "cells": [[["a"]]]},
    "ops_not_names": lambda g: {**g, "cells": [{"type": "chain", "ops": [[1, 2]]}]},
    "width_huge": lambda g: {**g, "width": 10**6},
    "width_bool": lambda g: {**g, "width": True},
}


@pytest.mark.parametrize("case", sorted(GENOTYPE_CASES))
def test_genotype_of_the_wrong_shape(case, tiny_bundle, tmp_path) -> None:
    b = _broken(tiny_bundle, tmp_path, case)
    g = json.loads((b / GENOTYPE).read_text())
    (b / GENOTYPE).write_text(json.dumps(GENOTYPE_CASES[case](g)))
    with pytest.raises(BundleError, match="genotype"):
        load_bundle(b)


@pytest.mark.parametrize("case", ["list_card", "deep", "binary", "directory", "dev_zero", "huge_head",
                                  "huge_input", "bool_input"])
def test_bundle_json_hostile(case, tiny_bundle, tmp_path, capsys) -> None:
    b = _broken(tiny_bundle, tmp_path, case)
    card = json.loads((b / CARD).read_text())
    if case == "list_card":
        (b / CARD).write_text("[1, 2, 3]")
    elif case == "deep":
        (b / CARD).write_text("[" * 200_000 + "]" * 200_000)
    elif case == "binary":
        (b / GENOTYPE).write_bytes(bytes(range(256)) * 4)
    elif case == "directory":
        (b / GENOTYPE).unlink()
        (b / GENOTYPE).mkdir()
    elif case == "dev_zero":
        (b / GENOTYPE).unlink()
        os.symlink("/dev/zero", b / GENOTYPE)
    elif case == "huge_head":
        (b / CARD).write_text(json.dumps({**card, "heads": ["detection"], "classes": ["a"],
                                          "head_width": {"detection": 10**9}, "task_input": [64, 64]}))
    elif case == "huge_input":
        (b / CARD).write_text(json.dumps({**card, "heads": ["detection"], "classes": ["a"],
                                          "head_width": {"detection": 8}, "task_input": [10**6, 10**6]}))
    elif case == "bool_input":
        (b / CARD).write_text(json.dumps({**card, "task_input": [True, 64]}))
    with pytest.raises(BundleError) as err:
        load_bundle(b)
    assert str(b) in str(err.value)
    assert main(["info", str(b)]) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("case", ["int64", "bool", "nan", "inf", "extra_tensor"])
def test_weights_must_be_finite_floats_and_expected(case, tiny_bundle, tmp_path) -> None:
    b = _broken(tiny_bundle, tmp_path, case)
    from safetensors import safe_open

    with safe_open(str(b / WEIGHTS), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(b / WEIGHTS)
    key = next(iter(tensors))
    if case == "int64":
        tensors[key] = tensors[key].to(torch.int64)
    elif case == "bool":
        tensors[key] = tensors[key] > 0
    elif case == "nan":
        tensors[key] = tensors[key].clone()
        tensors[key].view(-1)[0] = float("nan")
    elif case == "inf":
        tensors[key] = tensors[key].clone()
        tensors[key].view(-1)[0] = float("inf")
    else:
        tensors["payload.data"] = torch.zeros(4)
    save_file(tensors, str(b / WEIGHTS), metadata=meta)
    with pytest.raises(BundleError, match="dtype|NaN|unexpected tensor"):
        load_bundle(b)


def test_a_failed_export_leaves_the_old_bundle_whole(tiny_bundle, monkeypatch) -> None:
    net, card, _ = load_bundle(tiny_bundle)
    before = _digest(tiny_bundle)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # a kill in the middle of writing the weights

    monkeypatch.setattr("tim_core.bundle.save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_bundle(tiny_bundle, net, {**card, "note": "new"})
    assert _digest(tiny_bundle) == before
    load_bundle(tiny_bundle)


def test_export_refuses_to_replace_a_folder_that_is_not_a_bundle(tmp_path, tiny_bundle) -> None:
    net, card, _ = load_bundle(tiny_bundle)
    target = tmp_path / "my_stuff"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(BundleError, match="not a model bundle"):
        save_bundle(target, net, card)
    assert (target / "notes.txt").read_text() == "keep me"


def test_nan_weights_are_never_exported(tmp_path, tiny_bundle) -> None:
    net, card, _ = load_bundle(tiny_bundle)
    with torch.no_grad():
        next(net.parameters()).fill_(float("nan"))
    with pytest.raises(BundleError, match="NaN"):
        save_bundle(tmp_path / "diverged", net, card)
    assert not (tmp_path / "diverged").exists()


# ------------------------------------------------------------------------------------------- tim train

BAD_TRAIN = {
    "negative_lr": (["--lr", "-0.5"], "lr: -0.5"),
    "zero_crop": (["--crop", "0"], "crop: 0"),
    "zero_ckpt_every": (["--ckpt_every", "0"], "ckpt_every: 0"),
    "tpu": (["--device", "tpu"], "device: 'tpu'"),
    "negative_steps": (["--steps", "-5"], "steps: -5"),
    "zero_batch": (["--batch", "0"], "batch: 0"),
    "negative_weight": (["--w_gradient", "-1"], "w_gradient: -1"),
    "nan_lr": (["--lr", "nan"], "lr: nan"),
    "zero_val_every": (["--val_every", "0"], "val_every: 0"),
    "val_fraction_one": (["--val_fraction", "1.0"], "val_fraction"),
    "text_steps": (["--steps", "many"], "steps must be a number"),
    "unknown_key": (["--stpes", "5"], "unknown key 'stpes'"),
}


@pytest.mark.parametrize("case", sorted(BAD_TRAIN))
def test_bad_training_config_is_one_message(case, tmp_path, capsys) -> None:
    extra, expected = BAD_TRAIN[case]
    code = main(["train", "--out", str(tmp_path / "run"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_every_config_problem_is_listed_at_once(tmp_path, capsys) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("lr: -1\nbatch: 0\ncrop: 2\ndevice: tpu\n")
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert all(s in err for s in ("lr: -1", "batch: 0", "crop: 2", "device: 'tpu'")), err


def _tiny_train(tmp_path: Path, out: Path, *extra: str) -> list[str]:
    from conftest import TINY_GENOTYPE

    geno = tmp_path / "tiny.json"
    geno.write_text(json.dumps(TINY_GENOTYPE))
    data = tmp_path / "data"
    if not data.exists():
        _pairs(data, 6, (48, 48))
        (data / "ir").rename(data / "a")
        (data / "vis").rename(data / "b")
    return ["train", "--genotype", str(geno), "--data", f'["{data}:a,b"]', "--val_fraction", "0.5", "--steps", "2",
            "--batch", "2", "--crop", "16", "--val_crop", "16", "--val_images", "1", "--ckpt_every", "1",
            "--val_every", "1", "--eval_metrics", "false", "--device", "cpu", "--out", str(out), *extra]


def test_used_run_folder_needs_resume_or_overwrite(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(_tiny_train(tmp_path, out)) == 0
    first = _digest(out / "bundle")
    assert main(_tiny_train(tmp_path, out)) == 2
    assert "--resume" in capsys.readouterr().err
    assert _digest(out / "bundle") == first
    assert main(_tiny_train(tmp_path, out, "--overwrite")) == 0


def test_truncated_checkpoint_and_other_genotype_are_clear(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(_tiny_train(tmp_path, out)) == 0
    ckpt = out / "checkpoint.pt"
    good = ckpt.read_bytes()
    ckpt.write_bytes(good[: len(good) // 2])
    assert main([*_tiny_train(tmp_path, out, "--steps", "4"), "--resume"]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    ckpt.write_bytes(good)
    assert main([*_tiny_train(tmp_path, out, "--steps", "4", "--genotype", "tim_light"), "--resume"]) == 2
    assert "does not fit" in capsys.readouterr().err


def test_checkpoint_layouts_old_resumes_newer_and_foreign_are_clear(tmp_path, capsys, monkeypatch) -> None:
    """Layout 1 (the flat dict written before tim_core.checkpoint.Checkpoint) resumes exactly; a layout this
    version does not know, or another trainer's checkpoint, is one message saying which."""
    import tim_core.checkpoint as checkpoint_mod

    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(_tiny_train(tmp_path, full, "--steps", "4")) == 0
    real_save = checkpoint_mod.save_atomic

    def killed_after_step_2(obj, path):
        real_save(obj, path)
        if obj["step"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_mod, "save_atomic", killed_after_step_2)
    assert main(_tiny_train(tmp_path, cut, "--steps", "4")) == 130
    monkeypatch.setattr(checkpoint_mod, "save_atomic", real_save)
    assert capsys.readouterr().err.rstrip().endswith("tim train: interrupted")
    ckpt = cut / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    assert state["layout"] == checkpoint_mod.LAYOUT and state["trainer"] == "train"

    flat = {**state["states"], **state["extra"], "step": 2, "torch_rng": state["torch_rng"], "config": state["config"]}
    for bad, message in (({**state, "layout": 99}, "checkpoint layout 99"),
                         ({**state, "trainer": "search"}, "written by `tim search`, not `tim train`"),
                         ({k: v for k, v in flat.items() if k != "optimizer"}, "missing optimizer")):
        torch.save(bad, ckpt)
        assert main([*_tiny_train(tmp_path, cut, "--steps", "4"), "--resume"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    torch.save(flat, ckpt)  # layout 1: no "layout" key, state dicts beside step and RNG state
    assert main([*_tiny_train(tmp_path, cut, "--steps", "4"), "--resume"]) == 0
    resumed, uninterrupted = load_bundle(cut / "bundle")[0].state_dict(), load_bundle(full / "bundle")[0].state_dict()
    assert all(torch.equal(v, resumed[k]) for k, v in uninterrupted.items())


# ------------------------------------------------------------------------------------------- demo, bags


def test_demo_never_clears_a_folder_it_did_not_make(tmp_path) -> None:
    from tim_fusion_ros.demo import MARKER, claim_output

    mine = tmp_path / "important"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(FileExistsError, match="did not write"):
        claim_output(mine, overwrite=False)
    assert (mine / "thesis.tex").read_text() == "years of work"
    demo = tmp_path / "demo"
    claim_output(demo, overwrite=False)
    (demo / "report.html").write_text("old")
    claim_output(demo, overwrite=False)  # an earlier demo's folder is the demo's to clear
    assert not (demo / "report.html").exists() and (demo / MARKER).is_file()


@pytest.mark.parametrize("argv", [["-m", "tim_fusion_ros.demo", "--rate", "0"],
                                  ["-m", "tim_fusion_ros.bag_cli", "make", "--ir", "x", "--vis", "y", "--out", "z",
                                   "--rate", "0"]])
def test_zero_rates_are_refused_up_front(argv, tmp_path) -> None:
    res = subprocess.run([sys.executable, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 2
    assert "must be a number > 0" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "z").exists()


def test_failed_bag_write_leaves_nothing_and_a_retry_works(tmp_path) -> None:
    pytest.importorskip("rclpy", reason="rclpy (ROS 2 wheels) not installed; run `make test`")
    from tim_fusion_ros.bag import make_bag

    ir, vis = _pairs(tmp_path, 2)
    (vis / "p1.png").write_bytes(b"broken")  # read while writing: the bag fails half-way
    out = tmp_path / "bag"
    with pytest.raises(Exception):
        make_bag(ir, vis, out)
    assert not out.exists() and not list(tmp_path.glob(".bag.*"))
    write_image(vis / "p1.png", np.zeros((40, 48, 3), np.uint8))
    assert make_bag(ir, vis, out) == 2
