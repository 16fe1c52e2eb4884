"""Issue #7: what every kind of bad input or fault does. One row of the issue's table per section below.

Rows already tested elsewhere are only listed here, with the test that covers them:

* missing data root / dataset folder / gnd pkl / jpg folder: ``test_revisitop.test_missing_paths_are_named``;
  missing R1M list: ``test_revisitop.test_r1m_image_list``; missing GLDv2 root or CSV:
  ``test_gldv2.test_missing_root_or_csv_names_the_path_and_layout``; through ``test.py`` in a subprocess:
  ``test_test.test_subprocess_exit_codes_and_help``; ``train.py`` in-process: ``test_train.test_bad_data_root_exits_2_
  with_one_line``. Added here: ``train.py`` and ``test.py`` as subprocesses on a missing CSV / gnd pickle.
* malformed gnd (missing keys, index out of range, bad box): ``test_revisitop.test_malformed_gnd_names_query_and_
  problem``, ``test_gnd_without_one_entry_per_query``; box outside the image:
  ``test_revisitop.test_images_dataset_raises_on_unreadable_image_and_bad_box`` and
  ``test_resize_query_box_beyond_the_edge_is_padded_black_and_outside_is_refused`` (the box is checked against the
  image when the query is read, since the pickle does not hold image sizes). Added: the fuzz test below.
* code-running pickles: ``test_safe_pickle.test_code_running_pickle_is_refused``,
  ``test_revisitop.test_unsafe_pickle_is_refused``, ``test_networks.test_a_checkpoint_that_would_run_code_is_refused``.
  Added: a ``--resume`` checkpoint and a GLDv2 split cache that would run code.
* checkpoint truncated / of another model: ``test_networks.test_truncated_checkpoint_and_missing_file``,
  ``test_a_checkpoint_that_does_not_fit_names_the_key``; another training setting on resume:
  ``test_train.test_resume_follows_this_runs_epochs_and_lr_and_refuses_other_changes``. Added: another depth, a
  non-Token model, a truncated ``--resume`` checkpoint.
* zero-byte / truncated / non-image files: ``test_images.test_unreadable_image_names_the_file``; evaluation stops
  naming the file: ``test_test.test_unreadable_image_in_a_loader_worker_is_one_line``,
  ``test_revisitop.test_images_dataset_raises_on_unreadable_image_and_bad_box``; training skips and counts:
  ``test_train.test_unreadable_images_are_skipped_and_counted``, ``test_gldv2.test_dataset_and_collate_skip_a_
  corrupt_image``. Added: wrong extensions.
* image modes: ``test_images.test_every_mode_reads_as_rgb``, ``test_16bit_is_scaled_to_8bit``,
  ``test_exif_orientation_is_not_applied_as_in_the_reference_pipelines``. Added: training's and evaluation's
  readers give the same pixels for every mode.
* images smaller than the stride: added (no existing test).
* CSV with missing columns, duplicate ids, non-numeric labels: ``test_gldv2.test_bad_csv_names_the_file_and_row``
  (``InputError`` -> exit code 2 through ``fail_cleanly``).
* SIGKILL during training: in-process kills after a save in ``test_train.test_resumed_run_ends_where_the_
  uninterrupted_run_ends``; a write interrupted midway in ``test_train.test_an_interrupted_checkpoint_write_leaves_
  the_previous_file``. Added: a real SIGKILL of ``train.py`` and a leftover temporary file.
* one DDP rank dies: added (torchrun's agent stops the others).
* disk full: added (features, shards, checkpoints; through train.py).
* NaN / inf loss: ``test_train.test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint``.

Issue #15 (the defects an outside probe found), each with the real fault:

* 1, a full disk inside ``torch.save`` (a 10 MiB tmpfs as train.py's --output-dir):
  ``test_a_real_full_disk_inside_torch_save_is_one_line_and_leaves_no_temporary_file``; in-process:
  ``test_disk_full_while_saving_a_checkpoint``.
* 2, read-only output (a read-only bind mount; the writer's clean-up, test.py, visualize curves):
  ``test_a_read_only_folder_is_named_before_any_work``; a file where a folder is expected (train.py, test.py,
  demo.py, the synthetic world): ``test_a_file_where_a_folder_is_expected_is_named_by_its_flag``.
* 3, NaN or infinite weights: ``test_baselines.test_nan_or_infinite_weights_are_refused_naming_the_tensor``.
* 4, images rewritten in place: ``test_test.test_images_rewritten_in_place_are_extracted_again``,
  ``test_extract.test_feature_key_follows_each_image_file``.
* 5, 0-byte feature files: ``test_extract.test_zero_byte_feature_files_are_extracted_again``.
* 6, downloads: ``test_download_faults`` (a corrupt archive with one name twice, a full disk on a real tmpfs during
  an extraction, a download and a released model's download, a member above the size cap, a URL that is no address).
* 7 and 18, flags out of range: ``test_bad_training_flags_exit_2_naming_the_flag_before_any_work``;
  demo.py: ``test_demo.test_bad_training_settings_stop_the_demo_before_any_work``.
* 7, ``--scales nan`` / ``inf`` / ``1e6``: ``test_test.test_bad_input_is_one_line_and_exit_code_2``.
* 8, --resume on data with another class count:
  ``test_train.test_resume_on_data_with_another_number_of_landmarks_names_both_counts``.
* 9, a box far larger than its image: ``test_revisitop.test_a_box_far_larger_than_its_image_is_refused_before_
  cropping``.
* 10, nothing to evaluate, undefined mAP: ``test_test.test_nothing_to_evaluate_is_exit_code_2``,
  ``test_an_undefined_map_is_null_in_results_json_and_n_a_on_screen``.
* 11, every training image unreadable:
  ``test_every_training_image_unreadable_stops_after_the_first_epoch_without_a_checkpoint``; an empty val split:
  ``test_train.test_an_empty_val_split_is_said_once_its_metrics_are_nan_and_no_best_is_kept``.
* 12, checkpoints that cannot be used (unknown setting, ``heads 7``, ``resnet999``, integer keys, a ``.npy``):
  ``test_baselines.test_a_model_config_that_cannot_be_used_is_refused_naming_the_file``,
  ``test_heads_that_do_not_divide_dim_are_refused``,
  ``test_integer_keys_numpy_files_and_other_files_are_told_what_they_are``.
* 13, Ctrl-C during extraction with loader workers: ``test_test.test_ctrl_c_during_extraction_with_loader_workers_
  stops_the_run`` (real SIGINTs to real test.py runs), ``test_interrupts``.
* 14, a killed writer's temporary file (a real SIGKILL):
  ``test_a_killed_writers_temporary_file_is_removed_by_the_next_write_a_live_ones_is_kept``.
* 15, a mid-epoch resume's train_loss: ``test_train.test_resumed_run_ends_where_the_uninterrupted_run_ends``.
* 16, visualize: ``test_visualize.test_curves_figure_names_the_file_it_wrote``,
  ``test_curves_of_a_csv_without_the_columns_or_rows_is_a_clear_error``,
  ``test_retrievals_of_queries_that_do_not_exist_or_a_zero_width_is_a_clear_error``.
* 17, image list entries outside ``jpg/``: ``test_revisitop.test_list_entries_outside_jpg_are_refused``,
  ``test_r1m_image_list``.
"""

import errno
import io
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import demo
import retrieval.features as features_module
import visualize
from datasets.gldv2 import GLDV2_DIR, LandmarkImages, load_gldv2
from datasets.images import ImageReadError, load_rgb, to_normalized_tensor
from datasets.revisitop import RevisitopImages, load_revisitop
from datasets.synthetic import cli as synthetic_cli
from networks import Token
from retrieval.extract import SCALES, multiscale_descriptor
from retrieval.features import FeatureStore
from tests.conftest import ROOT
from tests.test_train import TINY, run, small_set
from training.checkpointer import load_training_state
from utils.atomic import WriteError, atomic_write, temporary_path
from utils.distributed import DistEnv
from utils.errors import InputError
from utils.safe_pickle import UnsafePickleError
from utils.training_log import COLUMNS, write_metrics_row
from weights import load_token, save_checkpoint

torch.set_num_threads(1)
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
CPU = DistEnv(0, 1, torch.device("cpu"))


def one_error_line(stderr):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture(scope="module")
def gldv2(tmp_path_factory):
    """A data root in the authors' layout: the small set in DIR/Google-landmark-v2, as train.py's --data-root."""
    root = tmp_path_factory.mktemp("data")
    small_set(root / GLDV2_DIR)
    return root


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never be printed",))


# ---------------------------------------------------------------- missing paths, through the real CLIs


def test_train_cli_without_the_csv_exits_2_naming_path_and_layout(tmp_path):
    done = subprocess.run([sys.executable, "train.py", *TINY, "--data-root", str(tmp_path), "--output-dir",
                           str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=SUBPROCESS_ENV)
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert str(tmp_path / "train_clean.csv") in line and "train/<id[0]>/<id[1]>/<id[2]>/<id>.jpg" in line


def test_test_cli_without_the_gnd_pickle_exits_2_naming_path_and_layout(tmp_path):
    (tmp_path / "test" / "roxford5k" / "jpg").mkdir(parents=True)
    done = subprocess.run([sys.executable, "test.py", "--checkpoint", "none.pth", "--data-root", str(tmp_path),
                           "--datasets", "roxford5k", "--device", "cpu"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=SUBPROCESS_ENV)
    assert done.returncode == 2 and done.stdout == ""
    line = one_error_line(done.stderr)
    assert str(tmp_path / "test" / "roxford5k" / "gnd_roxford5k.pkl") in line and "<data_root>/test/<name>" in line


# ---------------------------------------------------------------- code-running pickles and checkpoints


def test_resume_checkpoint_and_split_cache_that_would_run_code_are_refused(gldv2, tmp_path, capsys):
    evil = tmp_path / "last.pth"
    torch.save({"step": 1, "payload": _RunsCode()}, evil)
    with pytest.raises(InputError, match="last.pth: refused to load"):
        load_training_state(evil)

    cache = tmp_path / "cache"
    load_gldv2(gldv2, cache_dir=cache)
    with open(cache / "GLDv2-clean-train-split.pkl", "wb") as f:
        pickle.dump({"settings": _RunsCode()}, f)
    with pytest.raises(UnsafePickleError, match="GLDv2-clean-train-split.pkl: refuses to load builtins.print"):
        load_gldv2(gldv2, cache_dir=cache)
    assert "never" not in capsys.readouterr().out


# ---------------------------------------------------------------- checkpoints that do not fit


def test_checkpoint_of_another_depth_or_model_or_truncated_names_what_does_not_fit(tmp_path):
    torch.manual_seed(0)
    model = Token(backbone="resnet18", dim=32, out_dim=32, heads=4, pretrained=False)
    other_depth = tmp_path / "depth.pth"
    torch.save({"state_dict": model.state_dict(), "model_config": {**model.config.to_dict(), "backbone": "resnet34"}},
               other_depth)
    with pytest.raises(InputError, match=r"depth.pth does not fit Token\(resnet34\): missing key 'backbone.layer1.2"):
        load_token(other_depth)

    resnet = tmp_path / "resnet.pth"
    torch.save(model.backbone.state_dict(), resnet)  # a plain CNN, not a Token
    with pytest.raises(InputError, match="resnet.pth: not a Token checkpoint, no key 'input_proj.0.weight'"):
        load_token(resnet)

    full = tmp_path / "full.pth"
    save_checkpoint({"step": 3, "state_dict": model.state_dict()}, full)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(InputError, match="cut.pth: not a readable checkpoint, truncated"):
        load_training_state(cut)
    with pytest.raises(InputError, match="full.pth: not a train.py checkpoint to resume from, no steps_per_epoch"):
        load_training_state(full)


# ---------------------------------------------------------------- image files


def _encoded(img, fmt, **kwargs):
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".jpg"), ("JPEG", ".png"), ("GIF", ".jpg"), ("WEBP", ".jpeg"),
                                        ("BMP", ".jpg")])
def test_wrong_extension_reads_by_content(tmp_path, fmt, suffix):
    img = Image.fromarray(np.arange(9 * 7 * 3, dtype=np.uint8).reshape(7, 9, 3))
    right, wrong = tmp_path / f"right.{fmt.lower()}", tmp_path / f"wrong{suffix}"
    right.write_bytes(_encoded(img, fmt))
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
        "L.png": _encoded(rgb.convert("L"), "PNG"),
        "LA.png": _encoded(rgb.convert("LA"), "PNG"),
        "1.png": _encoded(rgb.convert("1"), "PNG"),
        "P.png": _encoded(rgb.convert("P"), "PNG"),
        "P-transparent.gif": _encoded(rgb.convert("P"), "GIF", transparency=0),
        "CMYK.jpg": _encoded(rgb.convert("CMYK"), "JPEG"),
        "RGBA.png": _encoded(rgb.convert("RGBA"), "PNG"),
        "I16.png": _encoded(Image.fromarray(rng.integers(0, 65536, (7, 9), dtype=np.uint16)), "PNG"),
        "F.tiff": _encoded(Image.fromarray(rng.random((7, 9), dtype=np.float32) * 255), "TIFF"),
        "exif-rotated.jpg": _encoded(rgb, "JPEG", exif=exif),
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


# ---------------------------------------------------------------- SIGKILL during training


def _wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_sigkilled_training_resumes_auto_from_the_last_complete_checkpoint(gldv2, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "train.py", *TINY, "--data-root", str(gldv2), "--output-dir", str(out),
               "--epochs", "2", "--save-every", "1", "--resume", "auto"]
    with open(tmp_path / "first.log", "wb") as log:
        first = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=SUBPROCESS_ENV)
        try:
            _wait_for(lambda: (out / "last.pth").exists() or first.poll() is not None, 120, "the first checkpoint")
            first.send_signal(signal.SIGKILL)
        finally:
            first.kill()
            first.wait()
    assert first.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    killed_at = load_training_state(out / "last.pth")["step"]  # complete, whenever the kill landed
    # A kill during the next save would have left its temporary file: the resume must not take it for a checkpoint.
    (out / ".last.pth.tmp").write_bytes(b"PK\x03\x04 half a checkpoint")

    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=SUBPROCESS_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming {out / 'last.pth'} at step {killed_at}" in done.stderr
    assert load_training_state(out / "last.pth")["step"] == 12  # 2 epochs of 6 steps


# ---------------------------------------------------------------- one DDP rank dies


def _children(pid):
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(child) for child in found.stdout.split()]


def _rank(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    return int(env.get(b"RANK", -1))


def test_one_dead_rank_stops_the_others_within_a_minute(gldv2, tmp_path):
    """torchrun's elastic agent watches its workers: when one exits non-zero (here SIGKILL) it stops the others
    and exits non-zero itself (no --max-restarts). Without torchrun (not tested here) nothing watches the ranks: gloo
    collectives normally fail when the peer's connection closes, NCCL ones wait for the process group's timeout
    (PyTorch's default: 10 minutes for NCCL, 30 for gloo), which is left as is because rank 0 may legitimately
    keep the others at a barrier for minutes (building the GLDv2 split cache)."""
    log_path = tmp_path / "ddp.log"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py",
               *TINY, "--data-root", str(gldv2), "--output-dir", str(tmp_path / "run"), "--epochs", "100"]
    with open(log_path, "wb") as log:
        agent = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=SUBPROCESS_ENV)
        try:
            _wait_for(lambda: "steps an epoch" in log_path.read_text() or agent.poll() is not None, 180,
                      "training to start")
            assert agent.poll() is None, log_path.read_text()[-3000:]
            workers = {_rank(pid): pid for pid in _children(agent.pid)}
            assert sorted(workers) == [0, 1], workers
            os.kill(workers[1], signal.SIGKILL)
            killed = time.monotonic()
            code = agent.wait(timeout=60)
            assert time.monotonic() - killed < 60
        finally:
            agent.kill()
            agent.wait()
    assert code != 0
    assert _state(workers[0]) in ("gone", "Z")  # rank 0 is gone too


def _state(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


# ---------------------------------------------------------------- disk full


def _half_then_enospc(real_write, only=None):
    """A stand-in for ``np.save`` (``real_write(file, obj)``) that writes half the bytes to the file and then fails
    as a full disk does; with ``only``, just for the temporary files of the file called so."""

    def write(f, obj, *args, **kwargs):
        buffer = io.BytesIO()
        real_write(buffer, obj, *args, **kwargs)
        if only is not None and f".{only}." not in Path(f.name).name:
            return f.write(buffer.getvalue())
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return write


def _temporary_files(folder):
    return [path for path in Path(folder).rglob("*") if path.name.endswith(".tmp")]


def _block(start, stop, offset):
    return np.arange(start, stop, dtype=np.float32)[:, None] + np.full((1, 3), offset)


def _rows(offset):
    """A fake extractor (``FeatureStore.load``'s ``compute``): rows ``i + offset`` for each span."""
    return lambda spans, progress: (_block(start, stop, offset) for start, stop in spans)


def test_disk_full_while_writing_a_feature_shard(tmp_path, monkeypatch):
    store = FeatureStore(tmp_path, CPU)
    first, _ = store.load("set_db", {"k": 1}, 5, 3, _rows(0.0), shard_size=2)
    monkeypatch.setattr(features_module.np, "save", _half_then_enospc(np.save))
    with pytest.raises(WriteError) as error:  # the first shard of another key
        store.load("set_db", {"k": 2}, 5, 3, _rows(1.0), shard_size=2)
    monkeypatch.undo()
    assert error.value.errno == errno.ENOSPC and isinstance(error.value, OSError)
    assert isinstance(error.value, InputError)  # test.py: one line "error: ...", exit code 2
    assert f"cannot write {tmp_path / 'set_db' / 'shard_00000.npy'} (No space left on device)" in str(error.value)
    assert _temporary_files(tmp_path) == [] and not (tmp_path / "set_db" / "shard_00000.npy").exists()
    again, _ = store.load("set_db", {"k": 1}, 5, 3, _rows(9.0), shard_size=2)
    np.testing.assert_array_equal(again, first)  # the complete set of the old key is intact and reused


def test_disk_full_while_writing_the_merged_features(tmp_path, monkeypatch, capsys):
    store = FeatureStore(tmp_path, CPU)
    store.load("set_db", {"k": 1}, 5, 3, _rows(0.0), shard_size=2)
    monkeypatch.setattr(features_module.np, "save", _half_then_enospc(np.save, only="set_db.npy"))
    with pytest.raises(WriteError, match=f"cannot write {tmp_path / 'set_db.npy'} \\(No space left on device\\)"):
        store.load("set_db", {"k": 2}, 5, 3, _rows(1.0), shard_size=2)
    monkeypatch.undo()
    assert _temporary_files(tmp_path) == []
    assert not (tmp_path / "set_db.json").exists()  # no sidecar: neither key's set is reused from set_db.npy
    np.testing.assert_array_equal(np.load(tmp_path / "set_db.npy"), _block(0, 5, 0.0))  # old file intact
    rerun, _ = store.load("set_db", {"k": 2}, 5, 3, lambda *a: pytest.fail("recomputed a shard"), shard_size=2)
    np.testing.assert_array_equal(rerun, _block(0, 5, 1.0))  # the rerun merges the shards already written
    assert "3 of 3 shards found" in capsys.readouterr().out


def test_disk_full_while_saving_a_checkpoint(gldv2, tmp_path, monkeypatch, capsys):
    path = tmp_path / "last.pth"
    save_checkpoint({"step": 1}, path)
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: _half_then_enospc(lambda f, o: real_save(o, f))(f, obj))
    with pytest.raises(WriteError, match=f"cannot write {path} \\(No space left on device\\)") as error:
        save_checkpoint({"step": 2}, path)
    assert error.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == [path] and torch.load(path, weights_only=True)["step"] == 1

    with pytest.raises(SystemExit) as stop:  # train.py reports it in one line, exit code 2
        run(gldv2, tmp_path / "run", "--epochs", "1")
    assert stop.value.code == 2
    line = one_error_line(capsys.readouterr().err.splitlines()[-1])
    assert f"cannot write {tmp_path / 'run' / 'last.pth'} (No space left on device)" in line
    assert [p.name for p in (tmp_path / "run").iterdir() if "pth" in p.name] == []


# ---------------------------------------------------------------- fuzz


def _mutations(rng, seeds, count):
    """``count`` byte strings: random bytes, and seeds with a few bytes changed and/or cut short."""
    for i in range(count):
        if i % 3 == 0:
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
            continue
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        yield bytes(data)


@pytest.mark.filterwarnings("ignore")
def test_fuzzed_images_raise_only_image_read_errors(tmp_path):
    rng = random.Random(0)
    seeds = [_encoded(Image.new(mode, (9, 7), 90), fmt) for fmt, mode in
             [("PNG", "RGB"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("TIFF", "RGB"), ("WEBP", "RGB"),
              ("PNG", "I;16"), ("TIFF", "F"), ("PNG", "RGBA")]]
    read = failed = 0
    for i, data in enumerate(_mutations(rng, seeds, 300)):
        path = tmp_path / f"fuzz_{i}.jpg"
        path.write_bytes(data)
        try:
            assert load_rgb(path).mode == "RGB"
            read += 1
        except ImageReadError as err:
            assert str(path) in str(err)
            failed += 1
    assert read > 10 and failed > 100  # both outcomes are exercised


def _random_object(rng, depth=0):
    makers = [lambda: None, lambda: rng.randrange(-5, 10), lambda: rng.random() * 10 - 2, lambda: "q",
              lambda: float("nan"), lambda: b"xx", lambda: np.float32(rng.random()),
              lambda: [_random_object(rng, depth + 1) for _ in range(rng.randrange(4))],
              lambda: {rng.choice(["bbx", "easy", "hard", "junk", "imlist", "qimlist", "gnd", "x"]):
                       _random_object(rng, depth + 1) for _ in range(rng.randrange(5))},
              lambda: np.array([rng.randrange(-2, 5) for _ in range(rng.randrange(3))]),
              lambda: (_random_object(rng, depth + 1), _random_object(rng, depth + 1)),
              lambda: set(range(rng.randrange(3)))]
    return makers[rng.randrange(len(makers) if depth < 3 else 7)]()


def test_fuzzed_ground_truth_raises_only_input_errors(tmp_path):
    rng = random.Random(0)
    folder = tmp_path / "test" / "fuzz"
    (folder / "jpg").mkdir(parents=True)
    good = {"imlist": ["a", "b", "c"], "qimlist": ["q0"],
            "gnd": [{"bbx": [0.0, 0.0, 5.0, 5.0], "easy": [0], "hard": [1], "junk": [2]}]}
    seeds = [pickle.dumps(good, protocol=p) for p in range(6)]
    loaded = refused = 0
    for i, data in enumerate(_mutations(rng, seeds, 300)):
        if i % 2:  # a well-formed pickle of a randomly malformed ground truth
            query = {key: _random_object(rng, 2) if rng.random() < 0.5 else value
                     for key, value in good["gnd"][0].items() if rng.random() < 0.9}
            data = pickle.dumps({**good, "gnd": [query]} if rng.random() < 0.7 else _random_object(rng),
                                protocol=rng.randrange(6))
        (folder / "gnd_fuzz.pkl").write_bytes(data)
        try:
            dataset = load_revisitop(tmp_path, "fuzz")
            assert len(dataset.gnd) == len(dataset.qimlist)
            loaded += 1
        except InputError as err:
            assert "gnd_fuzz.pkl" in str(err)
            refused += 1
    assert loaded > 0 and refused > 100


# ---------------------------------------------------------------- issue #15: real full disks, read-only folders


def _mount(*args):
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"mounting is not permitted here (mount {' '.join(args)}: {done.stderr.strip()})")


@pytest.fixture
def full_disk(tmp_path):
    """A 10 MiB tmpfs: metrics.csv and the curves fit, a resnet18 checkpoint (~90 MB) does not."""
    target = tmp_path / "small-disk"
    target.mkdir()
    _mount("-t", "tmpfs", "-o", "size=10m", "tmpfs", str(target))
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


@pytest.fixture
def read_only(tmp_path):
    """A read-only bind mount of a folder holding ``old.txt``."""
    source, target = tmp_path / "source", tmp_path / "read-only"
    source.mkdir()
    target.mkdir()
    (source / "old.txt").write_text("old")
    _mount("--bind", str(source), str(target))
    try:
        _mount("-o", "remount,ro,bind", str(target))
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_a_real_full_disk_inside_torch_save_is_one_line_and_leaves_no_temporary_file(full_disk, gldv2, capsys):
    """On a full disk torch's zip writer raises ``RuntimeError: ... unexpected pos``, not an ``OSError``."""
    with pytest.raises(WriteError, match=f"cannot write {full_disk / 'big.pth'} \\(No space left on device\\)"):
        save_checkpoint({"w": torch.zeros(4 * 2**20)}, full_disk / "big.pth")  # 16 MiB
    assert list(full_disk.iterdir()) == []

    out = full_disk / "run"
    with pytest.raises(SystemExit) as stop:
        run(gldv2, out, "--epochs", "1")
    assert stop.value.code == 2
    line = one_error_line(capsys.readouterr().err.splitlines()[-1])
    assert f"cannot write {out / 'last.pth'} (No space left on device)" in line
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "training_curves.png"]


def test_a_read_only_folder_is_named_before_any_work(read_only, tmp_path, capsys):
    with pytest.raises(WriteError, match=f"cannot write {read_only / 'old.txt'} \\(Read-only file system\\)"):
        atomic_write(read_only / "old.txt", lambda f: f.write(b"new"))  # the clean-up does not hide the cause
    assert (read_only / "old.txt").read_text() == "old"

    done = subprocess.run([sys.executable, "test.py", "--checkpoint", "none.pth", "--data-root", str(tmp_path),
                           "--output-dir", str(read_only / "eval"), "--device", "cpu"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=SUBPROCESS_ENV)
    assert done.returncode == 2 and done.stdout == ""
    line = one_error_line(done.stderr)
    assert f"--output-dir {read_only / 'eval'}" in line and "Read-only file system" in line

    metrics = tmp_path / "metrics.csv"
    write_metrics_row(metrics, {column: 1 for column in COLUMNS})
    with pytest.raises(SystemExit) as stop:
        visualize.main(["curves", "--metrics", str(metrics), "--out", str(read_only / "curves.png")])
    assert stop.value.code == 2
    assert f"--out {read_only / 'curves.png'}" in one_error_line(capsys.readouterr().err)


def test_a_file_where_a_folder_is_expected_is_named_by_its_flag(gldv2, tmp_path, capsys):
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    calls = {"train.py --output-dir": lambda: run(gldv2, file, "--epochs", "1"),
             "train.py --output-dir under it": lambda: run(gldv2, file / "run", "--epochs", "1"),
             "demo.py --run-dir": lambda: demo.main(["--quick", "--run-dir", str(file), "--data-root",
                                                     str(tmp_path / "world")]),
             "demo.py --data-root": lambda: demo.main(["--quick", "--run-dir", str(tmp_path / "demo"),
                                                       "--data-root", str(file)]),
             "synthetic --root": lambda: synthetic_cli.main(["--root", str(file / "world"), "--quiet"])}
    for name, call in calls.items():
        with pytest.raises(SystemExit) as stop:
            call()
        assert stop.value.code == 2, name
        line = one_error_line(capsys.readouterr().err)
        assert str(file) in line and "expected a folder" in line, (name, line)
    assert not (tmp_path / "world").exists() and not (tmp_path / "demo").exists()  # nothing was started

    done = subprocess.run([sys.executable, "test.py", "--checkpoint", "none.pth", "--data-root", str(tmp_path),
                           "--output-dir", str(file), "--device", "cpu"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=SUBPROCESS_ENV)
    assert done.returncode == 2 and f"--output-dir {file}: is a file, expected a folder" in one_error_line(done.stderr)


# ---------------------------------------------------------------- issue #15: temporary files of killed writers


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write_a_live_ones_is_kept(tmp_path):
    def writer(name):
        code = ("import sys, time; from utils.atomic import atomic_write; "
                "atomic_write(sys.argv[1], lambda f: (f.write(b'x' * 1000), f.flush(), time.sleep(120)))")
        return subprocess.Popen([sys.executable, "-c", code, str(tmp_path / name)], cwd=ROOT, env=SUBPROCESS_ENV)

    killed, alive = writer("last.pth"), writer("best.pth")
    try:
        temporaries = {proc: temporary_path(tmp_path / name, proc.pid) for proc, name in ((killed, "last.pth"),
                                                                                           (alive, "best.pth"))}
        for proc, tmp in temporaries.items():
            _wait_for(lambda tmp=tmp, proc=proc: tmp.exists() or proc.poll() is not None, 60, "a writer's tmp")
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert temporaries[killed].exists()  # what a kill leaves behind

        save_checkpoint({"step": 1}, tmp_path / "other.pth")
        assert not temporaries[killed].exists() and temporaries[alive].exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["other.pth", temporaries[alive].name])
    finally:
        for proc in (killed, alive):
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- issue #15: flags and unreadable training sets


@pytest.mark.parametrize("flags", [["--update-every", "0"], ["--update-every", "-2"], ["--workers", "-1"],
                                   ["--crop-scale", "1", "0.2"], ["--crop-scale", "0", "0.5"],
                                   ["--crop-scale", "0.5", "1.5"], ["--lr", "nan"], ["--lr", "inf"], ["--lr", "0"],
                                   ["--lr", "-1"], ["--epochs", "0"], ["--clip-grad", "nan"],
                                   ["--val-fraction", "1"], ["--color-jitter", "0.4", "0.4", "0.2", "0.9"],
                                   ["--jitter-p", "2"]])
def test_bad_training_flags_exit_2_naming_the_flag_before_any_work(tmp_path, capsys, flags):
    with pytest.raises(SystemExit) as stop:
        run(tmp_path / "no-data", tmp_path / "run", *flags)  # flags are checked before the data root is read
    assert stop.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {flags[0]} ") and ": expected" in line, line


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
def test_every_training_image_unreadable_stops_after_the_first_epoch_without_a_checkpoint(tmp_path, capsys):
    root = tmp_path / "data"
    small_set(root / GLDV2_DIR)
    split = load_gldv2(root)
    for path, _ in split.train:
        (split.root / path).write_bytes(bytes(random.Random(path).randrange(256) for _ in range(300)))
    with pytest.raises(SystemExit) as stop:
        run(root, tmp_path / "run", "--epochs", "3")
    assert stop.value.code == 2
    line = one_error_line(capsys.readouterr().err.splitlines()[-1])
    assert "epoch 1: no training image was readable (24 skipped)" in line and str(split.root) in line
    assert not (tmp_path / "run" / "last.pth").exists() and not (tmp_path / "run" / "metrics.csv").exists()
