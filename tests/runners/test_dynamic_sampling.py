"""DAPO dynamic sampling and the credited_steps loss mask, in the actor and through the runner."""

from __future__ import annotations

import pytest
import torch

from rlinf_embodied.config import TrainConfig
from rlinf_embodied.workers.actor_worker import (
    collect_informative_groups,
    count_groups,
    first_groups,
    flatten_time_and_envs,
)
from rlinf_embodied.workers.messages import Trajectory


def trajectory(outcomes: list[float], steps: int = 3, chunk: int = 1) -> Trajectory:
    """One episode per env ending at the last step with reward `outcome`."""
    n = len(outcomes)
    rewards = torch.zeros(steps, n, chunk)
    rewards[-1, :, 0] = torch.tensor(outcomes)
    dones = torch.zeros(steps, n, chunk, dtype=torch.bool)
    dones[-1, :, 0] = True
    return Trajectory(
        obs={"state": torch.zeros(steps, n, 3)},
        actions=torch.zeros(steps, n, chunk, 2),
        log_probs=torch.zeros(steps, n, chunk, 2),
        values=torch.zeros(steps + 1, n),
        rewards=rewards,
        dones=dones,
        env_ids=torch.arange(n),
    )


def dapo_config(num_envs: int, group_size: int) -> TrainConfig:
    cfg = TrainConfig()
    cfg.env.num_envs = num_envs
    cfg.algorithm.adv_type, cfg.algorithm.loss_type, cfg.algorithm.group_size = "grpo", "dapo", group_size
    cfg.algorithm.dynamic_sampling = True
    cfg.algorithm.vf_coef = 0.0  # GRPO reads no critic
    cfg.algorithm.validate()
    return cfg


def test_groups_whose_outcomes_are_all_equal_are_dropped():
    cfg = dapo_config(num_envs=6, group_size=2)
    split = collect_informative_groups(trajectory([1, 0, 1, 1, 0, 0]), cfg, sampling_round=0)
    assert split["kept"].env_ids.tolist() == [0, 1]
    assert (split["groups"], split["kept_groups"], split["dropped_groups"]) == (3, 1, 2)
    # a later round's groups never merge with earlier ones: their env ids are offset by the round
    later = collect_informative_groups(trajectory([0, 1, 1, 1, 0, 1]), cfg, sampling_round=1)
    assert later["kept"].env_ids.tolist() == [6, 7, 10, 11]
    both = Trajectory.concat_envs([split["kept"], later["kept"]])
    assert count_groups(both, 2) == 3
    assert first_groups(both, 2, 2).env_ids.tolist() == [0, 1, 6, 7]  # one rollout's worth is 3 groups


def test_actions_after_the_episode_ended_inside_a_chunk_are_masked():
    traj = trajectory([1.0, 0.0], steps=2, chunk=3)
    traj.dones[0, 0, 1] = True  # env 0 ends at step 1 of its first chunk
    samples = flatten_time_and_envs(traj, torch.zeros(2, 2), torch.zeros(2, 2))
    assert samples["loss_mask"].shape == (4, 3)
    assert samples["loss_mask"][0].tolist() == [True, True, False]
    assert samples["loss_mask"][1].tolist() == [True, True, True]


@pytest.mark.slow
def test_runner_samples_until_the_batch_is_full_or_the_bound(ray_session, tmp_path):
    """One run of 2 iterations of 4 steps; the 6-step episodes carry on from one iteration to the next
    (runner.reset_each_iteration=false). Iteration 0: no episode ends, so no group has outcomes to compare:
    every one is dropped, new seeds are sampled up to the bound (2 rounds), then no update. Iteration 1: the
    episodes of its first round end after 2 steps, with dense outcomes that differ within a group: that one
    round fills the batch."""
    from rlinf_embodied.runners.embodied_runner import EmbodiedRunner
    from rlinf_embodied.scheduler import Cluster

    cfg = dapo_config(num_envs=4, group_size=2)
    cfg.env.max_episode_steps = 6
    cfg.env.ignore_terminations = True
    cfg.env.kwargs = {"control_mode": "pd_joint_delta_pos", "reward_mode": "normalized_dense"}
    cfg.policy.size = "tiny"
    cfg.runner.rollout_steps, cfg.runner.reset_each_iteration = 4, False
    cfg.runner.max_iterations = 2
    cfg.runner.progress = False
    cfg.algorithm.num_minibatches, cfg.algorithm.max_sampling_rounds = 2, 2
    cluster = Cluster(num_nodes=1, num_gpus_per_node=1, simulate_gpus=True)  # joins the session's Ray
    runner = EmbodiedRunner(cfg, cluster, str(tmp_path))
    try:
        uninformative, informative = runner.run()
    finally:
        runner.shutdown()
    # sampled up to the bound (2 rounds of new seeds), then no update
    assert uninformative["rollout/sampling_rounds"] == 2 and uninformative["rollout/kept_groups"] == 0
    assert uninformative["rollout/dropped_groups"] == 4 and uninformative["train/optimizer_steps"] == 0
    assert uninformative["time/env_steps"] == 2 * 4 * 4
    # dense rewards differ between the envs of a group: one round fills the batch
    assert informative["rollout/sampling_rounds"] == 1 and informative["rollout/kept_groups"] == 2
    assert informative["rollout/dropped_groups"] == 0 and informative["train/optimizer_steps"] > 0
    assert informative["time/env_steps"] == 2 * 4 * 4 + 4 * 4
    # GRPO reads no critic: the value head's lr is not logged as if it trained
    assert "train/lr" in informative and "train/lr_value" not in informative
