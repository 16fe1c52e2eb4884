"""Local Feature Self-Attention (LFSA): context-aware local features (paper, Sec. "Method", Fig. 2).

x <- x + MHA(x, x, x); x <- x + Linear(BatchNorm1d(x)), the BatchNorm taken over all B*N positions
(docs/FACTS.md, "The model"). Both residual branches carry drop-path during training.
"""

from torch import nn
from torchvision.ops import StochasticDepth

from networks.attention import MultiHeadAttention


class LFSA(nn.Module):
    def __init__(self, dim, heads=8, dropout=0.1, drop_path=0.1):
        super().__init__()
        self.attn = MultiHeadAttention(dim, heads, dropout)
        self.norm = nn.BatchNorm1d(dim)
        self.linear = nn.Linear(dim, dim)
        self.drop_path = StochasticDepth(drop_path, mode="row")

    def forward(self, x):
        """``x``: local features (B, N, d) -> (B, N, d)."""
        x = x + self.drop_path(self.attn(x, x, x))
        normed = self.norm(x.transpose(1, 2)).transpose(1, 2)
        return x + self.drop_path(self.linear(normed))
