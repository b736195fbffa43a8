"""Data in: files of many formats and MNIST to binarised datasets in Zarr, and synthetic data.

=================  ===========================================================
module             what it holds
=================  ===========================================================
``_random``        one random stream per block of rows, independent of chunks
``_binarise``      how values become bits
``_sources``       IDX and .npy readers, and an IDX writer
``_formats``       readers of svmlight, Matrix Market, .npz, Parquet, CSV, HDF5, Zarr
``_ingest``        a file of rows to a dataset, a block of rows at a time
``_mnist``         fetching MNIST, its cache, and the copy in the package
``_synthetic``     rows drawn from a known mixture
=================  ===========================================================
"""

from __future__ import annotations

from bmm_dask.datasets._binarise import Binarization
from bmm_dask.datasets._formats import RowBlock, RowSource, open_rows
from bmm_dask.datasets._ingest import ingest
from bmm_dask.datasets._mnist import (
    MNIST_FILES,
    MNIST_MIRRORS,
    MNIST_SPLITS,
    cached_mnist,
    data_home,
    fetch_mnist,
    ingest_mnist,
    mnist_dir,
    packaged_mnist_path,
)
from bmm_dask.datasets._sources import ImageSource, open_source, write_idx
from bmm_dask.datasets._synthetic import synth, synth_parameters

__all__ = [
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "MNIST_SPLITS",
    "Binarization",
    "ImageSource",
    "RowBlock",
    "RowSource",
    "cached_mnist",
    "data_home",
    "fetch_mnist",
    "ingest",
    "ingest_mnist",
    "mnist_dir",
    "open_rows",
    "open_source",
    "packaged_mnist_path",
    "synth",
    "synth_parameters",
    "write_idx",
]
