"""Env layer: gymnasium ids for ManiSkill3, LIBERO and IsaacLab, batched torch vector envs.

Each backend's `register.py` registers its ids without importing the simulator, so
`import rlinf_embodied` is cheap; the simulator is imported when an env is made.
"""

from .maniskill import register as _maniskill_register
from .libero import register as _libero_register
from .isaaclab import register as _isaaclab_register

_maniskill_register.register_envs()
_libero_register.register_envs()
_isaaclab_register.register_envs()
