"""Diagonal-Gaussian actor-critic machinery shared by the small policies (`mlp`, `cnn`).

Action convention (CleanRL / ManiSkill PPO baselines, made explicit here):

* The actor outputs means in *normalized* action units, where the env's action space is [-1, 1]
  (true for ManiSkill's `pd_joint_delta_pos`/`pd_ee_delta_pose`; other ranges are mapped through
  `config.action_low/high` by `Policy.unnormalize_actions`).
* `act` samples an unbounded `raw ~ Normal(mean, exp(log_std))`. The log-prob is that of `raw`, the
  pre-clip sample, and `raw` is kept in `extras["raw_actions"]` so `evaluate` recomputes exactly the
  same log-prob. The env receives `unnormalize_actions(clamp(raw, -1, 1))`: clipping to the action
  space happens here, once, explicitly -- the log-prob deliberately ignores it (as in CleanRL and
  ManiSkill's PPO, where the env clips), so the ratio in PPO is always that of the Gaussian.
* `deterministic=True` takes `raw = mean` (same clamp and unnormalisation).

Log-probs and entropies are per action dimension, (N, chunk, act_dim); the distribution is always
evaluated in float32 even when the networks run in bf16.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..base import ActOutput, EvalOutput, Obs, Policy, PolicyConfig
from ..common.imitation import as_action_chunk, padded_rows_mean

RAW_ACTIONS_KEY = "raw_actions"
HIDDEN_GAIN = math.sqrt(2.0)
ACTOR_OUT_GAIN = 0.01 * math.sqrt(2.0)  # near-zero initial means: actions start around the centre
CRITIC_OUT_GAIN = 1.0
_LOG_SQRT_2PI_E = 0.5 + 0.5 * math.log(2.0 * math.pi)  # Normal entropy = this + log_std


@dataclass
class GaussianPolicyConfig(PolicyConfig):
    # State-independent, learned; std ~ 0.61 at the start. Given as an override when loading a checkpoint
    # (policy.overrides.init_log_std=-2.5), it resets the checkpoint's learned std: RL from a BC policy
    # whose NLL-fitted std is too wide to succeed stochastically.
    init_log_std: float = -0.5

    def validate_common(self) -> None:
        self.check_types()
        self.check_dims()
        self.check_finite()
        self.check_bounds()

    def check_within_action_space(self, env_low: Any, env_high: Any, env_name: str) -> None:
        """action_low / action_high inside the env's action space (`env_low` / `env_high`, per action dimension).

        The actor's [-1, 1] maps onto [action_low, action_high], and the env clips what lies outside its own space:
        with bounds wider than it, that part of the policy's range lands on the clip bounds (before: accepted, e.g.
        [-2, 2] on PushCube's [-1, 1] made half of every dimension's range the same action)."""
        if self.action_low is None or self.action_high is None:
            return  # unnormalize_actions maps only with both (the actor's [-1, 1] is the action)
        env_low = np.asarray(env_low, np.float64).reshape(-1)
        env_high = np.asarray(env_high, np.float64).reshape(-1)
        low, high = np.asarray(self.action_low, np.float64), np.asarray(self.action_high, np.float64)
        if env_low.shape != low.shape or env_high.shape != high.shape:
            return  # another width: the action_dim check names it
        tolerance = 1e-6 * np.maximum(1.0, np.abs(env_high - env_low))
        outside = np.flatnonzero((low < env_low - tolerance) | (high > env_high + tolerance)).tolist()
        if outside:
            raise ValueError(
                f"the policy's action bounds action_low={low.tolist()}, action_high={high.tolist()} reach beyond "
                f"{env_name}'s action space low={env_low.tolist()}, high={env_high.tolist()} in dimensions {outside}: "
                "the env clips actions to its space, so that part of the policy's range would all act as the bound; "
                "give policy.overrides.action_low / action_high within the env's action space, or leave them unset "
                "(the actor's [-1, 1] is then the action itself)"
            )


def init_linear(layer: nn.Linear, gain: float) -> nn.Linear:
    """Orthogonal weights with `gain`, zero bias (the PPO baselines' initialisation)."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def build_mlp(
    in_dim: int, hidden_dims: list[int], out_dim: int, out_gain: float, activation: type[nn.Module] = nn.Tanh
) -> nn.Sequential:
    """Linear-activation stack ending in a linear layer of gain `out_gain` (no output activation)."""
    layers: list[nn.Module] = []
    for width in hidden_dims:
        layers += [init_linear(nn.Linear(in_dim, width), HIDDEN_GAIN), activation()]
        in_dim = width
    layers.append(init_linear(nn.Linear(in_dim, out_dim), out_gain))
    return nn.Sequential(*layers)


def obs_tensor(obs: Obs, key: str, policy_name: str) -> torch.Tensor:
    """obs[key] as a torch tensor, or a clear error naming the keys the obs does have."""
    if not isinstance(obs, dict):
        raise TypeError(f"{policy_name}: obs must be a dict of tensors, got {type(obs).__name__}")
    if key not in obs:
        raise KeyError(f"{policy_name}: obs has no {key!r}; got keys {sorted(obs)}")
    value = obs[key]
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))


def check_state(obs: Obs, state_dim: int, policy_name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """obs["state"] as (N, state_dim) on `device`/`dtype`; errors name the expected and got shapes."""
    state = obs_tensor(obs, "state", policy_name)
    if state.ndim != 2 or state.shape[1] != state_dim:
        raise ValueError(
            f"{policy_name}: obs['state'] has shape {tuple(state.shape)}; "
            f"expected (N, {state_dim}) (state_dim={state_dim})"
        )
    if not state.is_floating_point():
        raise TypeError(f"{policy_name}: obs['state'] has dtype {state.dtype}; expected a floating dtype")
    return state.to(device=device, dtype=dtype)


class GaussianActorCritic(Policy):
    """A Policy whose subclasses supply `action_means_and_values`; sampling and log-probs live here."""

    value_parameter_prefixes = ("critic.",)  # algorithm.value_lr / critic_warmup_iterations apply to these

    config: GaussianPolicyConfig

    def __init__(self, config: GaussianPolicyConfig):
        super().__init__(config)
        shape = (config.action_chunk, config.action_dim)
        self.log_std = nn.Parameter(torch.full(shape, float(config.init_log_std)))  # (chunk, act_dim)

    def apply_overrides_to_weights(self, overrides: dict[str, Any]) -> None:
        if "init_log_std" in overrides:
            with torch.no_grad():
                self.log_std.fill_(float(overrides["init_log_std"]))

    @abc.abstractmethod
    def action_means_and_values(self, obs: Obs) -> tuple[torch.Tensor, torch.Tensor]:
        """Means (N, chunk * act_dim) in normalized units and values (N,), with gradients."""

    # ---- distribution -----------------------------------------------------------------------------
    def _means_and_values(self, obs: Obs) -> tuple[torch.Tensor, torch.Tensor]:
        means, values = self.action_means_and_values(obs)
        chunk, act_dim = self.config.action_chunk, self.config.action_dim
        # Outputs of an FSDP2 forward must not be views (in-place ops on them would skip its hooks):
        # the values are copied, not viewed.
        return means.float().reshape(-1, chunk, act_dim), values.to(torch.float32, copy=True)  # (N, chunk, A), (N,)

    def _log_prob(self, means: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        """Normal log-density per dimension, (N, chunk, act_dim), written out for float32 exactness."""
        log_std = self.log_std.float()
        z = (raw - means) * torch.exp(-log_std)
        return -0.5 * z.square() - log_std - 0.5 * math.log(2.0 * math.pi)

    def _entropy(self, like: torch.Tensor) -> torch.Tensor:
        return (self.log_std.float() + _LOG_SQRT_2PI_E).expand_as(like).clone()  # (N, chunk, act_dim), no view

    def env_actions(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw normalized samples -> env units: explicit clip to [-1, 1], then unnormalize."""
        return self.unnormalize_actions(raw.clamp(-1.0, 1.0))

    # ---- RL interface -------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: Obs, deterministic: bool = False) -> ActOutput:
        means, values = self._means_and_values(obs)  # (N, chunk, act_dim), (N,)
        if deterministic:
            raw = means.clone()
        else:
            raw = means + torch.exp(self.log_std.float()) * torch.randn_like(means)
        return ActOutput(
            actions=self.env_actions(raw),  # (N, chunk, act_dim), env units, within the bounds
            log_probs=self._log_prob(means, raw),  # of the pre-clip sample
            values=values,
            extras={RAW_ACTIONS_KEY: raw},
        )

    def evaluate(self, obs: Obs, act_output: ActOutput) -> EvalOutput:
        means, values = self._means_and_values(obs)
        raw = self._raw_actions(act_output, expected_shape=tuple(means.shape))
        return EvalOutput(log_probs=self._log_prob(means, raw), entropy=self._entropy(means), values=values)

    def sft_loss(self, obs: Obs, actions: torch.Tensor, is_pad: torch.Tensor | None = None) -> torch.Tensor:
        """Behaviour cloning: the negative log-likelihood of the demonstration actions under the policy's
        Gaussian, per action dimension, averaged over the non-padded rows (see common/imitation.py).

        Demonstrations are env units; they are normalised and clipped to [-1, 1] (what `env_actions`
        would execute for them), so the actor's mean and the learned log-std both fit the expert. The
        critic gets no gradient. A deterministic expert drives the std down to the fitting error.
        """
        means, _ = self._means_and_values(obs)  # (N, chunk, A)
        cfg = self.config
        target = as_action_chunk(actions, cfg.action_chunk, cfg.action_dim, self.name, means.device)
        target = self.normalize_actions(target).clamp(-1.0, 1.0)
        return padded_rows_mean(-self._log_prob(means, target), is_pad)

    def _raw_actions(self, act_output: ActOutput, expected_shape: tuple[int, ...]) -> torch.Tensor:
        if RAW_ACTIONS_KEY not in act_output.extras:
            raise KeyError(
                f"{self.name}: act_output.extras has no {RAW_ACTIONS_KEY!r} (the pre-clip Gaussian sample "
                f"that act() records); got extras keys {sorted(act_output.extras)}"
            )
        raw = act_output.extras[RAW_ACTIONS_KEY]
        if tuple(raw.shape) != expected_shape:
            raise ValueError(
                f"{self.name}: extras[{RAW_ACTIONS_KEY!r}] has shape {tuple(raw.shape)}; expected "
                f"{expected_shape} = (N, action_chunk={self.config.action_chunk}, action_dim={self.config.action_dim})"
            )
        return raw.to(device=self.log_std.device, dtype=torch.float32)

    # ---- helpers for example_obs --------------------------------------------------------------------
    def _example_state(self, batch_size: int) -> torch.Tensor:
        return torch.randn(batch_size, self.config.state_dim, dtype=torch.float32)  # (N, state_dim)

    @staticmethod
    def _example_instructions(batch_size: int) -> list[str]:
        return ["pick up the cube"] * batch_size
