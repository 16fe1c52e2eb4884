"""Landmarks: a structured scene drawn with PIL from ``(seed, landmark index)`` alone.

A landmark is a facade (a window grid, ground-floor arches, a portal, a portico or doors, bands, pilasters, a
frieze, a roof of some kind, wings and towers), a pagoda or a gate, in one of the shared palettes
(``palette.py``) and with its own wall texture, so structure matters and the mean colour alone does not tell
landmarks apart. It is drawn on a ``CANVAS`` x ``CANVAS`` transparent sheet and cropped to its extent;
``render_landmark`` returns that RGBA image, sample points of its shape (from which a view measures how much
of it is visible) and a fingerprint of its pixels.
"""

import hashlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from datasets.synthetic.elements import roof, textured_rect, tower, window, window_grid
from datasets.synthetic.palette import NUM_PALETTES, palette, shade
from datasets.synthetic.seeding import STREAM_LANDMARK

CANVAS = 256  # landmarks are drawn on a CANVAS x CANVAS sheet, then cropped to their extent


def _draw_facade(draw, rng, colours, style, ground):
    S = CANVAS
    u = rng.uniform
    bw = u(0.42, 0.78) * S
    bh = u(0.28, 0.55) * S
    cx = S / 2 + u(-0.04, 0.04) * S
    bx0, bx1, by0 = cx - bw / 2, cx + bw / 2, ground - bh
    wall, trim, line = colours["wall"], colours["trim"], style["line"]

    towers = ["none", "pair", "center", "side", "pair"][int(rng.integers(5))]
    tower_roof = ["spire", "dome", "battlement", "pyramid", "onion", "flat"][int(rng.integers(6))]
    tw = u(0.1, 0.17) * S
    t_top = max(0.2 * S, by0 - u(0.12, 0.3) * S)

    if rng.random() < 0.35:  # lower wings on both sides, behind the body
        ww, wh = min(u(0.1, 0.2) * S, bx0 - 2), bh * u(0.45, 0.8)
        for x0, x1 in ((bx0 - ww, bx0), (bx1, bx1 + ww)):
            textured_rect(draw, (x0, ground - wh, x1, ground), style["texture"], shade(wall, 0.92), line)
            window_grid(draw, rng, (x0 + 3, ground - wh + 6, x1 - 3, ground - 4), max(1, style["rows"] - 1), 2,
                         style["window_shape"], colours["window"], style["frame"], 0.55, 0.55)
            roof(draw, rng, "flat", x0, x1, ground - wh, 0, colours, style)

    textured_rect(draw, (bx0, by0, bx1, ground), style["texture"], wall, line)
    draw.rectangle((bx0, by0, bx1, ground), outline=shade(wall, 0.7))

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
    window_grid(draw, rng, win_box, rows, cols, style["window_shape"], colours["window"], style["frame"],
                 style["fw"], style["fh"])

    g0 = ground - gf
    dark = shade(colours["window"], 0.6)
    if ground_kind == "arcade":
        n = int(rng.integers(3, 8))
        aw = bw / n
        for i in range(n):
            box = (bx0 + i * aw + aw * 0.15, g0 + 2, bx0 + (i + 1) * aw - aw * 0.15, ground)
            window(draw, box, "arch", dark, trim)
    elif ground_kind == "portal":
        pw = bw * u(0.18, 0.32)
        window(draw, (cx - pw / 2, g0 - gf * 0.4, cx + pw / 2, ground), "arch", dark, trim)
        if rng.random() < 0.6:
            for s in (-1, 1):
                x = cx + s * bw * 0.3
                window(draw, (x - pw * 0.25, g0 + gf * 0.25, x + pw * 0.25, ground), "arch", dark, trim)
    elif ground_kind == "portico":
        pw = bw * u(0.45, 0.85)
        px0, px1 = cx - pw / 2, cx + pw / 2
        draw.rectangle((px0, g0 - 4, px1, ground), fill=dark)
        n = int(rng.integers(4, 9))
        for i in range(n):
            x = px0 + i * (pw - 6) / (n - 1) + 3
            draw.rectangle((x - 2.5, g0 - 4, x + 2.5, ground), fill=trim)
        draw.polygon([(px0 - 4, g0 - 4), (cx, g0 - 4 - gf * 0.6), (px1 + 4, g0 - 4)], fill=trim,
                     outline=shade(trim, 0.7))
        draw.ellipse((cx - 3, g0 - 4 - gf * 0.35, cx + 3, g0 + 2 - gf * 0.35), fill=colours["accent"])
    elif ground_kind == "doors":
        n = int(rng.integers(1, 4))
        for i in range(n):
            x = bx0 + (i + 0.5) * bw / n
            window(draw, (x - bw * 0.06, g0 + gf * 0.15, x + bw * 0.06, ground), "rect", dark, trim)

    if style["frieze"]:
        n = int(bw // 8)
        for i in range(n):
            x = bx0 + (i + 0.5) * bw / n
            draw.polygon([(x - 3, by0 + 1), (x, by0 + 5), (x + 3, by0 + 1)], fill=colours["accent"])

    roof_kind = ["flat", "gable", "dome", "mansard", "stepped", "battlement", "sawtooth", "gable"][int(rng.integers(8))]
    rh = u(0.1, 0.22) * S
    top = roof(draw, rng, roof_kind, bx0, bx1, by0, min(rh, by0 - 0.2 * S - 10), colours, style)

    if towers == "pair":
        for x0 in (bx0 - tw * 0.3, bx1 - tw * 0.7):
            top = min(top, tower(draw, rng, x0, x0 + tw, t_top, ground, colours, style, tower_roof))
    elif towers == "side":
        x0 = bx1 - tw * 0.5 if rng.random() < 0.5 else bx0 - tw * 0.5
        top = min(top, tower(draw, rng, x0, x0 + tw, t_top - 0.05 * S, ground, colours, style, tower_roof))
    elif towers == "center":
        top = min(top, tower(draw, rng, cx - tw / 2, cx + tw / 2, max(0.18 * S, t_top - 0.06 * S), by0 + 10, colours,
                              style, tower_roof))
    return top


def _draw_pagoda(draw, rng, colours, style, ground):
    S = CANVAS
    tiers = int(rng.integers(3, 6))
    w = rng.uniform(0.4, 0.6) * S
    th = rng.uniform(0.55, 0.75) * S / tiers
    y = ground
    cx = S / 2
    for t in range(tiers):
        tw = w * (1 - 0.14 * t)
        textured_rect(draw, (cx - tw / 2, y - th, cx + tw / 2, y), style["texture"], colours["wall"], style["line"])
        window_grid(draw, rng, (cx - tw / 2 + 4, y - th + th * 0.35, cx + tw / 2 - 4, y - 3), 1, style["cols"],
                     style["window_shape"], colours["window"], style["frame"], style["fw"], 0.7)
        eave = tw * 0.18
        draw.polygon([(cx - tw / 2 - eave, y - th + th * 0.3), (cx - tw / 2 + eave * 0.5, y - th - th * 0.05),
                      (cx + tw / 2 - eave * 0.5, y - th - th * 0.05), (cx + tw / 2 + eave, y - th + th * 0.3)],
                     fill=colours["roof"])
        y -= th
    draw.rectangle((cx - 2, y - th * 0.9, cx + 2, y), fill=colours["accent"])
    for k in range(3):
        yy = y - th * (0.25 + 0.22 * k)
        draw.ellipse((cx - 5, yy - 3, cx + 5, yy + 3), fill=colours["accent"])
    return y - th * 0.9


def _draw_gate(draw, rng, colours, style, ground):
    S = CANVAS
    u = rng.uniform
    w, h = u(0.55, 0.85) * S, u(0.45, 0.7) * S
    cx = S / 2
    x0, x1, y0 = cx - w / 2, cx + w / 2, ground - h
    textured_rect(draw, (x0, y0, x1, ground), style["texture"], colours["wall"], style["line"])
    draw.rectangle((x0, y0, x1, ground), outline=shade(colours["wall"], 0.7))
    dark = shade(colours["window"], 0.5)
    aw = w * u(0.25, 0.4)
    window(draw, (cx - aw / 2, y0 + h * 0.3, cx + aw / 2, ground), "arch", dark, colours["trim"])
    if rng.random() < 0.6:
        for s in (-1, 1):
            xc = cx + s * w * 0.34
            window(draw, (xc - aw * 0.22, y0 + h * 0.55, xc + aw * 0.22, ground), "arch", dark, colours["trim"])
    ncol = int(rng.integers(2, 4))
    for s in (-1, 1):
        for i in range(ncol):
            x = cx + s * (aw / 2 + 4 + i * (w / 2 - aw / 2 - 8) / max(1, ncol - 1))
            draw.rectangle((x - 2, y0 + h * 0.15, x + 2, ground), fill=colours["trim"])
    draw.rectangle((x0 - 4, y0, x1 + 4, y0 + h * 0.12), fill=colours["trim"])
    draw.rectangle((x0 + 8, y0 + 2, x1 - 8, y0 + h * 0.1 - 2), fill=colours["accent"])
    top = y0
    kind = ["statue", "gable", "none", "battlement"][int(rng.integers(4))]
    if kind == "statue":
        draw.rectangle((cx - w * 0.2, y0 - 10, cx + w * 0.2, y0), fill=colours["roof"])
        draw.polygon([(cx - 8, y0 - 10), (cx, y0 - 34), (cx + 8, y0 - 10)], fill=colours["roof"])
        top = y0 - 34
    elif kind == "gable":
        top = roof(draw, rng, "gable", x0, x1, y0, h * 0.3, colours, style)
    elif kind == "battlement":
        top = roof(draw, rng, "battlement", x0, x1, y0, 0, colours, style)
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
    rng = np.random.default_rng([seed, STREAM_LANDMARK, index])
    palette_index = int(rng.integers(NUM_PALETTES))
    colours = palette(seed, palette_index)
    u = rng.uniform
    texture = ["plain", "brick", "blocks", "bands", "boards", "checker", "diamond", "brick", "plain"][
        int(rng.integers(9))]
    line_factor = 0.78 if rng.random() < 0.7 else 1.18
    style = {
        "texture": (texture, int(rng.integers(4, 9)) if texture != "bands" else int(rng.integers(6, 14))),
        "line": colours["trim"] if texture in ("bands", "checker", "diamond") and rng.random() < 0.6
        else shade(colours["wall"], line_factor),
        "rows": int(rng.integers(1, 6)),
        "cols": int(rng.integers(2, 9)),
        "window_shape": ["rect", "arch", "round", "gothic", "cross", "double"][int(rng.integers(6))],
        "frame": colours["trim"] if rng.random() < 0.55 else None,
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
    img = Image.new("RGBA", (CANVAS, CANVAS), (*colours["wall"], 0))
    draw = ImageDraw.Draw(img)
    ground = CANVAS - 2
    kind_draw = rng.random()
    kind = "facade" if kind_draw < 0.8 else ("pagoda" if kind_draw < 0.9 else "gate")
    if kind == "facade":
        _draw_facade(draw, rng, colours, style, ground)
    elif kind == "pagoda":
        _draw_pagoda(draw, rng, colours, style, ground)
    else:
        _draw_gate(draw, rng, colours, style, ground)
    if rng.random() < 0.2:  # a flag on the highest point
        alpha = np.asarray(img)[:, :, 3]
        ys, xs = np.nonzero(alpha)
        top = int(ys.min())
        x = float(np.mean(xs[ys == top]))
        if top > 22:
            draw.line((x, top, x, top - 20), fill=(60, 60, 60), width=1)
            draw.rectangle((x + 1, top - 20, x + 13, top - 12), fill=colours["accent"])
    bbox = img.getbbox()
    img = img.crop(bbox)
    alpha = np.asarray(img)[:, :, 3]
    ys, xs = np.nonzero(alpha[1::3, 1::3] > 127)
    points = np.stack([xs * 3 + 1.5, ys * 3 + 1.5], axis=1).astype(np.float64)
    fingerprint = hashlib.sha1(img.tobytes()).hexdigest()[:16]
    return Landmark(index=index, image=img, points=points, fingerprint=fingerprint, kind=kind, palette=palette_index)

