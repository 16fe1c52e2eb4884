"""Image files the readers must take (``tests/faults.py`` indexes every fault): wrong extensions, every mode, images
smaller than the network's stride."""

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.gldv2 import LandmarkImages
from datasets.images import load_rgb, to_normalized_tensor
from datasets.revisitop import RevisitopImages
from networks import Token
from retrieval.extract import SCALES, multiscale_descriptor
from tests.faults import encoded

# ---------------------------------------------------------------- image files


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".jpg"), ("JPEG", ".png"), ("GIF", ".jpg"), ("WEBP", ".jpeg"),
                                        ("BMP", ".jpg")])
def test_wrong_extension_reads_by_content(tmp_path, fmt, suffix):
    img = Image.fromarray(np.arange(9 * 7 * 3, dtype=np.uint8).reshape(7, 9, 3))
    right, wrong = tmp_path / f"right.{fmt.lower()}", tmp_path / f"wrong{suffix}"
    right.write_bytes(encoded(img, fmt))
    wrong.write_bytes(right.read_bytes())
    assert np.array_equal(np.asarray(load_rgb(wrong)), np.asarray(load_rgb(right)))
    assert load_rgb(wrong).size == (9, 7)


def _mode_images():
    """name -> encoded bytes of one image in every mode the readers must turn into RGB."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (7, 9, 3), dtype=np.uint8))
    exif = rgb.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    return {
        "L.png": encoded(rgb.convert("L"), "PNG"),
        "LA.png": encoded(rgb.convert("LA"), "PNG"),
        "1.png": encoded(rgb.convert("1"), "PNG"),
        "P.png": encoded(rgb.convert("P"), "PNG"),
        "P-transparent.gif": encoded(rgb.convert("P"), "GIF", transparency=0),
        "CMYK.jpg": encoded(rgb.convert("CMYK"), "JPEG"),
        "RGBA.png": encoded(rgb.convert("RGBA"), "PNG"),
        "I16.png": encoded(Image.fromarray(rng.integers(0, 65536, (7, 9), dtype=np.uint16)), "PNG"),
        "F.tiff": encoded(Image.fromarray(rng.random((7, 9), dtype=np.float32) * 255), "TIFF"),
        "exif-rotated.jpg": encoded(rgb, "JPEG", exif=exif),
    }


def test_training_and_evaluation_read_the_same_pixels_in_every_mode(tmp_path):
    names = []
    for name, data in _mode_images().items():
        (tmp_path / "train" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "train" / name).write_bytes(data)
        names.append(name)
    training = LandmarkImages([(f"train/{name}", 0) for name in names], tmp_path, to_normalized_tensor())
    evaluation = RevisitopImages([tmp_path / "train" / name for name in names], imsize=10_000)  # no resizing
    for i, name in enumerate(names):
        train_tensor, _ = training[i]
        eval_tensor, _ = evaluation[i]
        assert train_tensor.shape == (3, 7, 9), name  # stored orientation: the EXIF rotation is not applied
        assert torch.equal(train_tensor, eval_tensor), name


# ---------------------------------------------------------------- images smaller than the stride


def test_images_smaller_than_the_stride_still_give_unit_descriptors(tmp_path):
    """An 8x5 image at 1/sqrt 2 is 5x3 pixels; ResNet's padded stride-2 convolutions and pooling map any input of
    at least 1x1 to at least 1x1 (ceil(n / 2) per stage), so the tokenizer sees one position and the descriptor is
    still defined. A 2x2 query crop goes the same way."""
    torch.manual_seed(0)
    model = Token(backbone="resnet18", dim=32, out_dim=32, heads=4, pretrained=False).eval()
    path = tmp_path / "tiny.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (5, 8, 3), dtype=np.uint8)).save(path)
    database, _ = RevisitopImages([path], imsize=64)[0]
    query, _ = RevisitopImages([path], imsize=64, bbxs=[(3.0, 1.0, 5.0, 3.0)])[0]
    assert database.shape == (3, 5, 8) and query.shape[-2:] == (2, 2)
    for image in (database, query):  # 2x2 at 1/sqrt 2 is 1x1
        descriptor = multiscale_descriptor(model, image[None], SCALES)
        assert descriptor.shape == (1, 32) and torch.isfinite(descriptor).all()
        torch.testing.assert_close(descriptor.norm(dim=-1), torch.ones(1))


def test_an_image_one_pixel_wide_still_gives_a_descriptor():
    torch.manual_seed(0)
    model = Token(backbone="resnet18", dim=32, out_dim=32, heads=4, pretrained=False).eval()
    descriptor = multiscale_descriptor(model, torch.zeros(1, 3, 1, 40), SCALES)
    assert torch.isfinite(descriptor).all()
    assert torch.allclose(descriptor.norm(dim=-1), torch.ones(1))
