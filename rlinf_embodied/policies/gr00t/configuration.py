"""GR00T-N1.5 configuration and size presets.

"gr00t-n1.5-3b" follows the published nvidia/GR00T-N1.5-3B config:

* Backbone (Eagle 2.5 VL): SigLIP So400m/14 at 224 px (27 layers, width 1152, mlp 4304, 16 heads),
  pixel shuffle 0.5 (256 patches -> 64 tokens of width 4 * 1152), a 2-layer MLP connector
  (LayerNorm, Linear, GELU, Linear) into Qwen3-1.7B (width 2048, mlp 6144, 16 query / 8 KV heads,
  head_dim 128, vocab 151680, rope theta 1e6). Only the first `select_layer` = 12 LLM layers exist:
  GR00T reads the 12th layer's (final-normed) hidden states and drops the rest.
* Action head: LayerNorm "vlln" + a 4-layer self-attention transformer (32 heads x 64) over the VLM
  tokens; a 16-layer DiT (32 heads x 48 = 1536 wide, AdaLayerNorm on the flow time, cross-attention
  to the 2048-wide VLM tokens in even blocks, self-attention in odd blocks, output 1024); state
  encoder (64 -> 1024 -> 1536), action encoder (32 -> 1536 with the time), action decoder
  (1024 -> 1024 -> 32), 32 learned "future" tokens, a 1024-row position embedding for action tokens.
  Action horizon 16, 4 denoising steps, 1000 time buckets, Beta(1.5, 1) time sampling, s = 0.999.

The upstream encoders/decoder hold one weight set per embodiment (32); this port keeps one (the
converter picks it by `embodiment_id`). Dropout (0.2 upstream) is left out: RL needs `act` and
`evaluate` to compute the same function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..base import require_at_least, require_positive
from ..flow.config import FLOW_ARCHITECTURE_FIELDS, SIGLIP_ARCHITECTURE_FIELDS, FlowPolicyConfig


@dataclass
class Gr00tConfig(FlowPolicyConfig):
    # SigLIP vision tower + Eagle connector
    vision_patch_size: int = 14
    vision_hidden_size: int = 1152
    vision_intermediate_size: int = 4304
    vision_num_layers: int = 27
    vision_num_heads: int = 16
    downsample_ratio: float = 0.5  # pixel shuffle: (H/p)^2 patches -> (H/p * r)^2 tokens
    # Qwen3 language model, truncated to its first `select_layer` layers
    vocab_size: int = 151680
    llm_hidden_size: int = 2048
    llm_intermediate_size: int = 6144
    llm_num_heads: int = 16
    llm_num_kv_heads: int = 8
    llm_head_dim: int = 128
    llm_rope_theta: float = 1000000.0
    select_layer: int = 12
    backbone_project_to_dim: int | None = None  # GR00T's optional eagle_linear (None in N1.5)
    # action head
    vl_self_attention_layers: int = 4
    vl_self_attention_heads: int = 32
    vl_self_attention_head_dim: int = 64
    dit_layers: int = 16
    dit_heads: int = 32
    dit_head_dim: int = 48
    input_embedding_dim: int = 1536  # = dit_heads * dit_head_dim
    hidden_size: int = 1024  # DiT output width, decoder/state-encoder hidden width
    num_target_vision_tokens: int = 32  # learned "future" tokens
    max_seq_len: int = 1024  # rows of the action position embedding
    num_timestep_buckets: int = 1000
    noise_beta_alpha: float = 1.5
    noise_beta_beta: float = 1.0
    noise_s: float = 0.999
    # fields that shape the weights (a checkpoint's config.json fixes them): the towers' sizes and the I/O widths
    architecture_fields: ClassVar[tuple[str, ...]] = (
        FLOW_ARCHITECTURE_FIELDS
        + SIGLIP_ARCHITECTURE_FIELDS
        + (
            "downsample_ratio",
            "vocab_size",
            "llm_hidden_size",
            "llm_intermediate_size",
            "llm_num_heads",
            "llm_num_kv_heads",
            "llm_head_dim",
            "select_layer",
            "backbone_project_to_dim",
            "vl_self_attention_layers",
            "dit_layers",
            "input_embedding_dim",  # = dit_heads * dit_head_dim (the heads split it: their sizes shape nothing)
            "hidden_size",
            "num_target_vision_tokens",
            "max_seq_len",
        )
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require_at_least(self, 1, "select_layer", "num_timestep_buckets", "vision_patch_size")
        require_positive(self, "llm_rope_theta", "noise_beta_alpha", "noise_beta_beta")
        if not 0 < self.noise_s <= 1:
            raise ValueError(
                f"noise_s={self.noise_s} must lie in (0, 1] (the flow time is (noise_s - a Beta sample) / noise_s; "
                "GR00T-N1.5 uses 0.999)"
            )
        self.check_downsample_ratio()
        if self.dit_heads * self.dit_head_dim != self.input_embedding_dim:
            raise ValueError("dit_heads * dit_head_dim must equal input_embedding_dim")
        if self.vl_self_attention_heads * self.vl_self_attention_head_dim != self.backbone_width:
            raise ValueError("vl_self_attention_heads * vl_self_attention_head_dim must equal the backbone width")
        if self.action_chunk > self.max_seq_len:
            raise ValueError("action_chunk exceeds max_seq_len (the action position embedding)")
        shuffle = round(1 / self.downsample_ratio)
        if (self.image_size // self.vision_patch_size) % shuffle:
            raise ValueError("the patch grid must be divisible by 1 / downsample_ratio")

    def check_downsample_ratio(self) -> None:
        """Pixel shuffle merges k x k patches into one token: the ratio must be 1 / k for an integer k >= 1."""
        ratio = self.downsample_ratio
        if not 0 < ratio <= 1 or abs(1 / ratio - round(1 / ratio)) > 1e-6:
            raise ValueError(
                f"downsample_ratio={ratio} must be 1 / k for an integer k >= 1 (pixel shuffle merges k x k patches "
                "into one token), e.g. 0.5 as in GR00T-N1.5 or 1 for no merging"
            )

    @property
    def backbone_width(self) -> int:
        """Width of the VLM tokens the action head sees (after the optional eagle_linear)."""
        return self.backbone_project_to_dim or self.llm_hidden_size


GR00T_PRESETS: dict[str, dict] = {
    # ~0.23M parameters: every code path of the real model, fast on a CPU. Padded widths leave room
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
        llm_hidden_size=64,
        llm_intermediate_size=128,
        llm_num_heads=4,
        llm_num_kv_heads=2,
        llm_head_dim=16,
        select_layer=2,
        vl_self_attention_layers=1,
        vl_self_attention_heads=2,
        vl_self_attention_head_dim=32,
        dit_layers=2,
        dit_heads=2,
        dit_head_dim=16,
        input_embedding_dim=32,
        hidden_size=32,
        num_target_vision_tokens=4,
        max_seq_len=16,
    ),
    "gr00t-n1.5-3b": dict(
        action_dim=7,
        action_chunk=16,
        state_dim=8,
        max_action_dim=32,
        max_state_dim=64,
        image_size=224,
        max_token_len=96,
        num_denoise_steps=4,
    ),
}
