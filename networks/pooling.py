"""Global-pooling baselines for the component ablation (paper, Table 3): SPoC and GeM over local features."""

import torch
from torch import nn


class SPoC(nn.Module):
    """Sum-pooling of convolutions: the mean of the local features (B, N, d) -> (B, d)."""

    def forward(self, x):
        return x.mean(dim=1)


class GeM(nn.Module):
    """Generalized mean pooling, (mean_n max(x_n, eps)^p)^(1/p), with a learned p (initially 3)."""

    def __init__(self, p=3.0, eps=1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x):
        return x.clamp_min(self.eps).pow(self.p).mean(dim=1).pow(1.0 / self.p)
