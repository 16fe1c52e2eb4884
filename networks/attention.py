"""Multi-head attention as the released Token model computes it (docs/FACTS.md, "The model").

Separate query, key and value projections with bias, ``heads`` heads, softmax(q k^T / sqrt(d / heads)) over
the keys, an output projection with bias. Initialised as released: q, k, v truncated normal (std 0.02) with zero
bias, the output projection zero, so that an attention branch starts as the identity of its residual. Used by
LFSA (self-attention over local features) and by the refinement block (cross-attention tokens -> local
features, self-attention among tokens).
"""

import torch
from torch import nn


class MultiHeadAttention(nn.Module):
    def __init__(self, dim, heads=8, dropout=0.1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(dropout)
        self.proj_drop = nn.Dropout(dropout)
        for linear in (self.q, self.k, self.v):
            nn.init.trunc_normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def _split(self, x):
        b, n, d = x.shape
        return x.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, query, key, value, return_attention=False, key_mask=None):
        """``query`` (B, M, d) attends to ``key``/``value`` (B, N, d); returns (B, M, d) [and (B, heads, M, N)].

        ``key_mask`` (B, N), True for the keys that count: the others get attention 0 (every query needs one)."""
        q, k, v = self._split(self.q(query)), self._split(self.k(key)), self._split(self.v(value))
        logits = q @ k.transpose(-2, -1) * self.scale
        if key_mask is not None:
            logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        attn = torch.softmax(logits, dim=-1)
        out = self.attn_drop(attn) @ v
        out = self.proj_drop(self.proj(out.transpose(1, 2).flatten(2)))
        return (out, attn) if return_attention else out
