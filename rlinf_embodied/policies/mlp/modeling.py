"""`mlp`: Gaussian actor-critic on state observations, for fast CPU learning.

Architecture of ManiSkill's / CleanRL's PPO baseline: separate actor and critic MLPs
(`num_layers` x `hidden_dim`, Tanh, orthogonal init; actor output gain 0.01*sqrt(2), critic 1.0) and
a learned state-independent log-std. Sampling, clipping and log-prob conventions: see gaussian.py.
"""

from __future__ import annotations

import torch
from torch import nn

from ..base import Obs
from ..common.state_dims import check_state_dims, zero_state_dims
from .configuration import MLP_PRESETS, MLPConfig
from .gaussian import ACTOR_OUT_GAIN, CRITIC_OUT_GAIN, GaussianActorCritic, build_mlp, check_state


class MLPPolicy(GaussianActorCritic):
    name = "mlp"
    config_class = MLPConfig
    presets = MLP_PRESETS
    config: MLPConfig
    hidden_state_dims_field = "actor_ignore_state_dims"

    def __init__(self, config: MLPConfig):
        super().__init__(config)
        # checked here, where state_dim is the real one (configs are built before it is known)
        check_state_dims("actor_ignore_state_dims", config.actor_ignore_state_dims, config.state_dim)
        hidden = [config.hidden_dim] * config.num_layers
        out_dim = config.action_chunk * config.action_dim
        self.actor = build_mlp(config.state_dim, hidden, out_dim, ACTOR_OUT_GAIN)
        self.critic = build_mlp(config.state_dim, hidden, 1, CRITIC_OUT_GAIN)

    def state_input_layer(self) -> nn.Linear:
        return self.actor[0]  # the critic reads every dim

    def action_means_and_values(self, obs: Obs) -> tuple[torch.Tensor, torch.Tensor]:
        weight = self.actor[0].weight
        state = check_state(obs, self.config.state_dim, self.name, weight.device, weight.dtype)  # (N, S)
        actor_state = zero_state_dims(state, self.config.actor_ignore_state_dims)  # the critic sees every dim
        return self.actor(actor_state), self.critic(state).squeeze(-1)  # (N, chunk * A), (N,)

    def example_obs(self, batch_size: int) -> Obs:
        return {"state": self._example_state(batch_size), "instruction": self._example_instructions(batch_size)}
