"""Single-process PPO on ManiSkill PickCube-v1 (state obs, CPU physics): the reference baseline.

CleanRL-style and self-contained: an inline MLP Gaussian actor-critic, gymnasium's AsyncVectorEnv of
single CPU ManiSkill envs (one subprocess each), and this package's GAE and PPO loss only
(`rlinf_embodied.algorithms`). The distributed runner is compared against it: env steps and
wall-clock to reach >= 90% success on PickCube.

    python benchmarks/ppo_baseline.py                        # defaults: 16 envs, 3M env steps
    python benchmarks/ppo_baseline.py --num-envs 16 --total-env-steps 10000000 --stop-at-target true
    tensorboard --logdir runs/ppo_baseline

Hyper-parameters follow ManiSkill's PPO baseline for state-based PickCube (gamma 0.8, lambda 0.9,
lr 3e-4, clip 0.2, target_kl 0.1, no entropy bonus, grad norm 0.5, 3x256 tanh MLPs, 50-step episodes,
pd_joint_delta_pos, normalized_dense reward), with a rollout long enough for a 16-env CPU batch
(16 envs x 100 steps, 8 minibatches, 8 epochs, as ManiSkill's CPU PPO example).

Episodes end early on success (partial reset). As in ManiSkill's baseline, the value of the final
observation bootstraps EVERY episode end by default (--bootstrap-at-done always): with gamma 0.8 and a
dense reward near 1 just before success, treating success as terminal would value "hover without
finishing" (~ r / (1 - gamma)) above finishing (1), which slows learning. Use
--bootstrap-at-done truncated for the textbook treatment (bootstrap only time-limit ends).

The final evaluation runs the deterministic policy (the Gaussian mean) on fresh seeds for full
50-step episodes and reports success_once (success at any step: ManiSkill's headline metric) and
success_at_end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Normal
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from rlinf_embodied.algorithms import AlgorithmConfig, compute_gae, policy_loss

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_args import non_negative_int, positive_int, strict_bool  # noqa: E402

# int fields that may be 0 (0 = off); every other int field except the seed is a count or size (>= 1)
NON_NEGATIVE_FIELDS = {"eval_interval"}
ANY_INT_FIELDS = {"seed"}


@dataclass
class Args:
    env_id: str = "PickCube-v1"
    control_mode: str = "pd_joint_delta_pos"
    reward_mode: str = "normalized_dense"
    max_episode_steps: int = 50
    ignore_terminations: bool = False  # training envs: success does not end the episode (as env.ignore_terminations)
    num_envs: int = 16  # training envs, one subprocess each: about one per CPU core
    num_steps: int = 100  # rollout steps per env per iteration (batch = num_envs * num_steps)
    total_env_steps: int = 3_000_000
    seed: int = 1
    # PPO
    gamma: float = 0.8
    gae_lambda: float = 0.9
    lr: float = 3e-4
    update_epochs: int = 8
    num_minibatches: int = 8
    clip_ratio: float = 0.2
    target_kl: float = 0.1  # stop an iteration's epochs once approx_kl exceeds it; <= 0 disables
    entropy_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    bootstrap_at_done: str = "always"  # "always" (ManiSkill) or "truncated" (time limits only)
    hidden_dim: int = 256
    # Evaluation (deterministic policy, full episodes, fresh seeds)
    num_eval_envs: int = 16
    eval_interval: int = 10  # iterations between evaluations of num_eval_envs episodes; 0 = off
    num_eval_episodes: int = 100  # final evaluation
    target_success: float = 0.9  # record env steps / wall-clock when periodic eval first reaches it
    stop_at_target: bool = False  # end training there (the final evaluation still runs)
    # Runtime
    torch_threads: int = 1
    log_dir: str = "runs/ppo_baseline"
    save_model: bool = True


def parse_args(argv: list[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in dataclasses.fields(Args):
        flag = "--" + field.name.replace("_", "-")
        if field.type == "bool":
            parser.add_argument(flag, type=strict_bool, default=field.default, metavar="{true,false}")
        elif field.type == "int" and field.name not in ANY_INT_FIELDS:
            kind = non_negative_int if field.name in NON_NEGATIVE_FIELDS else positive_int
            parser.add_argument(flag, type=kind, default=field.default)
        else:
            kind = {"int": int, "float": float, "str": str}[field.type]
            parser.add_argument(flag, type=kind, default=field.default)
    args = Args(**vars(parser.parse_args(argv)))
    if args.bootstrap_at_done not in ("always", "truncated"):
        parser.error(f"--bootstrap-at-done must be 'always' or 'truncated', not {args.bootstrap_at_done!r}")
    batch_size = args.num_envs * args.num_steps
    if batch_size < args.num_minibatches:
        parser.error(
            f"the batch --num-envs x --num-steps = {args.num_envs} x {args.num_steps} = {batch_size} is smaller than "
            f"--num-minibatches={args.num_minibatches}: every minibatch needs at least one sample"
        )
    return args


# ---- environments --------------------------------------------------------------------------------
def make_env(args: Args, ignore_terminations: bool) -> Callable[[], gym.Env]:
    """A thunk building one CPU ManiSkill env in the vector env's subprocess."""

    def thunk() -> gym.Env:
        torch.set_num_threads(1)  # one core per env process; tiny tensors gain nothing from more
        enable_headless_sapien()
        import mani_skill.envs  # noqa: F401  (registers the ManiSkill ids)
        from mani_skill.utils.wrappers.gymnasium import CPUGymWrapper

        env = gym.make(
            args.env_id,
            obs_mode="state",
            control_mode=args.control_mode,
            reward_mode=args.reward_mode,
            max_episode_steps=args.max_episode_steps,
            sim_backend="physx_cpu",
            render_backend="none",
            render_mode=None,
        )
        return CPUGymWrapper(env, ignore_terminations=ignore_terminations, record_metrics=True)

    return thunk


def enable_headless_sapien() -> None:
    """Let SAPIEN build scenes without a Vulkan render device (state obs need no rendering)."""
    try:
        from rlinf_embodied.envs.maniskill.headless import enable_headless
    except ImportError as error:
        raise RuntimeError(
            "ppo_baseline.py needs rlinf_embodied.envs.maniskill.headless.enable_headless() "
            "to run ManiSkill without a rendering device"
        ) from error
    enable_headless()


def make_vector_env(args: Args, num_envs: int, ignore_terminations: bool) -> gym.vector.VectorEnv:
    """SAME_STEP autoreset: a finished env's obs is already the next episode's first obs, and
    info["final_obs"] / info["final_info"] hold the finished episode's last obs and metrics."""
    return gym.vector.AsyncVectorEnv(
        [make_env(args, ignore_terminations) for _ in range(num_envs)],
        context="forkserver",
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )


def finished_episode_metrics(info: dict) -> dict[str, np.ndarray]:
    """Per-episode metrics (success_once, return, ...) of the envs whose episode ended this step."""
    if "final_info" not in info:
        return {}
    ended = info["_final_info"]  # (num_envs,) bool
    episode = info["final_info"]["episode"]
    return {key: np.asarray(value)[ended] for key, value in episode.items() if not key.startswith("_")}


# ---- agent ---------------------------------------------------------------------------------------
def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


def mlp(in_dim: int, hidden_dim: int, out_dim: int, out_std: float) -> nn.Sequential:
    return nn.Sequential(
        layer_init(nn.Linear(in_dim, hidden_dim)),
        nn.Tanh(),
        layer_init(nn.Linear(hidden_dim, hidden_dim)),
        nn.Tanh(),
        layer_init(nn.Linear(hidden_dim, hidden_dim)),
        nn.Tanh(),
        layer_init(nn.Linear(hidden_dim, out_dim), std=out_std),
    )


class Agent(nn.Module):
    """Gaussian actor (state-independent log-std) and critic, separate 3x256 tanh MLPs."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_dim: int):
        super().__init__()
        self.critic = mlp(obs_dim, hidden_dim, 1, out_std=1.0)
        self.actor_mean = mlp(obs_dim, hidden_dim, act_dim, out_std=0.01 * np.sqrt(2))
        self.actor_logstd = nn.Parameter(torch.full((1, act_dim), -0.5))

    def value(self, obs: torch.Tensor) -> torch.Tensor:  # (B, obs_dim) -> (B,)
        return self.critic(obs).squeeze(-1)

    def distribution(self, obs: torch.Tensor) -> Normal:
        mean = self.actor_mean(obs)  # (B, act_dim)
        return Normal(mean, self.actor_logstd.expand_as(mean).exp())

    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sampled actions (B, act_dim), per-dimension log-probs (B, act_dim), values (B,)."""
        dist = self.distribution(obs)
        actions = dist.sample()
        return actions, dist.log_prob(actions), self.value(obs)

    def evaluate(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-dimension log-probs and entropies (B, act_dim), values (B,), with gradients."""
        dist = self.distribution(obs)
        return dist.log_prob(actions), dist.entropy(), self.value(obs)


# ---- rollout -------------------------------------------------------------------------------------
@dataclass
class Rollout:
    obs: torch.Tensor  # (T, N, obs_dim)
    actions: torch.Tensor  # (T, N, act_dim), unclipped samples
    log_probs: torch.Tensor  # (T, N, act_dim)
    values: torch.Tensor  # (T + 1, N): the last row bootstraps the step after the rollout
    rewards: torch.Tensor  # (T, N)
    dones: torch.Tensor  # (T, N) bool: terminated or truncated
    bootstrap: torch.Tensor  # (T, N) bool: episode ends whose final obs value is used
    final_values: torch.Tensor  # (T, N): V(final obs) where bootstrap, else 0


class RolloutCollector:
    """Steps the training envs with the current policy; keeps the last obs across iterations."""

    def __init__(self, envs: gym.vector.VectorEnv, args: Args):
        self.envs, self.args = envs, args
        obs, _ = envs.reset(seed=args.seed)
        self.next_obs = torch.as_tensor(obs, dtype=torch.float32)  # (N, obs_dim)
        space = envs.single_action_space
        self.action_low = torch.as_tensor(space.low, dtype=torch.float32)
        self.action_high = torch.as_tensor(space.high, dtype=torch.float32)

    @torch.no_grad()
    def collect(self, agent: Agent, num_steps: int) -> tuple[Rollout, dict[str, list[float]]]:
        num_envs = self.next_obs.shape[0]
        obs, actions, log_probs, values = [], [], [], []
        rewards = torch.zeros(num_steps, num_envs)
        dones = torch.zeros(num_steps, num_envs, dtype=torch.bool)
        bootstrap = torch.zeros(num_steps, num_envs, dtype=torch.bool)
        final_values = torch.zeros(num_steps, num_envs)
        episodes: dict[str, list[float]] = {}
        for t in range(num_steps):
            action, log_prob, value = agent.act(self.next_obs)
            obs.append(self.next_obs), actions.append(action), log_probs.append(log_prob), values.append(value)
            env_action = torch.clamp(action, self.action_low, self.action_high).numpy()
            next_obs, reward, terminated, truncated, info = self.envs.step(env_action)
            rewards[t] = torch.as_tensor(reward, dtype=torch.float32)
            dones[t] = torch.as_tensor(terminated | truncated)
            ends = dones[t] if self.args.bootstrap_at_done == "always" else torch.as_tensor(truncated & ~terminated)
            if ends.any():
                final_obs = torch.as_tensor(np.stack(info["final_obs"][ends.numpy()]), dtype=torch.float32)
                final_values[t, ends] = agent.value(final_obs)
                bootstrap[t] = ends
            for key, value_array in finished_episode_metrics(info).items():
                episodes.setdefault(key, []).extend(np.asarray(value_array, dtype=np.float64).tolist())
            self.next_obs = torch.as_tensor(next_obs, dtype=torch.float32)
        values.append(agent.value(self.next_obs))
        rollout = Rollout(
            torch.stack(obs),
            torch.stack(actions),
            torch.stack(log_probs),
            torch.stack(values),
            rewards,
            dones,
            bootstrap,
            final_values,
        )
        return rollout, episodes


# ---- update --------------------------------------------------------------------------------------
def ppo_update(
    agent: Agent, optimizer: torch.optim.Optimizer, rollout: Rollout, cfg: AlgorithmConfig, generator: torch.Generator
) -> dict[str, float]:
    advantages, returns = compute_gae(
        rollout.rewards,
        rollout.dones,
        rollout.values,
        cfg.gamma,
        cfg.gae_lambda,
        truncations=rollout.bootstrap,
        final_values=rollout.final_values,
    )  # (T, N)
    batch = {
        "obs": rollout.obs.flatten(0, 1),
        "actions": rollout.actions.flatten(0, 1),
        "log_probs": rollout.log_probs.flatten(0, 1),
        "values": rollout.values[:-1].flatten(0, 1),
        "advantages": advantages.flatten(),
        "returns": returns.flatten(),
    }  # (B, ...) with B = T * N
    history: dict[str, list[float]] = {}
    for _ in range(cfg.update_epochs):
        order = torch.randperm(batch["obs"].shape[0], generator=generator)
        stop = False
        for index in torch.tensor_split(order, cfg.num_minibatches):
            metrics = minibatch_step(agent, optimizer, {k: v[index] for k, v in batch.items()}, cfg)
            for key, value in metrics.items():
                history.setdefault(key, []).append(value)
            stop = cfg.target_kl is not None and metrics["approx_kl"] > cfg.target_kl
            if stop:
                break
        if stop:
            break
    out = {key: float(np.mean(values)) for key, values in history.items()}
    out["explained_variance"] = explained_variance(batch["values"], batch["returns"])
    out["num_minibatch_steps"] = float(len(history.get("loss", [])))
    return out


def minibatch_step(
    agent: Agent, optimizer: torch.optim.Optimizer, minibatch: dict[str, torch.Tensor], cfg: AlgorithmConfig
) -> dict[str, float]:
    """One gradient step; skipped (metrics only) when approx_kl already exceeds target_kl."""
    log_probs, entropy, values = agent.evaluate(minibatch["obs"], minibatch["actions"])  # (B, A) x2, (B,)
    loss, metrics = policy_loss(
        new_log_probs=log_probs.unsqueeze(1),
        old_log_probs=minibatch["log_probs"].unsqueeze(1),  # (B, 1, A)
        advantages=minibatch["advantages"],
        entropy=entropy.unsqueeze(1),
        new_values=values,
        old_values=minibatch["values"],
        returns=minibatch["returns"],
        cfg=cfg,
    )
    out = {key: float(value) for key, value in metrics.items()}
    if cfg.target_kl is not None and out["approx_kl"] > cfg.target_kl:
        return out  # CleanRL / ManiSkill: stop before stepping past the KL target
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    out["grad_norm"] = float(nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm))
    optimizer.step()
    out["loss"] = float(loss.detach())
    return out


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    var = float(target.var())
    return float("nan") if var == 0 else 1.0 - float((target - predicted).var()) / var


# ---- evaluation ----------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(
    agent: Agent, envs: gym.vector.VectorEnv, num_episodes: int, max_episode_steps: int, seed: int
) -> dict[str, float]:
    """Deterministic policy (Gaussian mean) over full episodes (terminations ignored)."""
    episodes: dict[str, list[float]] = {}
    round_index = 0
    while len(episodes.get("success_once", [])) < num_episodes:
        obs, _ = envs.reset(seed=seed + round_index * envs.num_envs)
        for _ in range(max_episode_steps):
            actions = agent.actor_mean(torch.as_tensor(obs, dtype=torch.float32)).numpy()
            low, high = envs.single_action_space.low, envs.single_action_space.high
            obs, _, _, _, info = envs.step(np.clip(actions, low, high))
            for key, values in finished_episode_metrics(info).items():
                episodes.setdefault(key, []).extend(np.asarray(values, dtype=np.float64).tolist())
        round_index += 1
    return {key: float(np.mean(values[:num_episodes])) for key, values in episodes.items()} | {
        "num_episodes": float(min(num_episodes, len(episodes["success_once"])))
    }


# ---- main ----------------------------------------------------------------------------------------
def algorithm_config(args: Args) -> AlgorithmConfig:
    return AlgorithmConfig(
        adv_type="gae",
        loss_type="ppo",
        logprob_level="action",
        gamma=args.gamma,
        gae_lambda=args.gae_lambda,
        normalize_advantages=True,
        clip_ratio=args.clip_ratio,
        value_clip=None,
        vf_coef=args.vf_coef,
        entropy_coef=args.entropy_coef,
        lr=args.lr,
        update_epochs=args.update_epochs,
        num_minibatches=args.num_minibatches,
        max_grad_norm=args.max_grad_norm,
        target_kl=args.target_kl if args.target_kl > 0 else None,
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def log_scalars(writer: SummaryWriter, prefix: str, metrics: dict[str, float], step: int) -> None:
    for key, value in metrics.items():
        writer.add_scalar(f"{prefix}/{key}", value, step)


@dataclass
class Progress:
    env_steps: int = 0
    train_seconds: float = 0.0  # rollouts + updates; evaluations excluded
    eval_success: float = float("nan")
    target_env_steps: int | None = None  # when periodic eval first reached args.target_success
    target_seconds: float | None = None


def train(
    args: Args, agent: Agent, envs: gym.vector.VectorEnv, eval_envs: gym.vector.VectorEnv, writer: SummaryWriter
) -> Progress:
    cfg = algorithm_config(args)
    generator = torch.Generator().manual_seed(args.seed)
    optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.lr, eps=1e-5)
    collector = RolloutCollector(envs, args)
    batch_size = args.num_envs * args.num_steps
    num_iterations = max(1, args.total_env_steps // batch_size)
    progress = Progress()
    bar = tqdm(total=num_iterations * batch_size, unit="step", unit_scale=True, dynamic_ncols=True)
    for iteration in range(1, num_iterations + 1):
        start = time.perf_counter()
        agent.eval()
        rollout, episodes = collector.collect(agent, args.num_steps)
        rollout_seconds = time.perf_counter() - start
        agent.train()
        train_metrics = ppo_update(agent, optimizer, rollout, cfg, generator)
        progress.train_seconds += time.perf_counter() - start
        progress.env_steps += batch_size
        bar.update(batch_size)

        episode_means = {key: float(np.mean(values)) for key, values in episodes.items()}
        log_scalars(writer, "train", episode_means, progress.env_steps)
        log_scalars(writer, "losses", train_metrics, progress.env_steps)
        log_scalars(
            writer,
            "time",
            {
                "env_steps_per_s": progress.env_steps / progress.train_seconds,
                "rollout_env_steps_per_s": batch_size / rollout_seconds,
            },
            progress.env_steps,
        )
        if args.eval_interval and iteration % args.eval_interval == 0:
            periodic_eval(args, agent, eval_envs, writer, progress, seed=10_000 + iteration)
        log_jsonl(
            writer.log_dir,
            {
                "iteration": iteration,
                "env_steps": progress.env_steps,
                "elapsed_seconds": progress.train_seconds,
                **episode_means,
                "eval_success_once": progress.eval_success,
            },
        )
        bar.set_postfix(
            train_success=f"{episode_means.get('success_once', float('nan')):.2f}",
            eval_success=f"{progress.eval_success:.2f}",
            sps=f"{progress.env_steps / progress.train_seconds:.0f}",
        )
        if args.stop_at_target and progress.target_env_steps is not None:
            break
    bar.close()
    return progress


def log_jsonl(run_dir: str, record: dict) -> None:
    """One line per iteration in metrics.jsonl, the same keys as the runner's where they overlap."""
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")


def periodic_eval(
    args: Args, agent: Agent, eval_envs: gym.vector.VectorEnv, writer: SummaryWriter, progress: Progress, seed: int
) -> None:
    metrics = evaluate(agent, eval_envs, args.num_eval_envs, args.max_episode_steps, seed=seed)
    log_scalars(writer, "eval", metrics, progress.env_steps)
    progress.eval_success = metrics["success_once"]
    if progress.target_env_steps is None and progress.eval_success >= args.target_success:
        progress.target_env_steps, progress.target_seconds = progress.env_steps, progress.train_seconds
        tqdm.write(
            f"eval success_once {progress.eval_success:.2f} >= {args.target_success} after "
            f"{progress.env_steps:,} env steps, {progress.train_seconds:.0f} s"
        )


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * 22 + "+"
    print(line)
    for name, value in rows:
        print(f"| {name:<{width}} | {value:>20} |")
    print(line)


def report(args: Args, progress: Progress, final: dict[str, float], run_dir: str) -> None:
    steps_per_s = progress.env_steps / progress.train_seconds
    results = {
        "env_steps": progress.env_steps,
        "wall_clock_s": progress.train_seconds,
        "env_steps_per_s": steps_per_s,
        "final_success_once": final["success_once"],
        "final_success_at_end": final.get("success_at_end"),
        "eval_episodes": int(final["num_episodes"]),
        "target_success": args.target_success,
        "target_env_steps": progress.target_env_steps,
        "target_wall_clock_s": progress.target_seconds,
        "args": dataclasses.asdict(args),
    }
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    reached = (
        "not reached"
        if progress.target_env_steps is None
        else f"{progress.target_env_steps:,} / {progress.target_seconds:.0f} s"
    )
    print_table(
        [
            ("env steps", f"{progress.env_steps:,}"),
            ("wall-clock (train)", f"{progress.train_seconds:.1f} s"),
            ("env steps / s", f"{steps_per_s:,.0f}"),
            (f"final success_once ({int(final['num_episodes'])} eps)", f"{final['success_once']:.3f}"),
            ("final success_at_end", f"{final.get('success_at_end', float('nan')):.3f}"),
            (f"eval >= {args.target_success} at (steps / s)", reached),
        ]
    )
    print(f"results: {os.path.join(run_dir, 'results.json')}")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.torch_threads)
    seed_everything(args.seed)
    run_dir = os.path.join(args.log_dir, f"{args.env_id}__seed{args.seed}__{int(time.time())}")
    writer = SummaryWriter(run_dir)
    writer.add_text("args", json.dumps(dataclasses.asdict(args), indent=2))
    envs = make_vector_env(args, args.num_envs, ignore_terminations=args.ignore_terminations)
    eval_envs = make_vector_env(args, args.num_eval_envs, ignore_terminations=True)
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    agent = Agent(obs_dim, act_dim, args.hidden_dim)
    print(
        f"{args.env_id}: obs_dim={obs_dim} act_dim={act_dim} num_envs={args.num_envs} "
        f"batch={args.num_envs * args.num_steps} -> {run_dir}"
    )
    try:
        progress = train(args, agent, envs, eval_envs, writer)
        final = evaluate(agent, eval_envs, args.num_eval_episodes, args.max_episode_steps, seed=1_000_000)
        log_scalars(writer, "eval_final", final, progress.env_steps)
        if args.save_model:
            torch.save(agent.state_dict(), os.path.join(run_dir, "agent.pt"))
        report(args, progress, final, run_dir)
    finally:
        writer.close()
        envs.close()
        eval_envs.close()


if __name__ == "__main__":
    main()
