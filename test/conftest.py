"""Shared fixtures: paths to the repository, samples and ../shared/data, and small random-weight bundles."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
SHARED_DATA = ROOT.parent / "shared" / "data"

TINY_GENOTYPE = {
    "name": "tiny_test",
    "width": 8,
    "cells": [{"type": "multiscale", "ops": ["residual_3x3_d1", "dil_conv_3x3_d2"]},
              {"type": "chain", "ops": ["dense_3x3", "eca_k3"]}],
}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread in the test process: on a shared 2-core machine OpenMP threads spin and run tiny convs
    far slower; node subprocesses keep their own settings."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def needs_shared_data(sub: str = "") -> Path:
    """The ../shared/data path (or a sub-folder), skipping the test with a reason when absent."""
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"{path} not present (tests that need ../shared/data run in CI and on dev machines)")
    return path


@pytest.fixture
def tiny_bundle(tmp_path: Path) -> Path:
    """A bundle of the tiny genotype with random weights (never shipped; tests only)."""
    from tim_core.genotype import Genotype
    from tim_core.network import FusionNet
    from tim_core.runtime import save_bundle

    torch.manual_seed(0)
    net = FusionNet(Genotype.from_dict(TINY_GENOTYPE))
    return save_bundle(tmp_path / "tiny_bundle", net, {"task": "fusion", "note": "random weights for tests"})
