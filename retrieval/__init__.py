"""The test-time pipeline: multi-scale extraction (``extract``), the feature store (``features``), exact and
compressed search with alpha-QE and DBA (``search``), the revisited mAP (``revisited``), the whole evaluation of a
checkpoint that test.py runs (``evaluation``) and the qualitative figures (``figures``).

Imports point down: retrieval/ may use datasets/, networks/ and utils/; none of those imports retrieval/."""
