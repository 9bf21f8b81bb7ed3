"""ActorWorker checks that need no Ray worker."""

from __future__ import annotations

import pytest

from rlinf_embodied.config import TrainConfig
from rlinf_embodied.workers.actor_worker import check_minibatch_split


def test_fewer_samples_than_minibatches_names_the_settings():
    cfg = TrainConfig()
    cfg.env.num_envs, cfg.runner.rollout_steps, cfg.algorithm.num_minibatches = 2, 10, 32
    with pytest.raises(ValueError, match=r"20 samples .*num_minibatches=32: .*\(now 2 x 10"):
        check_minibatch_split(20, cfg, rank=0, world_size=1)
    check_minibatch_split(32, cfg, rank=0, world_size=1)  # one sample per minibatch is enough


def _samples_from_rollout(rollout_policy, batch_size: int = 8) -> dict:
    """One rollout step of `rollout_policy` as the actor's flattened samples (random advantages)."""
    import torch

    obs = rollout_policy.example_obs(batch_size)
    out = rollout_policy.act(obs)
    advantages = torch.randn(batch_size)
    return {
        "obs": obs,
        "actions": out.actions.float(),
        "log_probs": out.log_probs.float(),
        "values": out.values.float(),
        "advantages": advantages,
        "returns": advantages,
        "extras": {k: v for k, v in out.extras.items()},
    }


@pytest.mark.parametrize("policy_name, precision", [("mlp", "float32"), ("pi0", "bf16")])
def test_actor_holds_fp32_masters_and_reproduces_the_rollouts_log_probs(policy_name, precision):
    import torch

    from rlinf_embodied.workers.actor_worker import ActorWorker
    from rlinf_embodied.workers.policy_loading import build_policy

    cfg = TrainConfig()
    cfg.policy.name, cfg.policy.precision = policy_name, precision
    cfg.algorithm.num_minibatches, cfg.algorithm.update_epochs, cfg.algorithm.target_kl = 2, 1, None
    actor = ActorWorker(cfg, action_dim=7, state_dim=8)
    actor.init_worker()
    assert all(p.dtype == torch.float32 for p in actor.policy.parameters() if p.requires_grad)  # master weights
    rollout = build_policy(cfg.policy, 7, 8, torch.device("cpu"))  # what the rollout worker holds
    rollout.load_state_dict(actor.full_state_dict())
    assert next(rollout.parameters()).dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
    before = {name: p.detach().clone() for name, p in actor.policy.named_parameters()}
    metrics = actor._update(0, _samples_from_rollout(rollout))
    assert metrics["initial_approx_kl"] < 1e-6 and metrics["initial_ratio_max_abs_dev"] < 1e-4
    assert metrics["optimizer_steps"] == 2
    changed = [name for name, p in actor.policy.named_parameters() if not torch.equal(p, before[name])]
    assert changed  # the fp32 masters moved (bf16 weights would round most VLA-sized updates away)


def test_frozen_parameters_are_stored_in_the_compute_dtype_and_the_ratio_stays_exact():
    """A frozen VLM needs no fp32 master: it is stored in bf16 (half the actor's memory, offload and sync
    traffic for that part), the trained parameters stay fp32, and the actor still reproduces the rollout."""
    import torch

    from rlinf_embodied.workers.actor_worker import ActorWorker
    from rlinf_embodied.workers.policy_loading import build_policy

    cfg = TrainConfig()
    cfg.policy.name, cfg.policy.precision = "pi0", "bf16"
    cfg.policy.overrides = {"freeze_vision_encoder": True, "freeze_language_model": True}
    cfg.algorithm.num_minibatches, cfg.algorithm.update_epochs, cfg.algorithm.target_kl = 2, 1, None
    actor = ActorWorker(cfg, action_dim=7, state_dim=8)
    actor.init_worker()
    frozen = [p for p in actor.policy.parameters() if not p.requires_grad]
    trained = [p for p in actor.policy.parameters() if p.requires_grad]
    assert frozen and trained
    assert all(p.dtype == torch.bfloat16 for p in frozen) and all(p.dtype == torch.float32 for p in trained)
    rollout = build_policy(cfg.policy, 7, 8, torch.device("cpu"))
    rollout.load_state_dict(actor.full_state_dict())
    metrics = actor._update(0, _samples_from_rollout(rollout))
    assert metrics["initial_approx_kl"] < 1e-6 and metrics["initial_ratio_max_abs_dev"] < 1e-4


@pytest.mark.parametrize("recompute", [False, True])
def test_recompute_log_probs_makes_the_first_ratio_exact_and_logs_the_rollouts_mismatch(recompute):
    """Rollout log-probs off by rounding (here: perturbed) leave the first ratio off 1, unless the actor
    recomputes them; the mismatch is still reported."""
    import torch

    from rlinf_embodied.workers.actor_worker import ActorWorker
    from rlinf_embodied.workers.policy_loading import build_policy

    cfg = TrainConfig()
    cfg.policy.name, cfg.policy.precision = "pi0", "bf16"
    cfg.algorithm.num_minibatches, cfg.algorithm.update_epochs, cfg.algorithm.target_kl = 2, 1, None
    cfg.algorithm.recompute_log_probs = recompute
    actor = ActorWorker(cfg, action_dim=7, state_dim=8)
    actor.init_worker()
    rollout = build_policy(cfg.policy, 7, 8, torch.device("cpu"))
    rollout.load_state_dict(actor.full_state_dict())
    samples = _samples_from_rollout(rollout)
    samples["log_probs"] = samples["log_probs"] + 0.05 * torch.randn_like(samples["log_probs"])
    metrics = actor._update(0, samples)
    if recompute:
        assert metrics["initial_approx_kl"] < 1e-9 and metrics["initial_ratio_max_abs_dev"] < 1e-6
        assert metrics["rollout_actor_approx_kl"] > 1e-4
    else:
        assert metrics["initial_approx_kl"] > 1e-4 and "rollout_actor_approx_kl" not in metrics


def test_critic_warmup_trains_only_the_value_head():
    import torch

    from rlinf_embodied.workers.actor_worker import ActorWorker

    cfg = TrainConfig()
    cfg.algorithm.critic_warmup_iterations, cfg.algorithm.num_minibatches, cfg.algorithm.target_kl = 1, 2, None
    actor = ActorWorker(cfg, action_dim=7, state_dim=8)
    actor.init_worker()
    before = {name: p.detach().clone() for name, p in actor.policy.named_parameters()}
    for iteration in (0, 1):
        actor._set_learning_rates(iteration)
        actor._update(iteration, _samples_from_rollout(actor.policy))
        moved = {name.split(".")[0] for name, p in actor.policy.named_parameters() if not torch.equal(p, before[name])}
        assert moved == ({"critic"} if iteration == 0 else {"critic", "actor", "log_std"}), (iteration, moved)


def test_desired_kl_scales_the_policy_lr_after_warmup_and_survives_a_checkpoint(tmp_path):
    from rlinf_embodied.workers.actor_worker import ActorWorker

    cfg = TrainConfig()
    cfg.algorithm.lr, cfg.algorithm.value_lr, cfg.algorithm.critic_warmup_iterations = 1e-3, 1e-3, 1
    cfg.algorithm.num_minibatches, cfg.algorithm.target_kl = 2, None
    cfg.algorithm.desired_kl = 1e3  # far above any measured kl: every update after warmup asks for a larger lr
    actor = ActorWorker(cfg, action_dim=7, state_dim=8)
    actor.init_worker()
    lrs = {}
    for iteration in range(3):
        actor._set_learning_rates(iteration)
        metrics = actor._update(iteration, _samples_from_rollout(actor.policy))
        actor._adapt_lr_scale(iteration, metrics)
        lrs[iteration] = {group["name"]: group["lr"] for group in actor.optimizer.param_groups}
    assert lrs[0]["policy"] == 0.0 and actor.lr_scale == pytest.approx(1.5**2)  # warmup left the scale alone
    assert lrs[1]["policy"] == pytest.approx(1e-3) and lrs[2]["policy"] == pytest.approx(1.5e-3)
    assert lrs[2]["value"] == pytest.approx(1e-3)  # the value head's lr is not scaled
    actor.save_checkpoint(str(tmp_path), iteration=2, env_steps=0)
    resumed = ActorWorker(cfg, action_dim=7, state_dim=8)
    resumed.init_worker()
    resumed.load_checkpoint(str(tmp_path))
    assert resumed.lr_scale == pytest.approx(1.5**2)
    # the resuming run's lr wins over the checkpoint's (before: the saved initial_lr came back with Adam's state)
    cfg.algorithm.lr, cfg.algorithm.value_lr = 1e-4, 5e-4
    lowered = ActorWorker(cfg, action_dim=7, state_dim=8)
    lowered.init_worker()
    lowered.load_checkpoint(str(tmp_path))
    lowered._set_learning_rates(3)
    lrs = {group["name"]: group["lr"] for group in lowered.optimizer.param_groups}
    assert lrs == {"policy": pytest.approx(1e-4 * 1.5**2), "value": pytest.approx(5e-4)}
    # resumed with desired_kl off, the saved scale no longer applies (before: lr 1e-4 x 2.25, silently)
    cfg.algorithm.desired_kl = None
    unscaled = ActorWorker(cfg, action_dim=7, state_dim=8)
    unscaled.init_worker()
    unscaled.load_checkpoint(str(tmp_path))
    unscaled._set_learning_rates(3)
    assert unscaled.lr_scale == 1.0 and unscaled.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_desired_kl_reads_the_kl_after_the_updates_steps_not_the_first_minibatchs():
    """Probe 59 #2: each minibatch's approx_kl is measured before its own step, so the first's is ~0 and the
    update mean (train/approx_kl) halves the KL of two minibatches. desired_kl reads post_step_approx_kl, the
    minibatches evaluated after a step: here it sits inside [desired / 2, 2 x desired], where the mean with the
    first's ~0 fell below desired / 2 and grew the lr. An update that took no step leaves the scale alone."""
    from rlinf_embodied.workers.actor_worker import ActorWorker

    cfg = TrainConfig()
    cfg.algorithm.lr, cfg.algorithm.num_minibatches, cfg.algorithm.update_epochs = 1e-2, 2, 1
    cfg.algorithm.target_kl = None
    actor = ActorWorker(cfg, action_dim=7, state_dim=8)
    actor.init_worker()
    metrics = actor._update(0, _samples_from_rollout(actor.policy))
    assert metrics["optimizer_steps"] == 2 and metrics["initial_approx_kl"] < 1e-6
    second_kl = metrics["post_step_approx_kl"]  # the second minibatch's, after the first step
    assert second_kl > 1e-4
    assert metrics["approx_kl"] == pytest.approx((metrics["initial_approx_kl"] + second_kl) / 2, rel=1e-6)
    cfg.algorithm.desired_kl = 1.5 * second_kl  # approx_kl < desired / 2 <= post_step_approx_kl < 2 x desired
    actor._adapt_lr_scale(0, metrics)
    assert actor.lr_scale == 1.0 and metrics["lr_scale"] == 1.0
    cfg.algorithm.desired_kl = 3 * second_kl  # below desired / 2: the step was small, the lr grows
    actor._adapt_lr_scale(0, metrics)
    assert actor.lr_scale == pytest.approx(1.5)
    no_step = {"approx_kl": 0.5, "optimizer_steps": 0.0, "stop_approx_kl": 0.5}  # target_kl at the first
    actor._adapt_lr_scale(1, no_step)
    assert actor.lr_scale == pytest.approx(1.5) and no_step["lr_scale"] == pytest.approx(1.5)


def test_ref_kl_coef_holds_the_policy_near_its_start():
    """algorithm.ref_kl_coef: the reference starts equal to the actor (KL 0 before the first step), the KL is
    logged as the policy moves, and a large coefficient keeps the policy's log-probs on the batch closer to
    their start over the same updates than no penalty does (parameter distance would not show it: Adam
    steps every parameter by about lr whatever the gradient's scale)."""
    import torch

    from rlinf_embodied.algorithms import reference_kl
    from rlinf_embodied.policies import ActOutput
    from rlinf_embodied.workers.actor_worker import ActorWorker

    def kl_from_start_after_updates(coef: float) -> tuple[float, ActorWorker, list[dict]]:
        cfg = TrainConfig()
        cfg.algorithm.num_minibatches, cfg.algorithm.update_epochs, cfg.algorithm.target_kl = 2, 8, None
        cfg.algorithm.lr, cfg.algorithm.ref_kl_coef = 3e-3, coef
        actor = ActorWorker(cfg, action_dim=7, state_dim=8)
        actor.init_worker()
        torch.manual_seed(0)
        samples = _samples_from_rollout(actor.policy, batch_size=16)
        act_output = ActOutput(samples["actions"], samples["log_probs"], samples["values"], samples["extras"])
        with torch.no_grad():
            start = actor.policy.evaluate(samples["obs"], act_output).log_probs
        history = [actor._update(iteration, samples) for iteration in range(3)]
        with torch.no_grad():
            now = actor.policy.evaluate(samples["obs"], act_output).log_probs
        return float(reference_kl(now, start, None, "action")), actor, history

    free_kl, free_actor, free_history = kl_from_start_after_updates(0.0)
    held_kl, actor, history = kl_from_start_after_updates(10.0)
    assert free_actor.reference is None and "ref_kl" not in free_history[0]
    assert actor.reference is not None and not any(p.requires_grad for p in actor.reference.parameters())
    assert history[0]["initial_approx_kl"] < 1e-9 and history[-1]["ref_kl"] > 0
    assert held_kl < 0.5 * free_kl, (held_kl, free_kl)


def test_ref_kl_coef_must_not_be_negative():
    from rlinf_embodied.algorithms.config import AlgorithmConfig

    with pytest.raises(ValueError, match=r"algorithm.ref_kl_coef=-0.1 must be >= 0"):
        AlgorithmConfig(ref_kl_coef=-0.1)


def test_out_of_memory_in_the_update_names_the_minibatch_and_what_to_change(monkeypatch):
    import torch

    from rlinf_embodied.workers.actor_worker import ActorWorker

    cfg = TrainConfig()
    cfg.algorithm.num_minibatches = 2
    actor = ActorWorker(cfg, action_dim=7, state_dim=8)
    actor.init_worker()

    def out_of_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB\nmore lines")

    monkeypatch.setattr(actor, "_minibatch_step", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError) as raised:
        actor._update(0, _samples_from_rollout(actor.policy, batch_size=8))
    message = str(raised.value)
    assert "minibatches of 4 samples" in message and "algorithm.num_minibatches=2" in message
    assert message.endswith("CUDA: CUDA out of memory. Tried to allocate 20.00 MiB")
    assert "gradient_checkpointing" not in message  # the mlp has no such setting


def test_out_of_memory_advice_suggests_gradient_checkpointing_where_it_is_off():
    from types import SimpleNamespace

    import torch

    from rlinf_embodied.workers.actor_worker import update_out_of_memory

    def advice(checkpointing: bool) -> str:
        policy = SimpleNamespace(config=SimpleNamespace(gradient_checkpointing=checkpointing))
        return str(update_out_of_memory(torch.OutOfMemoryError("oom"), 40, TrainConfig(), 1, policy))

    assert "policy.overrides.gradient_checkpointing=true" in advice(False)
    assert "gradient_checkpointing" not in advice(True)


def test_out_of_memory_advice_names_the_training_state_and_the_freeze_settings():
    """Stop 46: pi0-3b trained whole ran out of an H100 at any minibatch size; the message says what the
    training state holds and which freeze settings are off."""
    import torch

    from rlinf_embodied.policies.registry import make_policy
    from rlinf_embodied.workers.actor_worker import update_out_of_memory

    policy = make_policy("pi0", size="tiny", action_dim=4, state_dim=8)
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    message = str(update_out_of_memory(torch.OutOfMemoryError("oom"), 40, TrainConfig(), 2, policy))
    assert f"{trainable / 1e6:,.1f}M trainable parameters" in message and "over 2 actor rank(s)" in message
    assert "policy.overrides.freeze_language_model=true" in message
    assert "policy.overrides.freeze_vision_encoder=true" in message
    policy.config.freeze_language_model = True
    message = str(update_out_of_memory(torch.OutOfMemoryError("oom"), 40, TrainConfig(), 2, policy))
    assert "freeze_language_model" not in message
    policy.config.lora_rank = 8  # LoRA freezes the base already; freezing new adapters is refused
    message = str(update_out_of_memory(torch.OutOfMemoryError("oom"), 40, TrainConfig(), 2, policy))
    assert "freeze_vision_encoder" not in message


def test_an_update_ended_by_target_kl_logs_the_kl_that_ended_it_and_the_critics_explained_variance():
    """Means over minibatches mix the first (before any step: KL 0, ratio 1) with the one that ended the update,
    so after one step they read as exact halves (issue 12's 'ratio_mean 0.50, clip_fraction 0.50');
    stop_approx_kl is the ending minibatch's own KL."""
    from rlinf_embodied.workers.actor_worker import ActorWorker

    cfg = TrainConfig()
    cfg.algorithm.lr, cfg.algorithm.num_minibatches, cfg.algorithm.update_epochs = 0.5, 2, 1
    cfg.algorithm.target_kl = 1e-6  # any step moves the second minibatch's log-probs past it
    actor = ActorWorker(cfg, action_dim=7, state_dim=8)
    actor.init_worker()
    samples = _samples_from_rollout(actor.policy)
    metrics = actor._update(0, samples)
    assert metrics["optimizer_steps"] == 1
    assert metrics["stop_approx_kl"] > cfg.algorithm.target_kl
    assert metrics["approx_kl"] == pytest.approx(metrics["stop_approx_kl"] / 2, rel=1e-6)  # mean with the first's 0
    assert "explained_variance" in metrics  # a GAE critic: the rollout's values against the returns
    # the extremes of the rollout's values and of the returns it trained towards
    assert metrics["value_max"] == pytest.approx(float(samples["values"].max()))
    assert metrics["return_min"] == pytest.approx(float(samples["returns"].min()))
    assert metrics["return_min"] < metrics["return_max"]
    cfg.algorithm.target_kl = None
    unstopped = ActorWorker(cfg, action_dim=7, state_dim=8)
    unstopped.init_worker()
    assert "stop_approx_kl" not in unstopped._update(0, _samples_from_rollout(unstopped.policy))


@pytest.mark.parametrize("recompute", [False, True])
def test_micro_batches_take_the_same_update_as_the_whole_minibatch(recompute):
    """algorithm.micro_batch_size accumulates gradients over micro-batches: the parameters after an update and
    its metrics are the unsplit update's (fp32 mlp), with the reference KL and recomputed log-probs on."""
    import torch

    from rlinf_embodied.workers.actor_worker import ActorWorker

    def updated(micro_batch_size):
        cfg = TrainConfig()
        cfg.algorithm.num_minibatches, cfg.algorithm.update_epochs, cfg.algorithm.target_kl = 2, 2, None
        cfg.algorithm.lr, cfg.algorithm.ref_kl_coef, cfg.algorithm.entropy_coef = 1e-3, 0.5, 0.01
        cfg.algorithm.micro_batch_size, cfg.algorithm.recompute_log_probs = micro_batch_size, recompute
        torch.manual_seed(0)
        actor = ActorWorker(cfg, action_dim=7, state_dim=8)
        actor.init_worker()
        torch.manual_seed(1)
        samples = _samples_from_rollout(actor.policy, batch_size=12)
        metrics = actor._update(0, samples)
        return {name: p.detach().clone() for name, p in actor.policy.named_parameters()}, metrics

    whole_params, whole_metrics = updated(None)
    micro_params, micro_metrics = updated(4)  # minibatches of 6 samples -> 2 micro-batches of 3
    moved = [name for name in whole_params if not torch.equal(whole_params[name], updated(None)[0][name])]
    assert not moved  # the update is deterministic, so any difference below is the split's
    for name, value in whole_params.items():
        torch.testing.assert_close(micro_params[name], value, rtol=1e-5, atol=1e-6, msg=name)
    for key in ("loss", "approx_kl", "clip_fraction", "ratio_max", "ref_kl", "grad_norm", "value_loss"):
        assert micro_metrics[key] == pytest.approx(whole_metrics[key], rel=1e-4, abs=1e-7), key
    assert micro_metrics["optimizer_steps"] == whole_metrics["optimizer_steps"] == 4


def test_a_micro_batch_size_that_leaves_an_empty_micro_batch_is_refused():
    from rlinf_embodied.workers.actor_worker import ActorWorker

    cfg = TrainConfig()
    cfg.algorithm.micro_batch_size = 2
    actor = ActorWorker(cfg, action_dim=7, state_dim=8)
    assert [len(part) for part in actor._micro_batches(5)] == [2, 2, 1]
    actor._max_over_ranks = lambda count: 6  # another rank's minibatch needs 6 micro-batches
    with pytest.raises(ValueError, match=r"micro_batch_size=2 splits .*minibatch of 5 samples into 6 micro-batches"):
        actor._micro_batches(5)


def test_micro_batch_size_must_be_positive():
    from rlinf_embodied.algorithms.config import AlgorithmConfig

    with pytest.raises(ValueError, match=r"algorithm.micro_batch_size=0 must be >= 1"):
        AlgorithmConfig(micro_batch_size=0)
