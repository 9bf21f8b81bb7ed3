"""Scripted demonstrations for `rlinf/ManiSkill-<Task>`: ManiSkill 3's motion-planning solutions,
planned without mplib, recorded in the env's own control mode.

Why not mplib: ManiSkill's solutions (`mani_skill.examples.motionplanning.panda.solutions`) plan with
mplib, and mplib 0.1.1 and 0.2.1 (the only wheels) are built against the numpy 1 ABI: under numpy 2
both segfault, without a message, when the planner is constructed. Every solution of ManiSkill 3.0.1
plans with `move_to_pose_with_screw` only, so `ScrewPlanner` replaces mplib's planner for them: the
tool frame moves on a straight line with slerped orientation, each waypoint solved by IK with
SAPIEN's own pinocchio model (which works under numpy 1 and 2), then timed by a trapezoidal
velocity profile within mplib's default joint velocity/acceleration limits (scaled 0.9 as ManiSkill
does). It checks no collisions (mplib's screw planning only does so when given a point cloud, and no
solution for these tasks gives one). mplib is not needed at all.

Control modes: the solutions emit `pd_joint_pos` actions (joint targets + gripper). `PlannerEnv`
runs the env in *its* control mode and converts each target closed-loop from the robot's current
joint positions, so the recorded actions live in the env's action space (what a policy trained on
them must output in the RL run). Supported: pd_joint_pos, pd_joint_delta_pos, pd_joint_target_delta_pos,
and the end-effector modes pd_ee_delta_pos / pd_ee_delta_pose: the target joint positions' TCP pose
(forward kinematics on SAPIEN's pinocchio model, in the robot root frame) minus the TCP's current pose
in the root frame, which is ManiSkill 3.0.1's convention for these modes (frame "root_translation"
[":root_aligned_body_rotation"], use_delta, no use_target): translation delta in the root frame, rotation
delta `R_target R_current^T` as XYZ Euler angles, both normalized through the controller's own action
scaling. Deltas beyond the action space are clipped (`PlannerEnv.clipped_steps` counts those steps).
"""

from __future__ import annotations

import math
import sys
import time
import types
from typing import Any, Callable, Optional

import numpy as np

# Our task name -> the solution function in mani_skill.examples.motionplanning.panda.solutions.
SOLUTIONS: dict[str, str] = {
    "PickCube": "solvePickCube",
    "PushCube": "solvePushCube",
    "StackCube": "solveStackCube",
    "PullCube": "solvePullCube",
    "PegInsertionSide": "solvePegInsertionSide",
    "LiftPegUpright": "solveLiftPegUpright",
    "PlugCharger": "solvePlugCharger",
    "PlaceSphere": "solvePlaceSphere",
    "PullCubeTool": "solvePullCubeTool",
    "StackPyramid": "solveStackPyramid",
}
JOINT_MODES = ("pd_joint_pos", "pd_joint_delta_pos", "pd_joint_target_delta_pos")
EE_MODES = ("pd_ee_delta_pos", "pd_ee_delta_pose")
CONTROL_MODES = JOINT_MODES + EE_MODES


def task_of(env_id: str) -> str:
    prefix = "rlinf/ManiSkill-"
    return env_id[len(prefix) :] if env_id.startswith(prefix) else env_id


def check_plannable(env_id: str, control_mode: Optional[str]) -> None:
    task = task_of(env_id)
    if not env_id.startswith("rlinf/ManiSkill-") or task not in SOLUTIONS:
        raise ValueError(
            f"the motion planner has no solution for env {env_id!r}; tasks with one: "
            f"{['rlinf/ManiSkill-' + t for t in SOLUTIONS]} (or use collect.source=policy)"
        )
    if (control_mode or "pd_joint_delta_pos") not in CONTROL_MODES:
        raise ValueError(
            f"the motion planner records actions in the env's control mode, and converts its "
            f"joint targets only into {list(CONTROL_MODES)}; env.kwargs.control_mode={control_mode!r} "
            f"is not one of them (or use collect.source=policy)"
        )


# ---- the planner ----------------------------------------------------------------------------------
def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ]
    )


def _slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    dot = float(np.dot(q0, q1))
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        out = q0 + t * (q1 - q0)
        return out / np.linalg.norm(out)
    theta = math.acos(min(dot, 1.0))
    return (math.sin((1 - t) * theta) * q0 + math.sin(t * theta) * q1) / math.sin(theta)


class ScrewPlanner:
    """The subset of `mplib.Planner` that ManiSkill's solutions use, on SAPIEN's pinocchio model."""

    def __init__(
        self,
        articulation: Any,
        link_names: list[str],
        move_group: str,
        base_pose: Any,
        vel_scale: float = 0.9,
        acc_scale: float = 0.9,
        position_step: float = 0.01,
        angle_step: float = 0.05,
    ):
        import sapien

        self._sapien = sapien
        self.model = articulation.create_pinocchio_model()
        names = list(link_names)  # in the articulation's link order
        if move_group not in names:
            raise ValueError(f"link {move_group!r} not in the robot's links {names}")
        self.ee = names.index(move_group)
        self.base_pose = base_pose
        self.qlimits = np.asarray(articulation.get_qlimits(), np.float64).reshape(-1, 2)
        dof = len(self.qlimits)
        # Joints that move the tool frame (the arm); ManiSkill's solver assumes they come first.
        q0 = np.clip(np.zeros(dof), self.qlimits[:, 0], self.qlimits[:, 1])
        self.model.compute_forward_kinematics(q0)
        m0 = self.model.get_link_pose(self.ee).to_transformation_matrix()
        moves = []
        for j in range(dof):
            q = q0.copy()
            q[j] = q[j] + 0.1 if q[j] + 0.1 <= self.qlimits[j, 1] else q[j] - 0.1
            self.model.compute_forward_kinematics(q)
            moved = self.model.get_link_pose(self.ee).to_transformation_matrix() - m0
            moves.append(bool(np.abs(moved).max() > 1e-6))
        self.arm = np.flatnonzero(moves)
        if list(self.arm) != list(range(len(self.arm))):
            raise ValueError(f"the arm joints {list(self.arm)} must come first among the robot's active joints")
        self.mask = np.asarray(moves, np.int32)
        self.joint_vel_limits = np.ones(len(self.arm)) * vel_scale
        self.joint_acc_limits = np.ones(len(self.arm)) * acc_scale
        self.position_step, self.angle_step = position_step, angle_step

    def update_point_cloud(self, points: Any, *args: Any, **kwargs: Any) -> None:
        """Accepted for mplib compatibility; collisions are not checked."""

    def plan_qpos_to_pose(
        self, goal_pose: np.ndarray, current_qpos: np.ndarray, time_step: float = 0.1, **kwargs: Any
    ) -> dict[str, Any]:
        return self.plan_screw(goal_pose, current_qpos, time_step=time_step)

    def plan_screw(
        self, target_pose: np.ndarray, qpos: np.ndarray, qpos_step: float = 0.1, time_step: float = 0.1, **kwargs: Any
    ) -> dict[str, Any]:
        sapien = self._sapien
        q = np.asarray(qpos, np.float64).copy()
        target_pose = np.asarray(target_pose, np.float64)
        goal = self.base_pose.inv() * sapien.Pose(p=target_pose[:3], q=target_pose[3:])
        self.model.compute_forward_kinematics(q)
        start = self.model.get_link_pose(self.ee)
        start_q, goal_q = np.asarray(start.q, np.float64), np.asarray(goal.q, np.float64)
        delta_p = np.asarray(goal.p, np.float64) - np.asarray(start.p, np.float64)
        relative = _quat_mul(np.array([start_q[0], *-start_q[1:]]), goal_q)
        angle = 2 * math.acos(min(1.0, abs(float(relative[0]))))
        steps = max(1, math.ceil(max(np.linalg.norm(delta_p) / self.position_step, angle / self.angle_step)))
        path = [q[self.arm].copy()]
        for k in range(1, steps + 1):
            t = k / steps
            pose = sapien.Pose(p=np.asarray(start.p) + t * delta_p, q=_slerp(start_q, goal_q, t))
            result, success, error = self.model.compute_inverse_kinematics(
                self.ee, pose, initial_qpos=q, active_qmask=self.mask, eps=1e-4, max_iterations=200
            )
            if not success:
                return {"status": f"IK Failed at waypoint {k}/{steps} (error {float(np.linalg.norm(error)):.2g})"}
            result = np.asarray(result, np.float64)
            if np.any(result < self.qlimits[:, 0] - 1e-4) or np.any(result > self.qlimits[:, 1] + 1e-4):
                return {"status": f"IK left the joint limits at waypoint {k}/{steps}"}
            q = result
            path.append(q[self.arm].copy())
        times, position, velocity = self._time_parametrize(np.asarray(path), time_step)
        return {
            "status": "Success",
            "time": times,
            "position": position,
            "velocity": velocity,
            "acceleration": np.gradient(velocity, time_step, axis=0) if len(velocity) > 1 else velocity * 0,
            "duration": float(times[-1]),
        }

    def _time_parametrize(self, path: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Trapezoidal profile along the path within the joint velocity / acceleration limits."""
        if len(path) == 1:
            return np.zeros(1), path.copy(), np.zeros_like(path)
        segments = np.max(np.abs(np.diff(path, axis=0)) / self.joint_vel_limits, axis=1)  # seconds at full speed
        s = np.concatenate([[0.0], np.cumsum(segments)])
        total = float(s[-1])
        if total <= 0:
            return np.zeros(1), path[:1].copy(), np.zeros_like(path[:1])
        acc = float(np.min(self.joint_acc_limits / self.joint_vel_limits))  # d2s/dt2, with ds/dt <= 1
        if total >= 1.0 / acc:
            ramp = 1.0 / acc
            duration = total + ramp
        else:
            ramp = math.sqrt(total / acc)
            duration = 2 * ramp
        peak = acc * ramp
        times = np.linspace(0.0, duration, max(2, math.ceil(duration / dt) + 1))

        def progress(t: float) -> float:
            if t < ramp:
                return 0.5 * acc * t * t
            if t <= duration - ramp:
                return 0.5 * acc * ramp * ramp + peak * (t - ramp)
            rest = duration - t
            return total - 0.5 * acc * rest * rest

        along = np.clip([progress(t) for t in times], 0.0, total)
        position = np.stack([np.interp(along, s, path[:, j]) for j in range(path.shape[1])], axis=1)
        velocity = np.gradient(position, times, axis=0)
        return times, position, velocity


def _install_planner() -> None:
    """Make ManiSkill's solvers plan with ScrewPlanner (and import without mplib where it is absent)."""
    try:
        import mplib  # noqa: F401  (ManiSkill's solver modules import it; we never construct its planner)
    except ImportError:
        sys.modules.setdefault("mplib", types.ModuleType("mplib"))
    from mani_skill.examples.motionplanning.base_motionplanner.motionplanner import BaseMotionPlanningSolver

    if getattr(BaseMotionPlanningSolver, "_rlinf_screw_planner", False):
        return

    def setup_planner(self: Any) -> ScrewPlanner:
        move_group = self.MOVE_GROUP if hasattr(self, "MOVE_GROUP") else "eef"
        return ScrewPlanner(
            self.robot._objs[0],
            [link.get_name() for link in self.robot.get_links()],
            move_group,
            self.base_pose,
            self.joint_vel_limits,
            self.joint_acc_limits,
        )

    BaseMotionPlanningSolver.setup_planner = setup_planner
    BaseMotionPlanningSolver._rlinf_screw_planner = True


def solution(task: str) -> Callable[..., Any]:
    if task not in SOLUTIONS:
        raise ValueError(f"no motion-planning solution for task {task!r}; tasks with one: {sorted(SOLUTIONS)}")
    _install_planner()
    from mani_skill.examples.motionplanning.panda import solutions

    return getattr(solutions, SOLUTIONS[task])


# ---- recording in the env's control mode ----------------------------------------------------------
class _BaseEnvView:
    """ManiSkill's env as the solver sees it: every attribute forwarded, control_mode 'pd_joint_pos'."""

    def __init__(self, env: Any):
        object.__setattr__(self, "_env", env)

    control_mode = "pd_joint_pos"

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_env"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(object.__getattribute__(self, "_env"), name, value)


class PlannerEnv:
    """Wraps a `ManiSkillSingleEnv` for a solver: takes pd_joint_pos actions, steps the env in its own
    control mode (converted from the current joint positions), and records obs and env actions."""

    def __init__(self, single_env: Any, control_mode: Optional[str], max_steps: Optional[int] = None):
        self.env = single_env
        self.base = single_env.maniskill_env
        self.control_mode = control_mode or self.base.control_mode
        if self.control_mode not in CONTROL_MODES:
            raise ValueError(
                f"cannot convert joint targets into control_mode={self.control_mode!r}; "
                f"supported: {list(CONTROL_MODES)}"
            )
        self.max_steps = max_steps
        self._view = _BaseEnvView(self.base)
        self._fk: Optional[tuple[Any, int]] = None
        self.clipped_steps = 0  # steps whose converted arm action left the action space (clipped), this episode
        self.clear()

    @property
    def unwrapped(self) -> Any:
        return self._view

    def clear(self) -> None:
        self.observations: list[dict[str, np.ndarray]] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.success = False
        self.clipped_steps = 0
        self.env_seconds = 0.0  # inside the env's reset and step (physics, cameras, observations), this episode
        self._obs: Optional[dict[str, np.ndarray]] = None

    def reset(self, seed: Optional[int] = None, options: Optional[dict] = None) -> tuple[Any, dict]:
        self.clear()
        start = time.perf_counter()
        obs, info = self.env.reset(seed=seed, options=options)
        self.env_seconds += time.perf_counter() - start
        self._obs = obs
        return obs, info

    def _convert(self, action: np.ndarray) -> np.ndarray:
        action = np.asarray(action, np.float64).reshape(-1)
        controller = self.base.agent.controller.controllers["arm"]
        arm = len(controller.joints) if hasattr(controller, "joints") else 7
        target, rest = action[:arm], action[arm:]
        if self.control_mode in EE_MODES:
            return np.concatenate([self._ee_action(controller, target), rest]).astype(np.float32)
        if self.control_mode == "pd_joint_pos":
            arm_action = target
        else:
            if self.control_mode == "pd_joint_target_delta_pos":
                reference = np.asarray(controller._target_qpos.cpu().numpy()).reshape(-1)[:arm]
            else:
                reference = self.base.agent.robot.get_qpos().cpu().numpy()[0, :arm]
            low = np.broadcast_to(np.asarray(controller.config.lower, np.float64), (arm,))
            high = np.broadcast_to(np.asarray(controller.config.upper, np.float64), (arm,))
            raw = target - reference
            delta = np.clip(raw, low, high)
            self.clipped_steps += int(np.any(np.abs(raw - delta) > 1e-9))
            arm_action = 2 * (delta - low) / (high - low) - 1 if controller.config.normalize_action else delta
        return np.concatenate([arm_action, rest]).astype(np.float32)

    def _tcp_at_base(self, qpos: np.ndarray) -> Any:
        """The controlled link's pose in the robot root frame at joint positions `qpos` (all active joints)."""
        if self._fk is None:
            controller = self.base.agent.controller.controllers["arm"]
            robot = self.base.agent.robot
            names = [link.get_name() for link in robot.get_links()]
            self._fk = (robot._objs[0].create_pinocchio_model(), names.index(controller.ee_link.get_name()))
        model, link = self._fk
        model.compute_forward_kinematics(np.asarray(qpos, np.float64))
        return model.get_link_pose(link)

    def _ee_action(self, controller: Any, target: np.ndarray) -> np.ndarray:
        """The normalized pd_ee_delta_pos(e) action that moves the TCP to where joint target `target` puts it."""
        import torch
        from mani_skill.utils.geometry.rotation_conversions import matrix_to_euler_angles, quaternion_to_matrix

        config = controller.config
        if (
            config.use_target
            or not config.use_delta
            or not config.frame.startswith("root_translation")
            or (
                self.control_mode == "pd_ee_delta_pose"
                and config.frame != "root_translation:root_aligned_body_rotation"
            )
        ):
            raise ValueError(
                f"{self.control_mode}: only ManiSkill's default delta convention (frame root_translation"
                f"[:root_aligned_body_rotation], use_delta, no use_target) is supported, got frame="
                f"{config.frame!r} use_delta={config.use_delta} use_target={config.use_target}"
            )
        qpos = self.base.agent.robot.get_qpos().cpu().numpy()[0].astype(np.float64)
        goal_q = qpos.copy()
        goal_q[: len(target)] = target
        goal = self._tcp_at_base(goal_q)
        current = controller.ee_pose_at_base  # what the controller adds the delta to (frame root_translation)
        current_p = current.p.cpu().numpy().reshape(-1).astype(np.float64)
        low = controller.action_space_low.cpu().numpy().astype(np.float64)[:3]
        high = controller.action_space_high.cpu().numpy().astype(np.float64)[:3]
        raw = 2 * (np.asarray(goal.p, np.float64) - current_p - 0.5 * (high + low)) / (high - low)
        pos = np.clip(raw, -1.0, 1.0)
        clipped = bool(np.any(np.abs(raw - pos) > 1e-9))
        parts = [pos]
        if self.control_mode == "pd_ee_delta_pose":
            goal_m = quaternion_to_matrix(torch.as_tensor(np.asarray(goal.q, np.float64)))  # wxyz quaternions
            current_m = quaternion_to_matrix(current.q.reshape(-1).cpu().double())
            euler = matrix_to_euler_angles(goal_m @ current_m.T, "XYZ").numpy()
            # The controller's scale of a unit rotation action (ManiSkill 3.0.1 multiplies by rot_lower, -0.1).
            probe = torch.zeros(1, 6, dtype=controller.action_space_low.dtype, device=controller.device)
            probe[0, 3:] = 1.0 / math.sqrt(3.0)
            scale = controller._clip_and_scale_action(probe)[0, 3:].cpu().numpy().astype(np.float64) * math.sqrt(3.0)
            rot = euler / scale
            norm = float(np.linalg.norm(rot))
            if norm > 1.0:  # the controller clips the rotation by its norm
                rot = rot / norm
                clipped = True
            parts.append(rot)
        self.clipped_steps += int(clipped)
        return np.concatenate(parts)

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        env_action = self._convert(action)
        if self.max_steps is not None and len(self.actions) >= self.max_steps:
            raise _EpisodeTooLong()
        self.observations.append(self._obs)
        self.actions.append(env_action)
        start = time.perf_counter()
        obs, reward, terminated, truncated, info = self.env.step(env_action)
        self.env_seconds += time.perf_counter() - start
        self.rewards.append(float(reward))
        self.success = bool(info.get("success", False))
        self._obs = obs
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        pass


class _EpisodeTooLong(Exception):
    pass


# plan_episode's "status": the solution ran to its end (its success is the env's), the planner gave up (IK), or the
# solution was cut at PlannerEnv.max_steps (collect.max_episode_steps) before its end.
STATUS_OK, STATUS_FAILED, STATUS_CUT = "ok", "planning failed", "cut at max_steps"


def plan_episode(planner_env: PlannerEnv, solve: Callable[..., Any], seed: int) -> dict[str, Any]:
    """Run one solution from `reset(seed)`; returns the recorded episode (possibly unsuccessful)."""
    import contextlib
    import io

    status = STATUS_OK
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the solver prints planner failures
            result = solve(planner_env, seed=seed, debug=False, vis=False)
        if isinstance(result, int) and result == -1:
            status = STATUS_FAILED
    except _EpisodeTooLong:
        status = STATUS_CUT
    observations = planner_env.observations
    return {
        "seed": seed,
        "status": status,
        "success": bool(planner_env.success and status == STATUS_OK),
        "instruction": planner_env.env.instruction,
        "obs": {key: np.stack([o[key] for o in observations]) for key in observations[0]} if observations else {},
        "actions": np.stack(planner_env.actions) if planner_env.actions else np.zeros((0, 0), np.float32),
        "rewards": np.asarray(planner_env.rewards, np.float32),
        "clipped_steps": planner_env.clipped_steps,
        # where a worker's time went: the env (physics and rendering) vs the rest (planning, action conversion)
        "seconds": {"episode": time.perf_counter() - start, "env": planner_env.env_seconds},
    }
