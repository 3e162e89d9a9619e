"""Errors a user can cause. Each one prints as one line and exits with code 2.

Internal bugs are not SweeperErrors: they keep their traceback.
"""


class SweeperError(Exception):
    """Root of the user-facing errors: the message says what is wrong and how to fix it."""

    exit_code = 2


class SpaceError(SweeperError):
    """A search-space file is missing, unreadable or invalid."""


class StorageError(SweeperError):
    """The study store cannot be opened, or a study in it is not what the command expects."""


class DataError(SweeperError):
    """A dataset cannot be loaded or is unusable (empty, one class, missing arrays...)."""


class GpuError(SweeperError):
    """A GPU list given by the user cannot be parsed."""


class SweepFailed(SweeperError):
    """The sweep had to stop, e.g. because workers kept crashing."""

    exit_code = 1
