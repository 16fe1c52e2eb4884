"""Views: a "photo" of a landmark, and the revisitop label that its generation parameters give it.

``render_view`` draws a cluttered background that belongs to no landmark (sky, ground, blocks, trees, blobs,
poles, cars), pastes the landmark with a view of some kind (scale, crop, perspective warp and rotation), puts
occluders in front of it, then changes the lighting (brightness, contrast, gamma, tint, shading) and adds
blur and sensor noise. A difficulty in [0, 1] sets how extreme the view is; how much of the landmark is
visible is measured exactly from the geometry and the occluders, on the landmark's sample points.
``label_view`` turns (difficulty, visible fraction) into easy / hard / junk.

In the cluttered world (``Clutter``; docs/ablations.md) a view that is not a query shows its landmark smaller and
anywhere in the middle of the frame, in front of other landmarks, with more occluders.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from datasets.synthetic.palette import hsv, mix, random_colour, shade

# Thresholds that turn (difficulty, visible fraction) into a revisitop label.
EASY_MAX_DIFFICULTY, EASY_MIN_VISIBLE = 0.35, 0.75
JUNK_MIN_DIFFICULTY, JUNK_MAX_VISIBLE = 0.85, 0.35  # junk above / below these
JUNK_STRONG_DIFFICULTY, JUNK_STRONG_VISIBLE = 0.7, 0.5  # junk too: a strong view that shows only half

# The cluttered world, as docs/ablations.md decided it before any of its results.
CLUTTER_SHRINK = (0.5, 0.75)  # times the plain world's zoom: the view's landmark and each clutter landmark
CLUTTER_CENTRE = (0.15, 0.85)  # where the view's landmark goes, in fractions of the frame's width and height
CLUTTER_PER_VIEW = 2  # clutter landmarks behind the view's landmark (or in a background-only view)
CLUTTER_OCCLUSION = 0.25  # added to the difficulty that sets the occluders' count and size (at most 1)


@dataclass(frozen=True)
class Clutter:
    """How a view of the cluttered world draws what that world adds: from its own random stream ``rng`` (not the
    view's, whose draws stay those of the plain world), with the world's ``pool`` clutter landmarks, the k-th
    of which is ``landmark(k)`` (a ``landmarks.Landmark``)."""

    rng: np.random.Generator
    landmark: Callable
    pool: int


def _homography(src, dst):
    """3x3 H with dst ~ H [src; 1] for four point pairs."""
    equations, targets = [], []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        equations.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        targets.append(u)
        equations.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        targets.append(v)
    solution = np.linalg.solve(np.asarray(equations, dtype=np.float64), np.asarray(targets, dtype=np.float64))
    return np.append(solution, 1.0).reshape(3, 3)


def _apply(homography, points):
    """``points`` (N x 2) mapped through the 3x3 ``homography``."""
    projected = np.asarray(points, dtype=np.float64) @ homography[:, :2].T + homography[:, 2]
    return projected[:, :2] / projected[:, 2:3]


def _clutter(draw, rng, W, H, horizon, n):
    """``n`` random shapes that belong to no landmark: blocks (some with windows), trees, blobs, poles."""
    for _ in range(n):
        kind = int(rng.integers(6))
        c = random_colour(rng)
        if kind == 0:  # a generic building block, random every time
            bw, bh = rng.uniform(0.12, 0.45) * W, rng.uniform(0.15, 0.6) * H
            x0 = rng.uniform(-0.1, 1.0) * W
            y1 = horizon + rng.uniform(0, 0.1) * H
            draw.rectangle((x0, y1 - bh, x0 + bw, y1), fill=c)
            if rng.random() < 0.6:
                rows, cols = int(rng.integers(1, 6)), int(rng.integers(1, 6))
                wc = random_colour(rng)
                for r in range(rows):
                    for k in range(cols):
                        cx, cy = x0 + (k + 0.5) * bw / cols, y1 - bh + (r + 0.5) * bh / rows
                        draw.rectangle((cx - bw / cols * 0.25, cy - bh / rows * 0.25, cx + bw / cols * 0.25,
                                        cy + bh / rows * 0.25), fill=wc)
        elif kind == 1:  # tree
            x, y = rng.uniform(0, W), horizon + rng.uniform(-0.05, 0.25) * H
            r = rng.uniform(0.04, 0.12) * min(W, H)
            draw.rectangle((x - r * 0.15, y - r, x + r * 0.15, y + r), fill=hsv(0.08, 0.5, rng.uniform(0.2, 0.4)))
            draw.ellipse((x - r, y - 2.6 * r, x + r, y - 0.6 * r),
                         fill=hsv(rng.uniform(0.2, 0.4), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.6)))
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
            draw.polygon([(float(x + radius * np.cos(angle)), float(y + radius * np.sin(angle)))
                          for radius, angle in zip(rad, ang, strict=True)], fill=c)
        else:  # car / street furniture near the bottom
            x, y = rng.uniform(0, W), rng.uniform(horizon, H + 0.05 * H)
            w, h = rng.uniform(0.1, 0.25) * W, rng.uniform(0.05, 0.1) * H
            draw.rounded_rectangle((x - w / 2, y - h, x + w / 2, y), radius=h / 3, fill=c)


def render_background(rng, W, H, clutter=(3, 9)):
    """A cluttered scene of size ``W`` x ``H`` that shows no landmark: sky, ground, random shapes."""
    if rng.random() < 0.3:
        g = rng.uniform(0.55, 0.9)
        top = hsv(0.6, rng.uniform(0, 0.08), g)
        bot = hsv(0.6, rng.uniform(0, 0.05), min(1.0, g + 0.08))
    else:
        top = hsv(rng.uniform(0.52, 0.68), rng.uniform(0.25, 0.7), rng.uniform(0.6, 0.95))
        bot = mix(top, (235, 235, 230), rng.uniform(0.3, 0.8))
    horizon = rng.uniform(0.55, 0.9) * H
    gh = [rng.uniform(0.05, 0.15), rng.uniform(0.28, 0.4), rng.uniform(0.0, 0.1)][int(rng.integers(3))]
    g_top = hsv(gh, rng.uniform(0.05, 0.5), rng.uniform(0.3, 0.7))
    g_bot = shade(g_top, rng.uniform(0.6, 0.9))
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


def _occluders(draw, mask_draw, rng, W, H, difficulty, targets):
    """Draw occluders (trees, poles, people, signs, blobs) on ``draw`` and their footprint on ``mask_draw``;
    most sit on one of ``targets`` (points of the landmark). Their count and size grow with ``difficulty``."""
    n = int(rng.poisson(0.3 + 2.6 * difficulty))
    for _ in range(n):
        s = rng.uniform(0.1, 0.2 + 0.3 * difficulty) * min(W, H)
        if len(targets) and rng.random() < 0.75:
            x, y = targets[int(rng.integers(len(targets)))]
        else:
            x, y = rng.uniform(0, W), rng.uniform(0, H)
        kind = int(rng.integers(5))
        c = random_colour(rng)
        shapes = []
        if kind == 0:  # tree
            shapes.append(("rect", (x - s * 0.08, y, x + s * 0.08, H)))
            shapes.append(("ellipse", (x - s * 0.6, y - s * 0.9, x + s * 0.6, y + s * 0.3)))
            c = hsv(rng.uniform(0.2, 0.4), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.5))
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


def _paste_clutter(img, clutter, kind):
    """Paste ``CLUTTER_PER_VIEW`` distinct clutter landmarks on ``img``, each as large as a view of ``kind`` in the
    cluttered world draws its own landmark (the plain world's zoom times ``CLUTTER_SHRINK``), centred anywhere."""
    W, H = img.size
    rng = clutter.rng
    for k in rng.choice(clutter.pool, CLUTTER_PER_VIEW, replace=False):
        image = clutter.landmark(int(k)).image
        cw, ch = image.size
        scale = min(W / cw, H / ch) * _view_params(rng, kind)["zoom"] * rng.uniform(*CLUTTER_SHRINK)
        rw, rh = max(2, int(round(cw * scale))), max(2, int(round(ch * scale)))
        x, y = rng.uniform(0, W), rng.uniform(0, H)
        resized = image.resize((rw, rh), Image.Resampling.BILINEAR)
        img.paste(resized, (int(round(x - rw / 2)), int(round(y - rh / 2))), resized)


def _occlusion(difficulty, clutter):
    """The difficulty that sets the occluders' count and size: the view's, raised in the cluttered world."""
    return difficulty if clutter is None else min(1.0, difficulty + CLUTTER_OCCLUSION)


def _view_params(rng, kind):
    """Difficulty, zoom and focus for a view ``kind``: easy / hard / junk / query, as targets, not labels."""
    u = rng.uniform
    if kind == "query":
        return {"d": u(0.03, 0.25), "zoom": u(0.62, 0.88), "focus": (u(0.45, 0.55), u(0.45, 0.55)), "off": 0.04}
    if kind == "easy":
        return {"d": u(0.0, 0.32), "zoom": u(0.58, 0.92), "focus": (u(0.42, 0.58), u(0.42, 0.58)), "off": 0.06}
    if kind == "hard":
        difficulty = u(0.4, 0.85)
        if rng.random() < 0.5:  # close up: part of the landmark is cut off
            zoom = u(1.0, 1.6)
            focus = (u(0.25, 0.75), u(0.25, 0.75))
        else:  # far away, or off-centre
            zoom = u(0.38, 0.9)
            focus = (u(0.35, 0.65), u(0.35, 0.65))
        return {"d": difficulty, "zoom": zoom, "focus": focus, "off": 0.05 + 0.2 * difficulty}
    if kind == "junk":
        difficulty = u(0.55, 1.0)
        if rng.random() < 0.6:  # a small detail, seen from very close
            return {"d": difficulty, "zoom": u(2.2, 3.5), "focus": (u(0.0, 1.0), u(0.0, 1.0)), "off": 0.3}
        # mostly outside the frame
        side = int(rng.integers(4))
        fx = [u(-0.05, 0.1), u(0.9, 1.05), u(0.2, 0.8), u(0.2, 0.8)][side]
        fy = [u(0.2, 0.8), u(0.2, 0.8), u(-0.05, 0.1), u(0.9, 1.05)][side]
        return {"d": difficulty, "zoom": u(0.7, 1.2), "focus": (u(0.4, 0.6), u(0.4, 0.6)), "frame_pos": (fx, fy)}
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


def _photometric(img, rng, difficulty):
    """Lighting (gamma, contrast, brightness, tint, shading), blur and noise of strength ``difficulty``."""
    u = rng.uniform
    radius = u(0.0, 0.25 + 0.9 * difficulty)
    if radius > 0.15:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    W, H = img.size
    gamma = math.exp(u(-1, 1) * (0.08 + 0.45 * difficulty))
    contrast = math.exp(u(-1, 1) * (0.08 + 0.35 * difficulty))
    bright = u(-1, 1) * (0.04 + 0.2 * difficulty)
    tint = np.exp(rng.uniform(-1, 1, 3) * (0.03 + 0.12 * difficulty))
    levels = np.power(np.arange(256) / 255.0, gamma)
    levels = (levels - 0.5) * contrast + 0.5 + bright
    lut = np.clip(np.outer(tint, levels) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    img = img.point(lut.reshape(-1).tolist())
    x = np.array(img, dtype=np.float32)
    if rng.random() < 0.3 + 0.5 * difficulty:  # shading across the frame
        ang = u(0, 2 * np.pi)
        ramp = np.cos(ang) * (np.arange(W, dtype=np.float32) / W - 0.5)[None, :] + \
            np.sin(ang) * (np.arange(H, dtype=np.float32) / H - 0.5)[:, None] + 0.5
        x *= (1.0 - u(0, 0.45 * difficulty) * np.clip(ramp, 0, 1))[:, :, None]
    sigma = u(0.004, 0.01 + 0.03 * difficulty) * 255.0
    x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(sigma)
    x += 0.5
    return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8), "RGB")


def render_view(landmark, rng, kind, long_range=(128, 160), clutter=None):
    """A photo of ``landmark`` (``None``: background only) with view parameters drawn for ``kind``.

    ``clutter``: ``None`` for the plain world; a ``Clutter`` for the cluttered world, whose views (never queries)
    draw two clutter landmarks behind the landmark, the landmark at ``CLUTTER_SHRINK`` times the zoom of ``kind``
    with its focus (the point the plain world centres) anywhere in ``CLUTTER_CENTRE`` of the frame, and the
    occluders of a difficulty raised by ``CLUTTER_OCCLUSION``. ``rng`` makes the same draws in both worlds up to
    the occluders.

    Returns ``(image, info)``; ``info`` holds the difficulty ``d``, the visible fraction of the landmark
    ``visible`` (inside the frame and not occluded, measured on sample points of its shape) and ``bbx``, the
    box of the landmark's in-frame part (x0, y0, x1, y1), or ``None`` when none of it is in the frame.
    """
    W, H = _frame_size(rng, long_range)
    img, horizon = render_background(rng, W, H)
    if clutter is not None:
        _paste_clutter(img, clutter, kind)
    if landmark is None:
        difficulty = rng.uniform(0.0, 0.8)
        mask = Image.new("L", (W, H), 0)
        _occluders(ImageDraw.Draw(img), ImageDraw.Draw(mask), rng, W, H, _occlusion(difficulty, clutter), [])
        return _photometric(img, rng, difficulty), {"d": float(difficulty), "visible": 0.0, "bbx": None}

    view = _view_params(rng, kind)
    difficulty = view["d"]
    if clutter is not None:
        view["zoom"] *= clutter.rng.uniform(*CLUTTER_SHRINK)
    cw, ch = landmark.image.size
    scale = min(W / cw, H / ch) * view["zoom"]
    rw, rh = max(2, int(round(cw * scale))), max(2, int(round(ch * scale)))
    src = np.array([(0, 0), (rw, 0), (rw, rh), (0, rh)], dtype=np.float64)
    # A local quad around the landmark's centre: yaw, pitch, rotation and corner jitter grow with the difficulty.
    u = rng.uniform
    local = src - np.array([rw / 2, rh / 2])
    yaw, pitch = u(-1, 1) * (0.02 + 0.3 * difficulty), u(-1, 1) * (0.02 + 0.18 * difficulty)
    local[:, 1] *= np.where(local[:, 0] < 0, 1 - yaw, 1 + yaw)
    local[:, 0] *= np.where(local[:, 1] < 0, 1 - pitch, 1 + pitch) * (1 - abs(yaw) / 2)
    ang = math.radians(u(-1, 1) * (1.5 + 9 * difficulty))
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    local = local @ rot.T
    local += rng.uniform(-1, 1, (4, 2)) * (0.01 + 0.07 * difficulty) * np.array([rw, rh])
    h_local = _homography(src, local)
    focus = _apply(h_local, [(view["focus"][0] * rw, view["focus"][1] * rh)])[0]
    if "frame_pos" in view:
        target = np.array([view["frame_pos"][0] * W, view["frame_pos"][1] * H])
    else:
        off = view["off"]
        target = np.array([W / 2 + u(-off, off) * W, H / 2 + u(-off, off) * H])
        if clutter is not None:  # drawn after the plain world's target, so that ``rng`` draws the same
            target = clutter.rng.uniform(*CLUTTER_CENTRE, 2) * np.array([W, H])
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
    _occluders(ImageDraw.Draw(img), ImageDraw.Draw(mask), rng, W, H, _occlusion(difficulty, clutter), targets)
    occluder_mask = np.asarray(mask)
    occluded = np.zeros(len(pts), dtype=bool)
    if len(in_pts):
        occluded[inside] = occluder_mask[in_pts[:, 1].astype(int), in_pts[:, 0].astype(int)] > 0
    visible = float(np.count_nonzero(inside & ~occluded)) / max(1, len(pts))
    bbx = None
    if len(in_pts):
        x0, y0 = np.maximum(in_pts.min(axis=0) - 2, 0)
        x1, y1 = np.minimum(in_pts.max(axis=0) + 2, [W, H])
        bbx = [round(float(x0), 1), round(float(y0), 1), round(float(x1), 1), round(float(y1), 1)]
    img = _photometric(img, rng, difficulty)
    return img, {"d": round(float(difficulty), 4), "visible": round(visible, 4), "bbx": bbx}

