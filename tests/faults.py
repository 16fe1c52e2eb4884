"""Helpers of the ``test_faults_*`` files, and their index.

Issue #7: what every kind of bad input or fault does, one row of the issue's table each. Rows tested elsewhere
are listed with the test that covers them; "added" names the ``test_faults_*`` file that tests the rest:

* missing data root / dataset folder / gnd pkl / jpg folder: ``test_revisitop.test_missing_paths_are_named``;
  missing R1M list: ``test_revisitop.test_r1m_image_list``; missing GLDv2 root or CSV:
  ``test_gldv2.test_missing_root_or_csv_names_the_path_and_layout``; through ``test.py`` in a subprocess:
  ``test_test_edge_cases.test_subprocess_exit_codes_and_help``; ``train.py`` in-process:
  ``test_train.test_bad_data_root_exits_2_with_one_line``. Added (``cli``): ``train.py`` and ``test.py`` as
  subprocesses on a missing CSV / gnd pickle.
* malformed gnd (missing keys, index out of range, bad box): ``test_revisitop.test_malformed_gnd_names_query_and_
  problem``, ``test_gnd_without_one_entry_per_query``; box outside the image:
  ``test_revisitop.test_images_dataset_raises_on_unreadable_image_and_bad_box`` and
  ``test_resize_query_box_beyond_the_edge_is_padded_black_and_outside_is_refused`` (the box is checked against the
  image when the query is read, since the pickle does not hold image sizes). Added (``fuzz``): random and mutated
  pickles.
* code-running pickles: ``test_safe_pickle.test_code_running_pickle_is_refused``,
  ``test_revisitop.test_unsafe_pickle_is_refused``, ``test_networks.test_a_checkpoint_that_would_run_code_is_refused``.
  Added (``checkpoints``): a ``--resume`` checkpoint and a GLDv2 split cache that would run code.
* checkpoint truncated / of another model: ``test_networks.test_truncated_checkpoint_and_missing_file``,
  ``test_a_checkpoint_that_does_not_fit_names_the_key``; another training setting on resume:
  ``test_train.test_resume_follows_this_runs_epochs_and_lr_and_refuses_other_changes``. Added (``checkpoints``):
  another depth, a non-Token model, a truncated ``--resume`` checkpoint.
* zero-byte / truncated / non-image files: ``test_images.test_unreadable_image_names_the_file``; evaluation stops
  naming the file: ``test_test_edge_cases.test_unreadable_image_in_a_loader_worker_is_one_line``,
  ``test_revisitop.test_images_dataset_raises_on_unreadable_image_and_bad_box``; training skips and counts:
  ``test_train.test_unreadable_images_are_skipped_and_counted``, ``test_gldv2.test_dataset_and_collate_skip_a_
  corrupt_image``. Added (``images``): wrong extensions; fuzzed images (``fuzz``).
* image modes: ``test_images.test_every_mode_reads_as_rgb``, ``test_16bit_is_scaled_to_8bit``,
  ``test_exif_orientation_is_not_applied_as_in_the_reference_pipelines``. Added (``images``): training's and
  evaluation's readers give the same pixels for every mode.
* images smaller than the stride: added (``images``; no existing test).
* CSV with missing columns, duplicate ids, non-numeric labels: ``test_gldv2.test_bad_csv_names_the_file_and_row``
  (``InputError`` -> exit code 2 through ``fail_cleanly``).
* SIGKILL during training: in-process kills after a save in ``test_train.test_resumed_run_ends_where_the_
  uninterrupted_run_ends``; a write interrupted midway in ``test_train.test_an_interrupted_checkpoint_write_leaves_
  the_previous_file``. Added (``processes``): a real SIGKILL of ``train.py`` and a leftover temporary file.
* one DDP rank dies: added (``processes``; torchrun's agent stops the others).
* disk full: added (``disk``: features, shards, checkpoints; through train.py).
* NaN / inf loss: ``test_train.test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint``.

Issue #15 (the defects an outside probe found), each with the real fault:

* 1, a full disk inside ``torch.save`` (a 10 MiB tmpfs as train.py's --output-dir):
  ``test_faults_disk.test_a_real_full_disk_inside_torch_save_is_one_line_and_leaves_no_temporary_file``; in-process:
  ``test_faults_disk.test_disk_full_while_saving_a_checkpoint``.
* 2, read-only output (a read-only bind mount; the writer's clean-up, test.py, visualize curves):
  ``test_faults_disk.test_a_read_only_folder_is_named_before_any_work``; a file where a folder is expected
  (train.py, test.py, demo.py, the synthetic world):
  ``test_faults_disk.test_a_file_where_a_folder_is_expected_is_named_by_its_flag``.
* 3, NaN or infinite weights: ``test_baselines.test_nan_or_infinite_weights_are_refused_naming_the_tensor``.
* 4, images rewritten in place: ``test_test_edge_cases.test_images_rewritten_in_place_are_extracted_again``,
  ``test_extract.test_feature_key_follows_each_image_file``.
* 5, 0-byte feature files: ``test_extract.test_zero_byte_feature_files_are_extracted_again``.
* 6, downloads: ``test_download_faults`` (a corrupt archive with one name twice, a full disk on a real tmpfs during
  an extraction, a download and a released model's download, a member above the size cap, a URL that is no address).
* 7 and 18, flags out of range: ``test_faults_cli.test_bad_training_flags_exit_2_naming_the_flag_before_any_work``;
  demo.py: ``test_demo.test_bad_training_settings_stop_the_demo_before_any_work``.
* 7, ``--scales nan`` / ``inf`` / ``1e6``: ``test_test_full_run.test_bad_input_is_one_line_and_exit_code_2``.
* 8, --resume on data with another class count:
  ``test_train.test_resume_on_data_with_another_number_of_landmarks_names_both_counts``.
* 9, a box far larger than its image: ``test_revisitop.test_a_box_far_larger_than_its_image_is_refused_before_
  cropping``.
* 10, nothing to evaluate, undefined mAP: ``test_test_edge_cases.test_nothing_to_evaluate_is_exit_code_2``,
  ``test_an_undefined_map_is_null_in_results_json_and_n_a_on_screen``.
* 11, every training image unreadable:
  ``test_faults_cli.test_every_training_image_unreadable_stops_after_the_first_epoch_without_a_checkpoint``; an empty
  val split:
  ``test_train.test_an_empty_val_split_is_said_once_its_metrics_are_nan_and_no_best_is_kept``.
* 12, checkpoints that cannot be used (unknown setting, ``heads 7``, ``resnet999``, integer keys, a ``.npy``):
  ``test_baselines.test_a_model_config_that_cannot_be_used_is_refused_naming_the_file``,
  ``test_heads_that_do_not_divide_dim_are_refused``,
  ``test_integer_keys_numpy_files_and_other_files_are_told_what_they_are``.
* 13, Ctrl-C during extraction with loader workers: ``test_test_edge_cases.test_ctrl_c_during_extraction_with_loader_
  workers_stops_the_run`` (real SIGINTs to real test.py runs), ``test_interrupts``.
* 14, a killed writer's temporary file (a real SIGKILL):
  ``test_faults_disk.test_a_killed_writers_temporary_file_is_removed_by_the_next_write_a_live_ones_is_kept``.
* 15, a mid-epoch resume's train_loss: ``test_train.test_resumed_run_ends_where_the_uninterrupted_run_ends``.
* 16, visualize: ``test_visualize.test_curves_figure_names_the_file_it_wrote``,
  ``test_curves_of_a_csv_without_the_columns_or_rows_is_a_clear_error``,
  ``test_retrievals_of_queries_that_do_not_exist_or_a_zero_width_is_a_clear_error``.
* 17, image list entries outside ``jpg/``: ``test_revisitop.test_list_entries_outside_jpg_are_refused``,
  ``test_r1m_image_list``.
"""

import io
import os
import time

import torch

# Every test of a process that imports this module runs one intra-op thread (a shared 2-core machine; pytest
# imports every test file in each of its processes), and so do the subprocesses started with SUBPROCESS_ENV.
torch.set_num_threads(1)
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def one_error_line(stderr):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def encoded(img, fmt, **kwargs):
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    return buffer.getvalue()
