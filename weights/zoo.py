"""The released checkpoints by name: which file, where it is published, and which model of ours reads it.

Names are those of the tables that publish them: the Token authors' README (R50/R101-Token and the Table 1
baselines they retrained on GLDv2-clean with ArcFace) and deep-image-retrieval's README (the triplet-loss and
AP-loss GeM networks). ``python -m datasets.download models [NAME ...] --dest DIR`` fetches them from Google
Drive; ``resolve`` turns a name or a path into the file to load. Each loadable release carries the config of its
architecture (what ``weights.released`` infers from the file's keys), so that ``hubconf.py`` builds it without the
file; that of ``R101-HOW``, whose layout is not published, is HOW's R101 (ending at layer3, 128-d), as ``load_model``
reads it from any of HOW's layouts (``weights.how``).
"""

from dataclasses import dataclass
from pathlib import Path

from networks.config import (
    APGeMConfig,
    DELGConfig,
    HOWConfig,
    ModelConfig,
    NetVLADConfig,
    RMACConfig,
    SOLARConfig,
    TokenConfig,
)
from utils.errors import InputError

DRIVE_VIEW = "https://drive.google.com/file/d/{}/view"
MODELS_DIR = "models"  # where downloads go and names are looked up, unless told otherwise


@dataclass(frozen=True)
class Release:
    """One released file. ``config``: the architecture of ours that loads it."""

    name: str
    file: str
    drive_id: str
    source: str
    config: ModelConfig

    @property
    def address(self):
        """The Drive page of the file, to open in a browser."""
        return DRIVE_VIEW.format(self.drive_id)

    @property
    def model(self):
        """The name of the model class that loads the file (``Token``, ``APGeM``, ...)."""
        return type(self.config).__name__.removesuffix("Config")

    @property
    def hub_name(self):
        """Its ``hubconf.py`` entry point: ``R101-AP-GeM-LM18`` -> ``ap_gem_lm18_r101``."""
        depth, model = self.name.split("-", 1)
        return f"{model}_{depth}".lower().replace("-", "_")


_TOKEN = "Token authors' README (Wu et al., AAAI 2022)"
_DIR = "deep-image-retrieval README"
RELEASES = (
    Release("R50-Token", "R50-Token.pth", "111CQpn38d2P82VhbawMrM5wGNMU9AlFq", _TOKEN,
            TokenConfig(backbone="resnet50")),
    Release("R101-Token", "R101-Token.pth", "1g_fvpaSyYn9QmzyVnoY7cDlUL7EZWbZz", _TOKEN, TokenConfig()),
    Release("R101-HOW", "R101-HOW.pth", "101DDy9aEeOK22xfL4xm2HTaeVBBSSr1k",
            f"{_TOKEN}, rows HOW + VLAD / ASMK (HOW: Tolias et al., ECCV 2020)", HOWConfig()),
    Release("R101-NetVLAD", "R101-NetVLAD.pth", "1zESoQbza0c9hqasK8rGJCWoONMV43ekQ",
            f"{_TOKEN}, Table 1 (NetVLAD: Arandjelovic et al., CVPR 2016)", NetVLADConfig()),
    Release("R101-RMAC", "R101-RMAC.pth", "12um3mZU2kVNto3MPrZ6FmxFca_tL3Sgi",
            f"{_TOKEN}, Table 1 (R-MAC: Tolias et al., ICLR 2016)", RMACConfig()),
    Release("R101-SOLAR", "R101-SOLAR.pth", "1CJNEeE0NDlsl56jnmsZFmPfH-jx32Syh",
            f"{_TOKEN}, Table 1 (SOLAR: Ng et al., ECCV 2020)", SOLARConfig()),
    Release("R101-DELG", "R101-DELG.pth", "10WExWiY5cc4-hrQQpQ3yUvOV06f3wYaB",
            f"{_TOKEN}, Table 1 (DELG: Cao et al., ECCV 2020)", DELGConfig()),
    Release("R101-TL-MAC", "Resnet101-TL-MAC.pt", "13MUGNwn_CYGZvqDBD8FGD8fVYxThsSDg",
            f"{_DIR} (triplet loss: Gordo et al., IJCV 2017)", APGeMConfig(pooling="mac")),
    Release("R101-TL-GeM", "Resnet101-TL-GeM.pt", "1vhm1GYvn8T3-1C4SPjPNJOuTU9UxKAG6",
            f"{_DIR} (triplet loss: Gordo et al., IJCV 2017)", APGeMConfig()),
    Release("R50-AP-GeM", "Resnet50-AP-GeM.pt", "1oPtE_go9tnsiDLkWjN4NMpKjh-_md1G5",
            f"{_DIR} (AP loss: Revaud et al., ICCV 2019)", APGeMConfig(backbone="resnet50")),
    Release("R101-AP-GeM", "Resnet101-AP-GeM.pt", "1UWJGDuHtzaQdFhSMojoYVQjmCXhIwVvy",
            f"{_DIR} (AP loss: Revaud et al., ICCV 2019)", APGeMConfig()),
    Release("R101-AP-GeM-LM18", "Resnet101-AP-GeM-LM18.pt", "1r76NLHtJsH-Ybfda4aLkUIoW3EEsi25I",
            f"{_DIR} (AP loss, trained on Google Landmarks 2018)", APGeMConfig()),
)
RELEASED = {release.name: release for release in RELEASES}


def download_command(names, models_dir):
    """The command that fetches ``names`` into ``models_dir``."""
    return f"python -m datasets.download models {' '.join(names)} --dest {models_dir}"


def release(name):
    """The ``Release`` called ``name``; an ``InputError`` listing the known names otherwise."""
    if name not in RELEASED:
        raise InputError(f"{name!r} is not a released model: expected one of {', '.join(RELEASED)}")
    return RELEASED[name]


def resolve(name_or_path, models_dir=MODELS_DIR):
    """The checkpoint file for ``name_or_path``: an existing path as is, a released name as ``models_dir/<file>``.

    Raises ``InputError``: for a released file not yet downloaded, naming the file expected, its Drive page and
    the command that fetches it; for anything else, listing the released names.
    """
    path = Path(name_or_path)
    if path.exists():
        return path
    if str(name_or_path) not in RELEASED:
        if path.suffix or len(path.parts) > 1:  # a path, not a name
            raise InputError(f"{name_or_path} not found: expected a model checkpoint file")
        raise InputError(f"{name_or_path} not found: expected a model checkpoint file or a released model name "
                         f"({', '.join(RELEASED)})")
    found = release(str(name_or_path))
    file = Path(models_dir) / found.file
    if not file.is_file():
        raise InputError(f"{file} not found: expected the released {found.name} checkpoint from {found.address}; "
                         f"fetch it with: {download_command([found.name], models_dir)}")
    return file
