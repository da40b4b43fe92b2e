"""The representation autoencoder: frozen encoder + latent statistics + trained ViT decoder.

``encode(x)``: images in [0, 1] -> the frozen encoder's latent, normalised per element with the
data set's statistics (the space the diffusion model works in). ``decode(z)``: de-normalise,
run the ViT decoder, de-normalise the pixels with the encoder's mean/std -> images in [0, 1]
(docs/papers.md s1.2, s1.3). ``save_pretrained`` / ``from_pretrained`` store the decoder weights and the
statistics as safetensors and everything else (encoder spec, decoder config) as JSON; the
encoder's own weights stay where they came from (a bundled package, a hub id or a directory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from genrep.core.errors import UserError
from genrep.core.files import read_json
from genrep.core.rundir import atomic_write_json
from genrep.rae.decoder import DecoderConfig, ViTDecoder
from genrep.rae.encoders import ENCODERS, FrozenEncoder, build_encoder
from genrep.rae.stats import LatentStats

CONFIG_NAME = "rae_config.json"
WEIGHTS_NAME = "rae.safetensors"


# decoder config fields of RAE directories written before genrep followed the reference decoder:
# a directory whose decoder config lacks them was trained with these values
LEGACY_DECODER = {"layer_norm_eps": 1e-6, "pos_order": "row-col", "init": "xavier"}


def _spec_pixels(spec: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:  # (mean, std)
    """The pixel mean/std an encoder spec stands for, without building the encoder: its own values
    (transformers encoders record them) or the registered defaults (effnet-lite0)."""
    name = spec.get("name")
    if name not in ENCODERS:
        raise UserError(f"unknown encoder '{name}' (known: {', '.join(ENCODERS)})")
    mean = spec.get("pixel_mean") or ENCODERS[name]["pixel_mean"]
    std = spec.get("pixel_std") or ENCODERS[name]["pixel_std"]
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


class RAE(nn.Module):
    """Frozen encoder + latent statistics + ViT decoder; bytetriper/RAE src/stage1/rae.py:16-114.

    ``encoder`` is a built :class:`FrozenEncoder` or its spec (``FrozenEncoder.spec()``, a dict). From
    a spec the encoder is built on the first access of :attr:`encoder` (the first ``encode``), so
    decoding needs no encoder weights: the latent shape comes from the decoder config and the pixel
    mean/std from the spec.
    """

    pixel_mean: torch.Tensor  # buffers registered in __init__
    pixel_std: torch.Tensor

    def __init__(self, encoder: FrozenEncoder | dict[str, Any], stats: LatentStats, decoder: ViTDecoder):
        super().__init__()
        if isinstance(encoder, FrozenEncoder):
            self.encoder_spec: dict[str, Any] = encoder.spec()
            shape = encoder.latent_shape
            mean, std = tuple(encoder.pixel_mean), tuple(encoder.pixel_std)
        else:
            self.encoder_spec = dict(encoder)
            g = decoder.cfg.grid
            shape = (decoder.cfg.latent_channels, g, g)
            mean, std = _spec_pixels(self.encoder_spec)
        c, h, w = shape
        if decoder.cfg.latent_channels != c or decoder.cfg.grid != h or h != w:
            raise ValueError(f"decoder {decoder.cfg} does not fit the encoder latent {shape}")
        if tuple(stats.mean.shape) != shape:
            raise ValueError(f"statistics of shape {tuple(stats.mean.shape)} do not fit latent {shape}")
        self._latent_shape = shape
        self._encoder: FrozenEncoder | None = encoder if isinstance(encoder, FrozenEncoder) else None
        self.stats = stats
        self.decoder = decoder
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def encoder(self) -> FrozenEncoder:
        """The frozen encoder, built from :attr:`encoder_spec` on first use (then on this RAE's device)."""
        if self._encoder is None:
            enc = build_encoder(**self.encoder_spec)
            if tuple(enc.latent_shape) != self._latent_shape:
                raise UserError(
                    f"encoder '{enc.name}' from '{enc.source}' gives latents {enc.latent_shape}, "
                    f"but this RAE's decoder expects {self._latent_shape}"
                )
            if (enc.pixel_mean, enc.pixel_std) != _spec_pixels(self.encoder_spec):
                raise UserError(f"encoder '{enc.name}' from '{enc.source}' has other pixel mean/std than this RAE")
            self._encoder = enc.to(self.pixel_mean.device)
        return self._encoder

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self._latent_shape

    @property
    def image_size(self) -> int:
        return self.decoder.cfg.image_size

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1] -> normalised latent [B, C, h, w] (rae.py:77-95, without the
        training-time noise, which genrep adds in train-decoder)."""
        return self.stats.normalize(self.encoder.encode(images))

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """A raw (un-normalised) encoder latent [B, C, h, w] -> images [B, 3, H, W] in pixel space,
        de-normalised with the encoder's mean/std and **not clamped** (values can leave [0, 1])."""
        out = self.decoder(z)
        return out * self.pixel_std + self.pixel_mean

    def decode(self, zn: torch.Tensor) -> torch.Tensor:
        """A normalised latent [B, C, h, w] -> images [B, 3, H, W] in pixel space ([0, 1] for data-like
        inputs), **not clamped**, as the reference's RAE.decode (rae.py:97-109)."""
        return self.decode_raw(self.stats.denormalize(zn))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))

    # ------------------------------------------------------------------ persistence
    def config(self) -> dict:
        return {"encoder": self.encoder_spec, "decoder": self.decoder.cfg.to_dict(), "stats_eps": self.stats.eps}

    def save_pretrained(self, directory: str | Path, decoder_state: dict | None = None) -> Path:
        """Write ``rae_config.json`` and ``rae.safetensors`` (decoder weights, latent statistics).

        ``decoder_state`` replaces the decoder weights (e.g. the EMA weights at the end of training).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = decoder_state if decoder_state is not None else self.decoder.state_dict()
        tensors = {f"decoder.{k}": v.detach().cpu().contiguous().clone() for k, v in state.items()}
        tensors["stats.mean"] = self.stats.mean.detach().cpu().contiguous()
        tensors["stats.var"] = self.stats.var.detach().cpu().contiguous()
        tmp = directory / f".{WEIGHTS_NAME}.tmp"
        save_file(tensors, str(tmp))
        tmp.replace(directory / WEIGHTS_NAME)
        atomic_write_json(directory / CONFIG_NAME, self.config())
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, encoder: FrozenEncoder | None = None) -> "RAE":
        """Load a saved RAE; the encoder is built from its spec on first use unless one is given."""
        directory = Path(directory)
        cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if not cfg_path.is_file() or not w_path.is_file():
            raise UserError(f"{directory}: not an RAE directory (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
        cfg = read_json(cfg_path, "RAE config")
        if not isinstance(cfg, dict) or "encoder" not in cfg:
            raise UserError(f"{cfg_path}: not an RAE config (expected an object with 'encoder')")
        if not isinstance(cfg["encoder"], dict) or not isinstance(cfg.get("decoder"), dict):
            raise UserError(f"{cfg_path}: 'encoder' and 'decoder' must be objects")
        tensors = load_file(str(w_path))
        stats = LatentStats(tensors["stats.mean"], tensors["stats.var"], eps=cfg.get("stats_eps", 1e-5))
        dec_cfg = cfg["decoder"] if "pos_order" in cfg["decoder"] else {**LEGACY_DECODER, **cfg["decoder"]}
        try:
            decoder = ViTDecoder(DecoderConfig(**dec_cfg))
        except (TypeError, ValueError) as exc:
            raise UserError(f"{cfg_path}: 'decoder': {exc}") from None
        decoder.load_state_dict({k[len("decoder.") :]: v for k, v in tensors.items() if k.startswith("decoder.")})
        return cls(encoder if encoder is not None else cfg["encoder"], stats, decoder).eval()
