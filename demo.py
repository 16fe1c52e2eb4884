"""The embedded demo: train and evaluate Token end to end on a generated landmark world, on a CPU.

1. generate the synthetic world (GLDv2-clean-format training set, revisitop-format test set ``synthetic``);
2. evaluate an untrained Token with test.py;
3. train a small Token (resnet18 trunk, small images, from scratch) with train.py, evaluate it;
4. train a GeM baseline the same way, evaluate it;
5. print the table (mAP Easy / Medium / Hard) and draw the figures.

Everything lands in one run folder (``--run-dir``): ``results.json``, per model ``metrics.csv``, checkpoints,
features and ``results.json`` of test.py, and ``figures/``. ``python demo.py --quick`` is the few-step version
that CI runs.
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

import train as training
from datasets.synthetic import ensure_generated
from networks import Token, load_token
from retrieval.evaluation import EvalSettings, evaluate_checkpoint
from retrieval.figures import plot_attention, plot_retrievals
from utils.errors import fail_cleanly
from utils.metrics import plot_training_curves

PROTOCOLS = ("easy", "medium", "hard")


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/demo", help="folder that receives every output of the demo")
    parser.add_argument("--data-dir", default="data/synthetic", help="where the synthetic world is generated")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world and of training")
    parser.add_argument("--train-landmarks", type=int, default=100, help="landmarks in the training set")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of each model")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch")
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="peak AdamW learning rate, after one epoch of warm-up (2e-3 already stalls the Token)")
    parser.add_argument("--weight-decay", type=float, default=0.05, help="AdamW's decoupled weight decay")
    parser.add_argument("--imsize", type=int, default=64, help="training crop size (pixels)")
    parser.add_argument("--test-imsize", type=int, default=96, help="evaluation image size (longer side)")
    parser.add_argument("--dim", type=int, default=128, help="channels of the local features and tokens")
    parser.add_argument("--out-dim", type=int, default=1024,
                        help="global descriptor size (the paper's 1024; 128 measured 10 mAP points lower)")
    parser.add_argument("--margin", type=float, default=0.0,
                        help="ArcFace margin (0: normalised softmax, which starts faster from scratch than 0.2)")
    parser.add_argument("--scale", type=float, default=16.0, help="ArcFace scale")
    parser.add_argument("--workers", type=int, default=0, help="data loading processes (0: in the main process)")
    parser.add_argument("--figures-dir", default=None,
                        help="also copy the figures here (the README's Figure/ is made with --figures-dir Figure)")
    parser.add_argument("--quick", action="store_true",
                        help="a few steps on a tiny world, to check the pipeline end to end (CI)")
    return parser


def model_config(args, aggregation="tokens"):
    """The demo's model: ``Token`` keyword arguments (train.py's flags of the same names)."""
    return {"backbone": "resnet18", "dim": args.dim, "out_dim": args.out_dim, "heads": 4, "aggregation": aggregation}


def model_flags(args, aggregation):
    return [text for key, value in model_config(args, aggregation).items()
            for text in (f"--{key.replace('_', '-')}", str(value))]


def world_size(args):
    if args.quick:
        return dict(num_train_landmarks=6, images_per_landmark=(4, 6), num_test_landmarks=3,
                    db_views_per_landmark=(4, 6), num_distractors=10)
    return dict(num_train_landmarks=args.train_landmarks)


def train_model(args, name, aggregation):
    """train.py on the world's training set; returns the run folder."""
    out = Path(args.run_dir) / name
    training.main(["--data-root", args.data_dir, "--output-dir", str(out), "--no-pretrained", "--device", "cpu",
                   *model_flags(args, aggregation), "--imsize", str(args.imsize), "--epochs", str(args.epochs),
                   "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--workers", str(args.workers),
                   "--optimizer", "adamw", "--weight-decay", str(args.weight_decay), "--schedule", "cosine",
                   "--warmup-epochs", "1", "--warmup-lr", str(args.lr / 100), "--dropout", "0", "--drop-path", "0",
                   "--seed", str(args.seed), "--crop-scale", "0.6", "1.0", "--no-color-jitter",
                   "--margin", str(args.margin), "--scale", str(args.scale)])
    return out


def untrained_model(args):
    """A freshly initialised Token, saved as a checkpoint test.py can read."""
    out = Path(args.run_dir) / "untrained"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model = Token(**model_config(args), pretrained=False)
    torch.save({"state_dict": model.state_dict(), "model_config": model.config}, out / "checkpoint.pth")
    return out / "checkpoint.pth"


def evaluate(args, checkpoint, out):
    """test.py's evaluation on the ``synthetic`` test set; returns the exact-search mAP per protocol (percent)."""
    settings = EvalSettings(checkpoint=str(checkpoint), data_root=args.data_dir, datasets=["synthetic"],
                            imsize=args.test_imsize, device="cpu", workers=args.workers, output_dir=str(out))
    report = evaluate_checkpoint(settings)
    exact = report["datasets"]["synthetic"]["runs"]["exact"]
    return {p: exact[p]["mAP"] for p in PROTOCOLS}


def table(rows):
    lines = ["| model | Easy | Medium | Hard |", "|---|---|---|---|"]
    lines += [f"| {name} | " + " | ".join(f"{row[p]:.2f}" for p in PROTOCOLS) + " |" for name, row in rows.items()]
    return "\n".join(lines)


def figures(args, token_dir):
    out = Path(args.run_dir) / "figures"
    test_images = sorted((Path(args.data_dir) / "test" / "synthetic" / "jpg").glob("query_*.jpg"))[:3]
    written = [plot_training_curves(token_dir / "metrics.csv", out / "training_curves.png"),
               plot_retrievals(args.data_dir, "synthetic", token_dir / "eval" / "features", out / "retrievals.png"),
               plot_attention(load_token(token_dir / "last.pth"), test_images, out / "attention.png",
                              imsize=args.test_imsize)]
    for png in written:
        print(f"wrote {png}")
    if args.figures_dir:
        Path(args.figures_dir).mkdir(parents=True, exist_ok=True)
        for png in out.glob("*.png"):
            shutil.copy(png, Path(args.figures_dir) / png.name)


@fail_cleanly
def main(argv=None):
    args = get_args_parser().parse_args(argv)
    if args.quick:
        args.epochs, args.dim, args.out_dim, args.imsize, args.test_imsize, args.batch_size = 1, 32, 32, 64, 64, 8
        args.run_dir, args.data_dir = str(Path(args.run_dir) / "quick"), str(Path(args.data_dir) / "quick")
    start = time.time()
    ensure_generated(args.data_dir, seed=args.seed, **world_size(args))
    rows = {"untrained Token": evaluate(args, untrained_model(args), Path(args.run_dir) / "untrained" / "eval")}
    for name, aggregation in (("Token", "tokens"), ("GeM baseline", "gem")):
        run = train_model(args, name.split()[0].lower(), aggregation)
        rows[f"trained {name}"] = evaluate(args, run / "last.pth", run / "eval")
    figures(args, Path(args.run_dir) / "token")
    minutes = (time.time() - start) / 60
    print(f"\nmAP (%) on the synthetic benchmark, {minutes:.1f} min on {torch.get_num_threads()} threads\n")
    print(table(rows))
    summary = {"mAP": rows, "minutes": minutes, "args": vars(args)}
    (Path(args.run_dir) / "results.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
