"""Config fields every flow-matching VLA policy (pi0, GR00T) shares: I/O padding, RL sampling, training switches."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from ...unread_settings import field_default, ineffective_setting_error, reject_ineffective_setting
from ..base import PolicyConfig, check_lora_settings, require_at_least
from ..common.state_dims import check_state_dims
from .sde import NOISE_METHODS, validate_stochastic_steps

# The largest Flow-SDE noise_level. A step at flow time tau moves x by -dt * sigma^2 / (2 tau) * E[noise | x] (sde.py),
# with sigma^2 = noise_level^2 * tau / (1 - tau): noise_level^2 / (2 k) of the noise estimate, where 1 - tau = k * dt
# (the first step, at tau = 1, counts as k = 1: flow_sde_sigma caps its denominator at the next grid point). At
# tau = 1, x is all noise: up to sqrt(2) the first step removes at most all of it; above, more than x holds, so the
# mean overshoots to the other side and the chain amplifies it. With an exact velocity towards a point at 0, the
# final std over 4 steps was 1.45 at sqrt(2), 3.3 at 1.6, 20 at 2, 600 at 3 (10 steps: 0.29, 0.42, 1.0, 970); at 10,
# every action of a random flow_mlp sat at the env's bounds while its log-probs stayed finite. Flow-GRPO and RLinf
# use 0.3-0.8.
MAX_NOISE_LEVEL = math.sqrt(2.0)
# Fields of every flow policy that shape its weights (the padded I/O widths of the action and state projections); each
# policy's config adds its own (registry.check_overrides_fit_checkpoint refuses overrides of them on a checkpoint)
FLOW_ARCHITECTURE_FIELDS: tuple[str, ...] = ("max_action_dim", "max_state_dim")
# ... and those of the SigLIP vision tower pi0 and GR00T share (same field names in both configs)
SIGLIP_ARCHITECTURE_FIELDS: tuple[str, ...] = (
    "image_size",
    "vision_patch_size",
    "vision_hidden_size",
    "vision_intermediate_size",
    "vision_num_layers",
)


@dataclass
class FlowPolicyConfig(PolicyConfig):
    # ---- model I/O: the network works on padded vectors, the env sees the first action_dim dims ----
    max_action_dim: int = 32
    max_state_dim: int = 32
    # State normalisation, same convention as actions: norm = (s - low) / (high - low) * 2 - 1.
    # Mean/std stats are stored as low = mean - std, high = mean + std (exactly z-scoring).
    state_low: list[float] | None = None
    state_high: list[float] | None = None
    # State dims the policy never sees (zeroed after normalisation; only the value head reads them, see
    # value_reads_state), e.g. ManiSkill's joint velocities
    # (dims 9-17 of PickCube's state): they predict a demonstration's next action so well that an
    # imitation policy learns to keep doing what it is doing ("copycat") and fails closed-loop.
    ignore_state_dims: list[int] | None = None
    # Dims a checkpoint hid that this policy shows (set at load, see Policy.reveal_state_dims: their input columns
    # start at zero) and the gain the policy's view of them gets. Under Adam each weight moves about lr per step
    # whatever its gradient's scale, so a gain of G grows those dims' contribution G times faster: at lr 1e-5 the
    # zeroed columns of pi0-small reached a norm of 0.0015 in 7 PPO iterations, against about 1.2 for the trained
    # columns (stop 56), so RL could not use them. Saved with the policy, so its evaluations see what it trained on.
    revealed_state_dims: list[int] | None = None
    revealed_state_gain: float = 1.0
    image_size: int = 224
    max_token_len: int = 48
    # Drop the prompt's padding columns that no instruction of the batch uses (keeping a multiple of 8 tokens)
    # before the VLM: masked tokens change no output but cost compute (PickCube's instruction is 45 byte tokens
    # of pi0-small's 96: 51 of its 240 prefix tokens are padding). Outputs agree with untrimmed ones within
    # rounding; a batch mixing instruction lengths may change the prefix's width, and so its CUDA graph.
    trim_prompt_padding: bool = False
    use_wrist_image: bool = True  # use obs["wrist_rgb"] as a second camera when present
    num_denoise_steps: int = 10
    # act on a CUDA device replays the denoising loop from captured CUDA graphs (common/cuda_graph.py), one
    # per batch bucket; False runs it eagerly. No effect on CPU (act warns once and runs eagerly).
    act_cuda_graphs: bool = False
    # With act_cuda_graphs: compile each captured part with torch.compile (inductor) before capturing it, so
    # the graph replays fused kernels (RMSNorm, rotary, GeGLU and residuals as one kernel each) instead of
    # dozens of small ones per layer. Compiling takes minutes per batch bucket at real size.
    act_compile: bool = False

    # ---- RL sampling (see flow/sde.py) ----
    noise_method: str = "flow_sde"  # "flow_sde" (score-corrected SDE) | "flow_noise" (learned std head)
    noise_level: float = 0.5  # Flow-SDE: sigma_tau = noise_level * sqrt(tau / (1 - tau))
    stochastic_steps: str = "all"  # "all" | "random_one" | "i,j,..." denoising steps that get noise
    noise_std_min: float = 0.08  # Flow-Noise: std range of the noise head
    noise_std_max: float = 0.16
    # act(deterministic=True) integrates the plain ODE from fixed initial noise:
    # "seeded" = one N(0, I) draw from `deterministic_seed` shared by every sample, "zero" = x_1 = 0.
    deterministic_noise: str = "seeded"
    deterministic_seed: int = 0

    # ---- heads and training switches ----
    add_value_head: bool = True
    value_hidden_dim: int = 256
    # The value head reads the pooled prefix embedding detached: the critic's loss trains the head only and
    # never moves the features the policy acts on (RLinf's pi0 PPO configs do the same, detach_critic_input).
    # False lets value gradients into the shared backbone at the policy's learning rate.
    detach_value_input: bool = True
    # The value head also reads the normalised state, every dim of it, ignore_state_dims too: the prefix
    # embedding holds only the cameras and the instruction, and the goal or whether the object is grasped may
    # be in the state alone. The critic is used in training only, so seeing dims the policy does not is the
    # usual asymmetric actor-critic.
    value_reads_state: bool = True
    # The value head's normalised state is clipped to +-value_state_clip (None = not clipped). The bounds are the
    # demonstrations' 1st-99th percentiles, and a dim that barely varied there (PickCube's TCP quaternion w: a range
    # of 0.0014) maps a modest deviation in RL to +-100 or more; stop 49's critic read such inputs as values of -71
    # against returns <= 1. 5 leaves states within twice the demonstrations' range unchanged.
    value_state_clip: float | None = 5.0
    freeze_vision_encoder: bool = False  # with or without LoRA (which adapts the language model only)
    # Freeze the whole language model. With lora_rank > 0 its adapters too (LoRA alone freezes only the base
    # weights): RL from a checkpoint whose trained adapters should stay as they are. New adapters (a fresh policy,
    # or lora_rank > 0 on a checkpoint without adapters) add nothing until trained, so freezing them is refused as
    # meaningless (FlowPolicy.apply_lora, and the start-up check in workers/policy_loading.py).
    freeze_language_model: bool = False
    lora_rank: int = 0  # > 0: peft LoRA adapters on the language model's linear layers, base frozen
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    gradient_checkpointing: bool = False
    value_head_fields: ClassVar[tuple[str, ...]] = (
        "value_hidden_dim",
        "detach_value_input",
        "value_reads_state",
        "value_state_clip",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.stochastic_steps, (str, int)):  # a list of steps (also Hydra's ListConfig)
            self.stochastic_steps = ",".join(str(step) for step in self.stochastic_steps)
        self.stochastic_steps = str(self.stochastic_steps)
        self.validate_flow_fields()

    def camera_keys(self) -> tuple[str, ...]:
        return ("rgb",)  # obs["wrist_rgb"] is optional (use_wrist_image reads it when present)

    def validate_flow_fields(self) -> None:
        if self.noise_method not in NOISE_METHODS:
            raise ValueError(f"noise_method={self.noise_method!r}; valid: {list(NOISE_METHODS)}")
        if self.noise_method == "flow_sde" and not 0.0 < self.noise_level <= MAX_NOISE_LEVEL:
            raise ValueError(
                f"noise_level={self.noise_level} must lie in (0, sqrt(2) = {MAX_NOISE_LEVEL:.4f}]: stochastic steps "
                "need a positive std, and above sqrt(2) Flow-SDE's score term removes more noise than a step holds, "
                "so the chain diverges and every action ends at the env's bounds (Flow-GRPO and RLinf use 0.3-0.8)"
            )
        if self.noise_method == "flow_noise" and not 0.0 < self.noise_std_min < self.noise_std_max:
            raise ValueError(
                f"noise_std_min={self.noise_std_min}, noise_std_max={self.noise_std_max}: Flow-Noise's learned std "
                "lies between them, so they need 0 < noise_std_min < noise_std_max"
            )
        if self.deterministic_noise not in ("seeded", "zero"):
            raise ValueError(f"deterministic_noise={self.deterministic_noise!r}; valid: 'seeded', 'zero'")
        require_at_least(self, 1, "max_action_dim")
        if self.action_dim > self.max_action_dim:
            raise ValueError(
                f"action_dim={self.action_dim} exceeds max_action_dim={self.max_action_dim} (the widest action the model "
                f"predicts; a new policy's action_dim is its env's or SFT dataset's): set max_action_dim >= "
                f"{self.action_dim}"
            )
        if self.state_dim > self.max_state_dim:
            raise ValueError(
                f"state_dim={self.state_dim} exceeds max_state_dim={self.max_state_dim}; raise max_state_dim "
                "(only for randomly initialised models: a checkpoint's state projection has a fixed width)"
            )
        check_state_dims("ignore_state_dims", self.ignore_state_dims, self.state_dim)
        check_state_dims("revealed_state_dims", self.revealed_state_dims, self.state_dim)
        if not self.revealed_state_gain > 0:
            raise ValueError(f"revealed_state_gain={self.revealed_state_gain} must be > 0 (1: no gain)")
        hidden_and_revealed = set(self.ignore_state_dims or []) & set(self.revealed_state_dims or [])
        if hidden_and_revealed:
            raise ValueError(f"state dims {sorted(hidden_and_revealed)} are both in ignore_state_dims and revealed")
        if self.num_denoise_steps < 1:
            raise ValueError("num_denoise_steps must be >= 1")
        if self.value_state_clip is not None and not self.value_state_clip > 0:
            raise ValueError(f"value_state_clip={self.value_state_clip} must be > 0, or None for no clip")
        self.reject_value_state_clip_without_state()
        validate_stochastic_steps(self.stochastic_steps, self.num_denoise_steps)
        require_at_least(self, 1, "image_size", "value_hidden_dim")
        require_at_least(self, 0, "lora_rank")
        self.reject_unread_sampling_fields()
        self.reject_unread_lora_fields()

    def reject_unread_sampling_fields(self) -> None:
        """Each noise method reads its own noise settings, and deterministic_noise='zero' draws no noise."""
        if self.noise_method == "flow_sde":
            for name in ("noise_std_min", "noise_std_max"):
                reject_ineffective_setting(
                    self,
                    "",
                    name,
                    "noise_method='flow_sde' scales its noise by noise_level; set noise_method='flow_noise'",
                )
        else:
            reject_ineffective_setting(
                self,
                "",
                "noise_level",
                "noise_method='flow_noise' learns its std between noise_std_min and noise_std_max; set "
                "noise_method='flow_sde'",
            )
        if self.deterministic_noise == "zero":
            reject_ineffective_setting(
                self,
                "",
                "deterministic_seed",
                "deterministic_noise='zero' starts from x_1 = 0; set deterministic_noise='seeded'",
            )

    def reject_value_state_clip_without_state(self) -> None:
        """value_state_clip clips the state the value head reads: with value_reads_state=false it reads none (before:
        accepted, and the head's input had no state). The default and None (no clip) pass, so saved configs load."""
        if not self.value_reads_state and self.value_state_clip not in (None, field_default(self, "value_state_clip")):
            raise ineffective_setting_error(
                "",
                "value_state_clip",
                self.value_state_clip,
                "value_reads_state=false feeds no state to the value head; set value_reads_state=true, or drop it",
            )

    def reject_unread_lora_fields(self) -> None:
        """lora_alpha > 0 and lora_dropout in [0, 1), both read only where lora_rank > 0 adds adapters."""
        check_lora_settings(self)

    def reject_frozen_new_adapters(self) -> None:
        """New LoRA adapters add nothing until trained (peft's B = 0): frozen by freeze_language_model, which freezes the
        adapters too, they would never change anything. Raised where adapters are added, not loaded: the config
        alone cannot tell (a checkpoint's trained adapters may be frozen)."""
        if self.lora_rank > 0 and self.freeze_language_model:
            raise ValueError(frozen_new_adapters_message(self.lora_rank))


def frozen_new_adapters_message(lora_rank: int) -> str:
    """The error for lora_rank > 0 adding new adapters with freeze_language_model=true."""
    return (
        f"lora_rank={lora_rank} adds new LoRA adapters, which add nothing until trained (peft starts them at zero), "
        "and freeze_language_model=true freezes the whole language model, adapters included, so they never would: set "
        "freeze_language_model=false to train the adapters (lora_rank keeps the base weights frozen), or lora_rank=0 "
        "to freeze the language model (a checkpoint's trained adapters may be frozen: freeze_language_model freezes "
        "them)"
    )
