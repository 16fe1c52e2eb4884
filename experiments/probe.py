"""What a trained Token's tokenizer does (docs/ablations.md, "Why Token trails GeM"): on some images, how hard its
assignment (the softmax over the L tokens) is, the share of positions each token takes, the spread of the attention
tokenizer's logits as its softmax sees them (divided by its temperature), and how far its queries or centres moved
from their initialisation (rebuilt from the training seed, as train.py draws it).

    python -m experiments.probe runs/demo/token/last.pth --images data/synthetic/test/synthetic/jpg --seed 0
"""

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from datasets.images import open_image, to_normalized_tensor, to_rgb
from networks import build_model
from utils import checks
from utils.errors import InputError, fail_cleanly
from weights import load_token

CENTRES = {"attention": "queries", "learned": "centres", "vq": "ema_centres"}  # Tokenizer attribute, (1, L, d)


def get_args_parser():
    parser = argparse.ArgumentParser(prog="python -m experiments.probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="trained Tokens (with tokens)")
    parser.add_argument("--images", required=True, help="folder of .jpg images to run them on")
    parser.add_argument("--count", type=checks.int_in(1, 10000), default=64, help="images taken, by name order")
    parser.add_argument("--imsize", type=checks.IMSIZE, default=96, help="longer side of each image (pixels)")
    parser.add_argument("--seed", type=checks.SEED, default=0, help="the training seed of the checkpoints")
    return checks.check_flags(parser)


def load_images(folder, count, imsize):
    paths = sorted(Path(folder).glob("*.jpg"))[:count]
    if not paths:
        raise InputError(f"--images {folder}: no .jpg image there")
    images = []
    for path in paths:
        with open_image(path) as img:
            img = to_rgb(img)
            scale = imsize / max(img.size)
            images.append(to_normalized_tensor()(img.resize((round(img.width * scale), round(img.height * scale)))))
    return images


@torch.no_grad()
def probe(model, images, seed):
    """The tokenizer's statistics over ``images`` (normalised tensors), as a dict."""
    if model.tokenizer is None:
        raise InputError("the checkpoint pools its local features: it has no tokenizer")
    model.eval()
    tokenizer, assignments, logits, positions = model.tokenizer, [], [], 0
    for image in images:
        x, _ = model.local_features(image[None])
        assignments.append(tokenizer.assignment(x)[0])  # (L, N)
        if tokenizer.kind == "attention":
            logits.append((tokenizer.queries @ x.transpose(1, 2)).flatten() / tokenizer.temperature)
        positions += x.shape[1]
    assignment = torch.cat(assignments, dim=1)
    torch.manual_seed(seed)
    name = CENTRES[tokenizer.kind]
    initial = getattr(build_model(model.config, pretrained=False).tokenizer, name)[0]
    trained = getattr(tokenizer, name)[0]
    stats = {"positions per image": positions / len(images),
             "mean largest assignment": assignment.max(dim=0).values.mean().item(),
             "share of each token": [round(v, 3) for v in assignment.mean(dim=1).tolist()]}
    if logits:
        stats["logit std"] = torch.cat(logits).std().item()
    return {**stats, f"{name}' relative change": ((trained - initial).norm() / initial.norm()).item(),
            f"{name}' cosine to their initialisation": [
                round(v, 4) for v in F.cosine_similarity(trained, initial, dim=-1).tolist()]}


@fail_cleanly
def main(argv=None):
    args = get_args_parser().parse_args(argv)
    images = load_images(args.images, args.count, args.imsize)
    for checkpoint in args.checkpoints:
        stats = probe(load_token(checkpoint), images, args.seed)
        print(f"{checkpoint}: " + "; ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in stats.items()))


if __name__ == "__main__":
    main()
