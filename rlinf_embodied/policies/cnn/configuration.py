"""`cnn` configuration and size presets (rgb observations, plus state when state_dim > 0)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..mlp.gaussian import GaussianPolicyConfig


@dataclass
class CNNConfig(GaussianPolicyConfig):
    state_dim: int = 0  # 0: images only
    # The side images are resized to before the conv stack (as the VLAs' image_size): a camera of another size is
    # resized (bilinear, antialiased), so policy.overrides.image_size=64 trains on 64 px whatever the env renders.
    # Before, it only sized example_obs, and the network took the env's camera size. Must be >= min_image_size().
    image_size: int = 128
    conv_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    conv_kernels: list[int] = field(default_factory=lambda: [8, 4, 3])
    conv_strides: list[int] = field(default_factory=lambda: [4, 2, 1])
    pool_size: int = 6  # adaptive average pooling to pool_size x pool_size: image size independence
    feature_dim: int = 256  # width of the image features and of the state features
    head_hidden_dim: int = 512  # one hidden layer in each of the actor and critic heads
    # Fields that shape the weights: a checkpoint's config.json fixes them (registry.check_overrides_fit_checkpoint)
    architecture_fields: ClassVar[tuple[str, ...]] = (
        "action_dim",
        "action_chunk",
        "state_dim",
        "conv_channels",
        "conv_kernels",
        "pool_size",
        "feature_dim",
        "head_hidden_dim",
    )

    def __post_init__(self) -> None:
        self.validate_common()
        # validate_common's type check refused non-int entries (before: [32.7, 64, 64] was truncated to [32, 64, 64],
        # [True, 2, 1] read as [1, 2, 1]); a tuple, Hydra's ListConfig or numpy ints become a plain int list here
        # (config.json stays plain JSON).
        for name in ("conv_channels", "conv_kernels", "conv_strides"):
            setattr(self, name, [int(v) for v in getattr(self, name)])
        lengths = {len(self.conv_channels), len(self.conv_kernels), len(self.conv_strides)}
        if len(lengths) != 1 or not self.conv_channels:
            raise ValueError(
                f"conv_channels {self.conv_channels}, conv_kernels {self.conv_kernels} and conv_strides "
                f"{self.conv_strides} must be non-empty and of equal length (one entry per conv layer)"
            )
        if min(self.conv_channels + self.conv_kernels + self.conv_strides) < 1:
            raise ValueError("conv_channels, conv_kernels and conv_strides must all be >= 1")
        for name in ("pool_size", "feature_dim", "head_hidden_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.image_size < self.min_image_size():
            raise ValueError(f"image_size={self.image_size} is below the conv stack's minimum {self.min_image_size()}")

    def camera_keys(self) -> tuple[str, ...]:
        return ("rgb",)

    def min_image_size(self) -> int:
        """Smallest image side for which every (unpadded) conv layer has an output of at least 1."""
        size = 1
        for kernel, stride in zip(reversed(self.conv_kernels), reversed(self.conv_strides)):
            size = (size - 1) * stride + kernel
        return size


CNN_PRESETS: dict[str, dict] = {
    # ~10k parameters, 32 x 32 images: for tests and CPU smoke runs.
    "tiny": dict(
        image_size=32,
        conv_channels=[8, 16, 16],
        conv_kernels=[4, 3, 3],
        conv_strides=[2, 2, 1],
        pool_size=2,
        feature_dim=32,
        head_hidden_dim=32,
    ),
    # ManiSkill's rgb PPO baseline (NatureCNN on 128 x 128 camera images, 256-d features, 512-d heads).
    "default": dict(image_size=128),
}
