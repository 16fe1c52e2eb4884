"""``TokenConfig``: the one description of a Token model (docs/FACTS.md, "The model"; ablations of Tables 3-6).

The constructor reads it, checkpoints store it (``model_config``), train.py's model flags are made from its fields
(``add_arguments``: ``--num-tokens`` for ``num_tokens``, ``--no-cross-attention`` for a switch that defaults to
True) and the demo builds its models from it.
"""

from dataclasses import asdict, dataclass, field, fields

from networks.backbone import RESNETS
from networks.tokenizer import TOKENIZERS

AGGREGATIONS = ("tokens", "spoc", "gem")


def _setting(default, help, choices=None):
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class TokenConfig:
    """The architecture and regularisation of a Token; the defaults are the released R101-Token."""

    backbone: str = _setting("resnet101", "CNN trunk", tuple(sorted(RESNETS)))
    dim: int = _setting(1024, "channels d of the local features and tokens")
    out_dim: int = _setting(1024, "size of the global descriptor")
    num_tokens: int = _setting(4, "number of visual tokens L (Table 6)")
    heads: int = _setting(8, "attention heads; must divide --dim")
    lfsa_blocks: int = _setting(1, "local feature self-attention blocks (Table 3)")
    refinement_blocks: int = _setting(2, "refinement blocks N (Table 4)")
    tokenizer: str = _setting("attention", "tokenizer kind (Table 5)", TOKENIZERS)
    aggregation: str = _setting("tokens", "tokens (the paper's), or the SPoC / GeM pooling baselines (Table 3)",
                                AGGREGATIONS)
    cross_attention: bool = _setting(True, "refinement blocks without cross-attention (Table 4)")
    self_attention: bool = _setting(True, "refinement blocks without self-attention (Table 4)")
    dropout: float = _setting(0.1, "dropout in attention and MLPs")
    drop_path: float = _setting(0.1, "drop-path rate of every residual branch")
    arcface_margin: float = _setting(0.2, "ArcFace margin m")
    arcface_scale: float = _setting(32.0, "ArcFace scale s")

    def __post_init__(self):
        for f in fields(self):
            choices = f.metadata["choices"]
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"{f.name} must be one of {', '.join(choices)}, got {getattr(self, f.name)!r}")
        positive = ("dim", "out_dim", "num_tokens", "heads")
        if any(getattr(self, name) < 1 for name in positive):
            raise ValueError(f"{', '.join(positive)} must be positive")
        if self.lfsa_blocks < 0 or self.refinement_blocks < 0:
            raise ValueError("lfsa_blocks and refinement_blocks must be at least 0")
        if self.dim % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide dim ({self.dim})")
        if not (0 <= self.dropout < 1 and 0 <= self.drop_path < 1):
            raise ValueError("dropout and drop_path must lie in [0, 1)")

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, settings):
        """The config of a checkpoint's ``model_config``; raises ``ValueError`` naming an unknown key."""
        unknown = sorted(set(settings) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown model setting(s) {', '.join(map(str, unknown))} (a file of a newer version?)")
        return cls(**settings)

    @classmethod
    def from_args(cls, args):
        """The config of train.py's parsed flags (those ``add_arguments`` made)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    @classmethod
    def add_arguments(cls, group):
        """One flag per field on the argparse ``group``; a switch that defaults to True becomes ``--no-<name>``."""
        for f in fields(cls):
            flag = f.name.replace("_", "-")
            if f.type is bool:
                group.add_argument(f"--no-{flag}", dest=f.name, action="store_false", help=f.metadata["help"])
            else:
                group.add_argument(f"--{flag}", type=f.type, default=f.default,
                                   choices=f.metadata["choices"], help=f.metadata["help"])
        return group

    def as_flags(self):
        """The train.py flags that give this config (the inverse of ``add_arguments`` + ``from_args``)."""
        flags = []
        for f in fields(self):
            value, flag = getattr(self, f.name), f.name.replace("_", "-")
            if f.type is bool:
                flags += [] if value else [f"--no-{flag}"]
            else:
                flags += [f"--{flag}", str(value)]
        return flags

