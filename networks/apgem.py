"""deep-image-retrieval's global descriptors (Revaud et al., ICCV 2019; Gordo et al., IJCV 2017): ResNet ->
GeM with a learned power (AP-GeM, TL-GeM) or max pooling (TL-MAC) -> ``fc`` Linear with bias -> L2
(docs/FACTS.md, "deep-image-retrieval's models").

A model read from their ``.pt`` file carries the file's PCA whitening(s) in ``whitening`` (training-set name ->
``networks.pca_whitening.PCAWhitening``; their published numbers use ``whitening["Landmarks_clean"](x, power=0.25)``)
and their preprocessing settings in ``preprocess``.
"""

import torch.nn.functional as F
from torch import nn

from networks.arcface import ArcFaceModel
from networks.backbone import Backbone
from networks.config import APGeMConfig
from networks.pooling import MAC, GeM, flatten_map


class APGeM(ArcFaceModel):
    """``APGeM(config)`` or ``APGeM(backbone="resnet50", pooling="mac", ...)``; ``num_classes`` / ``pretrained`` as
    for Token (the released models were trained with AP or triplet losses; ours trains with ArcFace)."""

    def __init__(self, config=None, /, *, num_classes=None, pretrained=True, backbone_weights=None, **settings):
        super().__init__()
        self.config = config = APGeMConfig.of(config, **settings)
        self.backbone = Backbone(config.backbone, pretrained, backbone_weights)
        self.pool = GeM(config.gem_p) if config.pooling == "gem" else MAC()
        self.fc = nn.Linear(self.backbone.channels, config.out_dim)
        self.add_arcface(num_classes)
        self.whitening, self.preprocess = {}, {}

    def forward_test(self, images):
        """L2-normalised descriptors (B, out_dim) of normalised images (B, 3, H, W), before any PCA whitening."""
        return F.normalize(self.fc(self.pool(flatten_map(self.backbone(images)))), dim=-1)
