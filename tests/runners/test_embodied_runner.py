"""End-to-end runner tests on CPU: Ray workers on simulated GPUs, the real ManiSkill simulator.

Starting a run's workers takes most of a test's time, so each run serves every check it can: one per
placement mode (hybrid; disaggregated, resumed with evaluation; collocated, the pi0 run), the pipeline
stages' pair; the runner.offload pair of CUDA IPC runs drives one start-up's workers. The default command, its
interrupt and resume: test_interrupts.py."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch

from rlinf_embodied.config import TrainConfig
from rlinf_embodied.runners.embodied_runner import (
    EmbodiedRunner,
    check_rollout_reaches_time_limit,
    check_resume_leaves_work,
    check_rollout_reaches_time_limit_early,
    component_placement,
    merge_episode_metrics,
    read_saved_iteration,
)
from rlinf_embodied.scheduler import Cluster
from rlinf_embodied.workers.messages import Trajectory

pytestmark = pytest.mark.slow

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize(
    "policy_name, rollout_steps, limit, reset, rejected",
    [
        ("mlp", 50, 100, True, True),  # stop 20's CPU runs S4/S5: every episode cut at 50 of its 100 steps
        ("mlp", 100, 100, True, False),
        ("mlp", 50, 100, False, False),  # episodes run on across iterations
        ("mlp", 50, None, True, False),  # no time limit: only the task ends an episode
        ("pi0", 3, 20, True, True),  # 3 calls x chunk 4 = 12 env steps
        ("pi0", 5, 20, True, False),  # 20
    ],
)
def test_a_rollout_shorter_than_the_time_limit_is_rejected(policy_name, rollout_steps, limit, reset, rejected):
    cfg = TrainConfig()
    cfg.policy.name, cfg.runner.rollout_steps, cfg.runner.reset_each_iteration = policy_name, rollout_steps, reset
    spec = {"action_dim": 7, "state_dim": 8, "obs_keys": ["rgb", "state"], "max_episode_steps": limit}
    cfg.env.max_episode_steps = limit  # the early check (before Ray) reads the config's limit and chunk
    if not rejected:
        check_rollout_reaches_time_limit(cfg, spec)
        check_rollout_reaches_time_limit_early(cfg)
        return
    chunk = 4 if policy_name == "pi0" else 1
    with pytest.raises(ValueError) as error:
        check_rollout_reaches_time_limit(cfg, spec)
    with pytest.raises(ValueError) as early_error:
        check_rollout_reaches_time_limit_early(cfg)
    assert str(early_error.value) == str(error.value)
    message = str(error.value)
    assert f"runner.rollout_steps={rollout_steps} x action_chunk={chunk} = {rollout_steps * chunk} env steps" in message
    assert f"env.max_episode_steps={limit}" in message and "runner.reset_each_iteration=false" in message
    assert f"runner.rollout_steps>={-(-limit // chunk)}" in message


def test_the_early_check_reads_the_ids_own_limit_where_the_config_sets_none():
    """configs/env/libero_10.yaml sets env.max_episode_steps: null (the suite's own 520): before, the check before
    Ray saw no limit and the error came after every worker had started."""
    cfg = TrainConfig()
    cfg.env.id, cfg.env.max_episode_steps = "rlinf/LIBERO-10", None
    cfg.policy.name, cfg.runner.rollout_steps, cfg.runner.reset_each_iteration = "mlp", 100, True
    with pytest.raises(ValueError, match=r"fewer than env.max_episode_steps=520.*runner.rollout_steps>=520"):
        check_rollout_reaches_time_limit_early(cfg)
    cfg.runner.rollout_steps = 520
    check_rollout_reaches_time_limit_early(cfg)


@pytest.mark.parametrize("algorithm, warned", [("grpo", True), ("reinforce_pp", True), ("gae", False)])
def test_episodes_carried_over_warn_a_critic_free_estimator(caplog, algorithm, warned):
    """GRPO/DAPO credit only episodes that end within an iteration: before, rollouts shorter than an episode with
    runner.reset_each_iteration=false trained on nothing, silently (GAE bootstraps the rest with its critic)."""
    from rlinf_embodied.algorithms.config import AlgorithmConfig

    cfg = TrainConfig()
    cfg.algorithm = AlgorithmConfig(adv_type=algorithm)
    cfg.runner.rollout_steps, cfg.runner.reset_each_iteration, cfg.env.max_episode_steps = 10, False, 50
    with caplog.at_level("WARNING"):
        check_rollout_reaches_time_limit_early(cfg)
    assert ("credits only the steps of episodes that end within an iteration" in caplog.text) == warned


def small_config(placement: dict, num_gpus: int, num_envs: int = 4, stages: int = 1) -> TrainConfig:
    cfg = TrainConfig()
    cfg.env.num_envs = num_envs
    cfg.env.max_episode_steps = 6
    cfg.env.kwargs = {"control_mode": "pd_joint_delta_pos", "reward_mode": "normalized_dense"}
    cfg.policy.size = "tiny"
    cfg.cluster.num_gpus_per_node = num_gpus
    cfg.cluster.component_placement = placement
    cfg.runner.rollout_steps = 8  # crosses an episode boundary (6 steps) on every env
    cfg.runner.pipeline_stage_num = stages
    cfg.runner.max_iterations = 1
    cfg.runner.progress = False
    cfg.algorithm.update_epochs = 1
    cfg.algorithm.num_minibatches = 2
    return cfg


@pytest.fixture(scope="module")
def cluster(ray_session):
    return Cluster(num_nodes=1, num_gpus_per_node=4, simulate_gpus=True)  # joins the session's Ray


def run_iterations(cfg: TrainConfig, cluster: Cluster, output_dir: str) -> list[dict]:
    runner = EmbodiedRunner(cfg, cluster, output_dir)
    try:
        return runner.run()
    finally:
        runner.shutdown()


def test_one_iteration_in_hybrid_mode(cluster, tmp_path):
    """Hybrid (cluster/hybrid_4gpu.yaml's layout): 2 env and 2 rollout workers apart, the actor on all 4 GPUs."""
    cfg = small_config({"env": "0-1", "rollout": "2-3", "actor": "all"}, 4)
    # 4 actor ranks must agree to stop at the KL target: after the first step
    cfg.algorithm.target_kl, cfg.algorithm.lr, cfg.algorithm.update_epochs = 1e-6, 1e-2, 2
    runner = EmbodiedRunner(cfg, cluster, str(tmp_path))
    try:
        assert runner.placement.mode == "hybrid"
        history = runner.run()
    finally:
        runner.shutdown()
    check_logged_metrics(cfg, history, tmp_path)
    (metrics,) = history
    assert metrics["train/optimizer_steps"] == 1
    assert metrics["rollout/clipped_action_fraction"] == 0.0  # the Gaussian mlp clips its own samples


def test_clipped_action_fractions_merge_weighted_by_env_steps():
    """Each env worker's fraction of action elements outside the action space, merged over env steps; absent where
    no worker's envs report it (IsaacLab clips nothing itself)."""
    episodes = {"num_episodes": 1, "success_rate": 0.0, "episode_return": 0.0, "episode_length": 1, "success_once": 0}
    per_worker = [
        {**episodes, "env_steps": 30, "clipped_action_fraction": 0.5},
        {**episodes, "env_steps": 10, "clipped_action_fraction": 0.1},
        {**episodes, "env_steps": 0},
    ]
    assert merge_episode_metrics(per_worker)["clipped_action_fraction"] == pytest.approx((15 + 1) / 40)
    assert "clipped_action_fraction" not in merge_episode_metrics([{**episodes, "env_steps": 5}])


def collect_trajectories(cfg: TrainConfig, cluster: Cluster, output_dir: str) -> Trajectory:
    """One deterministic rollout; the trajectories are taken from the actor channel by the driver."""
    runner = EmbodiedRunner(cfg, cluster, output_dir)
    try:
        runner.sync_weights()
        runner.rollout(iteration=0)
        num_pieces = runner.env_group.world_size * cfg.runner.pipeline_stage_num
        pieces = [runner.actor_channel.get(key="actor0") for _ in range(num_pieces)]
    finally:
        runner.shutdown()
    trajectory = Trajectory.concat_envs(pieces)
    order = torch.argsort(trajectory.env_ids)
    return trajectory.select_envs(order)


def test_pipeline_stages_give_the_same_trajectories(cluster, tmp_path):
    placement = {"env": "0", "rollout": "1", "actor": "1"}
    trajectories = []
    for stages in (1, 2):
        cfg = small_config(placement, 2, num_envs=4, stages=stages)
        cfg.runner.deterministic_rollout = True
        trajectories.append(collect_trajectories(cfg, cluster, str(tmp_path / f"s{stages}")))
    one, two = trajectories
    assert torch.equal(one.env_ids, two.env_ids)
    torch.testing.assert_close(one.obs["state"], two.obs["state"])
    torch.testing.assert_close(one.actions, two.actions)
    torch.testing.assert_close(one.rewards, two.rewards)
    assert torch.equal(one.dones, two.dones)
    assert one.dones.any(), "the rollout should cross an episode boundary"


def check_logged_metrics(cfg: TrainConfig, history: list[dict], output_dir) -> None:
    metrics = history[0]
    assert metrics["time/env_steps"] == cfg.env.num_envs * cfg.runner.rollout_steps
    assert metrics["rollout/num_episodes"] >= cfg.env.num_envs  # every env finished its 6-step episode
    assert 0.0 <= metrics["rollout/success_rate"] <= 1.0
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    lines = (output_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [m["iteration"] for m in history]
    record = json.loads(lines[0])
    for key in (
        "iteration",
        "time/env_steps",
        "rollout/success_rate",
        "rollout/episode_return",
        "time/throughput",
        "time/rollout_seconds",
        "time/train_seconds",
        "time/elapsed_seconds",
    ):
        assert key in record
    assert all(key == "iteration" or key.split("/")[0] in ("rollout", "train", "eval", "time") for key in record)


def check_time_breakdown(history: list[dict]) -> None:
    """time/* phases (rollout, train, sync, onload, offload, save, other) add up to the iteration."""
    startup = history[0]
    assert startup["time/startup_seconds"] >= startup["time/startup_policy_seconds"] > 0
    assert startup["time/startup_seconds"] >= startup["time/startup_env_seconds"] > 0  # envs built before the end
    assert all("time/startup_seconds" not in metrics for metrics in history[1:])
    for metrics in history:
        phases = ["rollout", "train", "sync", "onload", "offload", "save", "other"]
        total = sum(metrics[f"time/{phase}_seconds"] for phase in phases)
        assert total == pytest.approx(metrics["time/iteration_seconds"], rel=0.02, abs=0.05)
        assert metrics["time/save_seconds"] > 0  # save_interval=1
    assert history[0]["time/sync_seconds"] > 0  # the first iteration syncs the actor's weights


DISAGGREGATED = {"env,rollout": "0", "actor": "1"}  # env and rollout share GPU 0, the actor has GPU 1
TRAINING_KEYS = ("rollout/episode_return", "rollout/success_rate", "train/loss", "time/env_steps")


@pytest.fixture(scope="module")
def disaggregated_runs(cluster, tmp_path_factory):
    """One disaggregated mlp run (fp32, 2 pipeline stages, 3 iterations, a checkpoint each), and the same run
    resumed from its iteration-0 checkpoint with an evaluation after each iteration (runner.eval_interval=1):
    (cfg, full history, its output dir, resumed history, its output dir). Shared by the tests below (starting
    the workers is the slow part)."""
    runs = []
    for eval_interval, resume in ((0, None), (1, "iteration_000000")):
        cfg = small_config(DISAGGREGATED, 2, num_envs=4, stages=2)
        cfg.algorithm.target_kl = None  # every optimizer step runs
        cfg.runner.max_iterations, cfg.runner.save_interval = 3, 1
        cfg.runner.eval_interval, cfg.runner.eval_rounds = eval_interval, 2
        if resume:
            cfg.runner.resume = str(runs[0][2] / "checkpoints" / resume)
        output_dir = tmp_path_factory.mktemp("resumed" if resume else "full")
        runner = EmbodiedRunner(cfg, cluster, str(output_dir))
        try:
            assert runner.placement.mode == "disaggregated"
            runs.append((cfg, runner.run(), output_dir))
        finally:
            runner.shutdown()
    (cfg, full, full_dir), (_, resumed, resumed_dir) = runs
    return cfg, full, full_dir, resumed, resumed_dir


def test_disaggregated_run_logs_its_metrics(disaggregated_runs):
    """The full run checked three ways: the metrics it logs (namespaces, metrics.jsonl), its time/*
    breakdown, and the actor reproducing the rollout's log-probs before its first step (initial_approx_kl)."""
    cfg, full, full_dir, _, _ = disaggregated_runs
    check_logged_metrics(cfg, full, full_dir)
    check_time_breakdown(full)
    all_steps = cfg.algorithm.update_epochs * cfg.algorithm.num_minibatches
    for metrics in full:  # same weights in rollout and actor before the first step
        assert metrics["train/initial_approx_kl"] < 1e-3, metrics
        assert metrics["train/initial_ratio_max_abs_dev"] < 1e-2, metrics
        assert metrics["train/optimizer_steps"] == all_steps
    assert all("eval/success_once" not in m for m in full)


def test_resume_with_evaluation_reproduces_the_next_iterations(disaggregated_runs):
    """Resumed from the iteration-0 checkpoint, iterations 1 and 2 train on the same data to the same loss
    as the run that went on: the checkpoint restores the actor; evaluation (after iteration 1) resets the
    envs afterwards and leaves training unchanged."""
    _, full, _, resumed, _ = disaggregated_runs
    assert [m["iteration"] for m in resumed] == [1, 2]
    for before, after in zip(full[1:], resumed):
        for key in TRAINING_KEYS:
            assert after[key] == pytest.approx(before[key], rel=1e-6, abs=1e-8), key


def test_resuming_a_finished_run_names_the_iterations_it_needs(disaggregated_runs, cluster, monkeypatch):
    """Before: resuming iteration 2 of a 3-iteration run started the workers, trained nothing and exited 0; then
    (stop 60) it was refused only after every worker had started. The checkpoint's training_state.json lets the
    driver refuse it before any worker starts."""
    cfg, _, full_dir, _, _ = disaggregated_runs
    cfg = copy.deepcopy(cfg)
    cfg.runner.resume = str(full_dir / "checkpoints" / "iteration_000002")
    assert read_saved_iteration(cfg.runner.resume) == 2

    def no_workers(*args, **kwargs):
        raise AssertionError("the workers started before the refusal")

    monkeypatch.setattr(EmbodiedRunner, "_start_workers", no_workers)
    with pytest.raises(ValueError, match=r"ended at iteration 2, so runner.max_iterations=3 leaves nothing to train"):
        EmbodiedRunner(cfg, cluster, str(full_dir / "resumed_again"))
    # probe 63 #10: and train's (and place's) checks before Ray, before: only once Ray had started
    from rlinf_embodied.train import check_train_config

    with pytest.raises(ValueError, match=r"ended at iteration 2, so runner.max_iterations=3 leaves nothing to train"):
        check_train_config(cfg)


def test_a_checkpoint_without_its_training_state_is_checked_once_the_actor_read_it(tmp_path):
    """Checkpoints saved before training_state.json: nothing known on the driver (the actor's iteration decides)."""
    assert read_saved_iteration(str(tmp_path)) is None
    cfg = TrainConfig()
    cfg.runner.resume, cfg.runner.max_iterations = str(tmp_path), 3
    check_resume_leaves_work(cfg, None)
    check_resume_leaves_work(cfg, 1)
    with pytest.raises(ValueError, match=r"ended at iteration 2, so runner.max_iterations=3 leaves nothing to train"):
        check_resume_leaves_work(cfg, 2)


def test_evaluation_counts_episodes_and_keeps_the_best_checkpoint(disaggregated_runs):
    _, _, _, resumed, resumed_dir = disaggregated_runs
    assert [m["eval/num_episodes"] for m in resumed] == [4 * 2, 4 * 2]  # one counted episode per env per round
    assert all(1 <= m["eval/episode_length"] <= 6 for m in resumed)
    successes = [m["eval/success_once"] for m in resumed]
    best = json.loads((resumed_dir / "checkpoints" / "best" / "best.json").read_text())
    assert best["iteration"] == resumed[successes.index(max(successes))]["iteration"]
    assert best["eval/success_once"] == pytest.approx(max(successes))
    assert (resumed_dir / "checkpoints" / "best" / "policy").is_dir()
    for metrics in resumed:  # each evaluation compares the noisy rollouts since the last one with itself
        has_ratio = metrics["eval/success_once"] > 0 and metrics["rollout/num_episodes"] > 0
        assert ("eval/rollout_success_ratio" in metrics) == has_ratio, metrics
        if has_ratio:
            expected = metrics["rollout/success_once"] / metrics["eval/success_once"]
            assert metrics["eval/rollout_success_ratio"] == pytest.approx(expected)


def test_pretrained_vla_without_checkpoint_fails_at_once(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rlinf_embodied.train", "env=libero", "policy=pi0", f"hydra.run.dir={tmp_path}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "policy.checkpoint=" in result.stderr and "policy.size=tiny" in result.stderr


# mlp fp32: the disaggregated runs above; flow_mlp: the flow chain's log-probs on the state env, in bf16
@pytest.mark.parametrize("policy_name, precision", [("pi0", "bf16"), ("flow_mlp", "bf16")])
def test_actor_reproduces_rollout_log_probs_before_its_first_step(cluster, tmp_path, policy_name, precision):
    """train/initial_approx_kl: rollout (compute-dtype weights) and actor (fp32 masters computing in that
    dtype) hold the same weights before the first optimizer step, so their log-probs must agree. The run is
    collocated: its time/* breakdown counts the swaps (offload, onload) between rollout and actor too."""
    cfg = small_config({"env,rollout,actor": "all"}, 1)
    assert component_placement(cfg).mode == "collocated"
    cfg.policy.name, cfg.policy.precision = policy_name, precision
    cfg.runner.max_iterations, cfg.runner.rollout_steps, cfg.runner.save_interval = 2, 3, 1
    if policy_name == "pi0":  # a VLA needs cameras: LIBERO renders on CPU (ManiSkill cannot here)
        # a LIBERO env step took 0.2 s on 2 cores: 2 policy calls x chunk 4 = 8 env steps per env and iteration
        cfg.env.id, cfg.env.obs_mode, cfg.env.max_episode_steps = "rlinf/LIBERO-Spatial", "rgb", 8
        cfg.runner.rollout_steps = 2
        # 2 envs, so that each policy call is batched; each LIBERO env compiles its MuJoCo scene: seconds apiece
        cfg.env.num_envs = 2
        # one minibatch: initial_approx_kl (measured on the first) then covers every sample of the rollout
        cfg.algorithm.num_minibatches = 1
        # one settle step per reset, not 10: each reset took 2.7-4.3 s on 2 cores (0.5 s with none); the loop still runs
        cfg.env.kwargs = {"task_id": 0, "camera_size": 32, "num_settle_steps": 1}
        # from a checkpoint as `python -m rlinf_embodied.sft` writes one: with action/state statistics
        from rlinf_embodied.policies import make_policy

        checkpoint = tmp_path / "sft_policy"
        make_policy(
            "pi0",
            size="tiny",
            action_dim=7,
            state_dim=8,
            action_low=[-0.5] * 7,
            action_high=[0.5] * 7,
            state_low=[-1.0] * 8,
            state_high=[1.0] * 8,
            trim_prompt_padding=True,  # as the GPU recipe's SFT saves it: rollout and actor trim the same prompts
        ).save_pretrained(checkpoint)
        cfg.policy.checkpoint = str(checkpoint)
    history = run_iterations(cfg, cluster, str(tmp_path))
    check_time_breakdown(history)
    for metrics in history:
        assert metrics["train/initial_approx_kl"] < 1e-3, metrics
        assert metrics["train/initial_ratio_max_abs_dev"] < 1e-2, metrics
        assert metrics["train/optimizer_steps"] >= 1
    if policy_name == "pi0":  # a VLA trains at its own fine-tuning rates unless algorithm.lr is set
        assert history[0]["train/lr"] == pytest.approx(5e-6)
        assert history[0]["train/lr_value"] == pytest.approx(1e-4)
    else:  # flow_mlp trains from demonstrations or scratch: the small policies' rate, for the value head too
        assert history[0]["train/lr"] == pytest.approx(3e-4)
        assert history[0]["train/lr_value"] == pytest.approx(3e-4)


class _Done:
    def wait(self) -> None:
        return None


class _RunnerOnStartedWorkers(EmbodiedRunner):
    """An EmbodiedRunner (its own driver state: iterations, sync flags, metrics) that drives the workers and channels
    `started` started, instead of starting its own."""

    def __init__(self, started: EmbodiedRunner, *args, **kwargs):
        self._started = started
        super().__init__(*args, **kwargs)

    def _start_workers(self, cfg: TrainConfig, cluster: Cluster) -> None:
        for name in (
            "env_group",
            "rollout_group",
            "actor_group",
            "env_spec",
            "env_channel",
            "action_channel",
            "actor_channel",
            "startup_seconds",
        ):
            setattr(self, name, getattr(self._started, name))


def stand_in_for_cuda_ipc(runner: EmbodiedRunner) -> tuple[list[str], list[str]]:
    """CUDA IPC stood in for by the object store, and the swaps recorded, not run: (IPC syncs, swaps), filled as the
    runner runs."""
    actor, calls, swaps = runner.actor_group, [], []
    actor.sync_method = lambda dst: "cuda_ipc"
    actor._sync_by_cuda_ipc = lambda dst: calls.append(dst.name) or actor._sync_by_object_store(dst)
    for group in (runner.actor_group, runner.rollout_group):
        for method in ("offload", "onload"):
            setattr(group, method, lambda name=f"{group.name}.{method}": swaps.append(name) or _Done())
    return calls, swaps


@pytest.fixture(scope="module")
def cuda_ipc_runs(cluster, tmp_path_factory):
    """A collocated run with CUDA IPC stood in for (2 iterations, an evaluation after each) for runner.offload=true
    and for false: offload -> (history, IPC syncs, swaps). Only the driver (EmbodiedRunner) reads runner.offload,
    and the swaps are not run, so both runs make the same calls on the workers: the offload=false run is a runner of
    its own (fresh driver state) on the workers the offload=true run started (a second start-up took 13 s)."""
    cfg = small_config({"env,rollout,actor": "all"}, 1)
    cfg.runner.max_iterations, cfg.runner.eval_interval, cfg.runner.eval_rounds = 2, 1, 1
    runs = {}
    started = EmbodiedRunner(cfg, cluster, str(tmp_path_factory.mktemp("offload")))
    try:
        calls, swaps = stand_in_for_cuda_ipc(started)
        runs[True] = started.run(), calls, swaps
        resident = copy.deepcopy(cfg)
        resident.runner.offload = False
        runner = _RunnerOnStartedWorkers(started, resident, cluster, str(tmp_path_factory.mktemp("resident")))
        calls, swaps = stand_in_for_cuda_ipc(runner)
        runs[False] = runner.run(), calls, swaps
    finally:
        started.shutdown()
    return runs


@pytest.mark.parametrize("offload", [True, False])
def test_collocated_run_syncs_over_cuda_ipc_right_after_training(cuda_ipc_runs, offload):
    """When the actor can reach the rollout's GPU over CUDA IPC, the runner syncs right after training (the
    actor's weights still on the GPU) and only onloads the rollout before the next rollout or evaluation.
    CUDA IPC itself needs a GPU (tests/scheduler/test_gpu_ipc.py): here it is stood in for by the object store,
    so the check is the order: the rollout must act with the weights of the update before.
    runner.offload=false: no model is swapped at all, and the rollout still acts with the latest weights."""
    history, calls, swaps = cuda_ipc_runs[offload]
    assert len(calls) == 3  # before the first rollout, then once after each update (not again for eval)
    for metrics in history:
        assert metrics["train/initial_approx_kl"] < 1e-6, metrics  # iteration 1 acted with iteration 0's update
        assert metrics["time/sync_seconds"] > 0 and metrics["eval/num_episodes"] > 0
    if offload:
        assert {"rollout.offload", "actor.onload", "actor.offload", "rollout.onload"} <= set(swaps)
    else:
        assert swaps == [] and all(metrics["time/offload_seconds"] == 0 for metrics in history)
