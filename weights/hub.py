"""The released models for ``torch.hub.load``: ``hubconf.py`` defines one entry point per release of
``weights.zoo`` (``token_r101``, ``ap_gem_r50``, ...; ``Release.hub_name``), each made by ``entrypoint``.

A first call downloads the file into ``torch.hub.get_dir()/checkpoints`` as ``python -m datasets.download models``
does (``datasets.download.models.fetch_release``: its SHA-256 recorded in ``<file>.sha256`` and checked on every
later call, an HTML page in its place refused); every failure is one ``InputError`` line.
"""

from pathlib import Path

import torch

from datasets.download.models import DRIVE_URL, fetch_release
from networks.models import build_model
from weights import zoo
from weights.checkpoint import load_model


def cache_dir():
    """Where the released files go: ``checkpoints`` in torch's hub folder (``torch.hub.set_dir``, ``$TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def load_released(name, pretrained=True, base_url=DRIVE_URL):
    """The released model ``name`` (``weights.zoo``) in eval mode: with its released weights, downloaded from
    ``base_url`` (Google Drive) into ``cache_dir()`` unless there, or with ``pretrained=False`` its architecture
    with random weights and no ArcFace head, downloading nothing."""
    release = zoo.release(name)
    if not pretrained:
        return build_model(release.config, pretrained=False).eval()
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return load_model(fetch_release(release, folder, base_url))


def entrypoint(release):
    """The ``hubconf.py`` function that loads ``release``."""

    def load(pretrained=True, base_url=DRIVE_URL):
        return load_released(release.name, pretrained, base_url)

    load.__name__ = load.__qualname__ = release.hub_name
    load.__doc__ = (f"{release.name} ({release.model}, {release.config.backbone}; {release.source}) in eval mode.\n\n"
                    f"pretrained: its released weights, downloaded on first use to torch.hub.get_dir()/checkpoints "
                    f"from {release.address}; False: the architecture with random weights, no download.\n"
                    "base_url: where to download from instead of Google Drive (a mirror of its /uc?id= endpoint).")
    return load


def entrypoints():
    """``{hub name: entry point}`` of every release."""
    return {release.hub_name: entrypoint(release) for release in zoo.RELEASES}
