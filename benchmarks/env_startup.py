"""Building ManiSkill envs in one process: with the imported modules frozen for the garbage collector or not.

ManiSkill calls gc.collect() twice per env it builds (once in its reconfigure, once in close). Each collection
scans every object the process holds, torch and the simulator included, so building an env slows as the process
grows. `SubprocVectorEnv`'s workers call gc.freeze() after their imports, before they build their envs; this
script builds the same envs in fresh processes both ways, side by side, then times a whole vector env
(`gym.make_vec` until its first reset returns) as the runner's env workers build it.

    python benchmarks/env_startup.py                                   # state envs, 2-core CPU machine
    python benchmarks/env_startup.py --obs-mode rgb --envs 4 8 --vector-envs 64   # cameras: a GPU machine
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import queue as queue_module
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_args import non_negative_int, positive_int  # noqa: E402

OBS_MODES = ("state", "rgb")
CHILD_TIMEOUT_S = 600.0


def build_envs(num_envs: int, obs_mode: str, freeze: bool, queue) -> None:
    """In a fresh process: import the simulator, optionally freeze, build `num_envs` envs; report ("ok", seconds),
    or ("error", traceback) when anything fails, so the parent can print the child's error."""
    try:
        import mani_skill.envs  # noqa: F401

        from rlinf_embodied.envs.maniskill.env import ManiSkillSingleEnv

        if freeze:
            gc.freeze()
        start = time.perf_counter()
        envs = [
            ManiSkillSingleEnv("PickCube", obs_mode=obs_mode, control_mode="pd_ee_delta_pos") for _ in range(num_envs)
        ]
        queue.put(("ok", time.perf_counter() - start))
    except BaseException:
        queue.put(("error", traceback.format_exc()))
        raise SystemExit(1)
    for env in envs:
        env.close()


def wait_for_child(process, queue, timeout_s: float = CHILD_TIMEOUT_S, poll_s: float = 0.5):
    """The child's first message, checking every `poll_s` that it is still alive: a child that died (an exception, a
    crash, a kill) ends the wait at once with its error instead of blocking until `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return queue.get(timeout=poll_s)
        except queue_module.Empty:
            pass
        if not process.is_alive():
            try:  # a message put just before exiting may land after is_alive() turned False
                return queue.get(timeout=poll_s)
            except queue_module.Empty:
                raise RuntimeError(f"the child process exited with code {process.exitcode} before reporting") from None
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the child process reported nothing within {timeout_s:.0f} s (killed)")


def seconds_to_build(num_envs: int, obs_mode: str, freeze: bool) -> float:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=build_envs, args=(num_envs, obs_mode, freeze, queue))
    process.start()
    try:
        status, payload = wait_for_child(process, queue)
    except RuntimeError as error:
        raise SystemExit(f"building {num_envs} {obs_mode} env(s) (gc.freeze={freeze}) failed: {error}") from None
    finally:
        process.join(timeout=60)
        if process.is_alive():
            process.kill()
    if status != "ok":
        raise SystemExit(f"building {num_envs} {obs_mode} env(s) (gc.freeze={freeze}) failed in the child:\n{payload}")
    return payload


def phases_to_first_reset(num_envs: int, obs_mode: str) -> dict[str, float]:
    """Seconds from make_vec's call (a fresh process: the simulator's imports included) to each phase:
    make_vec returned (probe env built, workers launched), first / median / last worker's envs built, first
    reset done. The workers' times are their own clocks (SubprocVectorEnv.worker_ready_times)."""
    import statistics

    import gymnasium as gym

    import rlinf_embodied  # noqa: F401  (registers rlinf/ManiSkill-*)

    start = time.time()
    env = gym.make_vec(
        "rlinf/ManiSkill-PickCube", num_envs=num_envs, vectorization_mode="vector_entry_point", obs_mode=obs_mode
    )
    returned = time.time()
    env.reset(seed=0)
    done = time.time()
    ready = sorted(env.worker_ready_times)
    env.close()
    return {
        "make_vec returned (probe env, workers launched)": returned - start,
        "first worker's envs built": ready[0] - start,
        "median worker's envs built": statistics.median(ready) - start,
        "last worker's envs built": ready[-1] - start,
        "first reset done": done - start,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", type=positive_int, nargs="+", default=[4, 16, 32], help="envs built in one process")
    parser.add_argument(
        "--obs-mode", default="state", choices=OBS_MODES, help="state | rgb (rgb needs a renderer: GPU machine)"
    )
    parser.add_argument(
        "--vector-envs", type=non_negative_int, default=64, help="envs of the whole vector env timed (0: skip)"
    )
    args = parser.parse_args(argv)
    print(f"ManiSkill PickCube ({args.obs_mode}), envs built in one process, {os.cpu_count()} CPU cores")
    print("| envs in the process | plain s | gc.freeze() s | speed-up |")
    print("|---:|---:|---:|---:|")
    for num_envs in args.envs:
        plain = seconds_to_build(num_envs, args.obs_mode, freeze=False)
        frozen = seconds_to_build(num_envs, args.obs_mode, freeze=True)
        print(f"| {num_envs} | {plain:.2f} | {frozen:.2f} | {plain / frozen:.1f}x |", flush=True)
    if args.vector_envs:
        phases = phases_to_first_reset(args.vector_envs, args.obs_mode)
        print(
            f"\nSubprocVectorEnv of {args.vector_envs} envs ({os.cpu_count()} workers), seconds since make_vec's call:"
        )
        print("| phase | s |\n|---|---:|")
        for phase, seconds in phases.items():
            print(f"| {phase} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
