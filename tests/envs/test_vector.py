"""SubprocVectorEnv semantics on the simulator-free ToyReachEnv (fast)."""

import math
import os
import signal
import time

import numpy as np
import pytest
import torch

from rlinf_embodied.envs.metrics import EpisodeMetrics, episodes_from_info
from rlinf_embodied.envs.testing import ToyReachFactory
from rlinf_embodied.envs.vector import MAX_STEP_FAILURES_IN_A_ROW, SubprocVectorEnv, split_evenly


def make_env(num_envs=3, num_workers=2, **kwargs):
    factory_kwargs = {
        k: kwargs.pop(k)
        for k in list(kwargs)
        if k in ("image_size", "goal_radius", "crash_at_step", "hang_at_step", "fail_reset_after_step", "build_seconds")
        or k == "fail_to_build_in_subprocess"
    }
    return SubprocVectorEnv(
        [ToyReachFactory(**factory_kwargs) for _ in range(num_envs)], num_workers=num_workers, **kwargs
    )


SPACES = (ToyReachFactory()().observation_space, ToyReachFactory()().action_space)  # no probe env in the parent


@pytest.fixture(scope="module")
def env():
    env = make_env(num_envs=3, num_workers=2, max_episode_steps=4, image_size=8)
    yield env
    env.close()


def test_split_evenly():
    assert split_evenly(5, 2) == [[0, 1, 2], [3, 4]]
    assert split_evenly(2, 2) == [[0], [1]]


def test_batched_shapes_and_dtypes(env):
    obs, info = env.reset(seed=0)
    assert obs["state"].shape == (3, 4) and obs["state"].dtype == torch.float32
    assert obs["rgb"].shape == (3, 8, 8, 3) and obs["rgb"].dtype == torch.uint8
    assert obs["instruction"] == ["move the point to the goal"] * 3
    assert env.single_observation_space["state"].shape == (4,)
    obs, rewards, terminated, truncated, info = env.step(np.zeros((3, 2), np.float32))
    assert rewards.shape == (3,) and rewards.dtype == torch.float32
    assert terminated.shape == truncated.shape == (3,) and terminated.dtype == torch.bool
    assert info["success"].shape == (3,) and info["success"].dtype == torch.bool
    assert info["elapsed_steps"].tolist() == [1, 1, 1]


def test_chunk_across_episode_boundary_drops_rest_and_autoresets(env):
    obs0, _ = env.reset(seed=1)
    env.step(torch.zeros(3, 2, 2))  # 2 steps of 4
    chunk = torch.ones(3, 5, 2)  # the episode ends after row 1 (steps 3, 4)
    obs, rewards, terminated, truncated, info = env.step(chunk)
    assert rewards.shape == (3, 5) and truncated.shape == (3, 5)
    assert truncated[:, 1].all() and not truncated[:, [0, 2, 3, 4]].any()
    assert (rewards[:, 2:] == 0).all() and (rewards[:, :2] != 0).all()
    assert info["_final_obs"].all() and info["_episode"].all()
    assert info["episode"]["length"].tolist() == [4, 4, 4]
    # the final obs moved by 0.1 per +1 action over 2 steps; the returned obs is a fresh episode
    moved = info["final_obs"]["state"][:, :2] - obs0["state"][:, :2]
    assert (
        torch.allclose(moved, torch.full_like(moved, 0.2), atol=1e-5)
        or (info["final_obs"]["state"][:, :2].abs() == 1).any()
    )
    assert not torch.allclose(obs["state"], info["final_obs"]["state"])
    assert info["final_obs"]["instruction"] == ["move the point to the goal"] * 3  # language policies read it
    assert info["elapsed_steps"].tolist() == [0, 0, 0]
    # the next episode starts counting from zero: the dropped rows were not applied to it
    _, _, _, truncated, info = env.step(torch.zeros(3, 3, 2))
    assert not truncated.any() and info["elapsed_steps"].tolist() == [3, 3, 3]


def test_episode_return_matches_rewards(env):
    env.reset(seed=2)
    total = torch.zeros(3)
    for _ in range(4):
        _, rewards, _, truncated, info = env.step(torch.zeros(3, 2))
        total += rewards
    assert truncated.all() and info["_episode"].all()
    assert torch.allclose(info["episode"]["return"], total, atol=1e-5)


def test_seed_determinism_across_two_vector_envs():
    actions = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (6, 2, 2)).astype(np.float32))
    runs = []
    for _ in range(2):
        env = make_env(num_envs=2, num_workers=1, max_episode_steps=3)
        obs, _ = env.reset(seed=[7, 8])
        trace = [obs["state"]]
        for a in actions:
            obs, rewards, *_ = env.step(a)
            trace += [obs["state"], rewards]
        env.close()
        runs.append(trace)
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    env = make_env(num_envs=2, num_workers=1)
    other, _ = env.reset(seed=[9, 10])
    env.close()
    assert not torch.equal(other["state"], runs[0][0])


def test_success_and_success_once_reported():
    env = make_env(num_envs=2, num_workers=1, goal_radius=10.0, max_episode_steps=5)  # succeeds at step 1
    env.reset(seed=0)
    _, _, terminated, _, info = env.step(torch.zeros(2, 2))
    env.close()
    assert info["success"].all() and terminated.all()
    assert info["episode"]["success_once"].all() and info["episode"]["success"].all()
    assert info["final_info"]["success"].all() and info["_final_info"].all()


def test_ignore_terminations_keeps_episode_running():
    env = make_env(num_envs=2, num_workers=1, goal_radius=10.0, max_episode_steps=3, ignore_terminations=True)
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(torch.zeros(2, 3, 2))
    env.close()
    assert not terminated.any() and truncated[:, 2].all() and info["success"].all()
    assert info["episode"]["length"].tolist() == [3, 3] and info["episode"]["success_once"].all()


@pytest.mark.parametrize("wait_for_death", [True, False], ids=["dead-before-send", "dies-any-time"])
def test_crashed_worker_is_restarted_and_its_envs_truncated(caplog, wait_for_death):
    """A worker found dead when the step is sent (broken pipe) or while it is awaited is restarted."""
    env = make_env(num_envs=2, num_workers=2, max_episode_steps=50, step_timeout=20)
    env.reset(seed=0)
    env.step(torch.zeros(2, 2))
    pid = env.worker_pids()[env.worker_of_env(1)]
    os.kill(pid, signal.SIGKILL)
    if wait_for_death:
        env._workers[env.worker_of_env(1)].process.join(timeout=10)
    with caplog.at_level("WARNING"):
        obs, rewards, terminated, truncated, info = env.step(torch.zeros(2, 3, 2))
    assert truncated[1, 2] and not truncated[0].any() and not terminated.any()
    assert info["_episode"].tolist() == [False, True] and info["_final_obs"][1]
    assert env.num_restarts == 1 and any("restarting" in r.message for r in caplog.records)
    assert env.worker_pids()[1] != pid
    _, _, terminated, truncated, info = env.step(torch.zeros(2, 2))  # the run goes on
    assert not truncated.any() and info["elapsed_steps"][0] == 5
    # env 1 restarted from an unseeded reset: it may start at the goal and terminate at once
    assert info["elapsed_steps"][1] == (0 if terminated[1] else 1)
    env.close()


def test_hung_worker_is_restarted_after_step_timeout():
    env = make_env(num_envs=2, num_workers=2, hang_at_step=3, step_timeout=2.0)
    env.reset(seed=0)
    env.step(torch.zeros(2, 2, 2))
    start = time.monotonic()
    _, _, _, truncated, info = env.step(torch.zeros(2, 2))  # both workers hang at their 3rd step
    assert time.monotonic() - start < 30
    assert truncated.all() and env.num_restarts == 2
    env.close()


def test_a_worker_that_fails_every_step_is_an_error_not_restarted_forever():
    """Probe 63 #3: before, a worker hanging at every step (e.g. a step_timeout below one step's time) was restarted
    at every step, forever, and the run trained on empty truncated episodes."""
    env = make_env(num_envs=2, num_workers=2, hang_at_step=1, step_timeout=1.0)
    try:
        env.reset(seed=0)
        for _ in range(MAX_STEP_FAILURES_IN_A_ROW - 1):
            _, _, _, truncated, _ = env.step(torch.zeros(2, 2))
            assert truncated.all()
        with pytest.raises(RuntimeError, match=r"envs \[0\] failed 3 steps in a row, .* step_timeout=1 s"):
            env.step(torch.zeros(2, 2))
    finally:
        env.close()
    # a good step in between starts the count again: every 2nd step hangs, each restart truncates, no error
    env = make_env(num_envs=1, num_workers=1, hang_at_step=2, step_timeout=1.0)
    try:
        env.reset(seed=0)
        hung = [bool(env.step(torch.zeros(1, 2))[3][0]) for _ in range(2 * MAX_STEP_FAILURES_IN_A_ROW)]
        assert hung == [False, True] * MAX_STEP_FAILURES_IN_A_ROW and env.num_restarts == MAX_STEP_FAILURES_IN_A_ROW
    finally:
        env.close()


def test_error_messages():
    with pytest.raises(ValueError, match="num_envs"):
        SubprocVectorEnv([])
    with pytest.raises(ValueError, match="num_workers"):
        make_env(num_envs=1, num_workers=0)
    with pytest.raises(ValueError, match=r"num_workers=3 > num_envs=2: .* set num_workers <= 2"):
        make_env(num_envs=2, num_workers=3)  # before: 2 processes, silently
    with pytest.raises(ValueError, match=r"ignore_terminations='false' must be True or False"):
        SubprocVectorEnv([ToyReachFactory()] * 2, ignore_terminations="false")  # before: truthy, terminations off
    with pytest.raises(ValueError, match=r"observe_every_row='no' must be True or False"):
        SubprocVectorEnv([ToyReachFactory()] * 2, observe_every_row="no")
    env = make_env(num_envs=2, num_workers=1)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"act_dim=2.*got \(2, 3\)"):
        env.step(torch.zeros(2, 3))
    chunk = torch.zeros(2, 3, 2)
    chunk[1, 2, 0] = float("nan")  # a NaN passes the env's action clip into the physics
    with pytest.raises(ValueError, match=r"the actions of env\(s\) 1 hold NaN or inf \(1 of 2 envs\)"):
        env.step(chunk)
    with pytest.raises(ValueError, match="3 seeds for 2 envs"):
        env.reset(seed=[1, 2, 3])
    env.close()


def test_metrics_helpers():
    metrics = EpisodeMetrics()
    summary = metrics.summary()
    assert summary["num_episodes"] == 0 and math.isnan(summary["success_rate"])
    info = {
        "_episode": torch.tensor([True, False, True]),
        "episode": {
            "return": torch.tensor([1.0, 5.0, 3.0]),
            "length": torch.tensor([10, 0, 20]),
            "success_once": torch.tensor([True, False, False]),
            "success": torch.tensor([False, False, False]),
        },
    }
    episodes = episodes_from_info(info)
    assert [e["episode_return"] for e in episodes] == [1.0, 3.0]
    assert metrics.update(info) == 2 and metrics.update({"success": torch.zeros(3)}) == 0
    summary = metrics.summary()
    assert summary == {
        "num_episodes": 2,
        "success_rate": 0.0,
        "episode_return": 2.0,
        "episode_length": 15.0,
        "success_once": 0.5,
    }
    metrics.clear()
    assert metrics.summary()["num_episodes"] == 0


def ended_info(ended: list[bool], success: list[bool]) -> dict:
    flags = torch.tensor(success)
    return {
        "_episode": torch.tensor(ended),
        "episode": {"return": flags.float(), "length": torch.ones(2), "success_once": flags, "success": flags},
    }


def test_only_each_envs_first_episode_counts_after_a_reset():
    """Env 0 succeeds quickly twice before env 1's first episode fails: every ended episode reads 2 of 3 successes,
    the first episode of each env 1 of 2 (what the policy does from a reset, without the lean towards quick ones)."""
    steps = [ended_info([True, False], [True, False]), ended_info([True, False], [True, False])]
    steps.append(ended_info([False, True], [False, False]))
    every, first = EpisodeMetrics(), EpisodeMetrics()
    pending = torch.ones(2, dtype=torch.bool)
    for info in steps:
        every.update(info)
        pending = first.update_first(info, pending)
    assert every.summary()["num_episodes"] == 3 and every.summary()["success_once"] == pytest.approx(2 / 3)
    assert first.summary()["num_episodes"] == 2 and first.summary()["success_once"] == 0.5
    assert not pending.any()
    assert first.update_first({}, pending).equal(pending)  # a step where nothing ended


def test_rows_nobody_reads_build_no_observation():
    """A chunk renders its last row's obs (and an ending episode's final obs) only, with the same results."""
    envs = {
        every: make_env(num_envs=3, max_episode_steps=5, image_size=4, observe_every_row=every)
        for every in (True, False)
    }
    try:
        results = {}
        for every, env in envs.items():
            env.reset(seed=4)
            built_before = sum(env.call("observations_built"))
            steps = [env.step(torch.full((3, 4, 2), 0.3 * sign)) for sign in (1, -1, 1)]  # episodes end in chunk 2
            results[every] = (steps, sum(env.call("observations_built")) - built_before)
        (every_row, built_every), (skipped, built_skipped) = results[True], results[False]
        for (obs_a, rew_a, term_a, trunc_a, info_a), (obs_b, rew_b, term_b, trunc_b, info_b) in zip(every_row, skipped):
            assert torch.equal(obs_a["state"], obs_b["state"]) and torch.equal(obs_a["rgb"], obs_b["rgb"])
            assert torch.equal(rew_a, rew_b) and torch.equal(term_a, term_b) and torch.equal(trunc_a, trunc_b)
            assert ("_final_obs" in info_a) == ("_final_obs" in info_b)
            if "_final_obs" in info_a:
                ended = info_a["_final_obs"]
                assert torch.equal(ended, info_b["_final_obs"])
                assert torch.equal(info_a["final_obs"]["state"][ended], info_b["final_obs"]["state"][ended])
        assert every_row[1][3][:, 0].all() and not every_row[0][3].any()  # the 5-step episodes end at chunk 2's row 0
        # per env, every row: 4 + 1 + 4 applied rows + the auto-reset; skipped: chunk 1's end, the final obs
        # at chunk 2's row 0, the auto-reset, chunk 3's end
        assert built_every == 3 * (4 + 1 + 4 + 1)
        assert built_skipped == 3 * (1 + 1 + 1 + 1)
    finally:
        for env in envs.values():
            env.close()


def test_workers_build_their_envs_while_the_caller_goes_on():
    """The constructor returns once the workers are launched (a runner builds its policies meanwhile);
    the first reset waits for them."""
    env = make_env(num_envs=2, num_workers=1, build_seconds=1.0, observation_space=SPACES[0], action_space=SPACES[1])
    returned_at = time.time()
    try:
        assert env.ready_time is None
        obs, _ = env.reset(seed=0)
        assert obs["state"].shape == (2, 4)
        assert env.ready_time > returned_at  # the worker's two 1 s builds ended after the constructor returned
        assert env.worker_ready_times == [env.ready_time]  # one worker
        assert env.ready_time - env.launch_time >= 2.0  # its two 1 s builds
    finally:
        env.close()


def test_a_worker_that_fails_to_build_raises_at_the_first_reset():
    env = make_env(num_envs=2, num_workers=2, fail_to_build_in_subprocess=True)
    with pytest.raises(RuntimeError, match="raised: RuntimeError: ToyReachEnv failed to build"):
        env.reset(seed=0)
    assert env.closed


def test_closing_before_the_envs_are_built_stops_the_workers():
    env = make_env(num_envs=2, num_workers=2, build_seconds=0.5, observation_space=SPACES[0], action_space=SPACES[1])
    pids = env.worker_pids()
    env.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize(
    "seed, error, message",
    [
        (-1, ValueError, r"gives seeds \[-1\] outside \[0, 4294967295\]"),
        (2**32 - 2, ValueError, r"seeds \[4294967296\] outside .*env i seed \+ i, up to seed \+ 2"),
        ("12", TypeError, r"reset\(seed='12'\): pass an int"),  # before: read as [1, 2]
        (1.5, TypeError, r"reset\(seed=1.5\): pass an int"),
        ([1.9, 2.7, 3], TypeError, r"entries \[1.9, 2.7\] are not ints"),  # before: [1, 2, 3]
        ([1, 2], ValueError, r"got 2 seeds for 3 envs"),
    ],
)
def test_bad_seeds_are_refused_in_the_callers_process(env, seed, error, message):
    with pytest.raises(error, match=message):
        env.reset(seed=seed)


def test_an_option_the_envs_refuse_is_a_value_error_not_a_worker_crash(env):
    """Before: the workers' ValueError read as a crash: each worker was killed, restarted and sent the same reset,
    and a private RuntimeError came out with the child's traceback."""
    restarts = env._restarts
    with pytest.raises(ValueError, match=r"keys \['foo'\]: not read by ToyReachEnv"):
        env.reset(seed=0, options={"foo": 1})
    assert env._restarts == restarts
    obs, _ = env.reset(seed=0)  # the workers answer the next command in step
    assert obs["state"].shape[0] == 3
    env.step(np.zeros((3, 2), np.float32))


def test_a_closed_env_says_so_when_reset_or_stepped():
    env = make_env(num_envs=2, num_workers=1)
    env.reset(seed=0)
    env.close()
    for use in (lambda: env.reset(seed=0), lambda: env.step(np.zeros((2, 2), np.float32))):
        with pytest.raises(RuntimeError, match="vector env of 2 envs is closed; make a new one"):
            use()  # before: AttributeError 'NoneType' object has no attribute 'send'
    env.close()  # closing again stays a no-op


def test_a_callers_mistake_in_call_or_reset_is_a_builtin_error_and_the_workers_live_on(env):
    """Before: call('instructionn') raised a private _WorkerDied, killed the workers, and the next step restarted them
    and truncated every env (a worker's leftover error read as its step answer); reset(options=5) crashed them."""
    pids, restarts = env.worker_pids(), env.num_restarts
    env.reset(seed=0)
    env.step(np.zeros((3, 2), np.float32))
    with pytest.raises(AttributeError, match=r"call\('instructionn'\): ToyReachEnv has no attribute 'instructionn'; "):
        env.call("instructionn")
    with pytest.raises(TypeError, match=r"reset\(\) takes 1 positional argument but 2 were given"):
        env.call("reset", 5)
    with pytest.raises(TypeError, match=r"call\(name=5\): pass the name"):
        env.call(5)
    for options in (["reconfigure"], 5, "x"):
        with pytest.raises(TypeError, match=r"reset\(options=.*\): pass a dict of option names to values"):
            env.reset(options=options)
    _, _, terminated, truncated, info = env.step(np.zeros((3, 2), np.float32))
    assert not truncated.any() and not terminated.any() and info["elapsed_steps"].tolist() == [2, 2, 2]
    assert env.num_restarts == restarts and env.worker_pids() == pids
    assert env.call("instruction") == ("move the point to the goal",) * 3


def test_a_simulators_own_error_in_reset_restarts_the_worker_instead_of_reaching_the_caller(caplog):
    """Only an input mistake in reset (ValueError, TypeError) is the caller's; a simulator failing to reset is the
    env's own failure, restarted as in step (a training run goes on)."""
    env = make_env(num_envs=2, num_workers=2, fail_reset_after_step=1)
    try:
        env.reset(seed=0)
        env.step(np.zeros((2, 2), np.float32))
        with caplog.at_level("WARNING"):
            obs, _ = env.reset(seed=1)  # both workers' envs fail; the restarted ones (no steps yet) reset
        assert env.num_restarts == 2 and obs["state"].shape == (2, 4)
    finally:
        env.close()


def test_a_worker_that_dies_in_a_call_is_restarted_by_the_next_step(caplog):
    env = make_env(num_envs=2, num_workers=2, crash_at_step=2)
    try:
        env.reset(seed=0)
        env.step(np.zeros((2, 2), np.float32))
        with pytest.raises(RuntimeError, match=r"call\('step'\): worker of envs \[0\] died.*the next step or reset"):
            env.call("step", np.zeros(2, np.float32))  # each env's second step exits its worker
        _, _, _, truncated, _ = env.step(np.zeros((2, 2), np.float32))
        assert truncated.all() and env.num_restarts == 2
    finally:
        env.close()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_envs": True}, "num_envs must be an int >= 1, got True"),
        ({"num_envs": 2, "num_workers": True}, "num_workers must be None .* got True"),
        ({"num_envs": 2, "max_episode_steps": True}, "max_episode_steps must be None or an int >= 1, got True"),
        ({"num_envs": 2, "step_timeout": True}, "step_timeout must be a positive number of seconds, got True"),
        ({"num_envs": 2, "step_timeout": "5"}, "step_timeout must be a positive number of seconds, got '5'"),
    ],
)
def test_a_bool_is_no_count(options, message):
    """Before: num_envs=True built one env, max_episode_steps=True gave one-step episodes."""
    from rlinf_embodied.envs.vector import validate_common_options

    with pytest.raises(ValueError, match=message):
        validate_common_options(**options)


def test_an_unknown_start_method_is_named_with_the_valid_ones():
    """Before: mp.get_context's bare `cannot find context for 'spawnx'`."""
    with pytest.raises(ValueError, match=r"^context='spawnx' is not a multiprocessing start method.*'forkserver'"):
        SubprocVectorEnv(
            [ToyReachFactory()], num_workers=1, context="spawnx", observation_space=SPACES[0], action_space=SPACES[1]
        )


def test_actions_outside_the_box_are_reported_per_env_and_warned_of_once_in_the_callers_process(env, caplog):
    """Before: the single envs clipped them with no trace in info (tests/envs/test_action_clipping.py has the rest).
    Integer actions are numbers: cast to float32, as gymnasium's Box envs take them."""
    env.reset(seed=0)
    actions = np.zeros((3, 2, 2), np.float32)  # (N, chunk, A): env 1 one element of 4 outside, env 2 two
    actions[1, 0, 1], actions[2, 1, 0], actions[2, 0, 1] = 5.0, -3.0, 1.5
    with caplog.at_level("WARNING", logger="rlinf_embodied.envs.batching"):
        info = env.step(actions)[4]
        assert info["action_clipped"].dtype == torch.float32 and info["action_clipped"].tolist() == [0.0, 0.25, 0.5]
        assert env.step(np.full((3, 2), 5, np.int64))[4]["action_clipped"].tolist() == [1.0] * 3
        assert env.step(np.zeros((3, 2), np.int64))[4]["action_clipped"].tolist() == [0.0] * 3
    (message,) = [record.getMessage() for record in caplog.records if "outside its action space" in record.getMessage()]
    assert "(max |value| 5, in action dimension(s) [0, 1] of 2 of 3 envs)" in message


@pytest.mark.parametrize("dtype", [np.complex64, bool, object, str])
def test_actions_of_no_real_number_type_are_refused_naming_the_dtype(dtype):
    """Probe 63 #13: before, complex actions lost their imaginary part (numpy's warning only), bools stepped as 0/1
    and an array of None was reported as NaN or inf from a policy."""
    from rlinf_embodied.envs.batching import as_action_chunk, check_single_action

    actions = np.zeros((2, 2), dtype=dtype) if dtype is not object else np.array([[None, None]] * 2)
    env = make_env(num_envs=2, num_workers=1)
    try:
        env.reset(seed=0)
        with pytest.raises(ValueError, match=r"actions: dtype .* is no real number type; envs take float or int"):
            env.step(actions)
        env.step(np.zeros((2, 2), dtype=np.int64))  # integers are cast to float32
    finally:
        env.close()
    with pytest.raises(ValueError, match=r"dtype .* is no real number type"):
        as_action_chunk(actions, 2, 2)
    with pytest.raises(ValueError, match=r"X's action: dtype .* is no real number type"):
        check_single_action(actions[0], (2,), "X")
    with pytest.raises(ValueError, match=r"dtype torch.bool is no real number type; envs take float or int tensors"):
        as_action_chunk(torch.zeros(2, 2, dtype=torch.bool), 2, 2)
