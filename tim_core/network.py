"""FusionNet: TIM's fusion network N_F built from a genotype (stem, cells, head; pad to /4 and crop back)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .genotype import Cell, Genotype
from .ops import SKFF, ReLUConvBN, ResidualDown, ResidualUp, make_op


class ReflectConv(nn.Sequential):
    """Reflect padding then a k x k convolution with bias (the stem's and head's layer)."""

    def __init__(self, c_in: int, c_out: int, k: int):
        super().__init__(nn.ReflectionPad2d((k - 1) // 2), nn.Conv2d(c_in, c_out, k))


class ChainCell(nn.Module):
    """Pre-process (ReLU -> 1x1 -> BN), then the cell's operations in sequence."""

    def __init__(self, c: int, ops: tuple[str, ...]):
        super().__init__()
        self.pre = ReLUConvBN(c)
        self.ops = nn.Sequential(*(make_op(name, c) for name in ops))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops(self.pre(x))


class MultiScaleCell(nn.Module):
    """The chain at scales 1, 1/2, 1/4 (C, 2C, 4C channels), up-sampled back and merged by SKFF, plus a skip."""

    def __init__(self, c: int, ops: tuple[str, ...]):
        super().__init__()
        self.pre = ReLUConvBN(c)
        self.down2 = ResidualDown(c)
        self.down4 = nn.Sequential(ResidualDown(c), ResidualDown(2 * c))
        self.chains = nn.ModuleList(nn.Sequential(*(make_op(n, w) for n in ops)) for w in (c, 2 * c, 4 * c))
        self.up2 = ResidualUp(2 * c)
        self.up4 = nn.Sequential(ResidualUp(4 * c), ResidualUp(2 * c))
        self.skff = SKFF(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        s0 = self.chains[0](x)
        s1 = self.up2(self.chains[1](self.down2(x)))
        s2 = self.up4(self.chains[2](self.down4(x)))
        return x + self.skff([s0, s1, s2])


def make_cell(cell: Cell, c: int) -> nn.Module:
    return MultiScaleCell(c, cell.ops) if cell.type == "multiscale" else ChainCell(c, cell.ops)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad bottom/right to a multiple (reflect where the image allows it, else replicate)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


def make_stem(c: int, c_in: int = 2) -> nn.Sequential:
    """TIM's stem: reflect-pad 3x3 conv 2 -> 2C, PReLU, 3x3 conv 2C -> C, PReLU (c_in inputs after space-to-depth)."""
    return nn.Sequential(ReflectConv(c_in, 2 * c, 3), nn.PReLU(), ReflectConv(2 * c, c, 3), nn.PReLU())


def make_head(c: int, c_out: int = 1) -> nn.Sequential:
    """TIM's head: 3x3 C -> C, PReLU, 3x3 C -> C/2, 1x1 C/2 -> 1, no output activation (c_out before depth-to-space)."""
    return nn.Sequential(ReflectConv(c, c, 3), nn.PReLU(), ReflectConv(c, c // 2, 3), ReflectConv(c // 2, c_out, 1))


def to_cells(x: torch.Tensor, scale: int) -> torch.Tensor:
    """The (N, 2, H, W) input as the stem sees it: its scale x scale space-to-depth (all pixels kept) when scale > 1."""
    return F.pixel_unshuffle(x, scale) if scale > 1 else x


def to_fused(out: torch.Tensor, x: torch.Tensor, scale: int, blend: bool) -> torch.Tensor:
    """The head's output as the fused luma: depth-to-space of s^2 sub-pixels, or for the blend head the coefficient
    maps a, b, r up-sampled bilinearly and applied to the full-resolution sources x:
    (1/2 + a) ir + (1/2 + b) vis + r."""
    if not blend:
        return F.pixel_shuffle(out, scale) if scale > 1 else out
    if scale > 1:
        out = F.interpolate(out, scale_factor=float(scale), mode="bilinear", align_corners=False)
    return (0.5 + out[:, 0:1]) * x[:, 0:1] + (0.5 + out[:, 1:2]) * x[:, 1:2] + out[:, 2:3]


def head_outputs(scale: int, blend: bool) -> int:
    """Channels of the head's last layer: 3 blend coefficient maps, or the s^2 sub-pixels of the fused luma."""
    return 3 if blend else scale * scale


class FusionNet(nn.Module):
    """N_F(ir, vis) -> fused luma, inputs (N,1,H,W) in [0,1]; no output activation (clamp at the end)."""

    def __init__(self, genotype: Genotype):
        super().__init__()
        self.genotype = genotype
        c, s = genotype.width, genotype.scale
        self.scale = s
        self.stem = make_stem(c, 2 * s * s)
        self.cells = nn.Sequential(*(make_cell(cell, c) for cell in genotype.cells))
        self.blend = genotype.output == "blend"
        self.head = make_head(c, head_outputs(s, self.blend))
        self.multiple = s * (4 if genotype.multiscale else 1)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, cells and head on the (N, 2, H, W) input, H and W multiples of self.multiple."""
        return to_fused(self.head(self.cells(self.stem(to_cells(x, self.scale)))), x, self.scale, self.blend)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(torch.cat((ir, vis), dim=1), self.multiple)
        return self.body(x)[..., :h, :w]


def count_parameters(model: nn.Module) -> int:
    """Number of learnable parameters."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, height: int, width: int) -> int:
    """Multiply-accumulates of one forward pass at H x W (convolutions and linear layers), by forward hooks."""
    total = 0

    def conv_hook(mod: nn.Module, inputs, output) -> None:
        nonlocal total
        if isinstance(mod, nn.ConvTranspose2d):
            n_in = inputs[0][0].numel() // mod.in_channels
            total += n_in * mod.in_channels * mod.out_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, (nn.Conv2d, nn.Conv1d)):
            k = 1
            for s in mod.kernel_size:
                k *= s
            total += output[0].numel() * (mod.in_channels // mod.groups) * k

    handles = [
        m.register_forward_hook(conv_hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.ConvTranspose2d))
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 1, height, width), torch.zeros(1, 1, height, width))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total


def architecture(net: FusionNet) -> str:
    """One line for a card: cells, width and parameter count."""
    cells = "; ".join(f"{c.type} [{', '.join(c.ops)}]" for c in net.genotype.cells)
    scale = f", at 1/{net.scale} resolution (space-to-depth)" if net.scale > 1 else ""
    blend = ", blend head (local affine blend of the sources)" if net.blend else ""
    g = net.genotype
    return f"{g.name}: width {g.width}{scale}{blend}, cells {cells}, {count_parameters(net):,} parameters"
