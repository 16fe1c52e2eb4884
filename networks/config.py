"""One frozen config per model: the single description that its constructor, checkpoints and flags share.

``TokenConfig`` describes the paper's model (docs/FACTS.md, "The model"; ablations of Tables 3-6); ``RMACConfig``,
``SOLARConfig``, ``DELGConfig``, ``NetVLADConfig``, ``APGeMConfig`` and ``HOWConfig`` the Table 1 baselines
(docs/FACTS.md, "The baselines", "HOW"); ``AggregatorConfig`` Token's aggregator over local features. The
constructor reads it, checkpoints store it (``model_config``, with the model's name under ``"model"``), train.py's
model flags are made from its fields (``add_arguments``: ``--num-tokens`` for ``num_tokens``, ``--no-cross-attention``
for a switch that defaults to True) and the demo builds its models from it.
``CONFIGS`` maps a model's name to its config class; ``config_from_dict`` reads any checkpoint's ``model_config``.
"""

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import ClassVar

from networks.backbone import RESNETS
from networks.tokenizer import TOKENIZERS

AGGREGATIONS = ("tokens", "spoc", "gem")
BACKBONES = tuple(sorted(RESNETS))


def _setting(default, help, choices=None):
    return field(default=default, metadata={"help": help, "choices": choices})


MAX_SIZE = 1 << 16  # no size, count or number of blocks of a model goes near this; a file saying so is damaged


def _check_type(f, value):
    """Raise a ``ValueError`` naming field ``f`` unless ``value`` is of its type: a str, a bool, an int (not a
    bool) in [-MAX_SIZE, MAX_SIZE], or a finite real number."""
    if f.type is int:
        ok = type(value) is int and -MAX_SIZE <= value <= MAX_SIZE
        expected = f"an integer of at most {MAX_SIZE}"
    elif f.type is float:
        ok = type(value) in (int, float) and math.isfinite(value)
        expected = "a finite number"
    else:
        ok, expected = type(value) is f.type, f"a {f.type.__name__}"
    if not ok:
        raise ValueError(f"{f.name} must be {expected}, got {value!r}")


class ModelConfig:
    """What every model config does: check its values, round-trip through a dict and through train.py's flags.

    A subclass is a frozen dataclass with a ``model`` name, its fields made by ``_setting``; ``positive`` names the
    fields that must be greater than 0 (at least 1 for a whole number).
    """

    model: ClassVar[str]
    positive: ClassVar[tuple] = ()

    def __post_init__(self):
        for f in fields(self):
            _check_type(f, getattr(self, f.name))
            choices = f.metadata["choices"]
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"{f.name} must be one of {', '.join(choices)}, got {getattr(self, f.name)!r}")
        for name in self.positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")

    @classmethod
    def of(cls, config=None, **settings):
        """``config`` (of this class, or None for the defaults) with the keyword ``settings`` replacing fields."""
        if config is not None and not isinstance(config, cls):
            raise TypeError(f"expected a {cls.__name__} or keywords, got {config!r}")
        return replace(config or cls(), **settings)

    @property
    def descriptor_dim(self):
        """Size of the global descriptor that ``forward_test`` returns."""
        return self.out_dim

    def to_dict(self):
        return {"model": self.model, **asdict(self)}

    @classmethod
    def from_dict(cls, settings):
        """The config of a checkpoint's ``model_config``; raises ``ValueError`` naming an unknown key."""
        settings = dict(settings)
        model = settings.pop("model", cls.model)
        if model != cls.model:
            raise ValueError(f"model_config describes a {model!r} model, not a {cls.model!r}")
        unknown = sorted(map(str, set(settings) - {f.name for f in fields(cls)}))
        if unknown:
            raise ValueError(f"unknown model setting(s) {', '.join(unknown)} (a file of a newer version?)")
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


@dataclass(frozen=True)
class TokenConfig(ModelConfig):
    """The architecture and regularisation of a Token; the defaults are the released R101-Token."""

    model: ClassVar[str] = "token"
    positive: ClassVar[tuple] = ("dim", "out_dim", "num_tokens", "heads", "tokenizer_temperature")

    backbone: str = _setting("resnet101", "CNN trunk", BACKBONES)
    dim: int = _setting(1024, "channels d of the local features and tokens")
    out_dim: int = _setting(1024, "size of the global descriptor")
    num_tokens: int = _setting(4, "number of visual tokens L (Table 6)")
    heads: int = _setting(8, "attention heads; must divide --dim")
    lfsa_blocks: int = _setting(1, "local feature self-attention blocks (Table 3)")
    refinement_blocks: int = _setting(2, "refinement blocks N (Table 4)")
    tokenizer: str = _setting("attention", "tokenizer kind (Table 5)", TOKENIZERS)
    tokenizer_temperature: float = _setting(1.0, "the tokenizer's logits are divided by it before the softmax: 1 as "
                                                 "released; sqrt(--dim) keeps the softmax from saturating (ours)")
    aggregation: str = _setting("tokens", "tokens (the paper's), or the SPoC (Table 3) / GeM pooling of the local "
                                "features", AGGREGATIONS)
    cross_attention: bool = _setting(True, "refinement blocks without cross-attention (Table 4)")
    self_attention: bool = _setting(True, "refinement blocks without self-attention (Table 4)")
    dropout: float = _setting(0.1, "dropout in attention and MLPs")
    drop_path: float = _setting(0.1, "drop-path rate of every residual branch")
    arcface_margin: float = _setting(0.2, "ArcFace margin m")
    arcface_scale: float = _setting(32.0, "ArcFace scale s")

    def __post_init__(self):
        super().__post_init__()
        if self.lfsa_blocks < 0 or self.refinement_blocks < 0:
            raise ValueError("lfsa_blocks and refinement_blocks must be at least 0")
        if self.dim % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide dim ({self.dim})")
        if not (0 <= self.dropout < 1 and 0 <= self.drop_path < 1):
            raise ValueError("dropout and drop_path must lie in [0, 1)")


@dataclass(frozen=True)
class RMACConfig(ModelConfig):
    """R-MAC pooling + whitening (released R101-RMAC); ArcFace s = sqrt(out_dim) like Token's 32 = sqrt(1024)."""

    model: ClassVar[str] = "rmac"
    positive: ClassVar[tuple] = ("out_dim", "levels")

    backbone: str = _setting("resnet101", "CNN trunk", BACKBONES)
    out_dim: int = _setting(2048, "size of the global descriptor (the whitening's output)")
    levels: int = _setting(3, "R-MAC region scales L")
    overlap: float = _setting(0.4, "R-MAC overlap of neighbouring regions")
    arcface_margin: float = _setting(0.2, "ArcFace margin m")
    arcface_scale: float = _setting(math.sqrt(2048), "ArcFace scale s")


@dataclass(frozen=True)
class SOLARConfig(ModelConfig):
    """Second-order attention + GeM + whitening (released R101-SOLAR)."""

    model: ClassVar[str] = "solar"
    positive: ClassVar[tuple] = ("out_dim",)

    backbone: str = _setting("resnet101", "CNN trunk", BACKBONES)
    out_dim: int = _setting(2048, "size of the global descriptor (the whitening's output)")
    gem_p: float = _setting(3.0, "GeM power p (fixed)")
    arcface_margin: float = _setting(0.2, "ArcFace margin m")
    arcface_scale: float = _setting(math.sqrt(2048), "ArcFace scale s")


@dataclass(frozen=True)
class DELGConfig(ModelConfig):
    """DELG's global branch (GeM + whitening) and its training-only local attention branch (released R101-DELG)."""

    model: ClassVar[str] = "delg"
    positive: ClassVar[tuple] = ("out_dim", "local_dim")

    backbone: str = _setting("resnet101", "CNN trunk", BACKBONES)
    out_dim: int = _setting(2048, "size D of the global descriptor (the whitening's output)")
    local_dim: int = _setting(128, "channels of the local features (training only)")
    gem_p: float = _setting(3.0, "GeM power p (fixed)")
    arcface_margin: float = _setting(0.2, "ArcFace margin m of the global head")
    arcface_scale: float = _setting(math.sqrt(2048), "ArcFace scale s of the global head, sqrt(D) as released")
    local_margin: float = _setting(0.1, "ArcFace margin of the local head")
    local_scale: float = _setting(math.sqrt(128), "ArcFace scale of the local head, sqrt(--local-dim) as released")


@dataclass(frozen=True)
class NetVLADConfig(ModelConfig):
    """The authors' NetVLAD: projection, one LFSA block, K soft-assigned centroids, projection (R101-NetVLAD)."""

    model: ClassVar[str] = "netvlad"
    positive: ClassVar[tuple] = ("dim", "clusters", "heads")

    backbone: str = _setting("resnet101", "CNN trunk (frozen in training)", BACKBONES)
    dim: int = _setting(1024, "channels d of the local features, also the descriptor size")
    clusters: int = _setting(4, "VLAD centroids K")
    heads: int = _setting(8, "attention heads of the encoder block; must divide --dim")
    dropout: float = _setting(0.1, "dropout in the encoder's attention")
    drop_path: float = _setting(0.1, "drop-path rate of the encoder's residual branches")
    arcface_margin: float = _setting(0.2, "ArcFace margin m")
    arcface_scale: float = _setting(32.0, "ArcFace scale s")

    @property
    def descriptor_dim(self):
        return self.dim

    def __post_init__(self):
        super().__post_init__()
        if self.dim % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide dim ({self.dim})")
        if not (0 <= self.dropout < 1 and 0 <= self.drop_path < 1):
            raise ValueError("dropout and drop_path must lie in [0, 1)")


@dataclass(frozen=True)
class APGeMConfig(ModelConfig):
    """deep-image-retrieval's ResNet + GeM (learned p) or MAC + fc + L2 (Resnet-101-AP-GeM.pt and siblings)."""

    model: ClassVar[str] = "apgem"
    positive: ClassVar[tuple] = ("out_dim",)

    backbone: str = _setting("resnet101", "CNN trunk", BACKBONES)
    out_dim: int = _setting(2048, "size of the global descriptor (the fc layer's output)")
    pooling: str = _setting("gem", "gem (learned power: AP-GeM, TL-GeM) or mac (max pooling: TL-MAC)",
                            ("gem", "mac"))
    gem_p: float = _setting(3.0, "initial GeM power p")
    arcface_margin: float = _setting(0.2, "ArcFace margin m (ours: the released ones used AP or triplet losses)")
    arcface_scale: float = _setting(math.sqrt(2048), "ArcFace scale s")


@dataclass(frozen=True)
class HOWConfig(ModelConfig):
    """HOW local features (Tolias et al., ECCV 2020): a ResNet trunk, L2 attention, 3x3 smoothing, 1x1 reduction."""

    model: ClassVar[str] = "how"
    positive: ClassVar[tuple] = ("out_dim",)

    backbone: str = _setting("resnet101", "CNN trunk", BACKBONES)
    skip_layer: int = _setting(1, "trunk blocks dropped from the end: 1 ends at layer3 (HOW's R50/R101), 0 at layer4 "
                                  "(HOW's R18)")
    out_dim: int = _setting(128, "size of the local descriptors (the reduction's output) and of the global one")
    arcface_margin: float = _setting(0.2, "ArcFace margin m")
    arcface_scale: float = _setting(math.sqrt(128), "ArcFace scale s")

    def __post_init__(self):
        super().__post_init__()
        if self.skip_layer not in (0, 1):
            raise ValueError(f"skip_layer must be 0 or 1, got {self.skip_layer!r}")


@dataclass(frozen=True)
class AggregatorConfig(ModelConfig):
    """Token's aggregator over the local features of a frozen extractor (the authors' Dec 2021 extension; our design,
    docs/models.md, "The Token aggregator over local features")."""

    model: ClassVar[str] = "aggregator"
    positive: ClassVar[tuple] = ("local_dim", "num_features", "dim", "out_dim", "num_tokens", "heads",
                                 "tokenizer_temperature")

    local_dim: int = _setting(128, "width of the extractor's local descriptors")
    num_features: int = _setting(1000, "local features per image, the extractor's best by attention over its scales "
                                       "(cached for training, extracted at evaluation)")
    dim: int = _setting(1024, "width d of the projected local features and of the tokens")
    out_dim: int = _setting(1024, "size of the global descriptor")
    num_tokens: int = _setting(4, "number of visual tokens L")
    tokenizer_temperature: float = _setting(1.0, "the tokenizer's logits are divided by it before the softmax: 1 as "
                                                 "Token's release; sqrt(--dim) keeps the softmax from saturating")
    heads: int = _setting(8, "attention heads; must divide --dim")
    refinement_blocks: int = _setting(2, "refinement blocks (self-attention, then cross-attention to the features)")
    dropout: float = _setting(0.1, "dropout in attention")
    arcface_margin: float = _setting(0.2, "ArcFace margin m")
    arcface_scale: float = _setting(32.0, "ArcFace scale s")

    @property
    def backbone(self):
        """What the model reads, in the place of the other models' CNN trunk."""
        return f"{self.local_dim}-d local features"

    def __post_init__(self):
        super().__post_init__()
        if self.refinement_blocks < 0:
            raise ValueError("refinement_blocks must be at least 0")
        if self.dim % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide dim ({self.dim})")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must lie in [0, 1)")


CONFIGS = {config.model: config for config in (TokenConfig, RMACConfig, SOLARConfig, DELGConfig, NetVLADConfig,
                                                APGeMConfig, HOWConfig, AggregatorConfig)}


def config_from_dict(settings):
    """The config a checkpoint's ``model_config`` describes; files without ``"model"`` predate the baselines and
    hold a Token. Raises ``ValueError`` naming what is wrong."""
    if not isinstance(settings, dict):
        raise ValueError(f"expected a dict of settings, got {type(settings).__name__}")
    name = settings.get("model", "token")
    if name not in CONFIGS:
        raise ValueError(f"unknown model {name!r} (known: {', '.join(CONFIGS)}; a file of a newer version?)")
    return CONFIGS[name].from_dict(settings)
