"""The models: ``from networks import Token, load_model``.

``build_model(config, num_classes=...)`` builds the model that a config of ``networks.config`` (``CONFIGS``, by
model name) describes. ``load_model(path)`` and ``load_token(path)``, which read any released or trained model file,
live in ``weights.checkpoint``; they are re-exported here, imported on first use (``__getattr__``): ``weights``
builds on this package, so importing it here, up front, would be circular.
"""

from networks.aggregator import LocalAggregation, TokenAggregator
from networks.apgem import APGeM
from networks.arcface import ArcFace
from networks.attention import MultiHeadAttention
from networks.backbone import Backbone
from networks.config import (
    CONFIGS,
    AggregatorConfig,
    APGeMConfig,
    DELGConfig,
    HOWConfig,
    NetVLADConfig,
    RMACConfig,
    SOLARConfig,
    TokenConfig,
)
from networks.delg import DELG
from networks.how import HOW, LocalFeatures
from networks.lfsa import LFSA
from networks.models import MODELS, build_model
from networks.netvlad import NetVLAD
from networks.pca_whitening import PCAWhitening
from networks.pooling import MAC, GeM, SPoC
from networks.refinement import RefinementBlock
from networks.rmac import RMAC
from networks.solar import SOLAR
from networks.token import Token
from networks.tokenizer import Tokenizer

__all__ = ["APGeM", "APGeMConfig", "AggregatorConfig", "ArcFace", "Backbone", "CONFIGS", "DELG", "DELGConfig", "GeM",
           "HOW", "HOWConfig", "LFSA", "LocalAggregation", "LocalFeatures", "MAC", "MODELS", "MultiHeadAttention",
           "NetVLAD", "NetVLADConfig", "PCAWhitening", "RMAC", "RMACConfig", "RefinementBlock", "SOLAR", "SOLARConfig",
           "SPoC", "Token", "TokenAggregator", "TokenConfig", "Tokenizer", "build_model", "load_model", "load_token"]

_FROM_WEIGHTS = ("load_model", "load_token")


def __getattr__(name):
    """``networks.load_model`` and ``networks.load_token``: those of ``weights.checkpoint`` (PEP 562)."""
    if name in _FROM_WEIGHTS:
        import weights.checkpoint

        return getattr(weights.checkpoint, name)
    raise AttributeError(f"module 'networks' has no attribute {name!r}")
