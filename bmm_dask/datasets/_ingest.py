"""Ingest: rows from a file of any format to a binarised dataset in Zarr, a block of rows at a time."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bmm_dask._kernels import count_ones, n_packed_bytes, pack_bits, pack_sparse
from bmm_dask.datasets._binarise import Binarization
from bmm_dask.datasets._formats import RowSource, file_md5, open_rows, read_names
from bmm_dask.datasets._sources import ImageSource, open_labels, source_attrs
from bmm_dask.errors import DataError, SettingsError, setting
from bmm_dask.io import (
    ZSTD_LEVEL,
    DatasetWriter,
    atomic_output,
    parse_chunk_rows,
)

Progress = Callable[[int, int], None]
"""Called with (rows just finished, rows in all) as work goes on."""

#: Values of a sparse block made dense at a time, for stochastic binarisation (16 MiB of float32).
_DENSE_VALUES = 1 << 22


def ingest(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    labels: str | os.PathLike[str] | None = None,
    binarization: Binarization | None = None,
    chunk_rows: int | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    zstd_level: int = ZSTD_LEVEL,
    feature_names: str | os.PathLike[str] | Sequence[str] | None = None,
    n_features: int | None = None,
    zero_based: bool | None = None,
    columns: Sequence[str] | None = None,
    label_column: str | None = None,
    items: str | None = None,
    item_separator: str | None = None,
    drop_columns: Sequence[str] | None = None,
) -> Path:
    """Binarise rows from a file and write them as a packed Zarr dataset.

    The file is read a chunk of rows at a time, so memory stays bounded whatever its size (a
    SciPy ``.npz`` excepted, which is loaded whole; see each reader in ``_formats``). The
    output is written under a temporary name and renamed into place when complete. The dataset
    records the share of ones (``density``, ``n_ones``), the features' names where there are
    any, and the source file's format and checksum.

    Parameters
    ----------
    source : str or path-like
        One of: IDX (``*-idx3-ubyte``, raw or ``.gz``) or ``.npy`` of shape (n_samples, ...)
        with values in 0..255, or bool / 0-1 values with ``Binarization("none")``; svmlight /
        LIBSVM (``.svm``, ``.svmlight``, ``.libsvm``); Matrix Market coordinates (``.mtx``);
        a SciPy sparse ``.npz``; Parquet; CSV or TSV with a header row; a dataset of an HDF5
        file (``file.h5:/path/to/dataset``); a Zarr array (its folder). See
        :func:`~bmm_dask.datasets.open_rows`.
    out : str or path-like
        The dataset group to write (a folder, by convention ``*.zarr``).
    labels : str or path-like, default=None
        IDX or ``.npy`` integer labels, one per sample (not for sources that carry labels).
    binarization : Binarization, default=None
        How values become bits; None means ``nonzero`` for svmlight, Matrix Market, ``.npz``,
        Parquet and CSV, and for the dense arrays (IDX, ``.npy``, HDF5, Zarr) threshold 128,
        or ``none`` for booleans.
    chunk_rows : int, default=None
        Rows per chunk; None means about 1 MiB of packed rows.
    overwrite : bool, default=False
        Replace ``out`` if it exists.
    progress : callable, default=None
        Called with (rows written, rows in all) after each chunk.
    zstd_level : int, default=ZSTD_LEVEL
        Compression level of the chunks.
    feature_names : str, path-like or sequence of str, default=None
        The features' names, or a text file of them, one a line. They replace the column names
        of a table; for svmlight they set the number of features, and for a table of items they
        are the vocabulary.
    n_features, zero_based : default=None
        svmlight: the number of features (default: the highest index), and whether indices
        count from 0 (default: when some index is 0).
    columns, label_column, items, item_separator : default=None
        CSV and Parquet: the feature columns (default: all but the labels), the column of
        integer labels, the column listing each row's items, and what separates items in a
        cell of text (default: whitespace).
    drop_columns : sequence of str, default=None
        CSV and Parquet: columns that are not features (an id, a name), left out.

    Returns
    -------
    Path
        The dataset written, ``out``.

    Raises
    ------
    DataError
        If a file is missing, malformed or truncated, the rows have one dimension, the labels
        or feature names do not match them, or a value does not suit the binarisation; the
        message names the file and the line, row or column.
    SettingsError
        If ``chunk_rows`` is not a whole number of at least 1, or an option does not suit the
        source's format.
    DependencyError
        If the format needs a package that is not installed (pyarrow for Parquet, h5py for HDF5).
    OutputError
        If ``out`` exists and ``overwrite`` is false, is or holds an input, or cannot be
        written.
    """
    names_file = None
    names = None
    if isinstance(feature_names, str | os.PathLike):
        names_file = Path(feature_names)
        names = read_names(names_file)
    elif feature_names is not None:
        names = [str(name) for name in feature_names]
    rows = open_rows(
        source,
        feature_names=names,
        n_features=n_features,
        zero_based=zero_based,
        columns=columns,
        label_column=label_column,
        items=items,
        item_separator=item_separator,
        drop_columns=drop_columns,
    )
    if names is not None and len(names) != rows.n_features:
        raise DataError(
            f"{names_file or 'feature_names'}: {len(names):,} names for the "
            f"{rows.n_features:,} features of {rows.path}"
        )
    if labels is not None and rows.labels_dtype is not None:
        raise SettingsError(
            f"{rows.path}: carries its own labels (its targets); {setting('--labels')} is for "
            "sources without labels"
        )
    label_source = open_labels(labels, rows.n_samples) if labels is not None else None
    if binarization is None:
        binarization = rows.default_binarization()
    chunk = parse_chunk_rows(chunk_rows, rows.n_features, n_samples=rows.n_samples)
    attrs = {"image_shape": rows.image_shape, "binarization": binarization.to_attrs()}
    inputs = [rows.path, labels, names_file]
    with atomic_output(out, overwrite=overwrite, inputs=inputs) as tmp:
        write_rows(
            tmp,
            rows,
            label_source,
            binarization,
            chunk,
            attrs,
            progress,
            zstd_level,
            feature_names=names or rows.feature_names,
            names_file=names_file,
        )
    return Path(out)


def write_rows(
    path: Path,
    rows: RowSource,
    labels: ImageSource | None,
    binarization: Binarization,
    chunk_rows: int,
    attrs: dict[str, Any],
    progress: Progress | None,
    zstd_level: int = ZSTD_LEVEL,
    *,
    feature_names: Sequence[str] | None = None,
    names_file: Path | None = None,
) -> None:
    """Binarise opened rows (and labels) into a new dataset group, a chunk of rows at a time.

    Records the source files' checksums in the dataset's ``source`` attribute, the number of
    ones and their share (``n_ones``, ``density``), and the features' names.

    Parameters
    ----------
    path : Path
        The dataset group to create (inside an :func:`~bmm_dask.io.atomic_output` folder).
    rows : RowSource
        The rows, as from :func:`~bmm_dask.datasets.open_rows`.
    labels : ImageSource or None
        Labels from a file of their own, as from ``open_labels``; else the rows' own, if any.
    binarization : Binarization
        How values become bits.
    chunk_rows : int
        Rows per chunk.
    attrs : dict
        Attributes of the dataset (image shape, binarisation, ...).
    progress : callable or None
        Called with (rows written, rows in all) after each chunk.
    zstd_level : int, default=ZSTD_LEVEL
        Compression level of the chunks.
    feature_names : sequence of str, default=None
        One name per feature, stored beside the rows.
    names_file : Path, default=None
        The file the names came from, whose checksum is recorded.

    Raises
    ------
    DataError
        If a file turns out malformed or truncated, a value does not suit the binarisation, or
        the threshold would make every bit 0 (values of 0 and 1, or scaled to [0, 1]).
    """
    writer = DatasetWriter.create(
        path,
        n_samples=rows.n_samples,
        n_features=rows.n_features,
        chunk_rows=chunk_rows,
        labels_dtype=labels.dtype if labels is not None else rows.labels_dtype,
        attrs=attrs,
        zstd_level=zstd_level,
    )
    chunk_rows = writer.chunk_rows
    label_digest = hashlib.md5(usedforsecurity=False)
    label_blocks = labels.blocks(chunk_rows, label_digest) if labels is not None else None
    highest = 0
    only_bits = True  # every value 0 or 1, as opposed to fractions in [0, 1]
    only_whole = True  # every value a whole number: counts, while all are below the threshold
    n_ones = 0
    done = 0
    for block in rows.blocks(chunk_rows, scratch=path):
        # the writer stores whole chunks: every block but the last fills one
        assert block.start == done and (
            block.X.shape[0] == chunk_rows or done + block.X.shape[0] == rows.n_samples
        ), (block.start, block.X.shape, done, chunk_rows)
        dense = isinstance(block.X, np.ndarray)
        if not dense:
            block.X.sum_duplicates()  # a value stored twice is one value, their sum
        rows.check(block, binarization)
        values = block.X if dense else block.X.data
        if binarization.method == "threshold" and values.dtype.kind != "b" and values.size:
            highest = max(highest, values.max())
            if highest <= 1 and only_bits:
                only_bits = bool(np.isin(values, (0, 1)).all())
            if highest < binarization.threshold and only_whole and values.dtype.kind == "f":
                only_whole = bool((values == np.round(values)).all())
        packed = pack_rows(block.X, block.start, binarization)
        n_ones += count_ones(packed)
        block_labels = next(label_blocks)[1][:, 0] if label_blocks is not None else block.labels
        writer.write(block.start, packed, block_labels)
        done += len(packed)
        if progress is not None:
            progress(len(packed), rows.n_samples)
    if done != rows.n_samples:
        raise DataError(
            f"{rows.path}: holds {done} rows now, not the {rows.n_samples} it held when opened: "
            "it changed while being read; ingest it again"
        )
    if label_blocks is not None:
        for _ in label_blocks:  # runs the label reader's end-of-file check
            pass
    if (
        binarization.method == "threshold"
        and rows.dtype.kind != "b"
        and highest <= 1 < binarization.threshold
    ):
        if only_bits:
            raise DataError(
                f"{rows.shown}: every value is 0 or 1, so threshold {binarization.threshold} "
                f"would make every bit 0; pass {setting('--binarize none')} for data that is "
                "binary already"
            )
        raise DataError(
            f"{rows.shown}: every value lies between 0 and {highest:g}, so threshold "
            f"{binarization.threshold:g} would make every bit 0; for values scaled to [0, 1] "
            f"pass {setting('--threshold 0.5')}, or scale them to 0..255"
        )
    if (
        binarization.method == "threshold"
        and rows.dtype.kind != "b"
        and highest < binarization.threshold
    ):
        what = "a count" if only_whole else "a number"
        raise DataError(
            f"{rows.shown}: every value is {what} between 0 and {highest:g}, so threshold "
            f"{binarization.threshold:g} would make every bit 0; for counts (a word present 3 "
            f"times is present) pass {setting('--binarize nonzero')}, or a lower "
            f"{setting('--threshold')}"
        )
    if feature_names is not None:
        writer.write_feature_names(feature_names)
    source = {rows.role: rows.record()}
    if labels is not None:
        source["labels"] = source_attrs(labels, label_digest)
    if names_file is not None:
        source["feature_names"] = {
            "file": names_file.name,
            "format": "text",
            "md5": file_md5(names_file),
            "md5_of": "file",
        }
    density = n_ones / (rows.n_samples * rows.n_features)
    writer.update_attrs({"source": source, "n_ones": n_ones, "density": density})


def pack_rows(X: Any, start: int, binarization: Binarization) -> NDArray[np.uint8]:
    """Binarise a block of rows and pack them 8 bits to a byte, as :func:`~bmm_dask._kernels.pack_bits`.

    Sparse rows are packed from their stored values alone (by
    :func:`~bmm_dask._kernels.pack_sparse`), so no dense copy of the block is made; stochastic
    binarisation, which draws for every position, makes ``_DENSE_VALUES`` values dense at a
    time.

    Parameters
    ----------
    X : ndarray or scipy.sparse CSR array of shape (n_rows, n_features)
        The rows (sparse ones in canonical form: no value stored twice).
    start : int
        Index of the first row in the whole data, which keys stochastic draws.
    binarization : Binarization
        How values become bits.

    Returns
    -------
    packed : ndarray of shape (n_rows, ceil(n_features / 8)), dtype uint8
    """
    if isinstance(X, np.ndarray):
        return pack_bits(binarization.apply(X, start))
    if binarization.method != "stochastic":
        ones = binarization.is_one(X.data)
        return pack_sparse(type(X)((ones, X.indices, X.indptr), shape=X.shape))
    n_rows, n_features = X.shape
    packed = np.zeros((n_rows, n_packed_bytes(n_features)), dtype=np.uint8)
    step = max(1, _DENSE_VALUES // n_features)
    for lo in range(0, n_rows, step):
        dense = X[lo : lo + step].toarray()
        packed[lo : lo + step] = pack_bits(binarization.apply(dense, start + lo))
    return packed
