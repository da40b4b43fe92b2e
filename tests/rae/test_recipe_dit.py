"""train-dit's reference recipe pieces: data order, flips, EMA from step 0, batch sizes, defaults."""

import pytest
import torch
from torch.utils.data import DistributedSampler

from genrep.core.ema import EMA
from genrep.core.errors import UserError
from genrep.rae.data import EpochBatches, epoch_order
from genrep.rae.schedule import resolve, schedule_of
from genrep.rae.train_dit import TrainDiTConfig, _Flipper, process_batch


@pytest.mark.parametrize("n, world", [(10, 1), (10, 3), (7, 4), (3, 8)])
def test_epoch_order_is_torch_distributed_sampler(n, world):
    for epoch in (0, 1, 5):
        for rank in range(world):
            s = DistributedSampler(list(range(n)), num_replicas=world, rank=rank, shuffle=True, seed=3)
            s.set_epoch(epoch)
            assert epoch_order(n, epoch, 3, rank, world).tolist() == list(iter(s))


def test_epoch_batches_drop_the_last_partial_batch_and_cover_each_epoch():
    b = EpochBatches(23, 5, seed=0)
    assert b.steps_per_epoch == 4
    first = torch.cat([b.batch(s) for s in range(4)])
    assert len(set(first.tolist())) == 20 and first.tolist() == epoch_order(23, 0)[:20].tolist()
    assert b.batch(4).tolist() == epoch_order(23, 1)[:5].tolist()
    # a fresh object (a resumed run) draws the same batch for the same step
    assert EpochBatches(23, 5, seed=0).batch(6).tolist() == b.batch(6).tolist()
    with pytest.raises(UserError, match="batch size 30 per process is larger"):
        EpochBatches(23, 30)


class _Doubling(torch.nn.Module):
    """A stand-in encoder: the latent is twice the image's first channel, one 'token' per pixel."""

    def encode(self, images):
        return 2 * images[:, :1]

    def spec(self):
        return {"name": "doubling"}


class _Stats:
    mean = torch.tensor(1.0)

    def normalize(self, z):
        return z - self.mean


class _RAE:
    encoder = _Doubling()
    stats = _Stats()


class _Cache:
    meta = {"encoder": {"name": "doubling"}}

    def __init__(self, images):
        self.images = images  # uint8 [N, S, S, 3]

    def target(self, idx):
        return self.images[idx].permute(0, 3, 1, 2).float().div_(255.0)


def test_flip_re_encodes_the_mirrored_image_and_keeps_the_rest():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 4, 4, 3), dtype=torch.uint8)
    cache = _Cache(images)
    flipper = _Flipper(_RAE(), cache, torch.device("cpu"))
    idx = torch.tensor([5, 0, 2, 2])
    cached = 2 * cache.target(idx)[:, :1] - 1  # what the cache holds, normalised
    gen = torch.Generator().manual_seed(7)
    out = flipper(cached, idx, 0.5, gen)
    flip = torch.rand(4, generator=torch.Generator().manual_seed(7)) < 0.5  # the same draw, one per sample
    assert 0 < int(flip.sum()) < 4
    mirrored = 2 * cache.target(idx).flip(-1)[:, :1] - 1
    for i in range(4):
        assert torch.equal(out[i], mirrored[i] if flip[i] else cached[i])
    assert torch.equal(flipper(cached, idx, 0.0, gen), cached)
    assert torch.equal(flipper(cached, idx, 1.0, gen), mirrored)


def test_ema_is_the_plain_formula_from_the_first_step():
    cfg = TrainDiTConfig()
    assert (cfg.ema_decay, cfg.ema_warmup) == (0.9995, False)
    model = torch.nn.Linear(3, 2)
    start = [p.detach().clone() for p in model.parameters()]
    ema = EMA(model, cfg.ema_decay, warmup=cfg.ema_warmup)
    expected = start
    for k in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * (k + 1))
        ema.update(model)
        d = 0.9995
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, model.parameters())]
        for got, want in zip(ema.module.parameters(), expected):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    assert EMA(model, 0.9995, warmup=True).current_decay() == pytest.approx(0.1)  # the named option


def test_default_recipe_is_the_reference_stage2():
    cfg = TrainDiTConfig()
    assert (cfg.lr, cfg.betas, cfg.weight_decay, cfg.grad_clip, cfg.class_dropout) == (2e-4, (0.9, 0.95), 0, 1.0, 0.1)
    assert (cfg.sampling, cfg.hflip, cfg.shift, cfg.shift_base) == ("epoch", 0.5, True, 4096)
    fn = resolve(schedule_of(cfg), cfg.lr, 1251)
    assert (fn.type, fn.warmup, fn.decay_end, fn.warmup_from_zero) == ("linear", 50040, 1000800, False)
    assert fn.final_ratio == pytest.approx(0.1)


def test_global_batch_is_split_over_processes():
    assert process_batch(64, None, 4, "train-dit") == 64
    assert process_batch(64, 1024, 8, "train-dit") == 128
    with pytest.raises(UserError, match="global_batch_size 1000 is not divisible by the 3 processes"):
        process_batch(64, 1000, 3, "train-dit")
