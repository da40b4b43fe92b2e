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


def save_dit(directory: Path, model: DiT, state: dict, rae_dir: Path, alpha: float, class_names: list[str]) -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{DIT_WEIGHTS}.tmp"
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, str(tmp))
    tmp.replace(directory / DIT_WEIGHTS)
    atomic_write_json(
        directory / DIT_CONFIG,
        {
            "dit": model.cfg.__dict__,
            "rae": str(Path(rae_dir).resolve()),
            "shift_alpha": alpha,
            "class_names": class_names,
        },
    )


def load_dit(directory: str | Path) -> tuple[DiT, dict]:
    """A trained DiT (EMA weights) and its metadata (``rae`` path, ``shift_alpha``, ``class_names``)."""
    from safetensors.torch import load_file

    directory = model_dir(directory, DIT_CONFIG)
    if not (directory / DIT_CONFIG).is_file():
        raise UserError(f"{directory}: no trained DiT found (expected {DIT_CONFIG} there or in {directory}/model)")
    meta = read_json(directory / DIT_CONFIG, "DiT config")
    if not isinstance(meta, dict) or "dit" not in meta:
        raise UserError(f"{directory / DIT_CONFIG}: not a DiT config (expected an object with 'dit')")
    model = DiT(DiTConfig(**meta["dit"]))
    model.load_state_dict(load_file(str(directory / DIT_WEIGHTS)))
    return model.eval(), meta
