"""core.resume on a toy config and a one-layer model: the checks, the clean-up, the records."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest
import torch

from genrep.core.checkpoint import Checkpointer, read_metadata, save_checkpoint
from genrep.core.config import dump_yaml
from genrep.core.errors import UserError
from genrep.core.resume import RUN_CONTROL, config_differences, start_run, summary


@dataclass
class Inner:
    width: int = 4
    act: str = "relu"


@dataclass
class Toy:
    data: Optional[Path] = None
    inner: Inner = field(default_factory=Inner)
    extra: dict[str, int] = field(default_factory=dict)
    lr: float = 1e-3
    max_steps: int = 10
    log_every: int = 1
    checkpoint_every: int = 5
    keep_checkpoints: int = 2
    device: str = "cpu"


def _begin(out, cfg, **kw):
    kw.setdefault("resume", True)
    return start_run("toy", cfg, out, **kw)


def _trained(out: Path, cfg: Toy, step: int = 5, rows: int = 5) -> None:
    """What a toy run leaves: config.yaml, a log with ``rows`` rows, one checkpoint at ``step``."""
    out.mkdir(parents=True, exist_ok=True)
    begin = start_run("toy", cfg, out, resume=False)
    (out / "config.yaml").write_text(dump_yaml(cfg))
    (out / "train_log.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, rows + 1))
    )
    begin.save(step, model=torch.nn.Linear(2, 2))


def test_only_run_control_fields_may_differ(tmp_path):
    cfg = Toy(data=tmp_path)
    _trained(tmp_path / "run", cfg)
    again = _begin(tmp_path / "run", Toy(data=tmp_path, max_steps=20, log_every=2, device="cuda"))
    assert again.resumed and again.step == 5 and again.trained_max_steps == 10
    for changed, name in (
        (Toy(data=tmp_path, inner=Inner(act="gelu")), "inner.act"),
        (Toy(data=tmp_path, extra={"depth": 2}), "extra"),
        (Toy(data=tmp_path, lr=0.1), "lr"),
        (Toy(data=None), "data"),
    ):
        with pytest.raises(UserError, match=rf"^toy --resume: {name} is .* but the checkpoint in .* was trained with"):
            _begin(tmp_path / "run", changed)
    with pytest.raises(UserError, match="inner.width is 8 .*; also differs: lr"):
        _begin(tmp_path / "run", Toy(data=tmp_path, lr=0.1, inner=Inner(width=8)))
    with pytest.raises(UserError, match=r"max_steps is 4 but the checkpoint in .* is at step 5 \(pass max_steps >= 5"):
        _begin(tmp_path / "run", Toy(data=tmp_path, max_steps=4))


def test_a_path_written_two_ways_is_the_same_and_unknown_old_fields_are_skipped(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    stored = {"data": str(tmp_path / "d"), "inner": {"width": 4}, "max_steps": 10}  # no inner.act, lr...: older run
    monkeypatch.chdir(tmp_path)
    assert config_differences(Toy(data=Path("d"), lr=5.0), stored, RUN_CONTROL) == []
    assert config_differences(Toy(data=Path("e")), stored) == [("data", "e", str(tmp_path / "d"))]


def test_checkpoints_without_a_config_fall_back_to_config_yaml(tmp_path):
    out = tmp_path / "run"
    save_checkpoint(out / "checkpoints" / "step-00000003.safetensors", step=3, model=torch.nn.Linear(2, 2))
    (out / "config.yaml").write_text(dump_yaml(Toy(lr=0.5)))
    with pytest.raises(UserError, match="lr is 0.001 but the checkpoint"):
        _begin(out, Toy())
    assert _begin(out, Toy(lr=0.5)).step == 3


def test_checks_come_before_any_write_and_stale_temporaries_go_on_rank_0(tmp_path):
    out = tmp_path / "run"
    _trained(out, Toy(), step=5, rows=7)
    with (out / "train_log.jsonl").open("a") as f:
        f.write('{"step": 8, "lo')  # torn by a kill
    stale = out / "checkpoints" / ".step-00000010.safetensors.abc123.tmp"
    stale.write_bytes(b"x" * 100)
    other = out / "checkpoints" / "notes.tmp"  # not ours: never touched
    other.write_text("keep")
    log_before = (out / "train_log.jsonl").read_bytes()
    with pytest.raises(UserError):
        _begin(out, Toy(lr=1.0))
    assert stale.exists() and (out / "train_log.jsonl").read_bytes() == log_before
    _begin(out, Toy(), is_main=False)  # another rank: reads only
    assert stale.exists() and (out / "train_log.jsonl").read_bytes() == log_before
    begin = _begin(out, Toy())
    assert begin.removed == [stale] and not stale.exists() and other.exists()
    assert [r["step"] for r in begin.log_rows()] == [1, 2, 3, 4, 5]  # torn line and rows past the checkpoint gone


def test_a_new_run_is_refused_on_old_checkpoints_and_fresh_removes_only_its_own_files(tmp_path):
    out = tmp_path / "run"
    _trained(out, Toy())
    (out / "eval_log.jsonl").write_text('{"step": 5}\n')
    (out / "model").mkdir()
    with pytest.raises(
        UserError,
        match=r"^toy: .*checkpoints holds checkpoints of an earlier run \(step 5\); "
        r"pass --resume to continue it or choose a new --out$",
    ):
        _begin(out, Toy(), resume=False)
    with pytest.raises(UserError, match="exclude each other"):
        _begin(out, Toy(), fresh=True)
    begin = _begin(out, Toy(), resume=False, fresh=True, logs=("train_log.jsonl", "eval_log.jsonl"))
    assert not begin.resumed and begin.step == 0 and Checkpointer(out / "checkpoints").all() == []
    assert not (out / "train_log.jsonl").exists() and not (out / "eval_log.jsonl").exists()
    assert (out / "model").is_dir() and (out / "config.yaml").is_file()


def test_resume_without_a_checkpoint_starts_at_zero(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "train_log.jsonl").write_text('{"step": 1, "loss": 2.0}\n')  # killed before its first checkpoint
    begin = _begin(out, Toy(lr=9.0))
    assert not begin.resumed and begin.step == 0 and begin.log_rows() == [] and begin.metrics() == {}


def test_a_changed_step_budget_is_logged_once_per_checkpoint(tmp_path):
    out = tmp_path / "run"
    _trained(out, Toy(max_steps=5), step=5)
    for _ in range(2):  # the second resume from the same checkpoint replaces the record
        begin = _begin(out, Toy(max_steps=9))
    assert begin.steps_changed and not begin.nothing_to_train
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r.get("event") for r in rows].count("max_steps_changed") == 1 and rows[-1]["to"] == 9
    assert begin.metrics()["max_steps_changed"] == [{"step": 5, "from": 5, "to": 9, "note": rows[-1]["note"]}]
    assert begin.metrics()["resumed_from"] == 5 and [r["step"] for r in begin.log_rows()] == [1, 2, 3, 4, 5]
    begin.save(9, model=torch.nn.Linear(2, 2))
    assert read_metadata(out / "checkpoints" / "step-00000009.safetensors")["extra"]["config"]["max_steps"] == 9
    finished = _begin(out, Toy(max_steps=9))
    assert finished.nothing_to_train and finished.step == 9 and not finished.steps_changed


def test_summary_never_prints_nan():
    assert summary({"steps": 4, "final": {"loss": 0.5}}) == "final loss 0.5000"
    assert summary({"steps": 4, "final": {}}) == "no loss logged"
    assert "resumed from step 2" in summary({"steps": 4, "final": {"loss": 1.0}, "resumed_from": 2})
    text = summary({"steps": 4, "final": {"step": 4, "loss": 1.0}, "resumed_from": 4})
    assert "nothing left to train" in text and "nan" not in text
