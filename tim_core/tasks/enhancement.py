"""TIM's second-stage visual-enhancement network N_T (237,308 parameters at C = 48) and its training loss.

Wiring of the release (../shared/docs/TIM_FACTS.md): two branches, VIS branch on (VIS, I_F) with cells [ECA, spatial
attention], IR branch on (IR, I_F) with cells [spatial attention, DilConv 3x3 d2]; each branch is a stem
[3x3 2->2C, PReLU, 3x3 2C->C, BN, PReLU] and two plain cells, with an auxiliary tanh image head. A mask
sigmoid(1x1 conv over [max_c, max_c, mean_c] of the VIS features) blends them, m*P + (1-m)*Q, and a
head [3x3 C->C, 3x3 C->C/2, 1x1 C/2->1] without activations gives the enhanced image.

Its loss was not published (OPEN). Ours: the fusion loss on the enhanced image (it must stay a fusion
of both sources) plus aux_weight x L1 of each auxiliary output to its own source (each branch keeps a
reconstruction of its camera, which is what the auxiliary heads suggest they were for).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import LossWeights, fusion_loss
from ..network import ChainCell, ReflectConv

VIS_OPS = ("eca_k3", "spatial_k3")
IR_OPS = ("spatial_k3", "dil_conv_3x3_d2")


def _image_head(c: int, activations: bool) -> nn.Sequential:
    first = [ReflectConv(c, c, 3), nn.PReLU()] if activations else [ReflectConv(c, c, 3)]
    return nn.Sequential(*first, ReflectConv(c, c // 2, 3), ReflectConv(c // 2, 1, 1))


class Branch(nn.Module):
    """(source, I_F) -> C features through a BN stem and two plain cells, plus an auxiliary image (tanh)."""

    def __init__(self, c: int, ops: tuple[str, ...]):
        super().__init__()
        self.stem = nn.Sequential(ReflectConv(2, 2 * c, 3), nn.PReLU(), ReflectConv(2 * c, c, 3),
                                  nn.BatchNorm2d(c), nn.PReLU())
        self.cells = nn.Sequential(ChainCell(c, ops), ChainCell(c, ops))
        self.aux = _image_head(c, activations=True)

    def forward(self, source: torch.Tensor, fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.cells(self.stem(torch.cat((source, fused), 1)))
        return feats, torch.tanh(self.aux(feats))


class EnhancementNet(nn.Module):
    """N_T(ir, vis, I_F) -> (enhanced, aux_ir, aux_vis), all (N, 1, H, W); clamp the first to [0, 1] for display."""

    def __init__(self, width: int = 48):
        super().__init__()
        self.vis_branch = Branch(width, VIS_OPS)
        self.ir_branch = Branch(width, IR_OPS)
        self.mask_conv = nn.Conv2d(3, 1, 1, bias=False)
        self.head = _image_head(width, activations=False)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor, fused: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p, aux_vis = self.vis_branch(vis, fused)
        q, aux_ir = self.ir_branch(ir, fused)
        # [max, max, mean] over channels: the release's pooled input (max twice), kept for the same weights
        pooled = torch.cat((p.amax(1, keepdim=True), p.amax(1, keepdim=True), p.mean(1, keepdim=True)), 1)
        m = torch.sigmoid(self.mask_conv(pooled))
        return self.head(m * p + (1 - m) * q), aux_ir, aux_vis


def enhancement_loss(outputs: tuple[torch.Tensor, ...], ir: torch.Tensor, vis: torch.Tensor,
                     weights: LossWeights | None = None, aux_weight: float = 0.5) -> tuple[torch.Tensor, dict]:
    """Fusion loss of the enhanced image + aux_weight x (|aux_ir - IR| + |aux_vis - VIS|)."""
    enhanced, aux_ir, aux_vis = outputs
    l_f, terms = fusion_loss(enhanced, ir, vis, weights or LossWeights())
    l_aux = F.l1_loss(aux_ir, ir) + F.l1_loss(aux_vis, vis)
    return l_f + aux_weight * l_aux, {**terms, "aux": l_aux.item()}
