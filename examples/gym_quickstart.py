"""The env and policy interfaces in one page: a batched ManiSkill env stepped by an MLP policy.

python examples/gym_quickstart.py
"""

import gymnasium as gym
import torch

import rlinf_embodied  # noqa: F401  (registers the gymnasium ids)
from rlinf_embodied.envs.metrics import EpisodeMetrics
from rlinf_embodied.policies import make_policy


def main(num_envs: int = 4, num_steps: int = 60) -> None:
    venv = gym.make_vec(
        "rlinf/ManiSkill-PickCube", num_envs=num_envs, vectorization_mode="vector_entry_point", max_episode_steps=25
    )
    obs, _ = venv.reset(seed=0)
    state_dim = obs["state"].shape[-1]
    action_dim = venv.single_action_space.shape[-1]
    policy = make_policy("mlp", size="default", action_dim=action_dim, state_dim=state_dim)
    metrics = EpisodeMetrics()
    with torch.no_grad():
        for _ in range(num_steps):
            actions = policy.act(obs).actions  # (num_envs, chunk, action_dim)
            obs, reward, terminated, truncated, info = venv.step(actions)  # reward: (num_envs, chunk)
            metrics.update(info)
    venv.close()
    print(f"{obs['instruction'][0]!r}: {metrics.summary()}")


if __name__ == "__main__":  # env workers start with forkserver, which re-imports this script
    main()
