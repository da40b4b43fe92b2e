"""RAE + DiT^DH: diffusion transformers with representation autoencoders (docs/papers.md section 1)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from genrep.rae.autoencoder import RAE
    from genrep.rae.dit import DiT

__all__ = ["load_dit", "load_rae"]


def load_dit(directory: str | Path) -> DiT:
    """The DiT of a genrep DiT directory (``dit_config.json`` + ``dit.safetensors``: a ``train-dit --out``,
    its ``model/``, or the ``dit/`` / ``guide/`` that ``genrep rae convert`` writes), EMA weights, eval
    mode, on the CPU. ``model(x, t, y)`` maps a noisy normalised latent [B, C, h, w], flow times t [B]
    (1 = noise) and labels y [B] (``num_classes`` = the null class) to the velocity."""
    from genrep.rae.dit_io import load_dit as _load

    return _load(directory)


def load_rae(directory: str | Path) -> RAE:
    """The RAE of a genrep RAE directory (``rae_config.json`` + ``rae.safetensors``, e.g. written by
    train-decoder or ``genrep rae convert``), in eval mode on the CPU.

    ``rae.decode(z)`` takes normalised latents ``[B, C, h, w]`` and returns images ``[B, 3, H, W]``
    in pixel space, not clamped (as the reference's RAE.decode). Decoding needs no encoder weights:
    the encoder is built from its spec on the first ``rae.encode``. Imports torch only when called.
    """
    from genrep.rae.autoencoder import RAE

    return RAE.from_pretrained(directory)
