"""EnvWorker: a shard of vector envs, split into pipeline stages, streaming observations to rollouts.

With `pipeline_stage_num` = S, the worker's envs form S vector envs. Each rollout step the worker
steps stage 0, sends its observations, steps stage 1, ... while the rollout worker computes the
actions of the stage it received last: simulation of one stage overlaps inference of another.
"""

from __future__ import annotations

import logging
import time

import gymnasium as gym
import torch

from ..config import TrainConfig
from ..envs.batching import is_one_task_id
from ..envs.metrics import ClippedActionMetrics, EpisodeMetrics, action_rows
from ..envs.spec import env_spec
from ..scheduler import Channel, Worker
from .messages import EnvOutput, channel_key, seed_for
from .timeline import SpanRecorder

logger = logging.getLogger(__name__)

EVAL_SEED_SALT = 15485863  # keeps evaluation seeds apart from the training resets' seeds


def make_vector_env(cfg: TrainConfig, num_envs: int, first_env: int = 0) -> gym.vector.VectorEnv:
    """The vector env of the run's envs first_env .. first_env + num_envs - 1 (one pipeline stage of one env worker).
    A per-env list in env.kwargs.task_id (one task per env of the whole run) gives it its slice (before: every stage
    and worker got the whole list, and failed to build)."""
    env_cfg = cfg.env
    kwargs = dict(env_cfg.kwargs)
    task_ids = per_env_task_ids(kwargs)
    if task_ids is not None:
        kwargs["task_id"] = task_ids[first_env : first_env + num_envs]
    return gym.make_vec(
        env_cfg.id,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        obs_mode=env_cfg.obs_mode,
        max_episode_steps=env_cfg.max_episode_steps,
        ignore_terminations=env_cfg.ignore_terminations,
        **kwargs,
    )


def per_env_task_ids(env_kwargs: dict) -> list | None:
    """env.kwargs.task_id as a list where it gives one task per env (a list), else None (one task for all)."""
    task_id = env_kwargs.get("task_id")
    if is_one_task_id(task_id):
        return None
    # nor a list (None, a string, a bool, ...): passed to the env as given, which refuses what it cannot take
    if isinstance(task_id, str) or not hasattr(task_id, "__iter__"):
        return None
    return list(task_id)


def obs_to_cpu(obs: dict) -> dict:
    """Observations as CPU tensors for the channels (GPU-physics envs return them on their GPU)."""
    return {key: value.cpu() if isinstance(value, torch.Tensor) else value for key, value in obs.items()}


def envs_per_stage(cfg: TrainConfig, num_env_workers: int) -> int:
    total, stages = cfg.env.num_envs, cfg.runner.pipeline_stage_num
    if stages < 1:
        raise ValueError(f"runner.pipeline_stage_num={stages}; it must be >= 1 (1 = no overlap)")
    shards = num_env_workers * stages
    if total % shards:
        raise ValueError(
            f"env.num_envs={total} must split evenly over {num_env_workers} env worker(s) (one per GPU that "
            f"cluster.component_placement gives env) x runner.pipeline_stage_num={stages}; use a multiple of "
            f"{shards}, e.g. {-(-total // shards) * shards}"
        )
    return total // shards


class EnvWorker(Worker, SpanRecorder):
    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.cfg = cfg

    def init_worker(self) -> None:
        self.num_envs_per_stage = envs_per_stage(self.cfg, self.world_size)
        stages, per_stage = self.cfg.runner.pipeline_stage_num, self.num_envs_per_stage
        self.stages = [
            make_vector_env(self.cfg, per_stage, first_env=(self.rank * stages + stage) * per_stage)
            for stage in range(stages)
        ]
        self.init_finished = time.time()  # vector envs that build in their constructor are ready now
        self.metrics = EpisodeMetrics()
        self.clipped_actions = ClippedActionMetrics()  # info["action_clipped"] of every step of interact
        self.needs_reset = True
        self.first_pending: dict[int, torch.Tensor] | None = None  # see interact
        self.last_obs: dict[int, dict] = {}  # stage -> latest observation, carried across iterations

    def wait_until_ready(self) -> float:
        """Block until every stage's env processes have built their envs (a `SubprocVectorEnv` builds them
        while the policies build); returns the wall-clock time (time.time()) the last one was ready."""
        ready = []
        for env in self.stages:
            env = env.unwrapped
            if hasattr(env, "wait_until_ready"):
                env.wait_until_ready()
            ready.append(getattr(env, "ready_time", None) or self.init_finished)
        return max(ready)

    def env_spec(self) -> dict:
        """What the policy is built for (dims, observation keys), read off the first stage's spaces."""
        return env_spec(self.stages[0])

    def global_env_ids(self, stage: int) -> list[int]:
        first = (self.rank * len(self.stages) + stage) * self.num_envs_per_stage
        return list(range(first, first + self.num_envs_per_stage))

    def reset_seeds(self, iteration: int, stage: int, sampling_round: int = 0) -> list[int]:
        """One seed per env from (seed, iteration, global env id); GRPO groups share their seed. Dynamic
        sampling's further rounds of an iteration (sampling_round > 0) draw new tasks."""
        group_size = self.cfg.algorithm.env_group_size
        extra = (sampling_round,) if sampling_round else ()
        return [
            seed_for(self.cfg.runner.seed, iteration, env_id // group_size, *extra)
            for env_id in self.global_env_ids(stage)
        ]

    def interact(
        self, iteration: int, env_channel: Channel, action_channel: Channel, sampling_round: int = 0
    ) -> dict[str, float]:
        """Run `rollout_steps` chunk steps on every stage, trading observations for actions.

        rollout/* metrics: after a reset here, each env's first episode (the rollout covers the time limit, so each
        ends); episodes carried over from the last iteration (no reset), every one that ends. clipped_action_fraction:
        the fraction of the action elements the envs got outside their action space (and clipped), over every step;
        weigh it by env_steps to merge workers."""
        self.metrics.clear()
        self.clipped_actions.clear()
        env_steps = 0
        reset = self.cfg.runner.reset_each_iteration or self.needs_reset or bool(sampling_round)
        # stage -> (N,) bool: envs whose first episode since the reset has not ended yet; None: count every episode
        self.first_pending = {} if reset else None
        for stage, env in enumerate(self.stages):
            if reset:
                obs, _ = env.reset(seed=self.reset_seeds(iteration, stage, sampling_round))
                self.last_obs[stage] = obs_to_cpu(obs)
                self.first_pending[stage] = torch.ones(self.num_envs_per_stage, dtype=torch.bool)
            env_ids = torch.tensor(self.global_env_ids(stage))
            env_channel.put(EnvOutput(obs=self.last_obs[stage], env_ids=env_ids), key=channel_key(self.rank, stage))
        self.needs_reset = False
        for _ in range(self.cfg.runner.rollout_steps):
            for stage, env in enumerate(self.stages):
                with self.span(f"wait stage{stage}"):
                    actions = action_channel.get(key=channel_key(self.rank, stage))  # (N, chunk, act_dim)
                env_steps += actions.shape[0] * actions.shape[1]
                with self.span(f"sim stage{stage}"):
                    env_output = self._step(env, stage, actions)
                self.last_obs[stage] = env_output.obs
                with self.span(f"send stage{stage}"):
                    env_channel.put(env_output, key=channel_key(self.rank, stage))
        return {**self.metrics.summary(), **self.clipped_actions.summary(), "env_steps": env_steps}

    def evaluate(self, iteration: int, env_channel: Channel, action_channel: Channel) -> dict[str, float]:
        """Play `eval_rounds` episodes per env with the actions the rollout workers send back (their
        deterministic policy), each from a held-out seed. Only an env's first episode of a round
        counts; its shard sends `finished` once all its envs have played theirs. The next training
        iteration starts from a fresh reset: with runner.reset_each_iteration (the default) the training
        data are the same as without evaluation; without it, the episodes in progress are cut off.
        clipped_action_fraction and env_steps as in `interact`, over every evaluation step."""
        self.needs_reset = True
        metrics = EpisodeMetrics()
        clipped = ClippedActionMetrics()
        env_steps = 0
        for round_index in range(self.cfg.runner.eval_rounds):
            playing = {}  # stage -> (N,) bool: envs whose counted episode is still running
            for stage, env in enumerate(self.stages):
                seeds = [
                    seed_for(self.cfg.runner.seed, EVAL_SEED_SALT, iteration, round_index, env_id)
                    for env_id in self.global_env_ids(stage)
                ]
                obs = obs_to_cpu(env.reset(seed=seeds)[0])
                playing[stage] = torch.ones(self.num_envs_per_stage, dtype=torch.bool)
                env_channel.put(EnvOutput(obs=obs), key=channel_key(self.rank, stage))
            while any(mask.any() for mask in playing.values()):
                for stage, env in enumerate(self.stages):
                    if playing[stage].any():
                        playing[stage], steps = self._eval_step(
                            env, stage, playing[stage], metrics, clipped, env_channel, action_channel
                        )
                        env_steps += steps
        return {**metrics.summary(), **clipped.summary(), "env_steps": env_steps}

    def _eval_step(
        self,
        env: gym.vector.VectorEnv,
        stage: int,
        playing: torch.Tensor,
        metrics: EpisodeMetrics,
        clipped: ClippedActionMetrics,
        env_channel: Channel,
        action_channel: Channel,
    ) -> tuple[torch.Tensor, int]:
        """One evaluation step of a stage: (the envs still playing, the env steps sent)."""
        key = channel_key(self.rank, stage)
        actions = action_channel.get(key=key)  # (N, chunk, act_dim)
        obs, _, _, _, info = env.step(actions)
        playing = metrics.update_first(info, playing)
        clipped.update(info, rows=action_rows(actions))
        env_channel.put(EnvOutput(obs=obs_to_cpu(obs), finished=not playing.any()), key=key)
        return playing, actions.shape[0] * action_rows(actions)

    def _step(self, env: gym.vector.VectorEnv, stage: int, actions: torch.Tensor) -> EnvOutput:
        obs, rewards, terminations, truncations, info = env.step(actions)
        self.clipped_actions.update(info, rows=action_rows(actions))
        if rewards.dim() == 1:  # a single-step action came back as (N,): make it a chunk of 1
            rewards, terminations, truncations = rewards[:, None], terminations[:, None], truncations[:, None]
        if self.first_pending is None:
            self.metrics.update(info)
        else:
            self.first_pending[stage] = self.metrics.update_first(info, self.first_pending[stage])
        final_obs, final_mask = None, None
        truncated = truncations.any(dim=1) & ~terminations.any(dim=1)  # (N,)
        if truncated.any() and "final_obs" in info:
            final_obs, final_mask = obs_to_cpu(info["final_obs"]), truncated.cpu()
        return EnvOutput(
            obs=obs_to_cpu(obs),
            rewards=rewards.float().cpu(),
            terminations=terminations.cpu(),
            truncations=truncations.cpu(),
            final_obs=final_obs,
            final_obs_mask=final_mask,
        )

    def close(self) -> None:
        for env in self.stages:
            env.close()
