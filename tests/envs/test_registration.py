"""envs/registration.py: what every backend's gymnasium ids share."""

import gymnasium as gym
import pytest
import torch

import rlinf_embodied  # noqa: F401  (registers the ids)
from rlinf_embodied.envs.registration import check_env_id


@pytest.mark.parametrize("env_id", ["rlinf/ManiSkill-PickCube", "rlinf/LIBERO-10"])
@pytest.mark.parametrize("option", [{"num_envs": 2}, {"num_workers": 2}, {"ignore_terminations": True}])
def test_gym_make_names_make_vec_for_batched_env_options(env_id, option):
    """Before: gym.make("rlinf/ManiSkill-PickCube", num_envs=2) failed with "dict() got multiple values for keyword
    argument" (LIBERO: "unexpected keyword argument"). No simulator is imported before the error."""
    with pytest.raises(
        TypeError, match=rf"\['{next(iter(option))}'\] configure batched envs.*gym.make_vec\('{env_id}'"
    ):
        gym.make(env_id, **option)


def test_the_libero_suites_are_the_task_suites():
    from rlinf_embodied.envs.libero.suites import LIBERO_SUITES
    from rlinf_embodied.envs.registration import TASK_SUITES

    assert TASK_SUITES == set(LIBERO_SUITES)


@pytest.mark.parametrize(
    "env_id, message",
    [
        (
            "rlinf/ManiSkill-PickCub",
            r"did you mean 'rlinf/ManiSkill-PickCube'\? registered: \[.*'rlinf/LIBERO-Spatial'",
        ),
        ("rlinf/Nope", r"env.id='rlinf/Nope' is not a registered env; registered: \[.*'rlinf/ManiSkill-PickCube'"),
        # before: accepted, then CartPole's vector env failed on obs_mode in every env worker after Ray started
        ("CartPole-v1", r"env.id='CartPole-v1' is a gymnasium env but not one of ours: .*register_env"),
    ],
)
def test_an_unknown_env_id_lists_the_registered_ones(env_id, message):
    """Before: gymnasium's NameNotFound from inside an env worker, naming no valid id."""
    with pytest.raises(ValueError, match=message):
        check_env_id(env_id)
    check_env_id("rlinf/ManiSkill-PickCube")  # a registered id passes


def test_the_train_driver_checks_the_env_id_before_ray_starts():
    from rlinf_embodied.config import compose_config
    from rlinf_embodied.train import check_train_config

    with pytest.raises(ValueError, match="env.id='rlinf/Nope'"):
        check_train_config(compose_config("config", ["env.id=rlinf/Nope"]))


@pytest.mark.parametrize(
    "entry, override, message",
    [
        ("config", "env.obs_mode=depth", r"obs_mode='depth' is not supported; valid obs modes: \['state', 'rgb'\]"),
        ("config", "env.kwargs.reward_mode=bogus", r"reward_mode='bogus' is not supported; valid reward modes"),
        ("config", "env.kwargs.sim_backend=gpu", r"sim_backend='gpu' is not supported; valid sim backends"),
        ("eval", "env.kwargs.reward_mode=bogus", r"reward_mode='bogus' is not supported"),
        ("collect", "env.kwargs.reward_mode=bogus", r"reward_mode='bogus' is not supported"),
        ("config", "env=libero env.obs_mode=depth", r"obs_mode='depth' is not supported by LIBERO"),
        ("eval", "env=libero env.kwargs.camera_size=4", r"camera_size=4 must be an int >= 8"),
        ("config", "+env.kwargs.num_workers=0", r"num_workers must be None \(auto\) or an int >= 1, got 0"),
        ("config", "env=libero +env.kwargs.step_timeout=-1", r"step_timeout must be a positive number of seconds"),
        ("config", "env.kwargs.sim_backend=physx_cuda +env.kwargs.num_workers=2", r"num_workers=2 .* one process"),
        # a typo'd option: before, a TypeError in every env worker (ManiSkill's BaseEnv; LiberoEnv in each subprocess)
        ("config", "+env.kwargs.reward_mod=sparse", r"env.kwargs \['reward_mod'\]: not an option of .*'reward_mode'"),
        ("eval", "env=libero +env.kwargs.settle_steps=5", r"env.kwargs \['settle_steps'\]: .*'num_settle_steps'"),
    ],
)
def test_bad_env_options_are_named_before_any_env_worker_starts(entry, override, message):
    """Before: accepted by train's checks; every env worker then failed in init_worker with this message, after Ray
    and the other workers had started."""
    from rlinf_embodied.config import compose_config
    from rlinf_embodied.envs.registration import check_env

    cfg = compose_config(entry, override.split())
    with pytest.raises(ValueError, match=message):
        check_env(cfg.env)
    check_env(compose_config(entry, ["env.kwargs.reward_mode=sparse", "env.obs_mode=rgb"]).env)  # valid ones pass
    check_env(compose_config(entry, ["env=libero", "env.kwargs.camera_size=128"]).env)
    # options of the task's own ManiSkill class and of LIBERO's env pass
    check_env(compose_config(entry, ["env=maniskill_pickcube", "+env.kwargs.robot_init_qpos_noise=0.01"]).env)
    check_env(compose_config(entry, ["env=libero", "+env.kwargs.num_settle_steps=5"]).env)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_gpu_physics_on_a_machine_without_cuda_is_refused_before_any_env_worker_starts():
    """Probe 63 #11: before, train's checks passed and every env worker failed once Ray had started."""
    from rlinf_embodied.config import compose_config
    from rlinf_embodied.envs.registration import check_env
    from rlinf_embodied.train import check_train_config

    cfg = compose_config("config", ["env.kwargs.sim_backend=physx_cuda"])
    with pytest.raises(ValueError, match=r"env.kwargs.sim_backend=physx_cuda: .*needs a CUDA GPU.*physx_cpu"):
        check_train_config(cfg)
    check_env(cfg.env, local=False)  # a cluster elsewhere (cluster.address): its env workers may have GPUs


def test_the_train_driver_checks_the_env_options_before_ray_starts():
    from rlinf_embodied.config import compose_config
    from rlinf_embodied.train import check_train_config

    with pytest.raises(ValueError, match="reward_mode='bogus'"):
        check_train_config(compose_config("config", ["env.kwargs.reward_mode=bogus"]))


def _toy_vector_env(num_envs: int = 1, obs_mode: str = "state", sim_speed: int = 3, **kwargs):
    raise AssertionError("an options check builds no env")


def test_an_options_check_sees_the_entry_points_defaults_and_the_specs_kwargs(monkeypatch):
    """The defaults live in one place (the vector entry point); the check gets every option the env will see."""
    import gymnasium as gym

    from rlinf_embodied.envs import registration

    monkeypatch.setitem(registration.OPTION_CHECKS, "rlinf-test/OptionsToy", f"{__name__}:_record_options")
    registration.register_env(
        "rlinf-test/OptionsToy",
        entry_point=f"{__name__}:_toy_vector_env",
        vector_entry_point=f"{__name__}:_toy_vector_env",
        task="Toy",
    )
    try:
        registration.check_env_options("rlinf-test/OptionsToy", "rgb", {"sim_speed": 5})
        assert _SEEN == {"num_envs": 1, "obs_mode": "rgb", "sim_speed": 5, "task": "Toy"}
        registration.check_env_options("rlinf-test/OptionsToy", "state", {})
        assert _SEEN["sim_speed"] == 3  # the entry point's default
    finally:
        del gym.registry["rlinf-test/OptionsToy"]


_SEEN: dict = {}


def _record_options(**options):
    _SEEN.clear()
    _SEEN.update(options)


@pytest.mark.parametrize("vector", [False, True])
def test_gym_make_names_an_unknown_keyword_with_the_valid_ones(vector):
    """Before: ManiSkill's TypeError, nested in gymnasium's, naming the keyword but no valid one."""
    with pytest.raises(
        ValueError, match=r"\['bogus_kw'\]: not an option of rlinf/ManiSkill-PickCube .*valid: .*'control_mode'"
    ):
        if vector:
            gym.make_vec("rlinf/ManiSkill-PickCube", num_envs=2, vectorization_mode="vector_entry_point", bogus_kw=1)
        else:
            gym.make("rlinf/ManiSkill-PickCube", bogus_kw=1)


@pytest.mark.parametrize(
    "env_id, kwargs, message",
    [
        (
            "rlinf/ManiSkill-PickCube",
            {"task": "StackCube"},
            r"env.kwargs.task='StackCube' would build a different task than env.id 'rlinf/ManiSkill-PickCube' "
            r"\(task='PickCube'\); use env.id=rlinf/ManiSkill-StackCube",
        ),
        (
            "rlinf/LIBERO-Spatial",
            {"suite": "rlinf/LIBERO-10"},
            r"env.kwargs.suite='rlinf/LIBERO-10' would build a different suite than env.id 'rlinf/LIBERO-Spatial' "
            r".*; use env.id=rlinf/LIBERO-10",
        ),
        (
            "rlinf/ManiSkill-PickCube",
            {"task": "Juggle"},
            r"task='Juggle' .*; no registered id has task='Juggle'; drop it, or pick an id of \[.*'rlinf/ManiSkill-Pi",
        ),
    ],
)
def test_env_kwargs_may_not_change_the_task_of_the_id(env_id, kwargs, message):
    """Before: env.kwargs.task=StackCube with env.id rlinf/ManiSkill-PickCube trained StackCube, recorded as PickCube
    (LIBERO: env.kwargs.suite likewise)."""
    from rlinf_embodied.config import EnvConfig
    from rlinf_embodied.envs.registration import check_env

    obs_mode = "rgb" if "LIBERO" in env_id else "state"
    with pytest.raises(ValueError, match=message):
        check_env(EnvConfig(id=env_id, obs_mode=obs_mode, kwargs=kwargs))
    same = {key: gym.spec(env_id).kwargs[key] for key in kwargs}  # the id's own value changes nothing: it passes
    check_env(EnvConfig(id=env_id, obs_mode=obs_mode, kwargs=same))


@pytest.mark.parametrize(
    "env_id, kwargs, other_id",
    [
        ("rlinf/ManiSkill-PickCube", {"task": "PegInsertionSide"}, "rlinf/ManiSkill-PegInsertionSide"),
        ("rlinf/LIBERO-Spatial", {"suite": "rlinf/LIBERO-10"}, "rlinf/LIBERO-10"),
    ],
)
@pytest.mark.parametrize("vector", [False, True])
def test_gym_make_may_not_change_the_task_of_the_id(env_id, kwargs, other_id, vector):
    """Before: gym.make_vec("rlinf/ManiSkill-PickCube", task="PegInsertionSide") built the peg task with PickCube's
    time limit (50, not 100); gym.make_vec("rlinf/LIBERO-Spatial", suite="rlinf/LIBERO-10") a LIBERO-10 task."""
    key = next(iter(kwargs))
    message = rf"{key}='{kwargs[key]}' would build a different {key} than the id '{env_id}' .*make '{other_id}'"
    with pytest.raises(ValueError, match=message):
        if vector:
            gym.make_vec(env_id, num_envs=1, vectorization_mode="vector_entry_point", **kwargs)
        else:
            gym.make(env_id, **kwargs)


@pytest.mark.parametrize("key", ["disable_env_checker", "id", "vectorization_mode"])
def test_env_kwargs_may_not_hold_gym_makes_own_parameters(key):
    """Before: env.kwargs.disable_env_checker (or id) passed the options check, then every env worker failed with
    "make() got multiple values for keyword argument"; the valid options listed both."""
    from rlinf_embodied.config import EnvConfig
    from rlinf_embodied.envs.registration import check_env

    for env_id, obs_mode in (("rlinf/ManiSkill-PickCube", "state"), ("rlinf/LIBERO-Goal", "rgb")):
        with pytest.raises(ValueError, match=rf"env.kwargs \['{key}'\]: parameters of gymnasium's make / make_vec"):
            check_env(EnvConfig(id=env_id, obs_mode=obs_mode, kwargs={key: False}))


def test_gym_make_vec_refuses_disable_env_checker_and_lists_no_gym_parameter():
    with pytest.raises(ValueError, match=r"\['disable_env_checker'\]: not an option") as error:
        gym.make_vec(
            "rlinf/ManiSkill-PickCube",
            num_envs=1,
            vectorization_mode="vector_entry_point",
            **{"disable_env_checker": False},
        )
    valid = str(error.value).split("valid: ")[1]
    assert "'control_mode'" in valid and "'id'" not in valid and "'disable_env_checker'" not in valid
    assert "'task'" not in valid and "'render_mode'" not in valid
