"""A tiny convolutional encoder with a top-down neck: stride-4 features for the task heads (CPU-trainable)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution -> BN -> ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class DWBlock(nn.Module):
    """x + BN(1x1(ReLU(dw3x3(x)))): a residual depthwise-separable block."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False), nn.ReLU(inplace=True),
                                  nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class TinyFPN(nn.Module):
    """(N, 1, H, W) image in [0, 1] -> (N, width, H/4, W/4) features; H and W multiples of 16."""

    def __init__(self, width: int = 32, in_channels: int = 1):
        super().__init__()
        c1, c2, c3, c4 = width // 2, width, 2 * width, 3 * width
        self.stem = conv_bn(in_channels, c1, 2)
        self.s4 = nn.Sequential(conv_bn(c1, c2, 2), DWBlock(c2))
        self.s8 = nn.Sequential(conv_bn(c2, c3, 2), DWBlock(c3))
        self.s16 = nn.Sequential(conv_bn(c3, c4, 2), DWBlock(c4), DWBlock(c4))
        self.lat4, self.lat8, self.lat16 = (nn.Conv2d(c, width, 1) for c in (c2, c3, c4))
        self.out = DWBlock(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f4 = self.s4(self.stem(x - 0.5))  # centre the [0, 1] input; BN handles the rest
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        p8 = self.lat8(f8) + F.interpolate(self.lat16(f16), scale_factor=2.0, mode="nearest")
        p4 = self.lat4(f4) + F.interpolate(p8, scale_factor=2.0, mode="nearest")
        return self.out(p4)
