"""Every model by name: ``MODELS`` (name -> class) and ``build_model(config)``, the model a config describes."""

from networks.aggregator import TokenAggregator
from networks.apgem import APGeM
from networks.delg import DELG
from networks.how import HOW
from networks.netvlad import NetVLAD
from networks.rmac import RMAC
from networks.solar import SOLAR
from networks.token import Token

MODELS = {"token": Token, "rmac": RMAC, "solar": SOLAR, "delg": DELG, "netvlad": NetVLAD, "apgem": APGeM,
          "how": HOW, "aggregator": TokenAggregator}


def build_model(config, num_classes=None, pretrained=True, backbone_weights=None):
    """The model of ``config`` (any ``networks.config`` config), with an ArcFace head of ``num_classes`` (None: a
    test-time model) and ImageNet weights in its trunk when ``pretrained``."""
    return MODELS[config.model](config, num_classes=num_classes, pretrained=pretrained,
                                backbone_weights=backbone_weights)
