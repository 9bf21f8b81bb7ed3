"""Where the Hydra configs live (`configs/` at the repository root: the package is installed editable) and where
a run writes (its output directory and log file)."""

import logging
import os

CONFIG_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "configs"))
if not os.path.isfile(os.path.join(CONFIG_DIR, "config.yaml")):
    raise FileNotFoundError(
        f"Hydra configs not found at {CONFIG_DIR}; install the package from the repository with "
        "`pip install -e .` so configs/ sits next to rlinf_embodied/"
    )


def make_output_dir(path: str, setting: str) -> None:
    """Create `path` (with its parents) at start-up; a path that cannot be created names the setting that gave it
    (os.makedirs' own error names only the path), before any work whose results would go there."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise OSError(
            f"{setting}={path!r} cannot be created ({error.strerror or error}): give a writable directory"
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
