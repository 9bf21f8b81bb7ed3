"""Config fields shared by OpenVLA and OpenVLA-OFT: the Prismatic VLM (fused DINOv2 + SigLIP vision,
3-layer GELU projector, Llama-2), the action tokenizer, the prompt, and the RL / training switches.

Defaults are the published OpenVLA-7B architecture (HF `openvla/openvla-7b`, `prismatic-7b` with
`dinosiglip-vit-so-224px`): DINOv2 ViT-L/14 with 4 registers (width 1024, 24 blocks, 16 heads, mlp 4096,
LayerScale) and SigLIP So400m/14 (width 1152, 27 blocks, 16 heads, mlp 4304) at 224 px, both read at the
second-to-last block (so only the first depth - 1 blocks are built); projector 2176 -> 8704 -> 4096 ->
4096; Llama-2 7B (width 4096, 32 layers, 32 heads, mlp 11008, RMSNorm eps 1e-5) with the vocabulary
32000 + <PAD> padded to 32064. Action tokens: 256 bins over [-1, 1] on the last 256 ids of the
32000-token Llama vocabulary (token = 32000 - bin, bin in 1..256).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..base import PolicyConfig, check_lora_settings, require_at_least, require_positive
from ...unread_settings import reject_ineffective_setting

# Randomly initialised presets have no checkpoint tokenizer and fall back to byte-level tokens: the
# OpenVLA prompt around the longest registered instruction (LIBERO's, 88 characters) is 136 of them.
PROMPT_TOKENS_BYTE_LEVEL = 160

PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"


@dataclass
class PrismaticVLAConfig(PolicyConfig):
    # ---- vision: DINOv2 (featurizer) + SigLIP (fused_featurizer), upstream depths ----
    image_size: int = 224
    patch_size: int = 14
    dino_hidden_size: int = 1024
    dino_num_layers: int = 24
    dino_num_heads: int = 16
    dino_intermediate_size: int = 4096
    dino_num_register_tokens: int = 4
    siglip_hidden_size: int = 1152
    siglip_num_layers: int = 27
    siglip_num_heads: int = 16
    siglip_intermediate_size: int = 4304
    num_images: int = 1  # 1: obs["rgb"]; 2: obs["rgb"] and obs["wrist_rgb"] (OpenVLA-OFT LIBERO)
    # ---- language model: Llama-2 ----
    vocab_size: int = 32064  # embedding rows (tokenizer vocabulary + pad, padded to a multiple of 64)
    hidden_size: int = 4096
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 32
    intermediate_size: int = 11008
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048
    pad_token_id: int = 32000
    # ---- action tokens and prompt ----
    n_action_bins: int = 256
    action_token_vocab_size: int = 32000  # upstream's "vocab_size" of the action tokenizer: token = this - bin
    max_token_len: int = 64  # prompt tokens after <BOS> (padded; a longer prompt is an error)
    lowercase_instruction: bool = True
    empty_token_id: int | None = 29871  # Llama's "" token, appended after "Out:" as at OpenVLA training time
    # ---- RL sampling ----
    temperature: float = 1.0  # action-token softmax temperature (act and evaluate use the same)
    # ---- heads and training switches ----
    add_value_head: bool = True
    value_hidden_dim: int = 1024
    freeze_vision_encoder: bool = False
    lora_rank: int = 0  # > 0: peft LoRA on the Llama projections; vision, projector, embeddings freeze
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    gradient_checkpointing: bool = False
    # act on a CUDA device replays everything after its host work (vision, prompt, decoding) from captured
    # CUDA graphs (common/cuda_graph.py), one per batch bucket; False runs it eagerly. No effect on CPU.
    act_cuda_graphs: bool = False
    act_compile: bool = False  # with act_cuda_graphs: torch.compile each part before capture (flow/config.py)
    value_head_fields: ClassVar[tuple[str, ...]] = ("value_hidden_dim",)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.validate_prismatic_fields()

    def camera_keys(self) -> tuple[str, ...]:
        return ("rgb", "wrist_rgb")[: self.num_images]

    def validate_prismatic_fields(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}")
        if self.num_images not in (1, 2):
            raise ValueError(f"num_images={self.num_images}; valid: 1 (rgb) or 2 (rgb + wrist_rgb)")
        if self.dino_intermediate_size % self.dino_hidden_size:
            raise ValueError(
                f"dino_intermediate_size={self.dino_intermediate_size} must be a multiple of "
                f"dino_hidden_size={self.dino_hidden_size} (DINOv2 uses an integer mlp_ratio)"
            )
        if min(self.dino_num_layers, self.siglip_num_layers) < 2:
            raise ValueError(
                "dino_num_layers and siglip_num_layers must be >= 2 (features come from the second-to-last block)"
            )
        if not 2 <= self.n_action_bins <= self.action_token_vocab_size <= self.vocab_size:
            raise ValueError(
                f"need 2 <= n_action_bins ({self.n_action_bins}) <= action_token_vocab_size "
                f"({self.action_token_vocab_size}) <= vocab_size ({self.vocab_size})"
            )
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 (use act(deterministic=True) for greedy)")
        require_at_least(self, 1, "image_size", "value_hidden_dim")
        require_at_least(self, 0, "lora_rank")
        require_positive(self, "rope_theta")
        check_lora_settings(self)
        if self.lora_rank > 0:  # apply_lora trains the adapters and the heads only: the vision encoder is frozen
            reject_ineffective_setting(
                self, "", "freeze_vision_encoder", f"lora_rank={self.lora_rank} freezes the vision encoder already"
            )

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def vision_dim(self) -> int:
        return self.dino_hidden_size + self.siglip_hidden_size


# Token settings of a randomly initialised preset, which has no checkpoint tokenizer: the byte-level
# tokenizer has 260 ids, so the 256 action tokens sit right above it (ids 260..515).
BYTE_LEVEL_TOKENS: dict = dict(
    vocab_size=520,
    pad_token_id=2,
    action_token_vocab_size=516,
    max_token_len=PROMPT_TOKENS_BYTE_LEVEL,
    empty_token_id=None,
)

# Shared tiny architecture (~0.2M parameters) for CPU tests: every code path of the real model.
TINY_PRISMATIC: dict = dict(
    image_size=32,
    patch_size=8,
    dino_hidden_size=32,
    dino_num_layers=2,
    dino_num_heads=2,
    dino_intermediate_size=64,
    dino_num_register_tokens=4,
    siglip_hidden_size=32,
    siglip_num_layers=2,
    siglip_num_heads=2,
    siglip_intermediate_size=64,
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=4,
    intermediate_size=128,
    max_position_embeddings=512,
    value_hidden_dim=32,
    **BYTE_LEVEL_TOKENS,
)
