"""SIGINT (Ctrl-C) and SIGTERM (a scheduler's preemption) in the driver: stop cleanly, resumable.

The first signal asks the training loop to stop after the current iteration: it finishes that iteration,
saves a checkpoint, shuts the workers and Ray down, and the entry point prints the `runner.resume=...`
command and exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM). A second signal stops
at once (no checkpoint); further ones are ignored while the processes are shut down.

Ray's own processes block SIGINT and the workers run in their own process groups, so a Ctrl-C in the
terminal reaches only the driver; the driver then shuts everything down itself.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import threading
from typing import Callable, Iterator, Optional

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A second stop signal: leave at once (a BaseException, so `except Exception` does not swallow it)."""

    def __init__(self, signum: int):
        super().__init__(f"{signal.Signals(signum).name} received twice: stopping without a checkpoint")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopRequest:
    """Records the first stop signal; the runner polls `requested` between iterations and sets
    `checkpoint` / `iteration` to what it saved."""

    def __init__(
        self,
        work: str = "iteration",
        then: str = "then saving a checkpoint (send it again to stop at once, without one)",
    ) -> None:
        self.work = work  # what the first signal lets finish, for its message
        self.then = then  # what follows it, for the same message
        self.signum: Optional[int] = None
        self.forced = False
        self.checkpoint: Optional[str] = None  # the resumable checkpoint the stopped run left
        self.iteration: Optional[int] = None  # the last iteration that checkpoint holds
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_code(self) -> int:
        return 128 + self.signum if self.signum is not None else 0

    def poll(self, resumed_from: Optional[str] = None) -> bool:
        """Whether a stop was requested (the runners ask between units of work). A run stopped before it saved
        anything still resumes from the checkpoint it started from, `resumed_from`."""
        if self.signum is None:
            return False
        if self.checkpoint is None and resumed_from:
            self.checkpoint = resumed_from
        return True

    def saved(self, checkpoint: str, unit: int) -> None:
        """A checkpoint of the finished `unit` (iteration or step) exists: the run can resume from it."""
        self.checkpoint, self.iteration = checkpoint, unit

    def save_unless_saved(self, unit: int, this_run_did_it: bool, save: Callable[[], str]) -> None:
        """A stop that arrives between two units: checkpoint the last finished `unit` with `save()`, unless this
        run did no unit yet or that unit is already saved."""
        if this_run_did_it and self.iteration != unit:
            self.saved(save(), unit)

    def request(self, signum: int) -> None:
        """What the handler does; tests call it directly."""
        if self.signum is None:
            self.signum = signum
            os.write(
                2,
                (
                    f"\n{signal.Signals(signum).name} received: finishing the current {self.work}, {self.then}\n"
                ).encode(),
            )
            return
        if not self.forced:
            self.forced = True
            raise Interrupted(signum)

    def _handle(self, signum, frame) -> None:
        self.request(signum)

    def install(self) -> None:
        """Handle STOP_SIGNALS (main thread only; call again after ray.init, which sets its own SIGTERM handler)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            previous = signal.signal(signum, self._handle)
            self._previous.setdefault(signum, previous)

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    @contextlib.contextmanager
    def handling(self) -> Iterator["StopRequest"]:
        self.install()
        try:
            yield self
        finally:
            self.restore()


def continue_command(module: str, checkpoint: Optional[str], resume_key: str, output_key: str, output_dir: str):
    """`resume_command` for a stopped run of `module` that left `checkpoint` (None: nothing to resume from)."""
    if not checkpoint:
        return None
    return resume_command(module, {resume_key: checkpoint, output_key: output_dir})


def resume_command(module: str, settings: dict[str, str]) -> str:
    """The command line that continues this run: its Hydra overrides, with `settings` (e.g. the resume
    checkpoint and the output directory) replacing any override of the same keys."""
    from hydra.core.hydra_config import HydraConfig

    try:
        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # not under Hydra
        overrides = []
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in settings]
    args = kept + [f"{key}={value}" for key, value in settings.items()]
    return " ".join([f"python -m {module}"] + [shlex.quote(a) for a in args])


def report_stop(stop: StopRequest, unit: str, command: Optional[str]) -> None:
    """After a stopped run: print how to continue it (`command`, or that nothing was saved), then exit with
    128 + the signal number."""
    if command:
        after = f" after {unit} {stop.iteration}" if stop.iteration is not None else ""
        print(f"stopped by {stop.signal_name}{after}; resume with: {command}", flush=True)
    else:
        print(f"stopped by {stop.signal_name} before the first {unit} finished: nothing to resume", flush=True)
    raise SystemExit(stop.exit_code)


def report_forced_stop(stop: StopRequest, interrupted: Interrupted, command: Optional[str]) -> None:
    """After a second signal: no checkpoint of the current work; `command` continues from the last one."""
    print(
        f"stopped by {stop.signal_name} twice: no checkpoint saved for the current work"
        + (f"; resume from the last one: {command}" if command else ""),
        flush=True,
    )
    raise SystemExit(interrupted.exit_code) from None
