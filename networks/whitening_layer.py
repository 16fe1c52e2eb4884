"""The trained whitening layer of the Table 1 baselines (R-MAC, SOLAR, DELG): a 1x1 convolution with bias applied to a
pooled vector, then L2 normalisation (released key ``whiten``, a D x C x 1 x 1 weight; docs/FACTS.md, "The
baselines"). The PCA whitening fitted to descriptors after training is ``networks.pca_whitening``."""

import torch.nn.functional as F
from torch import nn


class WhiteningLayer(nn.Conv2d):
    def __init__(self, in_dim, out_dim):
        super().__init__(in_dim, out_dim, 1)

    def forward(self, v):
        """(B, C) -> L2-normalised (B, D)."""
        return F.normalize(super().forward(v[:, :, None, None]).flatten(1), dim=-1)
