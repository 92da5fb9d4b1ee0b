"""Errors that reach the user as one line and exit status 2 (never a traceback)."""


class UsageError(Exception):
    """Bad input from the user: a missing or corrupt file, a nonsense option, an empty dataset.

    The CLI prints ``msgnet: error: <message>`` and exits with status 2. The message
    names the offending file or option and the problem.
    """


class DataError(UsageError):
    """A dataset on disk does not follow the msgnet format."""
