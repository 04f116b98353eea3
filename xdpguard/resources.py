"""Where the BPF C sources and the example rule files are.

In a checkout (and an editable install) they are the top-level bpf/ and
rules/ directories beside the package, so an edit to the C is what the next
attach compiles.  An installed wheel carries copies in the package itself,
xdpguard/_data/ (setup.py puts them there), and works from any directory.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
# The package's parent is a checkout when the project file is there too;
# in site-packages it never is.
_CHECKOUT = _PACKAGE.parent if (_PACKAGE.parent / "pyproject.toml").is_file() else None


def data_dir(name: str) -> Path:
    """The checkout's `name` directory, or the installed copy of it."""
    if _CHECKOUT is not None and (_CHECKOUT / name).is_dir():
        return _CHECKOUT / name
    return _PACKAGE / "_data" / name


BPF_DIR = data_dir("bpf")
RULES_DIR = data_dir("rules")
