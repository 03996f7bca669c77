"""FusionNet from genotypes: the published parameter counts, padding/cropping, genotype JSON validation."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_GENOTYPE

from tim_core.genotype import Genotype, GenotypeError, builtin_genotypes, load_genotype
from tim_core.network import FusionNet, count_macs, count_parameters


@pytest.mark.parametrize("name,params", [("tim_ivif", 994_917), ("tim_light", 127_358)])
def test_published_parameter_counts(name: str, params: int) -> None:
    assert count_parameters(FusionNet(load_genotype(name))) == params


def test_builtin_genotypes_listed() -> None:
    assert {"tim_ivif", "tim_light"} <= set(builtin_genotypes())


@pytest.mark.parametrize("h,w", [(17, 23), (32, 32), (5, 6), (3, 3)])
def test_odd_sizes_padded_and_cropped(h: int, w: int) -> None:
    torch.manual_seed(0)
    net = FusionNet(Genotype.from_dict(TINY_GENOTYPE)).eval()
    ir, vis = torch.rand(1, 1, h, w), torch.rand(1, 1, h, w)
    with torch.no_grad():
        y = net(ir, vis)
    assert y.shape == (1, 1, h, w) and torch.isfinite(y).all()


def test_genotype_json_round_trip(tmp_path) -> None:
    g = load_genotype("tim_ivif")
    path = tmp_path / "g.json"
    path.write_text(g.to_json())
    assert load_genotype(path) == g
    assert load_genotype(path).fingerprint() == g.fingerprint()


def test_genotype_errors_name_the_problem(tmp_path) -> None:
    bad = {**TINY_GENOTYPE, "cells": [{"type": "chain", "ops": ["residual_9x9"]}]}
    with pytest.raises(GenotypeError, match=r"cells\[0\].*residual_9x9.*valid: .*sep_conv_3x3"):
        Genotype.from_dict(bad)
    with pytest.raises(GenotypeError, match="cells\\[0\\].type 'pyramid'"):
        Genotype.from_dict({**TINY_GENOTYPE, "cells": [{"type": "pyramid", "ops": ["skip"]}]})
    with pytest.raises(GenotypeError, match="width"):
        Genotype.from_dict({**TINY_GENOTYPE, "width": 7})
    with pytest.raises(GenotypeError, match="unknown field"):
        Genotype.from_dict({**TINY_GENOTYPE, "depth": 3})
    with pytest.raises(GenotypeError, match="built-in: .*tim_ivif"):
        load_genotype("no_such_genotype")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(GenotypeError, match="broken.json: not valid JSON"):
        load_genotype(tmp_path / "broken.json")


def test_macs_scale_with_area() -> None:
    net = FusionNet(load_genotype("tim_light"))
    small, big = count_macs(net, 64, 64), count_macs(net, 128, 128)
    assert big == pytest.approx(4 * small, rel=0.01)
    assert json.loads(load_genotype("tim_light").to_json())["width"] == 48


@pytest.mark.parametrize("h,w", [(17, 23), (5, 6), (2, 3)])
def test_space_to_depth_genotype_keeps_every_size(h: int, w: int) -> None:
    torch.manual_seed(0)
    net = FusionNet(Genotype.from_dict({**TINY_GENOTYPE, "scale": 2})).eval()
    assert net.multiple == 8 and net.stem[0][1].in_channels == 8 and net.head[-1][1].out_channels == 4
    with torch.no_grad():
        y = net(torch.rand(1, 1, h, w), torch.rand(1, 1, h, w))
    assert y.shape == (1, 1, h, w) and torch.isfinite(y).all()


def test_space_to_depth_sees_every_pixel() -> None:
    """A change to any one input pixel reaches the output: pixel_unshuffle drops nothing."""
    torch.manual_seed(0)
    net = FusionNet(load_genotype("tim_compact_s2w16")).eval()
    ir, vis = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        base = net(ir, vis)
        for y, x in ((0, 0), (0, 1), (1, 0), (1, 1), (7, 9)):
            poked = vis.clone()
            poked[..., y, x] += 0.5
            assert (net(ir, poked) - base)[..., y, x].abs() > 0


def test_scale_field_round_trip_and_old_fingerprints_unchanged(tmp_path) -> None:
    g = load_genotype("tim_compact_s2w16")
    assert g.scale == 2 and json.loads(g.to_json())["scale"] == 2
    path = tmp_path / "g.json"
    path.write_text(g.to_json())
    assert load_genotype(path) == g and load_genotype(path).fingerprint() == g.fingerprint()
    light = load_genotype("tim_light")
    assert "scale" not in light.to_dict()  # weights saved before the field existed still match their genotype
    assert Genotype(light.name, light.width, light.cells, 2).fingerprint() != light.fingerprint()
    with pytest.raises(GenotypeError, match="scale must be one of"):
        Genotype.from_dict({**TINY_GENOTYPE, "scale": 3})


def test_blend_head_keeps_the_sources_at_full_resolution() -> None:
    """With the head's last layer at zero the blend head fuses (ir + vis) / 2 exactly, pixel for pixel, though the
    network runs at half resolution; trained coefficients move that blend, and a pixel's change still reaches it."""
    torch.manual_seed(0)
    net = FusionNet(load_genotype("tim_compact_s2w16_blend")).eval()
    assert net.blend and net.head[-1][1].out_channels == 3
    ir, vis = torch.rand(1, 1, 19, 26), torch.rand(1, 1, 19, 26)
    with torch.no_grad():
        assert not torch.allclose(net(ir, vis), (ir + vis) / 2, atol=1e-3)  # random coefficients
        net.head[-1][1].weight.zero_()
        net.head[-1][1].bias.zero_()
        assert torch.allclose(net(ir, vis), (ir + vis) / 2, atol=1e-6)
        net.head[-1][1].bias.copy_(torch.tensor([0.5, -0.5, 0.0]))  # a = 1, b = 0: the infrared image itself
        assert torch.allclose(net(ir, vis), ir, atol=1e-6)


def test_output_field_round_trip_and_validation(tmp_path) -> None:
    g = load_genotype("tim_compact_s2w16_blend")
    assert g.output == "blend" and json.loads(g.to_json())["output"] == "blend"
    path = tmp_path / "g.json"
    path.write_text(g.to_json())
    assert load_genotype(path) == g
    direct = load_genotype("tim_compact_s2w16")
    assert "output" not in direct.to_dict() and direct.fingerprint() != g.fingerprint()
    with pytest.raises(GenotypeError, match="output must be one of direct, blend"):
        Genotype.from_dict({**TINY_GENOTYPE, "output": "weights"})
