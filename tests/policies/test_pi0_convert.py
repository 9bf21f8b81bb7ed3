"""pi0 converter on tiny checkpoints written in the upstream (LeRobot / openpi PyTorch) layouts.

The writer below builds the upstream key names by hand from LeRobot's layout (the inverse of the
converter's table, written independently), so a wrong entry in the converter fails the round trip.
"""

import json
import os
import re

import pytest
import torch
from safetensors.torch import save_file

from rlinf_embodied.policies import load_policy, make_policy
from rlinf_embodied.policies.flow.convert_utils import stats_to_bounds
from rlinf_embodied.policies.pi0.convert import convert_pi0

PALIGEMMA = "model.paligemma_with_expert.paligemma."
EXPERT = "model.paligemma_with_expert.gemma_expert."
STATE_MEAN, STATE_STD = [0.5 * i for i in range(8)], [1.0 + 0.25 * i for i in range(8)]
ACTION_MEAN, ACTION_STD = [0.1 * i for i in range(7)], [0.5 + 0.5 * i for i in range(7)]


def upstream_key(key: str, layout: str, nested_vision_model: bool) -> str:
    new = layout in ("new", "openpi")
    if key.startswith("vision_tower."):
        inner = key.removeprefix("vision_tower.")
        inner = inner if nested_vision_model else "vision_model." + inner
        return PALIGEMMA + ("model.vision_tower." if new else "vision_tower.") + inner
    if key.startswith("multi_modal_projector."):
        return PALIGEMMA + ("model." if new else "") + "multi_modal_projector.linear." + key.split(".", 1)[1]
    if key.startswith("language_model."):
        return PALIGEMMA + ("model.language_model." if new else "language_model.model.") + key.split(".", 1)[1]
    if key.startswith("action_expert."):
        return EXPERT + "model." + key.split(".", 1)[1]
    return "model." + key  # state_proj, action_in_proj, action_out_proj, action_time_mlp_{in,out}


def write_upstream_pi0(policy, directory, layout: str) -> None:
    """model.safetensors (sharded for the old layout), config.json and normalisation stats.

    Layouts: "new" (LeRobot >= 0.4), "old" (LeRobot <= 0.3, transformers < 4.52 PaliGemma nesting),
    "openpi" (openpi's own PyTorch port: the new nesting without LeRobot's leading "model.")."""
    os.makedirs(directory)
    nested = any(k.startswith("vision_tower.vision_model.") for k in policy.state_dict())
    state = {
        upstream_key(k, layout, nested): v.clone()
        for k, v in policy.state_dict().items()
        if not k.startswith(("value_head.", "noise_head."))
    }
    embed = policy.language_model.embed_tokens.weight.detach().clone()
    state[PALIGEMMA + ("lm_head.weight" if layout != "old" else "language_model.lm_head.weight")] = embed
    state[EXPERT + "lm_head.weight"] = torch.randn(policy.config.vocab_size, policy.config.expert_width)
    if layout == "openpi":
        state = {k.removeprefix("model."): v for k, v in state.items()}
    cfg = policy.config
    upstream_config = {
        "type": "pi0",
        "chunk_size": cfg.action_chunk,
        "n_action_steps": cfg.action_chunk,
        "max_state_dim": cfg.max_state_dim,
        "max_action_dim": cfg.max_action_dim,
        "tokenizer_max_length": cfg.max_token_len,
        "input_features": {
            "observation.state": {"type": "STATE", "shape": [8]},
            "observation.images.base_0_rgb": {"type": "VISUAL", "shape": [3, 224, 224]},
        },
        "output_features": {"action": {"type": "ACTION", "shape": [7]}},
    }
    if layout in ("new", "openpi"):
        upstream_config |= {
            "num_inference_steps": cfg.num_denoise_steps,
            "image_resolution": [cfg.image_size] * 2,
            "paligemma_variant": "gemma_2b",
            "action_expert_variant": "gemma_300m",
        }
        os.makedirs(os.path.join(directory, "assets", "libero"))
        stats = {
            "norm_stats": {
                "state": {"mean": STATE_MEAN, "std": STATE_STD, "q01": STATE_MEAN, "q99": STATE_STD},
                "actions": {"mean": ACTION_MEAN, "std": ACTION_STD, "q01": ACTION_MEAN, "q99": ACTION_STD},
            }
        }
        with open(os.path.join(directory, "assets", "libero", "norm_stats.json"), "w") as f:
            json.dump(stats, f)
        save_file(state, os.path.join(directory, "model.safetensors"))
    else:  # LeRobot <= 0.3: normaliser buffers inside the weights, two shards with an index
        upstream_config |= {"num_steps": cfg.num_denoise_steps, "resize_imgs_with_padding": [cfg.image_size] * 2}
        state["normalize_inputs.buffer_observation_state.mean"] = torch.tensor(STATE_MEAN)
        state["normalize_inputs.buffer_observation_state.std"] = torch.tensor(STATE_STD)
        state["unnormalize_outputs.buffer_action.mean"] = torch.tensor(ACTION_MEAN)
        state["unnormalize_outputs.buffer_action.std"] = torch.tensor(ACTION_STD)
        keys = sorted(state)
        shards = {
            "model-00001-of-00002.safetensors": keys[: len(keys) // 2],
            "model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
        }
        for name, shard_keys in shards.items():
            save_file({k: state[k] for k in shard_keys}, os.path.join(directory, name))
        index = {"weight_map": {k: name for name, shard_keys in shards.items() for k in shard_keys}}
        with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(upstream_config, f)


def mean_std_bounds(mean, std):
    return [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)]


@pytest.mark.parametrize("layout", ["new", "old", "openpi"])
def test_lerobot_checkpoint_converts_to_the_same_policy(layout, tmp_path):
    torch.manual_seed(0)
    action_low, action_high = mean_std_bounds(ACTION_MEAN, ACTION_STD)
    state_low, state_high = mean_std_bounds(STATE_MEAN, STATE_STD)
    original = make_policy(
        "pi0", size="tiny", action_low=action_low, action_high=action_high, state_low=state_low, state_high=state_high
    )
    write_upstream_pi0(original, tmp_path / "upstream", layout)

    convert_pi0(str(tmp_path / "upstream"), str(tmp_path / "converted"), size="tiny")
    converted = load_policy(tmp_path / "converted")

    for field in ("action_low", "action_high", "state_low", "state_high"):
        torch.testing.assert_close(
            torch.tensor(getattr(converted.config, field)), torch.tensor(getattr(original.config, field))
        )
    original_params = dict(original.named_parameters())
    for name, param in converted.named_parameters():
        if not name.startswith(("value_head.", "noise_head.")):
            assert torch.equal(param, original_params[name]), name
    obs = original.example_obs(2)
    torch.testing.assert_close(
        converted.act(obs, deterministic=True).actions, original.act(obs, deterministic=True).actions, rtol=0, atol=1e-5
    )


def test_converter_reads_settings_from_the_upstream_config(tmp_path):
    torch.manual_seed(0)
    original = make_policy("pi0", size="tiny")
    write_upstream_pi0(original, tmp_path / "upstream", "new")
    with open(tmp_path / "upstream" / "config.json") as f:
        upstream_config = json.load(f)
    upstream_config["num_inference_steps"] = 7
    with open(tmp_path / "upstream" / "config.json", "w") as f:
        json.dump(upstream_config, f)
    policy = convert_pi0(str(tmp_path / "upstream"), size="tiny", norm_mode="quantile")
    assert policy.config.num_denoise_steps == 7 and policy.config.action_dim == 7
    assert policy.config.action_low == ACTION_MEAN and policy.config.action_high == ACTION_STD


def test_converter_refuses_an_action_dim_that_would_cut_the_statistics(tmp_path):
    """Before: --action-dim 5 on a checkpoint whose config.json and statistics have 7 dims silently kept the first 5
    statistics."""
    original = make_policy("pi0", size="tiny")
    write_upstream_pi0(original, tmp_path / "upstream", "new")
    with pytest.raises(ValueError, match=r"action_dim=5 \(--action-dim\) but .*config.json gives .* 7 dimensions"):
        convert_pi0(str(tmp_path / "upstream"), size="tiny", action_dim=5)
    with open(tmp_path / "upstream" / "config.json") as f:
        upstream_config = json.load(f)
    del upstream_config["output_features"]  # now only the statistics say 7
    with open(tmp_path / "upstream" / "config.json", "w") as f:
        json.dump(upstream_config, f)
    with pytest.raises(
        ValueError, match=r"action statistics have 7 dimensions but the policy's action_dim=5: dims \[5, 6\]"
    ):
        convert_pi0(str(tmp_path / "upstream"), size="tiny", action_dim=5)


def test_statistics_may_drop_zero_padding_only():
    """openpi pads actions to the model's width before computing statistics: those dims (mean = std = 0) drop."""
    padded = {"mean": ACTION_MEAN[:5] + [0.0, 0.0], "std": ACTION_STD[:5] + [0.0, 0.0]}
    low, high = stats_to_bounds(padded, "mean_std", 5, "action")
    assert (low, high) == mean_std_bounds(ACTION_MEAN[:5], ACTION_STD[:5])
    with pytest.raises(ValueError, match=r"dims \[6\] hold real statistics"):
        stats_to_bounds({"mean": padded["mean"][:6] + [1.0], "std": padded["std"]}, "mean_std", 5, "action")


def test_converter_names_an_unknown_size_and_a_missing_tokenizer(tmp_path):
    """Before: a bare KeyError('huge'), and a tokenizer path that does not exist converted with byte-level tokens
    and a warning."""
    write_upstream_pi0(make_policy("pi0", size="tiny"), tmp_path / "upstream", "new")
    with pytest.raises(ValueError, match=r"unknown size 'huge'; valid: \['pi0-3b', 'pi0-small', 'tiny'\]"):
        convert_pi0(str(tmp_path / "upstream"), size="huge")
    missing = str(tmp_path / "no_tokenizer")
    with pytest.raises(FileNotFoundError, match=f"tokenizer path '{missing}' does not exist"):
        convert_pi0(str(tmp_path / "upstream"), size="tiny", tokenizer_path=missing)
    os.makedirs(missing)
    with pytest.raises(FileNotFoundError, match="holds no tokenizer_config.json"):
        convert_pi0(str(tmp_path / "upstream"), size="tiny", tokenizer_path=missing)


@pytest.mark.parametrize("name", ["pi0", "openvla", "openvla_oft", "gr00t"])
def test_converter_command_line_refuses_an_unknown_size(name, tmp_path, capsys, monkeypatch):
    import importlib

    module = importlib.import_module(f"rlinf_embodied.policies.{name}.convert")
    monkeypatch.setattr("sys.argv", ["convert", str(tmp_path), str(tmp_path / "out"), "--size", "huge"])
    with pytest.raises(SystemExit):
        module.main()
    assert "invalid choice: 'huge'" in capsys.readouterr().err


def test_an_upstream_layout_is_refused_with_the_converter_command(tmp_path):
    """Before: 'holds policy None, not 'pi0'' from from_pretrained and 'unknown policy None' from load_policy."""
    from rlinf_embodied.policies.pi0.modeling import Pi0Policy

    write_upstream_pi0(make_policy("pi0", size="tiny"), tmp_path / "upstream", "new")
    src = str(tmp_path / "upstream")
    command = re.escape(f"python -m rlinf_embodied.policies.pi0.convert {src} <dst>")
    with pytest.raises(ValueError, match=f"config.json names no policy.*upstream layout.*{command}"):
        Pi0Policy.from_pretrained(src)
    with pytest.raises(ValueError, match=f"names no policy.*one of: .*gr00t.convert .*{command}"):
        load_policy(src)


def test_converter_rejects_unknown_weights(tmp_path):
    original = make_policy("pi0", size="tiny")
    write_upstream_pi0(original, tmp_path / "upstream", "new")
    from safetensors.torch import load_file

    state = load_file(tmp_path / "upstream" / "model.safetensors")
    state["model.some_new_head.weight"] = torch.zeros(2)
    save_file(state, tmp_path / "upstream" / "model.safetensors")
    with pytest.raises(ValueError, match="does not know"):
        convert_pi0(str(tmp_path / "upstream"), size="tiny")


def test_converter_keeps_a_lora_rank_override(tmp_path):
    torch.manual_seed(0)
    original = make_policy("pi0", size="tiny")
    write_upstream_pi0(original, tmp_path / "upstream", "new")
    convert_pi0(str(tmp_path / "upstream"), str(tmp_path / "converted"), size="tiny", lora_rank=4, lora_alpha=8)
    converted = load_policy(tmp_path / "converted")
    assert converted.config.lora_rank == 4 and converted.config.lora_alpha == 8
    assert any("lora_A" in name for name, _ in converted.named_parameters())
