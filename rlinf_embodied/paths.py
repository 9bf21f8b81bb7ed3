"""Where the Hydra configs live: `configs/` at the repository root (the package is installed editable)."""

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
