"""ArcFace additive angular margin loss (paper, "Training details": m = 0.2, scale 32).

logits_j = s cos(theta_j) for every class j but the target y, whose logit is s cos(theta_y + m); where
theta_y > pi - m the margin would wrap the angle past pi, so that logit stays s cos(theta_y).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


class ArcFace(nn.Module):
    def __init__(self, in_features, num_classes, margin=0.2, scale=32.0):
        super().__init__()
        self.margin = margin
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, descriptors, labels):
        """Margin logits (B, classes) for ``descriptors`` (B, D) and integer ``labels`` (B,)."""
        cos = F.linear(F.normalize(descriptors, dim=-1), F.normalize(self.weight, dim=-1)).clamp(-1.0, 1.0)
        sin = (1.0 - cos.square()).clamp_min(0.0).sqrt()
        cos_margin = cos * math.cos(self.margin) - sin * math.sin(self.margin)
        cos_margin = torch.where(cos < math.cos(math.pi - self.margin), cos, cos_margin)
        target = F.one_hot(labels, cos.shape[1]).bool()
        return self.scale * torch.where(target, cos_margin, cos)


class ArcFaceModel(nn.Module):
    """A retrieval model trained by an ArcFace head on its descriptor: a subclass sets ``self.config``, defines
    ``forward_test`` and calls ``self.add_arcface(num_classes)`` after the layers of its descriptor, where the head
    sits in its state_dict (the order of the parameters is that of the optimizer's saved state)."""

    def add_arcface(self, num_classes, dim=None):
        """``self.arcface``: the head over descriptors of ``dim`` (default ``config.out_dim``) with the config's
        ``arcface_margin`` and ``arcface_scale``; None without ``num_classes`` (a test-time model)."""
        config = self.config
        self.arcface = ArcFace(dim or config.out_dim, num_classes, config.arcface_margin,
                               config.arcface_scale) if num_classes else None

    def forward(self, images, labels):
        """Training step: ArcFace cross-entropy ``loss`` and the margin ``logits`` (B, classes)."""
        logits = self.classifier()(self.forward_test(images), labels)
        return F.cross_entropy(logits, labels), logits

    def classifier(self):
        if self.arcface is None:
            raise RuntimeError(f"this {type(self).__name__} has no classifier: build it with num_classes to train it")
        return self.arcface
