"""Pieces every vector env of ours shares: action-chunk checks, per-env seeds, episode statistics.

`SubprocVectorEnv` (CPU simulators in subprocesses), `BatchedVectorEnv` (one batched simulator,
e.g. ManiSkill on GPU physics) and `IsaacLabVectorEnv` all follow the contract in `vector.py`'s
docstring; these helpers keep the parts of it that do not depend on the backend in one place.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import gymnasium as gym
import numpy as np
import torch

logger = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[float]]
SeedLike = Optional[Union[int, Sequence[Optional[int]]]]


def as_action_chunk(
    actions: ArrayLike, num_envs: int, act_dim: int, device: Union[str, torch.device] = "cpu"
) -> tuple[torch.Tensor, bool]:
    """Validate actions and return them as a float32 chunk `(N, chunk, act_dim)` on `device`.

    The second value says whether a chunk was given (`(N, chunk, A)`) rather than one step (`(N, A)`).
    """
    actions = real_actions(actions)
    if isinstance(actions, torch.Tensor):
        tensor = actions.detach().to(device=device, dtype=torch.float32)
    else:
        tensor = torch.as_tensor(actions.astype(np.float32, copy=False), device=device)
    if tensor.dim() not in (2, 3) or tensor.shape[0] != num_envs or tensor.shape[-1] != act_dim:
        raise ValueError(
            f"actions must have shape (num_envs={num_envs}, act_dim={act_dim}) or "
            f"(num_envs, chunk, act_dim), got {tuple(tensor.shape)}"
        )
    if tensor.dim() == 3 and tensor.shape[1] < 1:
        raise ValueError(f"an action chunk needs at least one step, got shape {tuple(tensor.shape)}")
    reject_non_finite_actions(tensor)
    return (tensor[:, None, :] if tensor.dim() == 2 else tensor), tensor.dim() == 3


def real_actions(actions: ArrayLike, what: str = "actions") -> Union[torch.Tensor, np.ndarray]:
    """`actions` as a tensor or numpy array of real numbers (float or int, cast to float32 by the caller); a bool,
    complex, object or string dtype is a ValueError naming it (before: complex lost its imaginary part with
    only numpy's warning, bools stepped as 0/1, and an array of None was reported as NaN or inf)."""
    if isinstance(actions, torch.Tensor):
        if actions.dtype == torch.bool or actions.is_complex():
            raise ValueError(f"{what}: dtype {actions.dtype} is no real number type; envs take float or int tensors")
        return actions
    array = np.asarray(actions)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{what}: dtype {array.dtype} is no real number type; envs take float or int arrays")
    return array


def reject_non_finite_actions(actions: Union[torch.Tensor, np.ndarray]) -> None:
    """Raise, naming the envs, where an action `(N, ...)` is NaN or inf. The simulators clip actions to their bounds,
    and a NaN passes any clip into the physics: NaN observations, then a non-finite loss iterations later, far from
    the cause."""
    finite = torch.isfinite(actions) if isinstance(actions, torch.Tensor) else torch.from_numpy(np.isfinite(actions))
    if bool(finite.all()):
        return
    bad_envs = (~finite).flatten(1).any(1).nonzero().flatten().tolist()
    shown = ", ".join(map(str, bad_envs[:8])) + (", ..." if len(bad_envs) > 8 else "")
    raise ValueError(
        f"the actions of env(s) {shown} hold NaN or inf ({len(bad_envs)} of {finite.shape[0]} envs); envs take "
        "finite actions only (a policy whose weights or inputs stopped being finite?)"
    )


def check_single_action(action: Any, shape: tuple[int, ...], env_name: str) -> np.ndarray:
    """One env's action as float32 of exactly `shape`, finite; else a ValueError naming both (before: ManiSkill's
    assertion named its internal batch shape, (1, 8) for a (8,) action, and inf was stepped)."""
    array = real_actions(action, f"{env_name}'s action")
    if isinstance(array, torch.Tensor):
        array = array.detach().to("cpu", torch.float32).numpy()
    array = np.asarray(array, np.float32)
    if array.shape != tuple(shape):
        raise ValueError(f"{env_name} takes one action of shape {tuple(shape)}, got shape {array.shape}")
    reject_non_finite_action(array, env_name)
    return array


def reject_non_finite_action(action: np.ndarray, env_name: str) -> None:
    """One env's action: NaN or inf is an error naming it (reject_non_finite_actions says it for a batch)."""
    if not np.isfinite(action).all():
        raise ValueError(f"{env_name}'s action {action.tolist()} holds NaN or inf; envs take finite actions only")


# An overshoot up to this share of a dimension's range (bound to bound) is read as sampling near the bound, not a bug.
SMALL_OVERSHOOT = 0.1


class ActionBounds:
    """The action space's bounds, to report the action elements outside them, which the envs clip to them: every env
    of ours puts each env's fraction of such elements into `info["action_clipped"]`, and the first out-of-box action
    an env object receives logs a warning naming the largest |value| and the bounds (before: clipped silently; a
    policy's scaling bug looked like a policy that could not learn). A bound counts as exceeded beyond a float32
    rounding tolerance (1e-6 of the dimension's range, at least 1e-6): a policy that maps [-1, 1] onto the env's
    bounds may land an ulp outside them.

    `name`: the env in the warning (a callable: read when warning, e.g. a vector env's spec id set after it is built).
    `warn`: log that warning; a vector env turns it off in the single envs of its workers, warning itself."""

    def __init__(self, space: gym.spaces.Box, name: Union[str, Callable[[], str]]):
        self.space, self.name, self.warn = space, name, True
        low, high = np.asarray(space.low, np.float32), np.asarray(space.high, np.float32)
        with np.errstate(invalid="ignore", over="ignore"):
            tolerance = 1e-6 * np.maximum(1.0, high.astype(np.float64) - low)
        self.low = (low - tolerance).astype(np.float32)  # an infinite bound stays infinite
        self.high = (high + tolerance).astype(np.float32)
        # the common case in two reductions: every element within [the largest low, the smallest high] is inside
        self._inner_low, self._inner_high = float(self.low.max()), float(self.high.min())
        self._tensors: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def fraction(self, actions: Union[np.ndarray, torch.Tensor]) -> Union[np.ndarray, torch.Tensor]:
        """(N,) float32 (numpy for numpy, torch on the actions' device for torch): for each env (the first axis of
        `actions`, e.g. (N, chunk, A)), the fraction of its action elements outside the bounds. The common case,
        every element inside, costs two reductions (one op for a tensor, and its device sync)."""
        if isinstance(actions, torch.Tensor):
            smallest, largest = torch.aminmax(actions.detach())
            if smallest.item() >= self._inner_low and largest.item() <= self._inner_high:
                return torch.zeros(len(actions), dtype=torch.float32, device=actions.device)
            low, high = self._bounds_on(actions.device)
            outside = torch.lt(actions, low).logical_or_(torch.gt(actions, high))
            if self.warn and bool(outside.any()):
                self._warn(actions.detach().cpu().numpy(), outside.cpu().numpy())
            return outside.flatten(1).sum(dim=1, dtype=torch.float32).mul_(1.0 / outside[0].numel())
        if actions.min() >= self._inner_low and actions.max() <= self._inner_high:
            return np.zeros(len(actions), np.float32)
        outside = (actions < self.low) | (actions > self.high)
        if self.warn and outside.any():
            self._warn(actions, outside)
        return outside.reshape(len(actions), -1).mean(axis=1, dtype=np.float32)

    def _bounds_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._tensors:
            self._tensors[device] = (torch.from_numpy(self.low).to(device), torch.from_numpy(self.high).to(device))
        return self._tensors[device]

    def _warn(self, actions: np.ndarray, outside: np.ndarray) -> None:
        self.warn = False
        name = self.name() if callable(self.name) else self.name
        outside = outside.reshape(-1, outside.shape[-1])
        envs = int(outside.reshape(len(actions), -1).any(axis=1).sum())
        dims = np.flatnonzero(outside.any(axis=0)).tolist()
        flat = actions.reshape(outside.shape)
        largest = float(np.abs(flat[outside]).max())
        logger.warning(
            "%s received actions outside its action space %s (max |value| %.6g, in action dimension(s) %s of %d of %d "
            "envs): they are clipped to the bounds. info['action_clipped'] holds each env's fraction of action "
            "elements outside them (the env workers' metric clipped_action_fraction); %s Warned once per env.",
            name,
            self.space,
            largest,
            dims,
            envs,
            len(actions),
            self._cause(flat, outside),
        )

    def _cause(self, actions: np.ndarray, outside: np.ndarray) -> str:
        """The likely cause, by how far the actions (M, A) overshoot relative to each dimension's range: a policy
        sampling near the bounds (RL's Gaussian noise, an unbounded head's mean) overshoots a little, which is
        expected; a scaling bug (normalised actions sent in env units, or the reverse) far."""
        low, high = np.broadcast_to(self.low, actions.shape), np.broadcast_to(self.high, actions.shape)
        width = high - low
        beyond = np.maximum(low - actions, actions - high)[outside]
        finite = np.isfinite(width[outside]) & (width[outside] > 0)
        if finite.any() and float((beyond[finite] / width[outside][finite]).max()) <= SMALL_OVERSHOOT:
            return (
                f"all are within {SMALL_OVERSHOOT:.0%} of their dimension's range beyond it, as a stochastic policy's "
                "samples or an unbounded action head near the bounds give (expected in RL; watch the fraction)."
            )
        return (
            "a policy's actions out this far usually mean an action scaling bug (its action normalisation, "
            "policy.overrides.action_low / action_high)."
        )


MAX_SEED = 2**32 - 1  # the simulators seed numpy's RandomState, which takes [0, 2**32 - 1]


def per_env_seeds(seed: SeedLike, num_envs: int) -> list[Optional[int]]:
    """`reset(seed=...)` as one seed per env: an int gives env i `seed + i`; a list must have N entries (ints or
    None). Checked here, in the caller's process: a bad seed used to reach the env workers, whose error looked like
    a crash (the worker was restarted and retried with the same seed), and a string or floats were read silently
    ("12" as [1, 2], [1.9, 2.7] as [1, 2])."""
    if seed is None:
        return [None] * num_envs
    if is_int(seed):
        seeds: list[Any] = [int(seed) + i for i in range(num_envs)]
    elif isinstance(seed, (str, bytes)) or not isinstance(seed, Iterable):
        raise TypeError(f"reset(seed={seed!r}): pass an int (env i gets seed + i), a list of {num_envs}, or None")
    else:
        seeds = list(seed)
        if len(seeds) != num_envs:
            raise ValueError(
                f"reset(seed=...) got {len(seeds)} seeds for {num_envs} envs; pass an int or a list of exactly "
                f"{num_envs}"
            )
        wrong = [s for s in seeds if s is not None and not is_int(s)]
        if wrong:
            raise TypeError(f"reset(seed=...) entries {wrong[:4]} are not ints; each env's seed is an int or None")
    out_of_range = [s for s in seeds if s is not None and not 0 <= int(s) <= MAX_SEED]
    if out_of_range:
        raise ValueError(
            f"reset(seed={seed!r}) gives seeds {out_of_range[:4]} outside [0, {MAX_SEED}]"
            + (f" (an int seed gives env i seed + i, up to seed + {num_envs - 1})" if is_int(seed) else "")
        )
    return [None if s is None else int(s) for s in seeds]


def is_int(value: Any) -> bool:
    """An int or numpy integer, and not a bool (True is an int to Python: num_envs=True built one env)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_one_task_id(task_id: Any) -> bool:
    """Whether env.kwargs.task_id is one task id for every env (an int, numpy ints included, not a bool) rather than
    a per-env list: the one test of LIBERO's vector env (vector_env.validated_task_ids) and of the env workers, which
    give each vector env its slice of a per-env list (workers/env_worker.per_env_task_ids)."""
    return is_int(task_id)


def camera_hw(camera_size: Any, minimum: int = 1, pair: bool = True, hint: str = "pixels") -> tuple[int, int]:
    """`camera_size` as (H, W): an int >= `minimum` (a square), or with `pair` an [H, W] pair of such ints. The
    camera-size check of every backend (ManiSkill, LIBERO), so they refuse the same values. Anything else raises,
    naming camera_size and what is valid; nothing is converted: before, ManiSkill iterated the string '64' (a quoted
    YAML value) into a 6x4 camera, truncated [96.9, 96.9] to 96 and read True as a 1x1 camera."""
    valid = f"an int >= {minimum}" + (f" or [H, W] of ints >= {minimum}" if pair else "")
    if is_int(camera_size) and camera_size >= minimum:
        return int(camera_size), int(camera_size)
    is_pair = (
        pair
        and isinstance(camera_size, (Sequence, np.ndarray))
        and not isinstance(camera_size, (str, bytes))
        and len(camera_size) == 2
        and all(is_int(side) and side >= minimum for side in camera_size)
    )
    if is_pair:
        return int(camera_size[0]), int(camera_size[1])
    quoted = (
        " (a quoted YAML value is a string: write camera_size=64, not '64')" if isinstance(camera_size, str) else ""
    )
    raise ValueError(f"camera_size={camera_size!r} must be {valid} ({hint}), not a string, float or bool{quoted}")


def check_open(closed: bool, num_envs: int) -> None:
    """The error of a vector env used after `close()` (before: AttributeError on a None simulator or pipe)."""
    if closed:
        raise RuntimeError(f"this vector env of {num_envs} envs is closed; make a new one to reset or step")


def box_like(value: Any) -> gym.spaces.Box:
    """The observation Box of one env's array or tensor: uint8 images in [0, 255], else float32."""
    shape = tuple(value.shape)
    if str(value.dtype).endswith("uint8"):
        return gym.spaces.Box(0, 255, shape, np.uint8)
    return gym.spaces.Box(-np.inf, np.inf, shape, np.float32)


class EpisodeStats:
    """Running return / length / success_once per env, and the `info` entries of a step.

    `update` takes one step call's per-row results and returns `info` with `success`,
    `elapsed_steps`, `episode` / `_episode` and, where an env ended, `final_info` / `_final_info`
    (see `vector.py`'s docstring). Tensors live on `device`.
    """

    def __init__(self, num_envs: int, device: Union[str, torch.device] = "cpu"):
        self.device = torch.device(device)
        self.episode_return = torch.zeros(num_envs, dtype=torch.float64, device=self.device)
        self.episode_length = torch.zeros(num_envs, dtype=torch.int64, device=self.device)
        self.success_once = torch.zeros(num_envs, dtype=torch.bool, device=self.device)

    def reset(self, env_idx: Optional[torch.Tensor] = None) -> None:
        """Start new episodes for the envs `env_idx` (a long tensor; None: all)."""
        if env_idx is None:
            env_idx = torch.arange(self.episode_length.shape[0], device=self.device)
        self.episode_return[env_idx] = 0.0
        self.episode_length[env_idx] = 0
        self.success_once[env_idx] = False

    def update(
        self, rewards: torch.Tensor, success: torch.Tensor, ended: torch.Tensor, applied: torch.Tensor
    ) -> dict[str, Any]:
        """rewards (N, chunk) float, success (N, chunk) bool: per applied row (0 / False elsewhere);
        ended (N,) bool: the env's episode ended in this call; applied (N,) int64: rows applied."""
        last_row = (applied - 1).clamp_(min=0).unsqueeze_(1)  # (N, 1): the last row each env applied
        last_success = success.gather(1, last_row).squeeze_(1)  # (N,)
        self.episode_return += rewards.sum(dim=1)
        self.episode_length += applied
        self.success_once |= success.any(dim=1)
        info: dict[str, Any] = {"success": last_success}
        if not ended.any():  # the common case, kept cheap: a few torch ops cost more than a small env step
            info["elapsed_steps"] = self.episode_length.clone()
            info["episode"] = {
                "return": torch.zeros_like(rewards[:, 0]),
                "length": torch.zeros_like(applied),
                "success_once": torch.zeros_like(ended),
                "success": torch.zeros_like(ended),
            }
            info["_episode"] = torch.zeros_like(ended)
            return info
        episode = {
            "return": self.episode_return.masked_fill(~ended, 0.0).to(torch.float32),
            "length": self.episode_length.masked_fill(~ended, 0),
            "success_once": ended & self.success_once,
            "success": ended & last_success,
        }
        info["elapsed_steps"] = self.episode_length.masked_fill(ended, 0)
        info["episode"], info["_episode"] = episode, ended.clone()
        info["final_info"] = {
            "success": episode["success"].clone(),
            "episode": dict(episode),
            "_success": ended.clone(),
            "_episode": ended.clone(),
        }
        info["_final_info"] = ended.clone()
        self.episode_return.masked_fill_(ended, 0.0)
        self.episode_length.masked_fill_(ended, 0)
        self.success_once.masked_fill_(ended, False)
        return info
