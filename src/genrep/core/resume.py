"""How a training run starts in its ``--out``: from scratch, continued from its checkpoint, or refused.

Every training loop (``rae train-decoder``, ``rae train-dit``, ``lco train``, ``lco pretrain-vlm``)
calls :func:`start_run` before it writes anything, config.yaml included. The rules it enforces:

- **Resume is a continuation, not a new run.** ``--resume`` picks the latest checkpoint in
  ``OUT/checkpoints``. The resolved config that checkpoint was trained with (kept in its metadata;
  ``OUT/config.yaml`` for checkpoints written before genrep kept it) must equal the new config,
  except for the command's run-control fields (``may_differ``: the step budget, how often to log
  and checkpoint, how many checkpoints to keep, the device, and a few knobs that change speed or
  memory but not the recipe). Any other difference is a one-line :class:`UserError` naming the
  field and both values; so is a step budget below the checkpoint's step. A changed step budget
  is recorded (log row and ``metrics.json``): the LR schedule follows the new budget from the
  checkpoint's step on. ``--resume`` without a checkpoint starts at step 0.
- **A new run does not mix with an old one.** Without ``--resume``, an ``OUT`` whose
  ``checkpoints/`` already holds checkpoints is refused (the numbered checkpoints of both runs
  would interleave and an old one could become "latest"), unless the caller passes ``fresh``,
  which deletes the run's own checkpoints and logs first (the demo re-runs into one directory).
- **Leftovers of a crash are cleaned** on rank 0 once the checks pass: temporary files of a
  checkpoint write cut short are deleted, a torn last log line is repaired and log rows after the
  checkpoint step are dropped (they will be redone).

The returned :class:`RunStart` loads the chosen checkpoint, saves new ones with the config in their
metadata (the logs are fsynced first, so a checkpoint never claims steps whose log rows could still
be lost), and supplies what ``metrics.json`` says about the resume.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from genrep.core.checkpoint import Checkpointer, load_checkpoint, read_metadata
from genrep.core.config import to_dict
from genrep.core.errors import UserError
from genrep.core.jsonl import append_jsonl, fsync_file, read_log, truncate_jsonl, truncate_log

# The run-control fields every training command lets differ on --resume; commands add their own.
RUN_CONTROL = ("max_steps", "log_every", "checkpoint_every", "keep_checkpoints", "device")
CHANGE_EVENT = "max_steps_changed"
_MISSING = object()


def _plain(value: Any) -> Any:
    """A JSON-shaped copy (tuples as lists, paths as strings) so stored and new values compare alike."""
    return json.loads(json.dumps(to_dict(value), default=str))


def config_fields(cfg: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """``(dotted name, value)`` for every leaf field of a (nested) config dataclass; a dict-valued
    field is one leaf."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        name = prefix + f.name
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from config_fields(value, name + ".")
        else:
            yield name, _plain(value)


def _lookup(stored: Any, dotted: str) -> Any:
    node = stored
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _same(new: Any, old: Any) -> bool:
    if new == old:
        return True
    if isinstance(new, str) and isinstance(old, str):  # one path written two ways (relative / absolute)
        try:
            return os.path.exists(new) and os.path.exists(old) and os.path.samefile(new, old)
        except OSError:
            return False
    return False


def config_differences(cfg: Any, stored: dict, may_differ: Iterable[str] = ()) -> list[tuple[str, Any, Any]]:
    """``(field, new value, stored value)`` for each field of ``cfg`` that differs from ``stored`` (a
    config as written by ``to_dict``), in field order. Fields named in ``may_differ`` are skipped,
    and so are fields ``stored`` lacks (the run predates them)."""
    allowed = set(may_differ)
    out = []
    for name, value in config_fields(cfg):
        if name in allowed:
            continue
        old = _lookup(stored, name)
        if old is not _MISSING and not _same(value, old):
            out.append((name, value, old))
    return out


def check_same_config(command: str, cfg: Any, stored: dict, earlier: str, may_differ: Iterable[str] = ()) -> None:
    """A one-line UserError when ``cfg`` differs from ``stored`` outside ``may_differ``; ``earlier`` says
    where ``stored`` comes from ("the checkpoint in OUT was trained with")."""
    diff = config_differences(cfg, stored, may_differ)
    if diff:
        name, new, old = diff[0]
        more = f"; also differs: {', '.join(d[0] for d in diff[1:])}" if len(diff) > 1 else ""
        raise UserError(
            f"{command} --resume: {name} is {new!r} but {earlier} {old!r} (start a new --out or drop the change{more})"
        )


def _stored_config(meta: dict, out: Path) -> dict | None:
    stored = (meta.get("extra") or {}).get("config")
    if isinstance(stored, dict):
        return stored
    cfg_file = out / "config.yaml"
    if cfg_file.is_file():  # a checkpoint from before the config was kept in it
        import yaml

        try:
            data = yaml.safe_load(cfg_file.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            raise UserError(f"{cfg_file}: not valid YAML; cannot check --resume against the earlier config") from None
        return data if isinstance(data, dict) else None
    return None


def earlier_checkpoint_step(directory: str | Path) -> int | None:
    """The step of the latest checkpoint in ``directory`` (None when it holds none)."""
    found = Checkpointer(directory).all()
    return found[-1][0] if found else None


def refuse_earlier_run(command: str, directory: str | Path) -> None:
    """One-line UserError when ``directory`` holds checkpoints and the caller is not resuming."""
    step = earlier_checkpoint_step(directory)
    if step is not None:
        raise UserError(
            f"{command}: {directory} holds checkpoints of an earlier run (step {step}); "
            f"pass --resume to continue it or choose a new --out"
        )


@dataclass
class RunStart:
    """Where a training loop starts, decided by :func:`start_run`."""

    command: str
    out: Path
    checkpointer: Checkpointer
    config: dict  # the resolved config, stored in every checkpoint's metadata
    logs: tuple[Path, ...]  # the JSON-lines logs of the run; the first is the train log
    steps_key: str
    max_steps: int
    is_main: bool = True
    step: int = 0  # the checkpoint's step (0: a run from scratch)
    checkpoint: Path | None = None
    trained_max_steps: int | None = None  # the step budget the checkpoint's run had
    lr_follows_steps: bool = True
    removed: list[Path] = field(default_factory=list)  # stale temporary files deleted

    @property
    def resumed(self) -> bool:
        return self.checkpoint is not None

    @property
    def steps_changed(self) -> bool:
        return self.resumed and self.trained_max_steps is not None and self.trained_max_steps != self.max_steps

    @property
    def nothing_to_train(self) -> bool:
        return self.resumed and self.step >= self.max_steps

    def load(self, **objects: Any) -> dict:
        """Restore the chosen checkpoint into ``objects`` (model, optimizer, ema, scheduler, RNGs)."""
        if self.checkpoint is None:
            raise RuntimeError("RunStart.load: no checkpoint was chosen (the run starts from scratch)")
        meta = load_checkpoint(self.checkpoint, **objects)
        if meta.get("step") != self.step:
            raise UserError(f"{self.checkpoint}: holds step {meta.get('step')}, expected {self.step}")
        return meta

    def save(self, step: int, **objects: Any) -> Path:
        """Fsync the logs, then write checkpoint ``step`` with the config in its metadata."""
        for log in self.logs:
            fsync_file(log)
        return self.checkpointer.save(step, extra={"config": self.config, "command": self.command}, **objects)

    def log_rows(self) -> list[dict]:
        """The train log's measurement rows (event rows such as a changed step budget left out)."""
        return [r for r in read_log(self.logs[0]) if isinstance(r, dict) and "event" not in r]

    def final_row(self) -> dict:
        """For a resume with nothing left to train: the last row logged at or before the checkpoint
        step, or just the step when none was logged."""
        rows = [r for r in self.log_rows() if r.get("step", 0) <= self.step]
        return rows[-1] if rows else {"step": self.step}

    def metrics(self) -> dict:
        """What metrics.json records about the resume: ``resumed_from`` and every step-budget change."""
        out: dict[str, Any] = {}
        if self.resumed:
            out["resumed_from"] = self.step
        changes = [
            {k: r[k] for k in ("step", "from", "to", "note") if k in r}
            for r in read_log(self.logs[0])
            if isinstance(r, dict) and r.get("event") == CHANGE_EVENT
        ]
        if changes:
            out[f"{self.steps_key}_changed"] = changes
        return out

    def _note_change(self) -> None:
        old, new, step = self.trained_max_steps, self.max_steps, self.step
        schedule = (
            f"the LR schedule follows {self.steps_key}={new} from step {step} on"
            if self.lr_follows_steps
            else f"the LR schedule does not depend on {self.steps_key}"
        )
        row = {"step": step, "event": CHANGE_EVENT, "from": old, "to": new, "note": schedule}
        log = self.logs[0]
        # a second resume from the same checkpoint replaces the row instead of repeating it
        truncate_jsonl(
            log, lambda r: not (isinstance(r, dict) and r.get("event") == CHANGE_EVENT and r.get("step") == step)
        )
        append_jsonl(log, row)
        print(
            f"{self.command} --resume: {self.steps_key} {old} -> {new} at step {step}; {schedule}",
            file=sys.stderr,
            flush=True,
        )


def start_run(
    command: str,
    cfg: Any,
    out: str | Path,
    *,
    resume: bool,
    fresh: bool = False,
    may_differ: Iterable[str] = RUN_CONTROL,
    steps_key: str = "max_steps",
    keep_last: int = 2,
    logs: Iterable[str] = ("train_log.jsonl",),
    is_main: bool = True,
    lr_follows_steps: bool = True,
) -> RunStart:
    """Check how a run may start in ``out`` (module docstring) and, on rank 0 once the checks pass,
    clean what a crash left; nothing is written before a check fails.

    ``fresh`` (not with ``resume``) starts from scratch after deleting the run's own checkpoints
    and ``logs``; without it an ``out`` holding checkpoints is an error unless ``resume``.
    """
    if resume and fresh:
        raise UserError(f"{command}: resume and fresh exclude each other")
    out = Path(out)
    ckpt = Checkpointer(out / "checkpoints", keep_last=keep_last)
    max_steps = getattr(cfg, steps_key)
    state = RunStart(
        command=command,
        out=out,
        checkpointer=ckpt,
        config=_plain(cfg),
        logs=tuple(out / name for name in logs),
        steps_key=steps_key,
        max_steps=max_steps,
        is_main=is_main,
        lr_follows_steps=lr_follows_steps,
    )
    found = ckpt.all()
    latest = found[-1] if found else None
    if not resume:
        if latest is not None and not fresh:
            refuse_earlier_run(command, ckpt.dir)
    elif latest is not None:
        step, path = latest
        meta = read_metadata(path)
        stored = _stored_config(meta, out)
        if stored is not None:
            check_same_config(command, cfg, stored, f"the checkpoint in {out} was trained with", may_differ)
            trained = _lookup(stored, steps_key)
            state.trained_max_steps = trained if isinstance(trained, int) else None
        else:
            print(
                f"{command} --resume: {path} carries no config and {out / 'config.yaml'} is missing; "
                "the config cannot be checked against the earlier run",
                file=sys.stderr,
                flush=True,
            )
        if max_steps < step:
            raise UserError(
                f"{command} --resume: {steps_key} is {max_steps} but the checkpoint in {ckpt.dir} is "
                f"at step {step} (pass {steps_key} >= {step} or start a new --out)"
            )
        state.step, state.checkpoint = step, path
    if is_main:  # every check passed: from here on the run may write
        if fresh:
            ckpt.remove_all()
            for log in state.logs:
                log.unlink(missing_ok=True)
        state.removed = ckpt.remove_stale_temporaries()
        for log in state.logs:
            truncate_log(log, state.step)
        if state.steps_changed:
            state._note_change()
    return state


def summary(metrics: dict) -> str:
    """The tail of a training command's last console line: the final loss (when one was logged)
    and where a resumed run continued from."""
    loss = (metrics.get("final") or {}).get("loss")
    text = f"final loss {loss:.4f}" if isinstance(loss, (int, float)) and math.isfinite(loss) else "no loss logged"
    if "resumed_from" in metrics:
        start = metrics["resumed_from"]
        if start >= metrics.get("steps", start + 1):
            text += f" (nothing left to train: model/ re-exported from the step-{start} checkpoint)"
        else:
            text += f" (resumed from step {start})"
    return text
