"""pi0 configuration and size presets.

The "pi0-3b" preset is the published architecture (openpi `pi0` / LeRobot `lerobot/pi0`):
PaliGemma 3B = SigLIP So400m/14 at 224 px (27 layers, width 1152, mlp 4304, 16 heads) + a linear
projector + Gemma 2B (width 2048, depth 18, mlp 16384, 8 query heads, 1 KV head, head_dim 256,
vocab 257152), and the ~300M action expert `gemma_300m` (width 1024, depth 18, mlp 4096, 8 heads,
1 KV head, head_dim 256). Action chunk 50, 10 denoising steps, state/action padded to 32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..base import require_at_least, require_positive
from ..common.conv_stem import check_vision_stem
from ..flow.config import FLOW_ARCHITECTURE_FIELDS, SIGLIP_ARCHITECTURE_FIELDS, FlowPolicyConfig


@dataclass
class Pi0Config(FlowPolicyConfig):
    # SigLIP vision tower
    vision_patch_size: int = 14
    vision_hidden_size: int = 1152
    vision_intermediate_size: int = 4304
    vision_num_layers: int = 27
    vision_num_heads: int = 16
    # "patch": SigLIP's patchify convolution (pretrained checkpoints); "conv": a convolutional stem
    # (common/conv_stem.py) that localises small objects better when the tower trains from scratch
    vision_stem: str = "patch"
    # Gemma language model (the VLM prefix)
    vocab_size: int = 257152
    vlm_width: int = 2048
    vlm_depth: int = 18
    vlm_mlp_dim: int = 16384
    vlm_num_heads: int = 8
    num_kv_heads: int = 1  # shared by both models: the expert attends to the VLM's keys/values
    head_dim: int = 256
    # Gemma action expert (same depth, KV heads and head_dim as the VLM, narrower)
    expert_width: int = 1024
    expert_mlp_dim: int = 4096
    expert_num_heads: int = 8
    rope_theta: float = 10000.0
    # sinusoidal flow-time embedding periods (openpi)
    time_min_period: float = 4e-3
    time_max_period: float = 4.0
    # fields that shape the weights (a checkpoint's config.json fixes them): the towers' sizes and the I/O widths
    architecture_fields: ClassVar[tuple[str, ...]] = (
        FLOW_ARCHITECTURE_FIELDS
        + SIGLIP_ARCHITECTURE_FIELDS
        + (
            "vision_stem",
            "vocab_size",
            "vlm_width",
            "vlm_depth",
            "vlm_mlp_dim",
            "vlm_num_heads",
            "num_kv_heads",
            "head_dim",
            "expert_width",
            "expert_mlp_dim",
            "expert_num_heads",
        )
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require_at_least(self, 1, "vlm_depth", "vision_num_layers", "vision_patch_size")
        require_positive(self, "rope_theta", "time_min_period", "time_max_period")
        if self.image_size % self.vision_patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch {self.vision_patch_size}")
        check_vision_stem(self.vision_stem, self.vision_patch_size)


PI0_PRESETS: dict[str, dict] = {
    # ~0.15M parameters: every code path of the real model, fast on a CPU. Padded widths leave room
    # for the envs' state/action sizes (the pipeline passes state_dim/action_dim of the env).
    "tiny": dict(
        action_dim=7,
        action_chunk=4,
        state_dim=8,
        max_action_dim=16,
        max_state_dim=64,
        image_size=32,
        max_token_len=96,
        num_denoise_steps=4,
        value_hidden_dim=32,
        vision_patch_size=8,
        vision_hidden_size=32,
        vision_intermediate_size=64,
        vision_num_layers=2,
        vision_num_heads=2,
        vocab_size=260,
        vlm_width=64,
        vlm_depth=2,
        vlm_mlp_dim=128,
        vlm_num_heads=4,
        num_kv_heads=1,
        head_dim=16,
        expert_width=32,
        expert_mlp_dim=64,
        expert_num_heads=4,
    ),
    # ~22M parameters: pi0's architecture scaled down to train from scratch on one GPU (no pretrained
    # weights exist here) and to fit a 64 MiB checkpoint in bf16; 96 px cameras, byte-level prompts.
    "pi0-small": dict(
        action_dim=7,
        action_chunk=8,
        state_dim=8,
        max_action_dim=16,
        max_state_dim=64,
        image_size=96,
        max_token_len=96,
        num_denoise_steps=5,
        value_hidden_dim=256,
        vision_patch_size=12,
        vision_hidden_size=256,
        vision_intermediate_size=1024,
        vision_num_layers=4,
        vision_num_heads=4,
        vocab_size=260,
        vlm_width=384,
        vlm_depth=6,
        vlm_mlp_dim=1536,
        vlm_num_heads=6,
        num_kv_heads=1,
        head_dim=64,
        expert_width=256,
        expert_mlp_dim=1024,
        expert_num_heads=4,
    ),
    # Gradient checkpointing on: the actor scores the whole denoising chain with gradients, and without it
    # the default PPO minibatch (16 envs x 20 steps / 8 = 40 samples, two 224 px cameras) ran out of the H200's
    # 140 GB in the VLM prefix's activations (stop 32). Pass gradient_checkpointing=false to trade memory for speed.
    "pi0-3b": dict(
        action_dim=7, action_chunk=50, state_dim=8, num_denoise_steps=10, max_token_len=96, gradient_checkpointing=True
    ),
}
