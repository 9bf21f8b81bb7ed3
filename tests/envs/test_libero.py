"""LIBERO backend with the real simulator (robosuite + MuJoCo, offscreen GL), small cameras, 1-2 envs."""

import importlib.util
import os
import re
import signal

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import rlinf_embodied  # noqa: F401  (registers the ids)
from rlinf_embodied.envs.libero.suites import LIBERO_SUITES, get_suite

LIBERO_MISSING = importlib.util.find_spec("libero") is None or importlib.util.find_spec("robosuite") is None
needs_libero = pytest.mark.skipif(LIBERO_MISSING, reason='LIBERO not installed: pip install -e ".[libero]"')

CAMERA = 16
NOOP = np.array([0, 0, 0, 0, 0, 0, -1], np.float32)


@pytest.fixture(scope="module")
def single_env():
    from rlinf_embodied.envs.libero.env import LiberoEnv

    env = LiberoEnv("rlinf/LIBERO-Spatial", task_id=0, obs_mode="rgb", camera_size=CAMERA, num_settle_steps=0)
    yield env
    env.close()


@pytest.fixture(scope="module")
def vec_env():
    env = gym.make_vec(
        "rlinf/LIBERO-Spatial",
        num_envs=2,
        vectorization_mode="vector_entry_point",
        obs_mode="rgb",
        max_episode_steps=4,
        ignore_terminations=False,
        task_id=0,
        camera_size=CAMERA,
        num_settle_steps=0,
    )
    yield env
    env.close()


def test_suites_registered_cheaply():
    assert set(LIBERO_SUITES) <= set(gym.registry)
    assert get_suite("rlinf/LIBERO-90").num_tasks == 90 and get_suite("libero_10").max_episode_steps == 520
    for env_id, suite in LIBERO_SUITES.items():  # gym.make's TimeLimit (before: none, episodes never truncated)
        assert gym.registry[env_id].max_episode_steps == suite.max_episode_steps


@pytest.mark.parametrize("task_id, valid", [(10, "0..9"), (-1, "0..9"), ("3", "0..9")])
def test_task_id_out_of_range_names_valid_range(task_id, valid):
    with pytest.raises(ValueError, match=rf"task_id=.*{valid}"):
        gym.make_vec("rlinf/LIBERO-Goal", num_envs=1, vectorization_mode="vector_entry_point", task_id=task_id)
    with pytest.raises(ValueError, match="0..89"):
        gym.make("rlinf/LIBERO-90", task_id=90)


@pytest.mark.parametrize(
    "task_id, message",
    [
        (12, r"task_id=12 is out of range for rlinf/LIBERO-Spatial .*0..9"),
        ("abc", r"task_id='abc': pass one task id of rlinf/LIBERO-Spatial \(an int in 0..9\)"),
        ([], r"task_id=\[\]: pass one task id"),
        ([0, 10], r"task_id=10 is out of range"),
    ],
)
def test_train_config_task_id_is_checked_before_any_env_is_built(task_id, message):
    from rlinf_embodied.envs.registration import check_env_options

    # before: accepted by the pre-Ray checks, then refused in every env worker
    with pytest.raises(ValueError, match=message):
        check_env_options("rlinf/LIBERO-Spatial", "rgb", {"task_id": task_id, "camera_size": 224})
    check_env_options("rlinf/LIBERO-Spatial", "rgb", {"task_id": [0, 9], "camera_size": 224})
    with pytest.raises(ValueError, match="different task ids per env need obs_mode='rgb'"):
        check_env_options("rlinf/LIBERO-Spatial", "state", {"task_id": [0, 9]})


def test_bad_obs_mode_and_camera_size():
    with pytest.raises(ValueError, match="obs_mode='depth'.*valid"):
        gym.make_vec("rlinf/LIBERO-Goal", num_envs=1, vectorization_mode="vector_entry_point", obs_mode="depth")
    with pytest.raises(ValueError, match="camera_size"):
        gym.make_vec("rlinf/LIBERO-Goal", num_envs=1, vectorization_mode="vector_entry_point", camera_size=0)


@pytest.mark.parametrize("steps", ["abc", 2.5, True, -1])
def test_num_settle_steps_must_be_an_int_of_at_least_zero(steps):
    """Before: 'abc' passed the options check and failed in the env worker with a raw TypeError; 2.5 silently
    became 2 and True became 1."""
    from rlinf_embodied.envs.libero.env import LiberoEnv
    from rlinf_embodied.envs.registration import check_env_options

    message = rf"num_settle_steps={re.escape(repr(steps))} must be an int >= 0"
    with pytest.raises(ValueError, match=message):  # the check train runs before Ray
        check_env_options("rlinf/LIBERO-Spatial", "rgb", {"num_settle_steps": steps})
    with pytest.raises(ValueError, match=message):  # before any LIBERO import
        LiberoEnv("rlinf/LIBERO-Spatial", num_settle_steps=steps)
    with pytest.raises(ValueError, match=message):  # before any worker starts
        gym.make_vec("rlinf/LIBERO-Goal", num_envs=1, vectorization_mode="vector_entry_point", num_settle_steps=steps)
    for valid in (0, 5, np.int64(3)):
        check_env_options("rlinf/LIBERO-Spatial", "rgb", {"num_settle_steps": valid})


@needs_libero
def test_single_env_passes_check_env(single_env):
    check_env(single_env, skip_render_check=True)
    obs, info = single_env.reset(seed=0)
    assert obs["state"].shape == (8,) and obs["state"].dtype == np.float32
    assert obs["rgb"].shape == (CAMERA, CAMERA, 3) and obs["rgb"].dtype == np.uint8
    assert "black bowl" in single_env.instruction and info["instruction"] == single_env.instruction


@needs_libero
def test_images_are_flipped_upright(single_env):
    obs, _ = single_env.reset(seed=0)
    raw = single_env.sim_env._get_observations(force_update=True)["agentview_image"]  # MuJoCo's bottom-up frame
    assert np.array_equal(obs["rgb"], raw[::-1, ::-1])
    assert not np.array_equal(obs["rgb"], raw)


@needs_libero
def test_reset_options_it_does_not_read_are_refused(single_env):
    with pytest.raises(ValueError, match=r"keys \['init_state'\]: not read by .*; valid: \['init_state_id'\]"):
        single_env.reset(options={"init_state": 2})  # a typo of init_state_id: before, a random init state
    assert single_env.reset(options={"init_state_id": 2})[1]["init_state_id"] == 2


@needs_libero
def test_a_non_finite_action_is_refused(single_env):
    single_env.reset(seed=0)
    with pytest.raises(ValueError, match=r"rlinf/LIBERO-Spatial's action .* holds NaN or inf"):
        single_env.step(np.array([np.nan] + [0.0] * 6))  # before: NaN passed the clip into the simulator


@needs_libero
def test_actions_outside_the_box_are_reported_and_render_without_a_mode_warns(single_env):
    """Before: clipped with no trace in info, and render() returned None without a word (gymnasium warns). No reset:
    one step from whatever state the module's env is in (a reset costs a second)."""
    assert single_env.step(np.array([0, 0, 4, 0, 0, 0, -1], np.int64))[4]["action_clipped"] == pytest.approx(1 / 7)
    with pytest.warns(UserWarning, match=r"render\(\) of rlinf/LIBERO-Spatial returns None: .*render_mode='rgb_array'"):
        assert single_env.render() is None


@needs_libero
@pytest.mark.parametrize("shape", [(1, 7), (7, 1), (6,)])
def test_a_wrongly_shaped_action_is_refused(single_env, shape):
    single_env.reset(seed=0)
    with pytest.raises(
        ValueError, match=rf"rlinf/LIBERO-Spatial takes one action of shape \(7,\), got shape {re.escape(str(shape))}"
    ):
        single_env.step(np.zeros(shape, np.float32))  # before: (1, 7) and (7, 1) were flattened and stepped


@needs_libero
def test_reset_options_that_are_no_mapping_are_refused(single_env):
    with pytest.raises(TypeError, match=r"reset\(options=\['init_state_id'\]\): pass a dict"):
        single_env.reset(options=["init_state_id"])  # before: accepted by the key check, then an AttributeError


def test_a_bool_num_envs_is_refused():
    with pytest.raises(ValueError, match="num_envs must be an int >= 1, got True"):  # before: one env
        gym.make_vec("rlinf/LIBERO-Spatial", num_envs=True, vectorization_mode="vector_entry_point")


@needs_libero
def test_a_closed_env_says_so():
    from rlinf_embodied.envs.libero.env import LiberoEnv

    env = LiberoEnv("rlinf/LIBERO-Spatial", task_id=0, obs_mode="state", num_settle_steps=0)
    env.close()
    with pytest.raises(RuntimeError, match=r"rlinf/LIBERO-Spatial env \(task 0\) is closed; make a new one"):
        env.reset(seed=0)  # before: AttributeError on None
    with pytest.raises(RuntimeError, match="is closed"):
        env.step(np.zeros(7, np.float32))


@needs_libero
def test_seed_selects_init_state_deterministically(single_env):
    count = len(single_env.init_states)
    a, info_a = single_env.reset(seed=3)
    b, info_b = single_env.reset(seed=3 + count)  # same init state, the seed wraps around
    c, info_c = single_env.reset(seed=4)
    assert info_a["init_state_id"] == info_b["init_state_id"] == 3 and info_c["init_state_id"] == 4
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["state"], c["state"]) or not np.array_equal(a["rgb"], c["rgb"])
    action = np.array([0.5, -0.3, 0.2, 0.0, 0.1, 0.0, 1.0], np.float32)
    single_env.reset(seed=3)
    step_a = single_env.step(action)[0]
    single_env.reset(seed=3)
    step_b = single_env.step(action)[0]
    assert all(np.array_equal(step_a[k], step_b[k]) for k in step_a)


@needs_libero
def test_success_comes_from_the_bddl_goal_check(single_env):
    single_env.reset(seed=0)
    _, reward, terminated, _, info = single_env.step(NOOP)
    assert not info["success"] and reward == 0.0 and not terminated
    single_env.place_on("akita_black_bowl_1", "plate_1")  # the goal: (On akita_black_bowl_1 plate_1)
    successes = [single_env.step(NOOP)[4]["success"] for _ in range(6)]  # the bowl drops onto the plate
    assert successes[-1] and single_env.check_success()
    _, reward, terminated, _, _ = single_env.step(NOOP)
    assert reward == 1.0 and terminated
    single_env.place_on("akita_black_bowl_1", "akita_black_bowl_2")  # on the wrong object: goal fails
    assert not any(single_env.step(NOOP)[4]["success"] for _ in range(6))


@needs_libero
def test_vector_shapes_dtypes_and_instruction(vec_env):
    obs, _ = vec_env.reset(seed=0)
    assert obs["state"].shape == (2, 8) and obs["state"].dtype == torch.float32
    for key in ("rgb", "wrist_rgb"):
        assert obs[key].shape == (2, CAMERA, CAMERA, 3) and obs[key].dtype == torch.uint8
    assert len(obs["instruction"]) == 2 and "black bowl" in obs["instruction"][0]
    obs, rewards, terminated, truncated, info = vec_env.step(torch.zeros(2, 7))
    assert rewards.shape == terminated.shape == truncated.shape == (2,)
    assert info["success"].dtype == torch.bool and info["elapsed_steps"].tolist() == [1, 1]


@needs_libero
def test_vector_seed_determinism(vec_env):
    first, _ = vec_env.reset(seed=5)
    again, _ = vec_env.reset(seed=5)
    for key in ("state", "rgb", "wrist_rgb"):
        assert torch.equal(first[key], again[key])
    assert not torch.equal(first["rgb"][0], first["rgb"][1])  # envs get seeds 5 and 6: different init states


@needs_libero
def test_chunk_across_episode_boundary_autoresets(vec_env):
    vec_env.reset(seed=0)
    vec_env.step(torch.zeros(2, 2, 7))  # 2 of max_episode_steps=4
    obs, rewards, terminated, truncated, info = vec_env.step(torch.zeros(2, 5, 7))  # ends after row 1
    assert truncated.shape == (2, 5) and truncated[:, 1].all() and not truncated[:, [0, 2, 3, 4]].any()
    assert info["_episode"].all() and info["episode"]["length"].tolist() == [4, 4]
    assert info["_final_obs"].all() and info["elapsed_steps"].tolist() == [0, 0]
    # SAME_STEP: the returned obs is the first obs of the next episode, not the final one
    assert not torch.equal(obs["state"], info["final_obs"]["state"])
    obs, *_, info = vec_env.step(torch.zeros(2, 7))
    assert info["elapsed_steps"].tolist() == [1, 1]


@needs_libero
def test_vector_success_and_episode_stats(vec_env):
    vec_env.reset(seed=0)
    vec_env.call("place_on", "akita_black_bowl_1", "plate_1")
    noop_chunk = torch.from_numpy(np.tile(NOOP, (2, 4, 1)))
    _, rewards, terminated, truncated, info = vec_env.step(noop_chunk)
    assert terminated.any(dim=1).all(), "the goal predicate held, so success terminates the episode"
    ended_at = terminated.float().argmax(dim=1)
    assert torch.equal(rewards.sum(dim=1), torch.ones(2))
    assert info["episode"]["success_once"].all() and info["episode"]["success"].all()
    assert torch.equal(info["episode"]["length"], ended_at + 1)


@needs_libero
def test_crashed_worker_is_restarted(vec_env):
    vec_env.reset(seed=0)
    os.kill(vec_env.worker_pids()[vec_env.worker_of_env(1)], signal.SIGKILL)
    restarts = vec_env.num_restarts
    obs, rewards, terminated, truncated, info = vec_env.step(torch.zeros(2, 2, 7))
    assert vec_env.num_restarts == restarts + 1 and truncated[1, -1] and info["_final_obs"][1]
    assert obs["rgb"].shape == (2, CAMERA, CAMERA, 3)
    _, _, _, truncated, info = vec_env.step(torch.zeros(2, 7))  # the restarted env steps on
    assert not truncated.any() and info["elapsed_steps"][1] == 1


def test_env_spec_lists_both_cameras(vec_env):
    from rlinf_embodied.envs.spec import env_spec

    assert {"rgb", "wrist_rgb"} <= set(env_spec(vec_env)["obs_keys"])


@pytest.mark.parametrize("render_mode", ["rgb_array", "human"])
def test_vector_render_mode_is_refused_before_any_env_worker(render_mode):
    """Before: the options check accepted it; 'rgb_array' built an offscreen renderer in every env that nothing read
    (the vector env never renders), 'human' failed in each env worker after Ray had started."""
    from rlinf_embodied.envs.registration import check_env_options

    message = rf"render_mode={re.escape(repr(render_mode))}: LIBERO's vector env does not render\(\); .*obs_mode='rgb'"
    with pytest.raises(ValueError, match=rf"^env\.kwargs\.{message}"):
        check_env_options("rlinf/LIBERO-Spatial", "state", {"render_mode": render_mode})
    with pytest.raises(ValueError, match=message):
        gym.make_vec("rlinf/LIBERO-Goal", num_envs=1, vectorization_mode="vector_entry_point", render_mode=render_mode)


@pytest.mark.parametrize("backend", ["foo", "EGL", "", 5])
def test_a_gl_backend_of_no_known_name_is_refused_before_any_env_worker(backend, monkeypatch):
    """Before: passed the options check, then failed in each env worker ("GL backend 'foo' is not supported")."""
    from rlinf_embodied.envs.registration import check_env_options

    monkeypatch.delenv("RLINF_LIBERO_GL", raising=False)
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    message = rf"^env\.kwargs\.gl_backend={re.escape(repr(backend))} is not a GL backend .*valid: \['egl', 'osmesa'\]"
    with pytest.raises(ValueError, match=message):
        check_env_options("rlinf/LIBERO-Spatial", "state", {"gl_backend": backend})
    check_env_options("rlinf/LIBERO-Spatial", "state", {"gl_backend": "osmesa"})  # by name only: no probe
    if backend == "EGL":
        with pytest.raises(ValueError, match=r"\(lowercase: 'egl'\)"):
            check_env_options("rlinf/LIBERO-Spatial", "state", {"gl_backend": backend})


@pytest.mark.parametrize("variable", ["MUJOCO_GL", "RLINF_LIBERO_GL"])
def test_a_gl_backend_from_the_environment_is_refused_naming_the_variable(variable, monkeypatch):
    """Before: "GL backend 'glfw' is not supported", which named neither the variable nor how to change it."""
    from rlinf_embodied.envs.registration import check_env_options

    monkeypatch.delenv("RLINF_LIBERO_GL", raising=False)
    monkeypatch.setenv(variable, "glfw")
    message = rf"^\${variable}='glfw' \(an environment variable, read because .*gl_backend is unset\) .*'osmesa'"
    with pytest.raises(ValueError, match=message):  # the single env, before LIBERO is imported
        gym.make("rlinf/LIBERO-Spatial", obs_mode="state")
    with pytest.raises(ValueError, match=message):  # the check train runs before Ray
        check_env_options("rlinf/LIBERO-Spatial", "state", {})
    check_env_options("rlinf/LIBERO-Spatial", "state", {"gl_backend": "egl"})  # the setting comes first


def test_single_env_refuses_an_unknown_keyword_naming_the_valid_ones():
    """Before: LiberoEnv's raw TypeError (wrapped by gymnasium), listing no valid option."""
    with pytest.raises(
        ValueError, match=r"\['foo'\]: not an option of rlinf/LIBERO-Spatial; valid: \[.*'task_id'"
    ) as error:
        gym.make("rlinf/LIBERO-Spatial", foo=1)
    assert "'suite'" not in str(error.value) and "'num_settle_steps'" in str(error.value)
    with pytest.raises(ValueError, match=r"\['foo'\]: not an option of rlinf/LIBERO-Spatial"):  # the vector env too
        gym.make_vec("rlinf/LIBERO-Spatial", num_envs=1, vectorization_mode="vector_entry_point", foo=1)


@pytest.mark.parametrize("task_id", ["3", 2.0, True])
def test_a_task_id_that_is_no_int_is_refused_as_such(task_id):
    """Before: reported as out of range ("task_id='3' is out of range ..."), though 3 is in range."""
    from rlinf_embodied.envs.registration import check_env_options

    message = rf"task_id={re.escape(repr(task_id))} must be an int .*valid task ids are 0\.\.9"
    with pytest.raises(ValueError, match=message):
        gym.make("rlinf/LIBERO-Spatial", task_id=task_id)
    with pytest.raises(ValueError, match=message):
        check_env_options("rlinf/LIBERO-Spatial", "rgb", {"task_id": [0, task_id]})
    assert get_suite("rlinf/LIBERO-Spatial").validate_task_id(np.int64(3)) == 3


@needs_libero
def test_a_bool_init_state_id_is_refused(single_env):
    """Before: init_state_id=True was read as init state 1."""
    with pytest.raises(ValueError, match=r"options\['init_state_id'\]=True; valid: an int in 0\.\.49"):
        single_env.reset(options={"init_state_id": True})
