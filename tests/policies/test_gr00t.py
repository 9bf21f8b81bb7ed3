"""GR00T-specific tests: GR00T's own time convention, Eagle's pixel shuffle, published sizes."""

import torch

from rlinf_embodied.policies import make_policy
from rlinf_embodied.policies.gr00t.modeling import pixel_shuffle


def test_deterministic_act_is_gr00ts_euler_loop():
    """GR00T integrates x += v / K from t = 0 (noise) with bucketed times int(k / K * 1000)."""
    torch.manual_seed(0)
    policy = make_policy("gr00t", size="tiny")
    obs = policy.example_obs(2)
    steps = policy.config.num_denoise_steps
    with torch.no_grad():
        context = policy.encode_observation(obs)
        x = policy.initial_noise(2, deterministic=True)
        for k in range(steps):
            bucket = torch.full((2,), int(k / steps * policy.config.num_timestep_buckets))
            velocity, _ = policy.gr00t_velocity(context, x, bucket)
            x = x + velocity / steps
    out = policy.act(obs, deterministic=True)
    torch.testing.assert_close(out.extras["denoise_chain"][:, -1], x, rtol=0, atol=1e-5)


def eagle_pixel_shuffle(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Eagle 2.5's op sequence on (n, w, h, c), kept here as the reference ordering."""
    n, w, h, c = x.size()
    x = x.view(n, w, int(h * scale), int(c / scale)).permute(0, 2, 1, 3).contiguous()
    x = x.view(n, int(h * scale), int(w * scale), int(c / (scale * scale))).permute(0, 2, 1, 3).contiguous()
    return x


def test_pixel_shuffle_matches_eagle_ordering():
    patches = torch.randn(2, 16, 12)  # a 4 x 4 grid of 12-channel patches
    reference = eagle_pixel_shuffle(patches.reshape(2, 4, 4, 12), 0.5).reshape(2, -1, 48)
    assert torch.equal(pixel_shuffle(patches, 0.5), reference)


def test_backbone_reads_an_intermediate_layer_of_the_llm():
    with torch.device("meta"):
        policy = make_policy("gr00t", size="gr00t-n1.5-3b")
    llm = policy.language_model.config
    assert len(policy.language_model.layers) == 12  # GR00T-N1.5 keeps layers 0..11 of Qwen3-1.7B
    assert (llm.hidden_size, llm.intermediate_size, llm.num_attention_heads, llm.num_key_value_heads) == (
        2048,
        6144,
        16,
        8,
    )
    assert len(policy.dit.transformer_blocks) == 16 and policy.dit.proj_out_2.out_features == 1024
    assert policy.dit.transformer_blocks[0].attn1.to_k.in_features == 2048  # cross-attention to the VLM
    assert policy.dit.transformer_blocks[1].attn1.to_k.in_features == 1536  # interleaved self-attention
    assert policy.config.action_chunk == 16 and policy.config.num_denoise_steps == 4
    assert policy.mlp1[1].in_features == 4 * 1152  # pixel shuffle feeds 2 x 2 patches per token


def test_image_tokens_per_camera():
    policy = make_policy("gr00t", size="tiny")
    cfg = policy.config
    tokens, valid = policy.backbone_features(policy.example_obs(2))
    per_camera = ((cfg.image_size // cfg.vision_patch_size) // 2) ** 2
    assert tokens.shape == (2, 2 * per_camera + cfg.max_token_len, cfg.backbone_width)
    assert torch.all(tokens[~valid] == 0)
