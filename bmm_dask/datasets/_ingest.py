"""Ingest: images from a file to a binarised dataset in Zarr, a block of rows at a time."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bmm_dask._kernels import pack_bits
from bmm_dask.datasets._binarise import Binarization
from bmm_dask.datasets._sources import (
    ImageSource,
    check_values,
    open_labels,
    open_source,
    source_attrs,
)
from bmm_dask.errors import DataError, setting
from bmm_dask.io import (
    ZSTD_LEVEL,
    DatasetWriter,
    atomic_output,
    parse_chunk_rows,
)

Progress = Callable[[int, int], None]
"""Called with (rows just finished, rows in all) as work goes on."""


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
) -> Path:
    """Binarise images from an IDX or ``.npy`` file and write them as a packed Zarr dataset.

    The file is read a chunk of rows at a time, so memory stays bounded whatever its size. The
    output is written under a temporary name and renamed into place when complete.

    Parameters
    ----------
    source : str or path-like
        IDX (``*-idx3-ubyte``, raw or ``.gz``) or ``.npy`` of shape (n_samples, ...) with values
        in 0..255, or bool / 0-1 values with ``Binarization("none")``.
    out : str or path-like
        The dataset group to write (a folder, by convention ``*.zarr``).
    labels : str or path-like, default=None
        IDX or ``.npy`` integer labels, one per sample.
    binarization : Binarization, default=None
        How grey levels become bits; None means threshold 128 (``none`` for a bool source).
    chunk_rows : int, default=None
        Rows per chunk; None means about 1 MiB of packed rows.
    overwrite : bool, default=False
        Replace ``out`` if it exists.
    progress : callable, default=None
        Called with (rows written, rows in all) after each chunk.
    zstd_level : int, default=ZSTD_LEVEL
        Compression level of the chunks.

    Returns
    -------
    Path
        The dataset written, ``out``.

    Raises
    ------
    DataError
        If a file is missing, malformed or truncated, the images have one dimension, the
        labels do not match them, or a value does not suit the binarisation.
    SettingsError
        If ``chunk_rows`` is not a whole number of at least 1.
    OutputError
        If ``out`` exists and ``overwrite`` is false, is or holds an input, or cannot be
        written.
    """
    images = open_source(source)
    if len(images.shape) < 2:
        raise DataError(
            f"{images.path}: a 1-dimensional array of {images.n_samples} values; expected N "
            "samples of D values (N x D, or N x H x W images); reshape it to (N, 1) if each "
            "value is a sample of one feature"
        )
    label_source = open_labels(labels, images.n_samples) if labels is not None else None
    if binarization is None:
        binarization = Binarization("none" if images.dtype.kind == "b" else "threshold")
    rows = parse_chunk_rows(chunk_rows, images.n_features)
    attrs = {
        "image_shape": images.image_shape,
        "binarization": binarization.to_attrs(),
    }
    with atomic_output(out, overwrite=overwrite, inputs=[source, labels]) as tmp:
        write_source(tmp, images, label_source, binarization, rows, attrs, progress, zstd_level)
    return Path(out)


def write_source(
    path: Path,
    images: ImageSource,
    labels: ImageSource | None,
    binarization: Binarization,
    chunk_rows: int,
    attrs: dict[str, Any],
    progress: Progress | None,
    zstd_level: int = ZSTD_LEVEL,
) -> None:
    """Binarise opened images (and labels) into a new dataset group, a chunk of rows at a time.

    Records the source files' checksums in the dataset's ``source`` attribute.

    Parameters
    ----------
    path : Path
        The dataset group to create (inside an :func:`~bmm_dask.io.atomic_output` folder).
    images : ImageSource
        The images, as from :func:`~bmm_dask.datasets.open_source`.
    labels : ImageSource or None
        Their labels, as from ``open_labels``.
    binarization : Binarization
        How grey levels become bits.
    chunk_rows : int
        Rows per chunk.
    attrs : dict
        Attributes of the dataset (image shape, binarisation, ...).
    progress : callable or None
        Called with (rows written, rows in all) after each chunk.
    zstd_level : int, default=ZSTD_LEVEL
        Compression level of the chunks.

    Raises
    ------
    DataError
        If a file turns out malformed or truncated, a value does not suit the binarisation, or
        the threshold would make every bit 0 (values of 0 and 1, or scaled to [0, 1]).
    """
    writer = DatasetWriter.create(
        path,
        n_samples=images.n_samples,
        n_features=images.n_features,
        chunk_rows=chunk_rows,
        labels_dtype=labels.dtype if labels is not None else None,
        attrs=attrs,
        zstd_level=zstd_level,
    )
    image_digest = hashlib.md5(usedforsecurity=False)
    label_digest = hashlib.md5(usedforsecurity=False)
    label_blocks = labels.blocks(chunk_rows, label_digest) if labels is not None else None
    highest = 0
    only_bits = True  # every value 0 or 1, as opposed to fractions in [0, 1]
    for start, block in images.blocks(chunk_rows, image_digest):
        check_values(images, block, start, binarization.method)
        if block.dtype.kind != "b":
            highest = max(highest, block.max())
            if highest <= 1 and only_bits:
                only_bits = bool(np.isin(block, (0, 1)).all())
        label_block = next(label_blocks)[1][:, 0] if label_blocks is not None else None
        writer.write(start, pack_bits(binarization.apply(block, start)), label_block)
        if progress is not None:
            progress(len(block), images.n_samples)
    if label_blocks is not None:
        for _ in label_blocks:  # runs the label reader's end-of-file check
            pass
    if (
        images.dtype.kind != "b"
        and highest <= 1 < binarization.threshold
        and binarization.method == "threshold"
    ):
        if only_bits:
            raise DataError(
                f"{images.path}: every value is 0 or 1, so threshold {binarization.threshold} would "
                f"make every bit 0; pass {setting('--binarize none')} for data that is binary already"
            )
        raise DataError(
            f"{images.path}: every value lies between 0 and {highest:g}, so threshold "
            f"{binarization.threshold:g} would make every bit 0; for values scaled to [0, 1] pass "
            f"{setting('--threshold 0.5')}, or scale them to 0..255"
        )
    source = {"images": source_attrs(images, image_digest)}
    if labels is not None:
        source["labels"] = source_attrs(labels, label_digest)
    writer.update_attrs({"source": source})
