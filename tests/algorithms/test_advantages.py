"""Advantage estimators against slow reference loops and hand-computed cases."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from rlinf_embodied.algorithms import (
    AlgorithmConfig,
    aggregate_chunk_rewards,
    compute_advantages,
    compute_gae,
    compute_grpo_advantages,
    compute_reinforce_pp_advantages,
    credited_steps,
    dynamic_sampling_mask,
    filter_groups,
    fold_truncation_bootstrap,
    get_advantage,
)


def reference_gae(rewards, terminated, truncated, values, final_values, gamma, lam):
    """Textbook GAE, one env and one step at a time. (T, N) inputs; values (T + 1, N)."""
    num_steps, num_envs = rewards.shape
    advantages = torch.zeros(num_steps, num_envs, dtype=torch.float64)
    for env in range(num_envs):
        running = 0.0
        for t in reversed(range(num_steps)):
            if terminated[t, env]:
                next_value, running = 0.0, 0.0
            elif truncated[t, env]:
                next_value, running = float(final_values[t, env]), 0.0
            else:
                next_value = float(values[t + 1, env])
            delta = float(rewards[t, env]) + gamma * next_value - float(values[t, env])
            running = delta + gamma * lam * running
            advantages[t, env] = running
    return advantages, advantages + values[:-1]


def random_rollout(num_steps=37, num_envs=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.randn(num_steps, num_envs, generator=gen, dtype=torch.float64)
    terminated = torch.rand(num_steps, num_envs, generator=gen) < 0.08
    truncated = (torch.rand(num_steps, num_envs, generator=gen) < 0.08) & ~terminated
    values = torch.randn(num_steps + 1, num_envs, generator=gen, dtype=torch.float64)
    final_values = torch.randn(num_steps, num_envs, generator=gen, dtype=torch.float64)
    return rewards, terminated, truncated, values, final_values


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_matches_reference_with_terminations_and_truncations(seed):
    rewards, terminated, truncated, values, final_values = random_rollout(seed=seed)
    assert terminated.any() and truncated.any()
    expected_adv, expected_ret = reference_gae(rewards, terminated, truncated, values, final_values, 0.9, 0.8)
    adv, ret = compute_gae(
        rewards, terminated | truncated, values, 0.9, 0.8, truncations=truncated, final_values=final_values
    )
    torch.testing.assert_close(adv, expected_adv)
    torch.testing.assert_close(ret, expected_ret)
    # Same result when gamma * V(final obs) is folded into the rewards first (what rollouts send).
    folded = fold_truncation_bootstrap(rewards, terminated | truncated, truncated, final_values, 0.9)
    adv_folded, _ = compute_gae(folded, terminated | truncated, values, 0.9, 0.8)
    torch.testing.assert_close(adv_folded, expected_adv)


def test_gae_without_final_values_treats_truncation_as_termination():
    rewards, terminated, truncated, values, final_values = random_rollout()
    expected, _ = reference_gae(
        rewards, terminated | truncated, torch.zeros_like(truncated), values, final_values, 0.9, 0.8
    )
    adv, _ = compute_gae(rewards, terminated | truncated, values, 0.9, 0.8)
    torch.testing.assert_close(adv, expected)


def test_chunked_gae_is_the_step_level_return_at_chunk_starts():
    """With lambda = 1 and dones only at chunk ends, a chunk's return equals the step-level return
    from the chunk's first step: in-chunk rewards discounted by gamma**k, next chunk by gamma**C."""
    num_chunks, num_envs, chunk, gamma = 6, 3, 4, 0.9
    gen = torch.Generator().manual_seed(3)
    rewards = torch.randn(num_chunks, num_envs, chunk, generator=gen, dtype=torch.float64)
    dones = torch.zeros(num_chunks, num_envs, chunk, dtype=torch.bool)
    dones[2, 0, -1] = dones[4, 1, -1] = True
    chunk_values = torch.randn(num_chunks + 1, num_envs, generator=gen, dtype=torch.float64)
    _, chunk_returns = compute_gae(rewards, dones, chunk_values, gamma, 1.0)

    step_values = torch.randn(num_chunks * chunk + 1, num_envs, generator=gen, dtype=torch.float64)
    step_values[::chunk] = chunk_values  # only the bootstrap value matters with lambda = 1
    step_rewards = rewards.permute(0, 2, 1).reshape(-1, num_envs)
    step_dones = dones.permute(0, 2, 1).reshape(-1, num_envs)
    _, step_returns = compute_gae(step_rewards, step_dones, step_values, gamma, 1.0)
    torch.testing.assert_close(chunk_returns, step_returns[::chunk])


def test_chunk_aggregation_discounts_and_stops_at_the_last_done():
    rewards = torch.tensor([[[1.0, 2.0, 4.0, 8.0]], [[1.0, 1.0, 1.0, 1.0]]])  # (T=2, N=1, C=4)
    dones = torch.tensor([[[False, True, False, False]], [[False, False, False, False]]])
    chunk_rewards, chunk_dones, discount = aggregate_chunk_rewards(rewards, dones, gamma=0.5)
    torch.testing.assert_close(chunk_rewards, torch.tensor([[1.0 + 0.5 * 2.0], [1 + 0.5 + 0.25 + 0.125]]))
    assert chunk_dones.tolist() == [[True], [False]]
    assert discount == 0.5**4
    assert credited_steps(dones)[0, 0].tolist() == [True, True, False, False]


def test_fold_truncation_bootstrap_lands_on_the_chunks_done_step():
    rewards = torch.zeros(1, 2, 3)
    dones = torch.tensor([[[False, True, False], [False, False, False]]])
    folded = fold_truncation_bootstrap(rewards, dones, dones, torch.tensor([[10.0, 10.0]]), gamma=0.5)
    assert folded[0, 0].tolist() == [0.0, 5.0, 0.0]
    assert folded[0, 1].tolist() == [0.0, 0.0, 0.0]  # not truncated: nothing added


# ---- GRPO ----------------------------------------------------------------------------------------
def grpo_case():
    """4 envs, groups of 2, T = 4. Outcomes: env0 finishes two episodes (1 then 0), env1 one (2);
    env2 one (1) then an unfinished one; env3 one (0)."""
    rewards = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0],
            [1.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 5.0, 0.0],
            [0.0, 2.0, 5.0, 0.0],
        ]
    )
    dones = torch.tensor(
        [
            [False, False, False, False],
            [True, False, True, False],
            [False, False, False, False],
            [True, True, False, True],
        ]
    )
    return rewards, dones


def test_grpo_normalises_episode_outcomes_within_groups_by_hand():
    rewards, dones = grpo_case()
    adv, ret = compute_grpo_advantages(rewards, dones, group_size=2, eps=0.0)
    # group 0 outcomes [1, 0, 2]: mean 1, unbiased std 1. group 1 outcomes [1, 0]: mean 0.5, std sqrt(0.5).
    s = math.sqrt(0.5)
    expected = torch.tensor(
        [
            [0.0, 1.0, 0.5 / s, -0.5 / s],
            [0.0, 1.0, 0.5 / s, -0.5 / s],
            [-1.0, 1.0, 0.0, -0.5 / s],
            [-1.0, 1.0, 0.0, -0.5 / s],
        ]
    )
    torch.testing.assert_close(adv, expected)
    assert ret[:, 2].tolist() == [1.0, 1.0, 0.0, 0.0]  # unfinished episode: no outcome
    assert ret[:, 0].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_grpo_groups_by_env_id_not_position():
    rewards, dones = grpo_case()
    perm = torch.tensor([2, 0, 3, 1])
    env_ids = torch.tensor([0, 1, 2, 3])[perm] + 8  # global ids of another shard: groups 4 and 5
    adv, _ = compute_grpo_advantages(rewards[:, perm], dones[:, perm], group_size=2, eps=0.0, env_ids=env_ids)
    expected, _ = compute_grpo_advantages(rewards, dones, group_size=2, eps=0.0)
    torch.testing.assert_close(adv, expected[:, perm])


def test_grpo_accepts_chunked_rewards_and_all_equal_groups_get_zero():
    rewards = torch.zeros(2, 4, 3)
    rewards[1, 0, 2] = 1.0  # env 0 succeeds; env 1 fails; envs 2, 3 both fail
    dones = torch.zeros(2, 4, 3, dtype=torch.bool)
    dones[1, :, 2] = True
    adv, _ = compute_grpo_advantages(rewards, dones, group_size=2, eps=0.0)
    s = math.sqrt(0.5)
    torch.testing.assert_close(adv, torch.tensor([[0.5 / s, -0.5 / s, 0.0, 0.0]] * 2))


def test_grpo_through_the_registry_and_a_trajectory():
    rewards, dones = grpo_case()
    trajectory = SimpleNamespace(rewards=rewards, dones=dones, values=torch.zeros(5, 4), env_ids=None)
    cfg = AlgorithmConfig(adv_type="grpo", group_size=2)
    adv, _ = compute_advantages(trajectory, cfg)
    torch.testing.assert_close(adv, compute_grpo_advantages(rewards, dones, 2, cfg.grpo_eps)[0])
    assert get_advantage("grpo") is not get_advantage("gae")


def test_filter_groups_drops_all_success_and_all_fail_groups():
    keep, indices = filter_groups(torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0]), group_size=2)
    assert keep.tolist() == [False, False, True, True, False, False]
    assert indices.tolist() == [2, 3]


def test_dynamic_sampling_mask_on_a_rollout():
    rewards, dones = grpo_case()
    keep, indices = dynamic_sampling_mask(rewards, dones, group_size=2)
    assert keep.all() and indices.tolist() == [0, 1, 2, 3]
    rewards[1, 0] = 2.0  # group 0 outcomes now [2, 0, 2]: still informative; make group 1 uniform:
    rewards[1, 2] = 0.0
    keep, indices = dynamic_sampling_mask(rewards, dones, group_size=2)
    assert keep.tolist() == [True, True, False, False] and indices.tolist() == [0, 1]


# ---- Reinforce++ ---------------------------------------------------------------------------------
def test_reinforce_pp_returns_and_global_normalisation():
    rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    dones = torch.tensor([[False, False], [True, False], [False, False]])
    adv, returns = compute_reinforce_pp_advantages(rewards, dones, gamma=0.5)
    expected_returns = torch.tensor([[1.0, 0.5 + 0.25], [0.0, 1.5], [1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(returns, expected_returns)
    flat = expected_returns.flatten()
    torch.testing.assert_close(adv, (expected_returns - flat.mean()) / (flat.std() + 1e-8))
    assert abs(float(adv.mean())) < 1e-12 and abs(float(adv.std()) - 1.0) < 1e-6


def _probe_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """8 envs, 3 steps, each episode ending at the last step: envs 0-3 succeed (reward 1), envs 4-7 fail (probe 59
    #9), with a little noise so every return differs."""
    rewards = torch.zeros(3, 8, dtype=torch.float64)
    rewards[-1, :4] = 1.0
    rewards += 0.01 * torch.arange(24, dtype=torch.float64).reshape(3, 8)
    dones = torch.zeros(3, 8, dtype=torch.bool)
    dones[-1] = True
    return rewards, dones


def _summed_across_threads(num_ranks: int):
    """A sum over `num_ranks` threads, each a simulated rank: every one waits for the others' tensors."""
    import threading

    barrier, posted = threading.Barrier(num_ranks), {}

    def sum_stats(stats: torch.Tensor) -> torch.Tensor:
        posted[threading.get_ident()] = stats.clone()
        barrier.wait()
        total = sum(posted.values())
        barrier.wait()  # every rank has read the sums before the next call posts
        return total

    return sum_stats


def _advantages_per_rank(rewards, dones, num_ranks: int, sum_stats=None) -> torch.Tensor:
    """Reinforce++ advantages computed by `num_ranks` simulated ranks on contiguous env blocks (split_envs), joined."""
    import threading

    blocks = torch.tensor_split(torch.arange(rewards.shape[1]), num_ranks)
    results: dict[int, torch.Tensor] = {}

    def rank(index: int) -> None:
        envs = blocks[index]
        kwargs = {} if sum_stats is None else {"sum_stats": sum_stats}
        results[index] = compute_reinforce_pp_advantages(rewards[:, envs], dones[:, envs], 0.9, **kwargs)[0]

    threads = [threading.Thread(target=rank, args=(index,)) for index in range(num_ranks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return torch.cat([results[index] for index in range(num_ranks)], dim=1)


@pytest.mark.parametrize("num_ranks", [2, 4])
def test_reinforce_pp_normalises_over_every_ranks_envs_not_per_rank(num_ranks):
    """Probe 59 #9: each actor rank computes advantages on its own envs; the documented global normalisation needs
    the whole batch's mean and std. Per rank, the rank holding only failures normalised them to ~0 among themselves."""
    rewards, dones = _probe_batch()
    whole, _ = compute_reinforce_pp_advantages(rewards, dones, 0.9)
    joined = _advantages_per_rank(rewards, dones, num_ranks, _summed_across_threads(num_ranks))
    torch.testing.assert_close(joined, whole)
    assert (joined[-1, 4:] < 0).all() and (joined[-1, :4] > 0).all()  # failures pushed down wherever they are
    alone = _advantages_per_rank(rewards, dones, num_ranks, sum_stats=lambda stats: stats)  # the old per-rank way
    assert not torch.allclose(alone, whole)


def _gloo_rank(rank: int, world_size: int, store_path: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=world_size)
    try:
        rewards, dones = _probe_batch()
        envs = torch.tensor_split(torch.arange(rewards.shape[1]), world_size)[rank]
        cfg = AlgorithmConfig(adv_type="reinforce_pp", gamma=0.9)
        trajectory = SimpleNamespace(rewards=rewards[:, envs], dones=dones[:, envs], values=None, env_ids=envs)
        torch.save(compute_advantages(trajectory, cfg)[0], f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_reinforce_pp_all_reduces_its_statistics_over_a_real_process_group(tmp_path):
    """The default reduction: two ranks in a gloo process group, as two actor ranks on CPU, give the advantages
    of the whole batch (compute_advantages, as ActorWorker._train_on calls it)."""
    import torch.multiprocessing as mp

    mp.spawn(_gloo_rank, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    rewards, dones = _probe_batch()
    whole, _ = compute_reinforce_pp_advantages(rewards, dones, 0.9)
    joined = torch.cat([torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)], dim=1)
    torch.testing.assert_close(joined, whole)
