"""The candidate operations of TIM's search space, by name, plus the cells' building blocks.

Every operation maps C channels to C channels at the same resolution. The first nine names are the
vocabulary seen in TIM's published genotypes (their wiring reproduces the released parameter counts);
the last three are the cheaper choices a compact network needs (added for the implicit search).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _dw(c: int, k: int, dilation: int = 1) -> nn.Conv2d:
    """Depthwise k x k convolution, 'same' zero padding, no bias."""
    return nn.Conv2d(c, c, k, padding=dilation * (k - 1) // 2, dilation=dilation, groups=c, bias=False)


def _pw(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, bias=False)


class ResidualBlock(nn.Module):
    """x + PReLU(BN(1x1(dw3x3_d2(dw_kxk_d(x))))): TIM's 'Residualblocks_k_d'."""

    def __init__(self, c: int, k: int, dilation: int):
        super().__init__()
        self.body = nn.Sequential(_dw(c, k, dilation), _dw(c, 3, 2), _pw(c, c), nn.BatchNorm2d(c), nn.PReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class DenseBlock(nn.Module):
    """Three grouped convolutions over growing concatenations, 0.333 scaling + skip: 'Denseblocks_k'."""

    def __init__(self, c: int, k: int):
        super().__init__()
        pad = (k - 1) // 2
        self.conv1 = nn.Conv2d(c, c, k, padding=pad, groups=c, bias=False)
        self.conv2 = nn.Conv2d(2 * c, c, k, padding=pad, groups=c, bias=False)
        self.conv3 = nn.Conv2d(3 * c, c, k, padding=pad, groups=c, bias=False)
        self.act = nn.PReLU()  # one slope shared by the three stages, as released

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.act(self.conv1(x))
        x2 = self.act(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.act(self.conv3(torch.cat((x, x1, x2), 1)))
        return x3 * 0.333 + x


class DilConv(nn.Module):
    """x + BN(1x1(dw_kxk_d(ReLU(x)))): 'DilConv_k_d'."""

    def __init__(self, c: int, k: int, dilation: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), _dw(c, k, dilation), _pw(c, c), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SepConv(nn.Sequential):
    """Two stacked ReLU -> depthwise -> 1x1 -> BN (DARTS' separable convolution, no skip)."""

    def __init__(self, c: int, k: int):
        super().__init__(
            nn.ReLU(), _dw(c, k), _pw(c, c), nn.BatchNorm2d(c),
            nn.ReLU(), _dw(c, k), _pw(c, c), nn.BatchNorm2d(c),
        )


class ECABlock(nn.Module):
    """ECA channel attention (1-D conv over pooled channels) -> 3x3 conv -> PReLU: 'ECAattention_k'."""

    def __init__(self, c: int, k: int):
        super().__init__()
        self.eca = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean(dim=(2, 3))  # (N, C): global average pool
        w = torch.sigmoid(self.eca(y.unsqueeze(1))).squeeze(1)
        return self.act(self.conv(x * w[:, :, None, None]))


class SpatialAttention(nn.Module):
    """x * sigmoid(conv_k([max_c x, mean_c x])): 'SPAattention_k'."""

    def __init__(self, c: int, k: int):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat((x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)), 1)
        return x * torch.sigmoid(self.conv(pooled))


class Conv1x1(nn.Sequential):
    """x -> 1x1 conv -> BN -> PReLU: the cheapest learned mixing of channels."""

    def __init__(self, c: int):
        super().__init__(_pw(c, c), nn.BatchNorm2d(c), nn.PReLU())


class DWSep3x3(nn.Module):
    """x + PReLU(BN(1x1(dw3x3(x)))): one depthwise-separable 3x3, half a SepConv."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(_dw(c, 3), _pw(c, c), nn.BatchNorm2d(c), nn.PReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


OPS: dict[str, Callable[[int], nn.Module]] = {
    "sep_conv_3x3": lambda c: SepConv(c, 3),
    "dil_conv_3x3_d2": lambda c: DilConv(c, 3, 2),
    "residual_3x3_d1": lambda c: ResidualBlock(c, 3, 1),
    "residual_3x3_d2": lambda c: ResidualBlock(c, 3, 2),
    "residual_5x5_d1": lambda c: ResidualBlock(c, 5, 1),
    "dense_3x3": lambda c: DenseBlock(c, 3),
    "dense_5x5": lambda c: DenseBlock(c, 5),
    "eca_k3": lambda c: ECABlock(c, 3),
    "spatial_k3": lambda c: SpatialAttention(c, 3),
    "skip": lambda c: nn.Identity(),
    "conv_1x1": Conv1x1,
    "dw_sep_3x3": DWSep3x3,
}
PUBLISHED_OPS = tuple(list(OPS)[:9])
COMPACT_OPS = ("skip", "conv_1x1", "dw_sep_3x3")


def make_op(name: str, c: int) -> nn.Module:
    """Build the operation `name` for c channels; unknown names list the valid ones."""
    if name not in OPS:
        raise ValueError(f"unknown operation {name!r}; valid: {', '.join(OPS)}")
    return OPS[name](c)


# ---- building blocks of the cells -------------------------------------------------------------


class ReLUConvBN(nn.Sequential):
    """Cell pre-process: ReLU -> 1x1 conv -> BN."""

    def __init__(self, c: int):
        super().__init__(nn.ReLU(), _pw(c, c), nn.BatchNorm2d(c))


class BlurPool(nn.Module):
    """Anti-aliased stride-2 down-sampling: reflect pad, [1 2 1]x[1 2 1]/16 depthwise blur (a fixed buffer)."""

    def __init__(self, c: int):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None, :]) / 16.0
        self.register_buffer("kernel", k.expand(c, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel, stride=2, groups=x.shape[1])


class ResidualDown(nn.Module):
    """C -> 2C at half resolution: conv path + blur-pool/1x1 shortcut, summed."""

    def __init__(self, c: int):
        super().__init__()
        self.top = nn.Sequential(
            _pw(c, c), nn.PReLU(), nn.Conv2d(c, c, 3, padding=1, bias=False), nn.PReLU(),
            BlurPool(c), _pw(c, 2 * c),
        )
        self.bot = nn.Sequential(BlurPool(c), _pw(c, 2 * c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(x) + self.bot(x)


class ResidualUp(nn.Module):
    """C -> C/2 at double resolution: transposed-conv path + bilinear/1x1 shortcut, summed."""

    def __init__(self, c: int):
        super().__init__()
        self.top = nn.Sequential(
            _pw(c, c), nn.PReLU(),
            nn.ConvTranspose2d(c, c, 3, stride=2, padding=1, output_padding=1, bias=False), nn.PReLU(),
            _pw(c, c // 2),
        )
        self.bot = _pw(c, c // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 1x1 conv and bilinear up-sampling commute: mixing channels first is 4x cheaper, same result.
        up = F.interpolate(self.bot(x), scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.top(x) + up


class SKFF(nn.Module):
    """Selective-kernel feature fusion of equal-shaped branches: softmax attention over branches per channel."""

    def __init__(self, c: int, branches: int = 3, reduction: int = 8):
        super().__init__()
        d = max(c // reduction, 4)
        self.squeeze = nn.Sequential(_pw(c, d), nn.PReLU())
        self.fcs = nn.ModuleList(_pw(d, c) for _ in range(branches))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(feats, dim=1)  # (N, branches, C, H, W)
        z = self.squeeze(stacked.sum(dim=1).mean(dim=(2, 3), keepdim=True))
        attention = torch.softmax(torch.stack([fc(z) for fc in self.fcs], dim=1), dim=1)
        return (stacked * attention).sum(dim=1)
