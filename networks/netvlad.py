"""NetVLAD as the authors define it for Table 1 (their "R101-NetVLAD"; docs/FACTS.md, "The baselines").

layer4 map -> 1x1 convolution to d with bias + BatchNorm2d -> N local features (B, N, d) -> one LFSA block (the
same block as Token's) -> soft assignment to K = 4 centroids c (softmax over K of x . c) -> VLAD
vlad_k = sum_n a_nk (x_n - c_k), (B, K, d) -> flattened cluster-major to (B, K d), not normalised ->
Linear(K d, d) + BatchNorm1d(d) -> L2.

The trunk is frozen in training (ImageNet weights): its parameters do not require gradients and it stays in eval
mode (BatchNorm statistics fixed) whatever ``train()`` is called with; ``frozen_backbone`` says so to the
training code.
"""

import torch
import torch.nn.functional as F
from torch import nn

from networks.arcface import ArcFaceModel
from networks.backbone import Backbone
from networks.config import NetVLADConfig
from networks.lfsa import LFSA
from networks.pooling import flatten_map


def vlad(x, centroids):
    """VLAD of local features ``x`` (B, N, d) with ``centroids`` (d, K): (B, K, d) of soft-assigned residuals."""
    assignment = torch.softmax(x @ centroids, dim=-1)  # (B, N, K)
    return assignment.transpose(1, 2) @ x - assignment.sum(dim=1)[:, :, None] * centroids.T


class NetVLAD(ArcFaceModel):
    """``NetVLAD(config)`` or ``NetVLAD(backbone="resnet50", ...)``; ``num_classes`` / ``pretrained`` as for Token."""

    frozen_backbone = True

    def __init__(self, config=None, /, *, num_classes=None, pretrained=True, backbone_weights=None, **settings):
        super().__init__()
        self.config = config = NetVLADConfig.of(config, **settings)
        dim = config.dim
        self.backbone = Backbone(config.backbone, pretrained, backbone_weights).requires_grad_(False)
        self.input_proj = nn.Sequential(nn.Conv2d(self.backbone.channels, dim, 1), nn.BatchNorm2d(dim))
        self.lfsa = LFSA(dim, config.heads, config.dropout, config.drop_path)
        self.centroids = nn.Parameter(torch.randn(1, dim, config.clusters) * dim**-0.5)
        self.projection = nn.Sequential(nn.Linear(config.clusters * dim, dim), nn.BatchNorm1d(dim))
        self.add_arcface(num_classes, dim)
        self.backbone.eval()

    def train(self, mode=True):
        super().train(mode)
        self.backbone.eval()
        return self

    def forward_test(self, images):
        """L2-normalised descriptors (B, d) of normalised images (B, 3, H, W)."""
        x = self.lfsa(flatten_map(self.input_proj(self.backbone(images))))
        return F.normalize(self.projection(vlad(x, self.centroids[0]).flatten(1)), dim=-1)
