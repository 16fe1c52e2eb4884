import numpy as np
import pytest
from PIL import Image

from datasets.images import ImageReadError, load_rgb


@pytest.mark.parametrize("mode,suffix", [("L", ".png"), ("P", ".png"), ("CMYK", ".jpg"), ("RGBA", ".png"),
                                         ("RGB", ".jpg")])
def test_every_mode_reads_as_rgb(tmp_path, mode, suffix):
    path = tmp_path / f"img{suffix}"
    Image.new("RGB", (12, 7), (200, 100, 50)).convert(mode).save(path)
    img = load_rgb(path)
    assert img.mode == "RGB" and img.size == (12, 7)


def test_16bit_is_scaled_to_8bit(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((5, 6), 65535, dtype=np.uint16)).save(path)
    assert load_rgb(path).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_not_applied_as_in_the_reference_pipelines(tmp_path):
    path = tmp_path / "rot.jpg"
    img = Image.new("RGB", (20, 10))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(path, exif=exif)
    assert load_rgb(path).size == (20, 10)


@pytest.mark.parametrize("payload", [b"", b"not an image at all", b"\xff\xd8\xff\xe0" + b"\x00" * 20])
def test_unreadable_image_names_the_file(tmp_path, payload):
    path = tmp_path / "bad.jpg"
    path.write_bytes(payload)
    with pytest.raises(ImageReadError, match="bad.jpg"):
        load_rgb(path)
