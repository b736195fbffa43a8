"""bmm_dask: Bernoulli mixture models fitted by EM on binary data in Zarr, with Dask.

The names below are imported when first used, so that ``import bmm_dask`` (and the command's
``--help``) does not wait for dask, zarr and scikit-learn.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from bmm_dask.errors import (
    BmmDaskError,
    DataError,
    DependencyError,
    FetchError,
    ModelFileError,
    OutputError,
    SettingsError,
)

if TYPE_CHECKING:
    from bmm_dask.io import Dataset, open_dataset
    from bmm_dask.model import BernoulliMixture
    from bmm_dask.selection import select_n_components

try:
    __version__ = version("bmm-dask")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

#: Where each name imported on first use lives.
_LAZY = {
    "BernoulliMixture": "bmm_dask.model",
    "Dataset": "bmm_dask.io",
    "open_dataset": "bmm_dask.io",
    "select_n_components": "bmm_dask.selection",
}

__all__ = [
    "BernoulliMixture",
    "BmmDaskError",
    "DataError",
    "Dataset",
    "DependencyError",
    "FetchError",
    "ModelFileError",
    "OutputError",
    "SettingsError",
    "__version__",
    "open_dataset",
    "select_n_components",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bmm_dask' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
