"""torch.hub entry points: the released models of ``weights/zoo.py``, by name, in eval mode.

    model = torch.hub.load("<owner>/<repo>", "token_r101")  # released weights, downloaded once, then cached
    model = torch.hub.load("path/to/a/clone", "token_r50", source="local", pretrained=False)  # architecture only
    torch.hub.list("<owner>/<repo>")  # every name

One entry per release (``weights.hub``): token_r50, token_r101, netvlad_r101, rmac_r101,
solar_r101, delg_r101, how_r101, tl_mac_r101, tl_gem_r101, ap_gem_r50, ap_gem_r101, ap_gem_lm18_r101.
"""

from weights.hub import entrypoints as _entrypoints

dependencies = ["torch", "torchvision", "numpy", "pandas", "PIL", "gdown", "requests", "tqdm"]  # what its imports need

globals().update(_entrypoints())
