"""What the placement decides, checked by the train driver before Ray starts: env.num_envs must split over env
workers x pipeline stages and feed every actor rank (before: an env or rollout worker's error after every worker
started), and runner.offload=false needs an actor that shares GPUs (before: accepted, and it changed nothing)."""

from __future__ import annotations

import pytest

from rlinf_embodied.config import compose_config
from rlinf_embodied.train import check_train_config

LIBERO_PI0 = [
    "env=libero",
    "policy=pi0",
    "policy.size=tiny",
    "policy.require_checkpoint=false",
    "env.kwargs.camera_size=32",
]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["runner.pipeline_stage_num=3", "env.num_envs=8"],
            r"env.num_envs=8 must split evenly over 1 env worker\(s\) .* x runner.pipeline_stage_num=3; use a "
            r"multiple of 3, e.g. 9",
        ),
        (
            ["cluster=hybrid_4gpu", "env.num_envs=6", "runner.pipeline_stage_num=2"],
            r"over 2 env worker\(s\) .* x runner.pipeline_stage_num=2; use a multiple of 4, e.g. 8",
        ),
        (
            ["algorithm=grpo", "env.num_envs=8", "cluster.num_gpus_per_node=2"],
            r"env.num_envs=8: 1 env group\(s\) of 8 cannot feed 2 actor ranks .* use env.num_envs >= 16",
        ),
        (
            ["cluster=hybrid_4gpu", "env.num_envs=2"],
            r"env.num_envs=2: 2 env\(s\) cannot feed 4 actor ranks .* use env.num_envs >= 4",
        ),
        (  # before: the actor's error after the first rollout
            ["env.num_envs=8", "runner.rollout_steps=50", "algorithm.num_minibatches=401"],
            r"algorithm.num_minibatches=401 x 1 actor rank\(s\) > env.num_envs x runner.rollout_steps = 8 x 50 = "
            r"400 samples .* <= 200",
        ),
        (  # before: accepted; a one-sample minibatch's normalised advantage is 0, so the policy never trained
            ["env.num_envs=8", "runner.rollout_steps=50", "algorithm.num_minibatches=400"],
            r"num_minibatches=400 splits 400 samples per actor rank into minibatches of 1, .* every advantage would "
            r"be 0 .* <= 200, or normalize_advantages=false",
        ),
        (
            [
                "cluster.num_gpus_per_node=2",
                "env.num_envs=2",
                "runner.rollout_steps=50",
                "algorithm.num_minibatches=51",
            ],
            r"num_minibatches=51 x 2 actor rank\(s\) > .* = 100 samples .* <= 25",
        ),
        (  # a micro-batch as large as a minibatch would split nothing
            [
                "env.num_envs=8",
                "runner.rollout_steps=50",
                "algorithm.num_minibatches=3",
                "algorithm.micro_batch_size=134",
            ],
            r"algorithm.micro_batch_size=134 is not below the largest minibatch, 134 samples .* set it below 134, or null",
        ),
        (  # probe 59 #8: dynamic sampling skipped these checks; GRPO refused this micro_batch_size, DAPO ran unsplit
            ["algorithm=dapo", "env.num_envs=8", "runner.rollout_steps=50", "algorithm.micro_batch_size=1000"],
            r"micro_batch_size=1000 is not below the largest minibatch, 100 samples \(.* = 400 \(algorithm."
            r"dynamic_sampling trains on at most one rollout's worth\) .* set it below 100, or null",
        ),
        (  # probe 59 #8: before, the actor's error after Ray, the envs and the first rollout
            ["algorithm=dapo", "env.num_envs=8", "runner.rollout_steps=50", "algorithm.num_minibatches=100000"],
            r"num_minibatches=100000 x 1 actor rank\(s\) > .* = 400 samples per iteration \(algorithm.dynamic_sampling "
            r"trains on at most one rollout's worth\): .* <= 400",
        ),
        (
            [
                "algorithm=dapo",
                "cluster.num_gpus_per_node=2",
                "env.num_envs=16",
                "runner.rollout_steps=50",
                "algorithm.num_minibatches=5",
                "algorithm.micro_batch_size=80",
            ],
            r"micro_batch_size=80 is not below the largest minibatch, 80 samples .* over 2 actor rank\(s\)",
        ),
        (  # before: 4 worker processes per vector env, silently
            ["env.num_envs=8", "runner.pipeline_stage_num=2", "+env.kwargs.num_workers=6"],
            r"env.kwargs.num_workers=6 > the 4 envs of each vector env \(env.num_envs=8 over 1 env worker\(s\) x "
            r"runner.pipeline_stage_num=2\): .* set it <= 4",
        ),
        (  # probe 61 #3: before, each env worker got the whole list and failed inside, naming neither setting
            [*LIBERO_PI0, "env.num_envs=2", "env.kwargs.task_id=[0,1,2]"],
            r"env.kwargs.task_id=\[0, 1, 2\] gives one task per env, 3 for env.num_envs=2: give 2 task ids",
        ),
        (  # probe 63 #1: before, GRPO compared the returns of task 0's env with task 1's, without a word
            [*LIBERO_PI0, "algorithm=grpo", "algorithm.group_size=2", "env.num_envs=4", "env.kwargs.task_id=[0,1,0,1]"],
            r"env.kwargs.task_id=\[0, 1, 0, 1\]: group 0 of algorithm.group_size=2 \(envs 0-1\) holds tasks \[0, 1\], "
            r".* e.g. \[0, 0, 1, 1\]",
        ),
        (  # and under auto placement, where check_env_split waits for the layout: before, place started Ray first
            [
                *LIBERO_PI0,
                "algorithm=dapo",
                "algorithm.group_size=2",
                "env.num_envs=6",
                "env.kwargs.task_id=[0,0,1,2,2,1]",
                "cluster.component_placement=auto",
            ],
            r"env.kwargs.task_id=\[0, 0, 1, 2, 2, 1\]: group 1 of algorithm.group_size=2 \(envs 2-3\) holds tasks "
            r"\[1, 2\], .* e.g. \[0, 0, 1, 1, 2, 2\]",
        ),
        (
            [*LIBERO_PI0, "env.num_envs=2", "env.kwargs.task_id=[0,1,2]", "runner.pipeline_stage_num=auto"],
            r"env.kwargs.task_id=\[0, 1, 2\] gives one task per env, 3 for env.num_envs=2: give 2 task ids",
        ),
    ],
)
def test_a_split_that_cannot_work_is_refused_before_ray_starts(overrides, message):
    with pytest.raises(ValueError, match=message):
        check_train_config(compose_config("config", overrides))


@pytest.mark.parametrize(
    "overrides",
    [
        ["runner.pipeline_stage_num=2", "env.num_envs=8"],
        ["cluster=hybrid_4gpu", "env.num_envs=8", "runner.pipeline_stage_num=2"],
        ["algorithm=grpo", "env.num_envs=16", "cluster.num_gpus_per_node=2"],
        ["env.num_envs=8", "runner.pipeline_stage_num=2", "+env.kwargs.num_workers=4"],
        ["env.num_envs=8", "runner.rollout_steps=50", "algorithm.num_minibatches=200"],
        ["env.num_envs=8", "runner.rollout_steps=50", "algorithm.num_minibatches=400", "algorithm=grpo"],
        ["algorithm=dapo", "env.num_envs=8", "runner.rollout_steps=50", "algorithm.micro_batch_size=99"],
        ["algorithm=dapo", "env.num_envs=8", "runner.rollout_steps=50", "algorithm.num_minibatches=400"],
        [*LIBERO_PI0, "env.num_envs=4", "runner.pipeline_stage_num=2", "env.kwargs.task_id=[0,1,2,3]"],
        [*LIBERO_PI0, "algorithm=grpo", "algorithm.group_size=2", "env.num_envs=4", "env.kwargs.task_id=[0,0,3,3]"],
        [*LIBERO_PI0, "env.num_envs=4", "env.kwargs.task_id=[0,1,0,1]"],  # PPO: no groups, each env its own task
    ],
)
def test_a_split_that_works_passes(overrides):
    check_train_config(compose_config("config", overrides))


def test_offload_off_is_refused_where_the_actor_shares_no_gpu():
    with pytest.raises(
        ValueError, match=r"runner.offload=false would change nothing: .* actor \(GPUs \[1\]\) shares no"
    ):
        check_train_config(compose_config("config", ["cluster=disaggregated_2gpu", "runner.offload=false"]))
    check_train_config(compose_config("config", ["runner.offload=false"]))  # collocated: the swaps it skips
    check_train_config(compose_config("config", ["cluster=hybrid_4gpu", "runner.offload=false"]))


def test_rollout_gpus_beyond_the_env_workers_are_refused_and_auto_never_picks_them():
    """Before: `env:0, rollout:1-2` launched two rollout ranks, one of which served no env worker; place picked
    layouts with 96 rollout GPUs for 2 env workers on 100 GPUs."""
    from rlinf_embodied.runners.placement_profile import candidate_layouts, config_refusal
    from rlinf_embodied.scheduler.placement import ComponentPlacement

    with pytest.raises(ValueError, match=r"gives the rollout 2 GPUs \[1, 2\] for 1 env worker\(s\): .* 1 would serve"):
        check_train_config(
            compose_config(
                "config", ["cluster.num_gpus_per_node=3", "cluster.component_placement={env:0,rollout:1-2,actor:0}"]
            )
        )
    cfg = compose_config("config", ["cluster.num_gpus_per_node=3", "cluster.component_placement=auto"])
    runnable = [layout for layout in candidate_layouts(cfg) if not config_refusal(cfg, layout)]
    sizes = [
        {
            name: len(ComponentPlacement(layout.component_placement, num_gpus=3).gpus(name))
            for name in ("env", "rollout")
        }
        for layout in runnable
    ]
    assert runnable and all(size["rollout"] <= size["env"] for size in sizes)
    assert len(runnable) < len(candidate_layouts(cfg))  # env 0, rollout 1-2 among those refused
