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

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from genrep.core.errors import UserError
from genrep.core.files import read_json
from genrep.core.rundir import atomic_write_json
from genrep.rae.decoder import DecoderConfig, ViTDecoder
from genrep.rae.encoders import FrozenEncoder, build_encoder
from genrep.rae.stats import LatentStats

CONFIG_NAME = "rae_config.json"
WEIGHTS_NAME = "rae.safetensors"


class RAE(nn.Module):
    def __init__(self, encoder: FrozenEncoder, stats: LatentStats, decoder: ViTDecoder):
        super().__init__()
        c, h, w = encoder.latent_shape
        if decoder.cfg.latent_channels != c or decoder.cfg.grid != h or h != w:
            raise ValueError(f"decoder {decoder.cfg} does not fit the encoder latent {encoder.latent_shape}")
        if tuple(stats.mean.shape) != tuple(encoder.latent_shape):
            raise ValueError(f"statistics of shape {tuple(stats.mean.shape)} do not fit latent {encoder.latent_shape}")
        self.encoder = encoder
        self.stats = stats
        self.decoder = decoder
        self.register_buffer("pixel_mean", torch.tensor(encoder.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(encoder.pixel_std).view(1, 3, 1, 1), persistent=False)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.encoder.latent_shape

    @property
    def image_size(self) -> int:
        return self.decoder.cfg.image_size

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1] -> normalised latent [B, C, h, w]."""
        return self.stats.normalize(self.encoder.encode(images))

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """A raw (un-normalised) encoder latent -> images in [0, 1] (not clamped)."""
        out = self.decoder(z)
        return out * self.pixel_std + self.pixel_mean

    def decode(self, zn: torch.Tensor) -> torch.Tensor:
        """A normalised latent -> images in [0, 1] (not clamped)."""
        return self.decode_raw(self.stats.denormalize(zn))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))

    # ------------------------------------------------------------------ persistence
    def config(self) -> dict:
        return {"encoder": self.encoder.spec(), "decoder": self.decoder.cfg.to_dict(), "stats_eps": self.stats.eps}

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
        """Load a saved RAE; the encoder is rebuilt from its spec unless one is given."""
        directory = Path(directory)
        cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if not cfg_path.is_file() or not w_path.is_file():
            raise UserError(f"{directory}: not an RAE directory (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
        cfg = read_json(cfg_path, "RAE config")
        if not isinstance(cfg, dict) or "encoder" not in cfg:
            raise UserError(f"{cfg_path}: not an RAE config (expected an object with 'encoder')")
        enc = encoder if encoder is not None else build_encoder(**cfg["encoder"])
        tensors = load_file(str(w_path))
        stats = LatentStats(tensors["stats.mean"], tensors["stats.var"], eps=cfg.get("stats_eps", 1e-5))
        decoder = ViTDecoder(DecoderConfig(**cfg["decoder"]))
        decoder.load_state_dict({k[len("decoder.") :]: v for k, v in tensors.items() if k.startswith("decoder.")})
        return cls(enc, stats, decoder).eval()
