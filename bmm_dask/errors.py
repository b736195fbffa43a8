"""The package's error hierarchy: every user mistake is one of these, with a message that names the file."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

__all__ = [
    "BmmDaskError",
    "DataError",
    "DependencyError",
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


class DependencyError(BmmDaskError, ImportError):
    """An optional package that a file format needs (pyarrow, h5py) is not installed."""


#: How a setting is named in messages from Python; under the command line they name its flag.
_PYTHON_NAMES = {
    "--overwrite": "overwrite=True",
    "--max-iter": "max_iter",
    "--tol": "tol",
    "--alpha": "alpha",
    "--resume": "resume=True",
    "--algorithm batch": 'algorithm="batch"',
    "--checkpoint-every N": "checkpoint_every=N",
    "--binarize none": 'binarization=Binarization("none")',
    "--threshold 0.5": 'binarization=Binarization("threshold", threshold=0.5)',
    "--binarize nonzero": 'binarization=Binarization("nonzero")',
    "--labels": "labels",
    "--feature-names": "feature_names",
    "--n-features": "n_features",
    "--zero-based": "zero_based=True",
    "--columns": "columns",
    "--label-column": "label_column",
    "--items": "items",
    "--item-separator": "item_separator",
    "--k": "n_components",
    "--d": "n_features",
    "--n": "n_samples",
    "--like": "like",
    "--memory-limit": "memory_limit",
    "--workers": "workers",
    "--threads-per-worker": "threads_per_worker",
    "--scheduler": "scheduler",
    "--scheduler-file": "scheduler_file",
    "--dashboard-address": "dashboard_address",
}

_FROM_COMMAND_LINE = contextvars.ContextVar("bmm_dask_from_command_line", default=False)


def setting(flag: str) -> str:
    """How a message names a setting: ``flag`` under the command line, else its Python form.

    Parameters
    ----------
    flag : str
        The command line's flag, with a value where the message suggests one
        (``"--overwrite"``, ``"--binarize none"``).

    Returns
    -------
    str
        ``flag`` while :func:`command_line_messages` is in effect, else the keyword argument
        that does the same in Python (``"overwrite=True"``).
    """
    return flag if _FROM_COMMAND_LINE.get() else _PYTHON_NAMES.get(flag, flag)


@contextlib.contextmanager
def command_line_messages() -> Iterator[None]:
    """Within, messages name settings by their command-line flags (see :func:`setting`)."""
    token = _FROM_COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _FROM_COMMAND_LINE.reset(token)
