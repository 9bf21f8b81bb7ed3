"""ManiSkill3 tabletop tasks as `rlinf/ManiSkill-<Task>` envs.

`ManiSkillSingleEnv` is one CPU-physics ManiSkill env (`num_envs=1`, physx_cpu) as a numpy
`gymnasium.Env` following the `SingleEnv` protocol of envs/vector.py; `make_vector_env` puts N of
them into a `SubprocVectorEnv` (ManiSkill's physx_cpu holds one env per sim, hence subprocesses).
With `sim_backend="physx_cuda"` it builds one batched GPU simulation instead (gpu_physics.py).
`build_maniskill_env` and `convert_obs` are shared by both.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Optional, Sequence, Union

import gymnasium as gym
import numpy as np
import torch

from ..batching import ActionBounds, box_like, camera_hw, check_single_action, is_int
from ..registration import (
    VECTOR_ONLY_OPTIONS,
    keyword_names,
    reject_unknown_options,
    reject_unknown_reset_options,
    reject_vector_options,
)
from ..vector import SubprocVectorEnv, start_forkserver, validate_common_options, validate_context
from .tasks import TASKS, ManiSkillTask, task_spec  # noqa: F401  (TASKS, ManiSkillTask: re-exported)


OBS_MODES = ("state", "rgb")
SIM_BACKENDS = ("physx_cpu", "physx_cuda")  # physx_cuda: vector envs only, see gpu_physics.py
REWARD_MODES = ("normalized_dense", "dense", "sparse", "none")
CameraSize = Union[int, Sequence[int], None]
# what ManiSkill's BaseEnv takes as robot_uids: a registered robot's name, an agent class, or a tuple of those (several
# robots); None: the task's default robot
RobotUids = Union[str, type, tuple[Union[str, type], ...], None]


# render_backend values ManiSkill 3.0.x's parse_sim_and_render_backend (mani_skill/envs/utils/system/backend.py)
# turns into a render device: "none" (no renderer), a CPU name, or a CUDA name with an optional ":<device index>"
RENDER_BACKENDS_NONE = ("none",)
RENDER_BACKENDS_CPU = ("cpu", "sapien_cpu")
RENDER_BACKENDS_CUDA = ("cuda", "gpu", "sapien_cuda")


def _camera_hw(camera_size: CameraSize) -> Optional[tuple[int, int]]:
    """None (ManiSkill's default size) or the (H, W) of batching.camera_hw, which refuses strings, floats and bools."""
    return None if camera_size is None else camera_hw(camera_size)


def sized_sensor_configs(camera_size: CameraSize, sensor_configs: Any) -> Any:
    """The sensor_configs ManiSkill gets: `sensor_configs` (env.kwargs, checked by check_maniskill_values) with the
    camera_size's height and width added for every camera. Both setting a camera's size is refused (before:
    camera_size replaced sensor_configs whole, so e.g. `sensor_configs={fov: 1.2}` was dropped without a word)."""
    size = _camera_hw(camera_size)
    if size is None or not isinstance(sensor_configs, dict):
        return sensor_configs if size is None else dict(height=size[0], width=size[1])
    sized = [
        key
        for key, value in sensor_configs.items()
        if key in ("height", "width") or (isinstance(value, dict) and {"height", "width"} & set(value))
    ]
    if sized:
        raise ValueError(
            f"env.kwargs.sensor_configs={sensor_configs!r} sets a camera size ({sized}) and "
            f"env.kwargs.camera_size={camera_size!r} sets it too: give the size once (camera_size for every camera, "
            "or sensor_configs without camera_size)"
        )
    return {**sensor_configs, "height": size[0], "width": size[1]}


def validate_render_backend(render_backend: Any, setting: str = "render_backend") -> None:
    """None (the default: "none" for state obs, else "gpu") or a value ManiSkill parses into a render device,
    checked by its form only: no SAPIEN device is created here (cheap, and no GPU/Vulkan is touched). Before, a bad
    value failed in every env worker with SAPIEN's `failed to find device "foo"`, naming no setting. "pci:..."
    device strings are not among them: ManiSkill 3.0.x splits the value at every ':', so none reaches SAPIEN."""
    if render_backend is None:
        return
    name, colon, index = render_backend.partition(":") if isinstance(render_backend, str) else ("", "", "")
    if name in RENDER_BACKENDS_NONE + RENDER_BACKENDS_CPU and not colon:  # ManiSkill ignores a CPU index
        return
    if name in RENDER_BACKENDS_CUDA and (not colon or (index.isascii() and index.isdigit())):
        return
    raise ValueError(
        f"{setting}={render_backend!r} is not a ManiSkill render backend; valid: {list(RENDER_BACKENDS_NONE)} (no "
        f"rendering), {list(RENDER_BACKENDS_CPU)}, or {list(RENDER_BACKENDS_CUDA)} optionally with a CUDA device "
        f"index (e.g. 'cuda:1'); or leave it unset ('none' for obs_mode='state', else 'gpu')"
    )


def validate_options(
    task: str,
    obs_mode: str,
    sim_backend: str,
    reward_mode: Optional[str],
    camera_size: CameraSize = None,
    control_mode: Optional[str] = None,
    robot_uids: RobotUids = None,
    maniskill_kwargs: Optional[dict[str, Any]] = None,
) -> None:
    """The options every entry point checks before building ManiSkill (check_options, the single env, the vector
    envs), so gym.make / gym.make_vec refuse what check_env refuses: also the robot, its control mode and the values
    of the keywords passed on to ManiSkill (`maniskill_kwargs`, check_maniskill_values). Before, gym.make never
    checked robot_uids, and `control_mode=5` failed inside build_maniskill_env's own error handler."""
    validate_camera_size(obs_mode, camera_size)
    if obs_mode not in OBS_MODES:
        raise ValueError(f"obs_mode={obs_mode!r} is not supported; valid obs modes: {list(OBS_MODES)}")
    if sim_backend not in SIM_BACKENDS:
        raise ValueError(f"sim_backend={sim_backend!r} is not supported; valid sim backends: {list(SIM_BACKENDS)}")
    if reward_mode is not None and reward_mode not in REWARD_MODES:
        raise ValueError(f"reward_mode={reward_mode!r} is not supported; valid reward modes: {list(REWARD_MODES)}")
    spec = task_spec(task)
    if reward_mode is not None and reward_mode not in spec.reward_modes:  # before: ManiSkill's NotImplementedError
        raise ValueError(
            f"reward_mode={reward_mode!r} is not implemented by ManiSkill's {spec.maniskill_id}; its "
            f"reward modes: {list(spec.reward_modes)} (env.kwargs.reward_mode={spec.reward_modes[0]})"
        )
    check_robot(robot_uids)
    validate_control_mode(task, control_mode, robot_uids)
    check_maniskill_values(task, maniskill_kwargs or {})
    sized_sensor_configs(camera_size, (maniskill_kwargs or {}).get("sensor_configs"))


def validate_control_mode(task: str, control_mode: Any, robot_uids: RobotUids = None) -> None:
    """None (the robot's default) or the name of one of the controllers of the robot the task builds."""
    if control_mode is None:
        return
    maniskill_id = task_spec(task).maniskill_id
    robot, modes = robot_control_modes(maniskill_id, robot_uids)
    if modes is None:  # the agent does not list them without a scene: ManiSkill checks the name
        if not isinstance(control_mode, str):
            raise ValueError(
                f"control_mode={control_mode!r} must be a str: the name of one of {maniskill_id}'s robot "
                f"{robot!r}'s controllers (e.g. 'pd_joint_delta_pos'), or unset for the robot's default"
            )
        return
    if not isinstance(control_mode, str) or control_mode not in modes:
        raise ValueError(
            f"control_mode={control_mode!r} is not supported by {maniskill_id}'s robot {robot!r}; valid control "
            f"modes: {modes}"
        )


def validate_camera_size(obs_mode: str, camera_size: CameraSize) -> None:
    """A camera size of positive ints, and only where a camera renders (before: gym.make and gym.make_vec accepted
    camera_size with obs_mode='state', which changed nothing; only the config path refused it)."""
    _camera_hw(camera_size)
    if camera_size is not None and obs_mode == "state":
        raise ValueError(
            f"camera_size={camera_size!r} with obs_mode='state': state observations render no camera, so it would "
            f"change nothing; drop it (~env.kwargs.camera_size) or set obs_mode='rgb'"
        )


def validate_reward_delta(reward_mode: Optional[str], reward_delta: Any) -> None:
    """reward_delta pays the change of the reward, which reward_mode 'none' keeps at 0: it would change nothing."""
    if reward_delta and reward_mode == "none":
        raise ValueError(
            "reward_delta=True with reward_mode='none': that reward is always 0, so its change is too; set "
            f"reward_mode to one of {[mode for mode in REWARD_MODES if mode != 'none']} or leave reward_delta False"
        )


# The reset(options=...) keys ManiSkill reads for a whole env ("env_idx" resets a part of a batch, which our envs
# never hand it: each keeps its own episode statistics for all of its envs)
RESET_OPTIONS = ("reconfigure",)

# ManiSkillSingleEnv's own options (not gym.make's): CPU physics only, where each env is one of ours
SINGLE_ENV_OPTIONS = ("reward_delta", "binarize_gripper")


def check_switches(**switches: Any) -> None:
    """SINGLE_ENV_OPTIONS are on/off switches: only a bool (before: Hydra's `binarize_gripper=off` arrived as the
    string 'off', which is true, and `maybe` was recorded as the checkpoint's setting)."""
    for name, value in switches.items():
        if not isinstance(value, bool):
            raise ValueError(f"env.kwargs.{name}={value!r} must be true or false")


def reject_single_env_options(maniskill_kwargs: dict[str, Any], where: str) -> None:
    """Raise where a SINGLE_ENV_OPTIONS option is on for an env that is not a ManiSkillSingleEnv; `where` ends the
    message (which envs implement it, and what to do)."""
    for name in SINGLE_ENV_OPTIONS:
        if maniskill_kwargs.get(name):
            raise ValueError(f"{name}=True is implemented for {where}")


def validate_backend_options(
    sim_backend: str, num_workers: Optional[int], step_timeout: Optional[float], maniskill_kwargs: dict[str, Any]
) -> None:
    """The options only CPU physics (one env per subprocess, ManiSkillSingleEnv) reads, refused on GPU physics."""
    if sim_backend != "physx_cuda":
        return
    reject_single_env_options(
        maniskill_kwargs,
        "sim_backend='physx_cpu' only (ManiSkillSingleEnv); with sim_backend='physx_cuda' leave it False",
    )
    if num_workers is not None or step_timeout is not None:
        raise ValueError(
            f"num_workers={num_workers!r} / step_timeout={step_timeout!r} apply to sim_backend="
            f"'physx_cpu' (subprocesses); sim_backend='physx_cuda' runs all envs in one process"
        )


def check_options(
    task: str,
    obs_mode: str,
    sim_backend: str,
    reward_mode: Optional[str],
    control_mode: Optional[str] = None,
    robot_uids: RobotUids = None,
    camera_size: CameraSize = None,
    num_workers: Optional[int] = None,
    step_timeout: Optional[float] = None,
    render_backend: Optional[str] = None,
    context: str = "forkserver",
    **maniskill_kwargs: Any,
) -> None:
    """register_env's options_check: make_vector_env's own checks, the camera size, the render backend, the
    subprocesses' start method, the robot, its control mode and the values ManiSkill gets, on its keywords
    (check_env_options fills in its defaults)."""
    validate_options(task, obs_mode, sim_backend, reward_mode, camera_size, control_mode, robot_uids, maniskill_kwargs)
    validate_render_backend(render_backend, "env.kwargs.render_backend")
    validate_context(context, "env.kwargs.context")
    validate_common_options(None, num_workers, None, step_timeout)  # num_envs (split), max_episode_steps: apart
    validate_backend_options(sim_backend, num_workers, step_timeout, maniskill_kwargs)
    check_switches(**{name: maniskill_kwargs[name] for name in SINGLE_ENV_OPTIONS if name in maniskill_kwargs})
    validate_reward_delta(reward_mode, maniskill_kwargs.get("reward_delta"))
    check_maniskill_keywords(task, maniskill_kwargs)


def maniskill_registries() -> tuple[dict[str, Any], dict[str, Any]]:
    """ManiSkill's (REGISTERED_ENVS, REGISTERED_AGENTS), after importing its envs (which registers both, and its
    gym ids), with the import's deprecation warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mani_skill.envs  # noqa: F401
        from mani_skill.agents.registration import REGISTERED_AGENTS
        from mani_skill.utils.registration import REGISTERED_ENVS
    return REGISTERED_ENVS, REGISTERED_AGENTS


def check_maniskill_keywords(task: str, maniskill_kwargs: dict[str, Any], single: bool = False) -> None:
    """The keywords our entry points do not read go on to ManiSkill's `gym.make`: each must be a parameter of
    ours, of gym.make, or of the task's env class (or a base class's). Only a keyword that is none of ours needs
    the task's class: importing ManiSkill's envs for it costs the driver about 2 s of start-up. gym.make's own
    parameters (`id`, `disable_env_checker`) are not among them: build_maniskill_env passes those itself.

    `single`: the keywords of one env (`gym.make`, ManiSkillSingleEnv): the valid ones named leave out those only
    the vector entry points read (VECTOR_ONLY_OPTIONS, which make_single_env refuses; before, they were listed as
    valid, e.g. num_envs and ignore_terminations) and include gym.make's `max_episode_steps`."""
    from .gpu_physics import make_batched_vector_env

    reject_render_mode(maniskill_kwargs.get("render_mode"))
    if single:
        ours: tuple[Any, ...] = (make_single_env, ManiSkillSingleEnv.__init__)
        refused: tuple[str, ...] = VECTOR_ONLY_OPTIONS
    else:
        ours, refused = (make_vector_env, make_batched_vector_env, ManiSkillSingleEnv.__init__), ()
    if set(maniskill_kwargs) <= keyword_names(*ours) - set(refused):
        return
    registered_envs, _ = maniskill_registries()
    env_class = registered_envs[task_spec(task).maniskill_id].cls
    inits = [klass.__init__ for klass in env_class.__mro__ if "__init__" in vars(klass) and klass is not object]
    reject_unknown_options(
        f"rlinf/ManiSkill-{task} (ManiSkill's {env_class.__name__})",
        maniskill_kwargs,
        *ours,
        *inits,
        # task: the id's (registration's FIXED_KWARGS); render_mode: above; with `single`, ManiSkill's num_envs too
        exclude=("task", "render_mode", *refused),
    )


def reject_render_mode(render_mode: Optional[str]) -> None:
    """Our ManiSkill envs have no render() (before: gym.make(..., render_mode="rgb_array") built, then render()
    raised a bare NotImplementedError): frames come as observations."""
    if render_mode is not None:
        raise ValueError(
            f"render_mode={render_mode!r}: rlinf's ManiSkill envs do not render(); for camera frames use "
            f"obs_mode='rgb' (obs['rgb'], sized by camera_size), and for evaluation videos eval.video=true "
            f"(envs/wrappers/video.py's VideoRecorder records the rgb observations)"
        )


def check_robot(robot_uids: RobotUids) -> None:
    """None (the task's default robot), a robot ManiSkill has registered, an agent class, or a tuple of those
    (ManiSkill's form for several robots). Before: ManiSkill's RuntimeError in every env worker, naming no setting,
    or for a non-string (e.g. `robot_uids=5`) no check at all."""
    if robot_uids is None:
        return
    _, registered_agents = maniskill_registries()
    from mani_skill.agents.base_agent import BaseAgent

    robots = robot_uids if isinstance(robot_uids, tuple) and robot_uids else (robot_uids,)
    for robot in robots:
        if isinstance(robot, str) and robot in registered_agents:
            continue
        if isinstance(robot, type) and issubclass(robot, BaseAgent):
            continue
        raise ValueError(
            f"env.kwargs.robot_uids={robot_uids!r} is not a ManiSkill robot; valid: {sorted(registered_agents)} (or "
            f"a tuple of them for several robots, or a ManiSkill agent class)"
        )


# ManiSkill 3.0.x's keywords (BaseEnv.__init__, its tabletop tasks' __init__) that go through to its gym.make as
# they are, and the values they take there (check_maniskill_values; robot_uids: check_robot)
MANISKILL_SWITCHES = ("enable_shadow", "parallel_in_single_scene", "enhanced_determinism")
MANISKILL_CAMERA_CONFIGS = ("sensor_configs", "human_render_camera_configs", "viewer_camera_configs")


def check_maniskill_values(task: str, maniskill_kwargs: dict[str, Any]) -> None:
    """The values of the keywords passed on to ManiSkill, by the types its env's `__init__` takes them in. Before,
    only their names were checked (check_maniskill_keywords): `sim_config=5`, `robot_init_qpos_noise='abc'` failed
    with ManiSkill's or numpy's raw errors inside every env worker, after the cluster had started, and
    `reconfiguration_freq=-1` silently meant "never reconfigure"."""
    for name, value in maniskill_kwargs.items():
        if name == "sim_config":
            check_sim_config(task, value)
        elif name == "robot_init_qpos_noise":
            if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)) or (
                value < 0
            ):
                raise ValueError(
                    f"env.kwargs.{name}={value!r} must be a number >= 0: the standard deviation of the noise added "
                    f"to the robot's initial joint positions (ManiSkill's default: 0.02)"
                )
        elif name == "reconfiguration_freq":
            if value is not None and not (is_int(value) and value >= 0):
                raise ValueError(
                    f"env.kwargs.{name}={value!r} must be an int >= 0 (reconfigure the scene every that many resets; "
                    f"0: never) or null (the task's default)"
                )
        elif name in MANISKILL_SWITCHES:
            if not isinstance(value, bool):
                raise ValueError(f"env.kwargs.{name}={value!r} must be true or false")
        elif name in MANISKILL_CAMERA_CONFIGS:
            if value is not None and not isinstance(value, dict):
                raise ValueError(
                    f"env.kwargs.{name}={value!r} must be a dict of ManiSkill CameraConfig fields (all cameras) or "
                    f"of camera names to such dicts, e.g. {{'fov': 1.2}}; or null"
                )
        elif name == "shader_dir":
            if value is not None and not isinstance(value, str):
                raise ValueError(f"env.kwargs.{name}={value!r} must be a str (a ManiSkill shader pack) or null")


def check_sim_config(task: str, sim_config: Any) -> Any:
    """A dict of ManiSkill SimConfig fields, or a SimConfig, merged over the task's defaults and read as ManiSkill's
    BaseEnv does (dacite, strict), with its frequencies' check: the same errors, named and before any env builds.
    Returns the merged SimConfig (what the task's env would run with: e.g. its control_freq, read without an env)."""
    import dacite
    from mani_skill.utils.common import dict_merge
    from mani_skill.utils.structs.types import SimConfig

    fields = sorted(SimConfig().dict())
    if isinstance(sim_config, SimConfig):
        overrides = sim_config.dict()
    elif isinstance(sim_config, dict):
        overrides = sim_config
    else:
        raise ValueError(
            f"env.kwargs.sim_config={sim_config!r} must be a dict of ManiSkill SimConfig fields (e.g. "
            f"{{'sim_freq': 100, 'control_freq': 20}}) or a SimConfig; its fields: {fields}"
        )
    registered_envs, _ = maniskill_registries()
    env_class = registered_envs[task_spec(task).maniskill_id].cls
    try:  # a property that builds a SimConfig and reads no env state
        merged = env_class._default_sim_config.fget(object.__new__(env_class)).dict()
    except Exception:  # noqa: BLE001 (a task whose defaults need a built env: check over SimConfig's own)
        merged = SimConfig().dict()
    try:
        dict_merge(merged, overrides)
        config = dacite.from_dict(data_class=SimConfig, data=merged, config=dacite.Config(strict=True))
    except Exception as error:  # noqa: BLE001 (dacite's errors, or dict_merge's on a non-dict part)
        raise ValueError(
            f"env.kwargs.sim_config={sim_config!r} is not a valid ManiSkill SimConfig: {error} (its fields: {fields})"
        ) from error
    freqs = config.sim_freq, config.control_freq
    if not all(is_int(freq) and freq > 0 for freq in freqs) or freqs[0] % freqs[1]:
        raise ValueError(
            f"env.kwargs.sim_config={sim_config!r}: sim_freq={freqs[0]!r} and control_freq={freqs[1]!r} must be "
            f"ints > 0, sim_freq a multiple of control_freq (ManiSkill steps the physics sim_freq / control_freq "
            f"times per action)"
        )
    return config


def robot_control_modes(maniskill_id: str, robot_uids: RobotUids) -> tuple[Any, Optional[list[str]]]:
    """The robot `maniskill_id` builds (`robot_uids`, else the task's default) and its controllers' names, read
    from the agent class without building a scene; (robot, None) where ManiSkill does not expose them that way
    (then the env workers' `gym.make` checks the mode)."""
    import inspect

    registered_envs, registered_agents = maniskill_registries()
    if robot_uids is None:
        parameter = inspect.signature(registered_envs[maniskill_id].cls.__init__).parameters.get("robot_uids")
        robot_uids = None if parameter is None else parameter.default
    if isinstance(robot_uids, tuple) and len(robot_uids) == 1:  # ManiSkill's BaseEnv reads a 1-tuple as its robot
        robot_uids = robot_uids[0]
    if isinstance(robot_uids, type):
        agent_class = robot_uids
    elif isinstance(robot_uids, str) and robot_uids in registered_agents:
        agent_class = registered_agents[robot_uids].agent_cls
    else:
        return robot_uids, None  # multi-agent tuples, or a robot ManiSkill registers elsewhere
    try:  # a class-level property on ManiSkill's agents: it reads joint names and gains, no simulator state
        configs = agent_class._controller_configs.fget(object.__new__(agent_class))
    except Exception:  # noqa: BLE001 (an agent whose configs need a built robot: leave the check to gym.make)
        return robot_uids, None
    return robot_uids, list(configs)


def build_maniskill_env(
    maniskill_id: str,
    num_envs: int,
    sim_backend: str,
    obs_mode: str,
    control_mode: Optional[str],
    reward_mode: Optional[str],
    camera_size: CameraSize,
    render_backend: Optional[str],
    robot_uids: RobotUids,
    extra: dict[str, Any],
) -> Any:
    """ManiSkill's own (unwrapped, batched) env: `num_envs` envs in one sim on `sim_backend`."""
    from .headless import enable_headless

    validate_render_backend(render_backend)  # every entry point (single, subprocess and batched envs) builds here
    headless = enable_headless()
    if obs_mode == "rgb" and headless:
        raise RuntimeError(
            "obs_mode='rgb' needs a Vulkan render device, and SAPIEN found none on this "
            "machine; use obs_mode='state' or run where a GPU/Vulkan driver exists"
        )
    maniskill_registries()  # registers ManiSkill's gym ids
    kwargs: dict[str, Any] = dict(
        obs_mode=obs_mode,
        num_envs=num_envs,
        sim_backend=sim_backend,
        render_backend=render_backend or ("none" if obs_mode == "state" else "gpu"),
        **extra,
    )
    optional = dict(reward_mode=reward_mode, control_mode=control_mode, robot_uids=robot_uids)
    kwargs.update({key: value for key, value in optional.items() if value is not None})
    sensor_configs = sized_sensor_configs(camera_size, kwargs.get("sensor_configs"))
    if sensor_configs is not None:
        kwargs["sensor_configs"] = sensor_configs
    try:
        return gym.make(maniskill_id, disable_env_checker=True, **kwargs).unwrapped
    except AssertionError as error:  # ManiSkill asserts on bad control modes
        if control_mode is not None and str(control_mode) in str(error):  # str(): control_mode=5 raised here
            raise ValueError(f"control_mode={control_mode!r} is not supported by {maniskill_id}: {error}") from error
        raise


def convert_obs(obs: Any, obs_mode: str) -> dict[str, torch.Tensor]:
    """ManiSkill's batched obs -> our keys: `state` (N, D) float32, `rgb` / `wrist_rgb` (N, H, W, 3) uint8.

    In obs_mode "rgb", `state` is the flattened proprioception + task extras beside the images;
    a camera named like "hand"/"wrist" becomes `wrist_rgb`, the first other camera `rgb`. Always
    copies: ManiSkill may keep and update its obs tensors in place (e.g. `_last_obs`, camera buffers).
    """
    if obs_mode == "state":
        return {"state": obs.to(torch.float32, copy=True)}
    from mani_skill.utils.common import flatten_state_dict

    state = flatten_state_dict({"agent": obs["agent"], "extra": obs["extra"]}, use_torch=True)
    converted = {"state": state.to(torch.float32, copy=True)}
    for camera, data in obs["sensor_data"].items():
        key = "wrist_rgb" if "hand" in camera or "wrist" in camera else "rgb"
        if key not in converted and "rgb" in data:
            converted[key] = data["rgb"][..., :3].to(torch.uint8, copy=True)
    return converted


def gripper_columns(maniskill_env: Any) -> slice:
    """The action columns of the robot's gripper controller (ManiSkill's combined controller maps each of its
    controllers to its columns, e.g. {'arm': (0, 3), 'gripper': (3, 4)} for the panda in pd_ee_delta_pos)."""
    controller = maniskill_env.unwrapped.agent.controller
    mapping = getattr(controller, "action_mapping", {})
    if "gripper" not in mapping:
        raise ValueError(
            f"binarize_gripper=True: the robot's controller has no gripper (its controllers: "
            f"{list(mapping) or type(controller).__name__}); leave binarize_gripper False"
        )
    start, end = mapping["gripper"]
    return slice(start, end)


def binarize(action: np.ndarray, columns: slice) -> np.ndarray:
    """`action` with its gripper `columns` at +1 (open: the value was >= 0) or -1 (closed). ManiSkill's panda
    gripper takes an absolute finger target, so -0.8 closes on a cube with less force than -1."""
    action = np.array(action, np.float32)  # a copy: the caller's (the policy's sample) stays as it was
    action[..., columns] = np.where(action[..., columns] >= 0, 1.0, -1.0)
    return action


def _to_numpy(value: Any) -> np.ndarray:
    return value.cpu().numpy() if hasattr(value, "cpu") else np.asarray(value)


class ManiSkillSingleEnv(gym.Env):
    """One ManiSkill3 env on CPU physics with numpy obs {"state", ["rgb", "wrist_rgb"]}.

    "state" is ManiSkill's flat state vector in obs_mode "state"; in obs_mode "rgb" it is the
    flattened proprioception + task extras that ManiSkill returns beside the camera images.
    No time limit here: the vector env applies `max_episode_steps`.

    `reward_delta=True` returns the change of ManiSkill's reward since the previous step (0 before an
    episode's first step): potential-based shaping with the task's reward as the potential (RLinf's
    relative reward). An episode's rewards then sum to its last step's reward, so with a dense reward
    and terminations on success, finishing pays the most and hovering near the goal pays nothing more.

    `binarize_gripper=True` sends the gripper fully open or fully closed: the sign of the policy's
    gripper action (>= 0 opens). The policy still samples (and is scored on) its own values; the env
    reads only their sign, as in the demonstrations, whose planner opens and closes with +-1.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        task: str,
        obs_mode: str = "state",
        control_mode: Optional[str] = None,
        reward_mode: Optional[str] = "normalized_dense",
        camera_size: CameraSize = None,
        render_backend: Optional[str] = None,
        robot_uids: RobotUids = None,
        sim_backend: str = "physx_cpu",
        reward_delta: bool = False,
        binarize_gripper: bool = False,
        **maniskill_kwargs: Any,
    ):
        validate_options(
            task, obs_mode, sim_backend, reward_mode, camera_size, control_mode, robot_uids, maniskill_kwargs
        )
        # before: ManiSkill's nested TypeError, naming no valid one
        check_maniskill_keywords(task, maniskill_kwargs, single=True)
        check_switches(reward_delta=reward_delta, binarize_gripper=binarize_gripper)
        validate_reward_delta(reward_mode, reward_delta)
        self.reward_delta = reward_delta
        self._last_reward = 0.0
        self._closed = False
        if sim_backend != "physx_cpu":
            raise ValueError(
                f"the single-env entry point runs CPU physics, got sim_backend={sim_backend!r}; for GPU "
                f"physics make a vector env: gym.make_vec(id, num_envs=N, vectorization_mode="
                f"'vector_entry_point', sim_backend='physx_cuda')"
            )
        self.task = task_spec(task)
        self.env_name = f"rlinf/ManiSkill-{task}"
        self.instruction = self.task.instruction
        self.obs_mode = obs_mode
        self._env = build_maniskill_env(
            self.task.maniskill_id,
            1,
            "physx_cpu",
            obs_mode,
            control_mode,
            reward_mode,
            camera_size,
            render_backend,
            robot_uids,
            maniskill_kwargs,
        )
        self._gripper = gripper_columns(self._env) if binarize_gripper else None
        obs, _ = self._env.reset(seed=0)
        self.observation_space = gym.spaces.Dict({key: box_like(value) for key, value in self._convert(obs).items()})
        low, high = self._env.single_action_space.low, self._env.single_action_space.high
        self.action_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        self.action_bounds = ActionBounds(self.action_space, self.env_name)  # info["action_clipped"], warned once

    @property
    def maniskill_env(self) -> Any:
        """The underlying (unwrapped) ManiSkill env, e.g. to script a success in tests."""
        return self._env

    def _convert(self, obs: Any) -> dict[str, np.ndarray]:
        return {key: value[0].cpu().numpy() for key, value in convert_obs(obs, self.obs_mode).items()}

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> tuple[dict, dict]:
        self._check_open()
        reject_unknown_reset_options(self.task.maniskill_id, options, RESET_OPTIONS)
        super().reset(seed=seed)
        # Unseeded resets draw the episode seed from our own generator, so a seeded reset fixes
        # every later episode too (ManiSkill's own unseeded resets are not reproducible).
        episode_seed = int(self.np_random.integers(2**31 - 1)) if seed is None else seed
        obs, info = self._env.reset(seed=episode_seed, options=options)
        self._last_reward = 0.0
        return self._convert(obs), {"success": bool(_to_numpy(info.get("success", False)).any())}

    def _reward(self, reward: Any) -> float:
        """ManiSkill's reward of this step, or with reward_delta its change since the previous step."""
        value = float(_to_numpy(reward).reshape(-1)[0])
        if not self.reward_delta:
            return value
        delta, self._last_reward = value - self._last_reward, value
        return delta

    def _sim_action(self, action: np.ndarray) -> tuple[np.ndarray, float]:
        """(1, A) float32: the action ManiSkill steps with (gripper binarized with binarize_gripper), clipped to
        `action_space` (envs/README.md). ManiSkill's controllers clip only normalised actions: before, pd_joint_pos
        drove the joints to a target of 100 rad where the policy's sample said 100. With it, the fraction of the
        given action's elements outside `action_space` (info["action_clipped"]; before: clipped silently). Integer
        and other real arrays are cast to float32, as gymnasium's Box envs take them."""
        self._check_open()
        action = check_single_action(action, self.action_space.shape, self.env_name)
        clipped = float(self.action_bounds.fraction(action[None])[0])
        action = action if self._gripper is None else binarize(action, self._gripper)
        return np.clip(action, self.action_space.low, self.action_space.high)[None], clipped

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        sim_action, clipped = self._sim_action(action)
        obs, reward, terminated, truncated, info = self._env.step(sim_action)
        success = bool(_to_numpy(info.get("success", False)).reshape(-1)[0])
        return (
            self._convert(obs),
            self._reward(reward),
            bool(_to_numpy(terminated).reshape(-1)[0]),
            bool(_to_numpy(truncated).reshape(-1)[0]),
            {"success": success, "action_clipped": clipped},
        )

    def step_without_obs(self, action: np.ndarray) -> tuple[float, bool, bool, dict]:
        """`step` without its observation: for the rows of an action chunk that no policy reads.

        Mirrors ManiSkill's `BaseEnv.step` (3.0.x) minus `get_obs`, which for rgb renders every camera
        (most of an rgb step's cost). The reward reads the state-dict observation, which ManiSkill's
        registered tasks ignore. tests/envs/test_maniskill.py checks it against `step`."""
        env = self._env
        sim_action, clipped = self._sim_action(action)
        applied = env._step_action(sim_action)
        env._elapsed_steps += 1
        info = env.get_info()
        reward = env.get_reward(obs=env._get_obs_state_dict(info), action=applied, info=info)
        success = _to_numpy(info.get("success", False)).reshape(-1)
        fail = _to_numpy(info.get("fail", False)).reshape(-1)
        return (
            self._reward(reward),
            bool(success[0] or fail[0]),
            False,
            {"success": bool(success[0]), "action_clipped": clipped},
        )

    def observe(self) -> dict[str, np.ndarray]:
        """The observation of the current state (after `step_without_obs`)."""
        return self._convert(self._env.get_obs())

    def render(self) -> None:
        """gymnasium's convention for render_mode=None, the only one these envs take (reject_render_mode): warn and
        return None (before: a bare NotImplementedError). Frames come as observations."""
        gym.logger.warn(
            f"render() of {self.env_name} returns None: rlinf's ManiSkill envs have no render modes "
            "(metadata['render_modes'] is empty). For camera frames make the env with obs_mode='rgb' (obs['rgb'], "
            "sized by camera_size); for evaluation videos set eval.video=true"
        )

    def close(self) -> None:
        self._env.close()
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:  # before: an AttributeError from inside ManiSkill
            raise RuntimeError(f"this {self.task.maniskill_id} env is closed; make a new one to reset or step")


class ManiSkillFactory:
    """Picklable factory of `ManiSkillSingleEnv` for the vector env's subprocesses."""

    def __init__(self, task: str, **kwargs: Any):
        self.task, self.kwargs = task, kwargs

    def __call__(self) -> ManiSkillSingleEnv:
        import torch

        torch.set_num_threads(1)  # one core per env process: the per-env tensors are tiny
        env = ManiSkillSingleEnv(self.task, **self.kwargs)
        env.action_bounds.warn = False  # the vector env warns of out-of-box actions, once, in the caller's process
        return env


def make_single_env(task: str, max_episode_steps: Optional[int] = None, **kwargs: Any) -> gym.Env:
    """`gym.make("rlinf/ManiSkill-<Task>")` entry point: one numpy env (time limit via gymnasium)."""
    reject_vector_options(f"rlinf/ManiSkill-{task}", kwargs)
    return ManiSkillSingleEnv(task, **kwargs)


def default_max_episode_steps(task: str) -> Optional[int]:
    maniskill_registries()  # registers ManiSkill's gym ids
    spec = gym.registry.get(task_spec(task).maniskill_id)
    return spec.max_episode_steps if spec is not None else None


def make_vector_env(
    task: str,
    num_envs: int = 1,
    obs_mode: str = "state",
    max_episode_steps: Optional[int] = None,
    ignore_terminations: bool = False,
    camera_size: CameraSize = None,
    control_mode: Optional[str] = None,
    reward_mode: Optional[str] = "normalized_dense",
    sim_backend: str = "physx_cpu",
    render_backend: Optional[str] = None,
    num_workers: Optional[int] = None,
    step_timeout: Optional[float] = None,
    context: str = "forkserver",
    observe_every_row: bool = False,
    **maniskill_kwargs: Any,
) -> gym.vector.VectorEnv:
    """`gym.make_vec(..., vectorization_mode="vector_entry_point")` entry point.

    sim_backend "physx_cpu" (default): a `SubprocVectorEnv` of single CPU-physics envs in
    `num_workers` subprocesses (default one per core), each step bounded by `step_timeout` seconds
    (default 60) and crashed workers restarted. A probe env is built here (in this process) to
    validate the options and read the spaces before the workers start.
    sim_backend "physx_cuda": all envs in one GPU simulation in this process (gpu_physics.py);
    `num_workers` / `step_timeout` do not apply there and raise if given.
    `observe_every_row`: with CPU physics, the rows of an action chunk that no policy reads skip their
    observation (`ManiSkillSingleEnv.step_without_obs`: no camera renders) unless this is True. GPU
    physics steps all envs in one batch and always builds every row's observation.

    `max_episode_steps=None` uses the ManiSkill task's default. Other keyword arguments go to
    ManiSkill's `gym.make` (e.g. `robot_uids`).
    """
    robot_uids = maniskill_kwargs.get("robot_uids")  # a ManiSkill keyword: passed on as it is
    validate_options(task, obs_mode, sim_backend, reward_mode, camera_size, control_mode, robot_uids, maniskill_kwargs)
    validate_render_backend(render_backend)
    validate_context(context)  # before the forkserver and the probe env below
    validate_common_options(num_envs, num_workers, max_episode_steps, step_timeout)
    check_maniskill_keywords(task, maniskill_kwargs)
    options = dict(
        obs_mode=obs_mode,
        control_mode=control_mode,
        reward_mode=reward_mode,
        camera_size=camera_size,
        render_backend=render_backend,
        **maniskill_kwargs,
    )
    validate_backend_options(sim_backend, num_workers, step_timeout, maniskill_kwargs)
    if sim_backend == "physx_cuda":
        from .gpu_physics import make_batched_vector_env

        return make_batched_vector_env(
            task,
            num_envs,
            max_episode_steps=max_episode_steps,
            ignore_terminations=ignore_terminations,
            sim_backend=sim_backend,
            **options,
        )
    if max_episode_steps is None:
        max_episode_steps = default_max_episode_steps(task)
    preload_modules = (__name__, "mani_skill.envs")
    if context == "forkserver":
        start_forkserver(preload_modules)  # imports the simulator while the probe below builds
    probe = ManiSkillSingleEnv(task, **options)
    spaces = probe.observation_space, probe.action_space
    probe.close()
    return SubprocVectorEnv(
        [ManiSkillFactory(task, **options)] * num_envs,
        num_workers=num_workers,
        max_episode_steps=max_episode_steps,
        ignore_terminations=ignore_terminations,
        observe_every_row=observe_every_row,
        step_timeout=60.0 if step_timeout is None else step_timeout,
        context=context,
        observation_space=spaces[0],
        action_space=spaces[1],
        preload_modules=preload_modules,
    )
