"""training.engine's step: a micro-batch without two readable images changes nothing but the step count, in one
process (the step's gradient is the usable micro-batches' mean) and under DDP (two gloo processes on the CPU: the
skipping rank's blank forward moves no BatchNorm statistic nor VQ centre), for a Token and for the aggregator, whose
inputs are sets of local features."""

from argparse import Namespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from networks import Token, build_model
from networks.config import AggregatorConfig
from training import engine
from utils.distributed import DistEnv

CPU = torch.device("cpu")
IMSIZE = 32


AGGREGATOR = AggregatorConfig(local_dim=8, num_features=6, dim=16, out_dim=8, num_tokens=2, heads=2, dropout=0.0)


def tiny_model(kind="token"):
    torch.manual_seed(0)
    if kind == "aggregator":
        return build_model(AGGREGATOR, num_classes=4)
    return Token(backbone="resnet18", num_classes=4, dim=32, out_dim=16, heads=2, tokenizer="vq", dropout=0.0,
                 drop_path=0.0, pretrained=False)


def batch(n, seed, kind="token"):
    """``n`` images, or for the aggregator ``n`` sets of local features, and their labels."""
    generator = torch.Generator().manual_seed(seed)
    shape = (AGGREGATOR.num_features, AGGREGATOR.local_dim) if kind == "aggregator" else (3, IMSIZE, IMSIZE)
    return torch.randn(n, *shape, generator=generator), torch.arange(n) % 4


def train_step(model, ddp_model, micro_batches, env, update_every):
    """One optimizer step of ``train_one_epoch`` over ``micro_batches``; returns the gradients it stepped with."""
    args = Namespace(update_every=update_every, epochs=1, progress=False, log_every=1, save_every=0, clip_grad=None,
                     seed=0, amp="none", imsize=IMSIZE, jitter=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    stepped = {}

    def capture(model, optimizer, scaler, clip_grad):
        stepped.update({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loader = [(images, labels, 0) for images, labels in micro_batches]
    original, engine.optimizer_step = engine.optimizer_step, capture
    try:
        engine.train_one_epoch(model, ddp_model, loader, optimizer, scheduler, scaler, args, env, 0, 0, 1, None)
    finally:
        engine.optimizer_step = original
    return stepped


def reference(micro_batch, kind="token"):
    """The gradients and buffers of one step on ``micro_batch`` alone, in one process."""
    model = tiny_model(kind).train()
    loss, _ = model(*micro_batch)
    loss.backward()
    return {n: p.grad for n, p in model.named_parameters()}, dict(model.named_buffers())


def assert_same(actual, expected):
    """Equal up to float32 sums in another order (other threads, another process): relative to each tensor's
    largest value and to the largest of all (a gradient zero in theory, a bias before a BatchNorm, is noise)."""
    assert actual.keys() == expected.keys()
    largest = max(float(value.abs().max()) for value in expected.values() if value.is_floating_point())
    for name, value in expected.items():
        atol = max(1e-4 * float(value.abs().max()), 1e-6 * largest) if value.is_floating_point() else 0
        torch.testing.assert_close(actual[name], value, rtol=1e-3, atol=atol, msg=name)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")  # optimizer_step is captured
def test_a_skipped_micro_batch_does_not_shrink_the_step_in_one_process():
    usable, unreadable = batch(4, seed=1), batch(1, seed=2)  # one readable image: skipped
    model = tiny_model().train()
    grads = train_step(model, model, [usable, unreadable], DistEnv(0, 1, CPU), update_every=2)
    expected_grads, expected_buffers = reference(usable)
    assert_same(grads, expected_grads)
    assert_same(dict(model.named_buffers()), expected_buffers)


def rank_step(rank, store, out, kind):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        model = tiny_model(kind).train()
        initial = {name: b.clone() for name, b in model.named_buffers()}
        ddp_model = DistributedDataParallel(model)
        micro_batch = batch(4, 1, kind) if rank == 0 else batch(0, 2, kind)  # rank 1: nothing readable
        grads = train_step(model, ddp_model, [micro_batch], DistEnv(rank, 2, CPU), update_every=1)
        torch.save({"grads": grads, "buffers": dict(model.named_buffers()), "initial": initial}, out / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["token", "aggregator"])
def test_a_rank_that_skips_its_micro_batch_moves_no_buffer_under_ddp(tmp_path, kind):
    mp.spawn(rank_step, args=(tmp_path / "store", tmp_path, kind), nprocs=2)
    first, second = (torch.load(tmp_path / f"{rank}.pt") for rank in (0, 1))
    expected_grads, expected_buffers = reference(batch(4, 1, kind), kind)
    assert any(("ema_centres" if kind == "token" else "running_mean") in name for name in expected_buffers)
    assert_same(second["buffers"], second["initial"])  # no BatchNorm statistic nor VQ centre of the blank batch
    assert_same(first["buffers"], expected_buffers)
    assert_same(first["grads"], expected_grads)  # the mean over the one usable micro-batch of the two ranks
    assert_same(second["grads"], expected_grads)


@pytest.mark.parametrize("usable", [0, 1])
def test_mean_over_usable_in_one_process(usable):
    model = torch.nn.Linear(2, 1)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    assert engine.mean_over_usable(model, usable, DistEnv(0, 1, CPU), update_every=4) == bool(usable)
    assert all(torch.equal(p.grad, torch.full_like(p, 4.0 if usable else 1.0)) for p in model.parameters())
