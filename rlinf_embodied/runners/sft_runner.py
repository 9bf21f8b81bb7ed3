"""SFTRunner: supervised fine-tuning from demonstrations on the actor GPUs, top-down.

    check the dataset against the config (before any process starts)
    launch SFTWorker ranks on the GPUs of cluster.component_placement's `actor` entry (default: all)
    with sft.resume: continue from that checkpoint's step (weights, optimizer, EMA, data order, RNG)
    until sft.max_steps: train up to the next log / eval / save boundary on every rank (FSDP when > 1)
        log sft/loss, sft/grad_norm, sft/lr, time/step (means since the last line)
        every save_interval: checkpoints/step_XXXXXX
        every eval_interval (and at the end): evaluate the saved weights in the env, keep checkpoints/best
            (sft.eval_async: in a process of its own while training goes on; its line is logged when it ends)
        after Ctrl-C / SIGTERM (runners/interrupts.py): checkpoints/step_XXXXXX, then stop
    checkpoints/final

Every checkpoint's policy/ is a save_pretrained directory (`policy.checkpoint=<dir>/policy` for train and eval);
its actor.pt and sft_rank<R>.pt hold the training state that `sft.resume=<dir>` continues from.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any, Optional

from tqdm.auto import tqdm

from ..config import SFT_EVAL_SEED_OFFSET, SFTRunConfig
from ..datasets.demo_seeds import check_checkpoint_held_out, check_held_out, dataset_seeds, write_demo_seeds
from ..scheduler import Cluster, ComponentPlacement, FlexiblePlacementStrategy, GroupHandle, WorkerGroup
from ..workers.sft_worker import (
    SFTEvalWorker,
    SFTWorker,
    check_compilable,
    sft_eval_config,
)
from .embodied_runner import BEST_FILE, check_cluster_fits, read_best_eval_success
from .interrupts import StopRequest
from .metrics_logger import MetricsLogger

logger = logging.getLogger(__name__)

EVAL_SCRATCH = "_eval"  # checkpoints/_eval/policy: the weights an evaluation between saves reads
TRAINING_STATE_FILES = ("actor.pt", "sft_rank*.pt")  # what sft.resume reads; checkpoints/best leaves them out


class SFTRunner:
    def __init__(self, cfg: SFTRunConfig, cluster: Cluster, output_dir: str, stop: StopRequest | None = None):
        self.cfg, self.cluster, self.output_dir = cfg, cluster, output_dir
        self.stop = stop  # SIGINT/SIGTERM in the driver: finish the current steps, checkpoint, return
        self.dataset_info = check_sft_config(cfg)
        check_cluster_fits(cfg, cluster)
        self.placement = actor_placement(cfg)
        self.group: WorkerGroup | None = None
        self.eval_group: WorkerGroup | None = None  # sft.eval_async's evaluation process
        self.pending_eval: PendingEval | None = None
        self.eval_env_build: GroupHandle | None = None
        self.group = SFTWorker.create_group(cfg).launch(
            cluster, name="sft_actor", placement_strategy=self.placement.strategy("actor")
        )
        try:
            self._start()
        except BaseException:
            self.shutdown()
            raise

    def _start(self) -> None:
        cfg = self.cfg
        self.info = self.group.init_worker().wait()[0]
        logger.info(
            "sft: %d actor rank(s) on GPUs %s; dataset %s: %d episodes, %d frames, camera pixel std %s; "
            "%d of %d parameters trained",
            self.group.world_size,
            self.placement.gpus("actor"),
            cfg.sft.dataset,
            self.info["num_episodes"],
            self.info["num_frames"],
            {camera: round(std, 1) for camera, std in self.info["camera_pixel_std"].items()},
            self.info["trainable_parameters"],
            self.info["total_parameters"],
        )
        if self.info["frozen_by_config"]:
            logger.warning(
                "sft: the policy config freezes parts of the model (%s; a checkpoint keeps the switches it was "
                "saved with): set policy.overrides.<name>=false to train them",
                ", ".join(f"{name}=true" for name in self.info["frozen_by_config"]),
            )
        if not self.info["images_decoded_at_load"]:
            logger.warning(
                "sft: the dataset's %.1f GB of decoded images exceed half this host's available memory, so each "
                "batch decodes its PNGs on the host: steps will be host-bound (several times slower). A host "
                "with more memory, or fewer demonstrations, decodes them once at load.",
                self.info["decoded_image_bytes"] / 1e9,
            )
        if cfg.sft.eval_async:
            first_gpu = FlexiblePlacementStrategy([[self.placement.gpus("actor")[0]]])
            self.eval_group = SFTEvalWorker.create_group(cfg).launch(
                self.cluster, name="sft_eval", placement_strategy=first_gpu
            )
            # built and checked against the dataset while the first steps train; a failure stops the run at the
            # next log line after it (_raise_if_eval_env_failed), at the latest at the first evaluation
            needs = self.group.execute_on(0).eval_env_needs().wait()[0]
            self.eval_env_build = self.eval_group.build_env(needs)
        elif cfg.sft.eval_interval > 0:
            self.group.execute_on(0).check_eval_env().wait()
        self.start_step = 0
        if cfg.sft.resume:
            self.start_step = self.group.load_training_state(cfg.sft.resume).wait()[0]
            logger.info("sft: resumed from %s at step %d", cfg.sft.resume, self.start_step)
        self.metrics_logger = MetricsLogger(self.output_dir, resume_after=self.start_step if cfg.sft.resume else None)
        self.best_eval_success = read_best_eval_success(self.output_dir) if cfg.sft.resume else -math.inf

    # ---- the loop -----------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        sft = self.cfg.sft
        history: list[dict[str, Any]] = []
        step = self.start_step
        progress = tqdm(total=sft.max_steps, initial=step, desc="sft", disable=not sft.progress, dynamic_ncols=True)
        while step < sft.max_steps:
            if self._stop_requested():
                # the signal came after the last steps' checks
                self.stop.save_unless_saved(step, step > self.start_step, lambda: self.save(step, f"step_{step:06d}"))
                break
            end = self._next_boundary(step)
            metrics = self.group.train_steps(step, end - step).wait()[0]
            self._raise_if_eval_env_failed()
            step = end
            metrics["sft/epoch"] = step * sft.batch_size / max(self.info["num_frames"], 1)
            last = step == sft.max_steps
            saved = None
            save_start = time.perf_counter()
            if last:
                saved = self.save(step, "final")
            elif (sft.save_interval and step % sft.save_interval == 0) or self._stop_requested():
                saved = self.save(step, f"step_{step:06d}")
            if saved is not None:
                metrics["time/save_seconds"] = time.perf_counter() - save_start
            if saved is not None and self.stop is not None:
                self.stop.saved(saved, step)
            eval_now = bool(sft.eval_interval) and (
                last or (step % sft.eval_interval == 0 and not self._stop_requested())
            )
            reached = False
            if eval_now and self.eval_group is None:
                reached = self._evaluate_waiting(step, saved, last, metrics)
            metrics = {"step": step, **metrics}  # optimizer steps done (also the record's "iteration")
            self.metrics_logger.log(step, metrics)
            history.append(metrics)
            if self.eval_group is not None:  # it writes checkpoints/final itself when an evaluation reached the target
                reached = self._evaluate_beside(step, saved, eval_now, history)
            elif reached and not last:
                self.save(step, "final")
            last = last or reached
            progress.update(end - progress.n)
            postfix = {"loss": f"{metrics['sft/loss']:.4f}"}
            if math.isfinite(self.best_eval_success):
                postfix["best_eval"] = f"{self.best_eval_success:.2f}"
            progress.set_postfix(postfix)
            if last:
                break
        self._finish_eval(history, wait=True)  # the last evaluation, or the one running when a stop came
        progress.close()
        self.metrics_logger.close()
        return history

    def _evaluate_waiting(self, step: int, saved: str | None, last: bool, metrics: dict[str, Any]) -> bool:
        """The evaluation training waits for: its metrics join this step's line. True: stop_at_success reached."""
        eval_start = time.perf_counter()  # the evaluation's share of a run's time
        metrics.update(self.evaluate(step, saved))
        metrics["time/eval_seconds"] = time.perf_counter() - eval_start
        return not last and self._reached_target(metrics["eval/success_once"], step)

    def _evaluate_beside(self, step: int, saved: str | None, eval_now: bool, history: list[dict[str, Any]]) -> bool:
        """sft.eval_async: the line of an evaluation that has ended, then this step's evaluation started (after
        the one before it: at most one runs), unless the one that ended reached stop_at_success (True then: its
        step's weights are checkpoints/final)."""
        reached = self._finish_eval(history, wait=eval_now)
        if eval_now and not reached:
            self._start_eval(step, saved)
        return reached

    def _start_eval(self, step: int, saved: str | None) -> None:
        """sft.eval_async: the evaluation process starts on the weights of `step` (saved to a scratch directory
        of that step when the step saved none) and training goes on."""
        directory = saved or os.path.join(self.output_dir, "checkpoints", f"{EVAL_SCRATCH}_step_{step:06d}")
        if saved is None:
            self._save_scratch_policy(directory)
        self._raise_if_eval_env_failed(wait=True)
        eval_dir = os.path.join(self.output_dir, "eval", f"step_{step:06d}")
        handle = self.eval_group.evaluate_checkpoint(os.path.join(directory, "policy"), eval_dir)
        self.pending_eval = PendingEval(step, directory, scratch=saved is None, handle=handle)

    def _raise_if_eval_env_failed(self, wait: bool = False) -> None:
        """sft.eval_async: the evaluation process's env build (started with training) has ended: its error, if any,
        is raised here (waiting for it when `wait`, before the first evaluation)."""
        if self.eval_env_build is not None and (wait or self.eval_env_build.done()):
            self.eval_env_build.wait()
            self.eval_env_build = None

    def _finish_eval(self, history: list[dict[str, Any]], wait: bool) -> bool:
        """sft.eval_async: log the running evaluation's line if it has ended (waiting for it when `wait`). True
        where it reached sft.stop_at_success: its step's weights are then written as checkpoints/final (before:
        final held the weights of the later step the result arrived at, and a result arriving at the last step
        was not acted on)."""
        pending = self.pending_eval
        if pending is None or not (wait or pending.handle.done()):
            return False
        wait_start = time.perf_counter()
        metrics = pending.handle.wait()[0]
        self.pending_eval = None
        metrics["time/eval_wait_seconds"] = time.perf_counter() - wait_start  # what training waited for it
        success = metrics["eval/success_once"]
        self._keep_if_best(pending.step, pending.directory, success, move=pending.scratch)
        reached = self._reached_target(success, pending.step)
        if reached:  # the scratch directory has become checkpoints/best where it was moved there
            evaluated = pending.directory if os.path.isdir(pending.directory) else self._checkpoint("best")
            self._write_evaluated_final(evaluated, pending.step)
        if pending.scratch:
            shutil.rmtree(pending.directory, ignore_errors=True)
        record = {"step": pending.step, **metrics}
        self.metrics_logger.log(pending.step, record)
        history.append(record)
        return reached

    def _checkpoint(self, name: str) -> str:
        return os.path.join(self.output_dir, "checkpoints", name)

    def _write_evaluated_final(self, evaluated: str, step: int) -> None:
        """sft.eval_async reached its target at `step`, whose policy is in `evaluated`: it becomes checkpoints/final
        (the policy only: training went on while it was evaluated). A final of a later step (the run's last) keeps
        its training state as checkpoints/step_XXXXXX."""
        final = self._checkpoint("final")
        if os.path.isdir(final):
            with open(os.path.join(final, "sft.json")) as f:
                final_step = json.load(f)["step"]
            if final_step == step:
                return
            later = self._checkpoint(f"step_{final_step:06d}")
            shutil.rmtree(later, ignore_errors=True)
            os.replace(final, later)
        shutil.copytree(evaluated, final, ignore=shutil.ignore_patterns(*TRAINING_STATE_FILES, BEST_FILE))
        with open(os.path.join(final, "sft.json"), "w") as f:
            json.dump(
                {"step": step, "dataset": os.path.abspath(self.cfg.sft.dataset), "policy": self.cfg.policy.name}, f
            )
        logger.info("sft: checkpoints/final holds step %d, the evaluation that reached the target", step)

    def _reached_target(self, success: float, step: int) -> bool:
        target = self.cfg.sft.stop_at_success
        if target is None or success < target:
            return False
        logger.info("sft: eval success %.3f >= sft.stop_at_success=%s at step %d: stopping", success, target, step)
        return True

    def _stop_requested(self) -> bool:
        return self.stop is not None and self.stop.poll(resumed_from=self.cfg.sft.resume)

    def _next_boundary(self, step: int) -> int:
        sft = self.cfg.sft
        boundary = sft.max_steps
        for interval in (sft.log_interval, sft.eval_interval, sft.save_interval):
            if interval > 0:
                boundary = min(boundary, (step // interval + 1) * interval)
        return boundary

    # ---- checkpoints and evaluation -------------------------------------------------------------
    def save(self, step: int, name: str) -> str:
        """checkpoints/<name>/policy (save_pretrained) and checkpoints/<name>/sft.json."""
        directory = os.path.join(self.output_dir, "checkpoints", name)
        self.group.save_policy(os.path.join(directory, "policy")).wait()
        self.group.save_training_state(directory, step).wait()
        write_demo_seeds(os.path.join(directory, "policy"), self.cfg.sft.dataset)  # for eval's held-out check
        with open(os.path.join(directory, "sft.json"), "w") as f:
            json.dump(
                {"step": step, "dataset": os.path.abspath(self.cfg.sft.dataset), "policy": self.cfg.policy.name}, f
            )
        logger.info("saved %s", directory)
        return directory

    def _save_scratch_policy(self, directory: str) -> None:
        """The weights an evaluation between saves reads, with the demonstrations' seeds: the folder may become
        checkpoints/best, which eval then checks its seeds against."""
        self.group.save_policy(os.path.join(directory, "policy")).wait()
        write_demo_seeds(os.path.join(directory, "policy"), self.cfg.sft.dataset)

    def evaluate(self, step: int, saved: str | None) -> dict[str, float]:
        """Deterministic episodes of the current weights (saved now if this step saved none); the best
        eval/success_once so far is copied to checkpoints/best."""
        directory = saved or os.path.join(self.output_dir, "checkpoints", EVAL_SCRATCH)
        if saved is None:
            self._save_scratch_policy(directory)
        # The eval policy gets the GPU memory of the trainer's state. On CPU ranks offload is a no-op, but it is
        # still called: the CPU tests then run the path the GPU takes (stop 21's GPU SFT died in it).
        self.group.offload().wait()
        try:
            eval_dir = os.path.join(self.output_dir, "eval", f"step_{step:06d}")
            metrics = (
                self.group.execute_on(0).evaluate_checkpoint(os.path.join(directory, "policy"), eval_dir).wait()[0]
            )
        finally:
            self.group.onload().wait()
        self._keep_if_best(step, directory, metrics["eval/success_once"], move=saved is None)
        shutil.rmtree(os.path.join(self.output_dir, "checkpoints", EVAL_SCRATCH), ignore_errors=True)
        return metrics

    def _keep_if_best(self, step: int, directory: str, success: float, move: bool) -> None:
        """checkpoints/best becomes `directory` (moved when it is scratch, else copied without the training
        state) when `success` beats the best evaluation so far."""
        if success <= self.best_eval_success:
            return
        self.best_eval_success = success
        best = os.path.join(self.output_dir, "checkpoints", "best")
        shutil.rmtree(best, ignore_errors=True)
        if move:
            os.replace(directory, best)
        else:
            shutil.copytree(directory, best, ignore=shutil.ignore_patterns(*TRAINING_STATE_FILES))
        with open(os.path.join(best, BEST_FILE), "w") as f:
            json.dump({"step": step, "eval/success_once": success}, f)

    def shutdown(self) -> None:
        if self.eval_group is not None:
            try:  # its env's worker processes end with it
                self.eval_group.close_envs().wait(timeout=60)
            except Exception as error:  # noqa: BLE001 - shutting down after any failure, the group's own included
                logger.warning("sft: closing the evaluation process's envs failed: %s", error)
        for group in (self.group, self.eval_group):
            if group is not None:
                group.shutdown()


@dataclass
class PendingEval:
    """sft.eval_async: the evaluation running in the evaluation process, of `step`'s weights in `directory`."""

    step: int
    directory: str
    scratch: bool  # the directory was saved for this evaluation alone (removed, or moved to best, after it)
    handle: GroupHandle


def actor_placement(cfg: SFTRunConfig) -> ComponentPlacement:
    """The GPUs of component_placement's `actor` entry; all GPUs when it names none."""
    num_gpus, num_nodes = cfg.cluster.num_gpus_per_node, cfg.cluster.num_nodes
    if isinstance(cfg.cluster.component_placement, str):  # "auto" (ClusterConfig allows no other string)
        raise ValueError(
            "cluster.component_placement=auto is for training (rlinf_embodied.train); SFT has one "
            "component: give its GPUs as cluster.component_placement.actor=<ids>, or leave it out (all)"
        )
    spec = dict(cfg.cluster.component_placement or {})
    if spec:
        placement = ComponentPlacement(spec, num_gpus=num_gpus, num_nodes=num_nodes)
        reject_unread_components(spec, placement)
        if "actor" in placement.components:
            world_size = len(placement.gpus("actor"))
            if cfg.sft.batch_size % world_size:
                raise ValueError(
                    f"sft.batch_size={cfg.sft.batch_size} does not split evenly over the {world_size} "
                    f"actor GPUs {placement.gpus('actor')}; use a multiple of {world_size}"
                )
            return placement
    placement = ComponentPlacement({"actor": "all"}, num_gpus=num_gpus, num_nodes=num_nodes)
    if cfg.sft.batch_size % len(placement.gpus("actor")):
        raise ValueError(
            f"sft.batch_size={cfg.sft.batch_size} does not split evenly over {len(placement.gpus('actor'))} actor GPUs"
        )
    return placement


def reject_unread_components(spec: dict[str, Any], placement: ComponentPlacement) -> None:
    """SFT runs one component, the actor (its evaluations run in it, or with sft.eval_async on its first GPU): an
    entry of cluster.component_placement for another component (env, rollout: training's) is read by nothing, so one
    that places it anywhere but on every GPU (the cluster presets' default, `all`) is an error naming the key SFT
    reads. Before: `cluster.component_placement.env=1` was accepted and ignored (probe 63 #5)."""
    every_gpu = list(range(placement.num_gpus_per_node * placement.num_nodes))
    for key, gpu_spec in spec.items():
        others = [name.strip() for name in str(key).split(",") if name.strip() != "actor"]
        if others and sorted(placement.gpus(others[0])) != every_gpu:
            raise ValueError(
                f"cluster.component_placement.{key}={gpu_spec}: python -m rlinf_embodied.sft runs one component, the "
                f"actor (its evaluations run in it, or with sft.eval_async on its first GPU), and reads only "
                f"cluster.component_placement.actor; give SFT's GPUs there (cluster.component_placement.actor=<ids>, "
                f"default all) and leave {', '.join(others)} out (or at all: with a cluster preset that places "
                f"{'them' if len(others) > 1 else 'it'} elsewhere, use cluster=local "
                f"cluster.num_gpus_per_node={placement.num_gpus_per_node})"
            )


def warn_if_other_env(path: str, dataset_env_id: Optional[str], env_id: str) -> None:
    """Demonstrations of another env can be meant (one LIBERO suite's for another's tasks), so this warns rather than
    refuses; without sft.eval_interval nothing else in SFT reads the env, and a PickCube dataset would quietly train
    a policy for PushCube (it fails only later, in RL or eval, on the state width)."""
    if dataset_env_id is not None and dataset_env_id != env_id:
        logger.warning(
            "sft.dataset=%r holds episodes of %s, but env.id=%s: the SFT evaluations and the checkpoint's RL and eval "
            "run %s (env=... selects the dataset's env)",
            path,
            dataset_env_id,
            env_id,
            env_id,
        )


def reject_unread_normalization(cfg: SFTRunConfig) -> None:
    """sft.normalize_from_dataset=false with a policy that reads no dataset statistics (mlp, cnn) changed nothing."""
    from ..policies import available_policies, policy_class
    from ..unread_settings import reject_ineffective_setting

    if not cfg.sft.normalize_from_dataset and not policy_class(cfg.policy.name).normalizes_with_dataset_stats:
        readers = [name for name in available_policies() if policy_class(name).normalizes_with_dataset_stats]
        reject_ineffective_setting(
            cfg.sft,
            "sft",
            "normalize_from_dataset",
            f"policy {cfg.policy.name!r} keeps the env's [-1, 1] action convention and reads no dataset statistics; "
            f"the policies that do: {readers}",
        )


def check_image_shift(cfg: SFTRunConfig, cameras: dict[str, list[int]], policy_config: Any) -> None:
    """sft.image_shift (on a dataset with cameras) needs a policy that reads a camera, and a shift under half the
    smallest image side (a larger one moves the border pixels over the whole image)."""
    from ..unread_settings import reject_ineffective_setting

    shift = cfg.sft.image_shift
    if shift <= 0:
        return
    # None: an upstream checkpoint (converted on load), whose cameras are not known before it is built
    if policy_config is not None and not policy_config.camera_keys():
        reject_ineffective_setting(
            cfg.sft,
            "sft",
            "image_shift",
            f"policy {cfg.policy.name!r} reads no camera (only the state); a camera policy (e.g. policy=cnn) reads "
            f"sft.dataset's {sorted(cameras)}",
        )
    side = min(min(shape[0], shape[1]) for shape in cameras.values())
    if shift >= side / 2:
        raise ValueError(
            f"sft.image_shift={shift} is at least half the dataset's smallest camera side "
            f"({ {camera: shape[:2] for camera, shape in cameras.items()} } px (H, W)): a shift that large leaves "
            f"little of the image; valid values are 0 .. {(side - 1) // 2} (a few px, e.g. {max(1, side // 20)})"
        )


def check_sft_config(cfg: SFTRunConfig) -> dict[str, Any]:
    """Fail before any process starts: the dataset exists and is one, its control mode agrees with the
    env's, its action_dim with the policy's (overrides / checkpoint) and its cameras hold the ones the policy reads.
    Returns the dataset's meta/info.json."""
    from ..datasets import ControlModeMismatchError, load_info
    from ..datasets.lerobot_format import check_dataset_files, dataset_layout
    from ..envs.registration import check_env
    from .evaluator import check_eval_workers
    from ..workers.resume_check import check_resume_fits_run
    from ..workers.policy_loading import (
        check_policy_cameras,
        check_policy_config,
        predicted_policy_dims,
        resolved_policy_config,
    )

    path = cfg.sft.dataset
    if not path:
        raise ValueError(
            "sft.dataset is required: pass sft.dataset=<directory of a LeRobot v2.1 dataset>, "
            "e.g. one written by `python -m rlinf_embodied.collect`"
        )
    if not os.path.isdir(path):
        raise FileNotFoundError(f"sft.dataset={path!r} does not exist or is not a directory")
    try:
        info = load_info(path)  # a damaged info.json: ValueError naming it
    except FileNotFoundError as error:
        raise FileNotFoundError(f"sft.dataset={path!r} is not a dataset: {error}") from None
    try:
        layout = dataset_layout(info, os.path.join(path, "meta", "info.json"))
    except ValueError as error:  # a missing or malformed feature, named
        raise ValueError(f"sft.dataset={path!r}: {error}") from None
    action_dim, state_dim, cameras = layout["action_dim"], layout["state_dim"], layout["cameras"]
    num_episodes = int(info.get("total_episodes", 0))
    if num_episodes < 1:
        raise ValueError(f"sft.dataset={path!r} holds no episodes")
    check_dataset_files(path, info)  # meta files and parquet footers: before the workers read them
    if cfg.sft.val_episodes >= num_episodes:  # before: the SFT worker's error, after Ray had started
        raise ValueError(
            f"sft.val_episodes={cfg.sft.val_episodes} holds out every episode of sft.dataset={path!r} "
            f"({num_episodes} episodes): valid values are 0 .. {num_episodes - 1}"
        )
    # as train, eval and collect do (before: a typo in env.kwargs failed in a worker, or not at all)
    check_env(cfg.env, local=cfg.cluster.address is None)
    warn_if_other_env(path, info.get("env_id"), cfg.env.id)
    dataset_mode, env_mode = info.get("control_mode"), cfg.env.kwargs.get("control_mode")
    if dataset_mode is not None and env_mode is not None and dataset_mode != env_mode:
        raise ControlModeMismatchError(
            f"sft.dataset={path!r} holds actions in control_mode={dataset_mode!r}, but the env {cfg.env.id} acts in "
            f"env.kwargs.control_mode={env_mode!r}: set env.kwargs.control_mode={dataset_mode} (the policy "
            f"learns the dataset's action space, and train/eval must run the env in it)"
        )
    if cfg.sft.image_shift > 0 and not cameras:
        raise ValueError(
            f"sft.image_shift={cfg.sft.image_shift} augments camera images, but sft.dataset={path!r} has none "
            "(state-only demonstrations): set sft.image_shift=0"
        )
    if cfg.sft.image_probe_interval and not cameras:
        raise ValueError(
            f"sft.image_probe_interval={cfg.sft.image_probe_interval} probes the policy's use of camera images, "
            f"but sft.dataset={path!r} has none (state-only demonstrations): leave it unset or set 0"
        )
    if cfg.sft.eval_interval > 0:
        eval_cfg = sft_eval_config(cfg)
        check_eval_workers(
            cfg.env,
            eval_cfg.num_envs,
            f"min(env.num_envs={cfg.env.num_envs}, sft.eval_episodes={cfg.sft.eval_episodes})",
        )
        check_held_out(
            range(eval_cfg.seed, eval_cfg.seed + eval_cfg.num_envs),
            dataset_seeds(path),
            cfg.env.id,
            info.get("env_id"),
            fix=f"set sft.seed (SFT evaluates from sft.seed + {SFT_EVAL_SEED_OFFSET}), or collect from other seeds (collect.seed)",
        )
        check_checkpoint_held_out(  # SFT continued from a checkpoint: its demonstrations count too
            cfg.policy.checkpoint,
            range(eval_cfg.seed, eval_cfg.seed + eval_cfg.num_envs),
            cfg.env.id,
            fix=f"set sft.seed (SFT evaluates from sft.seed + {SFT_EVAL_SEED_OFFSET})",
        )
    if cfg.sft.resume:
        check_resume_checkpoint(cfg)
        # the settings that shape its weights, as train's runner.resume (before: after Ray and the worker started)
        check_resume_fits_run(cfg.sft.resume, "sft.resume", cfg.policy, resume_dims_env(cfg))
    actor_placement(cfg)  # sft.batch_size over the actor GPUs (before: refused once Ray had started)
    check_policy_config(cfg.policy)
    reject_unread_normalization(cfg)
    # a VLA on state-only demonstrations (or without its wrist camera): said here, not as a KeyError at the first step
    spec = dict(action_dim=action_dim, state_dim=state_dim, obs_keys=["state", *cameras])
    check_policy_cameras(cfg.policy, spec, cfg.env.id, dataset=path)
    check_image_shift(cfg, cameras, resolved_policy_config(cfg.policy, action_dim, state_dim))
    if cfg.sft.compile:
        resolved = resolved_policy_config(cfg.policy, action_dim, state_dim)  # the policy's dims are the dataset's
        check_compilable(cfg.policy.name, bool(getattr(resolved, "gradient_checkpointing", False)))
    dims = predicted_policy_dims(cfg.policy)
    if dims["action_dim"] is not None and dims["action_dim"] != action_dim:
        source = f"policy.checkpoint={cfg.policy.checkpoint!r}" if cfg.policy.checkpoint else "policy.overrides"
        raise ValueError(
            f"the policy ({source}) has action_dim={dims['action_dim']} but sft.dataset={path!r} "
            f"has action_dim={action_dim}"
        )
    return info


SFT_RESUME_FILES = ("sft.json", "actor.pt", "sft_rank0.pt")  # what sft.resume reads (rank 0's; the others alike)


def resume_hint(path: str) -> str:
    """`"; ..."`: what the directory `path`, which lacks SFT's training state, is instead, and what to pass. Before,
    every such directory was called checkpoints/best and sent to <path>/policy, even where that did not exist (an
    empty directory) or the directory was an RL checkpoint."""
    from ..policies.base import CONFIG_FILE
    from ..workers.resume_check import checkpoint_above, resumable_below

    above = checkpoint_above(path, "sft.resume", SFT_RESUME_FILES)
    if above:
        return above
    policy = os.path.join(path, "policy")
    saved_policy = os.path.isfile(os.path.join(policy, CONFIG_FILE))
    weights = f"start from its weights alone with policy.checkpoint={policy}"
    if os.path.isfile(os.path.join(path, "actor.pt")) and not os.path.isfile(os.path.join(path, "sft.json")):
        return (
            f"; it is an RL checkpoint (actor.pt without sft.json), which sft.resume cannot continue: continue that "
            f"run with runner.resume={path} (python -m rlinf_embodied.train)"
            + (f", or {weights}" if saved_policy else "")
        )
    if os.path.isfile(os.path.join(path, CONFIG_FILE)):
        return (
            f"; it is a policy saved by save_pretrained (its weights alone, no optimizer or step): start SFT from it "
            f"with policy.checkpoint={path}"
        )
    if saved_policy:
        return f"; it keeps only the policy (as checkpoints/best does): resume from a step_XXXXXX or final checkpoint, or {weights}"
    below = resumable_below(path, SFT_RESUME_FILES)
    return below or (
        "; pass a checkpoints/<name> directory of an earlier SFT run (step_XXXXXX, final, or the one Ctrl-C saved)"
    )


def resume_dims_env(cfg: SFTRunConfig) -> Any:
    """The env config check_resume_fits_run reads a new policy's action_dim / state_dim off: SFT's are the dataset's,
    which check_resume_checkpoint has found to be the checkpoint's own, so the env the checkpoint recorded
    (env_actions.json), whose dims check_resume_fits_run takes from the checkpoint. With this run's env.id it
    would build that env and compare its dims (before: a resume with another env.id than the checkpoint's, which
    SFT allows with a warning, was refused as a model of another state_dim, after 11 s of building the env)."""
    import dataclasses

    from ..envs.action_settings import read_action_settings

    record = read_action_settings(os.path.join(cfg.sft.resume, "policy")) or {}
    return dataclasses.replace(cfg.env, id=record.get("env_id") or cfg.env.id)


def check_resume_checkpoint(cfg: SFTRunConfig) -> None:
    """sft.resume names a checkpoint of this dataset and policy with training state, short of sft.max_steps."""
    from ..policies.base import not_a_directory

    path = cfg.sft.resume
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"sft.resume={path!r} {not_a_directory(path)}: pass a checkpoints/<name> directory of an earlier SFT run "
            "(step_XXXXXX, final, or the one Ctrl-C saved)"
        )
    missing = [name for name in SFT_RESUME_FILES if not os.path.isfile(os.path.join(path, name))]
    if missing:
        hint = resume_hint(path)
        raise FileNotFoundError(f"sft.resume={path!r} holds no training state (missing {', '.join(missing)}){hint}")
    with open(os.path.join(path, "sft.json")) as f:
        saved = json.load(f)
    if saved["dataset"] != os.path.abspath(cfg.sft.dataset):
        raise ValueError(
            f"sft.resume={path!r} trained on sft.dataset={saved['dataset']!r}, this run names "
            f"{os.path.abspath(cfg.sft.dataset)!r}: resume with the same dataset"
        )
    if saved["policy"] != cfg.policy.name:
        raise ValueError(f"sft.resume={path!r} trained policy={saved['policy']}, this run asks for {cfg.policy.name}")
    if saved["step"] >= cfg.sft.max_steps:
        raise ValueError(
            f"sft.resume={path!r} is at step {saved['step']} and sft.max_steps={cfg.sft.max_steps}: nothing is left "
            f"to train; raise sft.max_steps above {saved['step']}"
        )
