"""envs/registration.py: what every backend's gymnasium ids share."""

import gymnasium as gym
import pytest

import rlinf_embodied  # noqa: F401  (registers the ids)


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
