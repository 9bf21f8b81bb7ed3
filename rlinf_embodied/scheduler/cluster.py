"""Cluster: the Ray cluster the workers run on, its nodes and the accelerators per node.

Real GPUs: workers are pinned to a node (node affinity) and get an explicit CUDA_VISIBLE_DEVICES, so
several components can share a GPU. Simulated GPUs (no CUDA): each node advertises a custom Ray
resource `SIM_GPU_RESOURCE` of num_gpus_per_node; workers get the same placement metadata (fake GPU
ids) but compute on the CPU.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Optional

import ray

logger = logging.getLogger(__name__)

NAMESPACE = "rlinf_embodied"
SIM_GPU_RESOURCE = "simulated_gpu"


@dataclass(frozen=True)
class NodeInfo:
    node_rank: int
    node_id: str  # Ray node id (hex)
    ip: str
    num_gpus: int  # GPUs (real or simulated) this node offers


def _local_cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Raise, naming cluster.address, where it is malformed or nothing answers there within `timeout_s`. Before,
    ray.init retried an unreachable address for minutes, printing only its own "Failed to connect to GCS" lines."""
    if address == "auto":  # Ray looks for a cluster on this machine and says so itself, at once
        return
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(
            f"cluster.address={address!r} is not 'auto', '<host>:<port>' or 'ray://<host>:<port>' (e.g. "
            "10.0.0.1:6379, the address `ray start --head` prints); leave it unset to start a local cluster"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ConnectionError(
            f"cluster.address={address!r}: nothing answers at {host}:{port} within {timeout_s:.0f} s ({error}); start "
            "Ray there (`ray start --head --port <port>`) or leave cluster.address unset to start a local cluster"
        ) from None


def ray_session() -> tuple[str, str] | None:
    """This process's Ray connection: (session name, job id), or None without one. A group or Cluster made in one
    connection holds handles that mean nothing in a later one (after ray.shutdown, or a Cluster's shutdown)."""
    if not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    try:
        session = context.get_session_name()
    except Exception:  # noqa: BLE001 - e.g. Ray Client: the job id alone
        session = ""
    return session, context.get_job_id()


def check_local_node_count(num_nodes: int, address: Optional[str]) -> None:
    """A cluster started here (no cluster.address) has one node; more are refused, naming the way on. The one check
    for Cluster and for `python -m rlinf_embodied.place` (which, with cached costs, starts no cluster)."""
    if num_nodes != 1 and not address:
        raise ValueError(
            f"cluster.num_nodes={num_nodes} without cluster.address: a local cluster has 1 node; start Ray on every "
            "node (`ray start`) and pass its address (cluster.address=<head>:<port>), or leave cluster.num_nodes at 1"
        )


class Cluster:
    """Connect to a Ray cluster (`address=`) or start a local one.

    num_gpus_per_node: how many GPUs each node contributes (must be <= what the nodes have).
    simulate_gpus: where no node has CUDA GPUs, present num_gpus_per_node simulated ones per node.
    """

    def __init__(
        self, address: str | None = None, num_nodes: int = 1, num_gpus_per_node: int = 1, simulate_gpus: bool = True
    ):
        counts = (num_nodes, num_gpus_per_node)
        if any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in counts):
            raise ValueError(
                f"num_nodes={num_nodes!r}, num_gpus_per_node={num_gpus_per_node!r}: both must be integers >= 1"
            )
        self.num_nodes, self.num_gpus_per_node = num_nodes, num_gpus_per_node
        self._owns_ray = False
        # Joined, Ray's simulated GPUs are whatever its starter asked for, not necessarily num_gpus_per_node.
        self._joined_ray = ray.is_initialized()
        self._closed = False
        if self._joined_ray:
            self._check_joined_address(address)
            logger.info("Cluster: reusing the Ray connection of this process")
        elif address:
            check_reachable(address)
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=True)
        else:
            self._start_local(num_nodes, num_gpus_per_node, simulate_gpus)
        self.nodes = self._discover(simulate_gpus)
        self._session = ray_session()

    @staticmethod
    def _check_joined_address(address: str | None) -> None:
        """Refuse an address this process's Ray connection is not (before: ignored, a malformed one too)."""
        if not address:
            return
        current = ray.get_runtime_context().gcs_address
        if address != current:
            raise ValueError(
                f"Cluster(address={address!r}): Ray is already connected to {current} in this process, so this "
                f"address cannot be honoured; leave address unset to use that connection, or create this Cluster "
                "before anything else starts Ray (ray.shutdown() ends the current connection)"
            )

    @classmethod
    def from_config(cls, cluster_cfg) -> "Cluster":
        """The cluster a `cluster:` config section (config.ClusterConfig) describes."""
        return cls(
            address=cluster_cfg.address,
            num_nodes=cluster_cfg.num_nodes,
            num_gpus_per_node=cluster_cfg.num_gpus_per_node,
            simulate_gpus=cluster_cfg.simulate_gpus,
        )

    # ---- start / discover ---------------------------------------------------------------------
    def _start_local(self, num_nodes: int, num_gpus_per_node: int, simulate_gpus: bool) -> None:
        check_local_node_count(num_nodes, address=None)
        cuda = _local_cuda_count()
        if cuda and num_gpus_per_node > cuda:
            raise ValueError(f"num_gpus_per_node={num_gpus_per_node}, but this machine has {cuda} CUDA GPUs")
        resources = {SIM_GPU_RESOURCE: float(num_gpus_per_node)} if (simulate_gpus and not cuda) else {}
        # Ray leaves CUDA_VISIBLE_DEVICES alone in actors that ask for no GPU; we set it ourselves.
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        ray.init(
            num_cpus=os.cpu_count(),
            num_gpus=cuda,
            resources=resources,
            namespace=NAMESPACE,
            include_dashboard=False,
            log_to_driver=True,
        )
        self._owns_ray = True

    def _discover(self, simulate_gpus: bool) -> list[NodeInfo]:
        alive = [node for node in ray.nodes() if node.get("Alive")]
        real = [n for n in alive if n["Resources"].get("GPU", 0) >= 1]
        self.simulated = not real
        if self.simulated and not simulate_gpus:
            raise ValueError(
                "no node of the Ray cluster has a GPU and simulate_gpus=False; "
                "set cluster.simulate_gpus=true to run on CPU processes"
            )
        candidates = real or alive
        if len(candidates) < self.num_nodes:
            raise ValueError(
                f"num_nodes={self.num_nodes}, but the Ray cluster has {len(candidates)} {'GPU ' if real else ''}node(s)"
            )
        driver_ip = ray.util.get_node_ip_address()
        # The driver's node first (node 0), then by IP: a stable order on every run.
        candidates.sort(key=lambda n: (n["NodeManagerAddress"] != driver_ip, n["NodeManagerAddress"], n["NodeID"]))
        nodes = []
        for rank, node in enumerate(candidates[: self.num_nodes]):
            self._check_node_gpus(rank, node, real)
            nodes.append(NodeInfo(rank, node["NodeID"], node["NodeManagerAddress"], self.num_gpus_per_node))
        return nodes

    def _check_node_gpus(self, rank: int, node: dict, real: bool) -> None:
        """Refuse a node with fewer GPUs than num_gpus_per_node. Simulated GPUs are counted by Ray's
        SIM_GPU_RESOURCE where the node offers it or this process's Ray was started before this Cluster
        (by another Cluster, with its own count); a cluster joined by address without it is taken at its word."""
        resources = node["Resources"]
        if real:
            have, kind = int(resources.get("GPU", 0)), "GPUs"
        elif SIM_GPU_RESOURCE in resources or self._joined_ray:
            have, kind = int(resources.get(SIM_GPU_RESOURCE, 0)), f"simulated GPUs (Ray resource {SIM_GPU_RESOURCE!r})"
        else:
            return
        if have < self.num_gpus_per_node:
            if real:
                hint = ""
            elif have == 0:  # Ray started without simulated GPUs: a count of 0 is not a valid request
                hint = (
                    f"; this process's Ray was started without the {SIM_GPU_RESOURCE!r} resource (by ray.init or "
                    "something else that started Ray before this Cluster): create the Cluster before anything else "
                    f"starts Ray, or start Ray with ray.init(resources={{{SIM_GPU_RESOURCE!r}: "
                    f"{self.num_gpus_per_node}}})"
                )
            elif self._joined_ray:
                hint = (
                    f"; ask for num_gpus_per_node<={have}, or create the first Cluster of this process (the one "
                    "that starts Ray) with more"
                )
            else:
                hint = f"; ask for num_gpus_per_node<={have}, or start Ray on that node with more"
            raise ValueError(
                f"num_gpus_per_node={self.num_gpus_per_node}, but node {rank} "
                f"({node['NodeManagerAddress']}) has {have} {kind}{hint}"
            )

    # ---- queries ------------------------------------------------------------------------------
    @property
    def num_gpus(self) -> int:
        return self.num_nodes * self.num_gpus_per_node

    @property
    def has_real_gpus(self) -> bool:
        return not self.simulated

    def check_usable(self) -> None:
        """Raise where this Cluster cannot place workers: it was shut down, or the Ray connection it was made in
        has ended (another Cluster's shutdown, ray.shutdown()). Before, a launch then failed in Ray's internals."""
        if self._closed:
            raise RuntimeError(
                f"{self._describe()} was shut down (Cluster.shutdown()); create a new Cluster to launch on"
            )
        if ray_session() != self._session:
            raise RuntimeError(
                f"{self._describe()}: the Ray connection it was made in has ended (a Cluster's shutdown() or ray.shutdown() "
                "stopped it, and the workers placed on it); create a new Cluster to launch on"
            )

    def node(self, node_rank: int) -> NodeInfo:
        if not 0 <= node_rank < len(self.nodes):
            raise ValueError(f"node {node_rank} does not exist; the cluster has {len(self.nodes)} node(s)")
        return self.nodes[node_rank]

    def shutdown(self) -> None:
        """Stop Ray if this Cluster started it, with every worker group and channel on it, those launched through
        other Cluster objects that joined its Ray too (they refuse later calls, naming this). A joined cluster
        keeps running. Either way this Cluster launches nothing afterwards."""
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False
        self._closed = True

    def _describe(self) -> str:
        kind = "simulated" if self.simulated else "CUDA"
        return f"Cluster({self.num_nodes} node(s) x {self.num_gpus_per_node} {kind} GPUs)"

    def __repr__(self) -> str:
        return self._describe()[:-1] + (", shut down)" if self._closed else ")")
