"""Token: CNN local features -> LFSA -> tokenizer -> refinement blocks -> concatenated tokens -> projection
-> L2-normalised global descriptor, trained with ArcFace (paper, Fig. 2; docs/FACTS.md, "The model").

The ablations of Tables 3-6 are ``TokenConfig`` fields: ``tokenizer`` (Table 5), ``num_tokens`` (Table 6),
``lfsa_blocks`` and ``aggregation="spoc"`` (Table 3, whose baseline is SPoC), ``refinement_blocks``,
``cross_attention`` and ``self_attention`` (Table 4); ``aggregation="gem"`` is this repository's GeM beside it.

SPoC and GeM replace the tokenizer and refinement blocks and pool the local features the tokens would see: after the
input projection's BatchNorm and LFSA, so signed. SPoC's mean takes them whole; GeM's max(x, eps)^p keeps only the
positive part of each channel. GeM on non-negative features would pool the trunk's ReLU map, before the projection
and LFSA: that changes the local features, not the aggregation alone, so the ablation keeps the tokens' features
(docs/models.md, "The GeM ablation", gives the measured cost).
"""

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from networks.arcface import ArcFaceModel
from networks.backbone import Backbone
from networks.config import TokenConfig
from networks.lfsa import LFSA
from networks.pooling import GeM, SPoC
from networks.refinement import RefinementBlock
from networks.tokenizer import Tokenizer


class Token(ArcFaceModel):
    """``Token(config)`` or ``Token(backbone="resnet50", ...)`` with ``TokenConfig`` fields as keywords.

    ``num_classes``: the ArcFace head's classes (None: a test-time model); ``pretrained`` / ``backbone_weights``:
    ImageNet weights of the trunk (torchvision's, or a file).
    """

    def __init__(self, config=None, /, *, num_classes=None, pretrained=True, backbone_weights=None, **settings):
        super().__init__()
        if config is not None and not isinstance(config, TokenConfig):
            raise TypeError(f"Token takes a TokenConfig or keywords, e.g. Token(backbone='resnet50'); got {config!r}")
        config = replace(config or TokenConfig(), **settings)
        self.config = config
        self.backbone = Backbone(config.backbone, pretrained, backbone_weights)
        dim, heads = config.dim, config.heads
        self.input_proj = nn.Sequential(nn.Conv2d(self.backbone.channels, dim, 1), nn.BatchNorm2d(dim))
        self.lfsa = nn.ModuleList(LFSA(dim, heads, config.dropout, config.drop_path)
                                  for _ in range(config.lfsa_blocks))
        self.tokenizer = self.refinement = self.pool = None
        if config.aggregation == "tokens":
            self.tokenizer = Tokenizer(dim, config.num_tokens, config.tokenizer,
                                       temperature=config.tokenizer_temperature)
            self.refinement = nn.ModuleList(
                RefinementBlock(dim, heads, config.dropout, config.drop_path, config.cross_attention,
                                config.self_attention)
                for _ in range(config.refinement_blocks))
            pooled_dim = config.num_tokens * dim
        else:
            self.pool = SPoC() if config.aggregation == "spoc" else GeM()
            pooled_dim = dim
        self.projection = nn.Sequential(nn.Linear(pooled_dim, config.out_dim), nn.BatchNorm1d(config.out_dim))
        self.add_arcface(num_classes)

    def local_features(self, images):
        """Context-aware local features (B, N, d) and the feature map size (H, W)."""
        fmap = self.input_proj(self.backbone(images))
        x = fmap.flatten(2).transpose(1, 2)
        for block in self.lfsa:
            x = block(x)
        return x, fmap.shape[-2:]

    def aggregate(self, x):
        """Local features (B, N, d) -> pooled vector (B, L*d or d), tokenizer and last cross-attention maps."""
        if self.tokenizer is None:
            return self.pool(x), None, None
        tokens, assignment = self.tokenizer(x)
        cross = None
        for block in self.refinement:
            tokens, attn = block(tokens, x)
            cross = attn if attn is not None else cross
        return tokens.flatten(1), assignment, cross

    def forward_test(self, images):
        """L2-normalised global descriptors (B, out_dim) of a batch of normalised images (B, 3, H, W)."""
        pooled = self.aggregate(self.local_features(images)[0])[0]
        return F.normalize(self.projection(pooled), dim=-1)

    @torch.no_grad()
    def attention_maps(self, images):
        """Spatial attention of each token (paper, Fig. 3a): ``{"tokenizer", "refinement"}`` -> (B, L, H, W).

        ``tokenizer``: its soft assignment; ``refinement``: the last refinement block's cross-attention,
        averaged over heads (absent where the model has none). Empty for the pooling baselines.
        """
        x, (h, w) = self.local_features(images)
        _, assignment, cross = self.aggregate(x)
        maps = {}
        if assignment is not None:
            maps["tokenizer"] = assignment.unflatten(-1, (h, w))
        if cross is not None:
            maps["refinement"] = cross.mean(dim=1).unflatten(-1, (h, w))
        return maps
