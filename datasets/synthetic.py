"""A procedurally generated "landmark world": train and evaluate end to end on a CPU in minutes.

Every landmark is a structured scene (a facade with a window grid, ground-floor arches or a portico, bands,
pilasters, a roof of some kind, towers; or a pagoda or a gate) drawn with PIL from ``(seed, landmark index)``
alone, in one of a few dozen palettes that several landmarks share, so structure matters and the mean colour
alone does not tell landmarks apart. A "photo" of a landmark is a view of it: scale, crop, perspective warp
and rotation, lighting (brightness, contrast, gamma, tint, shading), occluders in front of it, a cluttered
background that belongs to no landmark, blur and sensor noise. A difficulty ``d`` in [0, 1] sets how extreme
the view is; how much of the landmark is visible is measured exactly from the geometry and the occluders.

``generate`` writes two data sets under ``root``:

* a GLDv2-clean-format training set: ``train_clean.csv`` (``landmark_id,images``), ``train.csv``
  (``id,url,landmark_id``), images at ``train/<id[0]>/<id[1]>/<id[2]>/<id>.jpg``; landmark ids are
  random, not contiguous;
* a revisitop-format test set named ``synthetic`` of unseen landmarks: ``test/synthetic/jpg/<name>.jpg`` and
  ``test/synthetic/gnd_synthetic.pkl`` (``imlist``, ``qimlist``, ``gnd`` with ``bbx``, ``easy``, ``hard``,
  ``junk`` per query). Queries are not in the database; database views are labelled from their generation
  parameters (see ``label_view``); distractors are background-only scenes and views of other unseen
  landmarks that no query shows.

``synthetic_meta.json`` records every test image's landmark, difficulty and visible fraction and each
landmark's appearance fingerprint. ``SYNTHETIC_COMPLETE.json`` is written last and holds the parameters:
``ensure_generated`` returns at once when it matches and regenerates otherwise (a partial folder has none);
a file lock makes concurrent callers (DDP ranks) generate once. Regenerating deletes only this module's
outputs (and the GLDv2 split caches in ``root``, which describe the old training set), nothing else in ``root``.
The output depends only on the parameters (fixed JPEG quality, per-image random streams, no clock, no
ordering of sets), so two runs with the same seed give identical bytes, with any number of workers.

Command line: ``python -m datasets.synthetic --root DIR`` (``--help`` lists every flag).
"""

import argparse
import colorsys
import contextlib
import csv
import hashlib
import json
import math
import multiprocessing
import os
import pickle
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

VERSION = 1  # bump when the generated content changes, so that old folders are regenerated
TEST_NAME = "synthetic"
MARKER = "SYNTHETIC_COMPLETE.json"
META = "synthetic_meta.json"
NUM_PALETTES = 64  # several landmarks share each palette
JPEG_QUALITY = 90
CANVAS = 256  # landmarks are drawn on a CANVAS x CANVAS sheet, then cropped to their extent

# Landmark index namespaces, so that a landmark's look does not depend on how many others are generated.
_TRAIN_BASE, _TEST_BASE, _DISTRACTOR_BASE = 0, 1_000_000, 2_000_000
# Stream tags for numpy SeedSequence entropy.
_S_PALETTE, _S_LANDMARK, _S_IDS, _S_TRAIN, _S_TEST, _S_DISTRACTOR, _S_BACKGROUND, _S_PLAN = range(8)

# Thresholds that turn (difficulty, visible fraction) into a revisitop label.
EASY_MAX_DIFFICULTY, EASY_MIN_VISIBLE = 0.35, 0.75
JUNK_MIN_DIFFICULTY, JUNK_MAX_VISIBLE = 0.85, 0.35  # junk above / below these
JUNK_STRONG_DIFFICULTY, JUNK_STRONG_VISIBLE = 0.7, 0.5  # junk too: a strong view that shows only half

_OUTPUTS = ("train", "train_clean.csv", "train.csv", META, os.path.join("test", TEST_NAME),
            "GLDv2-clean-train-split.pkl", "GLDv2-clean-val-split.pkl", "GLDv2-clean-label-map.csv")


# ----------------------------------------------------------------------------------------------------------
# colours


def _hsv(h, s, v):
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


def _shade(rgb, f):
    return tuple(int(min(255, max(0, round(c * f)))) for c in rgb)


def _mix(a, b, t):
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b, strict=True))


def _palette(seed, i):
    """Palette ``i`` of ``seed``: wall, trim, window, roof and accent colours."""
    rng = np.random.default_rng([seed, _S_PALETTE, i])
    u = rng.uniform
    family = int(rng.integers(6))
    if family == 0:  # sandstone / limestone
        wall = _hsv(u(0.07, 0.14), u(0.12, 0.4), u(0.72, 0.95))
    elif family == 1:  # brick
        wall = _hsv(u(-0.02, 0.05), u(0.45, 0.75), u(0.45, 0.72))
    elif family == 2:  # white / grey stone
        wall = _hsv(u(0, 1), u(0.0, 0.08), u(0.55, 0.95))
    elif family == 3:  # pastel render
        wall = _hsv(u(0, 1), u(0.2, 0.45), u(0.75, 0.95))
    elif family == 4:  # dark stone
        wall = _hsv(u(0, 1), u(0.1, 0.45), u(0.28, 0.48))
    else:  # saturated paint
        wall = _hsv(u(0, 1), u(0.5, 0.8), u(0.55, 0.85))
    wall_v = max(wall) / 255
    trim = _hsv(u(0, 1), u(0, 0.25), u(0.85, 1.0)) if wall_v < 0.7 or rng.random() < 0.3 else \
        _hsv(u(0, 1), u(0.1, 0.5), u(0.15, 0.4))
    if rng.random() < 0.7:
        window = _hsv(u(0.5, 0.7), u(0.2, 0.6), u(0.08, 0.3))
    else:
        window = _hsv(u(0.45, 0.65), u(0.2, 0.5), u(0.6, 0.85))
    roof = _hsv(u(0, 1), u(0.3, 0.75), u(0.22, 0.62))
    accent = _hsv(u(0, 1), u(0.55, 0.95), u(0.55, 0.95))
    return {"wall": wall, "trim": trim, "window": window, "roof": roof, "accent": accent}


# ----------------------------------------------------------------------------------------------------------
# landmarks


def _textured_rect(draw, box, style, base, line):
    """Fill ``box`` with ``base`` and draw the landmark's wall texture over it."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    if x1 <= x0 or y1 <= y0:
        return
    draw.rectangle((x0, y0, x1, y1), fill=base)
    kind, step = style
    if kind == "brick":
        for k, y in enumerate(range(y0 + step, y1, step)):
            draw.line((x0, y, x1, y), fill=line)
            off = (k % 2) * step
            for x in range(x0 + off, x1, 2 * step):
                draw.line((x, y, x, min(y1, y + step)), fill=line)
    elif kind == "blocks":
        for y in range(y0 + step, y1, step):
            draw.line((x0, y, x1, y), fill=line)
        for x in range(x0 + step, x1, step * 2):
            draw.line((x, y0, x, y1), fill=line)
    elif kind == "bands":
        for k, y in enumerate(range(y0, y1, step)):
            if k % 2:
                draw.rectangle((x0, y, x1, min(y1, y + step - 1)), fill=line)
    elif kind == "boards":
        for x in range(x0 + step, x1, step):
            draw.line((x, y0, x, y1), fill=line)
    elif kind == "checker":
        for j, y in enumerate(range(y0, y1, step)):
            for i, x in enumerate(range(x0, x1, step)):
                if (i + j) % 2:
                    draw.rectangle((x, y, min(x1, x + step - 1), min(y1, y + step - 1)), fill=line)
    elif kind == "diamond":
        for j, y in enumerate(range(y0, y1, step)):
            for x in range(x0 + (j % 2) * step, x1, 2 * step):
                h = step / 2
                draw.polygon([(x, y + h), (x + h, y), (x + 2 * h, y + h), (x + h, y + 2 * h)], fill=line)


def _window(draw, box, shape, fill, frame):
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if w < 2 or h < 2:
        return
    if shape == "rect":
        draw.rectangle(box, fill=fill, outline=frame)
    elif shape == "arch":
        r = min(w / 2, h / 2)
        draw.ellipse((x0, y0, x1, y0 + 2 * r), fill=fill, outline=frame)
        draw.rectangle((x0, y0 + r, x1, y1), fill=fill, outline=frame)
        draw.rectangle((x0 + 1, y0 + r, x1 - 1, y0 + r + 1), fill=fill)
    elif shape == "round":
        r = min(w, h) / 2
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=frame)
    elif shape == "gothic":
        t = min(h * 0.45, w)
        draw.polygon([(x0, y0 + t), ((x0 + x1) / 2, y0), (x1, y0 + t)], fill=fill, outline=frame)
        draw.rectangle((x0, y0 + t, x1, y1), fill=fill, outline=frame)
    elif shape == "cross":
        draw.rectangle(box, fill=fill, outline=frame)
        cross = frame if frame is not None else _shade(fill, 2.5)
        draw.line(((x0 + x1) / 2, y0, (x0 + x1) / 2, y1), fill=cross)
        draw.line((x0, (y0 + y1) / 2, x1, (y0 + y1) / 2), fill=cross)
    elif shape == "double":
        g = max(1.0, w * 0.15)
        m = (x0 + x1) / 2
        draw.rectangle((x0, y0, m - g / 2, y1), fill=fill, outline=frame)
        draw.rectangle((m + g / 2, y0, x1, y1), fill=fill, outline=frame)


def _window_grid(draw, rng, box, rows, cols, shape, fill, frame, fw, fh):
    """``rows`` x ``cols`` windows, each ``fw`` x ``fh`` of its cell, centred in the cells of ``box``."""
    x0, y0, x1, y1 = box
    cw, ch = (x1 - x0) / cols, (y1 - y0) / rows
    for r in range(rows):
        for c in range(cols):
            cx, cy = x0 + (c + 0.5) * cw, y0 + (r + 0.5) * ch
            _window(draw, (cx - cw * fw / 2, cy - ch * fh / 2, cx + cw * fw / 2, cy + ch * fh / 2),
                    shape, fill, frame)


def _roof(draw, rng, kind, x0, x1, y, height, pal, style):
    """A roof of ``kind`` on the span ``x0..x1`` whose base is at ``y``; returns its top y."""
    w = x1 - x0
    roof, trim, accent = pal["roof"], pal["trim"], pal["accent"]
    if kind == "flat":
        draw.rectangle((x0 - 2, y - 4, x1 + 2, y), fill=trim)
        return y - 4
    if kind == "battlement":
        n = max(3, int(w // 10))
        mw = w / (2 * n - 1)
        for i in range(0, 2 * n - 1, 2):
            draw.rectangle((x0 + i * mw, y - 7, x0 + (i + 1) * mw, y), fill=pal["wall"])
        draw.rectangle((x0, y - 2, x1, y), fill=_shade(pal["wall"], 0.8))
        return y - 7
    if kind == "gable":
        draw.polygon([(x0 - 3, y), ((x0 + x1) / 2, y - height), (x1 + 3, y)], fill=roof)
        if style.get("rose"):
            r = min(height * 0.28, w * 0.12)
            cx, cy = (x0 + x1) / 2, y - height * 0.38
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=accent, outline=trim, width=2)
            draw.ellipse((cx - r / 3, cy - r / 3, cx + r / 3, cy + r / 3), fill=trim)
        return y - height
    if kind == "dome":
        dw = w * style.get("dome_frac", 0.6)
        cx = (x0 + x1) / 2
        drum = height * 0.3
        draw.rectangle((cx - dw / 2 * 0.9, y - drum, cx + dw / 2 * 0.9, y), fill=pal["wall"], outline=trim)
        for i in range(1, 6):
            xx = cx - dw / 2 * 0.9 + i * dw * 0.9 / 6
            draw.rectangle((xx - 1, y - drum + 2, xx + 1, y - 2), fill=pal["window"])
        draw.pieslice((cx - dw / 2, y - drum - height * 0.7, cx + dw / 2, y - drum + height * 0.7), 180, 360,
                      fill=roof)
        top = y - drum - height * 0.7
        draw.rectangle((cx - 3, top - 8, cx + 3, top), fill=trim)
        draw.line((cx, top - 14, cx, top - 8), fill=accent, width=2)
        return top - 14
    if kind == "mansard":
        draw.polygon([(x0 - 2, y), (x0 + w * 0.08, y - height), (x1 - w * 0.08, y - height), (x1 + 2, y)],
                     fill=roof)
        n = max(2, int(w // 24))
        for i in range(n):
            cx = x0 + w * 0.12 + (i + 0.5) * (w * 0.76) / n
            _window(draw, (cx - 3, y - height * 0.75, cx + 3, y - height * 0.15), "arch", pal["window"], trim)
        return y - height
    if kind == "stepped":
        steps = 3
        for i in range(steps):
            inset = w * 0.14 * (i + 1)
            draw.rectangle((x0 + inset, y - height * (i + 1) / steps, x1 - inset, y - height * i / steps),
                           fill=_shade(pal["wall"], 1.0 - 0.08 * (i + 1)), outline=trim)
        return y - height
    if kind == "sawtooth":
        n = max(2, int(w // 30))
        sw = w / n
        for i in range(n):
            draw.polygon([(x0 + i * sw, y), (x0 + (i + 0.5) * sw, y - height * 0.6), (x0 + (i + 1) * sw, y)],
                         fill=roof, outline=trim)
        return y - height * 0.6
    if kind == "spire":
        draw.polygon([(x0 - 1, y), ((x0 + x1) / 2, y - height), (x1 + 1, y)], fill=roof)
        return y - height
    if kind == "pyramid":
        draw.polygon([(x0 - 3, y), ((x0 + x1) / 2, y - height * 0.45), (x1 + 3, y)], fill=roof)
        return y - height * 0.45
    if kind == "onion":
        cx = (x0 + x1) / 2
        r = min(w * 0.62, max(2.0, (y - 3) / 2.5))
        draw.ellipse((cx - r, y - 1.6 * r, cx + r, y), fill=roof)
        draw.polygon([(cx - r * 0.5, y - 1.35 * r), (cx, y - 2.5 * r), (cx + r * 0.5, y - 1.35 * r)], fill=roof)
        return y - 2.5 * r
    raise ValueError(kind)


def _tower(draw, rng, x0, x1, top, ground, pal, style, roof_kind):
    _textured_rect(draw, (x0, top, x1, ground), style["texture"], pal["wall"], style["line"])
    draw.rectangle((x0, top, x1, ground), outline=_shade(pal["wall"], 0.7))
    h = ground - top
    n = max(1, int(h // 28))
    w = x1 - x0
    for i in range(n):
        cy = top + 10 + i * (h - 20) / max(1, n)
        _window(draw, ((x0 + x1) / 2 - w * 0.18, cy, (x0 + x1) / 2 + w * 0.18, cy + min(14, h / (n + 1))),
                style["window_shape"], pal["window"], style["frame"])
    if style.get("clock"):
        r = w * 0.3
        cx, cy = (x0 + x1) / 2, top + r + 4
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(240, 238, 225), outline=pal["trim"], width=2)
        draw.line((cx, cy, cx, cy - r * 0.7), fill=(20, 20, 20), width=1)
        draw.line((cx, cy, cx + r * 0.5, cy), fill=(20, 20, 20), width=1)
    return _roof(draw, rng, roof_kind, x0, x1, top, min(w * style["tower_roof_h"], top - 3), pal, style)


def _draw_facade(draw, rng, pal, style, ground):
    S = CANVAS
    u = rng.uniform
    bw = u(0.42, 0.78) * S
    bh = u(0.28, 0.55) * S
    cx = S / 2 + u(-0.04, 0.04) * S
    bx0, bx1, by0 = cx - bw / 2, cx + bw / 2, ground - bh
    wall, trim, line = pal["wall"], pal["trim"], style["line"]

    towers = ["none", "pair", "center", "side", "pair"][int(rng.integers(5))]
    tower_roof = ["spire", "dome", "battlement", "pyramid", "onion", "flat"][int(rng.integers(6))]
    tw = u(0.1, 0.17) * S
    t_top = max(0.2 * S, by0 - u(0.12, 0.3) * S)

    if rng.random() < 0.35:  # lower wings on both sides, behind the body
        ww, wh = min(u(0.1, 0.2) * S, bx0 - 2), bh * u(0.45, 0.8)
        for x0, x1 in ((bx0 - ww, bx0), (bx1, bx1 + ww)):
            _textured_rect(draw, (x0, ground - wh, x1, ground), style["texture"], _shade(wall, 0.92), line)
            _window_grid(draw, rng, (x0 + 3, ground - wh + 6, x1 - 3, ground - 4), max(1, style["rows"] - 1), 2,
                         style["window_shape"], pal["window"], style["frame"], 0.55, 0.55)
            _roof(draw, rng, "flat", x0, x1, ground - wh, 0, pal, style)

    _textured_rect(draw, (bx0, by0, bx1, ground), style["texture"], wall, line)
    draw.rectangle((bx0, by0, bx1, ground), outline=_shade(wall, 0.7))

    ground_kind = ["arcade", "portal", "portico", "doors", "none"][int(rng.integers(5))]
    gf = bh * u(0.22, 0.32) if ground_kind != "none" else 0
    rows, cols = style["rows"], style["cols"]
    top_pad = 6
    win_box = (bx0 + 4, by0 + top_pad, bx1 - 4, ground - gf - 3)
    if style["pilasters"]:
        cw = (win_box[2] - win_box[0]) / cols
        for c in range(cols + 1):
            x = win_box[0] + c * cw
            draw.rectangle((x - 1.5, by0, x + 1.5, ground), fill=trim)
    if style["bands"]:
        rh = (win_box[3] - win_box[1]) / rows
        for r in range(rows + 1):
            y = win_box[1] + r * rh - 1
            draw.rectangle((bx0, y - 1, bx1, y + 1), fill=trim)
    _window_grid(draw, rng, win_box, rows, cols, style["window_shape"], pal["window"], style["frame"],
                 style["fw"], style["fh"])

    g0 = ground - gf
    dark = _shade(pal["window"], 0.6)
    if ground_kind == "arcade":
        n = int(rng.integers(3, 8))
        aw = bw / n
        for i in range(n):
            box = (bx0 + i * aw + aw * 0.15, g0 + 2, bx0 + (i + 1) * aw - aw * 0.15, ground)
            _window(draw, box, "arch", dark, trim)
    elif ground_kind == "portal":
        pw = bw * u(0.18, 0.32)
        _window(draw, (cx - pw / 2, g0 - gf * 0.4, cx + pw / 2, ground), "arch", dark, trim)
        if rng.random() < 0.6:
            for s in (-1, 1):
                x = cx + s * bw * 0.3
                _window(draw, (x - pw * 0.25, g0 + gf * 0.25, x + pw * 0.25, ground), "arch", dark, trim)
    elif ground_kind == "portico":
        pw = bw * u(0.45, 0.85)
        px0, px1 = cx - pw / 2, cx + pw / 2
        draw.rectangle((px0, g0 - 4, px1, ground), fill=dark)
        n = int(rng.integers(4, 9))
        for i in range(n):
            x = px0 + i * (pw - 6) / (n - 1) + 3
            draw.rectangle((x - 2.5, g0 - 4, x + 2.5, ground), fill=trim)
        draw.polygon([(px0 - 4, g0 - 4), (cx, g0 - 4 - gf * 0.6), (px1 + 4, g0 - 4)], fill=trim,
                     outline=_shade(trim, 0.7))
        draw.ellipse((cx - 3, g0 - 4 - gf * 0.35, cx + 3, g0 + 2 - gf * 0.35), fill=pal["accent"])
    elif ground_kind == "doors":
        n = int(rng.integers(1, 4))
        for i in range(n):
            x = bx0 + (i + 0.5) * bw / n
            _window(draw, (x - bw * 0.06, g0 + gf * 0.15, x + bw * 0.06, ground), "rect", dark, trim)

    if style["frieze"]:
        n = int(bw // 8)
        for i in range(n):
            x = bx0 + (i + 0.5) * bw / n
            draw.polygon([(x - 3, by0 + 1), (x, by0 + 5), (x + 3, by0 + 1)], fill=pal["accent"])

    roof_kind = ["flat", "gable", "dome", "mansard", "stepped", "battlement", "sawtooth", "gable"][int(rng.integers(8))]
    rh = u(0.1, 0.22) * S
    top = _roof(draw, rng, roof_kind, bx0, bx1, by0, min(rh, by0 - 0.2 * S - 10), pal, style)

    if towers == "pair":
        for x0 in (bx0 - tw * 0.3, bx1 - tw * 0.7):
            top = min(top, _tower(draw, rng, x0, x0 + tw, t_top, ground, pal, style, tower_roof))
    elif towers == "side":
        x0 = bx1 - tw * 0.5 if rng.random() < 0.5 else bx0 - tw * 0.5
        top = min(top, _tower(draw, rng, x0, x0 + tw, t_top - 0.05 * S, ground, pal, style, tower_roof))
    elif towers == "center":
        top = min(top, _tower(draw, rng, cx - tw / 2, cx + tw / 2, max(0.18 * S, t_top - 0.06 * S), by0 + 10, pal,
                              style, tower_roof))
    return top


def _draw_pagoda(draw, rng, pal, style, ground):
    S = CANVAS
    tiers = int(rng.integers(3, 6))
    w = rng.uniform(0.4, 0.6) * S
    th = rng.uniform(0.55, 0.75) * S / tiers
    y = ground
    cx = S / 2
    for t in range(tiers):
        tw = w * (1 - 0.14 * t)
        _textured_rect(draw, (cx - tw / 2, y - th, cx + tw / 2, y), style["texture"], pal["wall"], style["line"])
        _window_grid(draw, rng, (cx - tw / 2 + 4, y - th + th * 0.35, cx + tw / 2 - 4, y - 3), 1, style["cols"],
                     style["window_shape"], pal["window"], style["frame"], style["fw"], 0.7)
        eave = tw * 0.18
        draw.polygon([(cx - tw / 2 - eave, y - th + th * 0.3), (cx - tw / 2 + eave * 0.5, y - th - th * 0.05),
                      (cx + tw / 2 - eave * 0.5, y - th - th * 0.05), (cx + tw / 2 + eave, y - th + th * 0.3)],
                     fill=pal["roof"])
        y -= th
    draw.rectangle((cx - 2, y - th * 0.9, cx + 2, y), fill=pal["accent"])
    for k in range(3):
        yy = y - th * (0.25 + 0.22 * k)
        draw.ellipse((cx - 5, yy - 3, cx + 5, yy + 3), fill=pal["accent"])
    return y - th * 0.9


def _draw_gate(draw, rng, pal, style, ground):
    S = CANVAS
    u = rng.uniform
    w, h = u(0.55, 0.85) * S, u(0.45, 0.7) * S
    cx = S / 2
    x0, x1, y0 = cx - w / 2, cx + w / 2, ground - h
    _textured_rect(draw, (x0, y0, x1, ground), style["texture"], pal["wall"], style["line"])
    draw.rectangle((x0, y0, x1, ground), outline=_shade(pal["wall"], 0.7))
    dark = _shade(pal["window"], 0.5)
    aw = w * u(0.25, 0.4)
    _window(draw, (cx - aw / 2, y0 + h * 0.3, cx + aw / 2, ground), "arch", dark, pal["trim"])
    if rng.random() < 0.6:
        for s in (-1, 1):
            xc = cx + s * w * 0.34
            _window(draw, (xc - aw * 0.22, y0 + h * 0.55, xc + aw * 0.22, ground), "arch", dark, pal["trim"])
    ncol = int(rng.integers(2, 4))
    for s in (-1, 1):
        for i in range(ncol):
            x = cx + s * (aw / 2 + 4 + i * (w / 2 - aw / 2 - 8) / max(1, ncol - 1))
            draw.rectangle((x - 2, y0 + h * 0.15, x + 2, ground), fill=pal["trim"])
    draw.rectangle((x0 - 4, y0, x1 + 4, y0 + h * 0.12), fill=pal["trim"])
    draw.rectangle((x0 + 8, y0 + 2, x1 - 8, y0 + h * 0.1 - 2), fill=pal["accent"])
    top = y0
    kind = ["statue", "gable", "none", "battlement"][int(rng.integers(4))]
    if kind == "statue":
        draw.rectangle((cx - w * 0.2, y0 - 10, cx + w * 0.2, y0), fill=pal["roof"])
        draw.polygon([(cx - 8, y0 - 10), (cx, y0 - 34), (cx + 8, y0 - 10)], fill=pal["roof"])
        top = y0 - 34
    elif kind == "gable":
        top = _roof(draw, rng, "gable", x0, x1, y0, h * 0.3, pal, style)
    elif kind == "battlement":
        top = _roof(draw, rng, "battlement", x0, x1, y0, 0, pal, style)
    return top


@dataclass
class Landmark:
    """A landmark's canonical appearance: an RGBA image cropped to it, and sample points of its shape."""

    index: int
    image: Image.Image
    points: np.ndarray  # (P, 2) float64 pixel centres inside the landmark, canonical coordinates
    fingerprint: str = ""
    kind: str = ""
    palette: int = 0


def render_landmark(seed, index):
    """The landmark ``index`` of the world ``seed``, drawn deterministically."""
    rng = np.random.default_rng([seed, _S_LANDMARK, index])
    pal_index = int(rng.integers(NUM_PALETTES))
    pal = _palette(seed, pal_index)
    u = rng.uniform
    texture = ["plain", "brick", "blocks", "bands", "boards", "checker", "diamond", "brick", "plain"][
        int(rng.integers(9))]
    line_f = 0.78 if rng.random() < 0.7 else 1.18
    style = {
        "texture": (texture, int(rng.integers(4, 9)) if texture != "bands" else int(rng.integers(6, 14))),
        "line": pal["trim"] if texture in ("bands", "checker", "diamond") and rng.random() < 0.6
        else _shade(pal["wall"], line_f),
        "rows": int(rng.integers(1, 6)),
        "cols": int(rng.integers(2, 9)),
        "window_shape": ["rect", "arch", "round", "gothic", "cross", "double"][int(rng.integers(6))],
        "frame": pal["trim"] if rng.random() < 0.55 else None,
        "fw": u(0.35, 0.75),
        "fh": u(0.4, 0.8),
        "pilasters": rng.random() < 0.35,
        "bands": rng.random() < 0.45,
        "frieze": rng.random() < 0.3,
        "rose": rng.random() < 0.5,
        "clock": rng.random() < 0.4,
        "dome_frac": u(0.35, 0.8),
        "tower_roof_h": u(0.8, 2.2),
    }
    img = Image.new("RGBA", (CANVAS, CANVAS), (*pal["wall"], 0))
    draw = ImageDraw.Draw(img)
    ground = CANVAS - 2
    r = rng.random()
    kind = "facade" if r < 0.8 else ("pagoda" if r < 0.9 else "gate")
    if kind == "facade":
        _draw_facade(draw, rng, pal, style, ground)
    elif kind == "pagoda":
        _draw_pagoda(draw, rng, pal, style, ground)
    else:
        _draw_gate(draw, rng, pal, style, ground)
    if rng.random() < 0.2:  # a flag on the highest point
        alpha = np.asarray(img)[:, :, 3]
        ys, xs = np.nonzero(alpha)
        top = int(ys.min())
        x = float(np.mean(xs[ys == top]))
        if top > 22:
            draw.line((x, top, x, top - 20), fill=(60, 60, 60), width=1)
            draw.rectangle((x + 1, top - 20, x + 13, top - 12), fill=pal["accent"])
    bbox = img.getbbox()
    img = img.crop(bbox)
    alpha = np.asarray(img)[:, :, 3]
    ys, xs = np.nonzero(alpha[1::3, 1::3] > 127)
    points = np.stack([xs * 3 + 1.5, ys * 3 + 1.5], axis=1).astype(np.float64)
    fingerprint = hashlib.sha1(img.tobytes()).hexdigest()[:16]
    return Landmark(index=index, image=img, points=points, fingerprint=fingerprint, kind=kind, palette=pal_index)


# ----------------------------------------------------------------------------------------------------------
# views


def _homography(src, dst):
    """3x3 H with dst ~ H [src; 1] for four point pairs."""
    a, b = [], []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        b.append(u)
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b.append(v)
    h = np.linalg.solve(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return np.append(h, 1.0).reshape(3, 3)


def _apply(h, pts):
    p = np.asarray(pts, dtype=np.float64) @ h[:, :2].T + h[:, 2]
    return p[:, :2] / p[:, 2:3]


def _random_colour(rng):
    return _hsv(rng.random(), rng.uniform(0, 0.8), rng.uniform(0.15, 0.95))


def _clutter(draw, rng, W, H, horizon, n):
    """``n`` random shapes that belong to no landmark: blocks (some with windows), trees, blobs, poles."""
    for _ in range(n):
        kind = int(rng.integers(6))
        c = _random_colour(rng)
        if kind == 0:  # a generic building block, random every time
            bw, bh = rng.uniform(0.12, 0.45) * W, rng.uniform(0.15, 0.6) * H
            x0 = rng.uniform(-0.1, 1.0) * W
            y1 = horizon + rng.uniform(0, 0.1) * H
            draw.rectangle((x0, y1 - bh, x0 + bw, y1), fill=c)
            if rng.random() < 0.6:
                rows, cols = int(rng.integers(1, 6)), int(rng.integers(1, 6))
                wc = _random_colour(rng)
                for r in range(rows):
                    for k in range(cols):
                        cx, cy = x0 + (k + 0.5) * bw / cols, y1 - bh + (r + 0.5) * bh / rows
                        draw.rectangle((cx - bw / cols * 0.25, cy - bh / rows * 0.25, cx + bw / cols * 0.25,
                                        cy + bh / rows * 0.25), fill=wc)
        elif kind == 1:  # tree
            x, y = rng.uniform(0, W), horizon + rng.uniform(-0.05, 0.25) * H
            r = rng.uniform(0.04, 0.12) * min(W, H)
            draw.rectangle((x - r * 0.15, y - r, x + r * 0.15, y + r), fill=_hsv(0.08, 0.5, rng.uniform(0.2, 0.4)))
            draw.ellipse((x - r, y - 2.6 * r, x + r, y - 0.6 * r),
                         fill=_hsv(rng.uniform(0.2, 0.4), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.6)))
        elif kind == 2:  # blob
            x, y = rng.uniform(0, W), rng.uniform(0, H)
            rx, ry = rng.uniform(0.03, 0.15) * W, rng.uniform(0.03, 0.15) * H
            draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=c)
        elif kind == 3:  # pole / wire
            draw.line((rng.uniform(0, W), rng.uniform(0, H), rng.uniform(0, W), rng.uniform(0, H)), fill=c,
                      width=int(rng.integers(1, 4)))
        elif kind == 4:  # polygon
            x, y = rng.uniform(0, W), rng.uniform(0, H)
            k = int(rng.integers(3, 7))
            r = rng.uniform(0.04, 0.18) * min(W, H)
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rad = r * rng.uniform(0.5, 1.0, k)
            draw.polygon([(float(x + a * np.cos(t)), float(y + a * np.sin(t))) for a, t in zip(rad, ang, strict=True)],
                         fill=c)
        else:  # car / street furniture near the bottom
            x, y = rng.uniform(0, W), rng.uniform(horizon, H + 0.05 * H)
            w, h = rng.uniform(0.1, 0.25) * W, rng.uniform(0.05, 0.1) * H
            draw.rounded_rectangle((x - w / 2, y - h, x + w / 2, y), radius=h / 3, fill=c)


def render_background(rng, W, H, clutter=(3, 9)):
    """A cluttered scene of size ``W`` x ``H`` that shows no landmark: sky, ground, random shapes."""
    if rng.random() < 0.3:
        g = rng.uniform(0.55, 0.9)
        top = _hsv(0.6, rng.uniform(0, 0.08), g)
        bot = _hsv(0.6, rng.uniform(0, 0.05), min(1.0, g + 0.08))
    else:
        top = _hsv(rng.uniform(0.52, 0.68), rng.uniform(0.25, 0.7), rng.uniform(0.6, 0.95))
        bot = _mix(top, (235, 235, 230), rng.uniform(0.3, 0.8))
    horizon = rng.uniform(0.55, 0.9) * H
    gh = [rng.uniform(0.05, 0.15), rng.uniform(0.28, 0.4), rng.uniform(0.0, 0.1)][int(rng.integers(3))]
    g_top = _hsv(gh, rng.uniform(0.05, 0.5), rng.uniform(0.3, 0.7))
    g_bot = _shade(g_top, rng.uniform(0.6, 0.9))
    y = np.arange(H, dtype=np.float32)[:, None]
    t_sky = np.clip(y / max(horizon, 1.0), 0, 1)
    t_gnd = np.clip((y - horizon) / max(H - horizon, 1.0), 0, 1)
    sky = np.asarray(top, np.float32) + (np.asarray(bot, np.float32) - np.asarray(top, np.float32)) * t_sky
    gnd = np.asarray(g_top, np.float32) + (np.asarray(g_bot, np.float32) - np.asarray(g_top, np.float32)) * t_gnd
    col = np.where(y < horizon, sky, gnd)  # (H, 3)
    arr = np.broadcast_to(col[:, None, :], (H, W, 3)).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(img)
    _clutter(draw, rng, W, H, horizon, int(rng.integers(clutter[0], clutter[1] + 1)))
    return img, horizon


def _frame_size(rng, long_range):
    lo, hi = long_range
    long_side = int(rng.integers(lo, hi + 1))
    short_side = int(rng.integers(max(96, int(round(0.75 * lo))), long_side + 1))
    return (long_side, short_side) if rng.random() < 0.55 else (short_side, long_side)


def _occluders(draw, mask_draw, rng, W, H, d, targets):
    n = int(rng.poisson(0.3 + 2.6 * d))
    for _ in range(n):
        s = rng.uniform(0.1, 0.2 + 0.3 * d) * min(W, H)
        if len(targets) and rng.random() < 0.75:
            x, y = targets[int(rng.integers(len(targets)))]
        else:
            x, y = rng.uniform(0, W), rng.uniform(0, H)
        kind = int(rng.integers(5))
        c = _random_colour(rng)
        shapes = []
        if kind == 0:  # tree
            shapes.append(("rect", (x - s * 0.08, y, x + s * 0.08, H)))
            shapes.append(("ellipse", (x - s * 0.6, y - s * 0.9, x + s * 0.6, y + s * 0.3)))
            c = _hsv(rng.uniform(0.2, 0.4), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.5))
        elif kind == 1:  # pole / lamp post
            shapes.append(("rect", (x - s * 0.05, y - s, x + s * 0.05, H)))
            shapes.append(("ellipse", (x - s * 0.15, y - s * 1.15, x + s * 0.15, y - s * 0.85)))
        elif kind == 2:  # person-like
            shapes.append(("ellipse", (x - s * 0.12, y - s * 0.55, x + s * 0.12, y - s * 0.3)))
            shapes.append(("rect", (x - s * 0.2, y - s * 0.3, x + s * 0.2, y + s * 0.5)))
        elif kind == 3:  # sign / vehicle
            shapes.append(("rect", (x - s * 0.5, y - s * 0.3, x + s * 0.5, y + s * 0.3)))
        else:  # blob
            shapes.append(("ellipse", (x - s * 0.5, y - s * 0.4, x + s * 0.5, y + s * 0.4)))
        for shape, box in shapes:
            getattr(draw, "rectangle" if shape == "rect" else "ellipse")(box, fill=c)
            getattr(mask_draw, "rectangle" if shape == "rect" else "ellipse")(box, fill=255)
    return n


def _view_params(rng, kind):
    """Difficulty, zoom and focus for a view ``kind``: easy / hard / junk / query, as targets, not labels."""
    u = rng.uniform
    if kind == "query":
        return {"d": u(0.03, 0.25), "zoom": u(0.62, 0.88), "focus": (u(0.45, 0.55), u(0.45, 0.55)), "off": 0.04}
    if kind == "easy":
        return {"d": u(0.0, 0.32), "zoom": u(0.58, 0.92), "focus": (u(0.42, 0.58), u(0.42, 0.58)), "off": 0.06}
    if kind == "hard":
        d = u(0.4, 0.85)
        if rng.random() < 0.5:  # close up: part of the landmark is cut off
            zoom = u(1.0, 1.6)
            focus = (u(0.25, 0.75), u(0.25, 0.75))
        else:  # far away, or off-centre
            zoom = u(0.38, 0.9)
            focus = (u(0.35, 0.65), u(0.35, 0.65))
        return {"d": d, "zoom": zoom, "focus": focus, "off": 0.05 + 0.2 * d}
    if kind == "junk":
        d = u(0.55, 1.0)
        if rng.random() < 0.6:  # a small detail, seen from very close
            return {"d": d, "zoom": u(2.2, 3.5), "focus": (u(0.0, 1.0), u(0.0, 1.0)), "off": 0.3}
        # mostly outside the frame
        side = int(rng.integers(4))
        fx = [u(-0.05, 0.1), u(0.9, 1.05), u(0.2, 0.8), u(0.2, 0.8)][side]
        fy = [u(0.2, 0.8), u(0.2, 0.8), u(-0.05, 0.1), u(0.9, 1.05)][side]
        return {"d": d, "zoom": u(0.7, 1.2), "focus": (u(0.4, 0.6), u(0.4, 0.6)), "frame_pos": (fx, fy)}
    raise ValueError(kind)


def label_view(difficulty, visible):
    """Revisitop label of a database view from its difficulty and the visible fraction of its landmark.

    junk: less than 35% visible, difficulty above 0.85, or difficulty above 0.7 with less than half visible;
    easy: at least 75% visible and difficulty at most 0.35; hard: the rest.
    """
    if visible < JUNK_MAX_VISIBLE or difficulty > JUNK_MIN_DIFFICULTY:
        return "junk"
    if visible < JUNK_STRONG_VISIBLE and difficulty > JUNK_STRONG_DIFFICULTY:
        return "junk"
    if visible >= EASY_MIN_VISIBLE and difficulty <= EASY_MAX_DIFFICULTY:
        return "easy"
    return "hard"


def _photometric(img, rng, d):
    """Lighting (gamma, contrast, brightness, tint, shading), blur and noise of strength ``d``."""
    u = rng.uniform
    radius = u(0.0, 0.25 + 0.9 * d)
    if radius > 0.15:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    W, H = img.size
    gamma = math.exp(u(-1, 1) * (0.08 + 0.45 * d))
    contrast = math.exp(u(-1, 1) * (0.08 + 0.35 * d))
    bright = u(-1, 1) * (0.04 + 0.2 * d)
    tint = np.exp(rng.uniform(-1, 1, 3) * (0.03 + 0.12 * d))
    levels = np.power(np.arange(256) / 255.0, gamma)
    levels = (levels - 0.5) * contrast + 0.5 + bright
    lut = np.clip(np.outer(tint, levels) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    img = img.point(lut.reshape(-1).tolist())
    x = np.array(img, dtype=np.float32)
    if rng.random() < 0.3 + 0.5 * d:  # shading across the frame
        ang = u(0, 2 * np.pi)
        ramp = np.cos(ang) * (np.arange(W, dtype=np.float32) / W - 0.5)[None, :] + \
            np.sin(ang) * (np.arange(H, dtype=np.float32) / H - 0.5)[:, None] + 0.5
        x *= (1.0 - u(0, 0.45 * d) * np.clip(ramp, 0, 1))[:, :, None]
    sigma = u(0.004, 0.01 + 0.03 * d) * 255.0
    x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(sigma)
    x += 0.5
    return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8), "RGB")


def render_view(landmark, rng, kind, long_range=(128, 160)):
    """A photo of ``landmark`` (``None``: background only) with view parameters drawn for ``kind``.

    Returns ``(image, info)``; ``info`` holds the difficulty ``d``, the visible fraction of the landmark
    ``visible`` (inside the frame and not occluded, measured on sample points of its shape) and ``bbx``, the
    box of the landmark's in-frame part (x0, y0, x1, y1), or ``None`` when none of it is in the frame.
    """
    W, H = _frame_size(rng, long_range)
    img, horizon = render_background(rng, W, H)
    if landmark is None:
        d = rng.uniform(0.0, 0.8)
        mask = Image.new("L", (W, H), 0)
        _occluders(ImageDraw.Draw(img), ImageDraw.Draw(mask), rng, W, H, d, [])
        return _photometric(img, rng, d), {"d": float(d), "visible": 0.0, "bbx": None}

    p = _view_params(rng, kind)
    d = p["d"]
    cw, ch = landmark.image.size
    scale = min(W / cw, H / ch) * p["zoom"]
    rw, rh = max(2, int(round(cw * scale))), max(2, int(round(ch * scale)))
    src = np.array([(0, 0), (rw, 0), (rw, rh), (0, rh)], dtype=np.float64)
    # A local quad around the landmark's centre: yaw, pitch, rotation and corner jitter grow with d.
    u = rng.uniform
    local = src - np.array([rw / 2, rh / 2])
    yaw, pitch = u(-1, 1) * (0.02 + 0.3 * d), u(-1, 1) * (0.02 + 0.18 * d)
    local[:, 1] *= np.where(local[:, 0] < 0, 1 - yaw, 1 + yaw)
    local[:, 0] *= np.where(local[:, 1] < 0, 1 - pitch, 1 + pitch) * (1 - abs(yaw) / 2)
    ang = math.radians(u(-1, 1) * (1.5 + 9 * d))
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    local = local @ rot.T
    local += rng.uniform(-1, 1, (4, 2)) * (0.01 + 0.07 * d) * np.array([rw, rh])
    h_local = _homography(src, local)
    focus = _apply(h_local, [(p["focus"][0] * rw, p["focus"][1] * rh)])[0]
    if "frame_pos" in p:
        target = np.array([p["frame_pos"][0] * W, p["frame_pos"][1] * H])
    else:
        off = p["off"]
        target = np.array([W / 2 + u(-off, off) * W, H / 2 + u(-off, off) * H])
    dst = local - focus + target
    resized = landmark.image.resize((rw, rh), Image.Resampling.BILINEAR)
    coeffs = _homography(dst, src).reshape(-1)[:8]
    warped = resized.transform((W, H), Image.Transform.PERSPECTIVE, tuple(float(c) for c in coeffs),
                               Image.Resampling.BILINEAR)
    img.paste(warped, (0, 0), warped)

    pts = _apply(_homography(src, dst), landmark.points * np.array([rw / cw, rh / ch]))
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < W) & (pts[:, 1] >= 0) & (pts[:, 1] < H)
    in_pts = pts[inside]
    mask = Image.new("L", (W, H), 0)
    targets = [tuple(map(float, in_pts[i])) for i in rng.integers(0, len(in_pts), 8)] if len(in_pts) else []
    _occluders(ImageDraw.Draw(img), ImageDraw.Draw(mask), rng, W, H, d, targets)
    m = np.asarray(mask)
    occluded = np.zeros(len(pts), dtype=bool)
    if len(in_pts):
        occluded[inside] = m[in_pts[:, 1].astype(int), in_pts[:, 0].astype(int)] > 0
    visible = float(np.count_nonzero(inside & ~occluded)) / max(1, len(pts))
    bbx = None
    if len(in_pts):
        x0, y0 = np.maximum(in_pts.min(axis=0) - 2, 0)
        x1, y1 = np.minimum(in_pts.max(axis=0) + 2, [W, H])
        bbx = [round(float(x0), 1), round(float(y0), 1), round(float(x1), 1), round(float(y1), 1)]
    img = _photometric(img, rng, d)
    return img, {"d": round(float(d), 4), "visible": round(visible, 4), "bbx": bbx}


# ----------------------------------------------------------------------------------------------------------
# the data sets


_MADE_DIRS = set()


def _save(img, path):
    if path.parent not in _MADE_DIRS:
        path.parent.mkdir(parents=True, exist_ok=True)
        _MADE_DIRS.add(path.parent)
    img.save(path, "JPEG", quality=JPEG_QUALITY)


def _hex_id(*parts, n=16):
    return hashlib.sha1("/".join(str(p) for p in parts).encode()).hexdigest()[:n]


def _train_path(root, image_id):
    return Path(root) / "train" / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"


def _task_train(root, seed, j, count, long_range):
    """The ``count`` training photos of training landmark ``j``."""
    lm = render_landmark(seed, _TRAIN_BASE + j)
    ids = []
    for k in range(count):
        rng = np.random.default_rng([seed, _S_TRAIN, j, k])
        for _attempt in range(6):  # a training photo shows enough of its landmark to be learnable
            img, info = render_view(lm, rng, "easy" if rng.random() < 0.45 else "hard", long_range)
            if label_view(info["d"], info["visible"]) != "junk":
                break
        image_id = _hex_id("synthetic", seed, "train", j, k)
        _save(img, _train_path(root, image_id))
        ids.append(image_id)
    return {"type": "train", "j": j, "ids": ids, "fingerprint": lm.fingerprint}


def _task_test(root, seed, j, num_queries, num_db, long_range):
    """Queries and database views of test landmark ``j``; labels come from the view parameters."""
    lm = render_landmark(seed, _TEST_BASE + j)
    jpg = Path(root) / "test" / TEST_NAME / "jpg"
    queries = []
    for q in range(num_queries):
        rng = np.random.default_rng([seed, _S_TEST, j, 0, q])
        for _attempt in range(20):
            img, info = render_view(lm, rng, "query", long_range)
            if info["visible"] >= 0.85 and info["bbx"] is not None:
                break
        if info["bbx"] is None:
            raise RuntimeError(f"test landmark {j}: query {q} shows none of it")
        name = f"query_{_hex_id('synthetic', seed, 'q', j, q, n=10)}"
        _save(img, jpg / f"{name}.jpg")
        queries.append({"name": name, **info})
    plan_rng = np.random.default_rng([seed, _S_PLAN, j])
    kinds = ["easy", "hard"] + [str(k) for k in plan_rng.choice(["easy", "hard", "junk"], num_db - 2,
                                                                p=[0.35, 0.45, 0.2])]
    db = []
    k = 0
    while True:
        have = {v["label"] for v in db}
        if len(db) >= num_db and {"easy", "hard"} <= have:
            break
        if len(db) >= num_db:  # top up until both positives exist
            kind = "easy" if "easy" not in have else "hard"
        else:
            kind = kinds[k]
        rng = np.random.default_rng([seed, _S_TEST, j, 1, k])
        img, info = render_view(lm, rng, kind, long_range)
        name = _hex_id("synthetic", seed, "db", j, k, n=12)
        _save(img, jpg / f"{name}.jpg")
        db.append({"name": name, "target": kind, "label": label_view(info["d"], info["visible"]), **info})
        k += 1
        if k > num_db + 50:
            raise RuntimeError(f"test landmark {j}: no easy and hard views after {k} tries")
    return {"type": "test", "j": j, "queries": queries, "db": db, "fingerprint": lm.fingerprint}


def _task_distractor_landmark(root, seed, j, count, long_range):
    lm = render_landmark(seed, _DISTRACTOR_BASE + j)
    jpg = Path(root) / "test" / TEST_NAME / "jpg"
    out = []
    for k in range(count):
        rng = np.random.default_rng([seed, _S_DISTRACTOR, j, k])
        img, info = render_view(lm, rng, "easy" if rng.random() < 0.5 else "hard", long_range)
        name = _hex_id("synthetic", seed, "dl", j, k, n=12)
        _save(img, jpg / f"{name}.jpg")
        out.append({"name": name, **info})
    return {"type": "distractor_landmark", "j": j, "views": out, "fingerprint": lm.fingerprint}


def _task_backgrounds(root, seed, start, count, long_range):
    jpg = Path(root) / "test" / TEST_NAME / "jpg"
    out = []
    for k in range(start, start + count):
        rng = np.random.default_rng([seed, _S_BACKGROUND, k])
        img, _ = render_view(None, rng, "easy", long_range)
        name = _hex_id("synthetic", seed, "bg", k, n=12)
        _save(img, jpg / f"{name}.jpg")
        out.append({"name": name})
    return {"type": "backgrounds", "start": start, "views": out}


def _run_task(task):
    fn, args = task
    return {"_train": _task_train, "_test": _task_test, "_dl": _task_distractor_landmark,
            "_bg": _task_backgrounds}[fn](*args)


def _task_size(task):
    fn, args = task
    if fn == "_test":
        return args[3] + args[4]
    return args[3]


@dataclass(frozen=True)
class SyntheticWorld:
    """Where a generated world lies: ``root`` is a GLDv2 root, ``test_root``/``test_name`` a revisitop set."""

    root: Path
    params: dict
    counts: dict
    generated: bool  # True when this call wrote it, False when an existing complete world was reused

    @property
    def train_clean_csv(self):
        return self.root / "train_clean.csv"

    @property
    def train_csv(self):
        return self.root / "train.csv"

    @property
    def train_dir(self):
        return self.root / "train"

    @property
    def test_root(self):
        return self.root / "test"

    @property
    def test_name(self):
        return TEST_NAME

    @property
    def gnd_path(self):
        return self.root / "test" / TEST_NAME / f"gnd_{TEST_NAME}.pkl"


def _params(seed, num_train_landmarks, images_per_landmark, num_test_landmarks, queries_per_landmark,
            db_views_per_landmark, num_distractors, image_size):
    def pair(name, v, lo):
        v = (int(v), int(v)) if isinstance(v, int | np.integer) else tuple(int(x) for x in v)
        if len(v) != 2 or v[0] < lo or v[1] < v[0]:
            raise ValueError(f"{name} must be an int >= {lo} or a (min, max) pair with {lo} <= min <= max, got {v}")
        return v

    if int(num_train_landmarks) < 1 or int(num_test_landmarks) < 1 or int(num_distractors) < 0:
        raise ValueError("need at least one training landmark, one test landmark and no negative distractors")
    params = {
        "version": VERSION,
        "seed": int(seed),
        "num_train_landmarks": int(num_train_landmarks),
        "images_per_landmark": list(pair("images_per_landmark", images_per_landmark, 2)),
        "num_test_landmarks": int(num_test_landmarks),
        "queries_per_landmark": list(pair("queries_per_landmark", queries_per_landmark, 1)),
        "db_views_per_landmark": list(pair("db_views_per_landmark", db_views_per_landmark, 2)),
        "num_distractors": int(num_distractors),
        "image_size": list(pair("image_size", image_size, 96)),
    }
    return params


def _clean(root):
    root = Path(root)
    _MADE_DIRS.clear()
    (root / MARKER).unlink(missing_ok=True)
    for rel in _OUTPUTS:
        p = root / rel
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _read_marker(root):
    try:
        with open(Path(root) / MARKER) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def generate(root, seed=0, num_train_landmarks=200, images_per_landmark=(10, 20), num_test_landmarks=20,
             queries_per_landmark=(1, 2), db_views_per_landmark=(8, 12), num_distractors=150,
             image_size=(128, 160), workers=None, progress=True):
    """Write a synthetic landmark world under ``root`` (replacing any earlier one) and return it.

    ``images_per_landmark``, ``queries_per_landmark``, ``db_views_per_landmark``: an int or a (min, max) pair,
    drawn per landmark. ``num_distractors``: database images that no query shows, about 40% background-only
    scenes and 60% views (3 each) of unseen landmarks. ``image_size``: range of the longer side in pixels (the
    shorter is at least max(96, 0.75 x min)). ``workers``: processes (default: up to 2; 0 or 1: in-process).
    """
    params = _params(seed, num_train_landmarks, images_per_landmark, num_test_landmarks, queries_per_landmark,
                     db_views_per_landmark, num_distractors, image_size)
    with _lock(root):
        return _generate(Path(root), params, workers, progress)


@contextlib.contextmanager
def _lock(root):
    """Hold an exclusive lock on ``root`` (POSIX), so that concurrent callers (DDP ranks) generate once."""
    Path(root).mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(Path(root) / ".synthetic.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _generate(root, params, workers, progress):
    _clean(root)
    seed = params["seed"]
    long_range = tuple(params["image_size"])
    n_tr, n_te, n_dis = params["num_train_landmarks"], params["num_test_landmarks"], params["num_distractors"]
    n_dl_views = int(round(n_dis * 0.6))
    n_dl = (n_dl_views + 2) // 3
    n_bg = n_dis - n_dl_views

    plan = np.random.default_rng([seed, _S_PLAN])
    ipl = plan.integers(params["images_per_landmark"][0], params["images_per_landmark"][1] + 1, n_tr)
    qpl = plan.integers(params["queries_per_landmark"][0], params["queries_per_landmark"][1] + 1, n_te)
    dpl = plan.integers(params["db_views_per_landmark"][0], params["db_views_per_landmark"][1] + 1, n_te)
    lids = np.random.default_rng([seed, _S_IDS]).choice(max(200_000, 10 * (n_tr + n_te + n_dl)),
                                                        n_tr + n_te + n_dl, replace=False)
    train_lids, test_lids, dl_lids = lids[:n_tr], lids[n_tr:n_tr + n_te], lids[n_tr + n_te:]

    tasks = [("_test", (str(root), seed, j, int(qpl[j]), int(dpl[j]), long_range)) for j in range(n_te)]
    tasks += [("_dl", (str(root), seed, j, min(3, n_dl_views - 3 * j), long_range)) for j in range(n_dl)]
    tasks += [("_bg", (str(root), seed, s, min(25, n_bg - s), long_range)) for s in range(0, n_bg, 25)]
    tasks += [("_train", (str(root), seed, j, int(ipl[j]), long_range)) for j in range(n_tr)]
    total = sum(_task_size(t) for t in tasks)

    workers = min(2, os.cpu_count() or 1) if workers is None else int(workers)
    bar = _progress(total, progress)
    results = []
    try:
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for res in pool.imap_unordered(_run_task, tasks):
                    results.append(res)
                    bar.update(_result_size(res))
        else:
            for task in tasks:
                res = _run_task(task)
                results.append(res)
                bar.update(_result_size(res))
    finally:
        bar.close()

    by = {}
    for res in results:
        by.setdefault(res["type"], []).append(res)
    train = sorted(by.get("train", []), key=lambda r: r["j"])
    test = sorted(by.get("test", []), key=lambda r: r["j"])
    dls = sorted(by.get("distractor_landmark", []), key=lambda r: r["j"])
    bgs = sorted(by.get("backgrounds", []), key=lambda r: r["start"])

    # GLDv2-clean training set.
    all_ids = [i for r in train for i in r["ids"]]
    if len(set(all_ids)) != len(all_ids):
        raise RuntimeError("image id collision")
    order = np.argsort(train_lids, kind="stable")
    with open(root / "train_clean.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["landmark_id", "images"])
        for j in order:
            w.writerow([int(train_lids[j]), " ".join(train[j]["ids"])])
    rows = sorted((i, int(train_lids[r["j"]])) for r in train for i in r["ids"])
    with open(root / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "url", "landmark_id"])
        for image_id, lid in rows:
            w.writerow([image_id, f"synthetic://{seed}/{lid}/{image_id}", lid])

    # Revisitop test set: database in a fixed shuffled order, queries by landmark.
    db_items = []  # (name, landmark key, label or None, info)
    for r in test:
        for v in r["db"]:
            db_items.append((v["name"], ("test", r["j"]), v["label"], v))
    for r in dls:
        for v in r["views"]:
            db_items.append((v["name"], ("distractor", r["j"]), None, v))
    for r in bgs:
        for v in r["views"]:
            db_items.append((v["name"], ("background", None), None, v))
    db_items.sort(key=lambda x: x[0])
    perm = np.random.default_rng([seed, _S_PLAN, 1]).permutation(len(db_items))
    db_items = [db_items[i] for i in perm]
    imlist = [x[0] for x in db_items]
    if len(set(imlist)) != len(imlist):
        raise RuntimeError("database name collision")
    qimlist, gnd, query_meta = [], [], []
    for r in test:
        idx = {lab: [] for lab in ("easy", "hard", "junk")}
        for i, (_name, key, label, _v) in enumerate(db_items):
            if key == ("test", r["j"]):
                idx[label].append(i)
        for q in r["queries"]:
            qimlist.append(q["name"])
            gnd.append({"bbx": [float(v) for v in q["bbx"]], "easy": idx["easy"], "hard": idx["hard"],
                        "junk": idx["junk"]})
            query_meta.append({"name": q["name"], "landmark_id": int(test_lids[r["j"]]), "d": q["d"],
                               "visible": q["visible"]})
    with open(root / "test" / TEST_NAME / f"gnd_{TEST_NAME}.pkl", "wb") as f:
        pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, f, protocol=4)

    def lid_of(key):
        if key[0] == "test":
            return int(test_lids[key[1]])
        if key[0] == "distractor":
            return int(dl_lids[key[1]])
        return None

    meta = {
        "params": params,
        "train_landmarks": [{"landmark_id": int(train_lids[r["j"]]), "index": _TRAIN_BASE + r["j"],
                             "fingerprint": r["fingerprint"], "images": len(r["ids"])} for r in train],
        "test_landmarks": [{"landmark_id": int(test_lids[r["j"]]), "index": _TEST_BASE + r["j"],
                            "fingerprint": r["fingerprint"]} for r in test],
        "distractor_landmarks": [{"landmark_id": int(dl_lids[r["j"]]), "index": _DISTRACTOR_BASE + r["j"],
                                  "fingerprint": r["fingerprint"]} for r in dls],
        "queries": query_meta,
        "database": [{"name": name, "role": key[0], "landmark_id": lid_of(key), "label": label,
                      "d": v.get("d"), "visible": v.get("visible"), "target": v.get("target")}
                     for name, key, label, v in db_items],
    }
    with open(root / META, "w") as f:
        json.dump(meta, f, indent=1)

    labels = [x[2] for x in db_items if x[2] is not None]
    counts = {
        "train_images": len(all_ids),
        "train_landmarks": n_tr,
        "test_landmarks": n_te,
        "queries": len(qimlist),
        "database": len(imlist),
        "easy": labels.count("easy"),
        "hard": labels.count("hard"),
        "junk": labels.count("junk"),
        "distractors": len(imlist) - len(labels),
    }
    with open(root / MARKER, "w") as f:  # last: its presence means the world is complete
        json.dump({"params": params, "counts": counts}, f, indent=1, sort_keys=True)
    world = SyntheticWorld(root=root, params=params, counts=counts, generated=True)
    return world


def ensure_generated(root, seed=0, num_train_landmarks=200, images_per_landmark=(10, 20), num_test_landmarks=20,
                     queries_per_landmark=(1, 2), db_views_per_landmark=(8, 12), num_distractors=150,
                     image_size=(128, 160), workers=None, progress=True):
    """The world under ``root`` for these parameters: reused if its completion marker matches, else generated."""
    params = _params(seed, num_train_landmarks, images_per_landmark, num_test_landmarks, queries_per_landmark,
                     db_views_per_landmark, num_distractors, image_size)
    root = Path(root)
    with _lock(root):
        marker = _read_marker(root)
        intact = (root / "train_clean.csv").is_file() and (root / "test" / TEST_NAME / f"gnd_{TEST_NAME}.pkl").is_file()
        if marker is not None and marker.get("params") == params and intact:
            return SyntheticWorld(root=root, params=params, counts=marker.get("counts", {}), generated=False)
        return _generate(root, params, workers, progress)


def _result_size(res):
    if res["type"] == "train":
        return len(res["ids"])
    if res["type"] == "test":
        return len(res["queries"]) + len(res["db"])
    return len(res["views"])


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _progress(total, enabled):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="synthetic world", unit="img")


def _dir_size(root):
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


def _range_arg(text):
    parts = text.split("-") if "-" in text else [text, text]
    try:
        lo, hi = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX, got {text!r}") from None
    return (lo, hi)


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m datasets.synthetic",
        description="Generate a synthetic landmark world: a GLDv2-clean-format training set (train_clean.csv, "
                    "train.csv, train/<a>/<b>/<c>/<id>.jpg) and a revisitop-format test set of unseen landmarks "
                    "(test/synthetic/jpg, test/synthetic/gnd_synthetic.pkl). Ranges are N or MIN-MAX, drawn per "
                    "landmark. An existing complete world with the same parameters is kept unless --force.")
    p.add_argument("--root", required=True, metavar="DIR",
                   help="output folder (the GLDv2 root; the test set goes to ROOT/test)")
    p.add_argument("--seed", type=int, metavar="S", default=0,
                   help="world seed: the same seed and flags give the same bytes with the same Pillow (default 0)")
    p.add_argument("--train-landmarks", type=int, metavar="N", default=200,
                   help="number of training landmarks (default 200)")
    p.add_argument("--images-per-landmark", type=_range_arg, metavar="N|MIN-MAX", default=(10, 20),
                   help="training photos per landmark, N or MIN-MAX (default 10-20)")
    p.add_argument("--test-landmarks", type=int, metavar="N", default=20,
                   help="number of unseen test landmarks that have queries (default 20)")
    p.add_argument("--queries-per-landmark", type=_range_arg, metavar="N|MIN-MAX", default=(1, 2),
                   help="queries per test landmark, N or MIN-MAX (default 1-2)")
    p.add_argument("--db-views-per-landmark", type=_range_arg, metavar="N|MIN-MAX", default=(8, 12),
                   help="database views per test landmark, labelled easy/hard/junk, N or MIN-MAX (default 8-12; "
                        "more are added if a landmark lacks an easy or a hard one)")
    p.add_argument("--distractors", type=int, metavar="N", default=150,
                   help="database images no query shows: ~40%% background-only, ~60%% views of other unseen "
                        "landmarks (default 150)")
    p.add_argument("--image-size", type=_range_arg, metavar="N|MIN-MAX", default=(128, 160),
                   help="longer side of every image in pixels, N or MIN-MAX (default 128-160; shorter side >= 96)")
    p.add_argument("--workers", type=int, metavar="N", default=None,
                   help="generator processes (default: min(2, CPU count); 0 or 1: no subprocesses)")
    p.add_argument("--force", action="store_true", help="regenerate even if a complete matching world exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    kw = dict(seed=a.seed, num_train_landmarks=a.train_landmarks, images_per_landmark=a.images_per_landmark,
              num_test_landmarks=a.test_landmarks, queries_per_landmark=a.queries_per_landmark,
              db_views_per_landmark=a.db_views_per_landmark, num_distractors=a.distractors,
              image_size=a.image_size, workers=a.workers, progress=not a.quiet)
    t0 = time.time()
    try:
        world = generate(a.root, **kw) if a.force else ensure_generated(a.root, **kw)
    except ValueError as err:
        p.error(str(err))
    c = world.counts
    state = "generated" if world.generated else "already complete, kept"
    print(f"{world.root}: {state} in {time.time() - t0:.1f} s, {_dir_size(world.root) / 2**20:.1f} MiB; "
          f"train: {c.get('train_images')} images of {c.get('train_landmarks')} landmarks; test '{TEST_NAME}': "
          f"{c.get('queries')} queries, {c.get('database')} database images "
          f"(easy {c.get('easy')}, hard {c.get('hard')}, junk {c.get('junk')}, distractors {c.get('distractors')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
