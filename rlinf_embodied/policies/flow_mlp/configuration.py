"""`flow_mlp` configuration and size presets (state observations only).

Every RL-sampling field of the flow VLAs applies unchanged (noise_method, stochastic_steps, noise std
range, deterministic noise, value head); the camera, prompt and large-model switches do not, so the
config rejects them instead of ignoring them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from ..base import require_positive
from ..flow.config import FLOW_ARCHITECTURE_FIELDS, FlowPolicyConfig

# FlowPolicyConfig fields a state-only MLP has no use for, with the only value it accepts.
UNUSED_VLA_FIELDS = {
    "use_wrist_image": False,
    "freeze_vision_encoder": False,
    "freeze_language_model": False,
    "lora_rank": 0,
    "gradient_checkpointing": False,
    "trim_prompt_padding": False,  # there is no prompt to trim (before: accepted, and the run was unchanged)
}
# Camera / prompt sizes: meaningless here, so only their defaults are accepted.
UNUSED_SIZE_FIELDS = ("image_size", "max_token_len", "lora_alpha", "lora_dropout")


@dataclass
class FlowMLPConfig(FlowPolicyConfig):
    state_dim: int = 8
    max_action_dim: int = 8
    max_state_dim: int = 64
    use_wrist_image: bool = False
    num_denoise_steps: int = 4
    hidden_dim: int = 256
    num_layers: int = 3  # hidden layers of the state encoder and of the velocity network each
    time_embed_dim: int = 32  # sine-cosine flow-time embedding width (openpi's periods)
    time_min_period: float = 4e-3
    time_max_period: float = 4.0
    # Train only the velocity network (and the RL heads): the analog of the VLA RL recipe's frozen vision encoder
    # and language model (benchmarks/sft_then_rl_gpu.sh), where the action expert alone learns.
    freeze_state_encoder: bool = False
    # fields that shape the weights (a checkpoint's config.json fixes them)
    architecture_fields: ClassVar[tuple[str, ...]] = FLOW_ARCHITECTURE_FIELDS + (
        "action_chunk",
        "hidden_dim",
        "num_layers",
        "time_embed_dim",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.state_dim < 1:
            raise ValueError(f"flow_mlp needs state observations: state_dim={self.state_dim} must be >= 1")
        if self.hidden_dim < 1 or self.num_layers < 1:
            raise ValueError(f"hidden_dim={self.hidden_dim} and num_layers={self.num_layers} must be >= 1")
        if self.time_embed_dim < 2 or self.time_embed_dim % 2:
            raise ValueError(f"time_embed_dim={self.time_embed_dim} must be an even number >= 2")
        require_positive(self, "time_min_period", "time_max_period")

    def reject_unread_lora_fields(self) -> None:
        """flow_mlp has no language model to adapt: its own message, instead of FlowPolicyConfig's lora_rank one."""
        for name, accepted in UNUSED_VLA_FIELDS.items():
            if getattr(self, name) != accepted:
                raise ValueError(
                    f"flow_mlp has no cameras or language model: {name}={getattr(self, name)!r} would have no "
                    f"effect; leave it at {accepted!r} (pi0 and gr00t have it)"
                )
        defaults = {f.name: f.default for f in fields(FlowPolicyConfig)}
        for name in UNUSED_SIZE_FIELDS:
            if getattr(self, name) != defaults[name]:
                raise ValueError(f"flow_mlp has no cameras or prompts: {name}={getattr(self, name)!r} has no effect")

    def camera_keys(self) -> tuple[str, ...]:
        return ()


FLOW_MLP_PRESETS: dict[str, dict] = {
    # a few thousand parameters for tests; 4 denoising steps and a chunk of 4 exercise the chain code
    "tiny": dict(action_dim=7, action_chunk=4, hidden_dim=32, num_layers=2, time_embed_dim=16, value_hidden_dim=32),
    # ReinFlow-style state policy: 3 x 256 MLPs, 4 denoising steps, chunks of 4 actions. With one action per
    # call, flow BC on PickCube failed closed loop (0-6%: the gripper command drifted below fully open and the
    # policy read the drift as a grasp starting); chunks of 4 reached 48.5% (benchmarks/RESULTS.md stop 31).
    "default": dict(action_dim=7, action_chunk=4, hidden_dim=256, num_layers=3, value_hidden_dim=256),
}
