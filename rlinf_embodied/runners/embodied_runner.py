"""EmbodiedRunner: the training loop, top-down.

    for each iteration:
        sync weights actor -> rollout
        roll out: env workers and rollout workers trade observations and actions through channels
        offload env/rollout, onload the actor (where they share GPUs)
        train: the actor computes advantages and updates the policy (FSDP over all its ranks)
        offload the actor; every eval_interval: evaluate the new policy, keep the best checkpoint
        log metrics; checkpoint

Metric names (metrics.jsonl, TensorBoard, the progress bar), one namespace each, as CleanRL and
ManiSkill's baselines do:
    rollout/*  the training episodes that ended this iteration (success_rate, success_once, episode_return,
               episode_length, num_episodes); with dynamic sampling also sampling_rounds, kept_groups,
               dropped_groups
    train/*    the actor's update (loss, policy_loss, value_loss, entropy, approx_kl, clip_fraction, ...)
    eval/*     deterministic evaluation on held-out seeds, every runner.eval_interval iterations; with it
               rollout_success_ratio, the noisy rollouts' success since the last evaluation over this one's
               (warned about under 0.8 for RL from a checkpoint: runners/exploration_gap.py)
    time/*     progress and speed: env_steps (cumulative), throughput (env steps/s of the rollout),
               rollout_seconds, train_seconds, eval_seconds, elapsed_seconds
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections import defaultdict
from typing import Any, Optional

from tqdm.auto import tqdm

from ..config import COLLOCATED_PLACEMENT, TrainConfig, is_auto
from ..envs.registration import time_limit
from ..scheduler import Channel, Cluster, ComponentPlacement, WorkerError, WorkerGroup, wait_all
from ..scheduler.worker import check_names_free
from ..workers.actor_worker import ActorWorker
from ..workers.env_worker import EnvWorker, envs_per_stage, per_env_task_ids
from ..workers.policy_loading import (
    check_checkpoint_action_dim,
    check_policy_cameras,
    predicted_policy_dims,
    resolved_policy_config,
)
from ..workers.rollout_worker import RolloutWorker, num_env_groups
from .exploration_gap import ExplorationGap
from .interrupts import StopRequest
from .metrics_logger import MetricsLogger

logger = logging.getLogger(__name__)

COMPONENTS = ("env", "rollout", "actor")  # the worker groups' names
# The channels (name, maxsize). Double-buffered per env shard (key): a shard has at most one message in flight each
# way, the second slot lets a producer run one step ahead. The actor channel holds a whole rollout until the trainer
# starts, so it is unbounded.
CHANNELS = (("env_to_rollout", 2), ("rollout_to_env", 2), ("rollout_to_actor", 0))


class EmbodiedRunner:
    def __init__(self, cfg: TrainConfig, cluster: Cluster, output_dir: str, stop: StopRequest | None = None):
        self.cfg = cfg
        self.stop = stop  # SIGINT/SIGTERM in the driver: finish the iteration, checkpoint, return
        self.cluster = cluster
        self.output_dir = output_dir
        self.placement = component_placement(cfg)
        check_cluster_fits(cfg, cluster)
        self.phase_seconds: dict[str, float] = defaultdict(float)  # this iteration's time/* breakdown
        if cfg.runner.resume:  # before any worker starts, where the checkpoint records its iteration
            check_resume_leaves_work(cfg, read_saved_iteration(cfg.runner.resume))
        self._start_workers(cfg, cluster)
        self.start_iteration, self.total_env_steps = 0, 0
        if cfg.runner.resume:
            resumed = self.actor_group.load_checkpoint(cfg.runner.resume).wait()[0]
            self.start_iteration, self.total_env_steps = resumed["iteration"] + 1, resumed["env_steps"]
            warn_resume_not_exact(cfg)
            try:  # a checkpoint saved before training_state.json existed
                check_resume_leaves_work(cfg, resumed["iteration"])
            except ValueError:
                self.shutdown()
                raise
        self.metrics_logger = MetricsLogger(
            output_dir, resume_after=self.start_iteration - 1 if cfg.runner.resume else None
        )
        self.rollout_weights_current = False  # the rollout workers already hold the actor's weights
        self.best_eval_success = read_best_eval_success(output_dir)
        # noisy rollout success vs each evaluation's; warned about only for RL from a checkpoint (an SFT/BC start)
        self.exploration_gap = ExplorationGap(warn=cfg.policy.checkpoint is not None)

    def _start_workers(self, cfg: TrainConfig, cluster: Cluster) -> None:
        """Channels and the env, rollout and actor groups; what started is shut down if any part fails."""
        start = time.perf_counter()
        # Every name this run needs, before anything starts: where another run on this Ray cluster holds one, refuse
        # and leave it alone (before: this run replaced that run's channels, then failed at the env group's launch).
        check_names_free(groups=COMPONENTS, channels=[name for name, _ in CHANNELS])
        pending_channels: list = []
        groups: list[WorkerGroup] = []
        try:
            # Every group's processes start at once; the model groups get their arguments (the policies'
            # dims come from the env's spec) once the env group has read its spaces, then build their policies
            # together while the env processes build their envs.
            for worker_cls, name, args in (
                (EnvWorker, "env", (cfg,)),
                (RolloutWorker, "rollout", ()),
                (ActorWorker, "actor", ()),
            ):
                strategy = self.placement.strategy(name)
                groups.append(worker_cls.create_group(*args).start(cluster, name=name, placement_strategy=strategy))
            # After the groups claimed their names; their processes start beside the workers'.
            for channel_name, maxsize in CHANNELS:
                pending_channels.append(Channel.start(channel_name, maxsize=maxsize))
            self.env_group, self.rollout_group, self.actor_group = groups
            self.env_group.wait_launched().init_worker().wait()
            spec = self.env_spec = self.env_group.execute_on(0).env_spec().wait()[0]
            check_policy_cameras(cfg.policy, spec, cfg.env.id)  # before minutes of building a VLA
            if cfg.policy.checkpoint is not None:  # on the driver: a worker's error came wrapped in its traceback
                predicted = predicted_policy_dims(cfg.policy)["action_dim"]
                check_checkpoint_action_dim(cfg.policy.checkpoint, predicted, spec["action_dim"])
            check_rollout_reaches_time_limit(cfg, spec)
            specced = time.perf_counter()
            self.rollout_group.bind(cfg, spec["action_dim"], spec["state_dim"], self.env_group.world_size)
            self.actor_group.bind(cfg, spec["action_dim"], spec["state_dim"])
            for group in (self.rollout_group, self.actor_group):
                group.wait_launched()
            for handle in [group.init_worker() for group in (self.rollout_group, self.actor_group)]:
                handle.wait()
            policies_built = time.perf_counter()
            # the env processes built their envs meanwhile (SubprocVectorEnv returns once they are launched)
            envs_ready_at = max(self.env_group.wait_until_ready().wait())  # wall clock
            self.env_channel, self.action_channel, self.actor_channel = (p.wait() for p in pending_channels)
        except BaseException:
            for group in groups:
                group.shutdown()
            for pending in pending_channels:
                pending.channel.destroy()
            raise
        total, waited_since_ready = time.perf_counter() - start, time.time() - envs_ready_at
        self.startup_seconds = {
            # launch -> every env built; the policies (spec -> both model groups initialised) build meanwhile
            "time/startup_env_seconds": total - waited_since_ready,
            "time/startup_policy_seconds": policies_built - specced,
            "time/startup_seconds": total,
        }
        logger.info(
            "workers started in %.1f s (envs built after %.1f s; rollout + actor, building beside them, %.1f s)",
            *[
                self.startup_seconds[k]
                for k in ("time/startup_seconds", "time/startup_env_seconds", "time/startup_policy_seconds")
            ],
        )

    @contextlib.contextmanager
    def _timed(self, phase: str):
        """Add the body's wall-clock seconds to this iteration's time/{phase}_seconds."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phase_seconds[phase] += time.perf_counter() - start

    # ---- the loop -----------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        history = []
        iterations = range(self.start_iteration, self.cfg.runner.max_iterations)
        # counted by hand, after each iteration's postfix: iterating the bar counted an iteration only when the next
        # began, so it showed "1/2 [...] ret=<iteration 1's>" (the count one behind the metrics beside it)
        progress = tqdm(total=len(iterations), desc="train", disable=not self.cfg.runner.progress, dynamic_ncols=True)
        start = time.perf_counter()
        for iteration in iterations:
            if self._stop_requested():
                finished = iteration - 1  # the signal came between two iterations
                self.stop.save_unless_saved(
                    finished, finished >= self.start_iteration, lambda: self.save_checkpoint(finished)
                )
                break
            self.phase_seconds.clear()
            iteration_start = time.perf_counter()
            self.ready_rollout()
            rollout_metrics = self.rollout(iteration)
            self.exploration_gap.add_rollout(rollout_metrics)
            train_metrics = self.train(iteration)
            metrics = {**rollout_metrics, **train_metrics}
            evaluation_skipped = self._should_evaluate(iteration) and self._stop_requested()
            if self._should_evaluate(iteration) and not evaluation_skipped:
                metrics.update(self.evaluate(iteration))
                self._keep_if_best(iteration, metrics["eval/success_once"])
                metrics.update(self.exploration_gap.compare(metrics["eval/success_once"]))
            if self._should_save(iteration) or self._stop_requested():
                with self._timed("save"):
                    directory = self.save_checkpoint(iteration)
                if self.stop is not None:
                    self.stop.saved(directory, iteration)
                if evaluation_skipped:
                    warn_evaluation_skipped(iteration, directory, self.cfg.env.id)
            metrics.update(self._time_breakdown(time.perf_counter() - iteration_start))
            if iteration == self.start_iteration:
                metrics.update(self.startup_seconds)
            metrics["time/elapsed_seconds"] = time.perf_counter() - start
            self.metrics_logger.log(iteration, metrics)
            history.append({"iteration": iteration, **metrics})
            postfix = {
                "success": f"{metrics.get('rollout/success_once', math.nan):.2f}",  # the README's headline figure
                "ret": f"{metrics.get('rollout/episode_return', math.nan):.2f}",
            }
            if math.isfinite(self.best_eval_success):
                postfix["best_eval"] = f"{self.best_eval_success:.2f}"
            progress.set_postfix(postfix, refresh=False)
            progress.update()
        progress.close()
        self.metrics_logger.close()
        return history

    def _stop_requested(self) -> bool:
        return self.stop is not None and self.stop.poll(resumed_from=self.cfg.runner.resume)

    def _time_breakdown(self, iteration_seconds: float) -> dict[str, float]:
        """time/{sync,onload,offload,save}_seconds, the iteration's total and what no phase accounts for
        (time/other_seconds; rollout/train/eval are timed where they run)."""
        metrics = {
            f"time/{phase}_seconds": self.phase_seconds.get(phase, 0.0)
            for phase in ("sync", "onload", "offload", "save")
        }
        timed = sum(self.phase_seconds.values())
        metrics["time/iteration_seconds"] = iteration_seconds
        metrics["time/other_seconds"] = max(0.0, iteration_seconds - timed)
        return metrics

    def ready_rollout(self) -> None:
        """The rollout on its GPUs, holding the actor's latest weights."""
        if not self.rollout_weights_current:
            self.sync_weights()
        elif self._swaps_models():  # synced over CUDA IPC right after training, while offloaded
            with self._timed("onload"):
                self.rollout_group.onload().wait()

    def sync_weights(self) -> None:
        if self._swaps_models():  # only a swap takes the rollout's weights off its GPU
            with self._timed("onload"):
                self.rollout_group.onload().wait()
        with self._timed("sync"):
            self.actor_group.sync_weights_to(self.rollout_group)
        self.rollout_weights_current = True

    def rollout(self, iteration: int) -> dict[str, float]:
        """One rollout into the actor channel; with algorithm.dynamic_sampling, rounds of rollouts whose
        informative groups the actors keep (rollout/sampling_rounds, kept_groups, dropped_groups)."""
        if self.cfg.algorithm.dynamic_sampling:
            return self._rollout_with_dynamic_sampling(iteration)
        per_worker, steps, seconds = self._rollout_round(iteration)
        return self._rollout_metrics(per_worker, steps, seconds)

    def _rollout_round(self, iteration: int, sampling_round: int = 0) -> tuple[list[dict], int, float]:
        start = time.perf_counter()
        env_handle = self.env_group.interact(iteration, self.env_channel, self.action_channel, sampling_round)
        rollout_handle = self.rollout_group.generate(
            iteration,
            self.env_channel,
            self.action_channel,
            self.actor_channel,
            self.actor_group.world_size,
            sampling_round,
        )
        _, per_worker = wait_all(rollout_handle, env_handle)
        steps = sum(m["env_steps"] for m in per_worker)
        self.total_env_steps += steps
        return per_worker, steps, time.perf_counter() - start

    def _rollout_metrics(self, per_worker: list[dict], steps: int, seconds: float) -> dict[str, float]:
        metrics = {f"rollout/{key}": value for key, value in merge_episode_metrics(per_worker).items()}
        metrics.update(
            {
                "time/env_steps": self.total_env_steps,
                "time/throughput": steps / seconds,
                "time/rollout_seconds": seconds,
            }
        )
        self.phase_seconds["rollout"] += seconds
        return metrics

    def _rollout_with_dynamic_sampling(self, iteration: int) -> dict[str, float]:
        """DAPO dynamic sampling: roll out (new seeds each round) until every actor rank holds as many
        informative groups as one rollout gives it, or algorithm.max_sampling_rounds rounds were made."""
        all_workers, total_steps, total_seconds, kept, dropped = [], 0, 0.0, 0, 0
        for sampling_round in range(self.cfg.algorithm.max_sampling_rounds):
            per_worker, steps, seconds = self._rollout_round(iteration, sampling_round)
            all_workers += per_worker
            total_steps, total_seconds = total_steps + steps, total_seconds + seconds
            counts = self.actor_group.collect_groups(
                iteration, self.actor_channel, self._pieces_per_actor(), sampling_round
            ).wait()
            kept += sum(c["kept_groups"] for c in counts)
            dropped += sum(c["dropped_groups"] for c in counts)
            if all(c["missing_groups"] == 0 for c in counts):
                break
        else:
            if kept:
                logger.info(
                    "iteration %d: %d informative groups after algorithm.max_sampling_rounds=%d rounds; training on "
                    "those",
                    iteration,
                    kept,
                    self.cfg.algorithm.max_sampling_rounds,
                )
            else:
                logger.warning(
                    "iteration %d: no informative group after algorithm.max_sampling_rounds=%d rounds (every group's "
                    "outcomes were equal, or no episode ended): this iteration's update is skipped",
                    iteration,
                    self.cfg.algorithm.max_sampling_rounds,
                )
        self._dynamic_update = kept > 0
        metrics = self._rollout_metrics(all_workers, total_steps, total_seconds)
        metrics.update(
            {
                "rollout/sampling_rounds": sampling_round + 1,
                "rollout/kept_groups": kept,
                "rollout/dropped_groups": dropped,
            }
        )
        return metrics

    def _pieces_per_actor(self) -> int:
        return self.env_group.world_size * self.cfg.runner.pipeline_stage_num

    def train(self, iteration: int) -> dict[str, float]:
        if self._swaps_models():
            with self._timed("offload"):
                self.rollout_group.offload().wait()
            with self._timed("onload"):
                self.actor_group.onload().wait()
        start = time.perf_counter()
        if self.cfg.algorithm.dynamic_sampling:
            results = self.actor_group.train_collected(iteration, self._dynamic_update).wait()
        else:
            results = self.actor_group.train(iteration, self.actor_channel, self._pieces_per_actor()).wait()
        self.rollout_weights_current = False
        metrics = {f"train/{k}": v for k, v in results[0].items()}
        metrics["time/train_seconds"] = time.perf_counter() - start
        self.phase_seconds["train"] += metrics["time/train_seconds"]
        if self._actor_shares_gpus():
            if self.actor_group.sync_method(self.rollout_group) == "cuda_ipc":
                # while the actor's weights are still on the GPU: the (offloaded) rollout copies them into
                # its host memory, with no trip through the object store and no onload of the actor later
                # (with runner.offload=false: into its resident weights, in place)
                with self._timed("sync"):
                    self.actor_group.sync_weights_to(self.rollout_group)  # auto: falls back if IPC fails
                self.rollout_weights_current = True
            if self._swaps_models():
                with self._timed("offload"):
                    self.actor_group.offload().wait()
        return metrics

    def evaluate(self, iteration: int) -> dict[str, float]:
        """The policy just trained, deterministic, on held-out seeds: eval_rounds episodes per env."""
        start = time.perf_counter()
        swaps_before = self.phase_seconds["sync"] + self.phase_seconds["onload"]
        self.ready_rollout()
        swap_seconds = self.phase_seconds["sync"] + self.phase_seconds["onload"] - swaps_before
        env_handle = self.env_group.evaluate(iteration, self.env_channel, self.action_channel)
        _, per_worker = wait_all(self.rollout_group.evaluate(self.env_channel, self.action_channel), env_handle)
        merged = merge_episode_metrics(per_worker)
        seconds = time.perf_counter() - start
        self.phase_seconds["eval"] += seconds - swap_seconds  # its weight sync is in time/sync_seconds
        return {**{f"eval/{key}": value for key, value in merged.items()}, "time/eval_seconds": seconds}

    def _keep_if_best(self, iteration: int, success: float) -> None:
        if math.isnan(success) or success <= self.best_eval_success:
            return
        self.best_eval_success = success
        directory = self.save_checkpoint(iteration, name="best")
        with open(os.path.join(directory, BEST_FILE), "w") as f:
            json.dump({"iteration": iteration, "env_steps": self.total_env_steps, "eval/success_once": success}, f)

    def collect_timeline(self) -> dict[str, list[tuple[str, float, float]]]:
        """Spans recorded since the last call, one row per worker: "env 0 (GPU 0)" -> spans."""
        rows = {}
        for name, group in (("env", self.env_group), ("rollout", self.rollout_group), ("actor", self.actor_group)):
            gpus = self.placement.gpus(name)
            for rank, spans in enumerate(group.pop_spans().wait()):
                gpu = gpus[rank * len(gpus) // group.world_size] if gpus else None
                rows[f"{name} {rank} (GPU {gpu})"] = spans
        return rows

    def _actor_shares_gpus(self) -> bool:
        return actor_shares_gpus(self.placement)

    def _swaps_models(self) -> bool:
        """Offload and onload around training: the actor shares GPUs and runner.offload is on."""
        return self.cfg.runner.offload and self._actor_shares_gpus()

    # ---- checkpoints --------------------------------------------------------------------------
    def _is_last(self, iteration: int) -> bool:
        return iteration == self.cfg.runner.max_iterations - 1

    def _should_evaluate(self, iteration: int) -> bool:
        """Every eval_interval iterations and at the last one; never when eval_interval is 0."""
        interval = self.cfg.runner.eval_interval
        return interval > 0 and (self._is_last(iteration) or (iteration + 1) % interval == 0)

    def _should_save(self, iteration: int) -> bool:
        """Every save_interval iterations (0 = none) and at the last one (unless runner.save_final is off)."""
        interval = self.cfg.runner.save_interval
        last = self.cfg.runner.save_final and self._is_last(iteration)
        return last or (interval > 0 and (iteration + 1) % interval == 0)

    def save_checkpoint(self, iteration: int, name: str | None = None) -> str:
        """checkpoints/iteration_XXXXXX (or checkpoints/<name>): actor, optimizer, RNG and a policy copy."""
        directory = os.path.join(self.output_dir, "checkpoints", name or f"iteration_{iteration:06d}")
        self.actor_group.save_checkpoint(directory, iteration, self.total_env_steps).wait()
        write_started_from(directory, self.cfg.policy.checkpoint)
        write_saved_iteration(directory, iteration, self.total_env_steps)
        logger.info("saved checkpoint %s", directory)
        return directory

    def shutdown(self, close_timeout_s: float = 30.0) -> None:
        """Close the envs, then kill every worker. After a failure an env worker may still be
        blocked waiting for actions; its close then times out and the kill ends it."""
        try:
            self.env_group.close().wait(timeout=close_timeout_s)
        except (TimeoutError, WorkerError) as error:
            logger.warning("env workers did not close cleanly (%s); killing them", str(error).splitlines()[0])
        for group in (self.env_group, self.rollout_group, self.actor_group):
            group.shutdown()
        for channel in (self.env_channel, self.action_channel, self.actor_channel):
            channel.destroy()


BEST_FILE = "best.json"
STARTED_FROM_FILE = "started_from.json"  # the policy.checkpoint the run that saved a checkpoint started from
TRAINING_STATE_FILE = "training_state.json"  # the iteration a checkpoint ends and its env steps, for the driver


def write_saved_iteration(checkpoint: str, iteration: int, env_steps: int) -> None:
    """Record the iteration `checkpoint` ends (and the env steps so far) beside actor.pt, so that the driver can
    check a resume before any worker starts, without loading actor.pt (gigabytes for a VLA)."""
    with open(os.path.join(checkpoint, TRAINING_STATE_FILE), "w") as f:
        json.dump({"iteration": iteration, "env_steps": env_steps}, f)


def read_saved_iteration(checkpoint: str) -> Optional[int]:
    """The iteration write_saved_iteration recorded in `checkpoint`; None where the checkpoint predates the record."""
    path = os.path.join(checkpoint, TRAINING_STATE_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return int(json.load(f)["iteration"])


def check_resume_leaves_work(cfg: TrainConfig, saved_iteration: Optional[int]) -> None:
    """Refuse a runner.resume whose checkpoint ended at `saved_iteration` (None: not known yet) when
    runner.max_iterations leaves no iteration after it. Before training_state.json, only after every worker had
    started and the actor had read actor.pt."""
    if saved_iteration is not None and saved_iteration + 1 >= cfg.runner.max_iterations:
        raise ValueError(
            f"runner.resume={cfg.runner.resume!r} ended at iteration {saved_iteration}, so "
            f"runner.max_iterations={cfg.runner.max_iterations} leaves nothing to train; set "
            f"runner.max_iterations above {saved_iteration + 1}"
        )


def write_started_from(checkpoint: str, policy_checkpoint: Optional[str]) -> None:
    """Record in `checkpoint` the policy.checkpoint its run started from (absolute; None: a new policy), so that a
    resume repeating it, as the printed resume command does, is not warned about."""
    started_from = None if policy_checkpoint is None else os.path.abspath(policy_checkpoint)
    with open(os.path.join(checkpoint, STARTED_FROM_FILE), "w") as f:
        json.dump({"policy.checkpoint": started_from}, f)


def read_started_from(checkpoint: str) -> Optional[str]:
    """The absolute policy.checkpoint write_started_from recorded in `checkpoint`; None where it recorded none
    (a new policy) or the checkpoint predates the record."""
    path = os.path.join(checkpoint, STARTED_FROM_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)["policy.checkpoint"]


def warn_resume_not_exact(cfg: TrainConfig) -> None:
    """A checkpoint holds weights, optimizer and RNG, not the simulators: with runner.reset_each_iteration=false the
    episodes in progress at the checkpoint are lost, so the resumed run differs from an uninterrupted one."""
    if not cfg.runner.reset_each_iteration:
        logger.warning(
            "runner.resume with runner.reset_each_iteration=false: the episodes in progress at the checkpoint were "
            "not saved, so this run starts new ones and will not match an uninterrupted run (with "
            "runner.reset_each_iteration=true, the default, a resume starts where the run stopped, to rounding)"
        )


def warn_evaluation_skipped(iteration: int, checkpoint: str, env_id: str) -> None:
    """A stop at an evaluation iteration saves without evaluating (a scheduler's grace period is short); a resumed
    run starts after that iteration, so its eval/* would never be logged and checkpoints/best never see it."""
    logger.warning(
        "the stop skipped iteration %d's evaluation: no eval/* for it, and checkpoints/best did not consider it; "
        "evaluate it with: python -m rlinf_embodied.eval policy.checkpoint=%s plus this run's env= and policy= "
        "overrides (env.id %s)",
        iteration,
        os.path.join(checkpoint, "policy"),
        env_id,
    )


def read_best_eval_success(output_dir: str) -> float:
    """The eval/success_once of checkpoints/best in output_dir (a resumed run continues it), else -inf."""
    path = os.path.join(output_dir, "checkpoints", "best", BEST_FILE)
    if not os.path.isfile(path):
        return -math.inf
    with open(path) as f:
        return float(json.load(f)["eval/success_once"])


def component_placement(cfg: TrainConfig) -> ComponentPlacement:
    """cfg.cluster.component_placement parsed; the driver calls it before Ray starts, so a bad spec fails
    at once with the parser's message quoting the bad token."""
    if is_auto(cfg.cluster.component_placement) or is_auto(cfg.runner.pipeline_stage_num):
        raise ValueError(
            "cluster.component_placement / runner.pipeline_stage_num is 'auto': resolve it first "
            "(runners/placement_profile.py resolve_auto_placement, as train.py does)"
        )
    try:
        placement = ComponentPlacement(
            dict(cfg.cluster.component_placement or COLLOCATED_PLACEMENT),
            num_gpus=cfg.cluster.num_gpus_per_node,
            num_nodes=cfg.cluster.num_nodes,
            component_names=COMPONENTS,
        )
    except ValueError as error:
        raise ValueError(f"cluster.component_placement={dict(cfg.cluster.component_placement)}: {error}") from None
    missing = [c for c in COMPONENTS if c not in placement.components]
    if missing:
        raise ValueError(
            f"cluster.component_placement places no GPUs for {missing}; every one of {list(COMPONENTS)} needs an entry"
        )
    return placement


def check_env_split(cfg: TrainConfig, placement: ComponentPlacement) -> None:
    """env.num_envs over the env workers x pipeline stages (and env.kwargs.num_workers within each vector env), its
    env groups and samples over the actor ranks: checked before Ray starts (before: an env, rollout or actor
    worker's error, after every worker had started)."""
    env_workers, rollout_ranks = len(placement.gpus("env")), len(placement.gpus("rollout"))
    if rollout_ranks > env_workers:  # before: the extra ranks built the policy, took weight syncs and served nothing
        raise ValueError(
            f"cluster.component_placement gives the rollout {rollout_ranks} GPUs {placement.gpus('rollout')} for "
            f"{env_workers} env worker(s): rollout ranks serve env workers round-robin, so {rollout_ranks - env_workers} "
            f"would serve none; give the rollout at most {env_workers} GPU(s), or the env more"
        )
    per_stage = envs_per_stage(cfg, env_workers)
    check_task_ids(cfg, per_stage)
    workers = cfg.env.kwargs.get("num_workers")
    if isinstance(workers, int) and workers > per_stage:  # before: per_stage processes, silently
        raise ValueError(
            f"env.kwargs.num_workers={workers} > the {per_stage} envs of each vector env (env.num_envs="
            f"{cfg.env.num_envs} over {len(placement.gpus('env'))} env worker(s) x runner.pipeline_stage_num="
            f"{cfg.runner.pipeline_stage_num}): each worker process steps at least one env; set it <= {per_stage}"
        )
    num_env_groups(cfg.env.num_envs, cfg.algorithm.env_group_size, len(placement.gpus("actor")))
    check_minibatches_fit(cfg, len(placement.gpus("actor")))


def check_task_ids(cfg: TrainConfig, per_stage: Optional[int] = None) -> None:
    """A per-env env.kwargs.task_id list: one id per env, and one task in each group of the algorithm's
    env_group_size consecutive envs. Independent of the layout (`per_stage`, the envs of each env worker x pipeline
    stage, only words the message), so check_train_config runs it before Ray under `auto` placement too."""
    task_ids = per_env_task_ids(cfg.env.kwargs)
    if task_ids is None:
        return
    if len(task_ids) != cfg.env.num_envs:  # before: a worker's error, naming neither
        share = per_stage if per_stage is not None else "share of them"
        raise ValueError(
            f"env.kwargs.task_id={task_ids} gives one task per env, {len(task_ids)} for env.num_envs="
            f"{cfg.env.num_envs}: give {cfg.env.num_envs} task ids (each env worker x pipeline stage plays its "
            f"{share} in order), or one id for all envs"
        )
    check_groups_share_a_task(task_ids, cfg.algorithm.env_group_size)


def check_groups_share_a_task(task_ids: list, group_size: int) -> None:
    """A grouped estimator (GRPO, DAPO) compares the returns of each group of `group_size` consecutive envs, which
    reset to the same seed: with one task per env, a group must hold one task too. Before: a group of tasks 0 and 1
    ranked the easier task's env above the other's, without a word."""
    for start in range(0, len(task_ids) - group_size + 1, group_size):
        group = task_ids[start : start + group_size]
        if any(task != group[0] for task in group):
            example = sorted(task_ids)  # the same tasks, grouped, where each one's count allows it
            if any(len(set(example[i : i + group_size])) > 1 for i in range(0, len(example), group_size)):
                example = [task_ids[i - i % group_size] for i in range(len(task_ids))]
            raise ValueError(
                f"env.kwargs.task_id={task_ids}: group {start // group_size} of algorithm.group_size={group_size} "
                f"(envs {start}-{start + group_size - 1}) holds tasks {group}, but a group's returns are compared "
                f"with each other, so its envs must play one task; give each {group_size} consecutive envs one "
                f"task, e.g. {example}"
            )


# dynamic sampling keeps fewer samples than a rollout holds, never more (ActorWorker.train_collected)
DYNAMIC_SAMPLING_BOUND = " (algorithm.dynamic_sampling trains on at most one rollout's worth)"


def check_minibatches_fit(cfg: TrainConfig, actor_ranks: int) -> None:
    """Each actor rank splits its samples (policy calls of its envs) into algorithm.num_minibatches; the rank with
    the fewest has at most the mean, env.num_envs x runner.rollout_steps / ranks. Before: the actor's error after the
    first rollout. Dynamic sampling trains on at most one rollout's worth of groups (ActorWorker.train_collected),
    so these bounds hold for it too; only the minibatches-of-1 check depends on how many groups it keeps."""
    algo = cfg.algorithm
    samples = cfg.env.num_envs * cfg.runner.rollout_steps
    bound = DYNAMIC_SAMPLING_BOUND if algo.dynamic_sampling else ""
    if algo.num_minibatches * actor_ranks > samples:
        raise ValueError(
            f"algorithm.num_minibatches={algo.num_minibatches} x {actor_ranks} actor rank(s) > env.num_envs x "
            f"runner.rollout_steps = {cfg.env.num_envs} x {cfg.runner.rollout_steps} = {samples} samples per "
            f"iteration{bound}: some minibatch would be empty; set algorithm.num_minibatches <= "
            f"{samples // actor_ranks // (2 if algo.normalize_in_loss else 1)}"
        )
    if not algo.dynamic_sampling:
        check_minibatches_hold_two_samples(cfg, samples // actor_ranks)
    check_micro_batches_split(cfg, actor_ranks, bound)


def check_minibatches_hold_two_samples(cfg: TrainConfig, samples_per_rank: int) -> None:
    """A one-sample minibatch's normalised advantage is x - mean = 0: only the critic would train."""
    algo = cfg.algorithm
    if algo.normalize_in_loss and samples_per_rank // algo.num_minibatches < 2:
        raise ValueError(
            f"algorithm.num_minibatches={algo.num_minibatches} splits {samples_per_rank} samples per actor rank "
            f"into minibatches of 1, and adv_type={algo.adv_type!r} normalises advantages per minibatch "
            f"(algorithm.normalize_advantages=true): every advantage would be 0 and the policy would not train; set "
            f"algorithm.num_minibatches <= {samples_per_rank // 2}, or normalize_advantages=false"
        )


def check_micro_batches_split(cfg: TrainConfig, actor_ranks: int, bound: str = "") -> None:
    """algorithm.micro_batch_size at or above the largest minibatch would split nothing (`bound`: a note where
    dynamic sampling bounds the batch by one rollout's worth)."""
    algo = cfg.algorithm
    largest = largest_minibatch(cfg, actor_ranks)
    if algo.micro_batch_size is not None and algo.micro_batch_size >= largest:
        raise ValueError(
            f"algorithm.micro_batch_size={algo.micro_batch_size} is not below the largest minibatch, {largest} "
            f"samples (env.num_envs x runner.rollout_steps = {cfg.env.num_envs * cfg.runner.rollout_steps}{bound} "
            f"over {actor_ranks} actor rank(s) / algorithm.num_minibatches={algo.num_minibatches}), so it would "
            f"split nothing; set it below {largest}, or null"
        )


def largest_minibatch(cfg: TrainConfig, actor_ranks: int) -> int:
    """The most samples one actor rank's minibatch holds (ranks and minibatches split as evenly as they can)."""
    per_rank = -(-cfg.env.num_envs * cfg.runner.rollout_steps // actor_ranks)
    return -(-per_rank // cfg.algorithm.num_minibatches)


def actor_shares_gpus(placement: ComponentPlacement) -> bool:
    """Whether the actor trains on a GPU that the rollout or the env also uses (then the models swap)."""
    actor_gpus = set(placement.gpus("actor"))
    return bool(actor_gpus & (set(placement.gpus("rollout")) | set(placement.gpus("env"))))


def check_offload_setting(cfg: TrainConfig, placement: ComponentPlacement) -> None:
    """runner.offload=false keeps the models resident where the actor shares GPUs; where it shares none nothing
    is swapped either way, so the setting would change nothing."""
    if not cfg.runner.offload and not actor_shares_gpus(placement):
        raise ValueError(
            f"runner.offload=false would change nothing: in cluster.component_placement the actor (GPUs "
            f"{placement.gpus('actor')}) shares no GPU with the rollout ({placement.gpus('rollout')}) or the env "
            f"({placement.gpus('env')}), so no model is swapped either way; leave runner.offload at true"
        )


def check_rollout_reaches_time_limit(cfg: TrainConfig, spec: dict) -> None:
    """With runner.reset_each_iteration every iteration starts new episodes, so a rollout that covers fewer env
    steps than the time limit cuts every training episode short: the policy never trains on the later steps
    (often the part that completes the task), no episode ends within a rollout, and rollout/* episode metrics
    stay NaN. Rejected before the policies are built, with the three ways out."""
    policy_config = resolved_policy_config(cfg.policy, spec["action_dim"], spec["state_dim"])
    check_rollout_covers_episodes(
        cfg, spec.get("max_episode_steps"), policy_config.action_chunk if policy_config else 1
    )


def check_rollout_reaches_time_limit_early(cfg: TrainConfig) -> None:
    """check_rollout_reaches_time_limit before Ray starts, where the config states the time limit
    (env.max_episode_steps) and the policy's action_chunk (overrides, checkpoint or preset): before, the same
    error came after every worker had started."""
    chunk = predicted_policy_dims(cfg.policy)["action_chunk"]
    limit = time_limit(cfg.env.id, cfg.env.max_episode_steps)  # null: the id's own (a LIBERO suite's)
    if limit and chunk is not None:
        check_rollout_covers_episodes(cfg, limit, chunk)


def check_rollout_covers_episodes(cfg: TrainConfig, limit: Optional[int], chunk: int) -> None:
    covered = cfg.runner.rollout_steps * chunk
    if not limit or covered >= limit:
        return
    if not cfg.runner.reset_each_iteration:
        if not cfg.algorithm.uses_critic:  # GAE bootstraps an unfinished episode with V; these have no V
            logger.warning(
                "runner.rollout_steps=%d x action_chunk=%d = %d env steps per iteration, fewer than "
                "env.max_episode_steps=%d: episodes carry over between iterations, and adv_type=%r (no critic) "
                "credits only the steps of episodes that end within an iteration; the other steps get advantage 0, "
                "and an iteration in which no episode ends trains nothing",
                cfg.runner.rollout_steps,
                chunk,
                covered,
                limit,
                cfg.algorithm.adv_type,
            )
        return
    raise ValueError(
        f"runner.rollout_steps={cfg.runner.rollout_steps} x action_chunk={chunk} = {covered} env steps per "
        f"iteration, fewer than env.max_episode_steps={limit}, with runner.reset_each_iteration=true: every "
        f"training episode would be cut at step {covered} (never trained past it, and no rollout/* episode "
        f"metrics). Set runner.rollout_steps>={math.ceil(limit / chunk)}, env.max_episode_steps<={covered}, or "
        "runner.reset_each_iteration=false to continue episodes across iterations"
    )


def check_cluster_fits(cfg: TrainConfig, cluster: Cluster) -> None:
    """The run places components on cfg.cluster's GPUs ("all" = all of those); the cluster must have them."""
    wanted = (cfg.cluster.num_nodes, cfg.cluster.num_gpus_per_node)
    have = (cluster.num_nodes, cluster.num_gpus_per_node)
    if wanted[0] > have[0] or wanted[1] > have[1]:
        raise ValueError(
            f"cluster.num_nodes={wanted[0]}, cluster.num_gpus_per_node={wanted[1]} but the Ray "
            f"cluster has {have[0]} node(s) x {have[1]} GPU(s); lower them to fit"
        )


def merge_episode_metrics(per_worker: list[dict[str, float]]) -> dict[str, float]:
    """Episode-weighted means of each env worker's summary; clipped_action_fraction (the action elements outside
    the env's action space, which the envs clip) weighted by env steps, where the workers' envs report it."""
    total = sum(m.get("num_episodes", 0) for m in per_worker)
    merged = {"num_episodes": total}
    for key in ("success_rate", "episode_return", "episode_length", "success_once"):
        if total:
            merged[key] = sum(m[key] * m["num_episodes"] for m in per_worker if m.get("num_episodes")) / total
        else:
            merged[key] = float("nan")
    reported = [m for m in per_worker if "clipped_action_fraction" in m and m.get("env_steps")]
    if reported:
        steps = sum(m["env_steps"] for m in reported)
        merged["clipped_action_fraction"] = sum(m["clipped_action_fraction"] * m["env_steps"] for m in reported) / steps
    return merged
