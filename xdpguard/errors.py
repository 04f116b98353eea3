"""The error hierarchy every user-facing failure belongs to.

The CLI catches `XdpguardError`, prints `str(err)` and exits with
`err.exit_code`; anything else is a bug and gets a traceback only with
XDPGUARD_DEBUG=1.  Exit codes (docs/cli.md): 1 runtime failure, 2 usage
error or invalid rules.  Add a subclass when callers need to tell a failure
apart (tests skip on a missing kernel feature, the CLI suggests `sudo`),
not for every message.
"""

from __future__ import annotations


class XdpguardError(Exception):
    """Root of every error meant for the operator: `message` is a full sentence."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(XdpguardError):
    """The command line itself is wrong (bad option value, missing argument)."""

    exit_code = 2


class RuleError(XdpguardError):
    """Invalid rule input, reported as `path:line: message`.

    `line` is 1-based; it is None only when the whole file is at fault
    (unreadable, not UTF-8), and then str() is `path: message`.
    """

    exit_code = 2

    def __init__(self, path: str, line: int | None, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.line = line

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.message}"
        return f"{self.path}:{self.line}: {self.message}"


class KernelError(XdpguardError):
    """The kernel refused an operation (map update, attach, program load)."""

    exit_code = 1
