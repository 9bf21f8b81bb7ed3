"""Ray scheduler: cluster, placement, worker groups, channels, point-to-point, offload, weight sync."""

from .channel import Channel
from .cluster import Cluster, NodeInfo
from .placement import (
    ComponentPlacement,
    FlexiblePlacementStrategy,
    PackedPlacementStrategy,
    Placement,
    PlacementStrategy,
    parse_gpu_spec,
)
from .worker import GroupHandle, Worker, WorkerError, WorkerGroup

__all__ = [
    "Channel",
    "Cluster",
    "NodeInfo",
    "ComponentPlacement",
    "FlexiblePlacementStrategy",
    "PackedPlacementStrategy",
    "Placement",
    "PlacementStrategy",
    "parse_gpu_spec",
    "GroupHandle",
    "Worker",
    "WorkerError",
    "WorkerGroup",
]
