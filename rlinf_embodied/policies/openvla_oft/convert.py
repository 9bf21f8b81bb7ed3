"""Convert a local OpenVLA-OFT checkpoint (moojink/openvla-7b-oft-finetuned-libero-* layout) into a
save_pretrained directory.

    python -m rlinf_embodied.policies.openvla_oft.convert SRC DST [--unnorm-key libero_spatial_no_noops] [--overwrite]

SRC holds the HF OpenVLA VLM (config.json + safetensors, see vla_common/convert.py) and, as OFT saves
them, `action_head--*checkpoint.pt` (L1-regression MLP-ResNet, keys `model.*`) and
`proprio_projector--*checkpoint.pt` (keys `fc1.*`, `fc2.*`), possibly with DDP's `module.` prefix.
Without an action-head file the discrete (action token) variant is built. Statistics come from
config.json["norm_stats"] and `dataset_statistics.json`: action q01/q99 -> action_low/high, proprio
q01/q99 -> state_low/high. Chunk, cameras and state width come from the preset (LIBERO: 8, 2, 8).
"""

from __future__ import annotations

import argparse
import glob
import json
import os

import torch

from ..flow.utils import skip_weight_init
from ..flow.convert_utils import (
    add_output_arguments,
    check_converter_paths,
    check_tokenizer_path,
    finish_conversion,
    preset_settings,
    save_converted,
)
from ..vla_common.convert import (
    config_from_upstream,
    convert_prismatic_state,
    load_upstream,
    q99_bounds,
    select_norm_stats,
)
from .configuration import OPENVLA_OFT_PRESETS, OpenVLAOFTConfig
from .modeling import OpenVLAOFTPolicy


def load_component(src: str, stem: str) -> dict[str, torch.Tensor] | None:
    """OFT's separately saved module (`{stem}--*checkpoint.pt`), DDP prefix removed; None if absent."""
    paths = sorted(glob.glob(os.path.join(src, f"{stem}--*checkpoint.pt")))
    if not paths:
        return None
    state = torch.load(paths[-1], map_location="cpu", weights_only=True)
    return {key.removeprefix("module."): value for key, value in state.items()}


def dataset_statistics(src: str) -> dict:
    path = os.path.join(src, "dataset_statistics.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def convert_openvla_oft_checkpoint(
    src: str,
    dst: str | None = None,
    *,
    size: str = "openvla-oft-7b",
    unnorm_key: str | None = None,
    tokenizer_path: str | None = None,
    **overrides,
) -> OpenVLAOFTPolicy:
    """Read the upstream OFT directory `src`; return the policy and, if `dst`, save_pretrained it there."""
    check_tokenizer_path(tokenizer_path)
    preset = preset_settings(OPENVLA_OFT_PRESETS, size)
    upstream = load_upstream(src)
    action_head = load_component(src, "action_head")
    proprio = load_component(src, "proprio_projector")
    settings = {**preset, **config_from_upstream(src, upstream)}
    settings["action_head_type"] = "continuous" if action_head is not None else "discrete"
    settings["use_proprio"] = proprio is not None
    if proprio is not None:
        settings["state_dim"] = proprio["fc1.weight"].shape[1]
    stats = select_norm_stats(src, unnorm_key, "openvla_oft", dataset_statistics(src))
    if "action" in stats:
        low, high = q99_bounds(stats["action"], "action")
        settings |= {"action_dim": len(low), "action_low": low, "action_high": high}
    if "proprio" in stats and proprio is not None:
        low, high = q99_bounds(stats["proprio"], "proprio")
        settings |= {"state_low": low[: settings["state_dim"]], "state_high": high[: settings["state_dim"]]}
    settings |= overrides
    with skip_weight_init():
        policy = OpenVLAOFTPolicy(OpenVLAOFTConfig.from_dict(settings), apply_lora=False)
    nested = any(key.startswith("vision_backbone.fused_featurizer.vision_model.") for key in policy.state_dict())
    state = convert_prismatic_state(upstream, nested)
    state |= {f"action_head.{key}": value for key, value in (action_head or {}).items()}
    state |= {f"proprio_projector.{key}": value for key, value in (proprio or {}).items()}
    return finish_conversion(policy, state, src, tokenizer_path, dst)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_arguments(parser)
    parser.add_argument("--size", default="openvla-oft-7b", choices=sorted(OPENVLA_OFT_PRESETS))
    parser.add_argument("--unnorm-key", default=None)
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--action-chunk", type=int, default=None)
    args = parser.parse_args(argv)
    check_converter_paths(parser, args, "openvla_oft")
    extra = {} if args.action_chunk is None else {"action_chunk": args.action_chunk}
    policy = convert_openvla_oft_checkpoint(
        args.src, None, size=args.size, unnorm_key=args.unnorm_key, tokenizer_path=args.tokenizer, **extra
    )
    save_converted(policy, args.dst, args.overwrite)


if __name__ == "__main__":
    main()
