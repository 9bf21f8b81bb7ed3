"""GR00T-N1.5 converter on a tiny checkpoint written in NVIDIA's layout (backbone.eagle_model.*,
action_head.* with per-embodiment CategorySpecificLinear stacks, config.json, metadata.json).

The writer spells the upstream names out independently of the converter's tables."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from rlinf_embodied.policies import load_policy, make_policy
from rlinf_embodied.policies.gr00t.convert import convert_gr00t

NUM_EMBODIMENTS = 32
NEW_EMBODIMENT = 31
STATE_KEYS = {"arm": 6, "gripper": 2}
ACTION_KEYS = {"arm": 6, "gripper": 1}


def upstream_key(key: str, nested_vision_model: bool) -> str:
    head, rest = key.split(".", 1)
    if head == "vision_tower":
        return "backbone.eagle_model.vision_model." + (rest if nested_vision_model else "vision_model." + rest)
    if head == "mlp1":
        return "backbone.eagle_model.mlp1." + rest
    if head == "language_model":
        return "backbone.eagle_model.language_model.model." + rest
    if head in ("vl_self_attention", "dit"):
        rest = (
            rest.replace("attn1.to_out.", "attn1.to_out.0.")
            .replace("ff.0.", "ff.net.0.proj.")
            .replace("ff.2.", "ff.net.2.")
        )
        if head == "dit":
            rest = rest.replace("timestep_encoder.", "timestep_encoder.timestep_embedder.")
            return "action_head.model." + rest
        return "action_head.vl_self_attention." + rest
    return "action_head." + key  # vlln, future_tokens, position_embedding


def write_upstream_gr00t(policy, directory) -> None:
    os.makedirs(os.path.join(directory, "experiment_cfg"))
    cfg = policy.config
    nested = any(k.startswith("vision_tower.vision_model.") for k in policy.state_dict())
    state = {}
    for key, value in policy.state_dict().items():
        module = key.split(".")[0]
        if module in ("value_head", "noise_head"):
            continue
        if module in ("state_encoder", "action_encoder", "action_decoder"):
            layer, param = key.split(".")[1:]
            # CategorySpecificLinear: W (E, in, out), b (E, out); our embodiment sits at row 31
            stacked_shape = (NUM_EMBODIMENTS, *(value.t().shape if param == "weight" else value.shape))
            stacked = torch.randn(stacked_shape)
            stacked[NEW_EMBODIMENT] = value.t() if param == "weight" else value
            state[f"action_head.{module}.{layer}.{'W' if param == 'weight' else 'b'}"] = stacked
            continue
        state[upstream_key(key, nested)] = value.clone()
    state["backbone.eagle_model.language_model.lm_head.weight"] = (
        policy.language_model.embed_tokens.weight.detach().clone()
    )
    # a layer past select_layer (a checkpoint whose LLM was not truncated) is dropped by the converter
    for key, value in policy.language_model.layers[0].state_dict().items():
        state[f"backbone.eagle_model.language_model.model.layers.{cfg.select_layer}.{key}"] = torch.randn_like(value)
    save_file(state, os.path.join(directory, "model.safetensors"))
    config = {
        "model_type": "gr00t_n1_5",
        "action_horizon": cfg.action_chunk,
        "action_dim": cfg.max_action_dim,
        "backbone_cfg": {"select_layer": cfg.select_layer, "project_to_dim": None, "tune_llm": False},
        "action_head_cfg": {
            "action_horizon": cfg.action_chunk,
            "action_dim": cfg.max_action_dim,
            "max_action_dim": cfg.max_action_dim,
            "max_state_dim": cfg.max_state_dim,
            "hidden_size": cfg.hidden_size,
            "input_embedding_dim": cfg.input_embedding_dim,
            "backbone_embedding_dim": cfg.llm_hidden_size,
            "num_inference_timesteps": cfg.num_denoise_steps,
            "num_target_vision_tokens": cfg.num_target_vision_tokens,
            "max_seq_len": cfg.max_seq_len,
            "noise_beta_alpha": 1.5,
            "noise_beta_beta": 1.0,
            "noise_s": 0.999,
            "num_timestep_buckets": 1000,
            "diffusion_model_cfg": {
                "num_layers": cfg.dit_layers,
                "num_attention_heads": cfg.dit_heads,
                "attention_head_dim": cfg.dit_head_dim,
                "output_dim": cfg.hidden_size,
                "cross_attention_dim": cfg.llm_hidden_size,
                "interleave_self_attention": True,
                "norm_type": "ada_norm",
                "positional_embeddings": None,
                "dropout": 0.2,
            },
            "vl_self_attention_cfg": {
                "num_layers": cfg.vl_self_attention_layers,
                "num_attention_heads": cfg.vl_self_attention_heads,
                "attention_head_dim": cfg.vl_self_attention_head_dim,
                "dropout": 0.2,
            },
        },
    }
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(directory, "experiment_cfg", "metadata.json"), "w") as f:
        json.dump({"new_embodiment": metadata_entry(), "gr1": metadata_entry()}, f)


def key_stats(width: int, offset: float) -> dict:
    base = [offset + i for i in range(width)]
    return {
        "min": [v - 1.0 for v in base],
        "max": [v + 2.0 for v in base],
        "mean": base,
        "std": [1.0] * width,
        "q01": [v - 0.5 for v in base],
        "q99": [v + 1.5 for v in base],
    }


def metadata_entry() -> dict:
    return {
        "statistics": {
            "state": {key: key_stats(width, 10.0 * i) for i, (key, width) in enumerate(STATE_KEYS.items())},
            "action": {key: key_stats(width, 5.0 * i) for i, (key, width) in enumerate(ACTION_KEYS.items())},
        },
        "modalities": {
            "state": {key: {"shape": [width]} for key, width in STATE_KEYS.items()},
            "action": {key: {"shape": [width]} for key, width in ACTION_KEYS.items()},
        },
        "embodiment_tag": "new_embodiment",
    }


def concatenated(stat: str, keys: dict, spacing: float) -> list[float]:
    return [v for i, (key, width) in enumerate(keys.items()) for v in key_stats(width, spacing * i)[stat]]


def test_gr00t_checkpoint_converts_to_the_same_policy(tmp_path):
    torch.manual_seed(0)
    original = make_policy(
        "gr00t",
        size="tiny",
        action_low=concatenated("min", ACTION_KEYS, 5.0),
        action_high=concatenated("max", ACTION_KEYS, 5.0),
        state_low=concatenated("min", STATE_KEYS, 10.0),
        state_high=concatenated("max", STATE_KEYS, 10.0),
    )
    write_upstream_gr00t(original, tmp_path / "upstream")

    convert_gr00t(str(tmp_path / "upstream"), str(tmp_path / "converted"), size="tiny")
    converted = load_policy(tmp_path / "converted")

    assert converted.config.action_low == original.config.action_low
    assert converted.config.state_high == original.config.state_high
    original_params = dict(original.named_parameters())
    for name, param in converted.named_parameters():
        if not name.startswith(("value_head.", "noise_head.")):
            assert torch.equal(param, original_params[name]), name
    obs = original.example_obs(2)
    torch.testing.assert_close(
        converted.act(obs, deterministic=True).actions, original.act(obs, deterministic=True).actions, rtol=0, atol=1e-5
    )


def test_converter_picks_the_requested_embodiment(tmp_path):
    torch.manual_seed(0)
    original = make_policy("gr00t", size="tiny")
    write_upstream_gr00t(original, tmp_path / "upstream")
    other = convert_gr00t(str(tmp_path / "upstream"), size="tiny", embodiment_tag="gr1", norm_mode="quantile")
    assert not torch.equal(other.action_decoder.layer2.weight, original.action_decoder.layer2.weight)
    assert other.config.action_low == concatenated("q01", ACTION_KEYS, 5.0)
    with pytest.raises(ValueError, match="embodiment"):
        convert_gr00t(str(tmp_path / "upstream"), size="tiny", embodiment_tag="unitree_h1")


def test_converter_refuses_an_embodiment_id_unlike_the_tags(tmp_path):
    """The tag picks metadata.json's statistics and, in GR00T-N1.5's mapping, the weights' row: before, another
    --embodiment-id paired one embodiment's weights with another's statistics."""
    write_upstream_gr00t(make_policy("gr00t", size="tiny"), tmp_path / "upstream")
    with pytest.raises(ValueError, match=r"embodiment_tag='gr1' is embodiment 24 .* but embodiment_id=31"):
        convert_gr00t(str(tmp_path / "upstream"), size="tiny", embodiment_tag="gr1", embodiment_id=31)
    with pytest.raises(ValueError, match=r"unknown size 'huge'; valid: \['gr00t-n1.5-3b', 'tiny'\]"):
        convert_gr00t(str(tmp_path / "upstream"), size="huge")
    os.remove(tmp_path / "upstream" / "experiment_cfg" / "metadata.json")  # the tag picks no statistics now
    policy = convert_gr00t(str(tmp_path / "upstream"), size="tiny", embodiment_tag="gr1", embodiment_id=31)
    assert policy.config.action_low is None


def test_converter_keeps_a_lora_rank_override(tmp_path):
    torch.manual_seed(0)
    write_upstream_gr00t(make_policy("gr00t", size="tiny"), tmp_path / "upstream")
    convert_gr00t(str(tmp_path / "upstream"), str(tmp_path / "converted"), size="tiny", lora_rank=4)
    converted = load_policy(tmp_path / "converted")
    assert converted.config.lora_rank == 4
    assert any("lora_A" in name for name, _ in converted.named_parameters())
