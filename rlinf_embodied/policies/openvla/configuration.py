"""OpenVLA configuration and size presets ("openvla-7b" is the published architecture, see vla_common.config)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..vla_common.config import PROMPT_TOKENS_BYTE_LEVEL, TINY_PRISMATIC, PrismaticVLAConfig


# Prismatic fields that shape the weights (vision towers, projector, Llama, value head): a checkpoint's config.json
# fixes them (registry.check_overrides_fit_checkpoint refuses an override that differs, before any worker starts)
PRISMATIC_ARCHITECTURE_FIELDS: tuple[str, ...] = (
    "image_size",
    "patch_size",
    "dino_hidden_size",
    "dino_num_layers",
    "dino_intermediate_size",
    "dino_num_register_tokens",
    "siglip_hidden_size",
    "siglip_num_layers",
    "siglip_intermediate_size",
    "vocab_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "intermediate_size",
    "value_hidden_dim",
)


@dataclass
class OpenVLAConfig(PrismaticVLAConfig):
    # Sampling decodes over a KV cache, one token at a time; training scores the tokens in one teacher-forced
    # pass. Both are the same math, but in bf16 their roundings differ (measured at 7B: initial approx_kl
    # 0.0047, max |ratio - 1| 0.2 before any update). True: after sampling, `act` rescores its tokens with
    # the training pass, so the rollout's log-probs are the actor's and PPO's ratio starts at 1 (one more
    # forward per stochastic act). False: keep the decode's log-probs.
    rescore_log_probs: bool = True
    architecture_fields: ClassVar[tuple[str, ...]] = PRISMATIC_ARCHITECTURE_FIELDS

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.action_chunk != 1:
            raise ValueError(
                f"openvla predicts one action per step: action_chunk={self.action_chunk}, valid: 1 "
                "(use openvla_oft for action chunks)"
            )


OPENVLA_PRESETS: dict[str, dict] = {
    "tiny": dict(action_dim=7, **TINY_PRISMATIC),
    "openvla-7b": dict(action_dim=7, max_token_len=PROMPT_TOKENS_BYTE_LEVEL),
}
