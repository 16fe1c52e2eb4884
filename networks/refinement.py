"""The refinement block: tokens enhanced by cross-attention to the local features, an MLP and
self-attention among tokens (paper, "Refinement block"; Table 4 ablates its parts).

t <- t + CrossAttn(LN1(t), x, x);  t <- t + MLP(t);  t <- t + SelfAttn(LN2(t))   (docs/FACTS.md, "The model")
with MLP = Linear(d, 2d), GELU, dropout, Linear(2d, d), dropout; every residual branch has drop-path.
"""

from torch import nn
from torchvision.ops import StochasticDepth

from networks.attention import MultiHeadAttention


class MLP(nn.Sequential):
    def __init__(self, dim, hidden, dropout=0.1):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(dropout)


class RefinementBlock(nn.Module):
    def __init__(self, dim, heads=8, dropout=0.1, drop_path=0.1, cross_attention=True, self_attention=True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim) if cross_attention else None
        self.cross_attn = MultiHeadAttention(dim, heads, dropout) if cross_attention else None
        self.mlp = MLP(dim, 2 * dim, dropout)
        self.norm2 = nn.LayerNorm(dim) if self_attention else None
        self.self_attn = MultiHeadAttention(dim, heads, dropout) if self_attention else None
        self.drop_path = StochasticDepth(drop_path, mode="row")

    def forward(self, tokens, x):
        """``tokens`` (B, L, d) refined against local features ``x`` (B, N, d).

        Returns the refined tokens and the cross-attention maps (B, heads, L, N), or None without cross-attention.
        """
        attn = None
        if self.cross_attn is not None:
            update, attn = self.cross_attn(self.norm1(tokens), x, x, return_attention=True)
            tokens = tokens + self.drop_path(update)
        tokens = tokens + self.drop_path(self.mlp(tokens))
        if self.self_attn is not None:
            normed = self.norm2(tokens)
            tokens = tokens + self.drop_path(self.self_attn(normed, normed, normed))
        return tokens, attn
