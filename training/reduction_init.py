"""HOW's reduction layer, initialised before training by PCA whitening of its local features and then left as it is
(docs/FACTS.md, "HOW", "Reduction initialisation"; docs/training.md, "HOW").

The first ``--init-images`` images of the train split, resized as HOW's evaluation resizes a database image
(``datasets.revisitop.resize_database`` to ``--imsize``), go through the trunk at scale 1; the top 1,000 smoothed
local features of each by attention are summed into their first and second moments (over all ranks), whose PCA whitening
P = diag(eigenvalue^-1/2) E^T (eigenvalues clipped at 1e-14) gives ``dim_reduction``: the first out_dim rows of P as
its weight and -(P m) as its bias. ``networks.HOW`` never trains that layer.
"""

import logging
from functools import partial

import torch
from torch.utils.data import DataLoader

from datasets.gldv2 import LandmarkImages, collate_skip_bad
from datasets.images import to_normalized_tensor
from datasets.revisitop import resize_database
from networks.pca_whitening import PCAWhitening
from utils.distributed import ShardSampler, all_reduce
from utils.errors import InputError

log = logging.getLogger("train")

FEATURES_PER_IMAGE = 1000  # HOW's
EIGENVALUE_FLOOR = 1e-14  # HOW's


def resized_tensor(imsize, image):
    return to_normalized_tensor()(resize_database(image, imsize))


@torch.no_grad()
def local_moments(model, samples, root, imsize, env, workers=0):
    """(count, sum, sum of outer products) in float64 of the top ``FEATURES_PER_IMAGE`` smoothed local features of
    each readable image of ``samples`` ((path, label) under ``root``), over all ranks; each rank reads its share."""
    images = LandmarkImages(samples, root, partial(resized_tensor, imsize))
    loader = DataLoader(images, batch_size=1, sampler=ShardSampler(len(images), env), num_workers=workers,
                        collate_fn=collate_skip_bad)
    channels = model.dim_reduction.in_channels
    moments = torch.zeros(1 + channels + channels * channels, dtype=torch.float64, device=env.device)
    for image, _, _ in loader:
        if not len(image):  # unreadable: LandmarkImages has logged it
            continue
        attention, smoothed = model.attention_and_smoothed(image.to(env.device))
        keep = torch.sort(-attention.flatten(), stable=True).indices[:FEATURES_PER_IMAGE]
        x = smoothed[0].flatten(1).T[keep].double()
        moments += torch.cat([torch.tensor([len(x)], dtype=torch.float64, device=env.device), x.sum(dim=0),
                              (x.T @ x).flatten()])
    moments = all_reduce(moments).cpu().numpy()
    return moments[0], moments[1:1 + channels], moments[1 + channels:].reshape(channels, channels)


def initialise_reduction(model, samples, root, args, env):
    """Set HOW ``model``'s ``dim_reduction`` to the PCA whitening of the local features of ``samples``."""
    training = model.training
    model.eval()
    count, total, outer = local_moments(model, samples, root, args.imsize, env, args.workers)
    model.train(training)
    dim = model.dim_reduction.out_channels
    if count <= dim:
        raise InputError(f"HOW's reduction to {dim} dimensions is initialised by PCA whitening of more than {dim} "
                         f"local features; {len(samples)} training image(s) at --imsize {args.imsize} gave "
                         f"{int(count)}: raise --init-images or --imsize")
    whitening = PCAWhitening.from_moments(count, total, outer, EIGENVALUE_FLOOR)
    if whitening.variance[dim - 1] < 1e-10 * whitening.variance[0]:
        raise InputError(f"the {int(count)} local features of {len(samples)} training image(s) span fewer than {dim} "
                         f"directions (repeated images?); HOW's reduction needs {dim}: raise --init-images")
    weight = whitening.components[:dim] / whitening.variance[:dim, None] ** 0.5
    reduction = model.dim_reduction
    reduction.weight.copy_(torch.from_numpy(weight)[:, :, None, None])
    reduction.bias.copy_(torch.from_numpy(-weight @ whitening.mean))
    log.info("HOW: the reduction layer is the PCA whitening of %d local features of %d training images (frozen)",
             count, len(samples))
