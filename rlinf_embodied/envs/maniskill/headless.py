"""Let SAPIEN/ManiSkill build scenes on a machine without a Vulkan render device.

ManiSkill already skips visual components when `render_backend="none"` (its builders check
`scene.can_render()`), but task code still constructs `sapien.render.RenderMaterial(...)` and
`RenderTexture2D(...)` eagerly, and those constructors need a render device. `enable_headless()`
swaps them for plain-Python stand-ins that only record their attributes, which is all a
non-rendering scene needs. It is a no-op where a render device exists (rgb keeps working).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

_ENABLED = False


class HeadlessRenderObject:
    """Records constructor kwargs and attribute writes; `set_x(v)`/`get_x()` map to attribute `x`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args
        self.__dict__.update(kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("set_"):
            return lambda value: self.__dict__.__setitem__(name[4:], value)
        if name.startswith("get_"):
            return lambda: self.__dict__.get(name[4:])
        if name.startswith("__"):
            raise AttributeError(name)
        return None


class HeadlessRenderMaterial(HeadlessRenderObject):
    pass


class HeadlessRenderTexture2D(HeadlessRenderObject):
    pass


def render_device_available() -> bool:
    """True if SAPIEN can create a render resource (i.e. a Vulkan device exists)."""
    import sapien

    if _ENABLED:
        return False
    try:
        sapien.render.RenderMaterial()
    except RuntimeError:
        return False
    return True


def enable_headless() -> bool:
    """Patch SAPIEN's render-resource constructors when no render device exists.

    Returns True if the patch was applied (no render device), False if rendering works and
    nothing was changed. Idempotent; call it in every process before building ManiSkill envs.
    """
    global _ENABLED
    if _ENABLED:
        return True
    if render_device_available():
        return False
    _patch_loaded_modules({"RenderMaterial": HeadlessRenderMaterial, "RenderTexture2D": HeadlessRenderTexture2D})
    _ENABLED = True
    logger.info("no SAPIEN render device: render materials are stubbed, only render_backend='none' works")
    return True


# Modules that bind SAPIEN's render classes by name at import time (`from ... import RenderMaterial`).
_MODULES_BINDING_RENDER_CLASSES = (
    "sapien.render",
    "sapien.pysapien.render",
    "sapien.wrapper.urdf_loader",
    "sapien.wrapper.actor_builder",
    "mani_skill.utils.building._mjcf_loader",
)


def _patch_loaded_modules(replacements: dict[str, type]) -> None:
    """Rebind every module attribute that is one of SAPIEN's original render classes."""
    import importlib
    import sys

    import sapien

    originals = {getattr(sapien.render, name): stand_in for name, stand_in in replacements.items()}
    for module_name in _MODULES_BINDING_RENDER_CLASSES:
        try:
            importlib.import_module(module_name)
        except ImportError:
            continue
    for module in list(sys.modules.values()):
        if module is None or not (getattr(module, "__name__", "") or "").startswith(("sapien", "mani_skill")):
            continue
        for attribute, value in list(vars(module).items()):
            if isinstance(value, type) and value in originals:
                setattr(module, attribute, originals[value])
