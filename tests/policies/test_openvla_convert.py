"""Converters from the upstream HF OpenVLA / OpenVLA-OFT layout, on tiny checkpoints written in that layout."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

from rlinf_embodied.policies import load_policy
from rlinf_embodied.policies.openvla.convert import convert_openvla_checkpoint
from rlinf_embodied.policies.openvla.modeling import OpenVLAPolicy
from rlinf_embodied.policies.openvla_oft.convert import convert_openvla_oft_checkpoint
from rlinf_embodied.policies.openvla_oft.modeling import OpenVLAOFTPolicy

WIDTH, DEPTH, PATCH, IMAGE, HEADS, REGS = 32, 2, 8, 32, 2, 4
NUM_PATCHES = (IMAGE // PATCH) ** 2
ACTION_STATS = {
    "q01": [-1.0, -2.0, 0.0],
    "q99": [1.0, 2.0, 1.0],
    "mask": [True, True, False],
    "mean": [0, 0, 0],
    "std": [1, 1, 1],
    "min": [-3, -3, 0],
    "max": [3, 3, 1],
}


def timm_vit(prefix: str, dino: bool, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random weights of a timm ViT (DINOv2-reg or SigLIP) under upstream's names."""
    r = lambda *shape: torch.randn(*shape, generator=gen) * 0.2  # noqa: E731
    state = {
        "pos_embed": r(1, NUM_PATCHES, WIDTH),
        "patch_embed.proj.weight": r(WIDTH, 3, PATCH, PATCH),
        "patch_embed.proj.bias": r(WIDTH),
        "norm.weight": r(WIDTH),
        "norm.bias": r(WIDTH),
    }
    if dino:
        state |= {"cls_token": r(1, 1, WIDTH), "reg_token": r(1, REGS, WIDTH)}
    else:
        state |= {"attn_pool.latent": r(1, 1, WIDTH), "attn_pool.q.weight": r(WIDTH, WIDTH)}
    for i in range(DEPTH):
        block = {
            "norm1.weight": 1 + r(WIDTH),
            "norm1.bias": r(WIDTH),
            "attn.qkv.weight": r(3 * WIDTH, WIDTH),
            "attn.qkv.bias": r(3 * WIDTH),
            "attn.proj.weight": r(WIDTH, WIDTH),
            "attn.proj.bias": r(WIDTH),
            "norm2.weight": 1 + r(WIDTH),
            "norm2.bias": r(WIDTH),
            "mlp.fc1.weight": r(2 * WIDTH, WIDTH),
            "mlp.fc1.bias": r(2 * WIDTH),
            "mlp.fc2.weight": r(WIDTH, 2 * WIDTH),
            "mlp.fc2.bias": r(WIDTH),
        }
        if dino:
            block |= {"ls1.scale_factor": 1 + r(WIDTH), "ls2.scale_factor": 1 + r(WIDTH)}
        state |= {f"blocks.{i}.{k}": v for k, v in block.items()}
    return {prefix + k: v for k, v in state.items()}


def timm_reference_features(state: dict, prefix: str, images: torch.Tensor, dino: bool) -> torch.Tensor:
    """timm's ViT forward up to the second-to-last block (upstream's get_intermediate_layers), patch tokens only."""
    w = lambda name: state[prefix + name]  # noqa: E731
    x = (
        F.conv2d(images, w("patch_embed.proj.weight"), w("patch_embed.proj.bias"), stride=PATCH)
        .flatten(2)
        .transpose(1, 2)
    )
    x = x + w("pos_embed")
    if dino:  # no_embed_class: CLS and registers get no position embedding
        x = torch.cat([w("cls_token").expand(len(x), -1, -1), w("reg_token").expand(len(x), -1, -1), x], dim=1)
    act = (lambda t: F.gelu(t)) if dino else (lambda t: F.gelu(t, approximate="tanh"))
    for i in range(DEPTH - 1):
        b = lambda name: w(f"blocks.{i}.{name}")  # noqa: E731
        h = F.layer_norm(x, (WIDTH,), b("norm1.weight"), b("norm1.bias"), eps=1e-6)
        q, k, v = (
            F.linear(h, b("attn.qkv.weight"), b("attn.qkv.bias"))
            .reshape(len(x), -1, 3, HEADS, WIDTH // HEADS)
            .permute(2, 0, 3, 1, 4)
        )
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        attn = F.linear(attn, b("attn.proj.weight"), b("attn.proj.bias"))
        x = x + (attn * b("ls1.scale_factor") if dino else attn)
        h = F.layer_norm(x, (WIDTH,), b("norm2.weight"), b("norm2.bias"), eps=1e-6)
        mlp = F.linear(act(F.linear(h, b("mlp.fc1.weight"), b("mlp.fc1.bias"))), b("mlp.fc2.weight"), b("mlp.fc2.bias"))
        x = x + (mlp * b("ls2.scale_factor") if dino else mlp)
    return x[:, 1 + REGS :] if dino else x


def write_upstream_openvla(path, gen) -> dict[str, torch.Tensor]:
    text = dict(
        vocab_size=520,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        rms_norm_eps=1e-5,
        max_position_embeddings=512,
        rope_theta=10000.0,
    )
    llama = LlamaForCausalLM(LlamaConfig(**text, tie_word_embeddings=False))
    state = timm_vit("vision_backbone.featurizer.", True, gen) | timm_vit(
        "vision_backbone.fused_featurizer.", False, gen
    )
    vision_dim = 2 * WIDTH
    state |= {
        "projector.fc1.weight": torch.randn(4 * vision_dim, vision_dim, generator=gen) * 0.1,
        "projector.fc1.bias": torch.zeros(4 * vision_dim),
        "projector.fc2.weight": torch.randn(64, 4 * vision_dim, generator=gen) * 0.1,
        "projector.fc2.bias": torch.zeros(64),
        "projector.fc3.weight": torch.randn(64, 64, generator=gen) * 0.1,
        "projector.fc3.bias": torch.zeros(64),
    }
    state |= {f"language_model.{k}": v.clone() for k, v in llama.state_dict().items()}
    path.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path / "model.safetensors"))
    config = {
        "architectures": ["OpenVLAForActionPrediction"],
        "model_type": "openvla",
        "use_fused_vision_backbone": True,
        "image_sizes": [IMAGE, IMAGE],
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        "text_config": text,
        "pad_token_id": 2,
        "pad_to_multiple_of": 4,
        "n_action_bins": 256,
        "norm_stats": {"bridge_orig": {"action": ACTION_STATS}, "fractal": {"action": ACTION_STATS}},
    }
    (path / "config.json").write_text(json.dumps(config))
    return state


TINY_HEADS = dict(size="tiny", unnorm_key="bridge_orig")


def test_openvla_converter_maps_timm_featurizers_exactly(tmp_path):
    gen = torch.Generator().manual_seed(0)
    upstream = write_upstream_openvla(tmp_path / "hf", gen)
    policy = convert_openvla_checkpoint(str(tmp_path / "hf"), str(tmp_path / "ours"), **TINY_HEADS)
    cfg = policy.config
    assert (cfg.action_dim, cfg.action_token_vocab_size, cfg.vocab_size) == (3, 516, 520)
    assert cfg.action_low == [-1.0, -2.0, -1.0] and cfg.action_high == [1.0, 2.0, 1.0]  # masked dim passes through
    images = torch.rand(2, 3, IMAGE, IMAGE, generator=gen)
    backbone = policy.vision_backbone
    with torch.no_grad():
        ours = backbone.featurize(images, torch.float32)
        dino_in = (images - backbone.dino_mean) / backbone.dino_std
        siglip_in = (images - backbone.siglip_mean) / backbone.siglip_std
        reference = torch.cat(
            [
                timm_reference_features(upstream, "vision_backbone.featurizer.", dino_in, True),
                timm_reference_features(upstream, "vision_backbone.fused_featurizer.", siglip_in, False),
            ],
            -1,
        )
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(policy.language_model.lm_head.weight, upstream["language_model.lm_head.weight"])
    torch.testing.assert_close(policy.projector.fc2.weight, upstream["projector.fc2.weight"])


def test_openvla_upstream_directory_loads_directly_and_round_trips(tmp_path):
    gen = torch.Generator().manual_seed(1)
    write_upstream_openvla(tmp_path / "hf", gen)
    direct = OpenVLAPolicy.from_pretrained(tmp_path / "hf", size="tiny", unnorm_key="fractal")
    converted = convert_openvla_checkpoint(str(tmp_path / "hf"), str(tmp_path / "ours"), **TINY_HEADS)
    loaded = load_policy(tmp_path / "ours")
    direct.value_head.load_state_dict(converted.value_head.state_dict())  # fresh RL heads differ
    obs = converted.example_obs(2)
    outs = [p.act(obs, deterministic=True) for p in (direct, converted, loaded)]
    assert torch.equal(outs[0].actions, outs[1].actions) and torch.equal(outs[1].actions, outs[2].actions)
    torch.testing.assert_close(outs[1].values, outs[2].values)
    with pytest.raises(
        ValueError, match=r"several datasets, \['bridge_orig', 'fractal'\].*openvla.convert .* --unnorm-key"
    ):
        convert_openvla_checkpoint(str(tmp_path / "hf"), None, size="tiny")  # two datasets, none chosen
    with pytest.raises(ValueError, match="action_dim=7 but action_low has 3"):
        convert_openvla_checkpoint(str(tmp_path / "hf"), None, action_dim=7, **TINY_HEADS)


def test_openvla_oft_converter_loads_action_head_and_proprio(tmp_path):
    gen = torch.Generator().manual_seed(2)
    src = tmp_path / "hf"
    write_upstream_openvla(src, gen)
    reference = OpenVLAOFTPolicy.from_preset("tiny", action_dim=3)
    head = {f"module.{k}": v for k, v in reference.action_head.state_dict().items()}
    torch.save(head, src / "action_head--150000_checkpoint.pt")
    torch.save(reference.proprio_projector.state_dict(), src / "proprio_projector--150000_checkpoint.pt")
    proprio_stats = {"q01": [-1.0] * 8, "q99": [2.0] * 8}
    (src / "dataset_statistics.json").write_text(
        json.dumps({"libero_spatial": {"action": ACTION_STATS, "proprio": proprio_stats}})
    )
    policy = convert_openvla_oft_checkpoint(str(src), str(tmp_path / "ours"), size="tiny", unnorm_key="libero_spatial")
    assert policy.config.action_head_type == "continuous" and policy.config.state_high == [2.0] * 8
    torch.testing.assert_close(policy.action_head.model.fc2.weight, reference.action_head.model.fc2.weight)
    torch.testing.assert_close(policy.proprio_projector.fc1.weight, reference.proprio_projector.fc1.weight)
    loaded = load_policy(tmp_path / "ours")
    obs = policy.example_obs(2)
    a, b = policy.act(obs, deterministic=True), loaded.act(obs, deterministic=True)
    assert a.actions.shape == (2, 4, 3) and torch.equal(a.actions, b.actions)
