"""Convert a local HF OpenVLA checkpoint (openvla/openvla-7b layout) into a save_pretrained directory.

    python -m rlinf_embodied.policies.openvla.convert SRC DST [--unnorm-key bridge_orig] [--overwrite]

`OpenVLAPolicy.from_pretrained(SRC)` also accepts the upstream directory directly (it is detected by
config.json's "architectures": ["OpenVLAForActionPrediction"]). Architecture sizes come from config.json
and the weights; attention head counts from the size preset. The action statistics of `unnorm_key`
(q01/q99 with the mask, upstream's BOUNDS_Q99) become action_low/action_high; the tokenizer files of SRC
are copied along.
"""

from __future__ import annotations

import argparse

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
from .configuration import OPENVLA_PRESETS, OpenVLAConfig
from .modeling import OpenVLAPolicy


def convert_openvla_checkpoint(
    src: str,
    dst: str | None = None,
    *,
    size: str = "openvla-7b",
    unnorm_key: str | None = None,
    tokenizer_path: str | None = None,
    **overrides,
) -> OpenVLAPolicy:
    """Read the upstream directory `src`; return the policy and, if `dst`, save_pretrained it there."""
    check_tokenizer_path(tokenizer_path)
    preset = preset_settings(OPENVLA_PRESETS, size)
    upstream = load_upstream(src)
    settings = {**preset, **config_from_upstream(src, upstream)}
    stats = select_norm_stats(src, unnorm_key, "openvla")
    if "action" in stats:
        low, high = q99_bounds(stats["action"], "action")
        settings |= {"action_dim": len(low), "action_low": low, "action_high": high}
    settings |= overrides
    with skip_weight_init():
        policy = OpenVLAPolicy(OpenVLAConfig.from_dict(settings), apply_lora=False)
    nested = any(key.startswith("vision_backbone.fused_featurizer.vision_model.") for key in policy.state_dict())
    return finish_conversion(policy, convert_prismatic_state(upstream, nested), src, tokenizer_path, dst)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_arguments(parser)
    parser.add_argument("--size", default="openvla-7b", choices=sorted(OPENVLA_PRESETS))
    parser.add_argument("--unnorm-key", default=None, help="dataset whose action statistics to use")
    parser.add_argument("--tokenizer", default=None)
    args = parser.parse_args(argv)
    check_converter_paths(parser, args, "openvla")
    policy = convert_openvla_checkpoint(
        args.src, None, size=args.size, unnorm_key=args.unnorm_key, tokenizer_path=args.tokenizer
    )
    save_converted(policy, args.dst, args.overwrite)


if __name__ == "__main__":
    main()
