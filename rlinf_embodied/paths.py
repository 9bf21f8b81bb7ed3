"""Where the Hydra configs live (`configs/` at the repository root: the package is installed editable) and where
a run writes (its output directory and log file), and the refusals that keep a run from writing over another's."""

import logging
import os
import sys
import tempfile
from typing import Any

from hydra.experimental.callback import Callback

CONFIG_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "configs"))
if not os.path.isfile(os.path.join(CONFIG_DIR, "config.yaml")):
    raise FileNotFoundError(
        f"Hydra configs not found at {CONFIG_DIR}; install the package from the repository with "
        "`pip install -e .` so configs/ sits next to rlinf_embodied/"
    )


def refuse_file_as_dir(path: str, setting: str) -> None:
    """A regular file where `setting` names a directory, refused (make_output_dir's first check; place's too, which
    creates nothing)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{setting}={path!r} is a file, not a directory: give a writable directory")


def make_output_dir(path: str, setting: str) -> None:
    """Create `path` (with its parents) at start-up, a directory this process can write into, before any work whose
    results would go there (train, sft and eval call it); else raise naming the setting that gave it: a regular file
    (before: "cannot be created (File exists)"), a path that cannot be created (os.makedirs' own error names only
    the path), or an existing directory that cannot be written (read-only, or a pseudo-filesystem like /proc/sys:
    before, the log handler's open failed, or eval's results.json after every episode had run)."""
    refuse_file_as_dir(path, setting)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise OSError(
            f"{setting}={path!r} cannot be created ({error.strerror or error}): give a writable directory"
        ) from None
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_check_"):
            pass
    except OSError as error:
        raise PermissionError(
            f"{setting}={path!r} is not writable (creating a file in it failed: {error.strerror or error}): give a "
            "writable directory"
        ) from None


def log_into(output_dir: str, hydra_run_dir: str, log_name: str) -> None:
    """Write the job's log (`log_name`: train.log, sft.log, eval.log) into `output_dir` too, where a run's
    output_dir setting moves its outputs away from Hydra's run directory: before, the log stayed in
    outputs/<date>/<time>/, apart from the checkpoints and metrics it describes. Hydra's own log file (and .hydra/)
    stay in `hydra_run_dir`."""
    if os.path.realpath(output_dir) == os.path.realpath(hydra_run_dir):
        return
    root = logging.getLogger()
    handler = logging.FileHandler(os.path.join(output_dir, log_name))
    hydra_file = next((h for h in root.handlers if isinstance(h, logging.FileHandler)), None)
    if hydra_file is not None:  # the same format as Hydra's log file
        handler.setFormatter(hydra_file.formatter)
    root.addHandler(handler)


RESULTS_FILE = "results.json"  # an evaluation's (runners/evaluator.py writes it)


def refuse_earlier_results(output_dir: str, setting: str) -> None:
    """An evaluation into a directory holding an earlier evaluation's results.json would overwrite it (and its
    videos): refused (before: silently overwritten), naming the path and the way on."""
    path = os.path.join(output_dir, RESULTS_FILE)
    if os.path.exists(path):
        raise FileExistsError(
            f"{setting}={output_dir!r} already holds an earlier evaluation's {RESULTS_FILE} ({path}); it is not "
            f"overwritten: give a new directory ({setting}=<new dir>), or move that {RESULTS_FILE} away first"
        )


class OutputDirCheck(Callback):
    """A Hydra callback (the entry configs' hydra.callbacks) that runs an entry point's refusal of its output
    directory before Hydra creates its run directory and writes .hydra/ and the job's log file there: where the output
    directory is Hydra's run directory (no `setting` given, or hydra.run.dir=<it>), a refused start leaves it as it
    was (before: the refusal came from the job, after Hydra had overwritten .hydra/*.yaml and added <job>.log), and a
    refused `setting=<dir>` leaves no outputs/<date>/<time>/ behind. The entry point checks again itself (and holds
    the directory for its run): this check only comes first. `job`: the Hydra job it checks (hydra.job.name; place
    shares train's config and writes nothing into runner.output_dir)."""

    def __init__(self, job: str, setting: str) -> None:
        self.job, self.setting = job, setting

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        from omegaconf import OmegaConf

        try:
            if OmegaConf.select(config, "hydra.job.name") != self.job:
                return
            output_dir = OmegaConf.select(config, self.setting) or str(config.hydra.run.dir)
        except Exception:  # noqa: BLE001 - a value only the job resolves: the entry point's own check runs there
            return
        if not os.path.isdir(output_dir):
            return  # nothing there yet (or a file: make_output_dir names it)
        try:
            self.check(output_dir, config)
        except FileExistsError as error:  # Hydra turns a callback's exceptions into warnings and runs the job
            print(f"{type(error).__name__}: {error}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        except OSError:  # e.g. a directory it cannot read: make_output_dir names it
            return

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        """A sweep (-m) of several jobs that all get one literal `setting` directory: job #1 would refuse what job #0
        wrote there, after job #0 ran to its end (a whole training run); refused before any job runs."""
        from omegaconf import OmegaConf

        try:
            if OmegaConf.select(config, "hydra.job.name") != self.job:
                return
            jobs, given = sweep_jobs_and_value(config, self.setting)
        except Exception:  # noqa: BLE001 - a sweep only the sweeper can parse: each job's own check runs
            return
        if jobs > 1 and given is not None and "${" not in given:
            print(
                f"ValueError: {self.setting}={given!r} is one directory for all {jobs} jobs of this sweep, so every "
                f"job after the first would be refused there (after the first had run to its end): leave "
                f"{self.setting} unset (each job writes into hydra.sweep.dir/<job number>), sweep it too, or make "
                f"it differ per job, e.g. {self.setting}={given}/${{hydra:job.num}}",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(1)

    def check(self, output_dir: str, config: Any) -> None:
        raise NotImplementedError


def sweep_jobs_and_value(config: Any, setting: str) -> tuple[int, str | None]:
    """The number of jobs a multirun's overrides (and hydra.sweeper.params) sweep over, and the value the command
    line gives `setting` where it gives one value (None where unset, or swept: then each job gets its own)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    def unresolved(key: str, empty: Any) -> Any:  # "${hydra:job.num}" kept as typed (it resolves only in a job)
        node = OmegaConf.select(config, key)
        return empty if node is None else OmegaConf.to_container(node, resolve=False)

    arguments = [f"{key}={value}" for key, value in unresolved("hydra.sweeper.params", {}).items()]
    arguments += unresolved("hydra.overrides.task", [])
    jobs, given = 1, None
    counts: dict[str, int] = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        if override.is_sweep_override():
            counts[key] = len(list(override.sweep_string_iterator()))
            given = None if key == setting else given
        else:
            counts[key] = 1
            given = str(override.value()) if key == setting else given
    for count in counts.values():
        jobs *= count
    return jobs, given


class RefuseClaimedOutputDir(OutputDirCheck):
    """train's and sft's: output_dir_claimed's refusal (runners/metrics_logger.py) of a directory holding a run's
    outputs, unless `resume_setting` names a checkpoint in it, or of one another run holds now."""

    def __init__(self, job: str, setting: str, resume_setting: str) -> None:
        super().__init__(job, setting)
        self.resume_setting = resume_setting

    def check(self, output_dir: str, config: Any) -> None:
        from omegaconf import OmegaConf

        from .runners.metrics_logger import claim_output_dir

        resume = OmegaConf.select(config, self.resume_setting)
        os.close(claim_output_dir(output_dir, self.setting, resume, self.resume_setting))


class RefuseEarlierResults(OutputDirCheck):
    """eval's: refuse_earlier_results."""

    def check(self, output_dir: str, config: Any) -> None:
        refuse_earlier_results(output_dir, self.setting)
