"""torch's thread count is set for a scope and restored: a Fuser or a trainer never changes it for the process."""

from __future__ import annotations

import numpy as np
import torch

from tim_core.runtime import Fuser
from tim_core.threads import torch_threads
from tim_core.trainer import training_run


def test_torch_threads_restores_the_count_even_after_an_error() -> None:
    before = torch.get_num_threads()
    with torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    try:
        with torch_threads(before + 1):
            raise KeyError("boom")
    except KeyError:
        pass
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_a_fuser_uses_its_threads_in_its_calls_only(tiny_bundle) -> None:
    before = torch.get_num_threads()
    fuser = Fuser(tiny_bundle, device="cpu", threads=before + 1)  # the warm-up call runs here
    assert torch.get_num_threads() == before
    seen = []

    def net(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return a

    fuser.net = net
    fuser(np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.uint8))
    assert seen == [before + 1] and torch.get_num_threads() == before


def test_a_training_run_restores_the_thread_count(tmp_path) -> None:
    before = torch.get_num_threads()
    with training_run("train", tmp_path / "run", steps=1, seed=0, threads=before + 1) as run:
        assert torch.get_num_threads() == before + 1 and run.checkpoint_path.parent.is_dir()
    assert torch.get_num_threads() == before
