"""Worker start-up: the runner's overlapped start vs the older orders, on the same cluster.

All three build the same things: three channels, the env group (which reports the policies' dims), then the
rollout and actor groups with their policies.
- "sequential": each process is waited for before the next starts;
- "concurrent launch": every process starts at once, but the envs are built before the policies start
  building (the runner until stop 23);
- "overlapped": `EmbodiedRunner`'s own start-up: the policies build while the env processes build their envs
  (the env group answers with its spaces after one probe env).

    python benchmarks/startup.py --repeats 2 -- env=maniskill_pickcube env.num_envs=64   # 2-core CPU machine
    python benchmarks/startup.py --real-gpus -- policy=pi0 policy.size=pi0-3b policy.require_checkpoint=false \\
        env=maniskill_pickcube_rgb                                            # a VLA on one GPU

Arguments after `--` are Hydra overrides of the train config.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_args import positive_int  # noqa: E402


from rlinf_embodied.config import TrainConfig, compose_config  # noqa: E402
from rlinf_embodied.runners.embodied_runner import EmbodiedRunner, component_placement  # noqa: E402
from rlinf_embodied.scheduler import Channel, Cluster  # noqa: E402
from rlinf_embodied.workers.actor_worker import ActorWorker  # noqa: E402
from rlinf_embodied.workers.env_worker import EnvWorker  # noqa: E402
from rlinf_embodied.workers.rollout_worker import RolloutWorker  # noqa: E402


CHANNELS = (("a", 2), ("b", 2), ("c", 0))  # (name, maxsize): the runner's three channels


def start_sequentially(cfg: TrainConfig, cluster: Cluster) -> float:
    """Seconds until every group is built and initialised, each process waited for before the next."""
    placement = component_placement(cfg)
    start = time.perf_counter()
    channels = [Channel.create(name, maxsize=size) for name, size in CHANNELS]
    env = EnvWorker.create_group(cfg).launch(cluster, name="env", placement_strategy=placement.strategy("env"))
    env.init_worker().wait()
    env.wait_until_ready().wait()
    spec = env.execute_on(0).env_spec().wait()[0]
    groups = [
        RolloutWorker.create_group(cfg, spec["action_dim"], spec["state_dim"], env.world_size).launch(
            cluster, name="rollout", placement_strategy=placement.strategy("rollout")
        ),
        ActorWorker.create_group(cfg, spec["action_dim"], spec["state_dim"]).launch(
            cluster, name="actor", placement_strategy=placement.strategy("actor")
        ),
    ]
    for handle in [group.init_worker() for group in groups]:
        handle.wait()
    seconds = time.perf_counter() - start
    shut_down(env, groups, channels)
    return seconds


def start_launching_concurrently(cfg: TrainConfig, cluster: Cluster) -> float:
    """Every process at once, but the envs are built before the policies start building."""
    placement = component_placement(cfg)
    start = time.perf_counter()
    pending = [Channel.start(name, maxsize=size) for name, size in CHANNELS]
    env, rollout, actor = (
        cls.create_group(*args).start(cluster, name=name, placement_strategy=placement.strategy(name))
        for cls, name, args in ((EnvWorker, "env", (cfg,)), (RolloutWorker, "rollout", ()), (ActorWorker, "actor", ()))
    )
    env.wait_launched().init_worker().wait()
    env.wait_until_ready().wait()
    spec = env.execute_on(0).env_spec().wait()[0]
    rollout.bind(cfg, spec["action_dim"], spec["state_dim"], env.world_size)
    actor.bind(cfg, spec["action_dim"], spec["state_dim"])
    for group in (rollout, actor):
        group.wait_launched()
    for handle in [group.init_worker() for group in (rollout, actor)]:
        handle.wait()
    channels = [p.wait() for p in pending]
    seconds = time.perf_counter() - start
    shut_down(env, (rollout, actor), channels)
    return seconds


def start_overlapped(cfg: TrainConfig, cluster: Cluster) -> float:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        runner = EmbodiedRunner(cfg, cluster, out)
        seconds = time.perf_counter() - start
        runner.shutdown()
    return seconds


def shut_down(env, groups, channels) -> None:
    env.close().wait()
    for group in (env, *groups):
        group.shutdown()
    for channel in channels:
        channel.destroy()


WAYS = {
    "sequential": start_sequentially,
    "concurrent launch": start_launching_concurrently,
    "overlapped": start_overlapped,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=positive_int, default=2, help="start-ups per way (alternating)")
    parser.add_argument("--real-gpus", action="store_true", help="cluster.simulate_gpus=false")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the train config (after --)")
    args = parser.parse_args(argv)
    defaults = ["policy.size=tiny", "env.num_envs=4", f"cluster.simulate_gpus={str(not args.real_gpus).lower()}"]
    cfg = compose_config("config", defaults + args.overrides)
    cluster = Cluster.from_config(cfg.cluster)
    seconds: dict[str, list[float]] = {way: [] for way in WAYS}
    try:
        for repeat in range(args.repeats):
            for way, start in WAYS.items():
                seconds[way].append(start(cfg, cluster))
                print(f"[{repeat}] {way}: {seconds[way][-1]:.1f} s", flush=True)
    finally:
        cluster.shutdown()
    print(
        f"\nstart-up of env + rollout + actor groups and 3 channels: {cfg.env.id} {cfg.env.obs_mode}, "
        f"{cfg.policy.name}/{cfg.policy.size}, {cfg.env.num_envs} envs, {os.cpu_count()} CPU cores"
    )
    print("| way | mean s | runs s | vs sequential |")
    print("|---|---:|---|---:|")
    base = statistics.mean(seconds["sequential"])
    for way, runs in seconds.items():
        mean = statistics.mean(runs)
        print(f"| {way} | {mean:.1f} | {', '.join(f'{s:.1f}' for s in runs)} | {base / mean:.2f}x |")


if __name__ == "__main__":
    main()
