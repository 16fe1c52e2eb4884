"""A procedurally generated "landmark world": train and evaluate end to end on a CPU.

Every landmark is a structured scene drawn with PIL from ``(seed, landmark index)`` alone (``landmarks.py``),
in one of a few dozen palettes that several landmarks share (``palette.py``). A "photo" of a landmark is a
view of it (``views.py``): scale, crop, perspective warp and rotation, lighting, occluders, a cluttered
background that belongs to no landmark, blur and sensor noise; a difficulty in [0, 1] sets how extreme the
view is, and how much of the landmark is visible is measured exactly from the geometry and the occluders.

``generate`` (``world.py``) writes the authors' layout under a data root ``root``, so that the same
``--data-root`` serves ``train.py`` and ``test.py``:

* ``root/Google-landmark-v2/``: a GLDv2-clean-format training set, ``train_clean.csv`` (``landmark_id,images``),
  ``train.csv`` (``id,url,landmark_id``), images at ``train/<id[0]>/<id[1]>/<id[2]>/<id>.jpg``; landmark ids
  are random, not contiguous;
* ``root/test/synthetic/``: a revisitop-format test set of unseen landmarks, ``jpg/<name>.jpg`` and
  ``gnd_synthetic.pkl`` (``imlist``, ``qimlist``, ``gnd`` with ``bbx``, ``easy``, ``hard``, ``junk`` per
  query). Queries are not in the database; database views are labelled from their generation parameters
  (``label_view``); distractors are background-only scenes and views of other unseen landmarks that no query
  shows;
* ``root/synthetic_meta.json`` (every test image's landmark, difficulty and visible fraction, each landmark's
  fingerprint) and ``root/SYNTHETIC_COMPLETE.json``, written last, with the parameters.

``scene="cluttered"`` (docs/ablations.md) keeps the queries and draws every other photo's landmark smaller and
off-centre, in front of two clutter landmarks, with more occluders; the default ``"plain"`` world is the one above.

``ensure_generated`` reuses a complete world with the same parameters and regenerates otherwise. The output
depends only on the parameters (fixed JPEG quality, per-image random streams, no clock, no ordering of
sets), so two runs with the same seed give identical bytes, with any number of workers.

Command line: ``python -m datasets.synthetic --root DIR`` (``--help`` lists every flag).
"""

import utils.command  # noqa: F401  (first: Ctrl-C while the modules below import is one line, exit 130)

# isort: split
from datasets.synthetic.cli import main
from datasets.synthetic.landmarks import CANVAS, Landmark, render_landmark
from datasets.synthetic.palette import NUM_PALETTES
from datasets.synthetic.tasks import JPEG_QUALITY, SCENE_HELP, SCENES, TEST_NAME
from datasets.synthetic.views import Clutter, label_view, render_background, render_view
from datasets.synthetic.world import MARKER, META, VERSION, SyntheticWorld, ensure_generated, generate

__all__ = ["CANVAS", "JPEG_QUALITY", "MARKER", "META", "NUM_PALETTES", "SCENE_HELP", "SCENES", "TEST_NAME", "VERSION",
           "Clutter", "Landmark", "SyntheticWorld", "ensure_generated", "generate", "label_view", "main",
           "render_background", "render_landmark", "render_view"]
