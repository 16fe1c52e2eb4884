"""The fast training pipeline (datasets/transforms.py): torchvision's crop boxes and jitter factors for one seed,
the reduced-scale decode close to the full one, the batch jitter close to torchvision's, the --pipeline flag."""

import json

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as F2

from benchmarks import loader as loader_benchmark
from datasets.gldv2 import LandmarkImages
from datasets.transforms import (
    RATIO,
    FastTrainCrop,
    color_jitter,
    crop_box,
    device_jitter,
    jitter_params,
    normalize,
    shift_hue,
    to_unit,
    train_transform,
)
from training.engine import to_device
from training.options import get_args_parser
from utils.distributed import DistEnv


def write_jpeg(path, width, height, seed=0, quality=90):
    Image.fromarray(loader_benchmark.synthetic_jpeg(width, height, np.random.default_rng(seed))).save(
        path, "JPEG", quality=quality)
    return path


@pytest.mark.parametrize("size", [(1200, 900), (300, 1000), (2000, 300), (40, 40)])
def test_crop_box_draws_torchvisions_boxes_for_one_seed(size):
    image = Image.new("L", size)
    for seed in range(100):
        torch.manual_seed(seed)
        theirs = tuple(T.RandomResizedCrop.get_params(image, [0.2, 1.0], list(RATIO)))
        torch.manual_seed(seed)
        assert crop_box(*size, (0.2, 1.0)) == theirs
    generator = torch.Generator().manual_seed(0)  # a generator of its own leaves the global one alone
    state = torch.get_rng_state()
    crop_box(*size, (0.2, 1.0), generator=generator)
    assert torch.equal(state, torch.get_rng_state())


def test_crop_box_falls_back_to_the_centred_box_when_no_draw_fits():
    # an area share above 1 never fits: the largest centred box of aspect within RATIO
    assert crop_box(1000, 100, (1.5, 2.0)) == (0, (1000 - 133) // 2, 100, 133)
    assert crop_box(100, 1000, (1.5, 2.0)) == ((1000 - 133) // 2, 0, 133, 100)
    assert crop_box(120, 100, (1.5, 2.0)) == (0, 0, 100, 120)


def test_fast_crop_is_a_square_uint8_tensor_with_released_pixels_without_draft(tmp_path):
    path = write_jpeg(tmp_path / "a.jpg", 300, 200)
    out = FastTrainCrop(64, (0.2, 1.0))(path)
    assert out.shape == (3, 64, 64) and out.dtype == torch.uint8 and out.float().std() > 5
    released = train_transform(64, (0.2, 1.0), hflip=True, color_jitter=None)
    for seed in range(5):  # one seed: the same box and flip, the same pixels as the released crop
        torch.manual_seed(seed)
        fast = normalize(to_unit(FastTrainCrop(64, (0.2, 1.0), draft=False)(path)[None]))[0]
        torch.manual_seed(seed)
        expected = released(Image.open(path).convert("RGB"))
        diff = (fast - expected).abs() * 0.225 * 255  # grey levels: torch's uint8 filter rounds unlike PIL's
        assert diff.max() <= 2.5 and diff.mean() < 0.1
    jittered = train_transform(64, (0.2, 1.0), hflip=True)
    for seed in range(3):  # with the jitter in the loader: the same factors too
        torch.manual_seed(seed)
        crop = FastTrainCrop(64, (0.2, 1.0), draft=False, color_jitter=(0.4, 0.4, 0.2, 0.1))(path)
        fast = normalize(to_unit(crop[None]))
        torch.manual_seed(seed)
        assert (fast[0] - jittered(Image.open(path).convert("RGB"))).abs().mean() * 0.225 * 255 < 0.5
    plain = FastTrainCrop(64, None, hflip=False)
    assert torch.equal(plain(path), plain(path)) and plain(path).shape == (3, 64, 64)


def test_reduced_decode_of_a_large_crop_is_close_to_the_full_decode(tmp_path):
    path = write_jpeg(tmp_path / "big.jpg", 1024, 768)
    fast, full = FastTrainCrop(128, (0.9, 1.0), hflip=False), FastTrainCrop(128, (0.9, 1.0), hflip=False, draft=False)
    for seed in range(3):  # boxes of 700+ pixels for 128 outputs: decoded at 1/4 scale
        torch.manual_seed(seed)
        reduced = fast(path).float()
        torch.manual_seed(seed)
        exact = full(path).float()
        assert not torch.equal(reduced, exact)
        assert (reduced - exact).abs().mean() < 2.0  # grey levels, out of 255


def test_jitter_draws_torchvisions_factors_and_gives_nearly_its_pixels():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8))
    released = T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8)
    skipped = 0
    for seed in range(12):
        torch.manual_seed(seed)
        expected = F.pil_to_tensor(released(image)).float()
        torch.manual_seed(seed)
        applied, order, factors = jitter_params(1, (0.4, 0.4, 0.2, 0.1), 0.8)
        out = color_jitter(to_unit(F.pil_to_tensor(image)[None]), applied, order, factors)[0] * 255
        skipped += not applied[0]
        # the released jitter works in 8 bits (PIL's 8-bit HSV for the hue); ours in float
        assert (out - expected).abs().mean() < (1e-3 if not applied[0] else 3.0)
    assert 0 < skipped < 12
    x = torch.rand(3, 3, 8, 8)
    np.testing.assert_allclose(shift_hue(x, torch.full((3,), 0.07)), F2.adjust_hue(x, 0.07), atol=1e-5)


def test_pipeline_flag_selects_the_transform_and_the_device_step(tmp_path):
    defaults = get_args_parser().parse_args([])
    assert defaults.pipeline == "fast"
    assert get_args_parser().parse_args(["--pipeline", "released"]).pipeline == "released"
    write_jpeg(tmp_path / "b.jpg", 120, 90)
    fast_set = LandmarkImages([("b.jpg", 3)], tmp_path, FastTrainCrop(32, (0.2, 1.0)))
    old_set = LandmarkImages([("b.jpg", 3)], tmp_path, train_transform(32))
    (fast_image, label), (old_image, _) = fast_set[0], old_set[0]
    assert label == 3 and fast_image.dtype == torch.uint8 and old_image.dtype == torch.float32
    env = DistEnv(rank=0, world_size=1, device=torch.device("cpu"))
    assert device_jitter(defaults, env.device) is None  # on the CPU the loader jitters
    cuda = DistEnv(rank=0, world_size=1, device=torch.device("cuda"))
    assert device_jitter(defaults, cuda.device) is not None
    assert device_jitter(get_args_parser().parse_args(["--no-color-jitter"]), cuda.device) is None
    jitter = device_jitter(defaults, cuda.device)
    batch = to_device(fast_image[None], env, jitter)  # the device step, run here on the CPU
    assert batch.dtype == torch.float32 and batch.shape == (1, 3, 32, 32)
    assert torch.equal(to_device(old_image[None], env, jitter), old_image[None])  # normalised by the loader
    np.testing.assert_allclose(to_device(fast_image[None], env, None), normalize(to_unit(fast_image[None])))


def test_loader_benchmark_quick_writes_its_ratio_and_checks(tmp_path):
    out = tmp_path / "loader.json"
    loader_benchmark.main(["--quick", "--images", "3", "--data-dir", str(tmp_path / "images"), "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["images"] == 3 and len(report["image_sizes"]) == 3
    timing = report["training"]
    assert set(timing) == {"released", "fast, full decode", "fast", "device step (on this CPU)",
                           "fast, jitter in the loader"}
    for entry in timing.values():
        assert entry["s_per_image"] > 0 and entry["images_per_s"] == pytest.approx(1 / entry["s_per_image"])
    assert report["ratio"] == pytest.approx(timing["released"]["s_per_image"] / timing["fast"]["s_per_image"])
    assert report["ratio_jitter_in_loader"] == pytest.approx(timing["fast, jitter in the loader"]["speedup"])
    assert report["box_check"]["ok"] and report["pixel_check"]["ok"] and report["distribution_ok"]
    assert report["box_check"]["total_variation"]["area_share"] <= report["box_check"]["tolerance"]
    assert report["pixel_check"]["mean_abs_diff_levels"] <= loader_benchmark.PIXEL_TOL
    assert report["eval_resizing"]["same_sizes"]


def test_an_unreadable_file_is_skipped_by_the_fast_pipeline(tmp_path, caplog):
    good = write_jpeg(tmp_path / "good.jpg", 200, 150)
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:2000])  # a download cut short
    (tmp_path / "text.jpg").write_text("not an image")
    dataset = LandmarkImages([("good.jpg", 0), ("cut.jpg", 1), ("text.jpg", 2)], tmp_path, FastTrainCrop(32))
    assert dataset[0][0].shape == (3, 32, 32)
    with caplog.at_level("WARNING"):
        assert dataset[1] is None and dataset[2] is None
    assert "cut.jpg" in caplog.text and "text.jpg" in caplog.text
