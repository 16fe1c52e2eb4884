"""R-MAC (Tolias et al., ICLR 2016) as the authors retrained it for Table 1 (docs/FACTS.md, "The baselines").

layer4 map -> R-MAC pooling (L = 3 scales, overlap 0.4, eps 1e-6; ``networks.pooling.rmac``) -> ``whiten`` 1x1
convolution with bias -> L2. The released class L2-normalises the R-MAC vector before ``whiten`` in training but not
at test time; we reproduce its test path and train through that same path (no normalisation before ``whiten``), so
that training and retrieval compute one descriptor.
"""


from networks.arcface import ArcFaceModel
from networks.backbone import Backbone
from networks.config import RMACConfig
from networks.pooling import rmac
from networks.whitening_layer import WhiteningLayer


class RMAC(ArcFaceModel):
    """``RMAC(config)`` or ``RMAC(backbone="resnet50", ...)``; ``num_classes`` / ``pretrained`` as for Token."""

    def __init__(self, config=None, /, *, num_classes=None, pretrained=True, backbone_weights=None, **settings):
        super().__init__()
        self.config = config = RMACConfig.of(config, **settings)
        self.backbone = Backbone(config.backbone, pretrained, backbone_weights)
        self.whiten = WhiteningLayer(self.backbone.channels, config.out_dim)
        self.add_arcface(num_classes)

    def forward_test(self, images):
        """L2-normalised descriptors (B, out_dim) of normalised images (B, 3, H, W)."""
        v = rmac(self.backbone(images), self.config.levels, self.config.overlap)
        return self.whiten(v)
