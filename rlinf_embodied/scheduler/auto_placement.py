"""Automatic placement: predict every candidate layout's iteration time from measured costs, pick the fastest.

`cluster.component_placement=auto` / `runner.pipeline_stage_num=auto` (and `python -m rlinf_embodied.place`)
use this module. The model is small enough to check by hand. With

    E = env.num_envs, T = runner.rollout_steps, S = pipeline stages,
    e, r, a = the env, rollout and actor GPU sets (one process per GPU),
    n = E / |e| envs per env worker, b = n / S envs per stage (the batch of one policy call),
    k = ceil(|e| / |r|) env workers served by one rollout worker (env ranks go round-robin over rollout ranks),
    t_sim(b) = (env_step_fixed_s + env_step_per_env_s * b) * (1 + env_contention * (|e| - 1))
                                                             (one stage's step: one action chunk)
             * stage_env_factor when S >= 2                  (each stage is a vector env of its own;
                                                              measured, see below)
    t_inf(b) = (infer_fixed_s + infer_per_sample_s * b) * (1 + infer_contention * (|r| - 1))
                                                             (one policy call on a batch of b)
    o        = step_overhead_s                               (what a rollout step costs beyond sim and
                                                              inference: channels, obs batching; measured)

one rollout step takes

    W_env  = S * t_sim(b)                 an env worker steps its S stages
    W_roll = k * S * t_inf(b)             a rollout worker answers its k*S shards
    step   = max(W_env, W_roll) + (1 - eff) * min(W_env, W_roll) + o
                                      when S >= 2 (simulation overlaps inference; eff = overlap_efficiency
                                      where e and r share no GPU, shared_overlap_efficiency where they do;
                                      1 hides the shorter one completely, 0 not at all)
           = W_env + W_roll + o       when S = 1 (the policy waits for the envs and the envs for the policy)
    step  *= parallel_stage_factor    when S >= 2 and |e| >= 2 (measured, see below)

and one iteration (the runner is synchronous: sync weights, roll out, train)

    rollout = T * step
    train   = (train_fixed_s + train_per_sample_s * E * T / |a|) * (1 + train_contention * (|a| - 1))
              (the fixed part: update_epochs x num_minibatches optimizer steps, whatever the batch; the
               per-sample part is data parallel over the actor ranks)
    swap    = 2 * (offload_s + onload_s)   when a shares a GPU with e or r (rollout out + actor in, and back),
                                      0 with runner.offload=false (every model stays resident)
    seconds = rollout + train + swap + weight_sync_s
    env-steps/s = E * T * env_steps_per_call / seconds

The contentions say how much one more parallel worker slows each worker of a component: 0 where the
workers run on GPUs and cores of their own; on GPUs that share the host's few CPU cores (or simulated
GPUs) the env workers compete for them, and actor ranks also wait on gradient all-reduces. They are
measured, not assumed: one extra profile run with every component on every GPU, and the overlap efficiency
in one more with env and rollout on different GPUs and 2 stages: the fraction of the shorter of W_env and
W_roll during which that run's timeline shows simulation and inference running at once
(see placement_profile.py); shared_overlap_efficiency comes from a collocated 2-stage run (every component on
GPU 0), from its step against the no-overlap and full-overlap predictions: on GPUs sharing 2 CPU cores the two
compete, on a real GPU the env workers simulate on the host's cores while the GPU infers (stop 45: about 0.93 on
one H100). The same 2-stage run (env and rollout apart) gives stage_env_factor: its env worker's simulation seconds per step
over S * t_sim(b) from the single-stage runs (on 2 shared CPU cores two vector envs of 4 stepped 1.22x slower
than one of 4 twice, stop 27). parallel_stage_factor comes from a third kind of run, every component on every
GPU with 2 stages: its step seconds over what every other term predicts for that layout. Several env workers
that each step two stages cost more than the contention and stage terms, each measured in a run of its own, add
up to (on 2 shared cores, model 11 predicted that layout's rollout 2.40 s against 2.92 s measured). It is applied
to every layout with S >= 2 and |e| >= 2 as measured with |e| = all GPUs.

A layout is excluded when E does not split into |e| * S stages of whole env groups, or when a GPU's
memory does not hold its components: env_mem_gib (per env worker) plus rollout_mem_gib and
actor_mem_gib / |a| (FSDP shards the actor), of which only the larger of rollout and actor counts where
they swap (with runner.offload=false they never swap: both count). Ties go to the earlier candidate of `enumerate_layouts` (collocated, fewer stages first).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import math
import os
import shlex
import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Iterable, Iterator, Sequence

from .placement import ComponentPlacement

COMPONENTS = ("env", "rollout", "actor")
# 2: fixed training seconds per iteration and a per-step rollout overhead; 3: measured contention of parallel
# workers; 4: measured overlap of simulation and inference in pipeline stages; 5: that overlap read off the
# 2-stage run's own timeline (sim and infer spans at once), not from its step against the other runs; 7: the
# half-size run measured before and after the full-size one (model 6, three iterations per run, was reverted);
# 9: the per-stage simulation slowdown of S >= 2 stages, from the 2-stage run (model 8 was reverted); 10: the
# single-stage runs alternate full, half, full, half, full and each size's figure is the median of its runs;
# 11: the parallel and 2-stage runs made three times each, interleaved with the single-stage ones, and each
# factor they give (contention, overlap efficiency, stage_env_factor) the median over its runs; 12: a measured
# parallel_stage_factor for pipelined layouts with several env workers (model 11 put the all-on-all 2-stage
# layout 4-17% too fast in three accuracy runs: its sim, inference and per-step overhead each a little slower
# than the terms measured apart say); 13: a measured shared_overlap_efficiency for pipelined layouts whose env and
# rollout share a GPU (model 12 assumed 0: on one H100, pi0-small rgb, the collocated 2-stage layout hid about 93%
# of inference behind simulation and ran 13% faster than the stage-1 layout the model picked, stop 45); 14: the
# profile's runs reset episodes each iteration as the run does (runner.reset_each_iteration), unless their rollout
# is capped below runner.rollout_steps (on the H100, training measured ~1 s above the profile's figure, stop 45)
COST_MODEL_VERSION = 14
CACHE_ENV_VAR = "RLINF_PLACEMENT_CACHE"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "rlinf_embodied", "placement")


@dataclass
class ComponentCosts:
    """Measured costs, in seconds and GiB; see the module docstring for how each one enters."""

    env_step_fixed_s: float = 0.0  # one env worker's step of b envs (one action chunk): fixed + per_env * b
    env_step_per_env_s: float = 0.0
    infer_fixed_s: float = 0.0  # one policy call on a batch of b: fixed + per_sample * b
    infer_per_sample_s: float = 0.0
    train_per_sample_s: float = 0.0  # actor seconds per sample (one env x one policy call) on one GPU
    train_fixed_s: float = 0.0  # actor seconds per iteration that do not grow with the batch (per optimizer step)
    step_overhead_s: float = 0.0  # per rollout step, beyond simulation and inference
    offload_s: float = 0.0  # one model GPU -> CPU
    onload_s: float = 0.0  # one model CPU -> GPU
    weight_sync_s: float = 0.0  # actor -> rollout, once per iteration
    env_mem_gib: float = 0.0  # per env worker
    rollout_mem_gib: float = 0.0  # per rollout worker
    actor_mem_gib: float = 0.0  # the whole actor (weights, grads, optimizer), sharded over the actor GPUs
    gpu_mem_gib: float = math.inf  # one GPU's memory
    env_steps_per_call: int = 1  # env steps per policy call (the action chunk)
    # slowdown of each worker per additional parallel worker of the same component (0 = perfect scaling)
    env_contention: float = 0.0
    infer_contention: float = 0.0
    train_contention: float = 0.0
    # how much of the shorter of simulation and inference the pipeline stages hide (1 = all of it), where env and
    # rollout have GPUs of their own, and where they share one (0 = none: the old assumption until measured)
    overlap_efficiency: float = 1.0
    shared_overlap_efficiency: float = 0.0
    # one stage's simulation with S >= 2 stages over the single-stage t_sim of the same envs (1 = no slowdown)
    stage_env_factor: float = 1.0
    # a rollout step with S >= 2 stages and |e| >= 2 env workers over what the terms above predict for it
    parallel_stage_factor: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value) or value < 0:
                raise ValueError(f"ComponentCosts.{f.name}={value!r} must be a number >= 0")
        if self.env_steps_per_call < 1:
            raise ValueError(f"ComponentCosts.env_steps_per_call={self.env_steps_per_call} must be >= 1")
        for name in ("overlap_efficiency", "shared_overlap_efficiency"):
            if getattr(self, name) > 1:
                raise ValueError(f"ComponentCosts.{name}={getattr(self, name)} must lie in [0, 1]")

    def env_step_s(self, envs: float, workers: int = 1) -> float:
        return (self.env_step_fixed_s + self.env_step_per_env_s * envs) * (1 + self.env_contention * (workers - 1))

    def infer_s(self, batch: float, workers: int = 1) -> float:
        return (self.infer_fixed_s + self.infer_per_sample_s * batch) * (1 + self.infer_contention * (workers - 1))

    def train_s(self, samples: float, ranks: int = 1) -> float:
        return (self.train_fixed_s + self.train_per_sample_s * samples / ranks) * (
            1 + self.train_contention * (ranks - 1)
        )

    def to_dict(self) -> dict[str, float]:
        return {k: (None if v == math.inf else v) for k, v in asdict(self).items()}  # JSON has no inf

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ComponentCosts":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"ComponentCosts: unknown fields {unknown}; valid: {sorted(known)}")
        return cls(**{k: (math.inf if v is None and k == "gpu_mem_gib" else v) for k, v in data.items()})


@dataclass
class Layout:
    """One candidate: where each component runs, how many pipeline stages, and (after predict) how fast."""

    component_placement: dict[str, str]
    pipeline_stage_num: int
    mode: str = ""
    seconds: float = math.nan  # predicted seconds per iteration (inf when it does not fit)
    env_steps_per_s: float = math.nan
    fits: bool = True
    reason: str = ""  # why it does not fit
    breakdown: dict[str, float] = field(default_factory=dict)  # rollout / train / swap / sync seconds

    @property
    def name(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.component_placement.items())

    def override(self) -> str:
        """The command-line overrides that run this layout (paste-able into a shell)."""
        inner = ",".join(
            f'{k}:"{v}"' if ("-" in v or "," in v) else f"{k}:{v}" for k, v in self.component_placement.items()
        )
        return (
            f"{shlex.quote('cluster.component_placement={' + inner + '}')} "
            f"runner.pipeline_stage_num={self.pipeline_stage_num}"
        )


def _spec(lo: int, hi: int, num_gpus: int) -> str:
    """GPUs lo..hi-1 as a placement spec."""
    if lo == 0 and hi == num_gpus:
        return "all"
    return str(lo) if hi - lo == 1 else f"{lo}-{hi - 1}"


def enumerate_placements(num_gpus: int) -> list[dict[str, str]]:
    """Every candidate placement on GPUs 0..num_gpus-1, as contiguous blocks [env][rollout][actor]:

    collocated                   all three on all GPUs
    disaggregated (2 blocks)     env+rollout on 0..k-1, actor on k..G-1
    disaggregated (3 blocks)     env on 0..k-1, rollout on k..m-1, actor on m..G-1
    hybrid                       env on 0..k-1, rollout on k..G-1, actor on all / on env's / on rollout's GPUs
    hybrid                       env+rollout on 0..k-1, actor on all
    """
    if not isinstance(num_gpus, int) or isinstance(num_gpus, bool) or num_gpus < 1:
        raise ValueError(f"num_gpus={num_gpus!r}: automatic placement needs at least one GPU")
    g = num_gpus
    out = [{"env": "all", "rollout": "all", "actor": "all"}]
    for k in range(1, g):
        out.append({"env": _spec(0, k, g), "rollout": _spec(0, k, g), "actor": _spec(k, g, g)})
    for k in range(1, g):
        for m in range(k + 1, g):
            out.append({"env": _spec(0, k, g), "rollout": _spec(k, m, g), "actor": _spec(m, g, g)})
    for k in range(1, g):
        env, rollout = _spec(0, k, g), _spec(k, g, g)
        for actor in ("all", env, rollout):
            out.append({"env": env, "rollout": rollout, "actor": actor})
    for k in range(1, g):
        out.append({"env": _spec(0, k, g), "rollout": _spec(0, k, g), "actor": "all"})
    return out


def enumerate_layouts(num_gpus: int, stages: Sequence[int] = (1, 2)) -> list[Layout]:
    """Each placement of `enumerate_placements` with each pipeline stage count, not yet predicted."""
    return [Layout(dict(p), s) for p in enumerate_placements(num_gpus) for s in stages]


def predict(
    layout: Layout,
    costs: ComponentCosts,
    num_envs: int,
    rollout_steps: int,
    num_gpus: int,
    env_group_size: int = 1,
    num_nodes: int = 1,
    *,
    offload: bool = True,
) -> Layout:
    """`layout` with mode, seconds, env_steps_per_s, fits/reason and breakdown filled in (a copy).

    num_gpus is the GPUs per node; num_nodes the nodes (global ids as in scheduler/placement.py)."""
    for name, value in (
        ("num_envs", num_envs),
        ("rollout_steps", rollout_steps),
        ("num_gpus", num_gpus),
        ("env_group_size", env_group_size),
        ("num_nodes", num_nodes),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r} must be an integer >= 1")
    stages = layout.pipeline_stage_num
    if not isinstance(stages, int) or isinstance(stages, bool) or stages < 1:
        raise ValueError(f"pipeline_stage_num={stages!r} must be an integer >= 1")
    placement = ComponentPlacement(
        layout.component_placement, num_gpus=num_gpus, num_nodes=num_nodes, component_names=COMPONENTS
    )
    missing = [c for c in COMPONENTS if c not in placement.components]
    if missing:
        raise ValueError(f"layout {layout.component_placement} places no GPUs for {missing}")
    e, r, a = (set(placement.gpus(c)) for c in COMPONENTS)
    out = replace(layout, mode=placement.mode, breakdown={})
    if num_envs % (len(e) * stages * env_group_size):
        return _excluded(
            out,
            f"{num_envs} envs do not split into {len(e)} env workers x {stages} stages"
            + (f" of groups of {env_group_size}" if env_group_size > 1 else ""),
        )
    swaps = offload and bool(a & (e | r))
    per_gpu = {}
    for gpu in sorted(e | r | a):
        models = [costs.rollout_mem_gib if gpu in r else 0.0, costs.actor_mem_gib / len(a) if gpu in a else 0.0]
        per_gpu[gpu] = (costs.env_mem_gib if gpu in e else 0.0) + (max(models) if swaps else sum(models))
    over = {gpu: gib for gpu, gib in per_gpu.items() if gib > costs.gpu_mem_gib}
    if over:
        gpu, gib = max(over.items(), key=lambda item: item[1])
        return _excluded(out, f"GPU {gpu} needs {gib:.1f} GiB > {costs.gpu_mem_gib:.1f} GiB")

    n = num_envs // len(e)
    b = n // stages
    k = math.ceil(len(e) / len(r))
    w_env = stages * costs.env_step_s(b, len(e)) * (costs.stage_env_factor if stages >= 2 else 1.0)
    w_roll = k * stages * costs.infer_s(b, len(r))
    efficiency = costs.shared_overlap_efficiency if e & r else costs.overlap_efficiency
    hidden = efficiency * min(w_env, w_roll) if stages >= 2 else 0.0
    step = w_env + w_roll - hidden + costs.step_overhead_s
    if stages >= 2 and len(e) >= 2:
        step *= costs.parallel_stage_factor
    breakdown = {
        "rollout": rollout_steps * step,
        "train": costs.train_s(num_envs * rollout_steps, len(a)),
        "swap": 2 * (costs.offload_s + costs.onload_s) if swaps else 0.0,
        "sync": costs.weight_sync_s,
    }
    seconds = sum(breakdown.values())
    steps = num_envs * rollout_steps * costs.env_steps_per_call
    return replace(
        out, seconds=seconds, env_steps_per_s=steps / seconds if seconds > 0 else math.inf, breakdown=breakdown
    )


def predict_all(
    layouts: Iterable[Layout],
    costs: ComponentCosts,
    num_envs: int,
    rollout_steps: int,
    num_gpus: int,
    env_group_size: int = 1,
    num_nodes: int = 1,
    *,
    offload: bool = True,
) -> list[Layout]:
    return [
        predict(layout, costs, num_envs, rollout_steps, num_gpus, env_group_size, num_nodes, offload=offload)
        for layout in layouts
    ]


def choose(
    costs: ComponentCosts,
    num_envs: int,
    rollout_steps: int,
    num_gpus: int,
    env_group_size: int = 1,
    num_nodes: int = 1,
    layouts: Sequence[Layout] | None = None,
    *,
    offload: bool = True,
    refuse: Callable[[Layout], str] | None = None,
) -> tuple[Layout, list[Layout]]:
    """(the fastest layout that fits, every candidate predicted). `layouts` defaults to every layout on
    num_gpus * num_nodes GPUs with 1 and 2 stages; ValueError when none fits.

    `refuse(layout)`: why the caller's config cannot run a layout the cost model lets through (its env split,
    minibatches per actor rank, ...), or "" where it can; a refused layout is excluded with that reason."""
    if layouts is None:
        layouts = enumerate_layouts(num_gpus * num_nodes)
    predicted = predict_all(
        layouts, costs, num_envs, rollout_steps, num_gpus, env_group_size, num_nodes, offload=offload
    )
    if refuse is not None:
        predicted = [_excluded(layout, refuse(layout)) if layout.fits else layout for layout in predicted]
    best = None
    for layout in predicted:
        if layout.fits and (best is None or layout.seconds < best.seconds):
            best = layout
    if best is None:
        reasons = sorted({layout.reason for layout in predicted})
        raise ValueError(f"no candidate layout fits ({len(predicted)} tried): " + "; ".join(reasons))
    return best, predicted


def _excluded(layout: Layout, reason: str) -> Layout:
    """`layout` marked as not fitting, for `reason`; its breakdown is cleared (before: a layout refused by the config
    after its prediction kept rollout/train/swap/sync seconds that the table printed as if it could run)."""
    if not reason:
        return layout
    return replace(layout, fits=False, reason=reason, seconds=math.inf, env_steps_per_s=0.0, breakdown={})


TABLE_WIDTH = 160  # format_table's lines stay within this many columns (where the placement names allow)
BREAKDOWN = ("rollout", "train", "swap", "sync")


def format_table(layouts: Sequence[Layout], chosen: Layout | None = None, limit: int | None = None) -> str:
    """The candidates, fastest first; those that do not fit last, with a short reason in place of the numbers (the
    full reason is Layout.reason); `*` marks the chosen."""
    ranked = sorted(layouts, key=lambda layout: (not layout.fits, layout.seconds))
    if limit is not None and len(ranked) > limit:
        kept = ranked[:limit]
        if chosen is not None and chosen not in kept:
            kept.append(chosen)
        ranked = kept
    width = max([len("placement")] + [len(layout.name) for layout in ranked])
    header = (
        f"  {'placement':<{width}}  {'stages':>6}  {'mode':<13}  {'iter s':>9}  {'env-steps/s':>11}  "
        f"{'rollout s':>9}  {'train s':>8}  {'swap s':>7}  {'sync s':>7}  note"
    )
    lines = [header, "-" * len(header)]
    for layout in ranked:
        mark = "*" if chosen is not None and layout == chosen else " "
        lines.append(f"{mark} {layout.name:<{width}}  {layout.pipeline_stage_num:>6}  {layout.mode:<13}  ")
        lines[-1] += _row_figures(layout, mark == "*") if layout.fits else _short_reason(layout.reason, len(lines[-1]))
    if limit is not None and len(layouts) > len(ranked):
        lines.append(f"  ... {len(layouts) - len(ranked)} more")
    return "\n".join(lines)


def _row_figures(layout: Layout, chosen: bool) -> str:
    """A fitting layout's predicted seconds, env-steps/s and breakdown, and `chosen` in the note column."""
    parts = [layout.breakdown.get(key, math.nan) for key in BREAKDOWN]
    return (
        f"{layout.seconds:>9.3f}  {layout.env_steps_per_s:>11.1f}  {parts[0]:>9.3f}  {parts[1]:>8.3f}  "
        f"{parts[2]:>7.3f}  {parts[3]:>7.3f}  {'chosen' if chosen else ''}"
    ).rstrip()


def _short_reason(reason: str, column: int) -> str:
    """ "excluded: " and `reason`'s first clause (up to its first ": ", "; " or " (": what is wrong, not the advice
    after it), cut to end by TABLE_WIDTH when the row's text starts at `column` (at least 40 characters)."""
    cuts = [index for index in (reason.find(sep) for sep in (": ", "; ", " (")) if index > 0]
    text = f"excluded: {reason[: min(cuts)] if cuts else reason}"
    room = max(40, TABLE_WIDTH - column)
    return text if len(text) <= room else text[: room - 3].rstrip() + "..."


# ---- measurement cache --------------------------------------------------------------------------
def cache_dir() -> str:
    return os.path.expanduser(os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_DIR)


def check_cache_dir() -> str:
    """cache_dir(), created and checked writable (a file made and removed in it), else an OSError naming it and
    RLINF_PLACEMENT_CACHE: called before a profile whose costs it is to hold (before: the profile ran for minutes,
    then save_costs failed on a raw NotADirectoryError and every measurement was lost)."""
    path = cache_dir()
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_check_"):
            pass
    except OSError as error:
        given = os.environ.get(CACHE_ENV_VAR)
        source = f"{CACHE_ENV_VAR}={given!r}" if given else f"the default, {CACHE_ENV_VAR} unset"
        raise type(error)(
            f"the placement cache directory {path!r} ({source}) cannot be created or written "
            f"({error.strerror or error}), so the costs a profile measures could not be kept; set {CACHE_ENV_VAR} "
            "to a writable directory (or one that can be created)"
        ) from None
    return path


def cache_key(
    env_id: str,
    obs_mode: str,
    num_envs: int,
    policy: str,
    size: str,
    num_gpus: int,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The cache entry's key. `settings`: every other setting that changes the measured costs (env kwargs,
    policy overrides, algorithm, ...; placement_profile.measured_settings), kept as a digest."""
    return {
        "env_id": env_id,
        "obs_mode": obs_mode,
        "num_envs": num_envs,
        "policy": policy,
        "size": size,
        "num_gpus": num_gpus,
        "settings": settings_digest(settings or {}),
        "cost_model": COST_MODEL_VERSION,  # costs measured for an older model are measured again
    }


def settings_digest(settings: dict[str, Any]) -> str:
    """A short, order-independent digest of JSON-like `settings` (values JSON lacks by their repr)."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def cache_path(key: dict[str, Any]) -> str:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    slug = "".join(ch if ch.isalnum() else "_" for ch in f"{key['env_id']}_{key['policy']}_{key['size']}")
    return os.path.join(cache_dir(), f"{slug}_{digest}.json")


def save_costs(key: dict[str, Any], costs: ComponentCosts) -> str:
    path = cache_path(key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump({"key": key, "costs": costs.to_dict()}, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
    reads = _READ_ONCE.get()
    if reads is not None:  # a load after the save reads the file again
        reads.pop(json.dumps(key, sort_keys=True), None)
    return path


# what load_costs read within a costs_read_once() block, by key; None outside one (every load reads the file)
_READ_ONCE: contextvars.ContextVar[dict[str, ComponentCosts | None] | None] = contextvars.ContextVar(
    "placement_costs_read_once", default=None
)


@contextlib.contextmanager
def costs_read_once() -> Iterator[None]:
    """Within the block, load_costs reads each key's cache file once and answers its later calls with that read (a
    copy each time); save_costs of a key makes the next load read it again. One start (`python -m
    rlinf_embodied.place`, train's resolve_auto_placement) asks in several checks whether the costs are cached:
    before, each read the file (place: 4 times). Only the block's own calls share the read, so a long-lived process
    or the next test reads the file afresh. A block inside another shares the outer one's reads."""
    if _READ_ONCE.get() is not None:
        yield
        return
    token = _READ_ONCE.set({})
    try:
        yield
    finally:
        _READ_ONCE.reset(token)


def load_costs(key: dict[str, Any]) -> ComponentCosts | None:
    """The cached costs for `key`, or None (no file, another key, or a file this version cannot read); within a
    costs_read_once() block, the file is read once per key."""
    reads = _READ_ONCE.get()
    if reads is None:
        return _read_costs(key)
    name = json.dumps(key, sort_keys=True)
    if name not in reads:
        reads[name] = _read_costs(key)
    costs = reads[name]
    return None if costs is None else replace(costs)  # a copy: each caller owns what it got, as from a read


def _read_costs(key: dict[str, Any]) -> ComponentCosts | None:
    path = cache_path(key)
    try:
        with open(path) as f:
            data = json.load(f)
        if data.get("key") != key:
            return None
        return ComponentCosts.from_dict(data["costs"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def fit_linear(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """(fixed, per_unit) >= 0 through measured (size, seconds) points: least squares over two or more
    sizes, proportional (fixed 0) with one."""
    points = [(float(x), float(y)) for x, y in points if x > 0 and math.isfinite(y)]
    if not points:
        return 0.0, 0.0
    xs = {x for x, _ in points}
    if len(xs) == 1:
        return 0.0, max(0.0, sum(y for _, y in points) / len(points) / points[0][0])
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    slope = max(0.0, slope)
    fixed = my - slope * mx
    if fixed < 0:  # a negative intercept: proportional through the mean instead
        return 0.0, my / mx
    return fixed, slope
