"""Qualitative figures of retrieval: the top-k retrievals of a few queries and the tokens' attention maps.

``plot_retrievals`` reads the descriptors test.py wrote (``<dataset>_db.npy``, ``<dataset>_query.npy``) and
draws, per query, the query with its box and the top-k database images framed green (easy or hard positive), red
(negative) or grey (junk), as in the paper's qualitative figure; ``plot_search_results`` draws the answers of
``index.py query`` the same way, without ground truth. ``plot_attention`` overlays each token's spatial
attention (paper, Fig. 3a): the tokenizer's assignment and the last refinement block's cross-attention.
Figure sizes are fixed by ``width`` (pixels) so every PNG has a known size. The command line is visualize.py;
the training curves are ``utils.training_log.plot_training_curves``.
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from datasets.images import load_rgb, to_normalized_tensor
from datasets.revisitop import load_revisitop, resize_database
from utils.atomic import atomic_write
from utils.errors import InputError, require_path

DPI = 100
FRAME = {"positive": "#1a9850", "negative": "#d73027", "junk": "#999999"}
QUERY_FRAME, RESULT_FRAME = "#1f78b4", "#dddddd"  # a search of one's own images has no ground truth


def _save(fig, out):
    """Write ``fig`` as a PNG at ``out`` (folders created, file replaced atomically); the path written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=DPI))
    return out


def _figure(rows, cols, width):
    """A grid of square-ish panels ``width`` pixels wide."""
    panel = width / cols / DPI
    fig = Figure(figsize=(width / DPI, panel * rows * 1.1))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    return fig, axes


def relevance(gnd_query, index):
    """'positive' (easy or hard), 'junk' or 'negative' for database ``index`` under one query's ground truth."""
    if index in gnd_query["easy"] or index in gnd_query["hard"]:
        return "positive"
    return "junk" if index in gnd_query["junk"] else "negative"


def plot_retrievals(data_root, dataset, features_dir, out, queries=None, topk=8, width=1200):
    """Top-``topk`` database images for each of ``queries`` (indices; default: the first four), framed by their
    relevance; the PNG written."""
    ds = load_revisitop(data_root, dataset)
    features_dir = Path(features_dir)
    db = np.load(require_path(features_dir / f"{dataset}_db.npy", "database descriptors written by test.py"))
    qv = np.load(require_path(features_dir / f"{dataset}_query.npy", "query descriptors written by test.py"))
    if len(db) < len(ds.imlist) or len(qv) != len(ds.qimlist):
        raise InputError(f"{features_dir}: {len(db)} database / {len(qv)} query descriptors for {dataset}'s "
                         f"{len(ds.imlist)} / {len(ds.qimlist)} images")
    queries = list(range(min(4, len(ds.qimlist)))) if queries is None else list(queries)
    outside = [q for q in queries if not 0 <= q < len(ds.qimlist)]
    if outside:
        raise InputError(f"--queries {' '.join(map(str, outside))}: {dataset} has {len(ds.qimlist)} "
                         f"queries, numbered 0 to {len(ds.qimlist) - 1}")
    scores = db[: len(ds.imlist)] @ qv[queries].T
    fig, axes = _figure(len(queries), topk + 1, width)
    db_paths, q_paths = ds.db_paths(), ds.query_paths()
    for row, q in enumerate(queries):
        query = load_rgb(q_paths[q])
        axes[row, 0].imshow(query)
        x0, y0, x1, y1 = ds.gnd[q]["bbx"]
        axes[row, 0].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="yellow", linewidth=2))
        axes[row, 0].set_title(f"query {q}", fontsize=8)
        for col, index in enumerate(np.argsort(-scores[:, row], kind="stable")[:topk], start=1):
            _framed(axes[row, col], load_rgb(db_paths[index]), FRAME[relevance(ds.gnd[q], index)],
                    f"{col}: {scores[index, row]:.2f}")
    fig.tight_layout()
    return _save(fig, out)


def _framed(ax, image, color, title):
    """``image`` in ``ax`` inside a frame of ``color``, titled."""
    ax.imshow(image)
    ax.set_axis_on()
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color(color)
        spine.set_linewidth(4)
    ax.set_title(title, fontsize=7)


def plot_search_results(results, out, boxes=None, width=1200):
    """A contact sheet of ``index.py query``'s ``results`` (``[{"query", "results": [{"path", "score"}]}]``):
    per row the query, framed (its box drawn when ``boxes`` gives one), then its results with rank and score;
    the PNG written."""
    cols = 1 + max(len(entry["results"]) for entry in results)
    fig, axes = _figure(len(results), cols, width)
    for row, entry in enumerate(results):
        _framed(axes[row, 0], load_rgb(entry["query"]), QUERY_FRAME, f"query: {Path(entry['query']).name}")
        if boxes is not None and boxes[row] is not None:
            x0, y0, x1, y1 = boxes[row]
            axes[row, 0].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="yellow", linewidth=2))
        for col, hit in enumerate(entry["results"], start=1):
            _framed(axes[row, col], load_rgb(hit["path"]), RESULT_FRAME, f"{col}: {hit['score']:.3f}")
    fig.tight_layout()
    return _save(fig, out)


def overlay(image, attention):
    """Upsample an (h, w) attention map bilinearly to the image's size and scale it to [0, 1]."""
    att = torch.as_tensor(attention, dtype=torch.float32)[None, None]
    att = F.interpolate(att, size=(image.height, image.width), mode="bilinear", align_corners=False)[0, 0]
    att = att - att.min()
    return (att / att.max().clamp_min(1e-12)).numpy()


def plot_attention(model, image_paths, out, imsize=512, width=1200):
    """Per image: the image, then one panel per token for each attention source the model has (a Token, or an
    aggregator behind its extractor); the PNG written."""
    if not callable(getattr(model, "attention_maps", None)):
        raise InputError(f"a {model.config.model!r} model has no tokens: attention maps are drawn for Token and for "
                         "the aggregator over local features")
    to_tensor = to_normalized_tensor()
    images = [resize_database(load_rgb(path), imsize) for path in image_paths]
    maps = [model.attention_maps(to_tensor(img)[None]) for img in images]
    sources = list(maps[0])
    if not sources:
        raise InputError("this model has no tokens (a pooling baseline): no attention maps to draw")
    tokens = maps[0][sources[0]].shape[1]
    fig, axes = _figure(len(images), 1 + tokens * len(sources), width)
    for row, (img, per_source) in enumerate(zip(images, maps, strict=True)):
        axes[row, 0].imshow(img)
        for s, source in enumerate(sources):
            for t in range(tokens):
                ax = axes[row, 1 + s * tokens + t]
                ax.imshow(img)
                ax.imshow(overlay(img, per_source[source][0, t]), cmap="jet", alpha=0.5)
                if row == 0:
                    ax.set_title(f"{source} token {t + 1}", fontsize=7)
    fig.tight_layout()
    return _save(fig, out)
