"""Building elements of the synthetic landmarks, drawn with PIL: textured walls, windows and window grids, roofs
and towers. ``landmarks.py`` composes them into facades, pagodas and gates.
"""

from datasets.synthetic.palette import shade


def textured_rect(draw, box, style, base, line):
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


def window(draw, box, shape, fill, frame):
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
        cross = frame if frame is not None else shade(fill, 2.5)
        draw.line(((x0 + x1) / 2, y0, (x0 + x1) / 2, y1), fill=cross)
        draw.line((x0, (y0 + y1) / 2, x1, (y0 + y1) / 2), fill=cross)
    elif shape == "double":
        g = max(1.0, w * 0.15)
        m = (x0 + x1) / 2
        draw.rectangle((x0, y0, m - g / 2, y1), fill=fill, outline=frame)
        draw.rectangle((m + g / 2, y0, x1, y1), fill=fill, outline=frame)


def window_grid(draw, rng, box, rows, cols, shape, fill, frame, fw, fh):
    """``rows`` x ``cols`` windows, each ``fw`` x ``fh`` of its cell, centred in the cells of ``box``."""
    x0, y0, x1, y1 = box
    cw, ch = (x1 - x0) / cols, (y1 - y0) / rows
    for r in range(rows):
        for c in range(cols):
            cx, cy = x0 + (c + 0.5) * cw, y0 + (r + 0.5) * ch
            window(draw, (cx - cw * fw / 2, cy - ch * fh / 2, cx + cw * fw / 2, cy + ch * fh / 2),
                    shape, fill, frame)


def roof(draw, rng, kind, x0, x1, y, height, colours, style):
    """A roof of ``kind`` on the span ``x0..x1`` whose base is at ``y``; returns its top y."""
    w = x1 - x0
    roof, trim, accent = colours["roof"], colours["trim"], colours["accent"]
    if kind == "flat":
        draw.rectangle((x0 - 2, y - 4, x1 + 2, y), fill=trim)
        return y - 4
    if kind == "battlement":
        n = max(3, int(w // 10))
        mw = w / (2 * n - 1)
        for i in range(0, 2 * n - 1, 2):
            draw.rectangle((x0 + i * mw, y - 7, x0 + (i + 1) * mw, y), fill=colours["wall"])
        draw.rectangle((x0, y - 2, x1, y), fill=shade(colours["wall"], 0.8))
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
        draw.rectangle((cx - dw / 2 * 0.9, y - drum, cx + dw / 2 * 0.9, y), fill=colours["wall"], outline=trim)
        for i in range(1, 6):
            xx = cx - dw / 2 * 0.9 + i * dw * 0.9 / 6
            draw.rectangle((xx - 1, y - drum + 2, xx + 1, y - 2), fill=colours["window"])
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
            window(draw, (cx - 3, y - height * 0.75, cx + 3, y - height * 0.15), "arch", colours["window"], trim)
        return y - height
    if kind == "stepped":
        steps = 3
        for i in range(steps):
            inset = w * 0.14 * (i + 1)
            draw.rectangle((x0 + inset, y - height * (i + 1) / steps, x1 - inset, y - height * i / steps),
                           fill=shade(colours["wall"], 1.0 - 0.08 * (i + 1)), outline=trim)
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


def tower(draw, rng, x0, x1, top, ground, colours, style, roof_kind):
    textured_rect(draw, (x0, top, x1, ground), style["texture"], colours["wall"], style["line"])
    draw.rectangle((x0, top, x1, ground), outline=shade(colours["wall"], 0.7))
    h = ground - top
    n = max(1, int(h // 28))
    w = x1 - x0
    for i in range(n):
        cy = top + 10 + i * (h - 20) / max(1, n)
        window(draw, ((x0 + x1) / 2 - w * 0.18, cy, (x0 + x1) / 2 + w * 0.18, cy + min(14, h / (n + 1))),
                style["window_shape"], colours["window"], style["frame"])
    if style.get("clock"):
        r = w * 0.3
        cx, cy = (x0 + x1) / 2, top + r + 4
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(240, 238, 225), outline=colours["trim"], width=2)
        draw.line((cx, cy, cx, cy - r * 0.7), fill=(20, 20, 20), width=1)
        draw.line((cx, cy, cx + r * 0.5, cy), fill=(20, 20, 20), width=1)
    return roof(draw, rng, roof_kind, x0, x1, top, min(w * style["tower_roof_h"], top - 3), colours, style)
