"""Two runs on one Ray cluster: a second run (another driver, another Ray job) that needs the worker group and
channel names a running run holds is refused before it touches anything, with a message a command-line user can act
on, and the first run keeps working. Before: the second run's Channel.create replaced the first run's channels
(its workers then waited on channels that were gone), and only then was it refused, at its env group's launch, with
advice for a Python user ("shut it down first (its WorkerGroup's .shutdown())").

The second run is a real second driver: a Python process that joins this module's local Ray by its address."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import ray
import ray.cloudpickle

from rlinf_embodied.scheduler import Channel, Cluster, Worker
from rlinf_embodied.scheduler.channel import current_job
from rlinf_embodied.scheduler.worker import _lookup_group, check_names_free

# Ray workers cannot import this test module by name: ship its worker class by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

REPO = Path(__file__).resolve().parents[2]
GROUP, CHANNEL, RUNNER_CHANNEL = "t_shared_group", "t_shared_channel", "env_to_rollout"
ORPHAN_GROUP, ORPHAN_CHANNEL = "t_orphan_group", "t_orphan_channel"  # what the second run leaves behind as it ends

SECOND_RUN = textwrap.dedent(
    """
    import json, sys, types

    from rlinf_embodied.scheduler import Channel, Cluster, Worker

    address, group, channel, runner_channel, orphan_group, orphan_channel = sys.argv[1:]
    cluster = Cluster(address=address, num_nodes=1, num_gpus_per_node=1)
    results = {}

    def attempt(key, call):
        try:
            call()
            results[key] = None
        except Exception as error:
            results[key] = [type(error).__name__, str(error)]

    def check():
        from rlinf_embodied.scheduler.worker import check_names_free

        check_names_free(groups=[group, "t_free_group"], channels=[channel, "t_free_channel"])

    class Unreached:
        def strategy(self, name):
            raise RuntimeError(f"the runner went on to start worker group {name!r}")

    def runner():
        from rlinf_embodied.runners.embodied_runner import EmbodiedRunner

        EmbodiedRunner._start_workers(types.SimpleNamespace(placement=Unreached()), None, cluster)

    attempt("check", check)
    attempt("channel", lambda: Channel.create(channel))
    attempt("mailbox", lambda: Channel.start("__p2p__/" + group, _mailbox=True).wait())
    attempt("group", lambda: Worker.create_group().launch(cluster, name=group))
    attempt("runner", runner)
    # Left behind as this run ends (no destroy, no release): a later run may take them.
    Channel.create(orphan_channel).put("stale")
    from rlinf_embodied.scheduler.worker import _registry
    import ray, uuid

    info = {"world_size": 1, "cuda": False, "token": uuid.uuid4().hex, "job": ray.get_runtime_context().get_job_id()}
    results["orphan_claimed"] = ray.get(_registry().claim.remote(orphan_group, info))
    print("RESULTS " + json.dumps(results))
    """
)


class EchoWorker(Worker):
    def echo(self, value):
        return value


@pytest.fixture(scope="module")
def cluster(ray_session):
    return Cluster(num_nodes=1, num_gpus_per_node=1, simulate_gpus=True)  # joins the session's Ray


@pytest.fixture(scope="module")
def first_run(cluster):
    """This process as the first run: a worker group and two channels holding items, then a second run's attempts
    (a second driver on the same Ray) and what they raised."""
    channel = Channel.create(CHANNEL, maxsize=2)
    runner_channel = Channel.create(RUNNER_CHANNEL, maxsize=2)
    channel.put("before")
    runner_channel.put("before")
    group = EchoWorker.create_group().launch(cluster, name=GROUP)
    address = ray.get_runtime_context().gcs_address
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    args = [address, GROUP, CHANNEL, RUNNER_CHANNEL, ORPHAN_GROUP, ORPHAN_CHANNEL]
    done = subprocess.run(
        [sys.executable, "-c", SECOND_RUN, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULTS ")]
    assert done.returncode == 0 and lines, f"the second run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    yield {"results": json.loads(lines[-1][len("RESULTS ") :]), "address": address, "group": group}
    group.shutdown()
    for created in (channel, runner_channel):
        created.destroy()


def _refusal(first_run, key):
    refused = first_run["results"][key]
    assert refused is not None, f"the second run's {key} was not refused"
    kind, message = refused
    assert kind == "NameInUseError", message
    assert f"another run (Ray job {current_job()}, driver pid {os.getpid()}" in message
    assert f"on this Ray cluster (cluster.address={first_run['address']}); wait for it to end" in message
    assert "or run this one on another Ray cluster" in message
    assert "shut it down first" not in message  # advice for a Python user, who holds the group
    return message


def test_names_another_run_holds_are_refused_before_anything_is_touched(first_run):
    message = _refusal(first_run, "check")
    assert f"is using worker group '{GROUP}' and channel '{CHANNEL}' on this Ray cluster" in message
    assert "t_free" not in message
    assert f"is using channel '{CHANNEL}' on" in _refusal(first_run, "channel")
    assert f"is using channel '__p2p__/{GROUP}' on" in _refusal(first_run, "mailbox")
    assert f"is using worker group '{GROUP}' on" in _refusal(first_run, "group")
    # the runner checks every name it needs before it starts a group or channel (before: it replaced this run's
    # env_to_rollout, then went on to start its groups)
    assert f"is using channel '{RUNNER_CHANNEL}' on" in _refusal(first_run, "runner")


def test_the_first_run_keeps_its_channels_and_group(first_run):
    for name in (CHANNEL, RUNNER_CHANNEL):
        channel = Channel.connect(name)
        assert channel.get(timeout=10) == "before"  # before: the channel was replaced (empty) or gone
        channel.put("after")
        assert channel.get(timeout=10) == "after"
    assert first_run["group"].echo(3).wait() == [3]
    info, _ = _lookup_group(GROUP)
    assert info["job"] == current_job()
    Channel.connect(f"__p2p__/{GROUP}").qsize()  # its mailbox is there


def test_names_of_this_run_or_of_a_run_that_ended_are_taken(first_run, cluster):
    """A channel this run made is replaced by its create (a runner made again in one process); one or a group name
    a run that ended left behind is taken (its actor may outlive it a moment; its registry claim for ever)."""
    assert first_run["results"]["orphan_claimed"] is True
    check_names_free(groups=[ORPHAN_GROUP], channels=[ORPHAN_CHANNEL, CHANNEL])
    again = Channel.create(ORPHAN_CHANNEL)
    assert again.qsize() == 0
    again.destroy()
    with pytest.raises(ValueError, match=rf"a worker group named '{GROUP}' is already running; shut it down first"):
        check_names_free(groups=[GROUP])
    group = EchoWorker.create_group().launch(cluster, name=ORPHAN_GROUP)
    try:
        assert _lookup_group(ORPHAN_GROUP)[0]["job"] == current_job()
        assert group.echo("x").wait() == ["x"]
    finally:
        group.shutdown()
