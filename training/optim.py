"""The optimizer and the learning-rate schedule (docs/FACTS.md, "Training recipe")."""

import math

import torch


def build_optimizer(model, args):
    """SGD or AdamW (decoupled decay) over the parameters that train (a frozen trunk's, such as NetVLAD's, are left
    out); weight decay on weight matrices, kernels, token queries and class weights, not on 1-d parameters
    (biases, BatchNorm/LayerNorm weights)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim > 1]},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    if args.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov,
                           weight_decay=args.weight_decay)


def lr_factor(step, total_steps, schedule, warmup_steps, warmup_start):
    """The learning rate at optimizer ``step`` as a fraction of --lr.

    linear: 1 - step / total_steps. cosine: from ``warmup_start`` linearly to 1 over ``warmup_steps``, then
    half a cosine to 0 at ``total_steps``.
    """
    if schedule == "linear":
        return max(0.0, 1.0 - step / total_steps)
    if step < warmup_steps:
        return warmup_start + (1.0 - warmup_start) * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))
