"""ManiSkill in one batched simulation (gpu_physics.py).

GPU physics needs CUDA and SAPIEN's PhysX GPU library, so on CPU machines the same code path runs
on physx_cpu with one env, and the GPU test is skipped.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlinf_embodied  # noqa: F401  (registers the ids)
from rlinf_embodied.envs.maniskill import gpu_physics
from rlinf_embodied.envs.maniskill.gpu_physics import make_batched_vector_env, require_physx_gpu

ENV_ID = "rlinf/ManiSkill-PickCube"


def physx_gpu_ready() -> bool:
    try:
        require_physx_gpu()
        return True
    except RuntimeError:
        return False


def test_batched_maniskill_matches_the_single_env_on_cpu_physics():
    batched = make_batched_vector_env("PickCube", 1, sim_backend="physx_cpu", max_episode_steps=5)
    single = gym.make(ENV_ID).unwrapped
    try:
        obs, _ = batched.reset(seed=11)
        single_obs, _ = single.reset(seed=11)
        assert obs["state"].dtype == torch.float32 and obs["state"].shape == (1,) + single_obs["state"].shape
        np.testing.assert_allclose(obs["state"][0].numpy(), single_obs["state"], rtol=1e-6, atol=1e-6)
        assert batched.single_observation_space["state"].shape == single.observation_space["state"].shape
        actions = np.random.default_rng(0).uniform(-1, 1, (1, 8, batched.act_dim)).astype(np.float32)
        obs, rewards, terminated, truncated, info = batched.step(actions)
        expected = [single.step(actions[0, row])[1] for row in range(5)]
        np.testing.assert_allclose(rewards[0, :5].numpy(), expected, rtol=1e-5, atol=1e-6)
        assert truncated[0, 4] and not truncated[0, 5:].any() and (rewards[0, 5:] == 0).all()
        assert info["episode"]["length"][0] == 5 and info["elapsed_steps"][0] == 0
        assert not torch.equal(info["final_obs"]["state"], obs["state"])  # the next episode started
        assert obs["instruction"] == [batched.instruction] and "cube" in batched.instruction
    finally:
        batched.close()
        single.close()


def test_observations_are_copies_of_the_simulators_tensors():
    env = make_batched_vector_env("PickCube", 1, sim_backend="physx_cpu")
    try:
        obs, _ = env.reset(seed=0)
        raw = env.sim._last_obs  # ManiSkill keeps (and may update in place) its latest obs
        assert torch.equal(obs["state"], raw) and obs["state"].data_ptr() != raw.data_ptr()
    finally:
        env.close()


def test_cpu_physics_holds_one_env_per_batch():
    with pytest.raises(ValueError, match=r"num_envs=2.*physx_cuda"):
        make_batched_vector_env("PickCube", 2, sim_backend="physx_cpu")


@pytest.mark.parametrize("option", ["reward_delta", "binarize_gripper"])
def test_the_single_envs_options_are_refused_by_the_batched_env(option):
    """Before: passed on to ManiSkill's gym.make, whose env class takes no such keyword."""
    with pytest.raises(ValueError, match=rf"{option}=True is implemented for make_vector_env's CPU-physics envs"):
        make_batched_vector_env("PickCube", 1, sim_backend="physx_cpu", **{option: True})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_physx_cuda_without_cuda_names_the_cpu_backend():
    with pytest.raises(RuntimeError, match=r"physx_cuda.*CUDA GPU.*physx_cpu"):
        gym.make_vec(ENV_ID, num_envs=4, vectorization_mode="vector_entry_point", sim_backend="physx_cuda")


def test_missing_physx_gpu_library_is_an_error_not_a_download(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("HOME", str(tmp_path))
    library, url = gpu_physics.physx_gpu_library()
    assert library.parent.parent == tmp_path / ".sapien" / "physx" and url.endswith(".zip")
    with pytest.raises(RuntimeError) as error:
        require_physx_gpu()
    assert str(library) in str(error.value) and url in str(error.value) and "physx_cpu" in str(error.value)
    assert not library.parent.exists()  # nothing was downloaded or created


def test_subprocess_only_options_are_rejected_for_physx_cuda():
    with pytest.raises(ValueError, match=r"num_workers=2.*physx_cpu"):
        gym.make_vec(
            ENV_ID, num_envs=4, vectorization_mode="vector_entry_point", sim_backend="physx_cuda", num_workers=2
        )
    with pytest.raises(ValueError, match=r"single-env entry point runs CPU physics"):
        gym.make(ENV_ID, sim_backend="physx_cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not physx_gpu_ready(), reason="needs SAPIEN's PhysX GPU library (see gpu_physics.py)")
def test_physx_cuda_batched_envs_on_the_gpu():
    env = gym.make_vec(
        ENV_ID, num_envs=16, vectorization_mode="vector_entry_point", sim_backend="physx_cuda", max_episode_steps=10
    )
    try:
        obs, _ = env.reset(seed=0)
        assert obs["state"].is_cuda and obs["state"].shape[0] == 16
        assert len({tuple(row.tolist()) for row in obs["state"].cpu()}) > 1  # envs differ
        obs, rewards, terminated, truncated, info = env.step(torch.zeros(16, 12, env.act_dim, device="cuda"))
        assert rewards.is_cuda and truncated[:, 9].all() and (rewards[:, 10:] == 0).all()
        assert info["_final_obs"].all() and (info["elapsed_steps"] == 0).all()
    finally:
        env.close()
