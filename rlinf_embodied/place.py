"""Choose a placement without training: measure (or read cached) component costs, print every candidate
layout's predicted env-steps/s and the chosen `cluster.component_placement` as a paste-able override.

    python -m rlinf_embodied.place                                        # the default job, 1 GPU
    python -m rlinf_embodied.place env=libero policy=pi0 policy.checkpoint=/ckpt/pi0 cluster.num_gpus_per_node=4

The same config groups as rlinf_embodied.train. Placement and pipeline stages are both searched, so
cluster.component_placement / runner.pipeline_stage_num are rejected unless 'auto'; the costs are cached (see
scheduler/auto_placement.py, RLINF_PLACEMENT_CACHE), so `train cluster.component_placement=auto` with the
same settings (env, policy, algorithm, rollout and GPUs: runners/placement_profile.measured_settings) starts without
profiling afterwards.
"""

from __future__ import annotations

import copy
import os
import shlex
from typing import Callable, Sequence

import hydra
from hydra.core.hydra_config import HydraConfig

from .config import AUTO, TrainConfig, is_auto, register_configs, typed_config
from .paths import CONFIG_DIR, refuse_file_as_dir
from .scheduler.auto_placement import ComponentCosts, Layout
from .unread_settings import override_key, reject_unread_settings

register_configs()


def place(
    cfg: TrainConfig,
    costs: ComponentCosts | None = None,
    log: Callable[[str], None] = print,
    command_line: Sequence[str] = (),
) -> Layout:
    """The chosen layout for cfg; prints the table and the train command: `command_line` (the settings the layout
    was chosen for) and the override. Without `costs`, starts the cluster cfg.cluster describes and reads the cache
    or profiles there."""
    from .runners.placement_profile import profile_key, resolve_auto_placement
    from .scheduler.auto_placement import costs_read_once, load_costs
    from .train import check_train_config

    cfg = copy.deepcopy(cfg)
    cfg.cluster.component_placement = AUTO
    cfg.runner.pipeline_stage_num = AUTO
    # check_train_config, the test below and resolve_auto_placement each ask for the cached costs: one read of the file
    with costs_read_once():
        check_train_config(cfg)  # what train checks before Ray (env, policy, resume, time limit, auto's own rules)
        refuse_what_train_refuses(cfg)  # and what train refuses outside check_train_config
        cluster = None
        if costs is None and load_costs(profile_key(cfg)) is None:  # profile on the cluster cfg.cluster describes
            from .scheduler import Cluster

            cluster = Cluster.from_config(cfg.cluster)
        try:
            chosen = resolve_auto_placement(cfg, cluster, costs, log, checked=True)  # check_train_config checked it
        finally:
            if cluster is not None:
                cluster.shutdown()
    # before: only the override, so the pasted command trained the defaults, not what the layout was chosen for
    settings = "".join(f"{shlex.quote(setting)} " for setting in command_line)
    log(f"train with: python -m rlinf_embodied.train {settings}{chosen.override()}")
    return chosen


def refuse_what_train_refuses(cfg: TrainConfig) -> None:
    """What `python -m rlinf_embodied.train` with cfg would refuse beyond check_train_config, with train's words:
    a runner.output_dir holding a run's outputs that runner.resume does not continue (train's Hydra callback and
    claim_output_dir; checked and freed at once, not held: place writes nothing there), or a file given as it
    (make_output_dir's refusal; place creates nothing), and cluster.num_nodes > 1 without cluster.address
    (Cluster.from_config; with cached costs place starts no cluster). Before, place printed a train command that
    train then refused."""
    from .runners.metrics_logger import claim_output_dir
    from .scheduler.cluster import check_local_node_count

    output_dir = cfg.runner.output_dir
    if output_dir:
        refuse_file_as_dir(output_dir, "runner.output_dir")
        if os.path.isdir(output_dir):
            os.close(claim_output_dir(output_dir, "runner.output_dir", cfg.runner.resume, "runner.resume"))
    # the printed command starts a process of its own: no Ray connection of this one's for its Cluster to join
    check_local_node_count(cfg.cluster.num_nodes, cfg.cluster.address)


# place searches every layout: a layout given on the command line would be dropped without a word
SEARCHED = "python -m rlinf_embodied.place searches every layout and stage count; leave it out (or 'auto')"
UNREAD_SETTINGS = {"cluster.component_placement": SEARCHED, "runner.pipeline_stage_num": SEARCHED}


def train_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides given to place that its train command carries: all but the settings place resolves
    (UNREAD_SETTINGS' keys and their sub-keys), which must be 'auto' (else refused: reject_unread_settings).
    Before, every override whose value was 'auto' was dropped, cluster.address=auto too."""

    def resolved(override: str) -> bool:
        key = override_key(override)
        return any(key == name or key.startswith(name + ".") for name in UNREAD_SETTINGS)

    searched = [o for o in overrides if resolved(o)]
    reject_unread_settings([o for o in searched if not is_auto(o.split("=", 1)[-1])], UNREAD_SETTINGS)
    return [o for o in overrides if not resolved(o)]


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="config")
def main(cfg) -> None:
    overrides = train_overrides(HydraConfig.get().overrides.task)
    place(typed_config(cfg), command_line=overrides)


if __name__ == "__main__":
    main()
