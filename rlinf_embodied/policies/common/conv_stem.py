"""A convolutional stem for a ViT trained from scratch: "early convolutions" (Xiao et al., 2021,
"Early Convolutions Help Transformers See Better") in place of the patchify convolution.

A patchify convolution (kernel = stride = patch) sees each patch in isolation; a ViT trained from
scratch on a few hundred demonstrations then localises small objects (a 4 cm cube in a 96 px camera)
poorly. The stem reaches the same token grid with log2(patch) stride-2 3x3 convolutions (GroupNorm,
GELU), whose receptive fields overlap, then a 1x1 projection to the ViT width. Pretrained checkpoints
keep the patchify convolution: the stem is for the from-scratch presets.
"""

from __future__ import annotations

import math

import torch
from torch import nn

VISION_STEMS = ("patch", "conv")


def check_vision_stem(stem: str, patch_size: int) -> None:
    if stem not in VISION_STEMS:
        raise ValueError(f"vision_stem={stem!r} is not one of {list(VISION_STEMS)}")
    if stem == "conv" and (patch_size < 2 or patch_size & (patch_size - 1)):
        raise ValueError(
            f"vision_stem='conv' halves the image per layer, so vision_patch_size must be a power of two "
            f"(2, 4, 8, 16, ...), got {patch_size}"
        )


class ConvStem(nn.Module):
    """(N, 3, S, S) -> (N, width, S / patch, S / patch): a drop-in for the patchify nn.Conv2d."""

    def __init__(self, width: int, patch_size: int, base_channels: int = 32):
        super().__init__()
        check_vision_stem("conv", patch_size)
        layers: list[nn.Module] = []
        channels = 3
        for i in range(int(math.log2(patch_size))):
            out = min(width, base_channels * 2**i)
            layers += [
                nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False),
                nn.GroupNorm(min(8, out), out),
                nn.GELU(),
            ]
            channels = out
        layers.append(nn.Conv2d(channels, width, 1))
        self.layers = nn.Sequential(*layers)

    @property
    def weight(self) -> torch.Tensor:
        """The first convolution's weight: callers read `.weight.dtype` of the patchify conv it replaces."""
        return self.layers[0].weight

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.layers(pixels)
