"""HOW local features (Tolias, Jenicek and Chum, "Learning and aggregating deep local descriptors for instance-level
recognition", ECCV 2020), in the layout of its checkpoints (docs/FACTS.md, "HOW"; docs/models.md, "HOW").

``features``: a torchvision ResNet's children without the average pool and fc, and ``skip_layer`` more (1: ends at
layer3, 0: at layer4), an ``nn.Sequential`` (keys ``features.0 .. features.7``). For its map f (C, H, W):

    attention      a(y, x) = sqrt(sum_c f[c, y, x]^2 + 1e-10)        (on f, before the smoothing)
    descriptors    d = dim_reduction(avgpool_3x3(f))                 (stride 1, borders average in-image cells only)

``dim_reduction`` is a 1x1 convolution with bias that HOW initialises by PCA whitening of local features and never
trains (it does not require gradients). Local features (``forward_local``) are taken at several scales; the global
descriptor (``forward_test``, trained with ArcFace): g = sum_{y,x} d[:, y, x] a(y, x) / max a, then g / (||g|| + 1e-6)
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from networks.arcface import ArcFaceModel
from networks.backbone import RESNETS, imagenet_state_dict
from networks.config import HOWConfig

SCALES = (2.0, 1.414, 1.0, 0.707, 0.5, 0.353, 0.25)  # HOW's test scales, in its order


class LocalFeatures(NamedTuple):
    """The top local features of an image: descriptors (n, D), attentions (n,) in (0, 1], locations (n, 2) as
    (x, y) cells of their scale's feature map (int64), scales (n,)."""

    descriptors: torch.Tensor
    attentions: torch.Tensor
    locations: torch.Tensor
    scales: torch.Tensor


class HOW(ArcFaceModel):
    """``HOW(config)`` or ``HOW(backbone="resnet50", ...)``; ``num_classes`` / ``pretrained`` as for Token."""

    def __init__(self, config=None, /, *, num_classes=None, pretrained=True, backbone_weights=None, **settings):
        super().__init__()
        self.config = config = HOWConfig.of(config, **settings)
        resnet = RESNETS[config.backbone][0]()
        if pretrained:
            resnet.load_state_dict(imagenet_state_dict(config.backbone, backbone_weights))
        trunk = list(resnet.children())[:-2]
        self.features = nn.Sequential(*trunk[:len(trunk) - config.skip_layer])
        self.channels = resnet.fc.in_features // 2**config.skip_layer
        self.smoothing = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.dim_reduction = nn.Conv2d(self.channels, config.out_dim, 1).requires_grad_(False)
        self.add_arcface(num_classes)

    def attention_and_smoothed(self, images):
        """The attention (B, H, W) and the smoothed trunk map (B, C, H, W) of normalised images (B, 3, H, W)."""
        fmap = self.features(images)
        return (fmap.square().sum(dim=1) + 1e-10).sqrt(), self.smoothing(fmap)

    def forward_test(self, images):
        """The attention-weighted global descriptors (B, out_dim) at the images' scale, L2-normalised (eps 1e-6)."""
        attention, smoothed = self.attention_and_smoothed(images)
        attention = attention / attention.flatten(1).amax(dim=1)[:, None, None]
        g = (self.dim_reduction(smoothed) * attention[:, None]).sum(dim=(2, 3))
        return g / (g.norm(dim=1, keepdim=True) + 1e-6)

    def scale_maps(self, image, scales=SCALES):
        """Per scale: the attention (H, W), not normalised, and the descriptors (D, H, W) of one image (1, 3, H, W)
        resized bilinearly by it (size floor(side * scale), sampling ratio recomputed from the sizes)."""
        for scale in scales:
            x = F.interpolate(image, scale_factor=scale, mode="bilinear", align_corners=False,
                              recompute_scale_factor=True)
            attention, smoothed = self.attention_and_smoothed(x)
            yield attention[0], self.dim_reduction(smoothed)[0]

    @torch.no_grad()
    def forward_local(self, image, scales=SCALES, num_features=1000):
        """The ``num_features`` local features of highest attention of one normalised image (1, 3, H, W) over
        ``scales``: attentions divided by their maximum over all scales; ties keep the scales' order, then row-major
        positions. Tensors on the image's device, floats in its dtype; no gradients (retrieval only)."""
        descriptors, attentions, locations, levels = [], [], [], []
        for scale, (attention, reduced) in zip(scales, self.scale_maps(image, scales), strict=True):
            h, w = attention.shape
            ys, xs = torch.meshgrid(torch.arange(h, device=image.device), torch.arange(w, device=image.device),
                                    indexing="ij")
            descriptors.append(reduced.flatten(1).T)
            attentions.append(attention.flatten())
            locations.append(torch.stack([xs.flatten(), ys.flatten()], dim=1))
            levels.append(torch.full((h * w,), scale, dtype=image.dtype, device=image.device))
        attentions = torch.cat(attentions)
        attentions = attentions / attentions.max()
        keep = torch.sort(-attentions, stable=True).indices[:num_features]
        return LocalFeatures(torch.cat(descriptors)[keep], attentions[keep], torch.cat(locations)[keep],
                             torch.cat(levels)[keep])
