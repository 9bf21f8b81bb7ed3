"""ManiSkill in one batched simulation: `sim_backend="physx_cuda"` (GPU physics, N envs per process).

`make_batched_vector_env` builds ManiSkill's own batched env and wraps it in `BatchedVectorEnv`
(envs/batched.py), which keeps the contract of our subprocess vector env: action chunks, SAME_STEP
auto-reset (partial resets of the ended envs), episode statistics, seeds. Tensors stay on the GPU.

SAPIEN runs GPU physics through PhysX's GPU library, `libPhysXGpu_64.so`, which it loads from
`~/.sapien/physx/<physx version>/` and, when that file is missing, downloads from GitHub at run time.
rlinf_embodied never downloads anything: `require_physx_gpu` checks for CUDA and for that file first
and, if one is missing, raises an error that says what to install where.
"""

from __future__ import annotations

import platform
from functools import partial
from pathlib import Path
from typing import Any, Optional

from ..batched import BatchedVectorEnv
from ..vector import validate_common_options
from .env import (
    SINGLE_ENV_OPTIONS,
    CameraSize,
    RobotUids,
    build_maniskill_env,
    convert_obs,
    default_max_episode_steps,
    reject_single_env_options,
    task_spec,
    validate_options,
)

PHYSX_RELEASES = "https://github.com/sapien-sim/physx-precompiled/releases/download"


def physx_gpu_library() -> tuple[Path, str]:
    """Where SAPIEN looks for PhysX's GPU library on this machine, and the zip it would download."""
    from sapien import physx

    version = physx.version()
    archive = "linux-aarch64-so.zip" if platform.machine() in ("aarch64", "arm64") else "linux-so.zip"
    return Path.home() / ".sapien" / "physx" / version / "libPhysXGpu_64.so", f"{PHYSX_RELEASES}/{version}/{archive}"


def require_physx_gpu() -> None:
    """Raise a clear error unless GPU physics can start here without a download."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(
            "sim_backend='physx_cuda' needs a CUDA GPU, and torch sees none on this machine; "
            "use sim_backend='physx_cpu' (CPU physics, one env per subprocess)"
        )
    from sapien import physx

    if physx.is_gpu_enabled():
        return
    library, url = physx_gpu_library()
    if not library.is_file():
        raise RuntimeError(
            f"sim_backend='physx_cuda' needs PhysX's GPU library at {library}, which is missing. SAPIEN would "
            f"download it from GitHub at run time; rlinf_embodied does not. On a machine with internet access, "
            f"download {url} and unzip it into {library.parent} (then copy that folder here), or use "
            f"sim_backend='physx_cpu'."
        )


def make_batched_vector_env(
    task: str,
    num_envs: int = 1,
    obs_mode: str = "state",
    max_episode_steps: Optional[int] = None,
    ignore_terminations: bool = False,
    camera_size: CameraSize = None,
    control_mode: Optional[str] = None,
    reward_mode: Optional[str] = "normalized_dense",
    sim_backend: str = "physx_cuda",
    render_backend: Optional[str] = None,
    robot_uids: RobotUids = None,
    **maniskill_kwargs: Any,
) -> BatchedVectorEnv:
    """`num_envs` envs of ManiSkill task `task` in one simulation on `sim_backend`.

    "physx_cuda" is the use case. "physx_cpu" is accepted with `num_envs=1` only (ManiSkill's CPU
    physics holds one env per scene): it runs this same code path without a GPU, for tests.
    """
    validate_options(task, obs_mode, sim_backend, reward_mode, camera_size, control_mode, robot_uids, maniskill_kwargs)
    validate_common_options(num_envs, max_episode_steps=max_episode_steps)
    if sim_backend == "physx_cpu" and num_envs != 1:
        raise ValueError(
            f"a batched ManiSkill env on sim_backend='physx_cpu' holds exactly one env, got "
            f"num_envs={num_envs}; use sim_backend='physx_cuda', or make_vector_env's subprocesses"
        )
    reject_single_env_options(
        maniskill_kwargs,
        "make_vector_env's CPU-physics envs (ManiSkillSingleEnv) only; the batched env steps ManiSkill directly: "
        "leave it False",
    )
    for name in SINGLE_ENV_OPTIONS:  # off: not gym.make's keywords either
        maniskill_kwargs.pop(name, None)
    if sim_backend == "physx_cuda":
        require_physx_gpu()
    spec = task_spec(task)
    sim = build_maniskill_env(
        spec.maniskill_id,
        num_envs,
        sim_backend,
        obs_mode,
        control_mode,
        reward_mode,
        camera_size,
        render_backend,
        robot_uids,
        maniskill_kwargs,
    )
    if max_episode_steps is None:
        max_episode_steps = default_max_episode_steps(task)
    return BatchedVectorEnv(
        sim,
        partial(convert_obs, obs_mode=obs_mode),
        instruction=spec.instruction,
        max_episode_steps=max_episode_steps,
        ignore_terminations=ignore_terminations,
    )
