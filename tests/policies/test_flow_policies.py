"""RL-interface tests shared by the flow-matching policies (pi0, GR00T-N1.5, flow_mlp), on tiny random models."""

import pytest
import torch

from rlinf_embodied.policies import ActOutput, load_policy, make_policy
from rlinf_embodied.policies.registry import policy_class

POLICIES = ["pi0", "gr00t", "flow_mlp"]
VLA_POLICIES = ["pi0", "gr00t"]  # with cameras and a language model (LoRA, freezing, checkpointing, real sizes)
REAL_SIZES = {"pi0": "pi0-3b", "gr00t": "gr00t-n1.5-3b"}


def tiny(name: str, **overrides):
    torch.manual_seed(0)
    return make_policy(name, size="tiny", **overrides)


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("method", ["flow_sde", "flow_noise"])
def test_act_shapes_and_finite_values(name, method):
    policy = tiny(name, noise_method=method)
    cfg = policy.config
    out = policy.act(policy.example_obs(3))
    assert out.actions.shape == (3, cfg.action_chunk, cfg.action_dim)
    assert out.log_probs.shape == (3, cfg.action_chunk, cfg.action_dim)
    assert out.values.shape == (3,)
    assert out.extras["denoise_chain"].shape == (3, cfg.num_denoise_steps + 1, cfg.action_chunk, cfg.max_action_dim)
    assert out.extras["stochastic_steps"].shape == (3, cfg.num_denoise_steps)
    for tensor in (out.actions, out.log_probs, out.values, out.extras["denoise_chain"]):
        assert torch.isfinite(tensor).all()


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("method", ["flow_sde", "flow_noise"])
@pytest.mark.parametrize("steps", ["all", "random_one"])
def test_act_and_evaluate_log_probs_agree(name, method, steps):
    policy = tiny(name, noise_method=method, stochastic_steps=steps)
    obs = policy.example_obs(4)
    out = policy.act(obs)
    evaluated = policy.evaluate(obs, out)
    torch.testing.assert_close(evaluated.log_probs, out.log_probs, rtol=0, atol=1e-5)
    torch.testing.assert_close(evaluated.values, out.values, rtol=0, atol=1e-5)
    assert evaluated.entropy.shape == out.log_probs.shape
    assert evaluated.log_probs.requires_grad


@pytest.mark.parametrize("name", VLA_POLICIES)
def test_trimmed_prompt_padding_changes_no_output_and_shortens_the_prefix(name):
    """trim_prompt_padding drops masked columns only: act, evaluate and the SFT loss agree with the untrimmed
    policy (same weights) within float rounding, while the language model sees fewer tokens."""
    from torch.utils.flop_counter import FlopCounterMode

    full, trimmed = tiny(name, max_token_len=96), tiny(name, max_token_len=96, trim_prompt_padding=True)
    trimmed.load_state_dict(full.state_dict())
    obs = full.example_obs(3)
    outputs, flops = {}, {}
    for label, policy in (("full", full), ("trimmed", trimmed)):
        torch.manual_seed(1)
        act = policy.act(obs)
        evaluated = policy.evaluate(obs, act)
        torch.manual_seed(2)
        counter = FlopCounterMode(display=False)
        with counter:
            loss = policy.sft_loss(obs, act.actions)
        outputs[label], flops[label] = (act.actions, act.log_probs, evaluated.log_probs, act.values, loss), counter
    for got, expected in zip(outputs["trimmed"], outputs["full"]):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert flops["trimmed"].get_total_flops() < 0.9 * flops["full"].get_total_flops()


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("method", ["flow_sde", "flow_noise"])
def test_gradients_reach_every_trainable_parameter(name, method):
    policy = tiny(name, noise_method=method, detach_value_input=False)
    obs = policy.example_obs(2)
    evaluated = policy.evaluate(obs, policy.act(obs))
    loss = evaluated.log_probs.sum() + evaluated.values.sum() + evaluated.entropy.sum()
    loss.backward()
    no_grad = [
        n for n, p in policy.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not no_grad


@pytest.mark.parametrize("name", POLICIES)
def test_stochastic_step_subset_is_respected(name):
    policy = tiny(name, stochastic_steps="1,3")
    obs = policy.example_obs(3)
    out = policy.act(obs)
    assert out.extras["stochastic_steps"].tolist() == [[False, True, False, True]] * 3
    log_probs, _, per_step, _ = policy.evaluate_steps(obs, out)
    assert torch.all(per_step[:, [0, 2]] == 0) and torch.all(per_step[:, [1, 3]] != 0)
    torch.testing.assert_close(per_step.sum(dim=1), out.log_probs, rtol=0, atol=1e-5)
    with torch.no_grad():  # the other steps are plain ODE steps
        step = policy.step_function(policy.encode_observation(obs))
        chain = out.extras["denoise_chain"]
        for k in (0, 2):
            torch.testing.assert_close(chain[:, k + 1], step(None, chain[:, k], k).ode_mean, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("init", ["seeded", "zero"])
def test_deterministic_mode_is_deterministic(name, init):
    policy = tiny(name, deterministic_noise=init)
    obs = policy.example_obs(3)
    first, second = policy.act(obs, deterministic=True), policy.act(obs, deterministic=True)
    assert torch.equal(first.actions, second.actions)
    assert torch.all(first.log_probs == 0) and not first.extras["stochastic_steps"].any()
    assert not torch.allclose(first.actions, policy.act(obs).actions)
    # one fixed initial noise for every sample: a sample's action depends only on its own observation
    single = policy.act({k: v[:1] for k, v in obs.items()}, deterministic=True)
    torch.testing.assert_close(single.actions, first.actions[:1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("method", ["flow_sde", "flow_noise"])
def test_save_and_load_reproduce_outputs(name, method, tmp_path):
    policy = tiny(name, noise_method=method, action_low=[-2.0] * 7, action_high=[2.0] * 7)
    obs = policy.example_obs(2)
    out = policy.act(obs)
    policy.save_pretrained(tmp_path)
    loaded = load_policy(tmp_path)
    assert type(loaded) is type(policy) and loaded.config == policy.config
    torch.testing.assert_close(
        loaded.act(obs, deterministic=True).actions, policy.act(obs, deterministic=True).actions, rtol=0, atol=0
    )
    reloaded_eval, eval_ = loaded.evaluate(obs, out), policy.evaluate(obs, out)
    torch.testing.assert_close(reloaded_eval.log_probs, eval_.log_probs, rtol=0, atol=0)
    torch.testing.assert_close(reloaded_eval.values, eval_.values, rtol=0, atol=0)


@pytest.mark.parametrize("name", POLICIES)
def test_switching_noise_method_on_load_adds_a_fresh_noise_head(name, tmp_path):
    tiny(name).save_pretrained(tmp_path)
    loaded = load_policy(tmp_path, noise_method="flow_noise")
    obs = loaded.example_obs(2)
    out = loaded.act(obs)
    torch.testing.assert_close(loaded.evaluate(obs, out).log_probs, out.log_probs, rtol=0, atol=1e-5)


# Flow times exactly representable in binary, so GR00T's 1000 time buckets hold them exactly.
FLOW_TIMES = torch.tensor([0.125, 0.375, 0.625, 0.875])


def time_keyword(name: str) -> str:
    return {"pi0": "tau", "gr00t": "t", "flow_mlp": "tau"}[name]


@pytest.mark.parametrize("name", POLICIES)
def test_flow_matching_loss_decreases_on_a_tiny_batch(name):
    policy = tiny(name)
    cfg = policy.config
    obs = policy.example_obs(4)
    generator = torch.Generator().manual_seed(1)
    actions = torch.rand(4, cfg.action_chunk, cfg.action_dim, generator=generator) * 2 - 1
    noise = torch.randn(4, cfg.action_chunk, cfg.max_action_dim, generator=generator)
    fixed = {"noise": noise, time_keyword(name): FLOW_TIMES}
    # the tiny MLP memorises more slowly per step than the tiny transformers: a larger lr and more steps
    steps, lr = (60, 1e-2) if name == "flow_mlp" else (25, 3e-3)
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = policy.sft_loss(obs, actions, **fixed)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    # random times and noise stay finite and sane (one draw ranges about 1.4-2.4 here, so average several)
    random_draws = torch.stack([policy.sft_loss(obs, actions).detach() for _ in range(8)])
    assert torch.isfinite(random_draws).all() and random_draws.mean() < 2.5


@pytest.mark.parametrize("name", POLICIES)
def test_training_target_and_sampler_share_one_convention(name):
    """With the exact velocity of a one-point data distribution plugged in, the SFT loss is zero and
    the deterministic sampler lands on the data: the loss trains the field the sampler integrates."""
    policy = tiny(name, action_low=[-2.0] * 7, action_high=[3.0] * 7)
    cfg = policy.config
    obs = policy.example_obs(4)
    generator = torch.Generator().manual_seed(2)
    actions = torch.rand(4, cfg.action_chunk, cfg.action_dim, generator=generator) * 4 - 1.5
    data = torch.nn.functional.pad(policy.normalize_actions(actions), (0, cfg.max_action_dim - cfg.action_dim))
    noise = torch.randn(4, cfg.action_chunk, cfg.max_action_dim, generator=generator)
    if name in ("pi0", "flow_mlp"):  # u = noise - a = (x_tau - a) / tau
        policy.predict_velocity = lambda context, x, tau: ((x - data) / tau[:, None, None], None)
    else:  # GR00T: v = a - noise = (a - x_t) / (1 - t), t from the time bucket
        policy.gr00t_velocity = lambda context, x, buckets: (
            (data - x) / (1 - buckets.float() / cfg.num_timestep_buckets)[:, None, None],
            None,
        )
    assert policy.sft_loss(obs, actions, noise=noise, **{time_keyword(name): FLOW_TIMES}).item() < 1e-10
    torch.testing.assert_close(policy.act(obs, deterministic=True).actions, actions, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", VLA_POLICIES)
def test_lora_trains_only_adapters_in_the_language_model(name, tmp_path):
    base = tiny(name, detach_value_input=False)  # the last layer's adapters feed only the value head
    base.save_pretrained(tmp_path / "base")
    policy = load_policy(tmp_path / "base", lora_rank=4)
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable)
    assert not any(n.startswith("language_model.") and "lora_" not in n for n in trainable)
    obs = policy.example_obs(2)
    # fresh adapters (B = 0) leave the function unchanged
    torch.testing.assert_close(
        policy.act(obs, deterministic=True).actions, base.act(obs, deterministic=True).actions, rtol=0, atol=1e-6
    )
    evaluated = policy.evaluate(obs, policy.act(obs))
    (evaluated.log_probs.sum() + evaluated.values.sum()).backward()
    assert all(p.grad is not None for n, p in policy.named_parameters() if p.requires_grad)
    policy.save_pretrained(tmp_path / "lora")
    reloaded = load_policy(tmp_path / "lora")
    assert reloaded.config.lora_rank == 4
    torch.testing.assert_close(
        reloaded.act(obs, deterministic=True).actions, policy.act(obs, deterministic=True).actions, rtol=0, atol=0
    )


@pytest.mark.parametrize("name", VLA_POLICIES)
def test_gradient_checkpointing_gives_the_same_gradients(name):
    obs = tiny(name).example_obs(2)
    results = []
    for checkpointing in (False, True):
        policy = tiny(name, gradient_checkpointing=checkpointing).train()
        assert policy.language_model.layers[0].gradient_checkpointing == checkpointing
        torch.manual_seed(3)
        out = policy.act(obs)
        evaluated = policy.evaluate(obs, out)
        (evaluated.log_probs.sum() + evaluated.values.sum()).backward()
        grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
        results.append((evaluated.log_probs.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0])
    assert results[0][1].keys() == results[1][1].keys()
    for key in results[0][1]:
        torch.testing.assert_close(results[0][1][key], results[1][1][key], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("detach", [True, False])
def test_value_loss_reaches_the_backbone_only_when_not_detached(name, detach):
    policy = tiny(name, detach_value_input=detach)
    obs = policy.example_obs(2)
    policy.evaluate(obs, policy.act(obs)).values.sum().backward()
    head = [p.grad for n, p in policy.named_parameters() if n.startswith("value_head.")]
    backbone = [p.grad for n, p in policy.named_parameters() if not n.startswith(("value_head.", "noise_head."))]
    assert head and all(grad is not None and grad.abs().sum() > 0 for grad in head)
    reached = [grad is not None and bool(grad.abs().sum() > 0) for grad in backbone]
    assert any(reached) != detach


@pytest.mark.parametrize("name", VLA_POLICIES)
def test_frozen_backbone_parts_get_no_gradient(name):
    policy = tiny(name, freeze_vision_encoder=True, freeze_language_model=True)
    frozen = [n for n, p in policy.named_parameters() if not p.requires_grad]
    assert any(n.startswith("vision_tower.") for n in frozen) and any(n.startswith("language_model.") for n in frozen)
    obs = policy.example_obs(2)
    policy.evaluate(obs, policy.act(obs)).log_probs.sum().backward()
    assert all(p.grad is None for n, p in policy.named_parameters() if not p.requires_grad)


@pytest.mark.parametrize("name", VLA_POLICIES)
def test_real_size_preset_builds_on_a_device_context_in_bf16(name):
    """The inference benchmark builds the published sizes under `with torch.device(...)`; meta stands in for cuda."""
    with torch.device("meta"):
        policy = make_policy(name, size=REAL_SIZES[name])
    policy = policy.to(torch.bfloat16)
    assert policy.device.type == "meta" and policy.compute_dtype == torch.bfloat16
    assert 2.0e9 < sum(p.numel() for p in policy.parameters()) < 3.5e9


@pytest.mark.parametrize("name", POLICIES)
def test_bf16_policy_acts_and_evaluates(name):
    policy = tiny(name).to(torch.bfloat16)
    obs = policy.example_obs(2)
    out = policy.act(obs)
    assert out.actions.dtype == torch.float32 and torch.isfinite(out.actions).all()
    evaluated = policy.evaluate(obs, ActOutput(out.actions, out.log_probs, out.values, out.extras))
    assert torch.isfinite(evaluated.log_probs).all()


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize(
    "bad",
    [
        dict(noise_method="ddim"),
        dict(stochastic_steps="9"),
        dict(noise_level=0.0),
        dict(action_dim=64),
        dict(deterministic_noise="random"),
    ],
)
def test_invalid_sampling_settings_are_rejected(name, bad):
    with pytest.raises(ValueError):
        make_policy(name, size="tiny", **bad)


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("low, high", [(0.3, 0.1), (-0.1, 0.16), (0.12, 0.12)])
def test_flow_noise_std_bounds_are_checked_by_the_config(name, low, high):
    """Before: swapped or negative bounds passed the config (and train's pre-start checks) and failed only where a
    worker built the noise head, with a message naming no setting."""
    config_class = policy_class(name).config_class
    with pytest.raises(ValueError, match=rf"noise_std_min={low}, noise_std_max={high}: .*0 < noise_std_min < noise"):
        config_class(noise_method="flow_noise", noise_std_min=low, noise_std_max=high)


@pytest.mark.parametrize("name", POLICIES)
def test_evaluate_on_a_shuffled_minibatch_of_stacked_rollouts(name):
    """The actor stacks act outputs over time, flattens (T, N) and evaluates shuffled minibatches."""
    policy = tiny(name, stochastic_steps="random_one")
    steps = [(policy.example_obs(3), None) for _ in range(2)]
    steps = [(obs, policy.act(obs)) for obs, _ in steps]
    obs = {
        k: torch.cat([o[k] for o, _ in steps]) if k != "instruction" else sum((o[k] for o, _ in steps), [])
        for k in steps[0][0]
    }
    log_probs = torch.cat([out.log_probs for _, out in steps])
    extras = {k: torch.cat([out.extras[k] for _, out in steps]) for k in steps[0][1].extras}
    rows = torch.tensor([4, 0, 5, 2])
    minibatch_obs = {k: v[rows] if isinstance(v, torch.Tensor) else [v[i] for i in rows] for k, v in obs.items()}
    minibatch = ActOutput(
        actions=torch.zeros(4), log_probs=log_probs[rows], extras={k: v[rows] for k, v in extras.items()}
    )
    torch.testing.assert_close(policy.evaluate(minibatch_obs, minibatch).log_probs, log_probs[rows], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", POLICIES)
def test_ignored_state_dims_do_not_change_the_actions(name):
    """ignore_state_dims (the copycat fix): those dims never reach the model; the others still do."""
    policy = tiny(name, ignore_state_dims=[1])
    obs = policy.example_obs(2)
    base = policy.act(obs, deterministic=True).actions
    changed = dict(obs, state=obs["state"].clone())
    changed["state"][:, 1] += 5.0
    torch.testing.assert_close(policy.act(changed, deterministic=True).actions, base, rtol=0, atol=0)
    changed["state"][:, 0] += 5.0
    assert not torch.equal(policy.act(changed, deterministic=True).actions, base)
    with pytest.raises(ValueError, match=r"ignore_state_dims \[99\] are not state dims"):
        tiny(name, ignore_state_dims=[99])


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("reads_state", [True, False])
def test_value_head_reads_every_state_dim_only_when_asked(name, reads_state):
    """value_reads_state: the critic sees the state, the ignored dims too; otherwise only the prefix embedding."""
    policy = tiny(name, ignore_state_dims=[1], value_reads_state=reads_state)
    obs = policy.example_obs(2)
    base = policy.act(obs, deterministic=True).values
    changed = dict(obs, state=obs["state"].clone())
    changed["state"][:, 1] += 5.0  # a dim the policy never sees
    values = policy.act(changed, deterministic=True).values
    if reads_state:
        assert not torch.allclose(values, base)
    elif name == "pi0":  # pi0's prefix holds no state at all
        torch.testing.assert_close(values, base, rtol=0, atol=0)


@pytest.mark.parametrize("name", POLICIES)
def test_the_value_head_reads_the_normalised_state_clipped(name):
    """A dim far outside the demonstrations' bounds reaches the critic at +-value_state_clip, not at its full
    size (stop 49: a dim with a range of 0.0014 turned modest deviations into values of -71)."""

    def values(clip, offset):
        # normalised = raw; dim 3 is hidden from the policy, as the recipe hides the arm's state, so only the critic
        # reads it (flow_mlp's prefix is the state itself)
        policy = tiny(name, state_low=[-1.0] * 8, state_high=[1.0] * 8, ignore_state_dims=[3], value_state_clip=clip)
        obs = policy.example_obs(2)
        obs["state"] = torch.zeros_like(obs["state"])
        obs["state"][:, 3] = offset
        return policy.act(obs, deterministic=True).values

    torch.testing.assert_close(values(5.0, 50.0), values(5.0, 5.0), rtol=0, atol=0)
    assert not torch.allclose(values(5.0, 4.0), values(5.0, 5.0))
    assert not torch.allclose(values(None, 50.0), values(None, 5.0))
    with pytest.raises(ValueError, match=r"value_state_clip=0.0 must be > 0, or None"):
        tiny(name, value_state_clip=0.0)


@pytest.mark.parametrize("name", POLICIES)
def test_value_head_of_another_shape_is_replaced_on_load(name, tmp_path, caplog):
    """A checkpoint whose value head predates value_reads_state loads with a fresh head; the rest is kept."""
    old = tiny(name, value_reads_state=False)
    old.save_pretrained(tmp_path / "old")
    policy = load_policy(tmp_path / "old", value_reads_state=True)
    assert "fresh head" in caplog.text
    assert policy.value_head.net[0].in_features == old.value_head.net[0].in_features + policy.config.max_state_dim
    obs = policy.example_obs(2)
    torch.testing.assert_close(
        policy.act(obs, deterministic=True).actions, old.act(obs, deterministic=True).actions, rtol=0, atol=0
    )
