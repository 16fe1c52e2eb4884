"""The stage that runs test.py --amp and checks its stored descriptors against float32 ones."""

import json
import math
import sys

import numpy as np
import torch

from benchmarks.gpu_check.report import OutOfTime, check_cosines, run_command, tail


def test_stage(seconds, report, checkpoint, world, work, profile, device, workers):
    """test.py --amp on the synthetic set; its stored descriptors against float32 ones extracted here."""
    import importlib.util

    if importlib.util.find_spec("faiss") is None:
        raise OutOfTime("faiss is not installed here (test.py needs it; docs/benchmarks.md, 'GPU check')")
    amp = device == "cuda"  # test.py --amp is CUDA only: the smoke run compares float32 with float32
    out = work / "test-amp"
    log = out.with_suffix(".log")
    cmd = [sys.executable, "test.py", "--checkpoint", str(checkpoint), "--data-root", str(world.root),
           "--datasets", world.test_name, "--imsize", str(profile.test_imsize), "--device", device,
           "--workers", str(workers), "--output-dir", str(out), "--no-progress", *(["--amp"] if amp else [])]
    code = run_command(cmd, log, seconds)
    if not report.check("test.py: exit 0", code == 0, code, 0, tail(log)):
        return
    results = json.loads((out / "results.json").read_text())
    found = results["datasets"][world.test_name]
    mean_ap = found["runs"]["exact"]["medium"]["mAP"]
    report.check("test.py: results.json", results["amp"] == amp and math.isfinite(mean_ap),
                 {"amp": results["amp"], "medium mAP": mean_ap}, {"amp": amp, "medium mAP": "finite"})
    for part, ms in found["extraction_ms_per_image"].items():
        report.timing(f"test.py{' --amp' if amp else ''}: {part} extraction", ms, "ms/image",
                      f"--imsize {profile.test_imsize}, 3 scales, small synthetic images (never enlarged)")
    for part, reference in float32_descriptors(checkpoint, world, profile, device, workers).items():
        stored = np.load(out / "features" / f"{world.test_name}_{part}.npy")
        check_cosines(report, f"test.py{' --amp' if amp else ''} vs float32: {part} descriptors", stored, reference)


def float32_descriptors(checkpoint, world, profile, device, workers):
    """``{"query", "db"}``: float32 descriptors of the test set as test.py extracts them (same flags but --amp)."""
    from datasets.revisitop import RevisitopImages, load_revisitop
    from retrieval.evaluation import EvalSettings
    from retrieval.extract import extract, prepare_model
    from weights import load_token

    settings = EvalSettings(checkpoint=str(checkpoint), data_root=str(world.root), imsize=profile.test_imsize)
    dataset = load_revisitop(world.root, world.test_name)
    model = prepare_model(load_token(checkpoint), torch.device(device))
    images = {"query": RevisitopImages(dataset.query_paths(), settings.imsize, dataset.bbxs()),
              "db": RevisitopImages(dataset.db_paths(), settings.imsize)}
    return {part: extract(model, found, model.config.descriptor_dim, torch.device(device), settings.scales,
                          settings.batch_size, workers) for part, found in images.items()}
