"""The models: ``from networks import Token, load_model``.

``load_model(path)`` reads any released or trained model file; ``build_model(config, num_classes=...)`` builds the
model that a config of ``networks.config`` (``CONFIGS``, by model name) describes.
"""

from networks.apgem import APGeM
from networks.arcface import ArcFace
from networks.attention import MultiHeadAttention
from networks.backbone import Backbone
from networks.checkpoint import load_model, load_token
from networks.config import CONFIGS, APGeMConfig, DELGConfig, NetVLADConfig, RMACConfig, SOLARConfig, TokenConfig
from networks.delg import DELG
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

__all__ = ["APGeM", "APGeMConfig", "ArcFace", "Backbone", "CONFIGS", "DELG", "DELGConfig", "GeM", "LFSA", "MAC",
           "MODELS", "MultiHeadAttention", "NetVLAD", "NetVLADConfig", "PCAWhitening", "RMAC", "RMACConfig",
           "RefinementBlock", "SOLAR", "SOLARConfig", "SPoC", "Token", "TokenConfig", "Tokenizer", "build_model",
           "load_model", "load_token"]
