"""SOLAR (Ng et al., ECCV 2020) as the authors retrained it for Table 1 (docs/FACTS.md, "The baselines").

layer4 map x -> second-order attention (SOA) block -> GeM (p = 3, fixed) -> L2 -> ``whiten`` 1x1 convolution with
bias -> L2.
"""

import torch
import torch.nn.functional as F
from torch import nn

from networks.arcface import ArcFaceModel
from networks.backbone import Backbone
from networks.config import SOLARConfig
from networks.pooling import GeM, flatten_map
from networks.whitening_layer import WhiteningLayer


def _embedding(channels, mid):
    return nn.Sequential(nn.Conv2d(channels, mid, 1), nn.BatchNorm2d(mid), nn.ReLU(inplace=True))


class SecondOrderAttention(nn.Module):
    """SOA block, mid = C / k with k = 2: every position n gathers z_n = sum_m A[n, m] h_m with
    A = softmax_m(mid^-1/2 f_n . g_m); out = v(z) + x, ``v`` zero-initialised so the block starts as the identity."""

    def __init__(self, channels, k=2):
        super().__init__()
        mid = channels // k
        self.f, self.g = _embedding(channels, mid), _embedding(channels, mid)
        self.h = nn.Conv2d(channels, mid, 1)
        self.v = nn.Conv2d(mid, channels, 1)
        nn.init.zeros_(self.v.weight)
        nn.init.zeros_(self.v.bias)
        self.scale = mid ** -0.5

    def attention(self, x):
        """A (B, N, N): row n is the softmax over the positions m."""
        f, g = self.f(x).flatten(2), self.g(x).flatten(2)
        return torch.softmax(self.scale * f.transpose(1, 2) @ g, dim=-1)

    def forward(self, x):
        """x (B, C, H, W) -> (B, C, H, W)."""
        b, _, h, w = x.shape
        z = self.attention(x) @ self.h(x).flatten(2).transpose(1, 2)  # (B, N, mid)
        return self.v(z.transpose(1, 2).reshape(b, -1, h, w)) + x


class SOLAR(ArcFaceModel):
    """``SOLAR(config)`` or ``SOLAR(backbone="resnet50", ...)``; ``num_classes`` / ``pretrained`` as for Token."""

    def __init__(self, config=None, /, *, num_classes=None, pretrained=True, backbone_weights=None, **settings):
        super().__init__()
        self.config = config = SOLARConfig.of(config, **settings)
        self.backbone = Backbone(config.backbone, pretrained, backbone_weights)
        self.soa = SecondOrderAttention(self.backbone.channels)
        self.pool = GeM(config.gem_p, learn=False)
        self.whiten = WhiteningLayer(self.backbone.channels, config.out_dim)
        self.add_arcface(num_classes)

    def forward_test(self, images):
        """L2-normalised descriptors (B, out_dim) of normalised images (B, 3, H, W)."""
        v = F.normalize(self.pool(flatten_map(self.soa(self.backbone(images)))), dim=-1)
        return self.whiten(v)
