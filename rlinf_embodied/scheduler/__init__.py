"""Ray scheduler: cluster, placement, worker groups, channels, point-to-point, offload, weight sync.

Names are imported on first use (PEP 562), so a process that needs only one module (a channel's
actor process imports scheduler/channel.py) does not pay for torch.distributed and the rest.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Channel": ".channel",
    "ChannelGoneError": ".channel",
    "ChannelItemError": ".channel",
    "Cluster": ".cluster",
    "NodeInfo": ".cluster",
    "ComponentPlacement": ".placement",
    "FlexiblePlacementStrategy": ".placement",
    "PackedPlacementStrategy": ".placement",
    "Placement": ".placement",
    "PlacementStrategy": ".placement",
    "parse_gpu_spec": ".placement",
    "GroupHandle": ".worker",
    "Worker": ".worker",
    "WorkerError": ".worker",
    "WorkerGroup": ".worker",
    "wait_all": ".worker",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
