"""Running a command with no privileges, whatever the checkout's permissions.

Switching to `nobody` fails when the checkout is not readable by others (a
clone under /root, mode 0700): nobody cannot reach the venv's interpreter,
the package or the rule files.  What the tests mean by "without root" is
"without the capabilities BPF, netlink and namespaces need", so as root
the command keeps uid 0 (and with it the checkout) but runs with empty
capability sets, as a container's root may.  Run by a normal user, the
command is unprivileged already and runs as it is.
"""

from __future__ import annotations

import os
import shutil

# setpriv (util-linux): an empty bounding set means a root process regains
# nothing at exec; no_new_privs rules out setuid programs.
DROP_ALL_CAPS = ["--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", "--no-new-privs", "--"]


def without_privileges(argv: list[str]) -> list[str]:
    """argv, run so that it holds no capabilities."""
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise RuntimeError("setpriv (Debian package util-linux) is needed to drop capabilities")
    return [setpriv, *DROP_ALL_CAPS, *argv]
