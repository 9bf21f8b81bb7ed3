"""OpenVLA-OFT's heads: the proprio projector and the L1-regression MLP-ResNet action head (upstream names)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProprioProjector(nn.Module):
    """(N, state_dim) -> (N, llm_dim): Linear, GELU, Linear."""

    def __init__(self, state_dim: int, llm_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(state_dim, llm_dim)
        self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(state)))


class MLPResNetBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    def __init__(self, num_blocks: int, input_dim: int, hidden_dim: int, output_dim: int):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.mlp_resnet_blocks = nn.ModuleList([MLPResNetBlock(hidden_dim) for _ in range(num_blocks)])
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


class L1RegressionActionHead(nn.Module):
    """Action hidden states (N, chunk * D, W) -> normalised action means (N, chunk, D).

    The D hidden states of one chunk step are concatenated (D * W) and mapped by the MLP-ResNet, as upstream.
    """

    def __init__(self, llm_dim: int, action_dim: int, num_blocks: int):
        super().__init__()
        self.action_dim = action_dim
        self.model = MLPResNet(num_blocks, llm_dim * action_dim, llm_dim, action_dim)

    def forward(self, action_hidden: torch.Tensor) -> torch.Tensor:
        batch = action_hidden.shape[0]
        return self.model(action_hidden.reshape(batch, -1, self.action_dim * action_hidden.shape[-1]))
