"""A trained DiT on disk: ``dit_config.json`` (the :class:`~genrep.rae.dit.DiTConfig`, the RAE it
belongs to, the schedule shift and the class names) beside ``dit.safetensors`` (EMA weights).

``train-dit`` writes it into ``--out/model``; ``sample`` and the DiT evaluations read it back,
given either that folder or the run directory above it.
"""

from __future__ import annotations

from pathlib import Path

from genrep.core.errors import UserError
from genrep.core.files import read_json
from genrep.core.rundir import atomic_write_json, model_dir
from genrep.rae.dit import DiT, DiTConfig

DIT_CONFIG = "dit_config.json"
DIT_WEIGHTS = "dit.safetensors"


def save_dit(
    directory: Path, model: DiT, state: dict, rae_dir: Path | None, alpha: float, class_names: list[str] | None
) -> None:
    """Write ``dit_config.json`` + ``dit.safetensors``; ``rae_dir`` is None for a DiT converted without
    its stage-1 (``genrep rae sample`` then needs ``rae=DIR``)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{DIT_WEIGHTS}.tmp"
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, str(tmp))
    tmp.replace(directory / DIT_WEIGHTS)
    atomic_write_json(
        directory / DIT_CONFIG,
        {
            "dit": model.cfg.__dict__,
            "rae": str(Path(rae_dir).resolve()) if rae_dir is not None else None,
            "shift_alpha": alpha,
            "class_names": class_names,
        },
    )


def load_dit(directory: str | Path) -> DiT:
    """The DiT (EMA weights, eval mode) of a genrep DiT directory (``train-dit --out``, its ``model/``,
    or ``rae convert``'s ``dit/`` / ``guide/``)."""
    return read_dit(directory)[0]


def read_dit(directory: str | Path) -> tuple[DiT, dict]:
    """A trained DiT (EMA weights) and its metadata (``rae`` path or None, ``shift_alpha``, ``class_names``)."""
    from safetensors.torch import load_file

    directory = model_dir(directory, DIT_CONFIG)
    if not (directory / DIT_CONFIG).is_file():
        raise UserError(f"{directory}: no trained DiT found (expected {DIT_CONFIG} there or in {directory}/model)")
    meta = read_json(directory / DIT_CONFIG, "DiT config")
    if not isinstance(meta, dict) or "dit" not in meta:
        raise UserError(f"{directory / DIT_CONFIG}: not a DiT config (expected an object with 'dit')")
    try:
        cfg = DiTConfig(**meta["dit"])
    except TypeError as exc:
        raise UserError(f"{directory / DIT_CONFIG}: not a DiT config of this genrep version ({exc})") from None
    model = DiT(cfg)
    weights = directory / DIT_WEIGHTS
    if not weights.is_file():
        raise UserError(f"{directory}: {DIT_WEIGHTS} is missing")
    state = load_file(str(weights))
    expected = model.state_dict()
    for key in expected:
        if key not in state:
            raise UserError(f"{weights}: missing tensor {key!r} (written by an older genrep DiT? retrain or reconvert)")
        if tuple(state[key].shape) != tuple(expected[key].shape):
            raise UserError(
                f"{weights}: {key} has shape {tuple(state[key].shape)}, expected {tuple(expected[key].shape)}"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise UserError(f"{weights}: unexpected tensor {extra[0]!r} for this DiT config")
    model.load_state_dict(state)
    return model.eval(), meta
