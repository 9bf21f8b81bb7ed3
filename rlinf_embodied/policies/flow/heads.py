"""Small heads the flow policies add for RL: the Flow-Noise std head and the value head."""

from __future__ import annotations

import torch
from torch import nn


class FlowNoiseHead(nn.Module):
    """Predicts the per-element std of a Flow-Noise transition from the action tokens' features.

    The std is squashed into [std_min, std_max] with a sigmoid: bounded exploration noise (as in
    ReinFlow / RLinf's flow_noise) keeps the transition densities well conditioned, and the head
    starts at the middle of the range.
    """

    def __init__(self, feature_dim: int, action_dim: int, std_min: float, std_max: float):
        super().__init__()
        if not 0.0 < std_min < std_max:
            raise ValueError(f"need 0 < noise_std_min < noise_std_max, got {std_min}, {std_max}")
        self.std_min, self.std_max = std_min, std_max
        self.net = nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.SiLU(), nn.Linear(feature_dim, action_dim))
        nn.init.normal_(self.net[2].weight, std=0.01)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (N, chunk, F) -> std (N, chunk, action_dim) float32."""
        squashed = torch.sigmoid(self.net(features).float())
        return self.std_min + (self.std_max - self.std_min) * squashed


class ValueHead(nn.Module):
    """Critic on a pooled observation embedding: (N, F) -> (N,) float32."""

    def __init__(self, feature_dim: int, hidden_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(feature_dim, hidden_dim), nn.GELU(approximate="tanh"), nn.Linear(hidden_dim, 1)
        )
        nn.init.normal_(self.net[2].weight, std=0.01)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net(pooled).squeeze(-1).float()


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid tokens: hidden (N, L, F), mask (N, L) bool -> (N, F). Padding never leaks in."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    summed = torch.where(mask.unsqueeze(-1), hidden, 0.0).sum(dim=1)
    return summed / weights.sum(dim=1).clamp(min=1.0)
