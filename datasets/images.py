"""One image reader and one tensor conversion for training and evaluation, so both see the same pixels."""

import struct
from contextlib import contextmanager

import numpy as np
import torchvision.transforms as T
from PIL import Image, UnidentifiedImageError

from utils.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageReadError(InputError):
    """An image file that cannot be decoded (empty, truncated, not an image)."""


def _to_8bit(img):
    """16/32-bit integer and float single-channel images become 8-bit 'L' by scaling their value range."""
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        return img
    arr = arr.astype(np.float64)
    top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
    return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")


_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError,
                  struct.error, EOFError, IndexError, ZeroDivisionError)


@contextmanager
def open_image(path):
    """``Image.open(path)``, not decoded yet (its size and format are read from the header); any decoding fault
    inside the ``with`` block, or a header claiming more than PIL's decompression-bomb limit of pixels
    (``Image.MAX_IMAGE_PIXELS`` x 2), raises ``ImageReadError`` naming the file. A corrupt size field would
    otherwise surface as ``DecompressionBombError``, which is not an ``OSError``."""
    try:
        with Image.open(path) as img:
            yield img
    except _DECODE_ERRORS as err:
        raise ImageReadError(f"{path}: cannot read image ({err.__class__.__name__}: {err})") from err


def to_rgb(img):
    """Decode an opened image fully as 8-bit RGB (the conversions of ``load_rgb``)."""
    img.load()
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        img = _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA")
    return img.convert("RGB")


def load_rgb(path):
    """Read ``path`` as an RGB PIL image in its stored orientation.

    Grayscale, palette, CMYK, RGBA (alpha dropped, not composited), 16-bit and float images all come out as
    8-bit RGB. EXIF orientation tags are not applied, as in the reference pipelines: the revisitop query
    boxes are in stored-pixel coordinates, and training reads images the same way. Anything PIL cannot
    decode fully raises ``ImageReadError`` naming the file (``open_image``).
    """
    with open_image(path) as img:
        return to_rgb(img)


def to_normalized_tensor():
    """PIL image -> float tensor 3 x H x W: torchvision's ToTensor, then the ImageNet mean/std."""
    return T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
