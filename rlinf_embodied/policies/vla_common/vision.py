"""Prismatic's fused vision backbone and projector, on transformers' DINOv2-with-registers and SigLIP.

Upstream (timm featurizers) reads both ViTs at the output of their second-to-last block, without the
final norm, and keeps only the patch tokens (no CLS / register tokens). We build each ViT with only the
blocks that feed that output (depth - 1), drop the unused final norms, and call `embeddings` then
`encoder` directly, so every parameter takes part in the forward pass (FSDP and the gradient tests need
that). Per camera image the patch features of both ViTs are concatenated along the feature axis
(N, P, 1024 + 1152) and the projector maps them to the LLM width; several cameras are concatenated
along the patch axis, main camera first.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel, SiglipVisionConfig, SiglipVisionModel

from .config import PrismaticVLAConfig

# Per-backbone input normalisation of Prismatic's "dinosiglip" image transform.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIGLIP_MEAN, SIGLIP_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


# DINOv2's attention weights are named by the installed transformers: 5.x `attention.q_proj` ... `attention.o_proj`,
# 4.x `attention.attention.query` ... `attention.output.dense`. A checkpoint saved under one loads under the other.
DINO_ATTENTION_NEW_TO_OLD = {
    "q_proj": "attention.query",
    "k_proj": "attention.key",
    "v_proj": "attention.value",
    "o_proj": "output.dense",
}
DINO_ATTENTION_OLD_TO_NEW = {old: new for new, old in DINO_ATTENTION_NEW_TO_OLD.items()}
DINO_ATTENTION_KEY = re.compile(
    r"^(?P<layer>.*\.encoder\.layer\.\d+\.attention\.)(?P<name>q_proj|k_proj|v_proj|o_proj|attention\.query|"
    r"attention\.key|attention\.value|output\.dense)(?P<param>\.(?:weight|bias))$"
)


def match_dino_attention_names(state: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    """`state` with its DINOv2 attention weights renamed to the layout of the model whose state-dict keys are
    `model_keys`, where the checkpoint was saved under the other transformers layout (stop 62: an OpenVLA-OFT
    checkpoint trained on the GPU machine's transformers 4.x failed to load under 5.x, "missing
    ...attention.q_proj.weight, unexpected ...attention.attention.query.weight"). Other keys pass unchanged."""
    renamed = {}
    for key, value in state.items():
        match = None if key in model_keys else DINO_ATTENTION_KEY.match(key)
        if match is not None:
            name = match["name"]
            other = DINO_ATTENTION_NEW_TO_OLD.get(name) or DINO_ATTENTION_OLD_TO_NEW[name]
            candidate = f"{match['layer']}{other}{match['param']}"
            key = candidate if candidate in model_keys else key
        renamed[key] = value
    return renamed


def dino_config(cfg: PrismaticVLAConfig) -> Dinov2WithRegistersConfig:
    config = Dinov2WithRegistersConfig(
        hidden_size=cfg.dino_hidden_size,
        num_hidden_layers=cfg.dino_num_layers - 1,
        num_attention_heads=cfg.dino_num_heads,
        mlp_ratio=cfg.dino_intermediate_size // cfg.dino_hidden_size,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        num_register_tokens=cfg.dino_num_register_tokens,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        layerscale_value=1e-5,
        qkv_bias=True,
    )
    config._attn_implementation = "sdpa"
    return config


def siglip_config(cfg: PrismaticVLAConfig) -> SiglipVisionConfig:
    config = SiglipVisionConfig(
        hidden_size=cfg.siglip_hidden_size,
        num_hidden_layers=cfg.siglip_num_layers - 1,
        num_attention_heads=cfg.siglip_num_heads,
        intermediate_size=cfg.siglip_intermediate_size,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6,
        vision_use_head=False,
    )
    config._attn_implementation = "sdpa"
    return config


def vit_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a DINOv2 or SigLIP vision model (transformers 4.x nests SigLIP)."""
    inner = getattr(model, "vision_model", model)
    encoder = inner.encoder
    return list(getattr(encoder, "layer", None) or encoder.layers)


class FusedVisionBackbone(nn.Module):
    """uint8 cameras -> patch features (N, num_images * P, dino_width + siglip_width)."""

    def __init__(self, cfg: PrismaticVLAConfig):
        super().__init__()
        self.image_size = cfg.image_size
        self.featurizer = Dinov2WithRegistersModel(dino_config(cfg))
        self.featurizer.layernorm = nn.Identity()  # upstream reads pre-norm block outputs
        self.featurizer.embeddings.mask_token.requires_grad_(False)  # only used for masked pre-training
        self.num_prefix_tokens = 1 + cfg.dino_num_register_tokens
        self.fused_featurizer = SiglipVisionModel(siglip_config(cfg))
        inner = getattr(self.fused_featurizer, "vision_model", self.fused_featurizer)
        inner.post_layernorm = nn.Identity()
        for name, (mean, std) in {"dino": (IMAGENET_MEAN, IMAGENET_STD), "siglip": (SIGLIP_MEAN, SIGLIP_STD)}.items():
            self.register_buffer(f"{name}_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
            self.register_buffer(f"{name}_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def resize(self, rgb: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 3, S, S) float in [0, 1], Prismatic's "resize-naive" (no crop, no pad)."""
        images = rgb.permute(0, 3, 1, 2).float() / 255.0
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(
                images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True
            ).clamp(0.0, 1.0)
        return images

    def featurize(self, images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(M, 3, S, S) in [0, 1] -> (M, P, Dd + Ds)."""
        dino_in = ((images - self.dino_mean) / self.dino_std).to(dtype)
        siglip_in = ((images - self.siglip_mean) / self.siglip_std).to(dtype)
        dino_tokens = self.featurizer.encoder(self.featurizer.embeddings(dino_in)).last_hidden_state
        siglip_model = getattr(self.fused_featurizer, "vision_model", self.fused_featurizer)
        siglip_tokens = siglip_model.encoder(inputs_embeds=siglip_model.embeddings(siglip_in)).last_hidden_state
        return torch.cat([dino_tokens[:, self.num_prefix_tokens :], siglip_tokens], dim=-1)

    def forward(self, cameras: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        batch = cameras[0].shape[0]
        device = self.dino_mean.device
        images = torch.cat([self.resize(camera.to(device), dtype) for camera in cameras])  # (C * N, 3, S, S)
        features = self.featurize(images, dtype)  # (C * N, P, D)
        features = features.reshape(len(cameras), batch, *features.shape[1:]).transpose(0, 1)
        return features.reshape(batch, -1, features.shape[-1])


class PrismaticProjector(nn.Module):
    """Prismatic's fused GELU MLP: vision_dim -> 4 * vision_dim -> llm_dim -> llm_dim."""

    def __init__(self, vision_dim: int, llm_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
        self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
        self.fc3 = nn.Linear(llm_dim, llm_dim)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.gelu(self.fc2(F.gelu(self.fc1(patches)))))
