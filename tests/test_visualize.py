"""Each figure command writes a non-empty PNG of the expected size, on any checkpoint and data set."""

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.revisitop import load_revisitop
from datasets.synthetic import generate
from networks import Token
from retrieval.figures import relevance
from utils.training_log import COLUMNS, write_metrics_row
from visualize import main
from weights import model_state

TINY = dict(num_train_landmarks=2, images_per_landmark=2, num_test_landmarks=2, queries_per_landmark=1,
            db_views_per_landmark=4, num_distractors=3, progress=False, workers=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("world"), seed=5, **TINY)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = Token(backbone="resnet18", dim=32, out_dim=16, heads=4, pretrained=False).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    torch.save(model_state(model), path)
    return path


def test_curves_figure_names_the_file_it_wrote(tmp_path, capsys):
    for epoch in (1, 2, 3):
        write_metrics_row(tmp_path / "metrics.csv", {column: epoch for column in COLUMNS})
    out = tmp_path / "figures" / "curves.png"
    main(["curves", "--metrics", str(tmp_path / "metrics.csv"), "--out", str(out)])
    assert capsys.readouterr().out == f"wrote {out}\n"
    with Image.open(out) as png:
        assert png.size == (1300, 380)


def test_retrievals_figure(world, tmp_path):
    ds = load_revisitop(world.root, "synthetic")
    rng = np.random.default_rng(0)
    features = tmp_path / "features"
    features.mkdir()
    np.save(features / "synthetic_db.npy", rng.standard_normal((len(ds.imlist), 8)).astype(np.float32))
    np.save(features / "synthetic_query.npy", rng.standard_normal((len(ds.qimlist), 8)).astype(np.float32))
    out = tmp_path / "top.png"
    main(["retrievals", "--data-root", str(world.root), "--dataset", "synthetic", "--features", str(features),
          "--queries", "0", "1", "--topk", "4", "--out", str(out), "--width", "800"])
    with Image.open(out) as png:
        assert png.size[0] == 800 and png.size[1] > 100
        assert np.asarray(png.convert("L")).std() > 5  # something was drawn


def test_relevance_of_database_images():
    gnd = {"easy": np.array([1]), "hard": np.array([4]), "junk": np.array([2])}
    assert [relevance(gnd, i) for i in range(5)] == ["negative", "positive", "junk", "negative", "positive"]


def test_attention_figure(world, checkpoint, tmp_path):
    ds = load_revisitop(world.root, "synthetic")
    out = tmp_path / "attention.png"
    main(["attention", "--checkpoint", str(checkpoint), "--images", *map(str, ds.db_paths()[:2]),
          "--imsize", "96", "--out", str(out), "--width", "900"])
    with Image.open(out) as png:
        assert png.size[0] == 900 and png.size[1] > 100


def test_missing_features_is_a_clear_error(world, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["retrievals", "--data-root", str(world.root), "--dataset", "synthetic", "--features",
              str(tmp_path), "--out", str(tmp_path / "x.png")])
    assert exit_info.value.code == 2
    assert "synthetic_db.npy not found" in capsys.readouterr().err


@pytest.mark.parametrize("text, expected", [("", "no rows to plot"), ("epoch,step\n1,2\n", "no column train_loss"),
                                            (",".join(COLUMNS) + "\n" + ",".join(["x"] * len(COLUMNS)) + "\n",
                                             "line 2: epoch 'x' is not a whole number")])
def test_curves_of_a_csv_without_the_columns_or_rows_is_a_clear_error(tmp_path, capsys, text, expected):
    metrics = tmp_path / "metrics.csv"
    metrics.write_text(text)
    with pytest.raises(SystemExit) as stop:
        main(["curves", "--metrics", str(metrics), "--out", str(tmp_path / "curves.png")])
    assert stop.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {metrics}") and expected in line
    assert not (tmp_path / "curves.png").exists()


@pytest.mark.parametrize("flags, expected", [(["--queries", "0", "99"], "--queries 99: synthetic has 2 queries"),
                                             (["--queries", "-1"], "--queries -1: expected"),
                                             (["--width", "0"], "--width 0: expected"),
                                             (["--topk", "0"], "--topk 0: expected")])
def test_retrievals_of_queries_that_do_not_exist_or_a_zero_width_is_a_clear_error(world, tmp_path, capsys, flags,
                                                                                   expected):
    ds = load_revisitop(world.root, "synthetic")
    features = tmp_path / "features"
    features.mkdir()
    np.save(features / "synthetic_db.npy", np.ones((len(ds.imlist), 8), np.float32))
    np.save(features / "synthetic_query.npy", np.ones((len(ds.qimlist), 8), np.float32))
    with pytest.raises(SystemExit) as stop:
        main(["retrievals", "--data-root", str(world.root), "--dataset", "synthetic", "--features", str(features),
              "--out", str(tmp_path / "top.png"), *flags])
    assert stop.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert expected in line, line
