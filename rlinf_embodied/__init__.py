"""rlinf_embodied: RL post-training of embodied VLA policies on Ray.

Importing the package registers the gymnasium env ids (`rlinf/ManiSkill-PickCube`, LIBERO tasks, ...).
Registration is cheap: simulators are imported only when an env is made.
"""

__version__ = "0.1.0"

from . import envs as _envs  # noqa: F401  (registers gymnasium ids)
