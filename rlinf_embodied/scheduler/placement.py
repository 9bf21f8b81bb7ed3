"""Where each component's processes run: GPU-id specs, placement strategies, per-process metadata.

Global GPU id = node_rank * num_gpus_per_node + local id. A spec is "all", one id ("3"), a list
("0,2,3"), a range ("0-3") or a mix ("0-3,5,7"); integers and lists of integers are accepted too
(Hydra turns "3" into 3).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Iterable, Sequence


@dataclass(frozen=True)
class Placement:
    """Where one process of a worker group runs."""

    rank: int
    world_size: int
    node_rank: int
    local_gpu_ids: tuple[int, ...]  # ids on its node
    global_gpu_ids: tuple[int, ...]
    local_rank: int  # index among this group's processes on the same node
    local_world_size: int

    @property
    def cuda_visible_devices(self) -> str:
        """The CUDA_VISIBLE_DEVICES this process gets on real GPUs ("" when it has none)."""
        return ",".join(str(i) for i in self.local_gpu_ids)


def _is_int(value: Any) -> bool:
    """A plain integer: bools are ints to Python, but True as a GPU id or a count is a mistake."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_in_cluster(gpu_id: int, num_gpus_per_node: int, num_nodes: int, what: str) -> None:
    total = num_gpus_per_node * num_nodes
    if not 0 <= gpu_id < total:
        raise ValueError(
            f"{what} needs GPU id {gpu_id}, but the cluster has {total} GPUs "
            f"({num_nodes} node(s) x {num_gpus_per_node} GPUs): valid ids are 0-{total - 1}"
        )


def _placements_from_gpu_lists(
    gpu_lists: Sequence[Sequence[int]], num_gpus_per_node: int, num_nodes: int, what: str
) -> list[Placement]:
    """Per-process global GPU lists -> Placement records (a process's GPUs must share one node)."""
    nodes = []
    for gpus in gpu_lists:
        if not gpus:
            raise ValueError(f"{what}: a process was given no GPUs")
        for gpu in gpus:
            _check_in_cluster(gpu, num_gpus_per_node, num_nodes, what)
        node_ids = {gpu // num_gpus_per_node for gpu in gpus}
        if len(node_ids) != 1:
            raise ValueError(
                f"{what}: GPUs {list(gpus)} of one process span nodes {sorted(node_ids)}; "
                f"a process's GPUs must be on one node ({num_gpus_per_node} GPUs per node)"
            )
        nodes.append(node_ids.pop())
    world_size = len(gpu_lists)
    placements = []
    for rank, (gpus, node) in enumerate(zip(gpu_lists, nodes)):
        same_node = [r for r, n in enumerate(nodes) if n == node]
        placements.append(
            Placement(
                rank=rank,
                world_size=world_size,
                node_rank=node,
                local_gpu_ids=tuple(g % num_gpus_per_node for g in gpus),
                global_gpu_ids=tuple(gpus),
                local_rank=same_node.index(rank),
                local_world_size=len(same_node),
            )
        )
    return placements


class PlacementStrategy(ABC):
    @abstractmethod
    def placements(self, num_gpus_per_node: int, num_nodes: int = 1) -> list[Placement]:
        """One Placement per process, rank order; ValueError if the cluster lacks a GPU it needs."""


class PackedPlacementStrategy(PlacementStrategy):
    """Contiguous global GPUs start..end (inclusive): k processes per GPU, or k GPUs per process."""

    def __init__(self, start_gpu: int, end_gpu: int, num_processes_per_gpu: int = 1, num_gpus_per_process: int = 1):
        arguments = {
            "start_gpu": start_gpu,
            "end_gpu": end_gpu,
            "num_processes_per_gpu": num_processes_per_gpu,
            "num_gpus_per_process": num_gpus_per_process,
        }
        for what, value in arguments.items():
            if not _is_int(value):
                raise ValueError(
                    f"PackedPlacementStrategy: {what}={value!r} of type {type(value).__name__} is not an integer; "
                    "GPU ids and counts are ints"
                )
        if start_gpu < 0 or end_gpu < start_gpu:
            raise ValueError(f"PackedPlacementStrategy({start_gpu}, {end_gpu}): need 0 <= start_gpu <= end_gpu")
        if num_processes_per_gpu < 1 or num_gpus_per_process < 1:
            raise ValueError(
                f"num_processes_per_gpu={num_processes_per_gpu}, num_gpus_per_process="
                f"{num_gpus_per_process}: both must be >= 1"
            )
        if num_processes_per_gpu > 1 and num_gpus_per_process > 1:
            raise ValueError("set num_processes_per_gpu or num_gpus_per_process above 1, not both")
        count = end_gpu - start_gpu + 1
        if count % num_gpus_per_process:
            raise ValueError(
                f"{count} GPUs ({start_gpu}-{end_gpu}) do not split into processes of "
                f"num_gpus_per_process={num_gpus_per_process}"
            )
        self.start_gpu, self.end_gpu = start_gpu, end_gpu
        self.num_processes_per_gpu, self.num_gpus_per_process = num_processes_per_gpu, num_gpus_per_process

    def gpu_lists(self) -> list[list[int]]:
        gpus = list(range(self.start_gpu, self.end_gpu + 1))
        if self.num_gpus_per_process > 1:
            k = self.num_gpus_per_process
            return [gpus[i : i + k] for i in range(0, len(gpus), k)]
        return [[gpu] for gpu in gpus for _ in range(self.num_processes_per_gpu)]

    def placements(self, num_gpus_per_node: int, num_nodes: int = 1) -> list[Placement]:
        return _placements_from_gpu_lists(self.gpu_lists(), num_gpus_per_node, num_nodes, repr(self))

    def __repr__(self) -> str:
        return (
            f"PackedPlacementStrategy({self.start_gpu}-{self.end_gpu}, processes_per_gpu="
            f"{self.num_processes_per_gpu}, gpus_per_process={self.num_gpus_per_process})"
        )


class FlexiblePlacementStrategy(PlacementStrategy):
    """An explicit list of global GPU ids per process: [[0], [2], [3]] or [[0, 1], [4, 5]]."""

    def __init__(self, gpu_ids_per_process: Sequence[Sequence[int]]):
        if not isinstance(gpu_ids_per_process, (list, tuple)) or not gpu_ids_per_process:
            raise ValueError(
                f"FlexiblePlacementStrategy({gpu_ids_per_process!r}): give a non-empty list with one list of "
                "GPU ids per process, e.g. [[0], [2], [3]]"
            )
        for rank, gpus in enumerate(gpu_ids_per_process):
            if not isinstance(gpus, (list, tuple)):
                raise ValueError(
                    f"FlexiblePlacementStrategy: process {rank}'s GPUs {gpus!r} are not a list of GPU ids; "
                    "give one list per process, e.g. [[0], [2], [3]]"
                )
        self.gpu_ids_per_process = [list(gpus) for gpus in gpu_ids_per_process]
        for rank, gpus in enumerate(self.gpu_ids_per_process):
            for gpu in gpus:
                if not _is_int(gpu) or gpu < 0:
                    raise ValueError(f"FlexiblePlacementStrategy: GPU id {gpu!r} is not a non-negative integer")
            repeated = sorted({gpu for gpu in gpus if gpus.count(gpu) > 1})
            if repeated:
                raise ValueError(
                    f"FlexiblePlacementStrategy: process {rank} lists GPU(s) {repeated} more than once "
                    f"in {gpus}; give each GPU of a process once"
                )

    def placements(self, num_gpus_per_node: int, num_nodes: int = 1) -> list[Placement]:
        return _placements_from_gpu_lists(self.gpu_ids_per_process, num_gpus_per_node, num_nodes, repr(self))

    def __repr__(self) -> str:
        return f"FlexiblePlacementStrategy({self.gpu_ids_per_process})"


# ---- specs ----------------------------------------------------------------------------------------
SPEC_HELP = 'valid forms: "all", "3", "0,2,3", "0-3", "0-3,5,7" (global ids, node * gpus_per_node + local id)'


_ASCII_DIGITS = re.compile(r"[0-9]+")


def _parse_int(token: str, spec: Any) -> int:
    """ASCII digits only: int() also reads "+1", "1_0" (as 10) and other scripts' digits ("１", "٣")."""
    if token.startswith("-") and _ASCII_DIGITS.fullmatch(token[1:]):
        raise ValueError(f"GPU spec {spec!r}: {token!r} is negative; GPU ids start at 0")
    if not _ASCII_DIGITS.fullmatch(token):
        raise ValueError(f"GPU spec {spec!r}: {token!r} is not an integer; {SPEC_HELP}")
    return int(token)


def parse_gpu_spec(spec: Any, total_gpus: int) -> list[int]:
    """A GPU-id spec -> sorted global ids; ValueError quoting the bad token otherwise."""
    if isinstance(spec, bool):
        raise ValueError(f"GPU spec {spec!r} is not valid; {SPEC_HELP}")
    if isinstance(spec, int):
        tokens = [str(spec)]
    elif isinstance(spec, (list, tuple)):
        if not spec:
            raise ValueError(f"GPU spec {spec!r} is empty; {SPEC_HELP}")
        tokens = [str(item) for item in spec]
    elif isinstance(spec, str):
        if spec.strip().lower() == "all":
            return list(range(total_gpus))
        tokens = spec.split(",")
    else:
        raise ValueError(f"GPU spec {spec!r} of type {type(spec).__name__} is not valid; {SPEC_HELP}")
    ids: list[int] = []
    for raw in tokens:
        token = raw.strip()
        if not token:
            raise ValueError(f"GPU spec {spec!r} has an empty item; {SPEC_HELP}")
        if "-" in token.lstrip("-"):
            first, _, last = token.lstrip("-").partition("-")
            if token.startswith("-"):
                first = "-" + first
            if not first.strip() or not last.strip():
                raise ValueError(
                    f"GPU spec {spec!r}: range {token!r} lacks its {'end' if first.strip() else 'start'}; {SPEC_HELP}"
                )
            start, end = _parse_int(first.strip(), spec), _parse_int(last.strip(), spec)
            if end < start:
                raise ValueError(f"GPU spec {spec!r}: range {token!r} is reversed; write it as {end}-{start}")
            ids.extend(range(start, end + 1))
        else:
            ids.append(_parse_int(token, spec))
    for gpu in ids:
        if gpu >= total_gpus:
            raise ValueError(
                f"GPU spec {spec!r}: id {gpu} is beyond the cluster's {total_gpus} GPUs (valid ids 0-{total_gpus - 1})"
            )
    duplicates = sorted({g for g in ids if ids.count(g) > 1})
    if duplicates:
        raise ValueError(f"GPU spec {spec!r} lists GPU(s) {duplicates} more than once")
    return sorted(ids)


def _is_contiguous(ids: Sequence[int]) -> bool:
    return list(ids) == list(range(ids[0], ids[0] + len(ids)))


class ComponentPlacement:
    """Component name -> global GPU ids, from a config mapping like {"env,rollout": "0-1", "actor": "all"}."""

    def __init__(
        self,
        component_placement: Mapping,
        num_gpus: int,
        num_nodes: int = 1,
        component_names: Iterable[str] | None = None,
    ):
        if not (_is_int(num_gpus) and _is_int(num_nodes)) or num_gpus < 1 or num_nodes < 1:
            raise ValueError(f"num_gpus={num_gpus!r} (per node), num_nodes={num_nodes!r}: both must be integers >= 1")
        if not isinstance(component_placement, Mapping):
            raise ValueError(
                f"component_placement={component_placement!r} of type {type(component_placement).__name__} is "
                "not a mapping; give component(s) -> GPU spec, e.g. {'env,rollout,actor': 'all'}"
            )
        if not component_placement:
            raise ValueError("component_placement is empty; give e.g. {'env,rollout,actor': 'all'}")
        self.num_gpus_per_node, self.num_nodes = num_gpus, num_nodes
        allowed = list(component_names) if component_names is not None else None
        self._gpus: dict[str, list[int]] = {}
        self._entries: list[set[int]] = []  # one GPU set per key ("env,rollout" is one entry)
        for key, spec in component_placement.items():
            names = [name.strip() for name in str(key).split(",")]
            ids = parse_gpu_spec(spec, num_gpus * num_nodes)
            self._entries.append(set(ids))
            for name in names:
                self._add(name, ids, key, allowed)

    def _add(self, name: str, ids: list[int], key: Any, allowed: list[str] | None) -> None:
        if not name:
            raise ValueError(f"component_placement key {key!r} has an empty component name")
        if allowed is not None and name not in allowed:
            raise ValueError(f"component_placement key {key!r}: unknown component {name!r}; valid: {allowed}")
        if name in self._gpus:
            raise ValueError(
                f"component {name!r} is placed twice (again in key {key!r}); place it once. Hydra merges a "
                f"mapping given on the command line into the cluster config's keys, so there use one key per "
                f"component (cluster.component_placement.{name}=0), as configs/cluster/*.yaml do"
            )
        self._gpus[name] = ids

    @property
    def components(self) -> list[str]:
        return list(self._gpus)

    def gpus(self, name: str) -> list[int]:
        if name not in self._gpus:
            raise ValueError(f"component {name!r} has no placement; placed components: {self.components}")
        return list(self._gpus[name])

    @property
    def mode(self) -> str:
        """ "collocated": every component on the same GPUs; "disaggregated": the entries (components on the
        same GPUs, in one key like "env,rollout" or in several keys, form one entry) use disjoint GPUs;
        "hybrid": anything else."""
        if all(set(ids) == set(self._gpus[self.components[0]]) for ids in self._gpus.values()):
            return "collocated"
        sets = []  # components on exactly the same GPUs count as one entry, in one key or in several
        for entry in self._entries:
            if entry not in sets:
                sets.append(entry)
        if len(sets) == 1:
            return "collocated"
        if sum(len(s) for s in sets) == len(set().union(*sets)):
            return "disaggregated"
        return "hybrid"

    def strategy(self, name: str, num_processes_per_gpu: int = 1) -> PlacementStrategy:
        """One process per GPU by default; packed when the GPUs are contiguous, explicit otherwise."""
        if not _is_int(num_processes_per_gpu) or num_processes_per_gpu < 1:  # before: a message per GPU layout
            raise ValueError(
                f"ComponentPlacement.strategy({name!r}, num_processes_per_gpu={num_processes_per_gpu!r}): "
                "num_processes_per_gpu must be an integer >= 1"
            )
        ids = self.gpus(name)
        if _is_contiguous(ids):
            return PackedPlacementStrategy(ids[0], ids[-1], num_processes_per_gpu=num_processes_per_gpu)
        return FlexiblePlacementStrategy([[gpu] for gpu in ids for _ in range(num_processes_per_gpu)])

    def __repr__(self) -> str:
        return f"ComponentPlacement({self._gpus}, mode={self.mode!r})"
