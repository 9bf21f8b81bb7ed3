"""`flow_mlp`: a flow-matching action policy on state observations (ReinFlow / pi-RL's state policies).

The same RL machinery as pi0 and GR00T (flow/policy.py: Flow-SDE or Flow-Noise chains, exact chain
log-probs, value head, checkpoints), with the VLM prefix replaced by an MLP state encoder and the action
expert by an MLP velocity network. It trains in seconds on a CPU, so the demonstrations -> SFT -> flow
RL recipe can be checked there with the exact sampler and log-prob code the VLAs use.

    state (N, S) -> normalise, zero ignore_state_dims, pad to max_state_dim -> encoder -> h (N, H)
    [x_tau (n, chunk * A_pad); time embedding (n, T); h] -> velocity MLP -> g (n, H)
    row features f_r = SiLU(W g + U x_tau[r] + e_r) for each chunk row r (row embedding e_r) -> u_r = V f_r

Each row reads its own noisy action directly (U x_tau[r]): through the shared g alone, a row would have to
pick its inputs out of the whole chunk with nothing but its embedding (SFT's loss stayed at 0.7 with chunk 4).
The row features (n, chunk, H) are what the Flow-Noise std head reads, as pi0's action-token features;
the value head reads h and the state.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..base import Obs
from ..flow.losses import OpenpiSFTLoss, sincos_time_embedding
from ..flow.policy import FlowPolicy
from ..mlp.gaussian import check_state
from .configuration import FLOW_MLP_PRESETS, FlowMLPConfig


def silu_mlp(in_dim: int, hidden_dim: int, num_layers: int) -> nn.Sequential:
    """num_layers x (Linear, SiLU), in_dim -> hidden_dim."""
    layers: list[nn.Module] = []
    for index in range(num_layers):
        layers += [nn.Linear(in_dim if index == 0 else hidden_dim, hidden_dim), nn.SiLU()]
    return nn.Sequential(*layers)


class FlowMLPPolicy(OpenpiSFTLoss, FlowPolicy):
    name = "flow_mlp"
    config_class = FlowMLPConfig
    presets = FLOW_MLP_PRESETS
    config: FlowMLPConfig
    # Trained from demonstrations or from scratch, not a pre-trained VLA: the small policies' RL rates.
    default_rl_lr = 3e-4
    default_value_lr = None

    def __init__(self, config: FlowMLPConfig, apply_lora: bool = True):
        super().__init__(config, apply_lora)
        cfg = config
        flat_action = cfg.action_chunk * cfg.max_action_dim
        self.state_encoder = silu_mlp(cfg.max_state_dim, cfg.hidden_dim, cfg.num_layers)
        self.velocity_net = silu_mlp(flat_action + cfg.time_embed_dim + cfg.hidden_dim, cfg.hidden_dim, cfg.num_layers)
        self.row_mix = nn.Linear(cfg.hidden_dim, cfg.hidden_dim)
        self.row_action_in = nn.Linear(cfg.max_action_dim, cfg.hidden_dim)
        self.row_embedding = nn.Parameter(torch.randn(cfg.action_chunk, cfg.hidden_dim) * 0.02)
        self.velocity_out = nn.Linear(cfg.hidden_dim, cfg.max_action_dim)
        self.finish_init(pooled_dim=cfg.hidden_dim, action_feature_dim=cfg.hidden_dim)
        if cfg.freeze_state_encoder:
            self.state_encoder.requires_grad_(False)

    # ---- FlowPolicy contract ------------------------------------------------------------------------
    def state_input_layer(self) -> nn.Linear:
        return self.state_encoder[0]

    def vision_modules(self) -> list[nn.Module]:
        return []

    def backbone_language_model(self) -> nn.Module:
        raise ValueError("flow_mlp has no language model (freeze_language_model / lora_rank do not apply)")

    def fsdp_units(self) -> list[nn.Module]:
        return [self.state_encoder, self.velocity_net]

    def checkpointing_models(self) -> list[nn.Module]:
        return []

    def encode_observation(self, obs: Obs) -> dict[str, Any]:
        check_state(obs, self.config.state_dim, self.name, self.device, torch.float32)  # a clear shape error
        hidden = self.state_encoder(self.normalized_state(obs).to(self.compute_dtype))  # (N, H)
        return {"pooled": hidden}

    def predict_velocity(
        self, context: dict[str, Any], x: torch.Tensor, tau: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, dtype = self.config, self.compute_dtype
        batch = x.shape[0]
        time_embedding = sincos_time_embedding(tau, cfg.time_embed_dim, cfg.time_min_period, cfg.time_max_period)
        inputs = torch.cat([x.reshape(batch, -1).to(dtype), time_embedding.to(dtype), context["pooled"]], dim=-1)
        hidden = self.velocity_net(inputs)  # (n, H)
        rows = self.row_mix(hidden)[:, None, :] + self.row_action_in(x.to(dtype)) + self.row_embedding.to(dtype)
        features = F.silu(rows)  # (n, chunk, H)
        return self.velocity_out(features).float(), features
