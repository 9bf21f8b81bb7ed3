"""Create IsaacLab envs: start Isaac Sim headless (once per process), build the task cfg, wrap it.

Everything IsaacLab is imported lazily here, so `import rlinf_embodied` works without Isaac Sim;
making an `rlinf/IsaacLab-*` env on such a machine raises `IsaacLabNotInstalledError`.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Optional

import gymnasium as gym

from .adapter import IsaacLabVectorEnv
from .tasks import get_task

INSTALL_DOCS = "https://isaac-sim.github.io/IsaacLab/main/source/setup/installation/index.html"
_SIMULATION_APP: Any = None  # Isaac Sim allows one app per process


class IsaacLabNotInstalledError(ImportError):
    pass


def require_isaaclab() -> None:
    """Raise a clear error naming what to install when IsaacLab is not importable."""
    missing = [name for name in ("isaaclab", "isaaclab_tasks") if importlib.util.find_spec(name) is None]
    if missing:
        raise IsaacLabNotInstalledError(
            f"IsaacLab is not installed (missing Python packages: {', '.join(missing)}). The rlinf/IsaacLab-* envs "
            "need Isaac Sim plus IsaacLab (`isaaclab`, `isaaclab_tasks`) in this Python (3.10 for Isaac Sim 4.x, "
            f"3.11 for Isaac Sim 5.x) and an NVIDIA GPU with a recent driver; install guide: {INSTALL_DOCS}"
        )


def launch_app(enable_cameras: bool) -> Any:
    """Start Isaac Sim headless once per process (IsaacLab's AppLauncher must precede other isaaclab imports)."""
    global _SIMULATION_APP
    if _SIMULATION_APP is None:
        from isaaclab.app import AppLauncher

        _SIMULATION_APP = AppLauncher(headless=True, enable_cameras=enable_cameras).app
    return _SIMULATION_APP


def make_isaaclab_vector_env(
    num_envs: int,
    task: str,
    obs_mode: str = "state",
    max_episode_steps: Optional[int] = None,
    ignore_terminations: bool = False,
    device: str = "cuda:0",
    rgb_sensor: Optional[str] = None,
    wrist_rgb_sensor: Optional[str] = None,
    success_term: str = "success",
    cfg_overrides: Optional[dict[str, Any]] = None,
    **_: Any,
) -> IsaacLabVectorEnv:
    """The vector entry point of the `rlinf/IsaacLab-*` ids.

    obs_mode "rgb" needs `rgb_sensor` (a camera in the task's scene cfg). `max_episode_steps`
    sets the task's `episode_length_s` (= steps * sim.dt * decimation). `cfg_overrides` sets
    attributes of the env cfg by dotted path, e.g. {"scene.env_spacing": 3.0}.
    """
    spec = get_task(task)
    if obs_mode not in ("state", "rgb"):
        raise ValueError(f"obs_mode={obs_mode!r} is not supported for IsaacLab; valid: ['rgb', 'state']")
    if obs_mode == "rgb" and not rgb_sensor:
        raise ValueError("obs_mode='rgb' needs rgb_sensor=<name of a camera sensor in the task's scene cfg>")
    if ignore_terminations:
        raise ValueError(
            "ignore_terminations=True is not supported for IsaacLab (it resets terminated envs inside "
            "step()); disable the task's termination terms via cfg_overrides instead"
        )
    require_isaaclab()
    launch_app(enable_cameras=obs_mode == "rgb")
    importlib.import_module("isaaclab_tasks")  # registers the Isaac-* gymnasium ids
    from isaaclab_tasks.utils import parse_env_cfg

    cfg = parse_env_cfg(spec.isaaclab_id, device=device, num_envs=num_envs)
    if max_episode_steps is not None:
        cfg.episode_length_s = max_episode_steps * cfg.sim.dt * cfg.decimation
    for path, value in (cfg_overrides or {}).items():
        set_by_path(cfg, path, value)
    env = gym.make(spec.isaaclab_id, cfg=cfg)
    return IsaacLabVectorEnv(
        env,
        instruction=spec.instruction,
        success_term=success_term,
        rgb_sensor=rgb_sensor,
        wrist_rgb_sensor=wrist_rgb_sensor,
        ignore_terminations=ignore_terminations,
    )


def set_by_path(obj: Any, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for name in parents:
        obj = getattr(obj, name)
    if not hasattr(obj, leaf):
        raise AttributeError(f"cfg has no attribute {path!r}")
    setattr(obj, leaf, value)


def single_env_entry_point(**kwargs: Any) -> Any:
    raise TypeError(
        "IsaacLab envs are batched on the GPU: create them with gym.make_vec(<id>, num_envs=N, "
        "vectorization_mode='vector_entry_point')"
    )
