"""Accumulates one env shard's rollout inside a RolloutWorker, step by step, into a Trajectory."""

from __future__ import annotations

from typing import Any

import torch

from ..policies import ActOutput
from .messages import EnvOutput, Trajectory


class TrajectoryBuffer:
    def __init__(self) -> None:
        self.obs: list[dict[str, Any]] = []
        self.act_outputs: list[ActOutput] = []
        self.rewards: list[torch.Tensor] = []  # each (N, chunk)
        self.dones: list[torch.Tensor] = []  # each (N, chunk)
        self.final_values: list[torch.Tensor | None] = []  # each (N,) or None
        self.bootstrap_value: torch.Tensor | None = None
        self.env_ids: torch.Tensor | None = None

    def add_step(self, obs: dict[str, Any], act_output: ActOutput) -> None:
        self.obs.append(obs)
        self.act_outputs.append(act_output)

    def add_outcome(self, env_output: EnvOutput, final_values: torch.Tensor | None) -> None:
        self.rewards.append(env_output.rewards.float())
        self.dones.append(env_output.terminations | env_output.truncations)
        self.final_values.append(final_values)

    def add_bootstrap_value(self, values: torch.Tensor | None) -> None:
        self.bootstrap_value = values

    def finish(self, gamma: float) -> Trajectory:
        num_steps = len(self.act_outputs)
        if len(self.rewards) != num_steps:
            raise RuntimeError(f"rollout buffer holds {num_steps} actions but {len(self.rewards)} outcomes")
        rewards = torch.stack(self.rewards)  # (T, N, chunk)
        for t, final_values in enumerate(self.final_values):
            if final_values is not None:  # bootstrap truncated episodes: r += gamma * V(final obs)
                last_done = _last_done_index(self.dones[t])  # (N,)
                rows = torch.arange(rewards.shape[1])
                rewards[t, rows, last_done] += gamma * final_values
        values = [a.values for a in self.act_outputs] + [self.bootstrap_value]
        if any(v is None for v in values):
            values_tensor = torch.zeros(num_steps + 1, rewards.shape[1])
        else:
            values_tensor = torch.stack([v.float() for v in values])  # (T + 1, N)
        return Trajectory(
            obs=_stack_obs(self.obs),
            actions=torch.stack([a.actions for a in self.act_outputs]),
            log_probs=torch.stack([a.log_probs for a in self.act_outputs]),
            values=values_tensor,
            rewards=rewards,
            dones=torch.stack(self.dones),
            extras={k: torch.stack([a.extras[k] for a in self.act_outputs]) for k in self.act_outputs[0].extras},
            env_ids=self.env_ids,
        )


def _last_done_index(dones: torch.Tensor) -> torch.Tensor:
    """(N, chunk) bool -> (N,) index of the step in the chunk where each env's episode ended (0 if none)."""
    steps = torch.arange(dones.shape[1]).expand_as(dones)
    return torch.where(dones, steps, torch.zeros_like(steps)).max(dim=1).values


def _stack_obs(obs_list: list[dict[str, Any]]) -> dict[str, Any]:
    stacked = {}
    for key, value in obs_list[0].items():
        if isinstance(value, torch.Tensor):
            stacked[key] = torch.stack([o[key] for o in obs_list])
        else:
            stacked[key] = [list(o[key]) for o in obs_list]
    return stacked
