"""One process or many under ``torchrun``: process group set-up, data sharding and cross-rank reductions.

Every helper works unchanged in a single process (world size 1, no process group), so train.py has one code path.
"""

import itertools
import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler

from utils.errors import InputError


@dataclass(frozen=True)
class DistEnv:
    """Where this process runs: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def distributed(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0


def resolve_device(name, local_rank=0):
    """``auto`` -> CUDA when available, else CPU; ``cuda`` -> this process's GPU (``LOCAL_RANK``)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu or auto")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def init_distributed(device="auto"):
    """Join the process group that ``torchrun`` describes in the environment (NCCL on GPUs, gloo on CPU).

    Without ``torchrun`` (or with one process) no group is created and the run is a plain single process.
    """
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = resolve_device(device, int(os.environ.get("LOCAL_RANK", 0)))
    if world_size > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return DistEnv(rank, world_size, device)


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce(tensor, op=dist.ReduceOp.SUM):
    """Reduce ``tensor`` in place across ranks (no-op in a single process) and return it."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=op)
    return tensor


def broadcast_buffers(module):
    """Copy rank 0's buffers (BatchNorm statistics, EMA centres) to every rank, so all evaluate one model."""
    if dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


@contextmanager
def main_process_first(env):
    """Run the block on rank 0 first (it may download or write caches), then on the other ranks.

    Rank 0 reaches the barrier even when its block fails, so the others never hang: they then run the
    block themselves and meet the same error.
    """
    if not env.is_main:
        dist.barrier()
    try:
        yield
    finally:
        if env.is_main and env.distributed:
            dist.barrier()


class TrainSampler(DistributedSampler):
    """A shuffling ``DistributedSampler`` (order = f(seed, epoch)) that yields whole optimizer steps only.

    Each rank gets ``len(dataset) // world_size`` indices an epoch, cut to a multiple of ``chunk`` (the images
    one rank loads for one optimizer step), so every rank runs the same number of steps. ``set_epoch(epoch,
    start)`` skips the first ``start`` indices of the epoch: a run resumed mid-epoch continues the same order
    without loading the skipped images.
    """

    def __init__(self, dataset, env, seed, chunk):
        super().__init__(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=seed,
                         drop_last=True)
        self.usable = self.num_samples - self.num_samples % chunk
        self.start = 0

    def set_epoch(self, epoch, start=0):
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.start, self.usable)

    def __len__(self):
        return self.usable - self.start


class ShardSampler(Sampler):
    """Rank r of w takes indices r, r + w, r + 2w, ...: every index exactly once over all ranks, no padding.

    ``DistributedSampler`` pads the set with duplicates to equal shards, which would count some images twice
    in a validation metric; here shards differ by at most one image, so evaluation must use no collective
    call per batch.
    """

    def __init__(self, length, env):
        self.indices = range(env.rank, length, env.world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)
