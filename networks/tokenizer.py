"""The tokenizer: L visual tokens from local features by spatial attention (paper, "Tokenizer"; Table 5).

For each position n the logits A[i, n] = c_i . x_n against L centres c_i are turned into a **softmax over the
L tokens** (each position shares itself among the tokens; docs/FACTS.md, "The model"), and token i = sum_n A[i, n] x_n,
followed by Linear(d, d) and LayerNorm(d). A ``mask`` (B, N) marks the positions that count (the padded sets of
local features of ``networks.aggregator``): the others get weight 0 in every token. ``temperature`` divides the
logits before the softmax: 1 as released; sqrt(d) scales them as attention scales its logits (ours: with the
released 1, the logits of d-dimensional features against standard-normal queries spread over tens of units, the
softmax is one-hot and no gradient reaches the queries; docs/ablations.md, "Why Token trails GeM in the demo").

``kind`` selects where the centres come from, the tokenizer ablation of Table 5:
- ``"attention"`` (the paper's): learned queries, logits are the plain dot products above;
- ``"learned"``: centres are parameters and the assignment is by distance, logits -||x_n - c_i||^2;
- ``"vq"``: the same distance assignment, but the centres are not trained by gradient: during training each
  centre moves by an exponential moving average towards the mean of the features soft-assigned to it in
  the batch, c_i <- m c_i + (1 - m) sum_{b,n} A[b,i,n] x_{b,n} / sum_{b,n} A[b,i,n].
"""

import torch
from torch import nn

TOKENIZERS = ("attention", "learned", "vq")


class Tokenizer(nn.Module):
    def __init__(self, dim, num_tokens=4, kind="attention", momentum=0.99, temperature=1.0):
        super().__init__()
        if kind not in TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {kind!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.kind = kind
        self.temperature = temperature
        self.momentum = momentum
        centres = torch.randn(1, num_tokens, dim)
        if kind == "attention":
            self.queries = nn.Parameter(centres)
        elif kind == "learned":
            self.centres = nn.Parameter(centres)
        else:
            self.register_buffer("ema_centres", centres)
        self.proj = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim))

    def assignment(self, x, mask=None):
        """Soft assignment (B, L, N) of the N local features in ``x`` (B, N, d) to the L tokens; 0 where ``mask``
        (B, N) is False."""
        if self.kind == "attention":
            logits = self.queries @ x.transpose(1, 2)
        else:
            centres = self.centres if self.kind == "learned" else self.ema_centres.clone()  # updated in place
            logits = -torch.cdist(centres.expand(x.shape[0], -1, -1), x).square()
        attn = torch.softmax(logits if self.temperature == 1 else logits / self.temperature, dim=1)
        return attn if mask is None else attn * mask[:, None, :]

    @torch.no_grad()
    def _update_centres(self, attn, x):
        mass = attn.sum(dim=(0, 2)).clamp_min(1e-6)[:, None]
        batch_mean = torch.einsum("bln,bnd->ld", attn, x) / mass
        self.ema_centres.mul_(self.momentum).add_((1 - self.momentum) * batch_mean[None].to(self.ema_centres))

    def forward(self, x, mask=None):
        """``x``: local features (B, N, d) -> tokens (B, L, d) and the assignment (B, L, N); ``mask`` (B, N): the
        features that count (default: all)."""
        attn = self.assignment(x, mask)
        if self.kind == "vq" and self.training:
            self._update_centres(attn, x)
        return self.proj(attn @ x), attn
