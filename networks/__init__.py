"""The Token model: ``from networks import Token, load_token``."""

from networks.arcface import ArcFace
from networks.attention import MultiHeadAttention
from networks.backbone import Backbone
from networks.checkpoint import load_token
from networks.config import TokenConfig
from networks.lfsa import LFSA
from networks.pooling import GeM, SPoC
from networks.refinement import RefinementBlock
from networks.token import Token
from networks.tokenizer import Tokenizer

__all__ = ["ArcFace", "Backbone", "GeM", "LFSA", "MultiHeadAttention", "RefinementBlock", "SPoC", "Token",
           "TokenConfig", "Tokenizer", "load_token"]
