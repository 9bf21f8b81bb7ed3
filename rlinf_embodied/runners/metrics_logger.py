"""Per-iteration metrics: one JSON line per iteration in metrics.jsonl, plus TensorBoard scalars."""

from __future__ import annotations

import contextlib
import json
import math
import os
from typing import Any, Iterator

from torch.utils.tensorboard import SummaryWriter

INDEX_KEYS = ("iteration", "step")  # the record's x-axis (SFT's optimizer steps), not scalars of their own


METRICS_FILE, TENSORBOARD_DIR, CHECKPOINTS_DIR = "metrics.jsonl", "tensorboard", "checkpoints"


def run_outputs(output_dir: str) -> list[str]:
    """What a run left in `output_dir`: "metrics.jsonl" (with a line), "checkpoints/" (with an entry), "tensorboard/
    events" (an event file with a scalar). An empty metrics.jsonl or an event file without scalars (a run stopped
    before its first iteration) is not counted: nothing of a run would be lost or mixed."""
    found = []
    metrics = os.path.join(output_dir, METRICS_FILE)
    if os.path.isfile(metrics) and os.path.getsize(metrics) > 0:
        found.append(METRICS_FILE)
    checkpoints = os.path.join(output_dir, CHECKPOINTS_DIR)
    if os.path.isdir(checkpoints) and os.listdir(checkpoints):
        found.append(f"{CHECKPOINTS_DIR}/")
    if _has_scalar_events(os.path.join(output_dir, TENSORBOARD_DIR)):
        found.append(f"{TENSORBOARD_DIR}/ events")
    return found


def _has_scalar_events(log_dir: str) -> bool:
    if not os.path.isdir(log_dir):
        return False
    for root, _, files in os.walk(log_dir):
        for name in files:
            if "tfevents" in name and _event_file_has_values(os.path.join(root, name)):
                return True
    return False


def _event_file_has_values(path: str) -> bool:
    try:
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

        return any(event.summary.value for event in EventFileLoader(path).Load())
    except Exception:  # noqa: BLE001 - unreadable: count it, as a run's file
        return True


class OutputDirInUse(FileExistsError):
    """A run's output directory already holds another run's outputs, or another run writes into it now."""


@contextlib.contextmanager
def output_dir_claimed(output_dir: str, setting: str, resume: str | None, resume_setting: str) -> Iterator[None]:
    """claim_output_dir for the body of a `with`: the directory is freed when it ends."""
    claim = claim_output_dir(output_dir, setting, resume, resume_setting)
    try:
        yield
    finally:
        os.close(claim)


def claim_output_dir(output_dir: str, setting: str, resume: str | None, resume_setting: str) -> int:
    """Take `output_dir` for one run, or refuse (OutputDirInUse) where it holds a run's outputs (run_outputs) and
    the run does not resume from a checkpoint inside it, or where another run holds it now (two jobs started in the
    same second under Hydra's default outputs/<date>/<time>, or given one directory). Before, the new run silently
    truncated metrics.jsonl and mixed its checkpoints and TensorBoard events with the old run's.

    Returns a descriptor holding an exclusive flock on the directory: keep it open for the run (closing it, or the
    process's end, frees the directory). `setting`/`resume_setting` name the settings in messages
    ("runner.output_dir", "runner.resume")."""
    import fcntl

    fd = os.open(output_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputDirInUse(
                f"{setting}={output_dir!r} is in use by another run writing into it now (e.g. two jobs started in "
                f"the same second under Hydra's default outputs/<date>/<time>); give each run its own {setting}"
            ) from None
        found = run_outputs(output_dir)
        if found and not (resume and _is_inside(resume, output_dir)):
            latest = _latest_checkpoint(output_dir)
            example = latest or os.path.join(output_dir, CHECKPOINTS_DIR, "<checkpoint>")
            resumed = (
                f" ({resume_setting}={resume!r} is not a checkpoint in it: a run resumed from another directory's "
                f"checkpoint writes into a new {setting})"
                if resume
                else ""
            )
            raise OutputDirInUse(
                f"{setting}={output_dir!r} already holds a run's outputs ({', '.join(found)}){resumed}: a new run "
                f"there would overwrite its metrics.jsonl and mix its checkpoints and TensorBoard events with the new "
                f"run's. Give a new directory ({setting}=<new dir>), or continue that run with "
                f"{resume_setting}={example} {setting}={output_dir}"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_inside(path: str, directory: str) -> bool:
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory and path != directory


def _latest_checkpoint(output_dir: str) -> str | None:
    """The checkpoint of the last iteration (or step) in output_dir/checkpoints, else any checkpoint, else None."""
    checkpoints = os.path.join(output_dir, CHECKPOINTS_DIR)
    if not os.path.isdir(checkpoints):
        return None
    names = sorted(name for name in os.listdir(checkpoints) if os.path.isdir(os.path.join(checkpoints, name)))
    numbered = [name for name in names if name.rsplit("_", 1)[-1].isdigit()]
    chosen = (numbered or names or [None])[-1]
    return None if chosen is None else os.path.join(checkpoints, chosen)


class MetricsLogger:
    """`resume_after=N` continues a run resumed from a checkpoint of iteration (or step) N: the lines it had
    logged after N are dropped from metrics.jsonl and TensorBoard, so every iteration appears once. Without it the
    directory must hold no run's metrics (run_outputs): before, a new run truncated metrics.jsonl and wrote its
    TensorBoard curves over the old run's."""

    def __init__(self, output_dir: str, resume_after: int | None = None):
        os.makedirs(output_dir, exist_ok=True)
        self.path = os.path.join(output_dir, METRICS_FILE)
        if resume_after is None:
            logged = [found for found in run_outputs(output_dir) if not found.startswith(CHECKPOINTS_DIR)]
            if logged:
                raise FileExistsError(
                    f"{output_dir!r} already holds a run's metrics ({', '.join(logged)}); they are not overwritten: "
                    "write into a new output directory, or resume that run from one of its checkpoints"
                )
        kept = [] if resume_after is None else _records_up_to(self.path, resume_after)
        self._file = open(self.path, "w")
        self._file.writelines(kept)
        self._file.flush()
        purge = None if resume_after is None else resume_after + 1
        self._writer = SummaryWriter(log_dir=os.path.join(output_dir, TENSORBOARD_DIR), purge_step=purge)

    def log(self, iteration: int, metrics: dict[str, Any]) -> None:
        record = {"iteration": iteration, **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for key, value in record.items():
            if key not in INDEX_KEYS and isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(key.replace(".", "/"), value, iteration)
        self._writer.flush()

    def close(self) -> None:
        self._file.close()
        self._writer.close()


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value


def _records_up_to(path: str, last: int) -> list[str]:
    """The lines of metrics.jsonl at `path` whose iteration is <= last (none if the file does not exist)."""
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [line for line in f if line.strip() and json.loads(line)["iteration"] <= last]
