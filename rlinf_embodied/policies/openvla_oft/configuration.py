"""OpenVLA-OFT configuration and presets.

"openvla-oft-7b" is the LIBERO checkpoint's architecture (moojink/openvla-7b-oft-finetuned-libero-*):
the OpenVLA-7B VLM, two cameras (third-person + wrist), proprio state (8) projected to one token,
chunk 8 x 7 actions, and the L1-regression MLP-ResNet action head (2 blocks, width 4096).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...unread_settings import reject_ineffective_setting
from ..common.state_dims import check_state_dims
from ..openvla.configuration import PRISMATIC_ARCHITECTURE_FIELDS
from ..vla_common.config import BYTE_LEVEL_TOKENS, PROMPT_TOKENS_BYTE_LEVEL, TINY_PRISMATIC, PrismaticVLAConfig

ACTION_HEAD_TYPES = ("continuous", "discrete")


@dataclass
class OpenVLAOFTConfig(PrismaticVLAConfig):
    action_head_type: str = "continuous"  # "continuous": MLP-ResNet mean + learned Gaussian std; "discrete": 256 bins
    action_head_num_blocks: int = 2
    init_log_std: float = -2.0  # Gaussian exploration std of the continuous head (learned, per action dim)
    use_proprio: bool = True  # project obs["state"] (state_dim) into one token after the image patches
    # Proprio normalisation (OFT's BOUNDS_Q99): norm = clip((s - low) / (high - low) * 2 - 1, -1, 1).
    state_low: list[float] | None = None
    state_high: list[float] | None = None
    # State dims the proprio projector never sees (zeroed after normalisation): the copycat fix, as pi0's
    ignore_state_dims: list[int] | None = None
    bidirectional_action_attention: bool = True  # action positions attend to each other (OFT parallel decoding)
    # fields that shape the weights (a checkpoint's config.json fixes them): the VLM's, the action head and proprio's
    architecture_fields: ClassVar[tuple[str, ...]] = PRISMATIC_ARCHITECTURE_FIELDS + (
        "action_dim",
        "state_dim",
        "action_head_type",
        "action_head_num_blocks",
        "use_proprio",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.action_head_type not in ACTION_HEAD_TYPES:
            raise ValueError(f"action_head_type={self.action_head_type!r}; valid: {list(ACTION_HEAD_TYPES)}")
        if self.use_proprio and self.state_dim <= 0:
            raise ValueError("use_proprio=True needs state_dim > 0 (the proprio projector's input width)")
        self.reject_unread_head_fields()
        if not self.use_proprio:
            for name in ("ignore_state_dims", "state_low", "state_high"):
                reject_ineffective_setting(self, "", name, "use_proprio=false reads no state; set use_proprio=true")
        check_state_dims("ignore_state_dims", self.ignore_state_dims, self.state_dim)

    def reject_unread_head_fields(self) -> None:
        """temperature scales the discrete head's token logits; init_log_std and action_head_num_blocks belong to the
        continuous head (its Gaussian std and its MLP-ResNet depth), which the discrete head does not build."""
        if self.action_head_type == "continuous":
            reject_ineffective_setting(
                self,
                "",
                "temperature",
                "the continuous head samples a Gaussian, not action tokens (its std starts at init_log_std); set "
                "action_head_type='discrete'",
            )
        else:
            reject_ineffective_setting(
                self,
                "",
                "init_log_std",
                "the discrete head samples action tokens and has no Gaussian std (temperature scales its logits); "
                "set action_head_type='continuous'",
            )
            reject_ineffective_setting(
                self,
                "",
                "action_head_num_blocks",
                "the discrete head decodes action tokens with the language model's own output layer and builds no "
                "MLP-ResNet action head; set action_head_type='continuous'",
            )


OPENVLA_OFT_PRESETS: dict[str, dict] = {
    "tiny": dict(action_dim=7, action_chunk=4, state_dim=8, num_images=2, **TINY_PRISMATIC),
    # ~20M parameters: the OFT architecture scaled down to train from scratch on one GPU (no pretrained
    # weights exist here) and to fit a 64 MiB checkpoint in bf16: one 96 px camera in 8 px patches (144
    # per vision tower), 6-layer Llama of width 384, byte-level prompts.
    "openvla-oft-small": dict(
        action_dim=7,
        action_chunk=8,
        state_dim=8,
        num_images=1,
        image_size=96,
        patch_size=8,
        dino_hidden_size=192,
        dino_num_layers=4,
        dino_num_heads=3,
        dino_intermediate_size=768,
        dino_num_register_tokens=4,
        siglip_hidden_size=192,
        siglip_num_layers=4,
        siglip_num_heads=3,
        siglip_intermediate_size=768,
        hidden_size=384,
        num_layers=6,
        num_heads=6,
        num_kv_heads=6,
        intermediate_size=1536,
        max_position_embeddings=512,
        value_hidden_dim=256,
        **BYTE_LEVEL_TOKENS,
    ),
    "openvla-oft-7b": dict(
        action_dim=7, action_chunk=8, state_dim=8, num_images=2, max_token_len=PROMPT_TOKENS_BYTE_LEVEL
    ),
}
