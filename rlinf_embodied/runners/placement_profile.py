"""`cluster.component_placement=auto` / `runner.pipeline_stage_num=auto`: measure, predict, choose.

    check_auto_request(cfg)               what can be checked before Ray starts (clear errors)
    profile_costs(cfg, cluster)           a short EmbodiedRunner run per env count -> ComponentCosts
    costs_for(cfg, cluster)               the cached measurement, or profile_costs and cache it
    resolve_auto_placement(cfg, cluster)  choose with scheduler/auto_placement.py, print the table, and
                                          write the choice into cfg (the driver calls it before the runner)

The profile runs every component on GPU 0 (one worker each, like one process of any layout), stage 1,
runner.rollout_steps (at most PROFILE_MAX_ROLLOUT_STEPS) after one warm-up iteration: env/sim and
rollout/infer spans give t_sim and t_inf at that env count (two env counts, num_envs and num_envs/2, give
the fixed and per-env parts; the runs alternate full, half, full, half, full, so a drift of the machine's
speed during the profile scales both sizes alike instead of tilting the split, and each size's figure is the
median of its runs, so one slow or fast run does not set it), the rest of a rollout step
(time/rollout_seconds per step minus both) its overhead, and time/train_seconds at the two batch sizes the
fixed and per-sample training time (the optimizer steps per iteration do not depend on the batch); offload,
onload and the weight sync are timed on their own (each the median over the single-stage runs). GPU memory:
each worker's peak PyTorch reservation on GPU 0 after that iteration (Worker.gpu_memory_gib) at the full
env.num_envs on one env worker (an upper bound for layouts with more env workers) and the whole actor on one
GPU (predict shards it over the actor GPUs).
On more than one GPU, a parallel run puts every component on every GPU (G workers each, num_envs / G envs
per env worker): its sim, inference and training seconds against what the single-GPU runs predict for
that share give each component's contention (how much each extra parallel worker slows the others).
A 2-stage run puts env and rollout on different GPUs with 2 pipeline stages: the overlap efficiency of the
stages is read off that run's own timeline (the time its env worker's sim spans and its rollout worker's
infer spans ran at once, over the shorter of the two per step), and the same run's sim seconds per step
against two single-stage steps of half the envs give stage_env_factor (each stage is a vector env of its
own). Cost model 4 took the overlap from that run's whole step against a no-overlap and a full-overlap
prediction assembled from the other runs; the hidden part is a few percent of a step, less than the run-to-run
spread of a step (5-10% on 2 shared cores), so that difference was mostly noise (the model-4 profile clamped
it to 0 where the timeline shows about 0.8).
Memory outside PyTorch's allocator (CUDA contexts, a GPU simulator's own buffers) is not counted, so a
layout near the limit can still run out; on simulated GPUs every figure is 0 and nothing is excluded for memory.
A parallel 2-stage run (every component on every GPU, 2 stages) gives parallel_stage_factor: its step against
what all the other terms predict for it (cost model 12).
A collocated 2-stage run (every component on GPU 0, 2 stages; on any number of GPUs) gives
shared_overlap_efficiency: where its step lies between the no-overlap and the full-overlap prediction (cost model
13). It is read off the step, not the timeline: on GPUs that share a few CPU cores, sim and infer spans do run at
once but each slower, so the timeline would show overlap the step does not gain.
The parallel, 2-stage and parallel 2-stage runs are made three times each, around the single-stage runs
(PROFILE_ORDER), and each factor they give is the median over its three runs (cost model 11; one run each put
every 2-stage layout 16-22% too slow when that run was slow); the collocated 2-stage run twice, first and last
(the median of two: their mean).
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
import tempfile
import time
from dataclasses import asdict, replace
from typing import Any, Callable

from ..config import AUTO, TrainConfig, is_auto
from ..scheduler.auto_placement import (
    CACHE_ENV_VAR,
    ComponentCosts,
    Layout,
    cache_key,
    cache_path,
    check_cache_dir,
    choose,
    costs_read_once,
    enumerate_layouts,
    fit_linear,
    format_table,
    load_costs,
    predict,
    save_costs,
)

logger = logging.getLogger(__name__)

PROFILE_PLACEMENT = {"env": "0", "rollout": "0", "actor": "0"}
PARALLEL_PLACEMENT = {"env": "all", "rollout": "all", "actor": "all"}
OVERLAP_PLACEMENT = {"env": "0", "rollout": "1", "actor": "1"}
PROFILE_MAX_ROLLOUT_STEPS = 100


def num_gpus(cfg: TrainConfig) -> int:
    return cfg.cluster.num_nodes * cfg.cluster.num_gpus_per_node


def check_auto_request(cfg: TrainConfig) -> None:
    """Clear errors for what `auto` cannot mean; nothing to do when neither field is auto."""
    placement, stages = cfg.cluster.component_placement, cfg.runner.pipeline_stage_num
    total = num_gpus(cfg)
    if total < 1:
        raise ValueError(
            f"cluster.num_nodes={cfg.cluster.num_nodes} x cluster.num_gpus_per_node="
            f"{cfg.cluster.num_gpus_per_node} is {total} GPUs; automatic placement needs at least one"
        )
    if isinstance(placement, dict):
        mixed = [str(key) for key, spec in placement.items() if is_auto(spec) or is_auto(key)]
        if mixed:
            raise ValueError(
                f"cluster.component_placement={dict(placement)}: 'auto' for {mixed} together with "
                f"explicit GPU ids; either place every component yourself or the whole placement "
                f"automatically with cluster.component_placement=auto (the cluster/*.yaml keys are "
                f"replaced then)"
            )
    if (is_auto(placement) or is_auto(stages)) and load_costs(profile_key(cfg)) is None:
        check_cache_dir()  # the run will profile: its cache is checked before Ray starts, not after the profile
    if is_auto(stages) and not is_auto(placement):
        from .embodied_runner import component_placement

        resolved = copy.deepcopy(cfg)
        resolved.runner.pipeline_stage_num = 1
        env_workers = len(component_placement(resolved).gpus("env"))
        group = cfg.algorithm.env_group_size
        if cfg.env.num_envs % (env_workers * 2 * group):
            raise ValueError(
                f"runner.pipeline_stage_num=auto with cluster.component_placement={dict(placement)}: its "
                f"{env_workers} env worker(s) cannot split env.num_envs={cfg.env.num_envs} into 2 pipeline stages"
                + (f" of groups of {group}" if group > 1 else "")
                + f", so there is nothing to choose; set runner.pipeline_stage_num=1, or use a multiple of "
                f"{env_workers * 2 * group} envs, or cluster.component_placement=auto"
            )


def profile_key(cfg: TrainConfig) -> dict:
    """The placement cache's key for cfg: the settings that change what the profile measures, and nothing else
    (before: env id, obs mode, num_envs, policy name and size only, so another env.kwargs.control_mode, action chunk
    or algorithm.update_epochs read the costs measured for the first)."""
    env, policy = cfg.env, cfg.policy
    return cache_key(
        env.id, env.obs_mode, env.num_envs, policy.name, policy.size, num_gpus(cfg), measured_settings(cfg)
    )


def measured_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The settings beyond profile_key's named ones that the profile's runs (_profile_config: cfg with the
    placement, stages, iterations and evaluation replaced) measure with: the env's episodes and simulator options,
    the policy's weights, precision and overrides, every algorithm setting (epochs, minibatches, target_kl, critic,
    ...: the training seconds), the cluster's nodes and simulated GPUs, and the runner's rollout and offload."""
    return {
        "env": {
            "max_episode_steps": cfg.env.max_episode_steps,
            "ignore_terminations": cfg.env.ignore_terminations,
            "kwargs": dict(cfg.env.kwargs),
        },
        "policy": {
            "checkpoint": cfg.policy.checkpoint,
            "precision": cfg.policy.precision,
            "overrides": dict(cfg.policy.overrides),
        },
        "algorithm": asdict(cfg.algorithm),
        "cluster": {
            "address": cfg.cluster.address,
            "num_nodes": cfg.cluster.num_nodes,
            "num_gpus_per_node": cfg.cluster.num_gpus_per_node,
            "simulate_gpus": cfg.cluster.simulate_gpus,
        },
        "runner": {
            "rollout_steps": cfg.runner.rollout_steps,
            "reset_each_iteration": cfg.runner.reset_each_iteration,
            "offload": cfg.runner.offload,
        },
    }


def _profile_config(
    cfg: TrainConfig, num_envs: int, rollout_steps: int, output_dir: str, placement: dict[str, str], stages: int
) -> TrainConfig:
    pcfg = copy.deepcopy(cfg)
    pcfg.env.num_envs = num_envs
    pcfg.cluster.component_placement = dict(placement)
    pcfg.runner.pipeline_stage_num = stages
    pcfg.runner.rollout_steps = rollout_steps
    if rollout_steps < cfg.runner.rollout_steps:  # a capped profile rollout may be shorter than an episode
        pcfg.runner.reset_each_iteration = False
    pcfg.runner.max_iterations = 2
    pcfg.runner.resume = None
    pcfg.runner.eval_interval = 0
    pcfg.runner.progress = False
    pcfg.runner.output_dir = output_dir
    pcfg.algorithm.dynamic_sampling = False
    _fit_run_to_profile(pcfg)
    return pcfg


def _fit_run_to_profile(pcfg: TrainConfig) -> None:
    """A profile run has fewer envs per stage and samples per actor rank than the run it measures for: the
    user's env.kwargs.num_workers and algorithm.num_minibatches are held within them, which the run's own checks
    require (the real run is checked against the chosen layout: config_refusal)."""
    from ..workers.env_worker import envs_per_stage
    from .embodied_runner import component_placement, largest_minibatch

    placement = component_placement(pcfg)
    workers = pcfg.env.kwargs.get("num_workers")
    if isinstance(workers, int):
        pcfg.env.kwargs["num_workers"] = min(workers, envs_per_stage(pcfg, len(placement.gpus("env"))))
    samples_per_rank = pcfg.env.num_envs * pcfg.runner.rollout_steps // len(placement.gpus("actor"))
    pcfg.algorithm.num_minibatches = max(1, min(pcfg.algorithm.num_minibatches, samples_per_rank))
    micro_batch_size = pcfg.algorithm.micro_batch_size
    if micro_batch_size is not None and micro_batch_size >= largest_minibatch(pcfg, len(placement.gpus("actor"))):
        pcfg.algorithm.micro_batch_size = None  # the profile's smaller minibatches need no splitting


def _spans_by_kind(rows: dict) -> dict[str, list[tuple[float, float]]]:
    """(start, end) of every span of a `collect_timeline` result, per kind: "env/sim", "rollout/infer", ..."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for row, row_spans in rows.items():
        for label, start, end in row_spans:
            spans.setdefault(f"{row.split()[0]}/{label.split()[0]}", []).append((start, end))
    return spans


def _span_means(rows: dict) -> dict[str, float]:
    """Mean seconds per span kind: "env/sim", "rollout/infer", ..."""
    return {kind: statistics.mean(end - start for start, end in spans) for kind, spans in _spans_by_kind(rows).items()}


def _total(intervals: list[tuple[float, float]]) -> float:
    return sum(end - start for start, end in intervals)


def _intersection(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Seconds during which an interval of `a` and one of `b` ran at once (each list's intervals disjoint)."""
    a, b = sorted(a), sorted(b)
    i = j = 0
    total = 0.0
    while i < len(a) and j < len(b):
        total += max(0.0, min(a[i][1], b[j][1]) - max(a[i][0], b[j][0]))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def stage_overlap(rows: dict, steps: int) -> dict[str, float]:
    """Per rollout step, from one iteration's timeline (`collect_timeline` rows): env_work_s (the env
    worker's sim spans), rollout_work_s (the rollout worker's infer spans) and overlap_s (how long both ran
    at once). Meant for one env and one rollout worker (OVERLAP_PLACEMENT)."""
    spans = _spans_by_kind(rows)
    sim, infer = spans.get("env/sim", []), spans.get("rollout/infer", [])
    return {
        "env_work_s": _total(sim) / steps,
        "rollout_work_s": _total(infer) / steps,
        "overlap_s": _intersection(sim, infer) / steps,
    }


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_once(
    cfg: TrainConfig,
    cluster,
    num_envs: int,
    rollout_steps: int,
    placement: dict[str, str] = PROFILE_PLACEMENT,
    stages: int = 1,
) -> dict[str, float]:
    """One short run (every component on GPU 0 unless `placement` says otherwise): seconds of one sim
    step / policy call (mean over workers), train seconds, offload, onload, weight sync, env steps per call,
    and per rollout step the sim and infer work and their overlap in time (stage_overlap)."""
    from .embodied_runner import EmbodiedRunner

    with tempfile.TemporaryDirectory() as out:
        pcfg = _profile_config(cfg, num_envs, rollout_steps, out, placement, stages)
        runner = EmbodiedRunner(pcfg, cluster, out)
        try:
            runner.sync_weights()  # warm-up iteration: process start, first kernels, optimizer state
            runner.rollout(0)
            runner.train(0)
            runner.collect_timeline()
            memory = {
                name: group.gpu_memory_gib().wait()
                for name, group in (
                    ("env", runner.env_group),
                    ("rollout", runner.rollout_group),
                    ("actor", runner.actor_group),
                )
            }
            offload = _timed(lambda: runner.rollout_group.offload().wait())
            onload = _timed(lambda: runner.rollout_group.onload().wait())
            sync = _timed(lambda: runner.actor_group.sync_weights_to(runner.rollout_group))
            runner.rollout_weights_current = True
            rollout = runner.rollout(1)
            rows = runner.collect_timeline()
            spans = _span_means(rows)
            train = runner.train(1)
        finally:
            runner.shutdown()
    calls = num_envs * rollout_steps
    step_s = rollout["time/rollout_seconds"] / rollout_steps
    env_steps = rollout["time/throughput"] * rollout["time/rollout_seconds"]
    sim_s, infer_s = spans.get("env/sim", math.nan), spans.get("rollout/infer", math.nan)
    return {
        "num_envs": num_envs,
        "samples": calls,
        "sim_s": sim_s,
        "infer_s": infer_s,
        "step_s": step_s,
        "step_overhead_s": max(0.0, step_s - sim_s - infer_s),
        "train_s": train["time/train_seconds"],
        "train_optimizer_steps": train.get("train/optimizer_steps", math.nan),  # < the planned ones: target_kl stopped
        "offload_s": offload,
        "onload_s": onload,
        "weight_sync_s": sync,
        "env_steps_per_call": max(1, round(env_steps / calls)),
        **stage_overlap(rows, rollout_steps),
        **{f"{name}_mem_gib": max(peak for peak, _ in ranks) for name, ranks in memory.items()},
        "gpu_mem_gib": min(total for ranks in memory.values() for _, total in ranks),
    }


def profile_costs(cfg: TrainConfig, cluster, rollout_steps: int | None = None) -> ComponentCosts:
    """Measure ComponentCosts on `cluster` with short runs of the real workers (see the module docstring).
    rollout_steps defaults to runner.rollout_steps capped at PROFILE_MAX_ROLLOUT_STEPS: training is then
    measured at (or near) the real batch, where early stopping at algorithm.target_kl and the per-step
    cost behave as they will in the run; tiny profile batches overestimated it several-fold."""
    if rollout_steps is None:
        rollout_steps = max(2, min(cfg.runner.rollout_steps, PROFILE_MAX_ROLLOUT_STEPS))
    gpus = num_gpus(cfg)
    full, half = cfg.env.num_envs, cfg.env.num_envs // 2
    has_half = half >= 1 and half % cfg.algorithm.env_group_size == 0
    has_parallel = gpus > 1 and cfg.env.num_envs % (gpus * cfg.algorithm.env_group_size) == 0
    has_stages = gpus > 1 and cfg.env.num_envs % (2 * cfg.algorithm.env_group_size) == 0
    has_parallel_stages = gpus > 1 and cfg.env.num_envs % (2 * gpus * cfg.algorithm.env_group_size) == 0
    has_shared_stages = cfg.env.num_envs % (2 * cfg.algorithm.env_group_size) == 0
    runs: list[tuple[str, dict[str, float]]] = []  # (kind, measure_once result) in time order
    for kind in profile_order(has_half, has_parallel, has_stages, has_parallel_stages, has_shared_stages):
        start = time.perf_counter()
        if kind == "parallel":
            run = measure_once(cfg, cluster, full, rollout_steps, PARALLEL_PLACEMENT)
            what = f"{gpus} workers each"
        elif kind == "parallel_stages":
            run = measure_once(cfg, cluster, full, rollout_steps, PARALLEL_PLACEMENT, stages=2)
            what = f"{gpus} workers each, 2 stages"
        elif kind == "stages":
            run = measure_once(cfg, cluster, full, rollout_steps, OVERLAP_PLACEMENT, stages=2)
            what = "2 stages"
        elif kind == "shared_stages":
            run = measure_once(cfg, cluster, full, rollout_steps, PROFILE_PLACEMENT, stages=2)
            what = "2 stages on GPU 0"
        else:
            run = measure_once(cfg, cluster, full if kind == "full" else half, rollout_steps)
            what = f"{run['num_envs']} envs"
        runs.append((kind, run))
        logger.info("placement profile: %s measured in %.1fs: %s", what, time.perf_counter() - start, run)
    single = [run for kind, run in runs if kind in ("full", "half")]
    costs = single_stage_costs(single, full)
    # cost model 11: each parallel and 2-stage run gives its own factors against the single-stage costs, and
    # each factor is the median over those runs (model 10 read them from one run each: a 2-stage run with
    # stage_env_factor 1.43 against 1.03-1.17 in other profiles put every 2-stage layout 16-22% too slow)
    parallel = [contention_factors(costs, run, gpus) for kind, run in runs if kind == "parallel"]
    costs = with_median_factors(costs, parallel)
    costs = with_median_factors(
        costs, [overlap_factors(costs, run, stages=2) for kind, run in runs if kind == "stages"]
    )
    nodes = (cfg.cluster.num_gpus_per_node, cfg.cluster.num_nodes)
    costs = with_median_factors(  # cost model 13, before model 12's factor: that one is measured against it
        costs, [shared_overlap_factors(costs, run, *nodes) for kind, run in runs if kind == "shared_stages"]
    )
    # cost model 12: measured last, against every other term
    return with_median_factors(
        costs, [parallel_stage_factors(costs, run, *nodes) for kind, run in runs if kind == "parallel_stages"]
    )


# The profile's runs in time order (cost model 12): full- and half-size single-GPU runs (F, H) go full, half,
# full, half, full as in model 10, with three parallel runs (P), three 2-stage runs (S) and three parallel
# 2-stage runs (Q) placed around them so that each kind's runs have nearly the same mean position in time, the
# middle of the profile: a steady drift of the machine's speed moves every kind's figures alike instead of
# tilting the factors one kind's runs give against another's. Q S P F H P Q F S H F S P Q: every kind's mean
# position within 1/6 of the middle, 6.5 (model 11's S P F H P F S H F S P with Q at 0, 6 and 13).
# Cost model 13 adds two collocated 2-stage runs (T), the first and the last: their mean position is the middle
# (7.5 of 16; on one GPU T F H F H F T, every kind's mean position 3, and the median full-size run's position
# stays the mean of the half-size ones', so drift does not tilt the sim split either).
PROFILE_ORDER = tuple(
    "shared_stages parallel_stages stages parallel full half parallel parallel_stages full stages half full stages"
    " parallel parallel_stages shared_stages".split()
)


def profile_order(
    has_half: bool = True,
    has_parallel: bool = True,
    has_stages: bool = True,
    has_parallel_stages: bool = True,
    has_shared_stages: bool = True,
) -> list[str]:
    """PROFILE_ORDER without the kinds the configuration cannot run. Without a half size, one full-size run,
    the middle one."""
    order = list(PROFILE_ORDER)
    if not has_half:
        middle = [i for i, kind in enumerate(order) if kind == "full"][1]
        order = [kind for i, kind in enumerate(order) if kind != "half" and (kind != "full" or i == middle)]
    allowed = {
        "parallel": has_parallel,
        "stages": has_stages,
        "parallel_stages": has_parallel_stages,
        "shared_stages": has_shared_stages,
    }
    return [kind for kind in order if allowed.get(kind, True)]


def with_median_factors(costs: ComponentCosts, factors: list[dict[str, float]]) -> ComponentCosts:
    """`costs` with each field named in `factors` (one dict per run) the median of its values over the runs
    that gave it; a field no run gave keeps its value."""
    names = {name for run in factors for name in run}
    return replace(costs, **{name: statistics.median(run[name] for run in factors if name in run) for name in names})


def median_by_size(runs: list[dict[str, float]], key: str, size_key: str = "num_envs") -> list[tuple[float, float]]:
    """(size, median of `key` over the runs at that size) per size, in order of first appearance; the runs whose
    `key` is not a finite number are left out (a size with none is left out)."""
    by_size: dict[float, list[float]] = {}
    for run in runs:
        value = run.get(key, math.nan)
        by_size.setdefault(run[size_key], [])
        if math.isfinite(value):
            by_size[run[size_key]].append(value)
    return [(size, statistics.median(values)) for size, values in by_size.items() if values]


def single_stage_costs(runs: list[dict[str, float]], num_envs: int) -> ComponentCosts:
    """ComponentCosts from single-GPU, single-stage runs (measure_once results at one or more env counts):
    sim, inference and training seconds fitted through each size's median (cost model 10; one noisy run of a
    size no longer moves that size's figure), the per-step overhead, offload, onload and weight sync the
    median of all runs, memory and chunking from a run at `num_envs`."""
    env_fixed, env_per = fit_linear(median_by_size(runs, "sim_s"))
    inf_fixed, inf_per = fit_linear(median_by_size(runs, "infer_s"))
    train_fixed, train_per = fit_linear(median_by_size(runs, "train_s", size_key="samples"))
    last = next(r for r in runs if r["num_envs"] == num_envs)  # memory and chunking at the full size
    return ComponentCosts(
        env_step_fixed_s=env_fixed,
        env_step_per_env_s=env_per,
        infer_fixed_s=inf_fixed,
        infer_per_sample_s=inf_per,
        train_per_sample_s=train_per,
        train_fixed_s=train_fixed,
        step_overhead_s=statistics.median(r["step_overhead_s"] for r in runs),
        offload_s=statistics.median(r["offload_s"] for r in runs),
        onload_s=statistics.median(r["onload_s"] for r in runs),
        weight_sync_s=statistics.median(r["weight_sync_s"] for r in runs),
        env_steps_per_call=last["env_steps_per_call"],
        env_mem_gib=last["env_mem_gib"],
        rollout_mem_gib=last["rollout_mem_gib"],
        actor_mem_gib=last["actor_mem_gib"],
        gpu_mem_gib=last["gpu_mem_gib"],
    )


def overlap_factors(costs: ComponentCosts, measured: dict[str, float], stages: int = 2) -> dict[str, float]:
    """What a run of OVERLAP_PLACEMENT with `stages` stages (measure_once's num_envs, env_work_s,
    rollout_work_s, overlap_s) says about pipelining:
    - overlap_efficiency: the time sim and inference ran at once over the shorter of the two, in [0, 1]. Both
      come from the same run's timeline, so a slower or faster run than the profile's others does not move it.
    - stage_env_factor: the env worker's sim seconds per step over what the single-stage runs predict for
      `stages` vector envs of num_envs / stages (stop 27: 1.22 on 2 shared cores; the 2-stage layouts had been
      predicted 9-31% too fast).
    Only the factors the run gives (a finite, positive measurement) are in the result."""
    factors = {}
    shorter = min(measured.get("env_work_s", math.nan), measured.get("rollout_work_s", math.nan))
    hidden = measured.get("overlap_s", math.nan)
    if math.isfinite(shorter) and math.isfinite(hidden) and shorter > 0:
        factors["overlap_efficiency"] = min(1.0, max(0.0, hidden / shorter))
    num_envs, env_work = measured.get("num_envs", math.nan), measured.get("env_work_s", math.nan)
    predicted = stages * costs.env_step_s(num_envs / stages) if math.isfinite(num_envs) else math.nan
    if math.isfinite(env_work) and env_work > 0 and math.isfinite(predicted) and predicted > 0:
        factors["stage_env_factor"] = env_work / predicted
    return factors


def shared_overlap_factors(
    costs: ComponentCosts, measured: dict[str, float], num_gpus_per_node: int, num_nodes: int = 1
) -> dict[str, float]:
    """shared_overlap_efficiency from a run of PROFILE_PLACEMENT with 2 stages (measure_once's num_envs and step_s):
    where its seconds per rollout step lie between what `costs` predicts with no overlap (0) and with full overlap
    (1), clamped to [0, 1]. Empty without a finite, positive measurement or where the two predictions agree
    (nothing to hide)."""
    step, num_envs = measured.get("step_s", math.nan), measured.get("num_envs", math.nan)
    if not (math.isfinite(step) and step > 0 and math.isfinite(num_envs)):
        return {}
    layout = Layout(dict(PROFILE_PLACEMENT), 2)

    def predicted_step(efficiency: float) -> float:
        shared = replace(costs, shared_overlap_efficiency=efficiency)
        return predict(layout, shared, int(num_envs), 1, num_gpus_per_node, num_nodes=num_nodes).breakdown.get(
            "rollout", math.nan
        )

    none, full = predicted_step(0.0), predicted_step(1.0)
    if not (math.isfinite(none) and math.isfinite(full) and none > full):
        return {}
    return {"shared_overlap_efficiency": min(1.0, max(0.0, (none - step) / (none - full)))}


def parallel_stage_factors(
    costs: ComponentCosts, measured: dict[str, float], num_gpus_per_node: int, num_nodes: int = 1
) -> dict[str, float]:
    """parallel_stage_factor from a run of PARALLEL_PLACEMENT with 2 stages (measure_once's num_envs and step_s):
    its seconds per rollout step over what every other term of `costs` predicts for that layout. Empty without
    a finite, positive measurement."""
    layout = Layout(dict(PARALLEL_PLACEMENT), 2)
    predicted = predict(
        layout, replace(costs, parallel_stage_factor=1.0), int(measured["num_envs"]), 1, num_gpus_per_node,
        num_nodes=num_nodes,
    ).breakdown.get("rollout", math.nan)  # fmt: skip
    step = measured.get("step_s", math.nan)
    if math.isfinite(step) and step > 0 and math.isfinite(predicted) and predicted > 0:
        return {"parallel_stage_factor": step / predicted}
    return {}


def contention_factors(costs: ComponentCosts, parallel: dict[str, float], workers: int) -> dict[str, float]:
    """Each component's contention from a run of `workers` workers per component:
    (measured / predicted for one worker on the same share - 1) / (workers - 1), at least 0 (0 without a
    measurement)."""

    def contention(measured: float, alone: float) -> float:
        if not (math.isfinite(measured) and alone > 0):
            return 0.0
        return max(0.0, (measured / alone - 1) / (workers - 1))

    share = parallel["num_envs"] / workers  # envs per env worker = the batch of one rollout worker
    return {
        "env_contention": contention(parallel["sim_s"], costs.env_step_s(share)),
        "infer_contention": contention(parallel["infer_s"], costs.infer_s(share)),
        "train_contention": contention(parallel["train_s"], costs.train_s(parallel["samples"], workers)),
    }


def costs_for(cfg: TrainConfig, cluster, log: Callable[[str], None] = print) -> ComponentCosts:
    """The cached costs for cfg's profile_key (env, policy, algorithm, GPUs, ...), else measured and cached."""
    key = profile_key(cfg)
    costs = load_costs(key)
    if costs is not None:
        log(f"placement: using cached costs for {key}")
        return costs
    if cluster is None:
        raise ValueError(f"no cached placement costs for {key} and no cluster to measure them on")
    check_cache_dir()  # before the minutes of profiling whose costs it is to hold
    log(f"placement: profiling {key} (a few steps per component)")
    costs = profile_costs(cfg, cluster)
    try:
        log(f"placement: costs cached in {save_costs(key, costs)}")
    except OSError as error:  # e.g. the directory went away during the profile: the costs are still used
        log(
            f"placement: WARNING: the measured costs were not cached in {cache_path(key)!r} ({error}); this "
            f"run uses them, but the next one with these settings profiles again; set {CACHE_ENV_VAR} to a "
            "writable directory"
        )
    return costs


def workload(cfg: TrainConfig) -> tuple[int, int, int, int, int]:
    """cfg's (num_envs, rollout_steps, num_gpus per node, env_group_size, num_nodes): the arguments that
    scheduler/auto_placement.py's predict / predict_all / choose take after the costs."""
    return (
        cfg.env.num_envs,
        cfg.runner.rollout_steps,
        cfg.cluster.num_gpus_per_node,
        cfg.algorithm.env_group_size,
        cfg.cluster.num_nodes,
    )


def candidate_layouts(cfg: TrainConfig) -> list[Layout]:
    """Every layout when the placement is auto; else the configured placement with the stage counts to try."""
    stages = (1, 2) if is_auto(cfg.runner.pipeline_stage_num) else (cfg.runner.pipeline_stage_num,)
    if is_auto(cfg.cluster.component_placement):
        return enumerate_layouts(num_gpus(cfg), stages)
    from .embodied_runner import component_placement

    resolved = copy.deepcopy(cfg)
    resolved.runner.pipeline_stage_num = 1
    placement = component_placement(resolved)
    fixed = {name: ",".join(str(g) for g in placement.gpus(name)) for name in placement.components}
    return [Layout(dict(fixed), s) for s in stages]


def config_refusal(cfg: TrainConfig, layout: Layout) -> str:
    """Why cfg cannot run `layout` by the checks train applies to an explicit placement (check_env_split: envs
    per worker and stage, env.kwargs.num_workers, env groups and minibatches per actor rank), else "". Before,
    auto could choose such a layout and the run failed in a worker after Ray had started."""
    from .embodied_runner import check_env_split, component_placement

    trial = copy.deepcopy(cfg)
    trial.cluster.component_placement = dict(layout.component_placement)
    trial.runner.pipeline_stage_num = layout.pipeline_stage_num
    try:
        check_env_split(trial, component_placement(trial))
    except ValueError as error:
        return str(error)
    return ""


def resolve_auto_placement(
    cfg: TrainConfig,
    cluster=None,
    costs: ComponentCosts | None = None,
    log: Callable[[str], None] = print,
    checked: bool = False,
) -> Layout | None:
    """Choose where cfg says auto; write the choice into cfg and print the candidate table. None when
    nothing is auto. Without `costs`, they come from the cache or a profile on `cluster`. `checked`: the caller
    has already run check_auto_request(cfg) (train's check_train_config does, before Ray starts), so it is not
    run again (before: twice per `python -m rlinf_embodied.train` start)."""
    if not (is_auto(cfg.cluster.component_placement) or is_auto(cfg.runner.pipeline_stage_num)):
        return None
    with costs_read_once():  # check_auto_request and costs_for read the cache file once between them
        if not checked:
            check_auto_request(cfg)
        layouts = candidate_layouts(cfg)
        refusals = {(layout.name, layout.pipeline_stage_num): config_refusal(cfg, layout) for layout in layouts}
        if all(refusals.values()):  # before the profile: none of its measurements could be used
            raise ValueError(
                f"no candidate layout can run this config ({len(layouts)} tried): "
                + "; ".join(sorted(set(refusals.values())))
            )
        if costs is None:
            costs = costs_for(cfg, cluster, log)
    chosen, predicted = choose(
        costs,
        *workload(cfg),
        layouts,
        offload=cfg.runner.offload,
        refuse=lambda layout: refusals[(layout.name, layout.pipeline_stage_num)],
    )
    log(
        f"placement candidates ({num_gpus(cfg)} GPUs, {cfg.env.num_envs} envs, {cfg.runner.rollout_steps} "
        f"rollout steps; predicted):\n{format_table(predicted, chosen)}"
    )
    log(f"placement: chosen {chosen.override()}")
    cfg.cluster.component_placement = dict(chosen.component_placement)
    cfg.runner.pipeline_stage_num = chosen.pipeline_stage_num
    return chosen


__all__ = [
    "AUTO",
    "check_auto_request",
    "profile_costs",
    "costs_for",
    "resolve_auto_placement",
    "candidate_layouts",
    "config_refusal",
]
