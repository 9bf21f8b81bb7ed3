"""`IsaacLabVectorEnv`: an IsaacLab `ManagerBasedRLEnv` / `DirectRLEnv` as our torch `VectorEnv`.

IsaacLab envs are already batched on the GPU (`env.num_envs`, `env.device`); this adapter only
maps their API onto the contract of `envs/vector.py`:

- obs: `state` = `obs["policy"]` (a dict of terms is concatenated) as float32 `(N, D)`; `rgb` /
  `wrist_rgb` from camera sensors of `env.scene` when named (`(N, H, W, 3)` uint8);
  `instruction` = a fixed task description per env. Tensors stay on `env.device`.
- actions `(N, act_dim)` or chunks `(N, chunk, act_dim)`, moved to `env.device`.
- terminated = IsaacLab's `terminated` (non-time-out terms, success included); truncated =
  IsaacLab's `time_outs`. `info["success"]` comes from a termination term (default "success",
  read with `termination_manager.get_term`) or, for DirectRLEnv, from `extras[success_key]`.
- Auto-reset mapping. IsaacLab resets ended envs *inside* `step()` and computes the returned
  observation after that reset, which is gymnasium's SAME_STEP: we pass it through. Two
  differences to the subprocess vector env follow from IsaacLab stepping all envs together:
  (1) once env i ends at row t of a chunk, the remaining rows cannot be skipped, so env i gets
  `idle_action` (zeros) for them; their rewards / dones are masked out (0 / False) as the
  contract says, but those idle steps did happen in env i's new episode, so the returned obs is
  the new episode's obs after `chunk - 1 - t` idle steps, and IsaacLab's episode timer counts
  them. (2) IsaacLab does not keep the pre-reset observation, so `info["final_obs"]` is absent;
  `info["_final_info"]` / `info["episode"]` still mark the ended envs.
- episode stats (`info["episode"]`, mask `info["_episode"]`) are kept here, in the same format
  as `envs/vector.py`; IsaacLab's own `extras["log"]` is passed on as `info["log"]`.
- `ignore_terminations` is not supported: IsaacLab resets terminated envs internally. Remove the
  task's termination terms from its cfg instead.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import gymnasium as gym
import numpy as np
import torch

from ..batching import ArrayLike, EpisodeStats, as_action_chunk


def _success_from_term(name: str) -> Callable[[Any, dict, torch.Tensor], Optional[torch.Tensor]]:
    def read(env: Any, extras: dict, terminated: torch.Tensor) -> Optional[torch.Tensor]:
        manager = getattr(env, "termination_manager", None)
        if manager is None or name not in getattr(manager, "active_terms", ()):
            return None
        return manager.get_term(name)

    return read


def _success_from_extras(key: str) -> Callable[[Any, dict, torch.Tensor], Optional[torch.Tensor]]:
    def read(env: Any, extras: dict, terminated: torch.Tensor) -> Optional[torch.Tensor]:
        value = extras.get(key)
        return None if value is None else torch.as_tensor(value, device=terminated.device)

    return read


class IsaacLabVectorEnv(gym.vector.VectorEnv):
    """Wraps a created IsaacLab env (see the module docstring for the mapping).

    Args:
        env: an IsaacLab `ManagerBasedRLEnv` / `DirectRLEnv` (or a gymnasium wrapper of one).
        instruction: the language instruction reported for every env.
        success_term: name of the termination term meaning success ("success" by default).
        success_key: `extras` key with a per-env success tensor (DirectRLEnv tasks), tried after the term.
        rgb_sensor / wrist_rgb_sensor: names of camera sensors in `env.scene` for "rgb" / "wrist_rgb".
        ignore_terminations: must be False (see the module docstring).
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def __init__(
        self,
        env: Any,
        instruction: str = "",
        success_term: str = "success",
        success_key: str = "success",
        rgb_sensor: Optional[str] = None,
        wrist_rgb_sensor: Optional[str] = None,
        ignore_terminations: bool = False,
    ):
        if ignore_terminations:
            raise ValueError(
                "ignore_terminations=True is not supported for IsaacLab: its envs reset on termination "
                "inside step(); remove the termination terms from the task cfg (env_cfg.terminations) "
                "instead"
            )
        self.env = env
        self.base = getattr(env, "unwrapped", env)
        self.num_envs = int(self.base.num_envs)
        self.device = torch.device(self.base.device)
        self.instruction = instruction
        self.cameras = {key: name for key, name in (("rgb", rgb_sensor), ("wrist_rgb", wrist_rgb_sensor)) if name}
        self._validate_cameras()
        self.success_readers = [_success_from_term(success_term), _success_from_extras(success_key)]
        self.single_action_space = self._single_action_space()
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.act_dim = int(self.single_action_space.shape[-1])
        self.render_mode, self.closed = None, False
        self._stats = EpisodeStats(self.num_envs, self.device)
        self.single_observation_space: Optional[gym.spaces.Dict] = None
        self.observation_space: Optional[gym.spaces.Space] = None
        self._set_observation_space(self._space_shapes())

    # -- spaces ------------------------------------------------------------------------------------
    def _single_action_space(self) -> gym.spaces.Box:
        space = getattr(self.base, "single_action_space", None)
        if space is None:  # a batched Box (N, act_dim)
            batched = self.base.action_space
            space = gym.spaces.Box(np.asarray(batched.low)[0], np.asarray(batched.high)[0], dtype=np.float32)
        return gym.spaces.Box(np.asarray(space.low, np.float32), np.asarray(space.high, np.float32), dtype=np.float32)

    def _space_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-env shapes of our obs keys, from IsaacLab's policy space and the cameras' buffers."""
        policy = self.base.single_observation_space["policy"]
        if isinstance(policy, gym.spaces.Dict):
            state_dim = sum(int(np.prod(space.shape)) for space in policy.spaces.values())
        else:
            state_dim = int(np.prod(policy.shape))
        shapes = {"state": (state_dim,)}
        for key, name in self.cameras.items():
            shapes[key] = tuple(self._camera_rgb(name).shape[1:])
        return shapes

    def _set_observation_space(self, shapes: dict[str, tuple[int, ...]]) -> None:
        spaces: dict[str, gym.spaces.Space] = {"state": gym.spaces.Box(-np.inf, np.inf, shapes["state"], np.float32)}
        for key in self.cameras:
            spaces[key] = gym.spaces.Box(0, 255, shapes[key], np.uint8)
        self.single_observation_space = gym.spaces.Dict(spaces)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)

    def _validate_cameras(self) -> None:
        sensors = getattr(getattr(self.base, "scene", None), "sensors", {}) or {}
        for key, name in self.cameras.items():
            if name not in sensors:
                raise KeyError(
                    f"{key}_sensor={name!r} is not a sensor of this IsaacLab scene; valid: {sorted(sensors)} "
                    "(add a Camera/TiledCamera to the scene cfg and launch with enable_cameras)"
                )

    # -- observations ------------------------------------------------------------------------------
    def _obs(self, raw_obs: dict[str, Any]) -> dict[str, Any]:
        policy = raw_obs["policy"] if isinstance(raw_obs, dict) and "policy" in raw_obs else raw_obs
        if isinstance(policy, dict):  # concatenate_terms=False: one tensor per term
            policy = torch.cat([term.reshape(self.num_envs, -1) for term in policy.values()], dim=-1)
        obs: dict[str, Any] = {"state": policy.reshape(self.num_envs, -1).float()}  # (N, D)
        for key, name in self.cameras.items():
            obs[key] = self._camera_rgb(name)  # (N, H, W, 3) uint8
        obs["instruction"] = [self.instruction] * self.num_envs
        return obs

    def _camera_rgb(self, name: str) -> torch.Tensor:
        output = self.base.scene.sensors[name].data.output
        image = output["rgb"] if "rgb" in output else output["rgba"]
        image = image[..., :3]
        if image.dtype != torch.uint8:  # float images in [0, 1]
            image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
        return image

    # -- gymnasium API -----------------------------------------------------------------------------
    def reset(
        self, *, seed: Optional[Union[int, Sequence[int]]] = None, options: Optional[dict] = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if seed is not None and not isinstance(seed, (int, np.integer)):
            raise ValueError(f"IsaacLab seeds the whole batch with one int; got {seed!r} (pass an int or None)")
        raw_obs, extras = self.env.reset(seed=None if seed is None else int(seed), options=options)
        self._stats.reset()
        return self._obs(raw_obs), {"log": extras.get("log", {})} if isinstance(extras, dict) else {}

    def step(self, actions: ArrayLike) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        chunk_actions, is_chunk = as_action_chunk(actions, self.num_envs, self.act_dim, self.device)  # (N, chunk, A)
        n, chunk = self.num_envs, chunk_actions.shape[1]
        rewards = torch.zeros(n, chunk, device=self.device)
        terminated, truncated, success = (torch.zeros(n, chunk, dtype=torch.bool, device=self.device) for _ in range(3))
        active = torch.ones(n, dtype=torch.bool, device=self.device)
        ended = torch.zeros(n, dtype=torch.bool, device=self.device)
        applied = torch.zeros(n, dtype=torch.int64, device=self.device)
        idle = torch.zeros_like(chunk_actions[:, 0])
        log: dict[str, Any] = {}
        raw_obs: Any = None
        for t in range(chunk):
            step_actions = torch.where(active[:, None], chunk_actions[:, t], idle)
            raw_obs, reward, term, trunc, extras = self.env.step(step_actions)
            term, trunc = term.to(self.device).bool(), trunc.to(self.device).bool()
            rewards[:, t] = torch.where(active, reward.to(self.device).float(), 0.0)
            terminated[:, t], truncated[:, t] = term & active, trunc & active
            success[:, t] = self._success(extras, term) & active
            applied += active.long()
            log.update(extras.get("log", {}) or {})
            done_now = active & (term | trunc)
            ended |= done_now
            active &= ~done_now
        info = {**self._stats.update(rewards, success, ended, applied), "log": log}
        obs = self._obs(raw_obs)
        if not is_chunk:
            return obs, rewards[:, 0], terminated[:, 0], truncated[:, 0], info
        return obs, rewards, terminated, truncated, info

    def _success(self, extras: dict, terminated: torch.Tensor) -> torch.Tensor:
        for reader in self.success_readers:
            value = reader(self.base, extras, terminated)
            if value is not None:
                return value.to(self.device).bool().reshape(self.num_envs)
        return torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)

    def close_extras(self, **kwargs: Any) -> None:
        self.env.close()
