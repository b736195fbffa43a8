"""The package's error hierarchy: every user mistake is one of these, with a message that names the file."""

from __future__ import annotations

__all__ = [
    "BmmDaskError",
    "DataError",
    "FetchError",
    "ModelFileError",
    "OutputError",
    "SettingsError",
]


class BmmDaskError(Exception):
    """Base class of the errors that bmm_dask raises for a user's mistake or a bad file.

    The message is one line that says which file (or setting) is at fault, what was expected,
    what was found and, where there is one, what to do. The command line prints it and exits
    with status 2.
    """


class DataError(BmmDaskError, ValueError):
    """A data file or dataset store is missing, unreadable, or holds something unexpected."""


class ModelFileError(BmmDaskError, ValueError):
    """A model store is missing, truncated, or does not fit the data it is used with."""


class SettingsError(BmmDaskError, ValueError):
    """A setting (number of components, tolerance, threshold, ...) is out of its range."""


class OutputError(BmmDaskError, OSError):
    """An output cannot be written: it exists already, or its folder is missing or read-only."""


class FetchError(BmmDaskError, OSError):
    """A download failed on every mirror, or a file failed its checksum."""
