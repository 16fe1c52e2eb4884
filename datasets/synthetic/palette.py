"""Colours: HSV helpers and the palettes (wall, trim, window, roof, accent) that several landmarks share."""

import colorsys

import numpy as np

from datasets.synthetic.seeding import STREAM_PALETTE

NUM_PALETTES = 64  # several landmarks share each palette


def hsv(hue, saturation, value):
    """An RGB triple of 0..255 ints; the hue wraps around, saturation and value are clipped to [0, 1]."""
    red, green, blue = colorsys.hsv_to_rgb(hue % 1.0, min(max(saturation, 0.0), 1.0), min(max(value, 0.0), 1.0))
    return (int(round(red * 255)), int(round(green * 255)), int(round(blue * 255)))


def shade(rgb, factor):
    """``rgb`` with every channel scaled by ``factor``, clipped to 0..255."""
    return tuple(int(min(255, max(0, round(channel * factor)))) for channel in rgb)


def mix(first, second, t):
    """The colour a fraction ``t`` of the way from ``first`` to ``second``."""
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(first, second, strict=True))


def random_colour(rng):
    """Any hue, a moderate saturation and a brightness that is neither black nor white."""
    return hsv(rng.random(), rng.uniform(0, 0.8), rng.uniform(0.15, 0.95))


def palette(seed, palette_index):
    """Palette ``palette_index`` of the world ``seed``: wall, trim, window, roof and accent colours."""
    rng = np.random.default_rng([seed, STREAM_PALETTE, palette_index])
    u = rng.uniform
    family = int(rng.integers(6))
    if family == 0:  # sandstone / limestone
        wall = hsv(u(0.07, 0.14), u(0.12, 0.4), u(0.72, 0.95))
    elif family == 1:  # brick
        wall = hsv(u(-0.02, 0.05), u(0.45, 0.75), u(0.45, 0.72))
    elif family == 2:  # white / grey stone
        wall = hsv(u(0, 1), u(0.0, 0.08), u(0.55, 0.95))
    elif family == 3:  # pastel render
        wall = hsv(u(0, 1), u(0.2, 0.45), u(0.75, 0.95))
    elif family == 4:  # dark stone
        wall = hsv(u(0, 1), u(0.1, 0.45), u(0.28, 0.48))
    else:  # saturated paint
        wall = hsv(u(0, 1), u(0.5, 0.8), u(0.55, 0.85))
    wall_value = max(wall) / 255
    trim = hsv(u(0, 1), u(0, 0.25), u(0.85, 1.0)) if wall_value < 0.7 or rng.random() < 0.3 else \
        hsv(u(0, 1), u(0.1, 0.5), u(0.15, 0.4))
    if rng.random() < 0.7:
        window = hsv(u(0.5, 0.7), u(0.2, 0.6), u(0.08, 0.3))
    else:
        window = hsv(u(0.45, 0.65), u(0.2, 0.5), u(0.6, 0.85))
    roof = hsv(u(0, 1), u(0.3, 0.75), u(0.22, 0.62))
    accent = hsv(u(0, 1), u(0.55, 0.95), u(0.55, 0.95))
    return {"wall": wall, "trim": trim, "window": window, "roof": roof, "accent": accent}
