"""`BatchedVectorEnv`: one batched simulator (all envs in one process) as our torch `VectorEnv`.

For simulators that step N envs at once, e.g. ManiSkill on GPU physics (`sim_backend="physx_cuda"`).
It gives the same contract as `SubprocVectorEnv` (see `vector.py`'s docstring), with tensors on
the simulator's device. The simulator follows ManiSkill's batched API (`BatchedSim` below).

How the contract maps onto a simulator that steps every env together:
- Action chunks: all envs step row by row. Once env i ends at row t, rows t+1.. still step its
  (finished) episode, because the batch cannot skip one env; their rewards and flags are masked
  to 0 / False, and env i is reset after the chunk. So, as in the subprocess env, no action of the
  old chunk reaches the new episode, and the returned obs is the new episode's first obs (SAME_STEP).
- Resets are partial: `reset(options={"env_idx": ended})` resets only the envs that ended (the caller may pass
  `env_idx` too: only those envs' episode statistics restart). Other keys the simulator does not read are refused.
- Actions are clipped to `single_action_space` before the simulator steps them; `info["action_clipped"]`
  `(N,)` float32 on the device says which fraction of each env's action elements lay outside it (a warning is
  logged the first time, `batching.ActionBounds`).
- Seeds: `reset(seed=s)` seeds env i with `s + i` (or one seed per env from a list). Each later
  auto-reset draws fresh per-env seeds from a generator seeded by that reset, so the same seed and
  the same actions give the same trajectories. The simulator's episode RNG is reseeded at every
  reset (the batch shares one torch RNG, so envs reset together draw from one stream).
- `max_episode_steps` is applied here; `ignore_terminations` masks the simulator's terminations.
- A crashed simulator is not restarted: with all envs in one process (and on the GPU) there is
  nothing to restart apart from the whole env. `SubprocVectorEnv` restarts single workers.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector.utils import batch_space

from .batching import (
    ActionBounds,
    ArrayLike,
    EpisodeStats,
    SeedLike,
    as_action_chunk,
    box_like,
    check_open,
    is_int,
    per_env_seeds,
)
from .registration import reject_unknown_reset_options
from .vector import IMAGE_KEYS, OBS_KEYS, check_bool_options, validate_common_options

ObsConverter = Callable[[Any], dict[str, torch.Tensor]]

# The reset(options=...) keys ManiSkill's batched envs read: "env_idx" (a partial reset) and "reconfigure"
RESET_OPTIONS = ("env_idx", "reconfigure")


class BatchedSim(Protocol):
    """ManiSkill's batched env API, as `BatchedVectorEnv` uses it.

    `reset(seed=[one int per env], options={"env_idx": (k,) long tensor})` resets the envs in
    `env_idx` (all when absent) and returns `(obs, info)` for all N; `step(actions (N, A))` returns
    `(obs, reward (N,), terminated (N,), truncated (N,), info)` with `info["success"]` (N,) bool.
    """

    num_envs: int
    device: torch.device
    single_action_space: gym.spaces.Box

    def reset(self, seed: Any = None, options: Optional[dict] = None) -> tuple[Any, dict]: ...

    def step(self, actions: torch.Tensor) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor, dict]: ...

    def close(self) -> None: ...


class BatchedVectorEnv(gym.vector.VectorEnv):
    """Wraps a `BatchedSim` (see the module docstring for how the contract maps onto it).

    Args:
        sim: the batched simulator (ManiSkill's unwrapped env, or another with its API).
        convert_obs: the simulator's raw obs -> `{"state": (N, D) float32, ["rgb"/"wrist_rgb": (N, H, W, 3) uint8]}`.
        instruction: the task's language instruction, reported for every env.
        max_episode_steps: truncate episodes after this many steps (None: only the simulator's own).
        ignore_terminations: never report terminated (success does not end the episode).
        reset_options: the `reset(options=...)` keys the simulator reads; any other key is refused.
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def __init__(
        self,
        sim: BatchedSim,
        convert_obs: ObsConverter,
        instruction: str = "",
        max_episode_steps: Optional[int] = None,
        ignore_terminations: bool = False,
        reset_options: Sequence[str] = RESET_OPTIONS,
    ):
        validate_common_options(None, max_episode_steps=max_episode_steps)  # before: True and 2.5 were accepted
        check_bool_options(ignore_terminations=ignore_terminations)
        self.reset_options = tuple(reset_options)
        self.sim, self.convert_obs, self.instruction = sim, convert_obs, instruction
        self.num_envs, self.device = int(sim.num_envs), torch.device(sim.device)
        self.max_episode_steps, self.ignore_terminations = max_episode_steps, ignore_terminations
        space = sim.single_action_space
        self.single_action_space = gym.spaces.Box(
            np.asarray(space.low, np.float32), np.asarray(space.high, np.float32), dtype=np.float32
        )
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.act_dim = int(self.single_action_space.shape[-1])
        self._low = torch.as_tensor(self.single_action_space.low, device=self.device)
        self._high = torch.as_tensor(self.single_action_space.high, device=self.device)
        self._action_bounds = ActionBounds(self.single_action_space, self._name)
        self.render_mode, self.closed = None, False
        self._stats = EpisodeStats(self.num_envs, self.device)
        self._seed_rng = np.random.default_rng()
        obs = self._convert(sim.reset()[0])
        self.single_observation_space = gym.spaces.Dict({key: box_like(value[0]) for key, value in obs.items()})
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)

    def _convert(self, raw_obs: Any) -> dict[str, torch.Tensor]:
        obs = self.convert_obs(raw_obs)
        unknown = set(obs) - set(OBS_KEYS)
        if unknown or "state" not in obs:
            raise KeyError(f"convert_obs must return 'state' and optionally {list(IMAGE_KEYS)}; got {sorted(obs)}")
        return obs

    def _with_instruction(self, obs: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {**obs, "instruction": [self.instruction] * self.num_envs}

    # -- reset -------------------------------------------------------------------------------------
    def reset(self, *, seed: SeedLike = None, options: Optional[dict] = None) -> tuple[dict[str, Any], dict]:
        check_open(self.closed, self.num_envs)  # before: AttributeError on the closed simulator
        options = self._checked_reset_options(options)
        seeds = per_env_seeds(seed, self.num_envs)
        if any(s is None for s in seeds) and not all(s is None for s in seeds):
            raise ValueError(f"a batched simulator resets all envs with seeds or all without; got {seeds}")
        self._seed_rng = np.random.default_rng(None if seeds[0] is None else seeds)
        if seeds[0] is None:  # unseeded: still per-env seeds from our generator, so later resets follow it
            seeds = self._fresh_seeds()
        raw_obs, _ = self.sim.reset(seed=seeds, options=options)
        self._stats.reset(None if options is None else options.get("env_idx"))  # before: all envs' stats
        return self._with_instruction(self._convert(raw_obs)), {}

    def _checked_reset_options(self, options: Any) -> Optional[dict[str, Any]]:
        """The options as the simulator takes them ("env_idx" as a long tensor on its device); unknown keys refused
        (before: ignored by the simulator, so a typo such as "reconfigur" reset as if it were absent)."""
        reject_unknown_reset_options(f"the batched env of {type(self.sim).__name__}", options, self.reset_options)
        if options is None or options.get("env_idx") is None:
            return None if options is None else {key: value for key, value in options.items() if key != "env_idx"}
        return {**options, "env_idx": self._env_idx(options["env_idx"])}

    def _env_idx(self, env_idx: Any) -> torch.Tensor:
        """`reset(options={"env_idx": ...})`: distinct env indices in [0, num_envs) as a (k,) long tensor."""
        values = env_idx.tolist() if isinstance(env_idx, (torch.Tensor, np.ndarray)) else env_idx
        values = [values] if is_int(values) else values
        if (
            not isinstance(values, (list, tuple, range))
            or not values
            or not all(is_int(i) and 0 <= i < self.num_envs for i in values)
            or len(set(values)) != len(values)
        ):
            raise ValueError(
                f"reset(options={{'env_idx': {env_idx!r}}}): pass one or more distinct env indices in [0, {self.num_envs})"
            )
        return torch.as_tensor(list(values), dtype=torch.int64, device=self.device)

    def _fresh_seeds(self) -> list[int]:
        return [int(s) for s in self._seed_rng.integers(2**31 - 1, size=self.num_envs)]

    # -- step --------------------------------------------------------------------------------------
    def step(self, actions: ArrayLike) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        check_open(self.closed, self.num_envs)  # before: AttributeError on the closed simulator
        chunk_actions, is_chunk = as_action_chunk(actions, self.num_envs, self.act_dim, self.device)  # (N, chunk, A)
        action_clipped = self._action_bounds.fraction(chunk_actions)  # (N,): before, clipped silently
        chunk_actions = torch.clamp(chunk_actions, self._low, self._high)  # as envs/README.md documents
        num_envs, chunk = self.num_envs, chunk_actions.shape[1]
        rewards = torch.zeros(num_envs, chunk, device=self.device)
        terminated, truncated, success = (
            torch.zeros(num_envs, chunk, dtype=torch.bool, device=self.device) for _ in range(3)
        )
        active = torch.ones(num_envs, dtype=torch.bool, device=self.device)
        applied = torch.zeros(num_envs, dtype=torch.int64, device=self.device)
        final_obs: Optional[dict[str, torch.Tensor]] = None
        raw_obs: Any = None
        for row in range(chunk):
            raw_obs, reward, term, trunc, info = self.sim.step(chunk_actions[:, row])
            applied += active.long()
            term_now = active & _as_bool(term, self.device) & (not self.ignore_terminations)
            trunc_now = active & (_as_bool(trunc, self.device) | self._time_limit(applied))
            rewards[:, row] = torch.where(active, torch.as_tensor(reward, device=self.device).float(), 0.0)
            success[:, row] = active & _as_bool(info.get("success", False), self.device).expand(num_envs)
            terminated[:, row], truncated[:, row] = term_now, trunc_now
            done_now = term_now | trunc_now
            if done_now.any():  # the obs these envs ended in; other rows' obs are never converted
                final_obs = _keep_rows(final_obs, self._convert(raw_obs), done_now)
            active &= ~done_now
            if not active.any():
                break
        ended = ~active
        if ended.any():
            env_idx = ended.nonzero().squeeze(1)
            raw_obs = self.sim.reset(seed=self._fresh_seeds(), options={"env_idx": env_idx})[0]
        obs = self._convert(raw_obs)
        info = self._stats.update(rewards, success, ended, applied)
        info["action_clipped"] = action_clipped
        if final_obs is not None:
            info["final_obs"] = self._with_instruction(final_obs)
            info["_final_obs"] = ended.clone()
        obs_out = self._with_instruction(obs)
        if not is_chunk:
            return obs_out, rewards[:, 0], terminated[:, 0], truncated[:, 0], info
        return obs_out, rewards, terminated, truncated, info

    def _name(self) -> str:
        """This vector env in messages: its gymnasium id where gym.make_vec built it."""
        spec = getattr(self, "spec", None)
        return f"the batched env of {spec.id if spec is not None else type(self.sim).__name__} ({self.num_envs} envs)"

    def _time_limit(self, applied: torch.Tensor) -> torch.Tensor:
        """(N,) bool: envs whose episode reaches `max_episode_steps` with the rows applied so far."""
        if self.max_episode_steps is None:
            return torch.zeros_like(applied, dtype=torch.bool)
        return self._stats.episode_length + applied >= self.max_episode_steps

    def close_extras(self, **kwargs: Any) -> None:
        self.sim.close()


def _as_bool(value: Any, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(value, device=device).bool().reshape(-1)


def _keep_rows(
    kept: Optional[dict[str, torch.Tensor]], obs: dict[str, torch.Tensor], rows: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Copy `obs[key][rows]` into `kept` (allocated on first use): the obs each env ended in."""
    if kept is None:
        kept = {key: torch.zeros_like(value) for key, value in obs.items()}
    for key, value in obs.items():
        kept[key][rows] = value[rows]
    return kept
