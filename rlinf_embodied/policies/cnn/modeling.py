"""`cnn`: Gaussian actor-critic on camera images (plus state), NatureCNN-style.

Shared encoder, as in ManiSkill's rgb PPO baseline: a NatureCNN conv stack (ReLU, no padding) on
(N, H, W, 3) uint8 images scaled to [0, 1] and resized to `image_size` x `image_size` (bilinear, antialiased, as
the VLAs' image_size; no-op where the camera renders that size), adaptive average pooling to `pool_size` x
`pool_size`, a linear layer to `feature_dim`; when
state_dim > 0 a linear+ReLU state encoder of the same width is concatenated. Actor and critic heads are
one-hidden-layer MLPs on that latent. Only obs["rgb"] is used (a wrist camera is ignored).
Sampling, clipping and log-prob conventions: see ../mlp/gaussian.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..base import Obs
from ..mlp.gaussian import (
    ACTOR_OUT_GAIN,
    CRITIC_OUT_GAIN,
    HIDDEN_GAIN,
    GaussianActorCritic,
    build_mlp,
    check_state,
    init_linear,
    obs_tensor,
)
from .configuration import CNN_PRESETS, CNNConfig


class ImageEncoder(nn.Module):
    """(N, H, W, 3) uint8 -> (N, feature_dim)."""

    def __init__(self, config: CNNConfig):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for channels, kernel, stride in zip(config.conv_channels, config.conv_kernels, config.conv_strides):
            conv = nn.Conv2d(in_channels, channels, kernel, stride)
            nn.init.orthogonal_(conv.weight, HIDDEN_GAIN)
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU()]
            in_channels = channels
        self.convs = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(config.pool_size)
        self.proj = init_linear(nn.Linear(in_channels * config.pool_size**2, config.feature_dim), HIDDEN_GAIN)
        self.image_size = config.image_size

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        dtype = self.proj.weight.dtype
        images = rgb.permute(0, 3, 1, 2)  # (N, 3, H, W) uint8
        size = (self.image_size, self.image_size)
        if images.shape[-2:] != size:  # before: image_size was read by example_obs only, and any size went in
            images = images.float() / 255.0  # resized in float32 (antialiasing in bf16 is not supported everywhere)
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
            images = images.clamp(0.0, 1.0).to(dtype)  # (N, 3, image_size, image_size) in [0, 1]
        else:
            images = images.to(dtype) / 255.0  # in [0, 1]
        pooled = self.pool(self.convs(images))  # (N, C, pool, pool)
        return torch.relu(self.proj(pooled.flatten(1)))  # (N, feature_dim)


class CNNPolicy(GaussianActorCritic):
    name = "cnn"
    config_class = CNNConfig
    presets = CNN_PRESETS
    config: CNNConfig

    def __init__(self, config: CNNConfig):
        super().__init__(config)
        self.image_encoder = ImageEncoder(config)
        latent_dim = config.feature_dim
        self.state_encoder: nn.Module | None = None
        if config.state_dim > 0:
            self.state_encoder = nn.Sequential(
                init_linear(nn.Linear(config.state_dim, config.feature_dim), HIDDEN_GAIN), nn.ReLU()
            )
            latent_dim += config.feature_dim
        out_dim = config.action_chunk * config.action_dim
        self.actor = build_mlp(latent_dim, [config.head_hidden_dim], out_dim, ACTOR_OUT_GAIN, nn.ReLU)
        self.critic = build_mlp(latent_dim, [config.head_hidden_dim], 1, CRITIC_OUT_GAIN, nn.ReLU)

    def action_means_and_values(self, obs: Obs) -> tuple[torch.Tensor, torch.Tensor]:
        rgb = self._check_rgb(obs)  # (N, H, W, 3) uint8
        latent = self.image_encoder(rgb.to(self.log_std.device))  # (N, feature_dim)
        if self.state_encoder is not None:
            weight = self.state_encoder[0].weight
            state = check_state(obs, self.config.state_dim, self.name, weight.device, weight.dtype)
            if state.shape[0] != rgb.shape[0]:
                raise ValueError(f"cnn: obs['state'] has batch {state.shape[0]} but obs['rgb'] has {rgb.shape[0]}")
            latent = torch.cat([latent, self.state_encoder(state)], dim=-1)  # (N, 2 * feature_dim)
        return self.actor(latent), self.critic(latent).squeeze(-1)  # (N, chunk * A), (N,)

    def _check_rgb(self, obs: Obs) -> torch.Tensor:
        rgb = obs_tensor(obs, "rgb", self.name)
        if rgb.ndim != 4 or rgb.shape[-1] != 3:
            raise ValueError(f"cnn: obs['rgb'] has shape {tuple(rgb.shape)}; expected (N, H, W, 3)")
        if rgb.dtype != torch.uint8:
            raise TypeError(f"cnn: obs['rgb'] has dtype {rgb.dtype}; expected torch.uint8 (0-255 pixels)")
        if min(rgb.shape[1], rgb.shape[2]) < 1:
            raise ValueError(f"cnn: obs['rgb'] is {rgb.shape[1]}x{rgb.shape[2]}; expected images of at least 1x1")
        return rgb  # any size: the encoder resizes it to image_size

    def example_obs(self, batch_size: int) -> Obs:
        size = self.config.image_size
        obs: Obs = {
            "rgb": torch.randint(0, 256, (batch_size, size, size, 3), dtype=torch.uint8),  # (N, H, W, 3)
            "instruction": self._example_instructions(batch_size),
        }
        if self.config.state_dim > 0:
            obs["state"] = self._example_state(batch_size)
        return obs
