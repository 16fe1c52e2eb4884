"""DELG (Cao et al., ECCV 2020) as the authors retrained it for Table 1 (docs/FACTS.md, "The baselines").

Global branch (the descriptor): layer4 map -> GeM (p = 3, fixed) -> L2 -> ``whiten`` 1x1 convolution with bias,
D outputs -> L2, with the ArcFace head ``arcface`` (s = sqrt(D), m = 0.2).
Local branch, on the layer3 map with its gradient stopped, so it does not change the trunk: attention
a = softplus(1x1 conv, no bias); local features = 1x1 conv to 128 channels, L2-normalised at each position; in
training weighted by a and average-pooled into the ArcFace head ``local.arcface`` (s = sqrt(128), m = 0.1). At test
time they are DELF-like local features (``forward_local``): extracted at HOW's 7 scales and ranked by a as HOW ranks
its own (``networks.how.top_local_features``), for ASMK, VLAD and the aggregator; no absolute attention threshold
(ours: DELG's released R50 config keeps features above 454.6 before its top 1,000).

The released class normalises the local features over the width axis; we follow the DELG paper and normalise each
position's features over the channels. The released training script cannot train the class; our loss is the sum of
the two heads' cross-entropies, as in the DELG paper.
"""

import torch
import torch.nn.functional as F
from torch import nn

from networks.arcface import ArcFace, ArcFaceModel
from networks.backbone import Backbone
from networks.config import DELGConfig
from networks.how import SCALES, rescaled, top_local_features
from networks.pooling import GeM, flatten_map
from networks.whitening_layer import WhiteningLayer


class LocalAttention(nn.Module):
    """DELG's attention-weighted local features and their ArcFace head."""

    def __init__(self, channels, dim, num_classes, margin, scale):
        super().__init__()
        self.attention = nn.Conv2d(channels, 1, 1, bias=False)
        self.reduction = nn.Conv2d(channels, dim, 1)
        self.arcface = ArcFace(dim, num_classes, margin, scale) if num_classes else None

    def maps(self, fmap):
        """The attention (B, 1, H, W) and the L2-normalised local features (B, dim, H, W) of ``fmap``."""
        return F.softplus(self.attention(fmap)), F.normalize(self.reduction(fmap), dim=1)

    def forward(self, fmap):
        """Attention-weighted average of the L2-normalised local features of ``fmap`` (B, C, H, W) -> (B, dim)."""
        weights, features = self.maps(fmap)
        return (features * weights).mean(dim=(2, 3))


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

    def scale_maps(self, image, scales=SCALES):
        """Per scale: the local branch's attention (H, W) and features (dim, H, W) of one image (1, 3, H, W) resized
        by it as HOW resizes (layer4 is computed too and left unused)."""
        for scale in scales:
            attention, features = self.local.maps(self.backbone.forward_layers(rescaled(image, scale))[0])
            yield attention[0, 0], features[0]

    @torch.no_grad()
    def forward_local(self, image, scales=SCALES, num_features=1000):
        """The ``num_features`` local features of highest attention of one normalised image (1, 3, H, W) over
        ``scales``, as ``networks.HOW.forward_local`` gives HOW's."""
        return top_local_features(self.scale_maps(image, scales), scales, num_features, image)

    def forward(self, images, labels):
        """Training step: the global plus the local ArcFace cross-entropy, and the global margin logits."""
        x4, x5 = self.backbone.forward_layers(images)
        logits = self.classifier()(self.global_descriptor(x5), labels)
        local_logits = self.local.arcface(self.local(x4.detach()), labels)
        parts = {"global": F.cross_entropy(logits, labels), "local": F.cross_entropy(local_logits, labels)}
        self.loss_parts = {name: loss.detach() for name, loss in parts.items()}
        return parts["global"] + parts["local"], logits
