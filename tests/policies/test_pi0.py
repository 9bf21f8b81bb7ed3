"""pi0-specific tests: the cached-prefix expert pass equals openpi's joint (layer-interleaved) forward."""

import torch
from transformers.models.gemma.modeling_gemma import apply_rotary_pos_emb, repeat_kv

from rlinf_embodied.policies import make_policy


def openpi_joint_velocity(policy, obs, x, tau):
    """Reference: openpi's PaliGemmaWithExpert forward over one [prefix; suffix] sequence.

    Per layer, each model projects its own tokens to q/k/v, attention runs over the concatenation with
    openpi's 2-D mask (cumulative "att" blocks: prefix 0, state 1, first action 1, other actions 0),
    and each model applies its own o_proj / norms / MLP to its part.
    """
    prefix, prefix_valid = policy.embed_prefix(obs)
    suffix = policy.embed_suffix(policy.normalized_state(obs), x, tau)
    batch, prefix_len, suffix_len = prefix.shape[0], prefix.shape[1], suffix.shape[1]
    valid = torch.cat([prefix_valid, torch.ones(batch, suffix_len, dtype=torch.bool)], dim=1)
    blocks = torch.tensor([0] * prefix_len + [1, 1] + [0] * (suffix_len - 2)).cumsum(0)
    allowed = (blocks[None, :] <= blocks[:, None])[None] & valid[:, None, :] & valid[:, :, None]
    bias = torch.zeros(allowed.shape).masked_fill(~allowed, -1e9)[:, None]
    positions = valid.long().cumsum(1) - 1
    hidden = [prefix, suffix]
    cos, sin = policy.language_model.rotary_emb(prefix, positions)
    for layers in zip(policy.language_model.layers, policy.action_expert.layers):
        queries, keys, values = [], [], []
        for layer, h in zip(layers, hidden):
            normed = layer.input_layernorm(h)
            shape = (*h.shape[:2], -1, layer.self_attn.head_dim)
            queries.append(layer.self_attn.q_proj(normed).view(shape).transpose(1, 2))
            keys.append(layer.self_attn.k_proj(normed).view(shape).transpose(1, 2))
            values.append(layer.self_attn.v_proj(normed).view(shape).transpose(1, 2))
        q, k = apply_rotary_pos_emb(torch.cat(queries, 2), torch.cat(keys, 2), cos, sin)
        groups = layers[0].self_attn.num_key_value_groups
        k, v = repeat_kv(k, groups), repeat_kv(torch.cat(values, 2), groups)
        weights = torch.softmax(q @ k.transpose(2, 3) * layers[0].self_attn.scaling + bias, dim=-1)
        attended = (weights @ v).transpose(1, 2).flatten(2)
        parts = attended.split([prefix_len, suffix_len], dim=1)
        new_hidden = []
        for layer, h, part in zip(layers, hidden, parts):
            h = h + layer.self_attn.o_proj(part)
            new_hidden.append(h + layer.mlp(layer.post_attention_layernorm(h)))
        hidden = new_hidden
    return policy.action_out_proj(policy.action_expert.norm(hidden[1])[:, 1:])


def test_cached_prefix_expert_pass_equals_openpi_joint_forward():
    torch.manual_seed(0)
    policy = make_policy("pi0", size="tiny")
    obs = policy.example_obs(3)
    obs["instruction"] = ["a", "a much longer instruction with padding", "pick"]  # ragged language padding
    x = torch.randn(3, policy.config.action_chunk, policy.config.max_action_dim)
    tau = torch.tensor([1.0, 0.5, 0.25])
    with torch.no_grad():
        ours, _ = policy.predict_velocity(policy.encode_observation(obs), x, tau)
        reference = openpi_joint_velocity(policy, obs, x, tau)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)


def test_prefix_tokens_and_positions():
    policy = make_policy("pi0", size="tiny")
    cfg = policy.config
    obs = policy.example_obs(2)
    obs["instruction"] = ["open it", "go"]
    tokens, valid = policy.embed_prefix(obs)
    image_tokens = 2 * (cfg.image_size // cfg.vision_patch_size) ** 2  # main + wrist camera
    assert tokens.shape == (2, image_tokens + cfg.max_token_len, cfg.vlm_width)
    assert valid[:, :image_tokens].all() and not valid[:, -1].any()  # right-padded language
    assert valid[:, image_tokens:].sum(1).tolist() == [len("open it\n"), len("go\n")]  # byte-level tokens
    del obs["wrist_rgb"]
    assert policy.embed_prefix(obs)[0].shape[1] == image_tokens // 2 + cfg.max_token_len


def test_expert_sizes_follow_openpi_gemma_300m():
    with torch.device("meta"):
        policy = make_policy("pi0", size="pi0-3b")
    expert = policy.action_expert.config
    assert (expert.hidden_size, expert.num_hidden_layers, expert.intermediate_size) == (1024, 18, 4096)
    assert (expert.num_attention_heads, expert.num_key_value_heads, expert.head_dim) == (8, 1, 256)
    vlm = policy.language_model.config
    assert (vlm.hidden_size, vlm.num_hidden_layers, vlm.intermediate_size, vlm.vocab_size) == (2048, 18, 16384, 257152)
    assert policy.config.action_chunk == 50 and policy.config.max_action_dim == 32
    assert policy.vision_tower.config.patch_size == 14 and policy.vision_tower.config.num_hidden_layers == 27


def test_real_preset_checkpoints_activations_unless_turned_off():
    """pi0-3b's actor ran out of an H200's memory without it (stop 32); the override still turns it off."""
    with torch.device("meta"):
        default = make_policy("pi0", size="pi0-3b")
        off = make_policy("pi0", size="pi0-3b", gradient_checkpointing=False)
    assert default.config.gradient_checkpointing and not off.config.gradient_checkpointing
    assert all(model.is_activation_checkpointing for model in default.checkpointing_models())
    assert not any(model.is_activation_checkpointing for model in off.checkpointing_models())


def test_conv_stem_replaces_the_patchify_conv_and_round_trips(tmp_path):
    """vision_stem='conv': same token grid, gradients reach the stem, save/load keeps its weights."""
    from rlinf_embodied.policies.common.conv_stem import ConvStem
    from rlinf_embodied.policies.pi0.modeling import Pi0Policy

    policy = make_policy("pi0", size="tiny", vision_stem="conv")
    vision = getattr(policy.vision_tower, "vision_model", policy.vision_tower)
    assert isinstance(vision.embeddings.patch_embedding, ConvStem)
    obs = policy.example_obs(3)
    prefix, _ = policy.embed_prefix(obs)
    patch_policy = make_policy("pi0", size="tiny")
    assert prefix.shape == patch_policy.embed_prefix(obs)[0].shape  # same number of image tokens
    loss = policy.sft_loss(obs, torch.randn(3, policy.config.action_chunk, policy.config.action_dim))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vision.embeddings.patch_embedding.parameters())
    policy.save_pretrained(tmp_path)
    loaded = Pi0Policy.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.embed_prefix(obs)[0], policy.embed_prefix(obs)[0])


def test_conv_stem_rejects_a_patch_size_it_cannot_reach():
    import pytest

    with pytest.raises(ValueError, match="power of two.*got 12"):
        make_policy("pi0", size="pi0-small", vision_stem="conv")
    with pytest.raises(ValueError, match="vision_stem='convolution' is not one of"):
        make_policy("pi0", size="tiny", vision_stem="convolution")
