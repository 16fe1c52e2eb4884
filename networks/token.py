"""Token: CNN local features -> LFSA -> tokenizer -> refinement blocks -> concatenated tokens -> projection
-> L2-normalised global descriptor, trained with ArcFace (paper, Fig. 2; docs/FACTS.md, "The model").

The ablations of Tables 3-6 are constructor options: ``tokenizer`` (Table 5), ``num_tokens`` (Table 6),
``lfsa_blocks`` and ``aggregation="spoc"|"gem"`` (Table 3), ``refinement_blocks``, ``cross_attention`` and
``self_attention`` (Table 4).
"""

import torch
import torch.nn.functional as F
from torch import nn

from networks.arcface import ArcFace
from networks.backbone import Backbone
from networks.lfsa import LFSA
from networks.pooling import GeM, SPoC
from networks.refinement import RefinementBlock
from networks.tokenizer import Tokenizer

AGGREGATIONS = ("tokens", "spoc", "gem")


class Token(nn.Module):
    def __init__(self, backbone="resnet101", num_classes=None, dim=1024, out_dim=1024, num_tokens=4, heads=8,
                 lfsa_blocks=1, refinement_blocks=2, tokenizer="attention", aggregation="tokens",
                 cross_attention=True, self_attention=True, dropout=0.1, drop_path=0.1,
                 arcface_margin=0.2, arcface_scale=32.0, pretrained=True, backbone_weights=None):
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        self.config = dict(backbone=backbone, dim=dim, out_dim=out_dim, num_tokens=num_tokens, heads=heads,
                           lfsa_blocks=lfsa_blocks, refinement_blocks=refinement_blocks, tokenizer=tokenizer,
                           aggregation=aggregation, cross_attention=cross_attention,
                           self_attention=self_attention, dropout=dropout, drop_path=drop_path,
                           arcface_margin=arcface_margin, arcface_scale=arcface_scale)
        self.backbone = Backbone(backbone, pretrained, backbone_weights)
        self.input_proj = nn.Sequential(nn.Conv2d(self.backbone.channels, dim, 1), nn.BatchNorm2d(dim))
        self.lfsa = nn.ModuleList(LFSA(dim, heads, dropout, drop_path) for _ in range(lfsa_blocks))
        if aggregation == "tokens":
            self.tokenizer = Tokenizer(dim, num_tokens, tokenizer)
            self.refinement = nn.ModuleList(
                RefinementBlock(dim, heads, dropout, drop_path, cross_attention, self_attention)
                for _ in range(refinement_blocks))
            pooled_dim = num_tokens * dim
        else:
            self.pool = SPoC() if aggregation == "spoc" else GeM()
            pooled_dim = dim
        self.projection = nn.Sequential(nn.Linear(pooled_dim, out_dim), nn.BatchNorm1d(out_dim))
        self.arcface = ArcFace(out_dim, num_classes, arcface_margin, arcface_scale) if num_classes else None
        self._init_attention()

    def _init_attention(self):
        """Released initialisation: attention linears truncated normal (std 0.02), zero bias; output
        projections zero, so every attention branch starts as the identity of its residual."""
        for module in self.modules():
            if hasattr(module, "q") and hasattr(module, "proj"):
                for linear in (module.q, module.k, module.v):
                    nn.init.trunc_normal_(linear.weight, std=0.02)
                    nn.init.zeros_(linear.bias)
                nn.init.zeros_(module.proj.weight)
                nn.init.zeros_(module.proj.bias)

    def local_features(self, images):
        """Context-aware local features (B, N, d) and the feature map size (H, W)."""
        fmap = self.input_proj(self.backbone(images))
        x = fmap.flatten(2).transpose(1, 2)
        for block in self.lfsa:
            x = block(x)
        return x, fmap.shape[-2:]

    def aggregate(self, x):
        """Local features (B, N, d) -> pooled vector (B, L*d or d), tokenizer and last cross-attention maps."""
        if not hasattr(self, "tokenizer"):
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

    def forward(self, images, labels):
        """Training step: ArcFace cross-entropy ``loss`` and the margin ``logits`` (B, classes)."""
        if self.arcface is None:
            raise RuntimeError("this Token has no classifier: build it with num_classes to train it")
        logits = self.arcface(self.forward_test(images), labels)
        return F.cross_entropy(logits, labels), logits

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
