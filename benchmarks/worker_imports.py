"""Import time of each worker process's module, in fresh interpreters: what a worker pays before its first line runs.

For each worker module (and torch alone, and torch with torch.distributed.tensor, FSDP2's DTensor module, which
scheduler/offload.py no longer imports), `--repeats` fresh `python -c "import <module>"` processes; the table gives
the median seconds and whether the module pulled torch.distributed.tensor in.

    python benchmarks/worker_imports.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_args import positive_int  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = {
    "torch": "torch",
    "torch + torch.distributed.tensor": "torch, torch.distributed.tensor",
    "env worker": "rlinf_embodied.workers.env_worker",
    "rollout worker": "rlinf_embodied.workers.rollout_worker",
    "actor worker (FSDP2)": "rlinf_embodied.workers.actor_worker",
}
PROBE = """
import json, sys, time
start = time.perf_counter()
import {modules}
print(json.dumps([time.perf_counter() - start, "torch.distributed.tensor" in sys.modules]))
"""


def import_seconds(modules: str) -> tuple[float, bool]:
    """One fresh interpreter's import of `modules`: (seconds, whether torch.distributed.tensor was imported)."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(modules=modules)], capture_output=True, text=True, cwd=ROOT, check=True
    )
    seconds, dtensor = json.loads(result.stdout.strip().splitlines()[-1])
    return seconds, dtensor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=positive_int, default=5, help="fresh interpreters per module")
    args = parser.parse_args()
    rows = []
    for label, modules in MODULES.items():
        runs = [import_seconds(modules) for _ in range(args.repeats)]
        rows.append((label, statistics.median(s for s, _ in runs), runs[0][1]))
    torch_alone = rows[0][1]
    print(f"| module ({args.repeats} fresh interpreters each) | median import s | x torch alone | imports DTensor |")
    print("|---|---|---|---|")
    for label, seconds, dtensor in rows:
        print(f"| {label} | {seconds:.2f} | {seconds / torch_alone:.2f} | {'yes' if dtensor else 'no'} |")


if __name__ == "__main__":
    main()
