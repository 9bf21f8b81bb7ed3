"""Where the Hydra configs live: `configs/` at the repository root (the package is installed editable)."""

import os

CONFIG_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "configs"))
if not os.path.isfile(os.path.join(CONFIG_DIR, "config.yaml")):
    raise FileNotFoundError(
        f"Hydra configs not found at {CONFIG_DIR}; install the package from the repository with "
        "`pip install -e .` so configs/ sits next to rlinf_embodied/"
    )
