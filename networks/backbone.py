"""The CNN trunk: a torchvision ResNet without its average pool and classifier (stride 32).

ImageNet weights come from torchvision's weight enums, read from the torch hub cache (downloaded there when
the machine is online) or from a file given by path; without either, one clear error says which file to
put where.
"""

from pathlib import Path

import torch
from torch import nn
from torchvision import models

from utils.errors import InputError

RESNETS = {
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (models.resnet101, models.ResNet101_Weights.IMAGENET1K_V1),
    "resnet152": (models.resnet152, models.ResNet152_Weights.IMAGENET1K_V1),
}


def imagenet_state_dict(name, weights_path=None):
    """The ImageNet state_dict of ResNet ``name``: from ``weights_path``, else the hub cache, else download."""
    weights = RESNETS[name][1]
    if weights_path is not None:
        if not Path(weights_path).is_file():
            raise InputError(f"{weights_path} not found: expected the ImageNet weights of {name}")
        return torch.load(weights_path, map_location="cpu", weights_only=True)
    filename = Path(weights.url).name
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True)
    try:
        return torch.hub.load_state_dict_from_url(weights.url, map_location="cpu", progress=True)
    except Exception as err:  # offline, proxy, DNS: all end the same way for the user
        raise InputError(
            f"ImageNet weights of {name} not available ({err.__class__.__name__}): download {weights.url} "
            f"to {cached}, or pass its path (--backbone-weights), or train with --no-pretrained"
        ) from None


class Backbone(nn.Module):
    """ResNet trunk conv1 .. layer4; ``channels`` is its output width (512 for resnet18/34, else 2048), half of it
    the width of layer3."""

    def __init__(self, name="resnet101", pretrained=True, weights_path=None):
        super().__init__()
        if name not in RESNETS:
            raise ValueError(f"backbone must be one of {sorted(RESNETS)}, got {name!r}")
        resnet = RESNETS[name][0]()
        if pretrained:
            resnet.load_state_dict(imagenet_state_dict(name, weights_path))
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        self.channels = resnet.fc.in_features

    def forward(self, images):
        return self.forward_layers(images)[1]

    def forward_layers(self, images):
        """The outputs of layer3 (stride 16) and layer4 (stride 32)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        x3 = self.layer3(self.layer2(self.layer1(x)))
        return x3, self.layer4(x3)
