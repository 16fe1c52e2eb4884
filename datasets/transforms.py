"""Every augmentation of training and evaluation: the released one (``train_transform``, ``val_transform``), the
fast pipeline, and which of them train.py's flags choose (``train_loader_transform``, ``device_jitter``).

The fast pipeline is the released augmentation split so that the data-loading processes do only what needs the
file, and the per-pixel colour work runs on the batch, on the training device.

In the loader process (``FastTrainCrop``, called with the file path):

1. the random resized crop box is drawn from the image size in the JPEG header, before any pixel is decoded
   (``crop_box``: torchvision's ``RandomResizedCrop.get_params``, the same draws in the same order);
2. when the box is at least twice the output size, the JPEG is decoded at a reduced DCT scale (1/2, 1/4 or
   1/8, PIL's ``draft``) that keeps the box at least the output size; the box is mapped to the reduced image;
3. the box is cut out and resampled to ``imsize`` x ``imsize`` (bilinear with antialiasing, as torchvision does on
   PIL images, but by torch's uint8 kernel: ``resize_crop``; a box mapped into a reduced image, by PIL), flipped
   with probability 1/2, and returned as a uint8 tensor.

On the device (``on_device``: ``to_unit``, ``BatchColorJitter``, ``normalize``): the colour jitter of torchvision's
``ColorJitter`` applied with probability ``p``, each image with its own factors and order, drawn as torchvision
draws them (``jitter_params``), then the conversion to float and the ImageNet normalisation.
"""

import math

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image

from datasets.images import IMAGENET_MEAN, IMAGENET_STD, open_image, to_normalized_tensor, to_rgb

RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's default aspect-ratio range
GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
_TRIES = 10


def crop_box(width, height, scale, ratio=RATIO, generator=None):
    """``(top, left, box height, box width)`` of a random resized crop of a ``width`` x ``height`` image.

    The box covers a share of the area drawn uniformly from ``scale`` and has an aspect ratio drawn
    log-uniformly from ``ratio``; ``_TRIES`` draws that do not fit fall back to the largest centred box of
    aspect within ``ratio``. The random numbers are torch's (``generator``, default the global one), drawn in
    ``RandomResizedCrop.get_params``'s order, so that one seed gives torchvision's boxes.
    """
    area = width * height
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(_TRIES):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator).item())
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = torch.randint(0, height - h + 1, size=(1,), generator=generator).item()
            left = torch.randint(0, width - w + 1, size=(1,), generator=generator).item()
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def draft_request(width, height, box_w, box_h, imsize):
    """The size to ask PIL's JPEG ``draft`` for: the smallest that keeps a ``box_w`` x ``box_h`` box of the
    ``width`` x ``height`` image at least ``imsize`` pixels on each side. PIL then picks the largest DCT
    reduction (1, 2, 4 or 8) whose image is at least this size, so only boxes twice ``imsize`` or more are
    decoded reduced."""
    return math.ceil(width * imsize / box_w), math.ceil(height * imsize / box_h)


class FastTrainCrop:
    """File path -> uint8 tensor 3 x ``imsize`` x ``imsize``: the crop and flip of ``train_transform``, the
    crop sized from the JPEG header and decoded at a reduced scale where that keeps the output's detail.

    ``crop_scale`` None: the short side resized to ``imsize`` and a centre crop, as ``train_transform``.
    ``color_jitter`` (strengths, with probability ``jitter_p``): the released colour jitter, here, after the flip
    (for training on the CPU, where PIL's 8-bit jitter in the loader processes costs less than the batch jitter);
    by default it is left to the device (``BatchColorJitter``).
    ``draft`` False decodes every image fully (for the same seed, ``train_transform``'s crop within a fraction
    of a grey level). A box in a reduced image falls between its pixels: PIL resamples it. An unreadable file
    raises ``ImageReadError``.
    """

    reads_path = True  # LandmarkImages calls it with the file path, not a decoded image

    def __init__(self, imsize=512, crop_scale=(0.2, 1.0), hflip=True, draft=True, color_jitter=None, jitter_p=0.8):
        self.imsize = imsize
        self.crop_scale = tuple(crop_scale) if crop_scale else None
        self.hflip = hflip
        self.draft = draft
        self.resize = None if crop_scale else T.Compose([T.Resize(imsize), T.CenterCrop(imsize)])
        self.jitter = T.RandomApply([T.ColorJitter(*color_jitter)], p=jitter_p) if color_jitter and jitter_p else None

    def __call__(self, path):
        with open_image(path) as img:
            if self.crop_scale is None:
                out = F.pil_to_tensor(self.resize(to_rgb(img)))
            else:
                out = self._crop(img)
        if self.hflip and torch.rand(1) < 0.5:
            out = out.flip(-1)
        if self.jitter is not None:  # the released jitter on the crop (PIL's, 8-bit)
            out = F.pil_to_tensor(self.jitter(Image.fromarray(np.ascontiguousarray(out.permute(1, 2, 0).numpy()))))
        return out

    def _crop(self, img):
        width, height = img.size
        top, left, h, w = crop_box(width, height, self.crop_scale)
        if self.draft and img.format == "JPEG":
            img.draft(None, draft_request(width, height, w, h, self.imsize))
        rgb = to_rgb(img)
        if rgb.size == (width, height):
            return resize_crop(np.array(rgb.crop((left, top, left + w, top + h))), self.imsize)
        sx, sy = rgb.width / width, rgb.height / height  # decoded reduced: the box falls between pixels
        box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
        return F.pil_to_tensor(rgb.resize((self.imsize, self.imsize), Image.Resampling.BILINEAR, box=box))


def resize_crop(pixels, imsize):
    """An H x W x 3 uint8 array resampled to a 3 x ``imsize`` x ``imsize`` uint8 tensor: bilinear with
    antialiasing (PIL's filter, within a fraction of a grey level), by torch's uint8 kernel for channels-last
    images, faster than PIL's (docs/benchmarks.md)."""
    crop = torch.from_numpy(pixels).permute(2, 0, 1)[None]  # channels-last, as decoded
    out = torch.nn.functional.interpolate(crop, size=(imsize, imsize), mode="bilinear", antialias=True,
                                          align_corners=False)
    return out[0]


# ---------------------------------------------------------------- on the device


def jitter_params(n, strengths, p, generator=None):
    """Per image: whether the jitter applies, the order of its 4 steps and their factors, as
    ``RandomApply([ColorJitter(*strengths)], p)`` draws them (one uniform for ``p``, then ``randperm(4)``, then
    brightness, contrast, saturation, hue), image after image, from torch's ``generator`` (default global).

    Returns ``(applied bool (n,), order int64 (n, 4), factors float32 (n, 4))``; a step of strength 0 keeps
    factor 1 (hue 0).
    """
    jitter = T.ColorJitter(*strengths)
    ranges = (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue)
    applied, order = torch.zeros(n, dtype=torch.bool), torch.zeros(n, 4, dtype=torch.int64)
    factors = torch.tensor([[1.0, 1.0, 1.0, 0.0]]).repeat(n, 1)
    for i in range(n):
        if p < torch.rand(1, generator=generator):
            order[i] = torch.arange(4)
            continue
        applied[i] = True
        order[i] = torch.randperm(4, generator=generator)
        for k, bounds in enumerate(ranges):
            if bounds is not None:
                factors[i, k] = torch.empty(1).uniform_(bounds[0], bounds[1], generator=generator).item()
    return applied, order, factors


def _gray(images):
    weights = torch.tensor(GRAY, dtype=images.dtype, device=images.device)
    return torch.einsum("bchw,c->bhw", images, weights)[:, None]


def _blend(images, other, factor):
    return (factor * images + (1 - factor) * other).clamp_(0, 1)


def shift_hue(images, shift):
    """Rotate the hue of float RGB images in [0, 1] (B x 3 x H x W) by ``shift`` (B,) turns, keeping each pixel's
    value (max) and chroma (max - min): the HSV hue shift of torchvision's ``adjust_hue``."""
    top, channel = images.max(dim=1, keepdim=True)  # ties give the same hue whichever channel is taken
    chroma = top - images.min(dim=1, keepdim=True).values
    # hue in sixths of a turn: (g - b) / chroma off red, 2 + (b - r) / chroma off green, 4 + (r - g) / chroma off blue
    across = (images.roll(-1, dims=1) - images.roll(-2, dims=1)).gather(1, channel)
    hue = across.div_(torch.where(chroma > 0, chroma, 1.0)).add_(2 * channel)
    hue.add_(6 * shift.to(images)[:, None, None, None])
    # back to RGB: channel n of (R, G, B) = value - chroma * clamp(min(k, 4 - k), 0, 1), k = (5, 3, 1)[n] + hue mod 6
    k = (hue + torch.tensor([5.0, 3.0, 1.0], device=images.device)[None, :, None, None]).remainder_(6)
    return top - chroma * torch.minimum(k, 4 - k).clamp_(0, 1)


def color_jitter(images, applied, order, factors):
    """torchvision's ``ColorJitter`` on float RGB images in [0, 1] (B x 3 x H x W), each image with its own
    ``order`` of steps and ``factors`` (``jitter_params``, on the CPU), clamped to [0, 1] after every step;
    images not ``applied`` come out unchanged. Each step runs once on the images that take it at that point."""
    images = images.clone()
    for position in range(4):
        for step in range(4):
            chosen = torch.nonzero(applied & (order[:, position] == step)).flatten()
            if not len(chosen):
                continue
            factor = factors[chosen, step].to(images)
            index = chosen.to(images.device)
            images[index] = _STEPS[step](images[index], factor)
    return images


def _brightness(images, factor):
    return (images * factor[:, None, None, None]).clamp_(0, 1)


def _contrast(images, factor):
    return _blend(images, _gray(images).mean(dim=(1, 2, 3), keepdim=True), factor[:, None, None, None])


def _saturation(images, factor):
    return _blend(images, _gray(images), factor[:, None, None, None])


_STEPS = (_brightness, _contrast, _saturation, shift_hue)  # ColorJitter's order of factors


class BatchColorJitter:
    """``RandomApply([ColorJitter(*strengths)], p)`` on a batch of float images in [0, 1], on their device; the
    factors are drawn on the CPU from torch's global generator (``jitter_params``)."""

    def __init__(self, strengths=(0.4, 0.4, 0.2, 0.1), p=0.8):
        self.strengths, self.p = tuple(strengths), p

    def __call__(self, images):
        return color_jitter(images, *jitter_params(len(images), self.strengths, self.p))


def to_unit(images):
    """uint8 images -> float32 in [0, 1] (what ``ToTensor`` gives), on their device."""
    return images.float().div_(255)


def normalize(images):
    """Float images in [0, 1] (B x 3 x H x W, any device) minus the ImageNet mean, over its std (``Normalize``)."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=images.device)[:, None, None]
    return (images - mean) / std


def train_transform(imsize=512, crop_scale=(0.2, 1.0), hflip=True, color_jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8):
    """The released training augmentation; each step is switched off by None/False.

    Without ``crop_scale`` the image is resized (short side ``imsize``) and centre-cropped instead, so
    batches keep one size. ``color_jitter`` = (brightness, contrast, saturation, hue), applied with
    probability ``jitter_p``.
    """
    if crop_scale:
        steps = [T.RandomResizedCrop(imsize, scale=tuple(crop_scale))]
    else:
        steps = [T.Resize(imsize), T.CenterCrop(imsize)]
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    if color_jitter and jitter_p:
        steps.append(T.RandomApply([T.ColorJitter(*color_jitter)], p=jitter_p))
    return T.Compose(steps + [to_normalized_tensor()])


def val_transform(imsize=512):
    """Resize the short side to round(imsize * 8/7) (bicubic, as released), centre-crop ``imsize``, normalise."""
    resize = T.Resize(round(imsize * 8 / 7), interpolation=T.InterpolationMode.BICUBIC)
    return T.Compose([resize, T.CenterCrop(imsize)] + [to_normalized_tensor()])


def on_device(images, augment=None):
    """A batch on its training device: uint8 (``--pipeline fast``) -> float in [0, 1], ``augment`` (the colour
    jitter, or None), ImageNet-normalised; a float batch (``--pipeline released``, val) arrives normalised."""
    if images.dtype != torch.uint8:
        return images
    images = to_unit(images)
    if augment is not None:
        images = augment(images)
    return normalize(images)


def jitter_on_device(device):
    """Whether the fast pipeline leaves the colour jitter to the device: on a GPU. On the CPU, PIL's 8-bit jitter
    in the loader processes costs less than the batch jitter (docs/benchmarks.md)."""
    return device.type == "cuda"


def device_jitter(args, device):
    """The colour jitter that train.py's flags ``args`` leave to ``device`` (fast pipeline), or None (off, or done
    in the loader)."""
    if not (args.jitter and args.jitter_p and jitter_on_device(device)):
        return None
    return BatchColorJitter(args.color_jitter, args.jitter_p)


def train_loader_transform(args, device):
    """The transform of the training images in the loader for train.py's flags ``args`` on ``device``: the fast
    pipeline's ``FastTrainCrop`` (the jitter too unless ``device`` does it), or the released ``train_transform``."""
    crop_scale = args.crop_scale if args.random_crop else None
    jitter = args.color_jitter if args.jitter else None
    if args.pipeline == "fast":
        return FastTrainCrop(args.imsize, crop_scale, args.hflip,
                             color_jitter=None if jitter_on_device(device) else jitter, jitter_p=args.jitter_p)
    return train_transform(args.imsize, crop_scale, args.hflip, jitter, args.jitter_p)
