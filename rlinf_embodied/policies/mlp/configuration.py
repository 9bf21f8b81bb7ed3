"""`mlp` configuration and size presets (state observations only)."""
from __future__ import annotations

from dataclasses import dataclass

from .gaussian import GaussianPolicyConfig


@dataclass
class MLPConfig(GaussianPolicyConfig):
    state_dim: int = 8
    hidden_dim: int = 256
    num_layers: int = 3  # hidden layers in each of the actor and the critic

    def __post_init__(self) -> None:
        self.validate_common()
        if self.state_dim < 1:
            raise ValueError(f"mlp needs state observations: state_dim={self.state_dim} must be >= 1")
        if self.hidden_dim < 1 or self.num_layers < 1:
            raise ValueError(f"hidden_dim={self.hidden_dim} and num_layers={self.num_layers} must be >= 1")


MLP_PRESETS: dict[str, dict] = {
    "tiny": dict(hidden_dim=32, num_layers=2),  # a few thousand parameters, for tests
    # ManiSkill / CleanRL PPO baseline: separate actor and critic, 3 x 256 Tanh.
    "default": dict(hidden_dim=256, num_layers=3),
}
