"""`mlp` configuration and size presets (state observations only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from ..common.state_dims import check_integer_dims
from .gaussian import GaussianPolicyConfig


@dataclass
class MLPConfig(GaussianPolicyConfig):
    state_dim: int = 8
    hidden_dim: int = 256
    num_layers: int = 3  # hidden layers in each of the actor and the critic
    # State dims the actor does not see (zeroed before its first layer; the critic sees all), e.g. the joint
    # velocities 9..17 of ManiSkill's panda state, which let BC copy the expert's current motion (copycat).
    actor_ignore_state_dims: Optional[list[int]] = None
    # Fields that shape the weights: a checkpoint's config.json fixes them (registry.check_overrides_fit_checkpoint)
    architecture_fields: ClassVar[tuple[str, ...]] = (
        "action_dim",
        "action_chunk",
        "state_dim",
        "hidden_dim",
        "num_layers",
    )

    def __post_init__(self) -> None:
        self.validate_common()
        if self.state_dim < 1:
            raise ValueError(f"mlp needs state observations: state_dim={self.state_dim} must be >= 1")
        if self.hidden_dim < 1 or self.num_layers < 1:
            raise ValueError(f"hidden_dim={self.hidden_dim} and num_layers={self.num_layers} must be >= 1")
        check_integer_dims("actor_ignore_state_dims", self.actor_ignore_state_dims)


MLP_PRESETS: dict[str, dict] = {
    "tiny": dict(hidden_dim=32, num_layers=2),  # a few thousand parameters, for tests
    # ManiSkill / CleanRL PPO baseline: separate actor and critic, 3 x 256 Tanh.
    "default": dict(hidden_dim=256, num_layers=3),
}
