"""Package discovery; everything else is in pyproject.toml. The top-level folders install under
``dllm.*`` (design.md §1) and every folder below them with an ``__init__.py`` is found, so a new
kernel, sampler or task folder is packaged without editing a list (tests/test_wheel.py checks)."""

from setuptools import find_packages, setup

ROOTS = {"dllm": "dllm", "dllm.samplers": "samplers", "dllm.training": "training", "dllm.kernels": "kernels",
         "dllm.conf": "conf"}

setup(package_dir=ROOTS,
      packages=[f"{name}.{sub}" if sub else name for name, folder in ROOTS.items()
                for sub in ["", *find_packages(folder)]])
