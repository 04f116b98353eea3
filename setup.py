"""Build hook: ship the BPF C sources and the example rules in the package.

Everything else about the package is declared in pyproject.toml.  xdpguard
compiles bpf/ when it attaches, and its demo applies rules/web-edge.yaml;
in a checkout both are top-level directories beside the package.  A wheel
(`pip install .`) gets copies under xdpguard/_data/, where
xdpguard/resources.py finds them when no checkout surrounds the package.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA_DIRS = ("bpf", "rules")


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's own directories
        for name in DATA_DIRS:
            dst = Path(self.build_lib) / "xdpguard" / "_data" / name
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(name, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithData})
