"""`LiberoEnv`: one LIBERO task (robosuite + MuJoCo, offscreen rendering) as a single gymnasium env.

Follows OpenVLA's LIBERO evaluation set-up:
- actions: 7-D `[dx, dy, dz, droll, dpitch, dyaw, gripper]` in [-1, 1] for robosuite's OSC_POSE
  controller (delta end-effector pose); gripper -1 = open, +1 = close (LIBERO's raw convention --
  OpenVLA-style policies that emit 0=close/1=open must map their gripper output).
- obs "state" (rgb mode): `eef_pos (3) | eef axis-angle (3) | gripper qpos (2)` float32 (8,);
  in state mode the task's object state (positions/orientations of the task objects) follows it.
- obs "rgb"/"wrist_rgb": agentview / eye-in-hand cameras, `(camera_size, camera_size, 3)` uint8,
  rotated 180 degrees (MuJoCo renders bottom-up; LIBERO/OpenVLA flip both axes).
- reset(seed=s) loads the suite's fixed init state `s % num_init_states` (or `options["init_state_id"]`),
  then waits `num_settle_steps` no-op steps (gripper open) for objects to settle, as OpenVLA does.
- reward: 1.0 on steps where the BDDL goal holds, else 0; terminated = success;
  `info["success"]` is the task's own goal check (`_check_success` of the BDDL predicates).
The env has no time limit of its own; the vector env (or `gym.make`'s TimeLimit) applies
`max_episode_steps`.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Optional

import gymnasium as gym
import numpy as np

from ..batching import ActionBounds, camera_hw, check_single_action, is_int
from ..registration import reject_unknown_options, reject_unknown_reset_options, reject_vector_options
from .runtime import LIBERO_INSTALL_HINT, prepare_libero_process
from .suites import get_suite

CAMERAS = {"rgb": "agentview", "wrist_rgb": "robot0_eye_in_hand"}  # our obs key -> robosuite camera
PROPRIO_DIM = 8
ACTION_DIM = 7
NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)  # hold still, gripper open

# obs_mode -> which image keys it renders and whether "state" carries the object state.
OBS_MODES: dict[str, dict[str, Any]] = {
    "rgb": {"images": ("rgb", "wrist_rgb"), "object_state": False},
    "state": {"images": (), "object_state": True},
}


def _import_libero() -> tuple[Any, Any]:
    """Import LIBERO after the process is prepared; a clear error if it is not installed."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # LIBERO prints task-order notices
            from libero.libero import benchmark
            from libero.libero.envs import OffScreenRenderEnv
    except ImportError as error:
        raise ImportError(f"LIBERO is not importable ({error}); {LIBERO_INSTALL_HINT}") from error
    return benchmark, OffScreenRenderEnv


def validate_obs_mode(obs_mode: str) -> str:
    if obs_mode not in OBS_MODES:
        raise ValueError(f"obs_mode={obs_mode!r} is not supported by LIBERO; valid: {sorted(OBS_MODES)}")
    return obs_mode


def validate_camera_size(camera_size: int) -> int:
    """A square camera's side: batching.camera_hw's check (shared with ManiSkill), one int >= 8 (robosuite's cameras
    are square here)."""
    return camera_hw(camera_size, minimum=8, pair=False, hint="square, in pixels; 224 for VLAs")[0]


def validate_num_settle_steps(num_settle_steps: Any) -> int:
    """An int >= 0 (before: 'abc' passed the options check and failed in the env worker with a raw TypeError, 2.5
    became 2 and True became 1, silently)."""
    if not is_int(num_settle_steps) or num_settle_steps < 0:
        raise ValueError(
            f"num_settle_steps={num_settle_steps!r} must be an int >= 0 (the "
            "no-op steps after each reset for objects to settle; 10, OpenVLA's, by default; 0 for none)"
        )
    return int(num_settle_steps)


class LiberoEnv(gym.Env):
    """One task of a LIBERO suite. See the module docstring for the obs/action conventions.

    Args:
        suite: gymnasium id ("rlinf/LIBERO-Spatial") or LIBERO benchmark name ("libero_spatial").
        task_id: index of the task inside the suite (0..num_tasks-1).
        obs_mode: "rgb" (proprio state + both cameras) or "state" (proprio + object state, no rendering).
        camera_size: square image side in pixels.
        num_settle_steps: no-op steps after each reset (not counted as episode steps).
        gl_backend: "egl" / "osmesa" / None (auto, see `runtime.configure_gl`).
        render_mode: None or "rgb_array" (the agentview frame).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        suite: str = "rlinf/LIBERO-Spatial",
        task_id: int = 0,
        obs_mode: str = "rgb",
        camera_size: int = 224,
        num_settle_steps: int = 10,
        gl_backend: Optional[str] = None,
        render_mode: Optional[str] = None,
        max_episode_steps: Optional[int] = None,
    ):
        self.suite = get_suite(suite)
        self.task_id = self.suite.validate_task_id(task_id)
        self.obs_mode = validate_obs_mode(obs_mode)
        self.camera_size = validate_camera_size(camera_size)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}; valid: None or 'rgb_array'")
        self.render_mode, self.num_settle_steps = render_mode, validate_num_settle_steps(num_settle_steps)
        self.max_episode_steps = max_episode_steps  # informational; limits are applied by wrappers
        self.image_keys: tuple[str, ...] = OBS_MODES[obs_mode]["images"]
        prepare_libero_process(gl_backend)
        benchmark, offscreen_env_cls = _import_libero()
        with contextlib.redirect_stdout(io.StringIO()):
            task_suite = benchmark.get_benchmark_dict()[self.suite.benchmark]()
        self.task = task_suite.get_task(self.task_id)
        self.instruction: str = str(self.task.language)
        self.init_states: np.ndarray = np.asarray(task_suite.get_task_init_states(self.task_id))  # (K, state_dim)
        self._env = offscreen_env_cls(
            bddl_file_name=task_suite.get_task_bddl_file_path(self.task_id),
            camera_heights=self.camera_size,
            camera_widths=self.camera_size,
            use_camera_obs=bool(self.image_keys),
            has_offscreen_renderer=bool(self.image_keys) or render_mode is not None,
            hard_reset=False,  # reload the XML only once; init states overwrite the full sim state
            ignore_done=True,  # robosuite's own horizon would end episodes behind our back
        )
        self._last_raw_obs: dict[str, np.ndarray] = self._env.env._get_observations(force_update=True)
        self.observation_space = self._make_observation_space(self._last_raw_obs)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self.action_bounds = ActionBounds(self.action_space, self.suite.env_id)  # info["action_clipped"]

    # -- spaces / observations ---------------------------------------------------------------------
    def _make_observation_space(self, raw_obs: dict[str, np.ndarray]) -> gym.spaces.Dict:
        state_dim = self._state(raw_obs).shape[0]
        spaces: dict[str, gym.spaces.Space] = {"state": gym.spaces.Box(-np.inf, np.inf, (state_dim,), np.float32)}
        for key in self.image_keys:
            spaces[key] = gym.spaces.Box(0, 255, (self.camera_size, self.camera_size, 3), np.uint8)
        return gym.spaces.Dict(spaces)

    def _state(self, raw_obs: dict[str, np.ndarray]) -> np.ndarray:
        from robosuite.utils.transform_utils import quat2axisangle

        parts = [
            raw_obs["robot0_eef_pos"],
            quat2axisangle(np.array(raw_obs["robot0_eef_quat"])),
            raw_obs["robot0_gripper_qpos"],
        ]
        if OBS_MODES[self.obs_mode]["object_state"]:
            parts.append(raw_obs["object-state"])
        return np.concatenate(parts).astype(np.float32)  # (8,) or (8 + object_dim,)

    def _obs(self, raw_obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._last_raw_obs = raw_obs
        obs = {"state": self._state(raw_obs)}
        for key in self.image_keys:
            obs[key] = np.ascontiguousarray(raw_obs[f"{CAMERAS[key]}_image"][::-1, ::-1])  # (H, W, 3) upright
        return obs

    # -- gymnasium API -----------------------------------------------------------------------------
    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> tuple[dict, dict]:
        self._check_open()
        reject_unknown_reset_options(f"{self.suite.env_id} task {self.task_id}", options, ("init_state_id",))
        super().reset(seed=seed)
        init_id = self._init_state_id(seed, options)
        self._reset_sim(placement_seed=init_id)  # the scene is a function of the init state alone
        raw_obs = self._env.set_init_state(self.init_states[init_id])
        if self.num_settle_steps:
            raw_obs = self._settle()
        return self._obs(raw_obs), {
            "success": bool(self._env.check_success()),
            "init_state_id": init_id,
            "instruction": self.instruction,
        }

    def _init_state_id(self, seed: Optional[int], options: Optional[dict]) -> int:
        count = len(self.init_states)
        if options and options.get("init_state_id") is not None:
            init_id = options["init_state_id"]
            if not is_int(init_id) or not 0 <= init_id < count:  # before: True was read as init state 1
                raise ValueError(
                    f"options['init_state_id']={init_id!r}; valid: an int in 0..{count - 1} for task "
                    f"{self.task_id} of {self.suite.env_id} (or None: seed % {count})"
                )
            return int(init_id)
        if seed is not None:
            return int(seed) % count
        return int(self.np_random.integers(count))

    def _reset_sim(self, placement_seed: int) -> None:
        """robosuite reset with a seeded global numpy RNG, restored afterwards.

        LIBERO places *fixtures* (cabinets, stoves, ...) by sampling `model.body_pos` from the global
        `np.random` on every reset; the init states only hold qpos/qvel, so without seeding the
        scene would differ between resets with the same seed. A soft reset (no XML reload) also
        keeps the gripper model's integrated command (`current_action`), which a hard reset
        would recreate as zeros: it is zeroed here so episodes do not depend on the previous one.
        """
        saved = np.random.get_state()
        np.random.seed(placement_seed)
        try:
            self._env.reset()
        finally:
            np.random.set_state(saved)
        for robot in self._env.env.robots:
            robot.gripper.current_action = np.zeros(robot.gripper.dof)

    def _settle(self) -> dict[str, np.ndarray]:
        """No-op steps for objects to come to rest; cameras are switched off meanwhile (rendering dominates)."""
        cameras = [f"{CAMERAS[key]}_image" for key in self.image_keys]
        for name in cameras:
            self._env.env.modify_observable(name, "active", False)
        try:
            for _ in range(self.num_settle_steps):
                self._env.step(NOOP_ACTION)
        finally:
            for name in cameras:
                self._env.env.modify_observable(name, "active", True)
        return self._env.env._get_observations(force_update=True)

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict[str, Any]]:
        self._check_open()
        # exactly (7,) and finite: before, (1, 7) and (7, 1) were flattened and stepped, and NaN passed the clip below
        action = check_single_action(action, (ACTION_DIM,), self.suite.env_id)
        clipped = float(self.action_bounds.fraction(action[None])[0])  # before: clipped silently
        raw_obs, _, _, _ = self._env.step(np.clip(action.astype(np.float64), -1.0, 1.0))
        success = bool(self._env.check_success())
        return self._obs(raw_obs), float(success), success, False, {"success": success, "action_clipped": clipped}

    def check_success(self) -> bool:
        """The task's BDDL goal predicate on the current sim state."""
        return bool(self._env.check_success())

    def refresh_observation(self) -> dict[str, np.ndarray]:
        """Recompute the observation after the sim state was edited directly (tests, scripted resets)."""
        self._env.env.sim.forward()
        return self._obs(self._env.env._get_observations(force_update=True))

    def object_position(self, name: str) -> np.ndarray:
        """World position (3,) of a task object or fixture by its BDDL name."""
        body_ids = self._env.env.obj_body_id
        if name not in body_ids:
            raise KeyError(
                f"no object {name!r} in task {self.task_id} of {self.suite.env_id}; valid: {sorted(body_ids)}"
            )
        return self._env.env.sim.data.body_xpos[body_ids[name]].copy()

    def place_on(self, object_name: str, target_name: str, lift: float = 0.03) -> None:
        """Teleport a free object `lift` metres above `target_name` (scripted scenes, goal-check tests).

        Only the object's pose changes; physics then settles it over the next steps.
        """
        objects = self._env.env.objects_dict
        if object_name not in objects:
            raise KeyError(f"{object_name!r} is not a movable object of this task; valid: {sorted(objects)}")
        joint = objects[object_name].joints[-1]
        data = self._env.env.sim.data
        qpos = data.get_joint_qpos(joint).copy()  # (7,) free joint: xyz + quaternion
        qpos[:3] = self.object_position(target_name) + np.array([0.0, 0.0, lift])
        data.set_joint_qpos(joint, qpos)
        data.set_joint_qvel(joint, np.zeros(6))
        self.refresh_observation()

    @property
    def sim_env(self) -> Any:
        """The underlying robosuite/LIBERO env (e.g. to edit the MuJoCo state)."""
        return self._env.env

    def render(self) -> Optional[np.ndarray]:
        if self.render_mode != "rgb_array":  # gymnasium's convention for render_mode=None: warn, return None
            gym.logger.warn(
                f"render() of {self.suite.env_id} returns None: make it with render_mode='rgb_array' for the "
                "agentview frame (or obs_mode='rgb' for the cameras as observations)"
            )
            return None
        if "rgb" in self.image_keys:
            return self._obs(self._last_raw_obs)["rgb"]
        frame = self._env.env.sim.render(camera_name=CAMERAS["rgb"], height=self.camera_size, width=self.camera_size)
        return np.ascontiguousarray(frame[::-1, ::-1])

    def close(self) -> None:
        env = getattr(self, "_env", None)
        if env is not None:
            env.close()
            self._env = None

    def _check_open(self) -> None:
        if self._env is None:  # before: an AttributeError on None
            raise RuntimeError(f"this {self.suite.env_id} env (task {self.task_id}) is closed; make a new one")


class LiberoEnvFactory:
    """Picklable factory of `LiberoEnv` for the subprocess vector env."""

    def __init__(self, **kwargs: Any):
        self.kwargs = kwargs

    def __call__(self) -> LiberoEnv:
        env = LiberoEnv(**self.kwargs)
        env.action_bounds.warn = False  # the vector env warns of out-of-box actions, once, in the caller's process
        return env


def make_single_env(suite: str = "rlinf/LIBERO-Spatial", **kwargs: Any) -> LiberoEnv:
    """`gym.make("rlinf/LIBERO-<Suite>")` entry point: one env of one task (`task_id`). A keyword LiberoEnv does not
    take is refused, naming the valid ones (before: LiberoEnv's raw TypeError, wrapped by gymnasium)."""
    reject_vector_options(suite, kwargs)
    reject_unknown_options(suite, kwargs, LiberoEnv.__init__, exclude=("suite",))  # suite: the id's (FIXED_KWARGS)
    return LiberoEnv(suite, **kwargs)
