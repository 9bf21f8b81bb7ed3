"""OpenVLA / OpenVLA-OFT tiny policies: shapes, act/evaluate agreement, gradients, checkpoints, errors."""

import math

import pytest
import torch

from rlinf_embodied.policies import load_policy, make_policy

VARIANTS = [
    ("openvla", {}),
    ("openvla_oft", {"action_head_type": "continuous"}),
    ("openvla_oft", {"action_head_type": "discrete"}),
]
IDS = ["openvla", "oft-continuous", "oft-discrete"]


def ragged_obs(policy, batch=3):
    obs = policy.example_obs(batch)
    obs["instruction"] = ["go", "put the long red block into the far bowl", "open it"][:batch]
    return obs


@pytest.mark.parametrize("name,overrides", VARIANTS, ids=IDS)
def test_act_shapes_and_evaluate_agreement(name, overrides):
    torch.manual_seed(0)
    policy = make_policy(name, size="tiny", **overrides)
    assert sum(p.numel() for p in policy.parameters()) < 1_000_000
    obs = ragged_obs(policy)
    out = policy.act(obs)
    chunk, dim = policy.config.action_chunk, policy.config.action_dim
    assert out.actions.shape == out.log_probs.shape == (3, chunk, dim)
    assert out.values.shape == (3,)
    assert torch.isfinite(out.actions).all() and torch.isfinite(out.log_probs).all()
    if overrides.get("action_head_type") != "continuous":  # categorical log-probs; Gaussian densities may exceed 1
        assert (out.log_probs <= 0).all()
    ev = policy.evaluate(obs, out)
    torch.testing.assert_close(ev.log_probs, out.log_probs, rtol=0, atol=1e-5)
    torch.testing.assert_close(ev.values, out.values, rtol=0, atol=1e-5)
    assert ev.entropy.shape == (3, chunk, dim) and torch.isfinite(ev.entropy).all()


def test_openvla_act_rescores_sampled_tokens_with_the_training_pass(monkeypatch):
    """rescore_log_probs: stochastic act takes its log-probs from evaluate's teacher-forced pass (bf16 rounding
    of the KV-cache decode made PPO's ratio start off 1 at 7B); deterministic act and the opt-out do not."""
    torch.manual_seed(0)
    policy = make_policy("openvla", size="tiny").to(torch.bfloat16)
    obs = ragged_obs(policy)
    calls = []
    original = policy.teacher_forced_log_p
    monkeypatch.setattr(policy, "teacher_forced_log_p", lambda *a: calls.append(1) or original(*a))
    out = policy.act(obs)
    assert len(calls) == 1
    ev = policy.evaluate(obs, out)
    assert torch.equal(ev.log_probs, out.log_probs) and torch.equal(ev.values, out.values)
    policy.act(obs, deterministic=True)
    policy.config.rescore_log_probs = False
    policy.act(obs)
    assert len(calls) == 2  # evaluate's own pass only


@pytest.mark.parametrize("name,overrides", VARIANTS, ids=IDS)
def test_padding_does_not_change_a_row(name, overrides):
    torch.manual_seed(0)
    policy = make_policy(name, size="tiny", **overrides)
    obs = ragged_obs(policy)
    alone = policy.act({k: v[1:2] for k, v in obs.items()}, deterministic=True)
    batched = policy.act(obs, deterministic=True)
    torch.testing.assert_close(alone.actions, batched.actions[1:2], rtol=0, atol=1e-5)
    torch.testing.assert_close(alone.log_probs, batched.log_probs[1:2], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name,overrides", VARIANTS, ids=IDS)
def test_deterministic_mode_is_deterministic(name, overrides):
    policy = make_policy(name, size="tiny", **overrides)
    obs = policy.example_obs(2)
    first, second = policy.act(obs, deterministic=True), policy.act(obs, deterministic=True)
    assert torch.equal(first.actions, second.actions)
    sampled = [policy.act(obs).actions for _ in range(3)]
    assert not all(torch.equal(sampled[0], s) for s in sampled[1:])  # sampling does explore


def test_openvla_decodes_upstream_bins_and_unnormalizes():
    policy = make_policy("openvla", size="tiny", action_dim=2, action_low=[0.0, -4.0], action_high=[2.0, 4.0])
    tokenizer = policy.action_tokenizer
    assert tokenizer.first_token_id == 516 - 256
    tokens = torch.tensor([515, 260])  # bin 1 -> centre 0, bin 256 -> clipped to the last centre (upstream)
    torch.testing.assert_close(tokenizer.tokens_to_actions(tokens), tokenizer.bin_centers[[0, 254]])
    norm = torch.tensor([-1.0, -0.3, 0.0, 0.999, 1.0])
    round_trip = tokenizer.tokens_to_actions(tokenizer.actions_to_tokens(norm))
    assert (round_trip - norm).abs().max() <= 2.0 / 255 + 1e-6
    out = policy.act(policy.example_obs(4))
    assert (out.actions[..., 0] >= 0).all() and (out.actions[..., 0] <= 2).all()
    assert (out.actions[..., 1].abs() <= 4).all()
    expected = policy.unnormalize_actions(tokenizer.tokens_to_actions(out.extras["action_tokens"]))
    torch.testing.assert_close(out.actions, expected)


@pytest.mark.parametrize("name,overrides", VARIANTS, ids=IDS)
def test_gradients_reach_every_trainable_parameter(name, overrides):
    torch.manual_seed(0)
    policy = make_policy(name, size="tiny", **overrides)
    obs = policy.example_obs(2)
    out = policy.act(obs)
    ev = policy.evaluate(obs, out)
    (ev.log_probs.sum() + ev.entropy.sum() + ev.values.sum()).backward()
    no_grad = [
        n for n, p in policy.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    # Only the embedding rows of unused tokens and lm_head rows outside the action tokens may stay zero: the
    # matrices as a whole must receive gradient.
    assert no_grad == [], no_grad


@pytest.mark.parametrize("name,overrides", VARIANTS[:2], ids=IDS[:2])
def test_lora_trains_only_adapters_and_heads(name, overrides, tmp_path):
    torch.manual_seed(0)
    policy = make_policy(name, size="tiny", lora_rank=4, **overrides)
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    heads = policy.head_prefixes
    assert trainable and all("lora_" in n or n.startswith(heads) for n in trainable)
    assert any("lora_" in n for n in trainable)
    obs = policy.example_obs(2)
    out = policy.act(obs)
    policy.evaluate(obs, out).log_probs.sum().backward()
    assert all(p.grad is not None for n, p in policy.named_parameters() if "lora_B" in n)
    policy.save_pretrained(tmp_path)
    loaded = load_policy(tmp_path)
    torch.testing.assert_close(loaded.evaluate(obs, out).log_probs, policy.evaluate(obs, out).log_probs)


@pytest.mark.parametrize("name,overrides", VARIANTS, ids=IDS)
def test_save_load_identical_outputs(name, overrides, tmp_path):
    torch.manual_seed(0)
    policy = make_policy(name, size="tiny", **overrides)
    policy.save_pretrained(tmp_path)
    loaded = load_policy(tmp_path)
    assert type(loaded) is type(policy) and loaded.config == policy.config
    obs = policy.example_obs(2)
    a, b = policy.act(obs, deterministic=True), loaded.act(obs, deterministic=True)
    assert torch.equal(a.actions, b.actions)
    torch.testing.assert_close(a.values, b.values, rtol=0, atol=0)
    out = policy.act(obs)
    torch.testing.assert_close(loaded.evaluate(obs, out).log_probs, out.log_probs, rtol=0, atol=1e-5)


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    plain = make_policy("openvla", size="tiny")
    checkpointed = make_policy("openvla", size="tiny", gradient_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    obs = plain.example_obs(2)
    out = plain.act(obs)
    for policy in (plain, checkpointed):
        policy.train()
        policy.evaluate(obs, out).log_probs.sum().backward()
    grad = lambda p: p.language_model.model.layers[0].self_attn.q_proj.weight.grad  # noqa: E731
    torch.testing.assert_close(grad(plain), grad(checkpointed))


def test_fsdp_units_are_the_transformer_blocks():
    policy = make_policy("openvla", size="tiny")
    cfg = policy.config
    units = policy.fsdp_units()
    assert len(units) == (cfg.dino_num_layers - 1) + (cfg.siglip_num_layers - 1) + cfg.num_layers


def test_clear_errors(tmp_path):
    policy = make_policy("openvla", size="tiny")
    obs = policy.example_obs(2)
    del obs["rgb"]
    with pytest.raises(KeyError, match="rgb"):
        policy.act(obs)
    oft = make_policy("openvla_oft", size="tiny")
    obs = oft.example_obs(2)
    del obs["wrist_rgb"]
    with pytest.raises(KeyError, match="wrist_rgb"):
        oft.act(obs)
    obs = oft.example_obs(2)
    del obs["state"]
    with pytest.raises(KeyError, match="state"):
        oft.act(obs)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        type(policy).from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"no policy checkpoint at .*missing.* \(no such directory\)"):
        load_policy(tmp_path / "missing")
    with pytest.raises(ValueError, match="action_dim=6"):
        make_policy("openvla", size="tiny", action_dim=6, action_low=[0.0] * 7, action_high=[1.0] * 7)
    policy.config.action_low, policy.config.action_high = [0.0] * 7, [1.0] * 7
    policy.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="action_dim=6 but action_low has 7"):
        load_policy(tmp_path / "ckpt", action_dim=6)
    oft.save_pretrained(tmp_path / "oft")
    with pytest.raises(ValueError, match="action_dim / action_chunk / state_dim and the size settings must match"):
        load_policy(tmp_path / "oft", action_dim=6)
    with pytest.raises(ValueError, match="action_head_type"):
        make_policy("openvla_oft", size="tiny", action_head_type="diffusion")
    with pytest.raises(ValueError, match="action_chunk"):
        make_policy("openvla", size="tiny", action_chunk=4)


def test_sft_losses_are_finite_and_differentiable():
    for name, overrides in VARIANTS:
        policy = make_policy(name, size="tiny", **overrides)
        obs = policy.example_obs(2)
        actions = policy.act(obs).actions
        loss = policy.sft_loss(obs, actions)
        loss.backward()
        assert torch.isfinite(loss) and loss.item() >= 0


def test_real_size_presets_match_published_architectures():
    with torch.device("meta"):
        policy = make_policy("openvla", size="openvla-7b")
        oft = make_policy("openvla_oft", size="openvla-oft-7b")
    llama = policy.language_model.config
    assert (llama.hidden_size, llama.num_hidden_layers, llama.num_attention_heads, llama.intermediate_size) == (
        4096,
        32,
        32,
        11008,
    )
    assert llama.vocab_size == 32064 and policy.action_tokenizer.first_token_id == 31744
    assert policy.projector.fc1.weight.shape == (4 * 2176, 2176) and policy.projector.fc3.weight.shape == (4096, 4096)
    dino, siglip = policy.vision_backbone.featurizer.config, policy.vision_backbone.fused_featurizer.config
    assert (dino.hidden_size, dino.num_hidden_layers + 1, dino.num_register_tokens) == (1024, 24, 4)
    assert (siglip.hidden_size, siglip.num_hidden_layers + 1, siglip.intermediate_size) == (1152, 27, 4304)
    total = sum(p.numel() for p in policy.parameters())
    assert 7.4e9 < total < 7.7e9, total  # OpenVLA-7B: 7.54B (minus the two unused last ViT blocks)
    assert oft.config.action_chunk == 8 and oft.action_head.model.fc1.weight.shape == (4096, 7 * 4096)


def test_openvla_oft_small_trains_from_scratch_size_and_hides_ignored_state_dims(tmp_path):
    """The from-scratch preset: one 96 px camera, a bf16 checkpoint under the device's 64 MiB, and
    ignore_state_dims (the copycat fix) keeps those dims from the proprio token, saved with it."""
    policy = make_policy("openvla_oft", size="openvla-oft-small", action_dim=4, state_dim=29, ignore_state_dims=[9, 10])
    parameters = sum(p.numel() for p in policy.parameters())
    assert 10e6 < parameters and parameters * 2 < 64 * 2**20, parameters
    assert policy.config.num_images == 1 and policy.config.image_size == 96
    obs = policy.example_obs(2)
    assert "wrist_rgb" not in obs and obs["rgb"].shape == (2, 96, 96, 3)
    base = policy.act(obs, deterministic=True).actions
    hidden, seen = {**obs, "state": obs["state"].clone()}, {**obs, "state": obs["state"].clone()}
    hidden["state"][:, 9:11] += 3.0
    seen["state"][:, 0] += 3.0
    assert torch.equal(policy.act(hidden, deterministic=True).actions, base)
    assert not torch.allclose(policy.act(seen, deterministic=True).actions, base)
    policy.save_pretrained(tmp_path / "p")
    assert load_policy(tmp_path / "p").config.ignore_state_dims == [9, 10]
    with pytest.raises(ValueError, match=r"ignore_state_dims \[29\] are not state dims"):
        make_policy("openvla_oft", size="tiny", action_dim=4, state_dim=29, ignore_state_dims=[29])


def test_prompts_are_tokenized_once_per_instruction_and_tokenizer(monkeypatch):
    """A rollout batch repeats a few instructions: each is tokenized once, again only after the tokenizer
    (a loaded checkpoint's) or a prompt setting changes."""
    from rlinf_embodied.policies.vla_common import policy as vla_policy

    policy = make_policy("openvla", size="tiny")
    calls = []
    real = vla_policy.prompt_ids
    monkeypatch.setattr(vla_policy, "prompt_ids", lambda *args: calls.append(args[2]) or real(*args))
    first = policy.prompt_token_ids(["pick up the red cube"] * 3 + ["open the top drawer"])
    again = policy.prompt_token_ids(["open the top drawer", "pick up the red cube"])
    assert sorted(calls) == ["open the top drawer", "pick up the red cube"]
    assert torch.equal(again[0][1], first[0][0]) and torch.equal(again[0][0], first[0][3])
    policy.config.lowercase_instruction = False
    policy.prompt_token_ids(["pick up the red cube"])
    assert len(calls) == 3


def test_oft_discrete_head_refuses_the_continuous_heads_depth():
    """Before: action_head_num_blocks=5 with action_head_type=discrete was accepted, and the discrete head builds no
    MLP-ResNet action head, so it changed nothing."""
    from rlinf_embodied.policies.openvla_oft.configuration import OpenVLAOFTConfig

    with pytest.raises(
        ValueError,
        match=r"action_head_num_blocks=5 would change nothing: the discrete head .*action_head_type='continuous'",
    ):
        OpenVLAOFTConfig(action_head_type="discrete", action_head_num_blocks=5, state_dim=8)
    assert OpenVLAOFTConfig(action_head_num_blocks=5, state_dim=8).action_head_num_blocks == 5  # the continuous head's
    # a saved discrete config holds the default, which loads
    assert OpenVLAOFTConfig(action_head_type="discrete", state_dim=8).action_head_num_blocks == 2


def test_freeze_vision_encoder_with_lora_is_refused_as_ineffective():
    """LoRA trains the adapters and heads only (apply_lora), so the vision encoder is frozen either way."""
    from rlinf_embodied.policies.openvla.configuration import OpenVLAConfig

    with pytest.raises(ValueError, match=r"freeze_vision_encoder=True would change nothing: lora_rank=4 freezes"):
        OpenVLAConfig(lora_rank=4, freeze_vision_encoder=True)
    assert OpenVLAConfig(lora_rank=4).lora_rank == 4 and OpenVLAConfig(freeze_vision_encoder=True).freeze_vision_encoder


def test_oft_init_log_std_override_sets_a_loaded_checkpoints_exploration_std(tmp_path):
    """RL after SFT starts from the checkpoint's std, which the L1 loss never trains; the override must reach it
    (before, the saved -2.0 was loaded over policy.overrides.init_log_std, which then did nothing)."""
    make_policy("openvla_oft", size="tiny").save_pretrained(tmp_path)
    assert torch.equal(load_policy(tmp_path).action_log_std.detach(), torch.full((7,), -2.0))
    loaded = load_policy(tmp_path, init_log_std=-2.6)
    torch.testing.assert_close(loaded.action_log_std.detach(), torch.full((7,), -2.6))
    obs = loaded.example_obs(2)
    _, std = loaded.gaussian(loaded.action_hidden_states(obs)[0])
    torch.testing.assert_close(std, torch.full_like(std, math.exp(-2.6)))


def test_a_checkpoint_saved_under_the_other_transformers_dino_layout_loads_the_same(tmp_path):
    """transformers 4.x names DINOv2's attention `attention.attention.query` ... `attention.output.dense`, 5.x
    `attention.q_proj` ... `attention.o_proj`: stop 62's OFT checkpoint from the GPU machine (4.x) failed to load here
    (5.x). The checkpoint is rewritten in the layout this transformers does not build, then loaded."""
    from safetensors.torch import load_file, save_file

    from rlinf_embodied.policies.vla_common.vision import DINO_ATTENTION_KEY, DINO_ATTENTION_NEW_TO_OLD

    torch.manual_seed(0)
    policy = make_policy("openvla_oft", size="tiny")
    policy.save_pretrained(tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    inverse = {old: new for new, old in DINO_ATTENTION_NEW_TO_OLD.items()}
    renamed, count = {}, 0
    for key, value in weights.items():
        match = DINO_ATTENTION_KEY.match(key)
        if match is not None:
            other = DINO_ATTENTION_NEW_TO_OLD.get(match["name"]) or inverse[match["name"]]
            key, count = f"{match['layer']}{other}{match['param']}", count + 1
        renamed[key] = value
    assert count >= 8 and set(renamed) != set(weights)  # every tiny DINO layer's q, k, v, o weights and biases
    save_file(renamed, str(tmp_path / "model.safetensors"))
    loaded = load_policy(tmp_path)
    obs = policy.example_obs(2)
    assert torch.equal(policy.act(obs, deterministic=True).actions, loaded.act(obs, deterministic=True).actions)
