"""The test-time pipeline: multi-scale extraction (``extract``) with the settings test.py and index.py share
(``settings``), the feature store (``features``), exact and compressed search with alpha-QE and DBA (``search``),
the PCA whitening of descriptors at search time (``descriptor_whitening``), the revisited mAP (``revisited``), the
whole evaluation of a checkpoint that test.py runs (``evaluation``, its HTML page ``report``), the index of a user's
own images that index.py runs (``image_index``) and the qualitative figures (``figures``).

Imports point down: retrieval/ may use datasets/, networks/ and utils/; none of those imports retrieval/."""
