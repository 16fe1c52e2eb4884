"""DELG (Cao et al., ECCV 2020) as the authors retrained it for Table 1 (docs/FACTS.md, "The baselines").

Global branch (the descriptor): layer4 map -> GeM (p = 3, fixed) -> L2 -> ``whiten`` 1x1 convolution with bias,
D outputs -> L2, with the ArcFace head ``arcface`` (s = sqrt(D), m = 0.2).
Local branch (training only), on the layer3 map with its gradient stopped, so it does not change the trunk:
attention a = softplus(1x1 conv, no bias); local features = 1x1 conv to 128 channels, L2-normalised, weighted by
a and average-pooled; the ArcFace head ``local.arcface`` (s = sqrt(128), m = 0.1).

The released class normalises the local features over the width axis; we follow the DELG paper and normalise each
position's features over the channels. The released training script cannot train the class; our loss is the sum of
the two heads' cross-entropies, as in the DELG paper.
"""

import torch.nn.functional as F
from torch import nn

from networks.arcface import ArcFace, ArcFaceModel
from networks.backbone import Backbone
from networks.config import DELGConfig
from networks.pooling import GeM, flatten_map
from networks.whitening_layer import WhiteningLayer


class LocalAttention(nn.Module):
    """DELG's attention-weighted local features and their ArcFace head (training only)."""

    def __init__(self, channels, dim, num_classes, margin, scale):
        super().__init__()
        self.attention = nn.Conv2d(channels, 1, 1, bias=False)
        self.reduction = nn.Conv2d(channels, dim, 1)
        self.arcface = ArcFace(dim, num_classes, margin, scale) if num_classes else None

    def forward(self, fmap):
        """Attention-weighted average of the L2-normalised local features of ``fmap`` (B, C, H, W) -> (B, dim)."""
        weights = F.softplus(self.attention(fmap))
        return (F.normalize(self.reduction(fmap), dim=1) * weights).mean(dim=(2, 3))


class DELG(ArcFaceModel):
    """``DELG(config)`` or ``DELG(backbone="resnet50", ...)``; ``num_classes`` / ``pretrained`` as for Token.

    ``forward(images, labels)`` returns (the sum of both cross-entropies, the global head's margin logits) and
    keeps the two parts, detached, in ``self.loss_parts`` (``{"global": ..., "local": ...}``, the names
    ``loss_part_names``) for the training log.
    """

    loss_part_names = ("global", "local")

    def __init__(self, config=None, /, *, num_classes=None, pretrained=True, backbone_weights=None, **settings):
        super().__init__()
        self.config = config = DELGConfig.of(config, **settings)
        self.backbone = Backbone(config.backbone, pretrained, backbone_weights)
        self.pool = GeM(config.gem_p, learn=False)
        self.whiten = WhiteningLayer(self.backbone.channels, config.out_dim)
        self.add_arcface(num_classes)
        self.local = LocalAttention(self.backbone.channels // 2, config.local_dim, num_classes, config.local_margin,
                                    config.local_scale)
        self.loss_parts = {}

    def global_descriptor(self, fmap):
        return self.whiten(F.normalize(self.pool(flatten_map(fmap)), dim=-1))

    def forward_test(self, images):
        """L2-normalised global descriptors (B, out_dim) of normalised images (B, 3, H, W)."""
        return self.global_descriptor(self.backbone(images))

    def forward(self, images, labels):
        """Training step: the global plus the local ArcFace cross-entropy, and the global margin logits."""
        x4, x5 = self.backbone.forward_layers(images)
        logits = self.classifier()(self.global_descriptor(x5), labels)
        local_logits = self.local.arcface(self.local(x4.detach()), labels)
        parts = {"global": F.cross_entropy(logits, labels), "local": F.cross_entropy(local_logits, labels)}
        self.loss_parts = {name: loss.detach() for name, loss in parts.items()}
        return parts["global"] + parts["local"], logits
