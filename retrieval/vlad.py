"""VLAD of local features (test.py --local-features vlad): one global descriptor per image, searched like any other.

The DELF / Detect-to-Retrieve convention (docs/evaluation.md, "Local features"): each local descriptor x goes
to its nearest word c_k of a (K, d) codebook (L2, hard assignment; ties to the lower index), v_k is the sum of
the residuals x - c_k of the descriptors assigned to k (zero for a word with none), V = [v_1, ..., v_K] word
after word (K * d values), divided by sqrt(max(||V||^2, 1e-12)). No per-word normalisation, no power law. An
image without features gives the zero vector. Computed in float64, returned as float32.
"""

import numpy as np

VLAD_WORDS = 16  # K: 16 x 128 = 2048 dimensions, the global-descriptor size of Table 1
EPS = 1e-12


def assign(features, centroids):
    """Index of the nearest centroid (L2) of each row of ``features`` (n, d); the lower index on a tie."""
    features, centroids = np.asarray(features, np.float64), np.asarray(centroids, np.float64)
    distances = (features ** 2).sum(1)[:, None] - 2 * features @ centroids.T + (centroids ** 2).sum(1)[None]
    return np.argmin(distances, axis=1)


def vlad(features, centroids):
    """The L2-normalised VLAD vector (K * d,) float32 of one image's ``features`` (n, d) over ``centroids``
    (K, d)."""
    centroids = np.asarray(centroids, np.float64)
    features = np.asarray(features, np.float64).reshape(-1, centroids.shape[1])
    words = assign(features, centroids)
    residuals = np.zeros_like(centroids)
    np.add.at(residuals, words, features - centroids[words])
    flat = residuals.ravel()
    return (flat / np.sqrt(max(flat @ flat, EPS))).astype(np.float32)


def vlad_rows(images, centroids):
    """VLAD vectors (len(images), K * d) float32 of a list of per-image feature arrays."""
    return np.stack([vlad(features, centroids) for features in images]) if len(images) else \
        np.zeros((0, centroids.size), np.float32)
