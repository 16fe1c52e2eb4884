"""The visual-word codebooks of ASMK and VLAD: read from a file (``--codebook FILE.npy``) or trained with faiss
k-means on local features of the codebook images and cached beside the features.

A codebook is a float32 (K, 128) array of centroids. Training (HOW's, docs/evaluation.md, "Local features"):
the local features of each codebook image at scale 1.0 only (the top ``num_features`` by attention), all
pooled, clustered by ``faiss.Clustering(128, K)`` with 10 iterations and faiss's other defaults (seed 1234, at
most 256 points per centroid sampled). The codebook images are ``--codebook-images`` (a folder, searched
recursively, or a text file of paths) or by default the first ``CODEBOOK_IMAGES`` GLDv2 training images under
``--data-root`` in path order. HOW trained its codebook on retrieval-SfM-120k: ours differs.

The cache, ``<features>/codebook-<name>-<K>.npy`` with a JSON sidecar, holds the training features' store key
(checkpoint, imsize, scale, images) and K; a codebook is reused when both match, and the local features of the
codebook images are kept in the store as the set ``codebook_images`` (resumed and reused like any set).
"""

import faiss
import numpy as np

from datasets.collection import CollectionImages, list_images
from datasets.gldv2 import IMAGES_DIR, resolve_gldv2_root
from retrieval.features import feature_key, save_array
from retrieval.local_features import LOCAL_DIM, LocalImages, load_local, local_key
from utils.atomic import read_json, save_json
from utils.errors import InputError

CODEBOOK_IMAGES = 20_000  # default number of codebook images (HOW: the first 20,000 SfM-120k training images)
NITER = 10  # k-means iterations (HOW's)


def read_codebook(path, words=None):
    """The (K, 128) float32 centroids of ``path`` (.npy); ``words`` given: K must equal it. One-line
    ``InputError`` (naming --codebook) for a file that is not such an array."""
    try:
        centroids = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise InputError(f"--codebook {path}: not a readable .npy array ({err})") from None
    if centroids.ndim != 2 or centroids.shape[1] != LOCAL_DIM or centroids.dtype.kind != "f":
        raise InputError(f"--codebook {path}: expected float centroids of shape (K, {LOCAL_DIM}), got "
                         f"{centroids.dtype} {centroids.shape}")
    if not np.isfinite(centroids).all():
        raise InputError(f"--codebook {path}: holds NaN or infinite values")
    if words is not None and len(centroids) != words:
        raise InputError(f"--codebook {path}: has {len(centroids)} words, the settings ask for {words}")
    return np.ascontiguousarray(centroids, dtype=np.float32)


def kmeans(vectors, k, niter=NITER):
    """faiss k-means of ``vectors`` (n, d) into ``k`` centroids (float32 (k, d)), faiss's defaults otherwise."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(vectors) < k:
        raise InputError(f"a codebook of {k} words needs at least {k} local features, the codebook images gave "
                         f"{len(vectors)}: pass more --codebook-images or fewer words")
    clustering = faiss.Clustering(vectors.shape[1], k)
    clustering.niter = niter
    clustering.train(vectors, faiss.IndexFlatL2(vectors.shape[1]))
    return faiss.vector_float_to_array(clustering.centroids).reshape(k, vectors.shape[1])


def codebook_paths(settings):
    """The codebook images: ``--codebook-images`` or the first ``CODEBOOK_IMAGES`` GLDv2 training images under
    ``--data-root``, in path order."""
    if settings.codebook_images is not None:
        return list_images(settings.codebook_images)
    try:
        folder = resolve_gldv2_root(settings.data_root) / IMAGES_DIR
    except InputError as err:
        raise InputError(f"no --codebook and no --codebook-images, and no GLDv2 training images under --data-root "
                         f"to train one on ({err})") from None
    return list_images(folder)[:CODEBOOK_IMAGES]


def codebook(name, words, store, model, settings, env):
    """The (K, 128) codebook of ``name`` ("asmk" or "vlad"): ``settings.codebook`` when given (its K), else the
    cached or newly trained one (every rank extracts its share of the codebook images; rank 0 trains). On rank
    0 the array, elsewhere None."""
    if settings.codebook is not None:
        return read_codebook(settings.codebook) if env.is_main else None
    paths = codebook_paths(settings)
    if not paths:
        raise InputError("the codebook images list no image: pass --codebook-images or --codebook")
    key = {"features": local_key(feature_key(settings.checkpoint, settings.imsize, [1.0], settings.amp, paths),
                                 settings.num_features), "words": int(words), "niter": NITER}
    file = store.root / f"codebook-{name}-{words}.npy"
    sidecar = file.with_suffix(".json")
    if (read_json(sidecar) or {}).get("key") == key:  # every rank decides alike: the folder is shared
        try:
            centroids = read_codebook(file, words)
        except InputError:
            centroids = None  # a damaged cache is trained again
        if centroids is not None:
            if env.is_main:
                print(f">> codebook: reusing {file}", flush=True)
            return centroids if env.is_main else None
    rows, _ = load_local(store, model, "codebook_images", key["features"],
                         CollectionImages(paths, settings.imsize), settings, env, [1.0])
    if not env.is_main:
        return None
    features = LocalImages(rows)
    print(f">> codebook: k-means of {sum(map(len, features))} local features of {len(paths)} images into {words} "
          "words", flush=True)
    centroids = kmeans(np.concatenate(features), words)
    sidecar.unlink(missing_ok=True)
    save_array(file, centroids)
    save_json(sidecar, {"key": key})
    return centroids
