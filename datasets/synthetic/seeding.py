"""The world's random streams: every drawn quantity comes from its own numpy ``SeedSequence`` stream.

A stream is keyed by ``[seed, tag, ...]``, so that what one image or landmark looks like depends on nothing
else that is generated (neither the number of landmarks nor the order the workers run in).
"""

# Landmark index namespaces, so that a landmark's look does not depend on how many others are generated
# (CLUTTER_BASE: the cluttered world's pool of clutter landmarks, which no query shows and no class trains on).
TRAIN_BASE, TEST_BASE, DISTRACTOR_BASE, CLUTTER_BASE = 0, 1_000_000, 2_000_000, 3_000_000

# Stream tags, the second entry of every stream's key. STREAM_CLUTTER draws only what the cluttered world adds to
# a view (keyed by the view's own key after it), so that the plain world's streams are the same in both worlds.
(STREAM_PALETTE, STREAM_LANDMARK, STREAM_IDS, STREAM_TRAIN, STREAM_TEST, STREAM_DISTRACTOR, STREAM_BACKGROUND,
 STREAM_PLAN, STREAM_CLUTTER) = range(9)
