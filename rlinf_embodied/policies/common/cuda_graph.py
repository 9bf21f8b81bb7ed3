"""CUDA graphs of a policy's `act` (`act_cuda_graphs`): its parts replayed without per-kernel Python and
launch overhead.

At small batches a real-size VLA `act` is launch-bound (issue 13: pi0-3b at 59x its weight-reading floor
at batch 1, flat from batch 1 to 8): every layer runs dozens of small kernels, each launched from Python.
`GraphCache` captures a part of `act` once per (part, batch bucket, input layout) and replays it as one
launch. The parts: the whole denoising loop (all steps, the Flow-SDE noise, the log-probs) of the flow
policies and pi0's prefix (vision tower and VLM); OpenVLA's whole decode (vision, prompt, one step per
action token over a static KV cache).

How replay stays correct:
- A graph reads static buffers: `run` copies the inputs into them, replays, and returns copies of the
  outputs. Host work (tokenizing, moving observations to the device) stays outside the graphs.
- A graph holds the addresses of the weights it was captured with. Weights that are replaced rather
  than copied in place (an onload after an offload, a module moved between devices) change those
  addresses: every graph is then dropped and recaptured.
- Batches are padded to a power of two by repeating their last row (the padding rows' outputs are
  dropped), so a runner whose batch varies captures a few graphs, not one per size.
- Noise inside a graph comes from PyTorch's graph-safe CUDA generator: each replay draws fresh noise.
- `evaluate` stays eager and recomputes the same transitions from the stored chain, so `act` and
  `evaluate` agree as in eager mode.

`act_compile` goes one step further. A graph removes the launch overhead but still replays every small
kernel: pi0-3b at batch 1 is about 7,000 of them (18 layers x 10 steps x ~40), 58 ms on an H200 against a
2.8 ms weight-reading floor. With it, each part is compiled with torch.compile (inductor fuses the
elementwise chains of RMSNorm, rotary embedding, GeGLU and the residuals) before the capture, and the
graph replays the fused kernels. The compiled part's numerics differ from eager by rounding, so `act` and
`evaluate` agree to rounding rather than exactly; `algorithm.recompute_log_probs=true` makes PPO's first
ratio exact again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..flow.utils import select_rows

logger = logging.getLogger(__name__)


def batch_bucket(batch: int) -> int:
    """The padded batch a graph is captured for: the next power of two (1, 2, 4, 8, ...)."""
    if batch < 1:
        raise ValueError(f"batch={batch} must be >= 1")
    return 1 << (batch - 1).bit_length()


def pad_batch(tree: Any, batch: int, bucket: int, device: torch.device) -> Any:
    """Every batch-first tensor in `tree` padded from `batch` to `bucket` rows by repeating the last row."""
    if bucket == batch:
        return tree
    rows = torch.cat([torch.arange(batch, device=device), torch.full((bucket - batch,), batch - 1, device=device)])
    return select_rows(tree, rows)


def tensor_leaves(tree: Any) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in tensor_leaves(tree[key])]
    if isinstance(tree, (list, tuple)):
        return [leaf for item in tree for leaf in tensor_leaves(item)]
    return []


def first_rows_copy(tree: Any, batch: int) -> Any:
    """A copy of `tree` with every tensor cut to its first `batch` rows (a graph's outputs are overwritten
    by its next replay)."""
    device = tensor_leaves(tree)[0].device
    return select_rows(tree, torch.arange(batch, device=device))  # index_select copies


def layout(tree: Any) -> tuple:
    """Shapes and dtypes of the tensors in `tree`: a graph replays only on inputs of the same layout."""
    return tuple((tuple(leaf.shape), leaf.dtype) for leaf in tensor_leaves(tree))


def weight_addresses(module: nn.Module) -> tuple:
    return tuple((t.data_ptr(), t.dtype) for t in (*module.parameters(), *module.buffers()))


@dataclass
class CapturedGraph:
    graph: torch.cuda.CUDAGraph
    static_inputs: Any
    output: Any


class GraphCache:
    """Captured parts of one policy's `act`, keyed by part name, batch bucket and input layout."""

    def __init__(self, max_graphs: int = 16, warmup_runs: int = 2, compile_parts: bool = False) -> None:
        self.max_graphs = max_graphs
        self.warmup_runs = warmup_runs
        self.compile_parts = compile_parts  # act_compile: torch.compile each part before its capture
        self.graphs: dict[tuple, CapturedGraph] = {}
        self.addresses: tuple = ()
        self.pool = None  # one memory pool shared by all graphs
        self.captures = 0  # how many graphs were captured (recaptures included)

    def run(self, module: nn.Module, part: tuple, fn: Callable[[Any], Any], inputs: Any, batch: int) -> Any:
        """fn(inputs) from a captured graph. `part` names the computation and whatever else its graph depends
        on beyond the inputs' layout (e.g. which denoising steps are noisy); `batch` is the inputs' row count."""
        addresses = weight_addresses(module)
        if addresses != self.addresses:  # weights moved: every graph points at stale memory
            self.release()
            self.addresses = addresses
        bucket = batch_bucket(batch)
        device = tensor_leaves(inputs)[0].device
        padded = pad_batch(inputs, batch, bucket, device)
        key = (part, bucket, torch.is_inference_mode_enabled(), layout(padded))
        captured = self.graphs.get(key)
        if captured is None:
            if len(self.graphs) >= self.max_graphs:  # a pathological mix of shapes: stay eager
                return fn(inputs)
            captured = self.graphs[key] = self.capture(fn, padded, part)
        for static, value in zip(tensor_leaves(captured.static_inputs), tensor_leaves(padded)):
            static.copy_(value)
        captured.graph.replay()
        return first_rows_copy(captured.output, batch)

    def release(self) -> None:
        """Drop every graph and their memory pool (an offload calls it, so the pool's memory goes back).

        The pool goes with the graphs: PyTorch lets a new capture share a pool only while some graph still
        holds it. Reusing the handle of a pool whose graphs are gone, while blocks allocated during their
        captures live on (OpenVLA's KV cache buffers), fails with `use_count > 0 INTERNAL ASSERT FAILED`."""
        self.graphs.clear()
        self.pool = None
        self.addresses = ()

    def count(self, part_name: str) -> int:
        """Graphs held now for the parts whose name (part[0]) is `part_name`."""
        return sum(key[0][0] == part_name for key in self.graphs)

    def capture(self, fn: Callable[[Any], Any], inputs: Any, part: tuple) -> CapturedGraph:
        device = tensor_leaves(inputs)[0].device
        static = select_rows(inputs, torch.arange(tensor_leaves(inputs)[0].shape[0], device=device))  # a copy
        start = time.perf_counter()
        fn = compiled_part(fn, part) if self.compile_parts else fn
        # Warm-up on a side stream (PyTorch's capture recipe): library handles, workspaces and lazily
        # initialised kernels are set up outside the capture.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup_runs):
                fn(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: a worker's other threads (channels, weight sync) may use CUDA while this one captures
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
                output = fn(static)
        except RuntimeError as error:  # e.g. a host sync or a host-to-device copy inside the part
            raise RuntimeError(
                f"act_cuda_graphs: capturing {part[0]} failed ({error}); "
                "set policy.overrides.act_cuda_graphs=false to run act eagerly"
            ) from error
        self.pool = graph.pool()
        self.captures += 1
        logger.info(
            "captured %s%s for a batch of %d in %.1f s",
            part[0],
            " (compiled)" if self.compile_parts else "",
            tensor_leaves(inputs)[0].shape[0],
            time.perf_counter() - start,
        )
        return CapturedGraph(graph=graph, static_inputs=static, output=output)


def compiled_part(fn: Callable[[Any], Any], part: tuple, backend: str = "inductor") -> Callable[[Any], Any]:
    """`fn` compiled with torch.compile for static shapes (each batch bucket is its own graph anyway). The
    compilation runs on the first call, inside the capture's warm-up; its failure names the way back."""
    # Every capture compiles a new closure of the same code: raise dynamo's per-code recompile limit above
    # the graphs a cache may hold, or the later buckets would silently run (and be captured) uncompiled.
    limit_name = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    setattr(torch._dynamo.config, limit_name, max(getattr(torch._dynamo.config, limit_name), 64))
    compiled = torch.compile(fn, dynamic=False, backend=backend)

    def run(inputs: Any) -> Any:
        try:
            return compiled(inputs)
        except Exception as error:  # inductor/dynamo raise their own exception types
            raise RuntimeError(
                f"act_compile: compiling {part[0]} failed ({type(error).__name__}: {str(error)[:300]}); "
                "set policy.overrides.act_compile=false to capture the eager kernels"
            ) from error

    return run


def act_graph_cache(policy: nn.Module) -> GraphCache | None:
    """The CUDA graphs `policy.act` replays its parts from: its config's act_cuda_graphs is on, autograd
    is off and the policy sits on a CUDA device; else None (eager). Warns once on a CPU."""
    if not policy.config.act_cuda_graphs or torch.is_grad_enabled():
        return None
    device = next(policy.parameters()).device
    if device.type != "cuda":
        if not getattr(policy, "_warned_cpu_graphs", False):
            logger.warning("%s: act_cuda_graphs has no effect on %s; act runs eagerly", policy.name, device)
            policy._warned_cpu_graphs = True
        return None
    if getattr(policy, "_graph_cache", None) is None:
        policy._graph_cache = GraphCache(compile_parts=getattr(policy.config, "act_compile", False))
    return policy._graph_cache


def release_act_graphs(policy: nn.Module) -> None:
    """Drop the CUDA graphs `policy.act` captured, and their memory (no-op without act_cuda_graphs)."""
    cache = getattr(policy, "_graph_cache", None)
    if cache is not None:
        cache.release()
