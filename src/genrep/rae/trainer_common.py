"""The start-up, batching, logging and checkpoint boilerplate both RAE trainers share
(:mod:`genrep.rae.train_decoder`, :mod:`genrep.rae.train_dit`).

Every helper here does exactly what the two trainers used to do inline, in the same order, so a
run (its checkpoints, logs and RNG draws) is the same whichever trainer calls it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from genrep.core.distributed import DistInfo, init_distributed
from genrep.core.errors import UserError
from genrep.core.jsonl import append_jsonl
from genrep.core.resume import RunStart, start_run
from genrep.core.rundir import RunDir
from genrep.core.runtime import pick_device, seed_everything
from genrep.rae.data import EpochBatches
from genrep.rae.schedule import LRSchedule, steps_per_epoch, uses_epochs


def process_batch(batch_size: int, global_batch_size: int | None, world_size: int, command: str) -> int:
    """The per-process batch: ``global_batch_size / world_size`` when the global one is given
    (reference src/train.py:150-156 asserts divisibility), else ``batch_size``."""
    if global_batch_size is None:
        return batch_size
    if global_batch_size % world_size:
        raise UserError(
            f"{command}: global_batch_size {global_batch_size} is not divisible by the {world_size} processes"
        )
    return global_batch_size // world_size


def schedule_steps(per_epoch: int, sched: LRSchedule, command: str) -> int:
    """``steps_per_epoch`` for the LR schedule; a schedule in epochs needs at least one step per epoch."""
    if uses_epochs(sched) and per_epoch < 1:
        raise UserError(f"{command}: lr_schedule is given in epochs but an epoch has no full batch")
    return per_epoch


@dataclass
class TrainerStart:
    """What :func:`start_trainer` set up: the process group, the per-process batch, the device,
    the run directory and how the run starts in it (:class:`genrep.core.resume.RunStart`)."""

    info: DistInfo
    batch: int
    device: torch.device
    run: RunDir
    begin: RunStart

    @property
    def log_path(self) -> Path:
        return self.run / "train_log.jsonl"


def start_trainer(
    command: str,
    cfg: Any,
    out: str | Path,
    *,
    resume: bool,
    fresh: bool,
    may_differ: Iterable[str],
    logs: Iterable[str] = ("train_log.jsonl",),
) -> TrainerStart:
    """Join the process group, fix the per-process batch and the device, check how the run may start
    in ``out`` (:func:`genrep.core.resume.start_run`: ``resume`` continues from the latest checkpoint,
    ``fresh`` deletes the run's checkpoints and ``logs``), write config.yaml (rank 0) and seed this rank."""
    info = init_distributed()
    batch = process_batch(cfg.batch_size, cfg.global_batch_size, info.world_size, command)
    device = pick_device(cfg.device)
    run = RunDir(out)
    begin = start_run(
        command,
        cfg,
        run.path,
        resume=resume,
        fresh=fresh,
        may_differ=may_differ,
        keep_last=cfg.keep_checkpoints,
        logs=logs,
        is_main=info.is_main,
        lr_follows_steps=False,
    )
    if info.is_main:
        run.write_config(cfg)
    seed_everything(cfg.seed + info.rank)
    return TrainerStart(info, batch, device, run, begin)


def restore_checkpoint(ts: TrainerStart, state: dict) -> None:
    """With ``--resume`` and a checkpoint to resume from, load ``state`` (model=, optimizer=, ema=,
    scheduler=) from it; :attr:`RunStart.step` is then the step to continue at."""
    if ts.begin.resumed:
        ts.begin.load(**state)


def wrap_ddp(module: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """``module`` in ``DistributedDataParallel`` under torchrun, else ``module`` itself."""
    if not info.enabled:
        return module
    return torch.nn.parallel.DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None
    )


def epoch_batches(n: int, batch: int, sampling: str, seed: int, info: DistInfo) -> tuple[Optional[EpochBatches], int]:
    """The epoch sampler (``sampling: epoch``; None for ``with-replacement``) and the steps per epoch."""
    batches = EpochBatches(n, batch, seed, info.rank, info.world_size) if sampling == "epoch" else None
    return batches, steps_per_epoch(n, batch, info.world_size)


def draw_indices(batches: Optional[EpochBatches], step: int, n: int, batch: int, gen: torch.Generator) -> torch.Tensor:
    """The sample indices of ``step``: the epoch sampler's, or ``batch`` uniform draws from ``gen``."""
    return batches.batch(step) if batches is not None else torch.randint(0, n, (batch,), generator=gen)


class Throughput:
    """Samples seen since the loop started, as per-second rates over all ranks."""

    def __init__(self, world_size: int, flops_per_sample: float):
        self.t0, self.seen = time.perf_counter(), 0
        self.world_size, self.flops = world_size, flops_per_sample

    def add(self, n: int) -> None:
        self.seen += n

    def rates(self, key: str) -> dict[str, float]:
        """``{key: samples per s over all ranks, "gflops_per_s": this rank's GFLOP/s}``."""
        elapsed = time.perf_counter() - self.t0
        return {key: self.seen * self.world_size / elapsed, "gflops_per_s": self.seen * self.flops / elapsed / 1e9}


def log_due(step: int, cfg: Any) -> bool:
    """Whether the step just done (``step`` counted from 0) writes a log row: every ``log_every`` and the last."""
    return (step + 1) % cfg.log_every == 0 or step + 1 == cfg.max_steps


def write_log_row(ts: TrainerStart, bar: Any, row: dict) -> None:
    """Show the row's loss on the progress bar and append it to train_log.jsonl (rank 0)."""
    bar.status(f"loss {row['loss']:.4f}")
    if ts.info.is_main:
        append_jsonl(ts.log_path, row, fsync=False)


def maybe_checkpoint(ts: TrainerStart, step: int, cfg: Any, state: dict) -> None:
    """Save ``state`` at ``step + 1`` every ``checkpoint_every`` steps (rank 0)."""
    if (step + 1) % cfg.checkpoint_every == 0 and ts.info.is_main:
        ts.begin.save(step + 1, **state)


def final_row(ts: TrainerStart, last: dict) -> dict:
    """The last log row; with nothing left to train, re-read from the checkpoint's log (rank 0)."""
    if ts.begin.nothing_to_train:  # model/ and metrics.json are re-made from the checkpoint and its log
        return ts.begin.final_row() if ts.info.is_main else {"step": ts.begin.step}
    return last


def save_final_checkpoint(ts: TrainerStart, cfg: Any, state: dict) -> None:
    """Save ``state`` at ``max_steps`` unless the periodic checkpoint already did (call on rank 0)."""
    if cfg.max_steps % cfg.checkpoint_every and not ts.begin.nothing_to_train:
        ts.begin.save(cfg.max_steps, **state)
