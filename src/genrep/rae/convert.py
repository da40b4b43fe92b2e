"""``genrep rae convert --reference CONFIG.yaml``: a bytetriper/RAE YAML and the files it names ->
genrep directories that ``genrep rae sample`` runs exactly as the reference's ``sample.py`` /
``sample_ddp.py`` run that YAML.

Writes ``OUT/dit`` (the ``stage_2`` model, EMA weights), ``OUT/guide`` (the ``guidance_model`` when
the YAML has one), ``OUT/rae`` (the ``stage_1`` decoder and latent statistics, when the YAML has a
``stage_1`` block) and ``OUT/sample.yaml`` (the sampler and guidance settings, for
``genrep rae sample --config``). Everything is read and checked before anything is written, and the
directories appear only once complete.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from genrep.core.config import read_yaml
from genrep.core.errors import UserError
from genrep.core.rundir import atomic_write_bytes
from genrep.rae.convert_stage2 import load_reference_dit, sampling_from_reference, shift_from_misc
from genrep.rae.dit_io import save_dit


def _stage1(doc: dict, root: Path, where: str):
    from genrep.rae.convert_stage1 import rae_from_reference

    block = doc["stage_1"]
    if not isinstance(block, dict) or "params" not in block:
        raise UserError(f"{where}: stage_1 must be a mapping with params")
    return rae_from_reference(block["params"], root, f"{where}: stage_1.params")


def _install(out: Path, name: str, write) -> None:
    """``write(tmp)`` fills a scratch directory that then replaces ``out/name`` (whole or not at all)."""
    final, tmp = out / name, out / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    if final.exists():
        shutil.rmtree(final)
    tmp.replace(final)


def convert_reference(config: Path, root: Path, out: Path) -> dict[str, Any]:
    """Convert; returns a summary (what was written, the shift, the sampling settings). A YAML with
    only a ``stage_1`` block (``configs/stage1/pretrained/*.yaml``) gives ``OUT/rae`` alone."""
    doc = read_yaml(config)  # the reference's OmegaConf files are plain YAML (no interpolation)
    where = str(config)
    if "stage_2" not in doc:
        if doc.get("stage_1") is None:
            raise UserError(f"{where}: missing block 'stage_2' (or 'stage_1' for a decoder alone)")
        rae = _stage1(doc, root, where)
        out.mkdir(parents=True, exist_ok=True)
        _install(out, "rae", rae.save_pretrained)
        return {"written": ["rae"], "shift_alpha": None, "sampling": None, "dit": None}
    misc = doc.get("misc") or {}
    if not isinstance(misc, dict):
        raise UserError(f"{where}: misc must be a mapping")
    alpha = shift_from_misc(misc, f"{where}: misc")
    settings = sampling_from_reference(doc, where)
    model, _ = load_reference_dit(doc["stage_2"], root, f"{where}: stage_2")
    cfg = model.cfg
    latent = misc.get("latent_size", [768, 16, 16])
    if list(latent) != [cfg.in_channels, cfg.grid, cfg.grid]:
        raise UserError(
            f"{where}: misc.latent_size {list(latent)} does not match the DiT's latent "
            f"{[cfg.in_channels, cfg.grid, cfg.grid]}"
        )
    num_classes = misc.get("num_classes", 1000)
    if num_classes != cfg.num_classes:
        raise UserError(f"{where}: misc.num_classes {num_classes} does not match stage_2's {cfg.num_classes}")
    guide = None
    if settings["guidance"] == "autoguidance":
        block = (doc.get("guidance") or {}).get("guidance_model")
        if block is None:
            raise UserError(f"{where}: guidance.method autoguidance needs guidance.guidance_model")
        guide, _ = load_reference_dit(block, root, f"{where}: guidance.guidance_model")
        gc = guide.cfg
        if (gc.in_channels, gc.grid, gc.num_classes) != (cfg.in_channels, cfg.grid, cfg.num_classes):
            raise UserError(f"{where}: guidance.guidance_model works on another latent or label set than stage_2")
    rae = None
    if doc.get("stage_1") is not None:
        rae = _stage1(doc, root, where)
        if tuple(rae.latent_shape) != (cfg.in_channels, cfg.grid, cfg.grid):
            raise UserError(f"{where}: stage_1's latent {tuple(rae.latent_shape)} does not match stage_2's")

    # everything is read and valid: write
    out.mkdir(parents=True, exist_ok=True)
    written = []
    rae_dir = out / "rae" if rae is not None else None
    class_names = [str(i) for i in range(cfg.num_classes)]
    parts: list[tuple[str, Any]] = [("dit", model)] + ([("guide", guide)] if guide is not None else [])
    if rae is not None:
        parts.append(("rae", rae))
    for name, obj in parts:
        if name == "rae":
            _install(out, name, obj.save_pretrained)
        else:
            _install(out, name, lambda tmp, m=obj: save_dit(tmp, m, m.state_dict(), rae_dir, alpha, class_names))
        written.append(name)
    sample_cfg: dict[str, Any] = {"dit": str((out / "dit").resolve()), **settings}
    if guide is not None:
        sample_cfg["guide"] = str((out / "guide").resolve())
    header = f"# genrep rae sample --config: converted from {config}\n"
    atomic_write_bytes(out / "sample.yaml", (header + yaml.safe_dump(sample_cfg, sort_keys=False)).encode())
    written.append("sample.yaml")
    return {"written": written, "shift_alpha": alpha, "sampling": settings, "dit": cfg.__dict__}
