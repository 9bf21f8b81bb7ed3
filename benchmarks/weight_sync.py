"""Weight sync bandwidth: WorkerGroup.sync_weights_to from an FSDP2 group of 1 or 2 ranks to a group of 1,
against a raw broadcast of the same bytes between the two processes that hold them.

The source workers shard a model of --mb MB with fully_shard and answer full_state_dict() like the
ActorWorker (get_model_state_dict, full + CPU offload); the destination copies the dict into its own
model. On 2 GPUs the sync and the raw baseline use NCCL; without CUDA (simulated GPUs) both use gloo
and the object-store path is measured too.

    python benchmarks/weight_sync.py --mb 1024          # 2 GPUs
    python benchmarks/weight_sync.py --mb 32            # CPU fallback (gloo + object store)
    python benchmarks/weight_sync.py --same-gpu --mb 14000   # collocated on 1 GPU: object store vs CUDA IPC,
                                                             # fp32 actor -> bf16 rollout (7B-sized)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_args import positive_float, positive_int  # noqa: E402

import ray  # noqa: E402
import ray.cloudpickle  # noqa: E402
import torch  # noqa: E402

from rlinf_embodied.scheduler import Cluster, FlexiblePlacementStrategy, Worker  # noqa: E402
from rlinf_embodied.scheduler import collective  # noqa: E402

WIDTH = 1024


def make_model(mb: float, device: torch.device) -> torch.nn.Module:
    layers = max(1, int(mb * 1e6 / (WIDTH * WIDTH * 4)))
    return torch.nn.Sequential(*[torch.nn.Linear(WIDTH, WIDTH, bias=False) for _ in range(layers)]).to(device)


class SyncWorker(Worker):
    def __init__(self, mb: float, shard: bool, dtype: str = "float32"):
        super().__init__()
        torch.manual_seed(0)
        self.model = make_model(mb, self.device).to(getattr(torch, dtype))
        if shard:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            fully_shard(self.model, mesh=init_device_mesh(self.device.type, (self.world_size,)))

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def device_state_dict(self) -> dict[str, torch.Tensor]:  # for a CUDA IPC sync (one unsharded rank)
        return dict(self.model.state_dict())

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state_dict)

    def num_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def checksum(self) -> float:
        """Sum of the full weights (collective over the group when they are FSDP-sharded)."""

        def full(p):
            return p.full_tensor() if hasattr(p, "full_tensor") else p

        return float(sum(full(p.detach()).float().sum() for p in self.model.parameters()))

    # raw baseline: one flat buffer broadcast from this process (rank 0) to the peer (rank 1)
    def raw_host(self) -> tuple[str, int]:
        self._store, ip, port = collective.host_store(2)
        return ip, port

    def raw_broadcast(self, ip: str, port: int, rank: int, num_bytes: int, backend: str, repeats: int) -> float:
        store = self._store if rank == 0 else collective.connect_store(ip, port, 2)
        group = collective.new_group(store, "raw", rank, 2, backend)
        device = self.device if backend == "nccl" else torch.device("cpu")
        buffer = torch.empty(num_bytes // 4, dtype=torch.float32, device=device)
        opts = torch.distributed.BroadcastOptions()
        opts.rootRank = 0
        group.broadcast([buffer], opts).wait()  # warm-up (communicator set-up)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            group.broadcast([buffer], opts).wait()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / repeats


def time_sync(src, dst, method: str, repeats: int) -> float:
    src.sync_weights_to(dst, method=method)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        src.sync_weights_to(dst, method=method)
    return (time.perf_counter() - start) / repeats


def same_gpu(mb: float, repeats: int) -> None:
    """Actor (fp32) and rollout (bf16) processes on one GPU, as collocated: object store vs CUDA IPC."""
    cluster = Cluster(num_gpus_per_node=1, simulate_gpus=True)
    if not cluster.has_real_gpus:
        raise SystemExit("--same-gpu needs a CUDA GPU (CUDA IPC between two processes on it)")
    one_gpu = FlexiblePlacementStrategy([[0]])
    src = SyncWorker.create_group(mb, False).launch(cluster, name="src", placement_strategy=one_gpu)
    dst = SyncWorker.create_group(mb, False, "bfloat16").launch(cluster, name="dst", placement_strategy=one_gpu)
    num_bytes = src.num_bytes().wait()[0]
    print(f"{'method':>13} {'sync s':>8} {'GB/s (fp32 read)':>17} {'speed-up':>9} {'ok':>3}")
    baseline = None
    for method in ("object_store", "cuda_ipc"):
        sync_s = time_sync(src, dst, method, repeats)
        baseline = baseline or sync_s
        ok = abs(dst.checksum().wait()[0] - src.checksum().wait()[0]) < 1e-2 * max(1.0, num_bytes / 4e6)
        print(
            f"{method:>13} {sync_s:>8.3f} {num_bytes / 1e9 / sync_s:>17.2f} {baseline / sync_s:>8.1f}x {'yes' if ok else 'NO':>3}"
        )
    print(f"({num_bytes / 1e6:.0f} MB of float32 weights into a bfloat16 copy per sync, {repeats} repeats averaged)")
    src.shutdown()
    dst.shutdown()
    cluster.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=positive_float, default=None, help="model MB (default 1024 on GPUs, 32 on CPU)")
    parser.add_argument("--src-sizes", default="1,2", help="source group sizes to try")
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--same-gpu", action="store_true", help="both groups on GPU 0: object store vs CUDA IPC")
    args = parser.parse_args(argv)
    if args.same_gpu:
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        return same_gpu(args.mb or 1024, args.repeats)
    real = torch.cuda.is_available() and torch.cuda.device_count() >= 2
    mb = args.mb if args.mb is not None else (1024 if real else 32)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = Cluster(num_gpus_per_node=2, simulate_gpus=True)
    backend = "nccl" if cluster.has_real_gpus else "gloo"
    methods = ["auto"] if cluster.has_real_gpus else ["collective", "object_store"]
    if not cluster.has_real_gpus:
        print("note: no 2 CUDA GPUs: simulated GPUs, gloo over TCP and the Ray object store on CPU")
    dst = SyncWorker.create_group(mb, False).launch(
        cluster, name="dst", placement_strategy=FlexiblePlacementStrategy([[1]])
    )
    print(
        f"{'src ranks':>9} {'method':>13} {'sync GB/s':>10} {'raw ' + backend + ' GB/s':>15} {'sync/raw':>9} {'ok':>3}"
    )
    for size in [int(s) for s in args.src_sizes.split(",")]:
        src = SyncWorker.create_group(mb, True).launch(
            cluster, name=f"src{size}", placement_strategy=FlexiblePlacementStrategy([[g] for g in range(size)])
        )
        num_bytes = dst.num_bytes().wait()[0]
        ip, port = src.execute_on(0).raw_host().wait()[0]
        raw = [
            src.execute_on(0).raw_broadcast(ip, port, 0, num_bytes, backend, args.repeats),
            dst.raw_broadcast(ip, port, 1, num_bytes, backend, args.repeats),
        ]
        raw_s = max(raw[0].wait()[0], raw[1].wait()[0])
        for method in methods:
            sync_s = time_sync(src, dst, method, args.repeats)
            ok = abs(dst.checksum().wait()[0] - src.checksum().wait()[0]) < 1e-3 * max(1.0, num_bytes / 4e6)
            print(
                f"{size:>9} {method:>13} {num_bytes / 1e9 / sync_s:>10.2f} {num_bytes / 1e9 / raw_s:>15.2f} "
                f"{raw_s / sync_s:>9.2f} {'yes' if ok else 'NO':>3}"
            )
        src.shutdown()
    print(f"({num_bytes / 1e6:.0f} MB of float32 weights per sync, best of {args.repeats} averaged)")
    dst.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
