"""Global pooling of local features: SPoC, GeM and MAC over (B, N, d) features (paper, Table 3; the Table 1
baselines), and R-MAC over a feature map (Tolias et al., ICLR 2016; docs/FACTS.md, "The baselines").

``flatten_map`` turns a (B, C, H, W) map into the (B, N, C) features the pooling modules take.
"""

import math

import torch
from torch import nn


def flatten_map(fmap):
    """(B, C, H, W) -> (B, H*W, C)."""
    return fmap.flatten(2).transpose(1, 2)


class SPoC(nn.Module):
    """Sum-pooling of convolutions: the mean of the local features (B, N, d) -> (B, d)."""

    def forward(self, x):
        return x.mean(dim=1)


class MAC(nn.Module):
    """Maximum activation of convolutions: the maximum of each channel over the positions, (B, N, d) -> (B, d)."""

    def forward(self, x):
        return x.amax(dim=1)


class GeM(nn.Module):
    """Generalized mean pooling, (mean_n max(x_n, eps)^p)^(1/p); p is learned (a parameter, initially ``p``) unless
    ``learn`` is False (a fixed float, not in the state_dict)."""

    def __init__(self, p=3.0, eps=1e-6, learn=True):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p))) if learn else float(p)
        self.eps = eps

    def forward(self, x):
        return x.clamp_min(self.eps).pow(self.p).mean(dim=1).pow(1.0 / self.p)


def _region_starts(length, size, count):
    """``count`` starts of regions of ``size`` spread evenly along ``length`` (R-MAC's rounding)."""
    half = math.floor(size / 2 - 1)
    step = 0 if count == 1 else (length - size) / (count - 1)
    return [math.floor(half + k * step) - half for k in range(count)]


def rmac_regions(h, w, levels=3, overlap=0.4):
    """The square regions (top, left, size) of R-MAC on an h x w map: ``levels`` scales, the longer side holding
    extra regions so that neighbours overlap by about ``overlap``."""
    side = min(h, w)
    steps = [(max(h, w) - side) / (s - 1) for s in range(2, 8)]
    idx = min(range(len(steps)), key=lambda i: abs((side**2 - side * steps[i]) / side**2 - overlap))
    extra_w, extra_h = (idx + 1 if w > h else 0), (idx + 1 if h > w else 0)
    regions = []
    for level in range(1, levels + 1):
        size = math.floor(2 * side / (level + 1))
        if size:
            regions += [(top, left, size) for top in _region_starts(h, size, level + extra_h)
                        for left in _region_starts(w, size, level + extra_w)]
    return regions


def rmac(fmap, levels=3, overlap=0.4, eps=1e-6):
    """R-MAC of a map (B, C, H, W): the L2-normalised global max plus the L2-normalised max of every region
    (the sum itself is not normalised)."""
    def normalised_max(x):
        v = x.amax(dim=(2, 3))
        return v / (v.norm(dim=1, keepdim=True) + eps)

    v = normalised_max(fmap)
    for top, left, size in rmac_regions(*fmap.shape[-2:], levels, overlap):
        v = v + normalised_max(fmap[:, :, top:top + size, left:left + size])
    return v

