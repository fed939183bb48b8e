"""The one error type of the CLI: a message for one line on stderr, and an exit status.

Every failure a user can meet (an unreachable gateway, a refused credential, a broken settings
file, a permission problem) is raised as ``CcasError``; ``ccas.cli.main`` prints it as one line and
exits with ``status``. Anything else is a bug, and is still reported in one line, never a traceback.
"""

from __future__ import annotations


class CcasError(Exception):
    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
