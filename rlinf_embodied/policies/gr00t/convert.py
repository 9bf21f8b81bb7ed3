"""Convert a local GR00T-N1.5 checkpoint (nvidia/GR00T-N1.5-3B or a fine-tune of it) into a
save_pretrained directory of this package.

Upstream layout (model-*.safetensors + model.safetensors.index.json, config.json, and for
fine-tunes experiment_cfg/metadata.json):

    backbone.eagle_model.vision_model.vision_model.*     -> vision_tower.*
    backbone.eagle_model.mlp1.{0,1,3}.*                  -> mlp1.{0,1,3}.*
    backbone.eagle_model.language_model.model.*          -> language_model.*   (layers >= select_layer dropped)
    backbone.eagle_linear.*                              -> eagle_linear.*
    action_head.vlln.*                                   -> vlln.*
    action_head.vl_self_attention.transformer_blocks.N.* -> vl_self_attention.transformer_blocks.N.*
    action_head.model.*                                  -> dit.*  (timestep_encoder.timestep_embedder.* -> timestep_encoder.*)
        ...attn1.to_out.0.* -> attn1.to_out.*, ff.net.0.proj.* -> ff.0.*, ff.net.2.* -> ff.2.*
    action_head.{state_encoder,action_encoder,action_decoder}.<layer>.{W,b}
        per-embodiment stacks (E, in, out) / (E, out): row `embodiment_id` becomes nn.Linear weight W[e].T, bias b[e]
    action_head.future_tokens / position_embedding       -> future_tokens / position_embedding

Normalisation: experiment_cfg/metadata.json holds per-embodiment statistics per state/action key;
the keys' statistics are concatenated in the order of the metadata's modalities and turned into
bounds with `norm_mode` (GR00T's default normaliser is min_max).

    python -m rlinf_embodied.policies.gr00t.convert SRC DST [--embodiment-tag new_embodiment] [--tokenizer DIR]
        [--overwrite]
"""

from __future__ import annotations

import argparse
import json
import logging
import os

import torch

from ..flow.convert_utils import (
    add_output_arguments,
    check_converter_paths,
    check_tokenizer_path,
    finish_conversion,
    load_safetensors_dir,
    preset_settings,
    save_converted,
    stats_to_bounds,
    unknown_keys_error,
)
from ..flow.utils import skip_weight_init
from .configuration import GR00T_PRESETS, Gr00tConfig
from .modeling import Gr00tPolicy

logger = logging.getLogger(__name__)

# GR00T-N1.5's EMBODIMENT_TAG_MAPPING (projector index per robot); other tags need --embodiment-id.
EMBODIMENT_IDS = {"new_embodiment": 31, "oxe_droid": 17, "agibot_genie1": 26, "gr1": 24, "so100": 2, "unitree_g1": 3}
EMBODIMENT_MODULES = ("state_encoder", "action_encoder", "action_decoder")
KEY_PREFIXES: list[tuple[str, str]] = [
    ("backbone.eagle_model.vision_model.", "vision_tower."),
    ("backbone.eagle_model.mlp1.", "mlp1."),
    ("backbone.eagle_model.language_model.model.", "language_model."),
    ("backbone.eagle_linear.", "eagle_linear."),
    ("action_head.vlln.", "vlln."),
    ("action_head.vl_self_attention.", "vl_self_attention."),
    ("action_head.model.timestep_encoder.timestep_embedder.", "dit.timestep_encoder."),
    ("action_head.model.", "dit."),
    ("action_head.future_tokens.", "future_tokens."),
    ("action_head.position_embedding.", "position_embedding."),
]
BLOCK_RENAMES = ((".attn1.to_out.0.", ".attn1.to_out."), (".ff.net.0.proj.", ".ff.0."), (".ff.net.2.", ".ff.2."))


def map_gr00t_key(key: str, nested_vision_model: bool, select_layer: int) -> str | None:
    """Our key for an upstream backbone/DiT key; None for dropped ones (lm_head, unused LLM layers)."""
    if key.startswith("backbone.eagle_model.language_model.lm_head."):
        return None
    for upstream, ours in KEY_PREFIXES:
        if key.startswith(upstream):
            mapped = ours + key[len(upstream) :]
            break
    else:
        raise unknown_keys_error("GR00T", [key])
    if ours == "vision_tower.":
        inner = mapped[len("vision_tower.") :]
        if not nested_vision_model:
            inner = inner.removeprefix("vision_model.")
        if inner.startswith(("head.", "vision_model.head.")):
            return None  # Eagle replaces SigLIP's pooling head by Identity
        mapped = "vision_tower." + inner
    if ours == "language_model." and mapped.startswith("language_model.layers."):
        if int(mapped.split(".")[2]) >= select_layer:
            return None
    for old, new in BLOCK_RENAMES:
        mapped = mapped.replace(old, new)
    return mapped


def embodiment_linear(upstream: dict[str, torch.Tensor], prefix: str, embodiment_id: int) -> dict[str, torch.Tensor]:
    """One embodiment's slice of a CategorySpecificLinear (W: (E, in, out), b: (E, out)) as nn.Linear."""
    weight, bias = upstream[prefix + ".W"], upstream[prefix + ".b"]
    if not 0 <= embodiment_id < weight.shape[0]:
        raise ValueError(f"embodiment_id {embodiment_id} outside the checkpoint's {weight.shape[0]} embodiments")
    return {"weight": weight[embodiment_id].t().contiguous(), "bias": bias[embodiment_id].contiguous()}


def convert_state_dict(
    upstream: dict[str, torch.Tensor], embodiment_id: int, nested_vision_model: bool, select_layer: int
) -> dict[str, torch.Tensor]:
    state = {}
    for key, value in upstream.items():
        module = key.removeprefix("action_head.").split(".")[0]
        if key.startswith("action_head.") and module in EMBODIMENT_MODULES:
            continue
        if key.endswith((".pe", "inv_freq")):
            continue  # buffers
        mapped = map_gr00t_key(key, nested_vision_model, select_layer)
        if mapped is not None:
            state[mapped] = value
    layers = {
        "state_encoder": ("layer1", "layer2"),
        "action_encoder": ("W1", "W2", "W3"),
        "action_decoder": ("layer1", "layer2"),
    }
    for module, names in layers.items():
        for name in names:
            linear = embodiment_linear(upstream, f"action_head.{module}.{name}", embodiment_id)
            for param, value in linear.items():
                state[f"{module}.{name}.{param}"] = value
    return state


def config_from_gr00t(src: str) -> dict:
    """Config overrides from GR00T's config.json (action head sizes, horizon, steps, select layer)."""
    path = os.path.join(src, "config.json")
    if not os.path.isfile(path):
        logger.warning("%s has no config.json; using the preset's settings", src)
        return {}
    with open(path) as f:
        upstream = json.load(f)
    head, backbone = upstream.get("action_head_cfg", {}), upstream.get("backbone_cfg", {})
    dit, vl = head.get("diffusion_model_cfg", {}), head.get("vl_self_attention_cfg", {})
    if dit.get("positional_embeddings") or not dit.get("interleave_self_attention", True):
        raise ValueError("only GR00T-N1.5's DiT (interleaved self-attention, no positional embeddings) is supported")
    picks = {
        "action_chunk": head.get("action_horizon"),
        "max_action_dim": head.get("max_action_dim", head.get("action_dim")),
        "max_state_dim": head.get("max_state_dim"),
        "num_denoise_steps": head.get("num_inference_timesteps"),
        "hidden_size": head.get("hidden_size"),
        "input_embedding_dim": head.get("input_embedding_dim"),
        "num_target_vision_tokens": head.get("num_target_vision_tokens"),
        "max_seq_len": head.get("max_seq_len"),
        "num_timestep_buckets": head.get("num_timestep_buckets"),
        "noise_beta_alpha": head.get("noise_beta_alpha"),
        "noise_beta_beta": head.get("noise_beta_beta"),
        "noise_s": head.get("noise_s"),
        "dit_layers": dit.get("num_layers"),
        "dit_heads": dit.get("num_attention_heads"),
        "dit_head_dim": dit.get("attention_head_dim"),
        "vl_self_attention_layers": vl.get("num_layers"),
        "vl_self_attention_heads": vl.get("num_attention_heads"),
        "vl_self_attention_head_dim": vl.get("attention_head_dim"),
        "select_layer": backbone.get("select_layer"),
        "backbone_project_to_dim": backbone.get("project_to_dim"),
    }
    overrides = {key: value for key, value in picks.items() if value is not None}
    if "backbone_project_to_dim" in backbone and backbone["project_to_dim"] is None:
        overrides["backbone_project_to_dim"] = None
    return overrides


def find_metadata(src: str, embodiment_tag: str) -> dict | None:
    """The embodiment's entry of experiment_cfg/metadata.json, if the checkpoint has one."""
    path = os.path.join(src, "experiment_cfg", "metadata.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        metadata = json.load(f)
    if embodiment_tag not in metadata:
        raise ValueError(f"{path} has no embodiment {embodiment_tag!r} (has {sorted(metadata)})")
    return metadata[embodiment_tag]


def concatenated_stats(entry: dict, modality: str) -> dict[str, list[float]]:
    """Concatenate the per-key statistics of one modality ("state" / "action") in modality order."""
    per_key = entry["statistics"][modality]
    order = list(entry.get("modalities", {}).get(modality, per_key))
    stats: dict[str, list[float]] = {}
    for key in order:
        for stat, values in per_key[key].items():
            stats.setdefault(stat, []).extend(torch.as_tensor(values, dtype=torch.float64).flatten().tolist())
    return stats


def resolve_embodiment_id(embodiment_tag: str, embodiment_id: int | None, picks_statistics: bool) -> int:
    """The projector row to convert: `embodiment_id`, else GR00T-N1.5's fixed id of a known tag. Where the tag also
    picks the statistics (the checkpoint has experiment_cfg/metadata.json), a known tag with another id would pair
    one embodiment's weights with another's statistics; without them the tag only supplies the default id."""
    known_id = EMBODIMENT_IDS.get(embodiment_tag)
    if embodiment_id is None:
        if known_id is None:
            raise ValueError(
                f"unknown embodiment tag {embodiment_tag!r}: pass embodiment_id explicitly (known tags: "
                f"{sorted(EMBODIMENT_IDS)})"
            )
        return known_id
    if picks_statistics and known_id is not None and embodiment_id != known_id:
        raise ValueError(
            f"embodiment_tag={embodiment_tag!r} is embodiment {known_id} in GR00T-N1.5's mapping, but "
            f"embodiment_id={embodiment_id}: the weights would be one embodiment's and the statistics another's; drop "
            f"--embodiment-id, or pass the tag of embodiment {embodiment_id}"
        )
    return embodiment_id


def convert_gr00t(
    src: str,
    dst: str | None = None,
    *,
    size: str = "gr00t-n1.5-3b",
    embodiment_tag: str = "new_embodiment",
    embodiment_id: int | None = None,
    tokenizer_path: str | None = None,
    norm_mode: str = "min_max",
    **overrides,
) -> Gr00tPolicy:
    """Read an upstream GR00T-N1.5 directory, return the Gr00tPolicy and (if dst) save_pretrained it.

    Backbone sizes come from the preset (GR00T's config names the Eagle model rather than listing
    them); the action head's sizes, horizon and steps from config.json; `overrides` win over both.
    """
    check_tokenizer_path(tokenizer_path)
    entry = find_metadata(src, embodiment_tag)
    embodiment_id = resolve_embodiment_id(embodiment_tag, embodiment_id, picks_statistics=entry is not None)
    upstream = load_safetensors_dir(src)
    settings = {**preset_settings(GR00T_PRESETS, size), **config_from_gr00t(src), **overrides}
    if entry is not None:
        settings = {**settings, **_dims_from_metadata(entry), **overrides}  # explicit overrides still win
        dims = Gr00tConfig.from_dict(settings)
        action_stats, state_stats = concatenated_stats(entry, "action"), concatenated_stats(entry, "state")
        bounds = dict(
            zip(("action_low", "action_high"), stats_to_bounds(action_stats, norm_mode, dims.action_dim, "action"))
        )
        bounds |= dict(
            zip(("state_low", "state_high"), stats_to_bounds(state_stats, norm_mode, dims.state_dim, "state"))
        )
        settings = {**settings, **bounds, **overrides}
    else:
        logger.warning("%s has no experiment_cfg/metadata.json: actions and states pass through unnormalised", src)
    config = Gr00tConfig.from_dict(settings)
    with skip_weight_init():
        policy = Gr00tPolicy(config, apply_lora=False)
    nested = any(k.startswith("vision_tower.vision_model.") for k in policy.state_dict())
    state = convert_state_dict(upstream, embodiment_id, nested, config.select_layer)
    return finish_conversion(policy, state, src, tokenizer_path, dst)


def _dims_from_metadata(entry: dict) -> dict[str, int]:
    """action_dim / state_dim as the sums of the metadata's per-key widths."""
    stats = entry["statistics"]
    width = lambda modality: sum(len(torch.as_tensor(v["mean"]).flatten()) for v in stats[modality].values())  # noqa: E731
    return {"action_dim": width("action"), "state_dim": width("state")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_arguments(parser)
    parser.add_argument("--size", default="gr00t-n1.5-3b", choices=sorted(GR00T_PRESETS))
    parser.add_argument("--embodiment-tag", default="new_embodiment")
    parser.add_argument("--embodiment-id", type=int, default=None)
    parser.add_argument("--tokenizer", default=None, help="local directory with the Eagle/Qwen3 tokenizer")
    parser.add_argument("--norm-mode", default="min_max", choices=["mean_std", "quantile", "min_max"])
    args = parser.parse_args(argv)
    check_converter_paths(parser, args, "gr00t")
    policy = convert_gr00t(
        args.src,
        None,
        size=args.size,
        embodiment_tag=args.embodiment_tag,
        embodiment_id=args.embodiment_id,
        tokenizer_path=args.tokenizer,
        norm_mode=args.norm_mode,
    )
    save_converted(policy, args.dst, args.overwrite)


if __name__ == "__main__":
    main()
