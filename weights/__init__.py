"""Model files: reading any released or trained checkpoint into a model, writing ours, and the released models.

- ``checkpoint``: ``load_model(path)`` / ``load_token(path)`` (read safely, nothing in a file runs code),
  ``model_state`` and the atomic ``save_checkpoint`` / ``copy_checkpoint``;
- ``released``: the authors' layouts (Token repository, deep-image-retrieval) mapped onto our models;
- ``zoo``: the released files by name (``R101-Token``, ...), where they are published and the config of each;
- ``hub``: a released model downloaded to the torch hub cache (``hubconf.py``'s entry points).

``from networks import load_model`` still works: ``networks`` re-exports ``load_model`` and ``load_token``.
"""

from weights import zoo
from weights.checkpoint import copy_checkpoint, load_model, load_token, model_state, read_file, save_checkpoint

__all__ = ["copy_checkpoint", "load_model", "load_token", "model_state", "read_file", "save_checkpoint", "zoo"]
