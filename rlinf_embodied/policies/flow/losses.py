"""The flow-time embedding and imitation loss in openpi's convention (tau = 1 noise), shared by pi0 and flow_mlp."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ...transfer import host_to_device
from ..common.imitation import as_action_chunk, padded_rows_mean
from .processing import pad_last_dim


def sincos_time_embedding(tau: torch.Tensor, dim: int, min_period: float, max_period: float) -> torch.Tensor:
    """openpi's sine-cosine embedding of the flow time: (n,) -> (n, dim) float32, periods log-spaced."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=tau.device)
    period = min_period * (max_period / min_period) ** fraction
    angles = tau.double()[:, None] * (2.0 * math.pi / period)[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).float()


def openpi_flow_loss(
    velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    norm_actions: torch.Tensor,
    max_action_dim: int,
    is_pad: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    tau: torch.Tensor | None = None,
) -> torch.Tensor:
    """openpi's flow-matching loss: x_tau = tau * noise + (1 - tau) * a, target u = noise - a, with
    tau ~ 0.001 + 0.999 * Beta(1.5, 1) (more weight near the noisy end), on the used action dims;
    mean squared error over the chunk rows `is_pad` (N, chunk) does not mark (LeRobot's masking).

    `velocity_fn(x_tau, tau)` -> u (N, chunk, max_action_dim); `norm_actions` (N, chunk, action_dim) are
    normalised demonstration actions; `noise` (N, chunk, max_action_dim) and `tau` (N,) may be fixed."""
    action_dim = norm_actions.shape[-1]
    target = pad_last_dim(norm_actions, max_action_dim)
    noise = torch.randn_like(target) if noise is None else noise.to(target)
    if tau is None:
        beta = torch.distributions.Beta(torch.tensor(1.5), torch.tensor(1.0))
        tau = host_to_device(beta.sample((target.shape[0],)) * 0.999 + 0.001, target.device)
    tau = tau.to(target)
    x_tau = tau[:, None, None] * noise + (1.0 - tau[:, None, None]) * target
    error = (velocity_fn(x_tau, tau) - (noise - target))[..., :action_dim]
    return padded_rows_mean(error.square(), is_pad)


class OpenpiSFTLoss:
    """`sft_loss` for FlowPolicy subclasses whose `predict_velocity` works in openpi's convention (pi0, flow_mlp);
    list it before FlowPolicy in the bases."""

    def sft_loss(
        self: Any,
        obs: dict[str, Any],
        actions: torch.Tensor,
        is_pad: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        tau: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """openpi_flow_loss on env-unit actions (N, chunk, action_dim); `noise` and `tau` may be fixed by the caller."""
        cfg = self.config
        context = self.encode_observation(obs)
        actions = as_action_chunk(actions, cfg.action_chunk, cfg.action_dim, self.name, self.device)
        velocity_fn = lambda x_tau, tau: self.predict_velocity(context, x_tau, tau)[0]  # noqa: E731
        return openpi_flow_loss(velocity_fn, self.normalize_actions(actions), cfg.max_action_dim, is_pad, noise, tau)
