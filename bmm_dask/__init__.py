"""bmm_dask: Bernoulli mixture models fitted by EM on binary data in Zarr, with Dask."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from bmm_dask.errors import (
    BmmDaskError,
    DataError,
    FetchError,
    ModelFileError,
    OutputError,
    SettingsError,
)
from bmm_dask.io import Dataset, open_dataset
from bmm_dask.model import BernoulliMixture

try:
    __version__ = version("bmm-dask")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = [
    "BernoulliMixture",
    "BmmDaskError",
    "DataError",
    "Dataset",
    "FetchError",
    "ModelFileError",
    "OutputError",
    "SettingsError",
    "__version__",
    "open_dataset",
]
