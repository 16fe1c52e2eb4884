"""Token's aggregator over the local features of a frozen extractor (the authors' Dec 2021 extension; its figure and
our design: docs/models.md, "The Token aggregator over local features").

A set of at most n local descriptors (B, n, c), padded, with a validity mask (B, n):

    X       = LayerNorm(Linear(c -> d)(x))                        input projection (ours)
    T       = Tokenizer(X, mask)                                  L tokens; padded features get weight 0
    T_r     = LN(T + SelfAttn(T))                                 refinement block, in the figure's order (post-norm)
    T       = LN(T_r + CrossAttn(T_r, X, X, key mask))            ... repeated ``refinement_blocks`` times
    g       = L2(BatchNorm1d(Linear(L d -> out)(concat T)))

``TokenAggregator`` is that model (trained with ArcFace on cached features; ``forward_test`` takes the set with its
padded rows NaN, as the local-feature store keeps them, or an explicit mask). ``LocalAggregation`` puts it behind
its extractor for evaluation: images in, global descriptors out (``weights.load_model`` builds it from a checkpoint).
"""

import torch
import torch.nn.functional as F
from torch import nn

from networks.arcface import ArcFaceModel
from networks.attention import MultiHeadAttention
from networks.config import AggregatorConfig
from networks.how import SCALES
from networks.tokenizer import Tokenizer


class AggregatorBlock(nn.Module):
    """Self-attention among the tokens, Add & Norm, cross-attention to the local features, Add & Norm."""

    def __init__(self, dim, heads, dropout):
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, heads, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = MultiHeadAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, tokens, x, mask):
        """Tokens (B, L, d) refined against features ``x`` (B, N, d) where ``mask`` (B, N); also the
        cross-attention maps (B, heads, L, N)."""
        tokens = self.norm1(tokens + self.self_attn(tokens, tokens, tokens))
        update, attn = self.cross_attn(tokens, x, x, return_attention=True, key_mask=mask)
        return self.norm2(tokens + update), attn


def valid_rows(features):
    """The mask (B, n) of the rows of ``features`` (B, n, c) that are not padding (NaN)."""
    return ~features.isnan().any(dim=-1)


class TokenAggregator(ArcFaceModel):
    """``TokenAggregator(config)`` or with ``AggregatorConfig`` fields as keywords; ``num_classes``: the ArcFace
    head's classes (None: a test-time model). It has no CNN trunk: ``pretrained`` and ``backbone_weights`` are
    accepted, as ``networks.build_model`` passes them to every model, and have nothing to act on."""

    def __init__(self, config=None, /, *, num_classes=None, pretrained=False, backbone_weights=None, **settings):
        super().__init__()
        self.config = config = AggregatorConfig.of(config, **settings)
        dim = config.dim
        self.input_proj = nn.Sequential(nn.Linear(config.local_dim, dim), nn.LayerNorm(dim))
        self.tokenizer = Tokenizer(dim, config.num_tokens, temperature=config.tokenizer_temperature)
        self.refinement = nn.ModuleList(AggregatorBlock(dim, config.heads, config.dropout)
                                        for _ in range(config.refinement_blocks))
        self.projection = nn.Sequential(nn.Linear(config.num_tokens * dim, config.out_dim),
                                        nn.BatchNorm1d(config.out_dim))
        self.add_arcface(num_classes)

    def tokens(self, features, mask):
        """The refined tokens (B, L, d), the tokenizer's assignment (B, L, n) and the last cross-attention maps
        (B, heads, L, n, or None without refinement blocks) of ``features`` (B, n, c) where ``mask`` (B, n)."""
        if not mask.any(dim=1).all():
            raise ValueError("every set needs at least one valid local feature; "
                             f"set(s) {mask.any(dim=1).logical_not().nonzero().flatten().tolist()} have none")
        x = self.input_proj(features.masked_fill(~mask[..., None], 0))
        tokens, assignment = self.tokenizer(x, mask)
        cross = None
        for block in self.refinement:
            tokens, cross = block(tokens, x, mask)
        return tokens, assignment, cross

    def forward_test(self, features, mask=None):
        """L2-normalised global descriptors (B, out_dim) of the sets ``features`` (B, n, c); ``mask`` (B, n) True
        for real features, default: the rows that are not NaN. Padded rows have no influence."""
        mask = valid_rows(features) if mask is None else mask
        tokens = self.tokens(features, mask)[0]
        return F.normalize(self.projection(tokens.flatten(1)), dim=-1)


def padded_local_features(extractor, images, num_features, scales=SCALES):
    """The ``num_features`` best local descriptors of each image of ``images`` (B, 3, H, W) by ``extractor``'s
    ``forward_local`` over ``scales``, as (B, num_features, c) with the rows after an image's last feature NaN."""
    found = [extractor.forward_local(image[None], scales, num_features).descriptors for image in images]
    rows = images.new_full((len(images), num_features, found[0].shape[1]), float("nan"))
    for row, descriptors in zip(rows, found, strict=True):
        row[:len(descriptors)] = descriptors
    return rows


class LocalAggregation(nn.Module):
    """An aggregator behind its frozen extractor: ``forward_test(images)`` gives global descriptors as every model
    does (the test.py / index.py path), ``forward_local`` is the extractor's (so ASMK and VLAD run on the same
    features). ``config`` is the aggregator's."""

    multiscale = True  # its descriptor already pools the extractor's scales: evaluation runs it at scale 1 only

    def __init__(self, extractor, aggregator):
        super().__init__()
        self.extractor = extractor
        self.aggregator = aggregator
        self.config = aggregator.config

    def forward_local(self, image, scales=SCALES, num_features=1000):
        return self.extractor.forward_local(image, scales, num_features)

    @torch.no_grad()
    def forward_test(self, images):
        """L2-normalised global descriptors (B, out_dim) of normalised images (B, 3, H, W): the extractor's best
        ``config.num_features`` local features over its scales, aggregated."""
        return self.aggregator.forward_test(padded_local_features(self.extractor, images, self.config.num_features))

    @torch.no_grad()
    def attention_maps(self, images):
        """Where each token looks, as ``Token.attention_maps``: ``{"tokenizer", "refinement"}`` -> (B, L, H, W) on
        the grid of the extractor's map at scale 1; each local feature adds its weight (the tokenizer's assignment,
        the last cross-attention averaged over heads) to the cell that holds its centre, whatever its scale."""
        per_image = [self._attention_maps(image[None]) for image in images]
        return {source: torch.cat([maps[source] for maps in per_image]) for source in per_image[0]}

    def _attention_maps(self, image):
        found = self.extractor.forward_local(image, SCALES, self.config.num_features)
        sizes = torch.tensor([attention.shape for attention, _ in self.extractor.scale_maps(image, SCALES)])
        level = (found.scales.float()[:, None] - torch.tensor(SCALES, device=image.device)).abs().argmin(dim=1)
        h, w = sizes[SCALES.index(1.0)].tolist()
        grid = sizes.to(found.locations.device)[level]  # (n, 2): its scale's map (H, W)
        x = ((found.locations[:, 0] + 0.5) / grid[:, 1] * w).long().clamp(max=w - 1)
        y = ((found.locations[:, 1] + 0.5) / grid[:, 0] * h).long().clamp(max=h - 1)
        features = found.descriptors[None]
        _, assignment, cross = self.aggregator.tokens(features, torch.ones(features.shape[:2], dtype=torch.bool,
                                                                           device=features.device))
        weights = {"tokenizer": assignment[0]} | ({} if cross is None else {"refinement": cross[0].mean(dim=0)})
        return {source: torch.zeros(len(value), h * w, dtype=value.dtype, device=value.device)
                .index_add_(1, y * w + x, value).unflatten(1, (h, w))[None] for source, value in weights.items()}
