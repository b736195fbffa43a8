"""The dataset store: rows of packed bits and their labels in a Zarr group, written and read."""

from __future__ import annotations

import functools
import os
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
import zarr.errors
from numpy.typing import NDArray
from zarr.codecs import ZstdCodec
from zarr.core.sync import sync

if TYPE_CHECKING:  # dask is imported where it is used: `bmm-dask info MODEL` needs none of it
    import dask.array as da

from bmm_dask._kernels import n_packed_bytes, unpack_bits
from bmm_dask.errors import DataError, SettingsError, setting
from bmm_dask.io._output import is_url
from bmm_dask.io._zarr import check_version, format_name, new_group, open_group

#: What a dataset group's ``format`` attribute holds; bumped when the layout changes.
DATASET_FORMAT = {"name": "bmm_dask.dataset", "version": 1}

#: The dataset attribute in which the writer records how many chunks it stored of each array
#: (``{"bits": n, "labels": n}``). Zarr leaves out chunks that are all fill value, so a chunk lost
#: from a store written that way reads as rows of zeros; the writer stores every chunk, and this
#: record tells a reader that a missing one is damage.
CHUNKS_STORED = "chunks_stored"

#: The dataset's attribute that tells one writing of a store from another: a new random id each
#: time a dataset is written. A reader notes it when it opens the store, and finds by it that
#: the store at its path was replaced while it read (``ingest --overwrite`` racing a ``fit``),
#: rather than mixing rows of two datasets. Stores written before it have none, and are read
#: unchecked.
GENERATION = "generation"

#: The array of a dataset (and of a model) that holds one name per feature, when the source
#: has them (column names, a vocabulary).
FEATURE_NAMES = "feature_names"

#: How many feature names ``bmm-dask info`` shows.
NAMES_SHOWN = 5

#: Uncompressed bytes of packed rows per chunk (1 MiB: about 10,000 MNIST images).
CHUNK_BYTES = 1 << 20

#: zstd level for new datasets: level 3 compresses MNIST well and writes it fast; higher levels
#: save little more space for many times the time.
ZSTD_LEVEL = 3


#: Wide rows get chunks of at least this many rows, up to WIDE_CHUNK_BYTES of packed rows: an
#: E-step task returns K x D sums whatever its rows, so chunks of the 80 rows that 1 MiB holds
#: of 100,000 features would move more statistics than rows.
MIN_CHUNK_ROWS = 4096
WIDE_CHUNK_BYTES = 64 << 20


def default_chunk_rows(n_features: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Rows in a chunk of about ``chunk_bytes`` packed bytes (for wide rows, of at least
    ``MIN_CHUNK_ROWS`` rows while that is at most ``WIDE_CHUNK_BYTES``), a multiple of 1024 when
    that large.

    Parameters
    ----------
    n_features : int
        Number of features D.
    chunk_bytes : int, default=CHUNK_BYTES
        Packed bytes per chunk to aim at.

    Returns
    -------
    int
        Rows per chunk, at least 1.

    >>> default_chunk_rows(784), default_chunk_rows(64), default_chunk_rows(100_000)
    (10240, 131072, 4096)
    >>> default_chunk_rows(10**7)
    53
    """
    row_bytes = n_packed_bytes(n_features)
    rows = max(1, chunk_bytes // row_bytes, min(MIN_CHUNK_ROWS, WIDE_CHUNK_BYTES // row_bytes))
    return rows - rows % 1024 if rows >= 1024 else rows


#: A store is written, and read, a task per chunk: more chunks than this make a Dask graph that
#: takes longer to build and schedule than the work it does (a million rows in chunks of one row
#: took 23 minutes and 7 GB). The default chunk grows to keep under it.
MAX_CHUNKS = 20_000

#: ... and a chunk is read whole into a worker's memory: no chunk of packed rows beyond this.
MAX_CHUNK_BYTES = 1 << 30


def parse_chunk_rows(
    chunk_rows: int | None, n_features: int, *, n_samples: int | None = None
) -> int:
    """Check a requested number of rows per chunk, or choose one from the row size.

    Parameters
    ----------
    chunk_rows : int or None
        The rows per chunk asked for; None means :func:`default_chunk_rows`, more where the
        rows would take more than :data:`MAX_CHUNKS` chunks.
    n_features : int
        Number of features D.
    n_samples : int, default=None
        Rows to be written, where known: then the chunks are checked to be at most
        :data:`MAX_CHUNKS` of at most :data:`MAX_CHUNK_BYTES` each.

    Returns
    -------
    int
        Rows per chunk.

    Raises
    ------
    SettingsError
        If ``chunk_rows`` is not a whole number of at least 1, or the rows would take too
        many chunks, or chunks too large.
    """
    if chunk_rows is None:
        rows = default_chunk_rows(n_features)
        if n_samples is not None:
            rows = max(rows, -(-n_samples // MAX_CHUNKS))
    elif isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int | np.integer):
        raise SettingsError(f"chunk rows must be a whole number; got {chunk_rows!r}")
    elif chunk_rows < 1:
        raise SettingsError(f"chunk rows must be at least 1; got {chunk_rows}")
    else:
        rows = int(chunk_rows)
    if n_samples is None or n_samples < 1:
        return rows
    rows = min(rows, n_samples)
    row_bytes = n_packed_bytes(n_features)
    fewest = -(-n_samples // MAX_CHUNKS)  # rows per chunk that keep to MAX_CHUNKS
    if fewest * row_bytes > MAX_CHUNK_BYTES:
        raise SettingsError(
            f"{n_samples:,} rows of {n_features:,} features are more than a store can hold "
            f"({MAX_CHUNKS:,} chunks of at most {MAX_CHUNK_BYTES >> 20:,} MiB of packed rows, "
            f"{MAX_CHUNKS * (MAX_CHUNK_BYTES // row_bytes):,} rows); write fewer rows"
        )
    chunks = -(-n_samples // rows)
    if chunks > MAX_CHUNKS:
        raise SettingsError(
            f"{setting('--chunk-rows')} {rows:,} makes {chunks:,} chunks of the {n_samples:,} "
            f"rows, more than the {MAX_CHUNKS:,} a store is written and read in; give at least "
            f"{fewest:,} rows per chunk (or leave it out)"
        )
    if rows * row_bytes > MAX_CHUNK_BYTES:
        most = MAX_CHUNK_BYTES // row_bytes
        raise SettingsError(
            f"{setting('--chunk-rows')} {rows:,} makes chunks of {rows * row_bytes:,} bytes, "
            f"more than the {MAX_CHUNK_BYTES >> 20:,} MiB a worker reads at once; give at most "
            f"{most:,} rows per chunk"
        )
    return rows


@dataclass
class DatasetWriter:
    """Arrays of a new dataset group, filled a block of rows at a time.

    Blocks should start on chunk boundaries (as :meth:`create` and the callers arrange), so that
    every chunk is written once, whole.

    Attributes
    ----------
    group : zarr.Group
        The dataset group.
    bits : zarr.Array
        The packed rows, of shape (n_samples, ceil(n_features / 8)).
    labels : zarr.Array or None
        The labels, of shape (n_samples,), when the dataset has them.
    n_features : int
        Number of features D.
    """

    group: zarr.Group
    bits: zarr.Array
    labels: zarr.Array | None
    n_features: int

    @classmethod
    def create(
        cls,
        path: Path,
        *,
        n_samples: int,
        n_features: int,
        chunk_rows: int,
        labels_dtype: np.typing.DTypeLike | None = None,
        attrs: Mapping[str, Any] | None = None,
        zstd_level: int = ZSTD_LEVEL,
    ) -> DatasetWriter:
        """Create the group at ``path`` (a folder that may exist and be empty).

        Every chunk is stored, even one of zeros, and the group records how many (the
        :data:`CHUNKS_STORED` attribute), so that a reader can tell a lost chunk from zeros.

        Parameters
        ----------
        path : Path
            The group's folder.
        n_samples : int
            Number of rows.
        n_features : int
            Number of features D.
        chunk_rows : int
            Rows per chunk (at most ``n_samples``).
        labels_dtype : dtype, default=None
            Type of the labels; None means no labels array.
        attrs : mapping, default=None
            Attributes of the group (image shape, binarisation, source, ...).
        zstd_level : int, default=ZSTD_LEVEL
            Compression level of the chunks.

        Returns
        -------
        DatasetWriter
            The writer of the new, empty arrays.
        """
        chunk_rows = min(chunk_rows, n_samples)
        n_chunks = -(-n_samples // chunk_rows)
        stored = {"bits": n_chunks, **({"labels": n_chunks} if labels_dtype is not None else {})}
        # The records come last: attributes copied from another dataset must not replace them.
        group = new_group(
            path,
            DATASET_FORMAT,
            **{
                "n_features": int(n_features),
                **(attrs or {}),
                CHUNKS_STORED: stored,
                GENERATION: uuid.uuid4().hex,
            },
        )
        compressor = ZstdCodec(level=zstd_level)
        every_chunk = {"write_empty_chunks": True}
        bits = group.create_array(
            "bits",
            shape=(n_samples, n_packed_bytes(n_features)),
            chunks=(chunk_rows, n_packed_bytes(n_features)),
            dtype="uint8",
            compressors=compressor,
            fill_value=0,
            dimension_names=("sample", "packed_feature"),
            config=every_chunk,
        )
        labels = None
        if labels_dtype is not None:
            labels = group.create_array(
                "labels",
                shape=(n_samples,),
                chunks=(chunk_rows,),
                dtype=np.dtype(labels_dtype).newbyteorder("="),
                compressors=compressor,
                fill_value=0,
                dimension_names=("sample",),
                config=every_chunk,
            )
        return cls(group=group, bits=bits, labels=labels, n_features=n_features)

    @property
    def chunk_rows(self) -> int:
        """Rows per chunk of the arrays."""
        return int(self.bits.chunks[0])

    def write(
        self, start: int, packed: NDArray[np.uint8], labels: NDArray[Any] | None = None
    ) -> None:
        """Write rows ``start : start + len(packed)`` of the bits (and labels).

        Parameters
        ----------
        start : int
            Index of the first row, on a chunk boundary.
        packed : ndarray of shape (n_rows, ceil(n_features / 8)), dtype uint8
            The rows, packed.
        labels : ndarray of shape (n_rows,), default=None
            Their labels, when the dataset has a labels array.
        """
        stop = start + len(packed)
        self.bits[start:stop] = packed
        if labels is not None:
            assert self.labels is not None
            self.labels[start:stop] = labels

    def write_feature_names(self, names: Sequence[str]) -> None:
        """Store the features' names (a word per column, a product, a species) beside the rows.

        Parameters
        ----------
        names : sequence of str
            One name per feature, in column order.

        Raises
        ------
        DataError
            If there are not ``n_features`` names, or a name is not a string.
        """
        write_feature_names(self.group, names, self.n_features)

    def update_attrs(self, attrs: Mapping[str, Any]) -> None:
        """Add or replace attributes of the group.

        Parameters
        ----------
        attrs : mapping
            The attributes to set.
        """
        self.group.attrs.update(dict(attrs))


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Dataset:
    """A binarised dataset opened from Zarr: rows of packed bits as a Dask array, and labels.

    Attributes
    ----------
    path : str
        Where the group lives (a folder or a URL).
    bits : dask array of shape (n_samples, ceil(n_features / 8)), uint8
        Each row packed 8 bits to a byte by ``numpy.packbits``; chunked by rows as stored.
    labels : dask array of shape (n_samples,) or None
        Integer labels (digits for MNIST, the true component for synthetic data).
    n_features : int
        Number of features D (bits per row).
    attrs : dict
        The group's attributes: ``image_shape``, ``binarization``, ``source``, ...
    group : zarr.Group
        The group opened.
    """

    path: str
    bits: da.Array
    labels: da.Array | None
    n_features: int
    attrs: Mapping[str, Any] = field(repr=False)
    group: zarr.Group = field(repr=False, compare=False)

    @property
    def n_samples(self) -> int:
        """Number of rows."""
        return int(self.bits.shape[0])

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        """The shape of an image, as recorded when the dataset was written, or None."""
        shape = self.attrs.get("image_shape")
        return tuple(shape) if shape else None

    @property
    def feature_names(self) -> NDArray[np.object_] | None:
        """The features' names (an array of str, dtype object), as stored with the rows, or None
        when the source had none.

        Raises
        ------
        DataError
            If the stored names cannot be read or are not one string per feature.
        """
        return read_feature_names(self.group, self.path, self.n_features)

    @property
    def binarization(self) -> dict[str, Any]:
        """How the data was binarised (the ``binarization`` attribute), or {}."""
        return dict(self.attrs.get("binarization", {}))

    @property
    def chunk_rows(self) -> int:
        """Rows in the first chunk of ``bits``."""
        return int(self.bits.chunks[0][0])

    def unpacked(self, dtype: np.typing.DTypeLike = np.uint8) -> da.Array:
        """The rows as 0/1 values, unpacked one chunk at a time.

        Parameters
        ----------
        dtype : dtype, default=np.uint8
            Type of the values.

        Returns
        -------
        dask.array.Array of shape (n_samples, n_features)
            Lazy, chunked by rows like ``bits``.
        """
        from dask.base import tokenize

        dtype = np.dtype(dtype)
        return self.bits.map_blocks(
            unpack_bits,
            self.n_features,
            dtype,
            dtype=dtype,
            chunks=(self.bits.chunks[0], (self.n_features,)),
            name="bmm-unpack-" + tokenize(self.bits.name, self.n_features, dtype),
            meta=np.empty((0, 0), dtype=dtype),
        )

    def row_reader(self) -> Callable[[int, int], NDArray[np.uint8]]:
        """A small picklable function ``(start, stop) -> packed rows`` that reads the store.

        For tasks that read their own chunk; a read error or a missing chunk names the chunk.

        Returns
        -------
        callable
            ``reader(start, stop)`` returns rows ``start:stop`` of ``bits``, an ndarray of shape
            (stop - start, ceil(n_features / 8)), and raises :class:`DataError` where they
            cannot be read.
        """
        return functools.partial(
            _read_range,
            self.group["bits"],
            self.path,
            "bits",
            every_chunk_stored=CHUNKS_STORED in self.attrs,
            generation=self.attrs.get(GENERATION),
        )

    def check_unchanged(self) -> None:
        """Raise DataError if the store at :attr:`path` is no longer the one opened: another
        command wrote a dataset there since (then what was read may mix the two).

        Raises
        ------
        DataError
            If the store was replaced or removed.
        """
        _check_generation(self.path, self.attrs.get(GENERATION))

    def fingerprint(self) -> dict[str, Any]:
        """What a model records of the data it was fitted on.

        Returns
        -------
        dict
            ``path`` (absolute, unless a URL), ``n_samples``, ``n_features``,
            ``binarization``, ``image_shape`` and ``generation`` (which writing of the store;
            None for a store of an older version).
        """
        path = self.path if is_url(self.path) else os.path.abspath(self.path)
        return {
            "path": path,
            "n_samples": self.n_samples,
            "n_features": self.n_features,
            "binarization": self.binarization,
            "image_shape": list(self.image_shape) if self.image_shape else None,
            GENERATION: self.attrs.get(GENERATION),
        }

    def read_array(self, name: str) -> NDArray[Any]:
        """Read a small array stored beside the data (``true_means``, ``true_weights``).

        Parameters
        ----------
        name : str
            The array's name in the group.

        Returns
        -------
        ndarray
            The whole array.

        Raises
        ------
        DataError
            If the group has no such array.
        """
        try:
            return np.asarray(self.group[name][...])
        except KeyError as err:
            raise DataError(f"{self.path}: has no array {name!r}") from err


def write_feature_names(group: zarr.Group, names: Sequence[str], n_features: int) -> None:
    """Store the features' names as the ``feature_names`` array of a dataset or model group.

    Parameters
    ----------
    group : zarr.Group
        The group, being written.
    names : sequence of str
        One name per feature, in column order.
    n_features : int
        Number of features D.

    Raises
    ------
    DataError
        If there are not ``n_features`` names, or a name is not a string.
    """
    names = np.asarray(list(names), dtype=object)
    if names.shape != (n_features,):
        raise DataError(f"{len(names)} feature names for {n_features} features")
    if not all(isinstance(name, str) for name in names):
        raise DataError("feature names must be strings")
    array = group.create_array(
        FEATURE_NAMES,
        shape=(n_features,),
        chunks=(n_features,),
        dtype=str,
        compressors=ZstdCodec(level=ZSTD_LEVEL),
        dimension_names=("feature",),
    )
    array[:] = names.astype(str)


def read_feature_names(group: zarr.Group, path: str, n_features: int) -> NDArray[np.object_] | None:
    """The ``feature_names`` array of a dataset or model group, checked, or None if it has none.

    Parameters
    ----------
    group : zarr.Group
        The group.
    path : str
        Its path, for messages.
    n_features : int
        Number of features D the names must match.

    Returns
    -------
    ndarray of shape (n_features,), of Python strings (dtype object, as scikit-learn's
    ``feature_names_in_``), or None

    Raises
    ------
    DataError
        If the array cannot be read, or does not hold one string per feature.
    """
    if FEATURE_NAMES not in group:
        return None
    try:
        node = group[FEATURE_NAMES]
        names = np.asarray(node[...]) if isinstance(node, zarr.Array) else None
    except Exception as err:
        raise DataError(f"{path}/{FEATURE_NAMES}: cannot be read: {err}") from err
    if names is None or names.shape != (n_features,) or names.dtype.kind not in "UTO":
        found = "not an array" if names is None else f"{names.dtype} of shape {names.shape}"
        raise DataError(
            f"{path}/{FEATURE_NAMES}: expected one name per feature ({n_features}); found {found}"
        )
    return np.asarray(names.tolist(), dtype=object)


def dataset_children(group: zarr.Group) -> list[str]:
    """Names of the groups below ``group`` that are datasets (as ``ingest mnist`` writes).

    Parameters
    ----------
    group : zarr.Group
        The group to look in.

    Returns
    -------
    list of str
        The names of its child groups that hold a ``bits`` array, sorted.
    """
    return sorted(
        key for key, child in group.members() if isinstance(child, zarr.Group) and "bits" in child
    )


def has_member(group: zarr.Group, path: str, name: str) -> bool:
    """Whether the group holds ``name``; DataError if its metadata is there but unreadable.

    Raises
    ------
    DataError
        If ``name``'s ``zarr.json`` is empty or not JSON (a damaged store).
    """
    try:
        return name in group
    except Exception as err:  # a malformed zarr.json below the group
        raise _unreadable_metadata(path, name, err) from err


def _unreadable_metadata(path: str, name: str, err: BaseException) -> DataError:
    reason = " ".join(str(err).split()) or type(err).__name__
    return DataError(
        f"{path}/{name}: cannot read its metadata (zarr.json: {reason}); the store is damaged, "
        "ingest it again"
    )


def _check_array(path: str, group: zarr.Group, name: str, ndim: int) -> zarr.Array:
    try:
        node = group[name]
    except KeyError:
        children = dataset_children(group)
        if name == "bits" and children:
            raise DataError(
                f"{path}: holds the datasets {', '.join(children)}; name one, as in "
                f"{path.rstrip('/')}/{children[0]}"
            ) from None
        raise DataError(f"{path}: not a bmm-dask dataset: it has no {name!r} array") from None
    except Exception as err:  # a malformed zarr.json below the group
        raise _unreadable_metadata(path, name, err) from err
    if not isinstance(node, zarr.Array) or node.ndim != ndim:
        raise DataError(f"{path}/{name}: expected a {ndim}-dimensional array, found {node}")
    return node


def open_dataset(
    path_or_url: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None
) -> Dataset:
    """Open a dataset group written by ``bmm-dask ingest`` or ``bmm-dask synth``.

    Parameters
    ----------
    path_or_url : str or path-like
        The group: a folder (``mnist.zarr/train``), a ``.zip`` of one, or a URL that zarr and
        fsspec can read.
    storage_options : dict, default=None
        Passed to fsspec for URLs.

    Returns
    -------
    Dataset
        The dataset, its rows and labels as lazy Dask arrays (one task per chunk).

    Raises
    ------
    DataError
        When the path is missing or is not a dataset, with a message that says what it holds.
    """
    path = os.fspath(path_or_url)
    group, attrs, n_features, arrays, checked = _open_checked(path, storage_options)
    bits_array = arrays["bits"]
    from dask.base import tokenize

    token = tokenize(path, attrs, bits_array.shape, bits_array.chunks, _mtime(path))
    generation = attrs.get(GENERATION)
    bits = _read_array(bits_array, path, "bits", f"bmm-read-bits-{token}", checked, generation)
    labels = None
    if "labels" in arrays:
        labels = _read_array(
            arrays["labels"], path, "labels", f"bmm-read-labels-{token}", checked, generation
        )
    return Dataset(
        path=path, bits=bits, labels=labels, n_features=n_features, attrs=attrs, group=group
    )


def _open_checked(
    path: str, storage_options: Mapping[str, Any] | None
) -> tuple[zarr.Group, dict[str, Any], int, dict[str, zarr.Array], bool]:
    """Open a dataset's group and check it as :func:`open_dataset` promises, without Dask.

    Returns the group, its attributes, the number of features, its Zarr arrays by name, and
    whether every chunk is recorded as stored.
    """
    group = open_group(path, storage_options)
    attrs = dict(group.attrs)
    try:
        return _checked(path, group, attrs)
    except DataError:
        # the store may have been replaced between two of these reads: say so, if it was
        _check_generation(path, attrs.get(GENERATION))
        raise


def _checked(
    path: str, group: zarr.Group, attrs: dict[str, Any]
) -> tuple[zarr.Group, dict[str, Any], int, dict[str, zarr.Array], bool]:
    kind = format_name(path, attrs, DataError)
    other = {
        "bmm_dask.checkpoint": "the checkpoint of an unfinished fit (bmm-dask fit ... --resume "
        "finishes it)",
        "bmm_dask.model": "a model",
        "bmm_dask.predictions": "predictions",
    }
    if kind in other:  # said before its members are listed, which Zarr would warn of
        raise DataError(f"{path}: {other[kind]}, not a dataset")
    bits_array = _check_array(path, group, "bits", 2)
    check_version(path, attrs, DATASET_FORMAT, "dataset", DataError)
    n_features = attrs.get("n_features")
    if not isinstance(n_features, int) or n_features < 1:
        raise DataError(
            f"{path}: attribute n_features should be a positive integer; found {n_features!r}"
        )
    if bits_array.dtype != np.uint8 or bits_array.shape[1] != n_packed_bytes(n_features):
        raise DataError(
            f"{path}/bits: expected uint8 rows of {n_packed_bytes(n_features)} bytes for "
            f"{n_features} features; found {bits_array.dtype} of shape {bits_array.shape}"
        )
    if bits_array.chunks[1] != bits_array.shape[1]:
        raise DataError(
            f"{path}/bits: must be chunked by rows only; found chunks {bits_array.chunks}"
        )
    shape = attrs.get("image_shape")
    if shape is not None and not (
        isinstance(shape, list)
        and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
        and int(np.prod(shape)) == n_features
    ):
        raise DataError(
            f"{path}: attribute image_shape should be a list of whole numbers whose product is "
            f"its {n_features} features; found {shape!r}"[:300]
        )
    arrays = {"bits": bits_array}
    if has_member(group, path, "labels"):
        arrays["labels"] = labels_array = _check_array(path, group, "labels", 1)
        if labels_array.shape[0] != bits_array.shape[0]:
            raise DataError(
                f"{path}/labels: has {labels_array.shape[0]} labels for {bits_array.shape[0]} rows"
            )
    checked = _check_chunks_stored(path, attrs, arrays)
    return group, attrs, n_features, arrays, checked


def _check_chunks_stored(
    path: str, attrs: Mapping[str, Any], arrays: Mapping[str, zarr.Array]
) -> bool:
    """Whether the store records that its writer stored every chunk (then a missing chunk is an
    error when read); refuse a folder or zip that lacks one of its chunks now.

    Listing a folder or a zip is cheap and sure; a store over a URL may not list at all, so there
    a missing chunk is found when it is read.
    """
    record = attrs.get(CHUNKS_STORED)
    if record is None:
        warnings.warn(
            f"{path}: written without a record of its chunks (by an older bmm-dask, or another "
            "program), so a chunk lost from the store would read as rows of zeros, unnoticed; "
            "ingest it again for a store whose chunks are checked",
            UserWarning,
            stacklevel=3,
        )
        return False
    if isinstance(record, dict) and "labels" in record and "labels" not in arrays:
        raise DataError(
            f"{path}/labels: missing from the store, though it was written with labels "
            "(its metadata deleted, or lost in a copy); restore the store from a good copy, or "
            "ingest it again"
        )
    for name, array in arrays.items():
        recorded = record.get(name) if isinstance(record, dict) else None
        if recorded != array.nchunks:
            raise DataError(
                f"{path}: attribute {CHUNKS_STORED} records {recorded!r} chunks of {name}, but "
                f"{name} has {array.nchunks}: the attributes do not belong to these arrays; "
                "ingest it again"
            )
        if not is_url(path) and array.nchunks_initialized < array.nchunks:
            for chunk in range(array.nchunks):
                if not _chunk_stored(array, chunk):
                    raise _missing_chunk(path, name, array, chunk)
    return True


def _chunk_stored(array: zarr.Array, chunk: int) -> bool:
    """Whether the store holds chunk ``chunk`` (counted along the rows) of ``array``."""
    key = array.metadata.encode_chunk_key((chunk,) + (0,) * (array.ndim - 1))
    return bool(sync((array.store_path / key).exists()))


def _missing_chunk(path: str, name: str, array: zarr.Array, chunk: int) -> DataError:
    rows = array.chunks[0]
    first, last = chunk * rows, min((chunk + 1) * rows, array.shape[0]) - 1
    return DataError(
        f"{path}/{name}: chunk {chunk} (rows {first}..{last}) is missing from the store (deleted, "
        "lost in a copy, or not found on the server); restore the store from a good copy, or "
        "ingest it again"
    )


def _is_fetch_error(err: BaseException) -> bool:
    """Whether a read failed on the way to the store (refused, timed out, an HTTP error status),
    as against a chunk that came back and failed to decode."""
    # aiohttp (fsspec's HTTP) and botocore are optional: their errors are told by their module.
    return isinstance(err, OSError | TimeoutError) or any(
        cls.__module__.partition(".")[0] in ("aiohttp", "botocore", "aiobotocore", "requests")
        for cls in type(err).__mro__
    )


def _unreadable(
    path: str, name: str, chunk: int, start: int, stop: int, err: BaseException
) -> DataError:
    where = f"{path}/{name}: chunk {chunk} (rows {start}..{stop - 1})"
    reason = " ".join(str(err).split()) or type(err).__name__
    if is_url(path) and _is_fetch_error(err):
        return DataError(
            f"{where} could not be fetched: {reason}; check the server or the connection, "
            "and try again"
        )
    return DataError(f"{where} cannot be read: {reason}; the store is damaged, ingest it again")


def _read_rows(
    array: zarr.Array,
    path: str,
    name: str,
    every_chunk_stored: bool,
    generation: str | None,
    block_info: Any = None,
) -> NDArray[Any]:
    """One chunk of rows (for map_blocks), or a DataError that names the array and the chunk."""
    start, stop = block_info[None]["array-location"][0]
    return _read_range(
        array,
        path,
        name,
        start,
        stop,
        every_chunk_stored=every_chunk_stored,
        generation=generation,
    )


def _check_generation(path: str, generation: str | None) -> None:
    """Raise DataError if the store at ``path`` is not the writing ``generation`` (None: a
    store of an older version, which cannot be told; nothing is checked)."""
    if generation is None:
        return
    try:
        now = dict(open_group(path, None).attrs).get(GENERATION)
    except Exception:
        if is_url(path):
            return  # a server that cannot be reached says nothing of what it holds
        now = None  # gone, or half there: another command is replacing it
    if now != generation:
        raise DataError(
            f"{path}: replaced by another command while this one read it (ingest or synth "
            "--overwrite?), so what was read may mix two datasets; nothing was written, run it "
            "again"
        )


def _read_range(
    array: zarr.Array,
    path: str,
    name: str,
    start: int,
    stop: int,
    *,
    every_chunk_stored: bool = False,
    generation: str | None = None,
) -> NDArray[Any]:
    """Rows ``start:stop``, or a DataError that names the array and the chunk.

    With ``every_chunk_stored`` (the store records that its writer stored every chunk), a chunk
    missing from the store is an error too, where Zarr would give rows of fill value. With the
    store's ``generation``, a chunk that cannot be read in a store replaced meanwhile says so
    (not that the store is damaged).
    """
    try:
        values = np.asarray(array[start:stop])
    except Exception as err:
        _check_generation(path, generation)
        rows = array.chunks[0]
        if stop - start > rows:  # several chunks: find the one that cannot be read
            for first in range(start - start % rows, stop, rows):
                _read_range(array, path, name, max(first, start), min(first + rows, stop))
        raise _unreadable(path, name, start // rows, start, stop, err) from err
    if every_chunk_stored:
        try:
            _check_read_chunks(array, path, name, start, values)
        except DataError:
            _check_generation(path, generation)
            raise
    return values


def _check_read_chunks(
    array: zarr.Array, path: str, name: str, start: int, values: NDArray[Any]
) -> None:
    """Refuse rows read from a chunk that is missing from the store.

    Zarr reads a missing chunk (a deleted file, an HTTP 404) as fill value, zeros. So only a
    chunk whose rows are all zeros is looked up: real data costs one scan of its bytes (small
    against reading them) and no request to the store.
    """
    rows = array.chunks[0]
    stop = start + len(values)
    for first in range(start - start % rows, stop, rows):
        lo, hi = max(first, start), min(first + rows, stop)
        if values[lo - start : hi - start].any():
            continue
        try:
            stored = _chunk_stored(array, first // rows)
        except Exception as err:
            raise _unreadable(path, name, first // rows, lo, hi, err) from err
        if not stored:
            raise _missing_chunk(path, name, array, first // rows)


def _read_array(
    array: zarr.Array,
    path: str,
    name: str,
    key: str,
    every_chunk_stored: bool = False,
    generation: str | None = None,
) -> da.Array:
    """A Dask array over a Zarr array, one task per chunk, whose read errors name the chunk."""
    import dask.array as da

    # A partial, so that Dask does not take the Zarr array for an array to map over.
    return da.map_blocks(
        functools.partial(_read_rows, array, path, name, every_chunk_stored, generation),
        chunks=da.core.normalize_chunks(array.chunks, array.shape),
        dtype=array.dtype,
        meta=np.empty((0,) * array.ndim, dtype=array.dtype),
        name=key,
    )


def _mtime(path: str) -> int | None:
    """When a local store last changed, so a rewritten store gets new task names."""
    try:
        return max(os.stat(p).st_mtime_ns for p in (path, os.path.join(path, "bits", "zarr.json")))
    except OSError:
        return None


def describe_dataset(dataset: Dataset | str | os.PathLike[str]) -> dict[str, Any]:
    """What ``bmm-dask info`` shows of a dataset, as plain values.

    Parameters
    ----------
    dataset : Dataset, or the path of one
        A path is opened and checked as :func:`open_dataset` does, without importing Dask.

    Returns
    -------
    dict
        ``kind`` ("dataset"), ``path``, ``n_samples``, ``n_features``, ``image_shape``,
        ``binarization``, ``labels`` (whether it has them), ``chunk_rows``, ``n_chunks``,
        ``bytes_stored``, ``bytes_packed``, ``bytes_unpacked``, ``source``, ``density`` and
        ``n_ones`` (the share and number of ones, as recorded at ingest; None for a dataset
        written without them), ``named_features`` (how many features have names: 0 or
        ``n_features``) and ``first_feature_names`` (up to :data:`NAMES_SHOWN` of them).

    Raises
    ------
    DataError
        When a path is missing or is not a dataset.
    """
    if isinstance(dataset, Dataset):
        path, group, attrs = dataset.path, dataset.group, dict(dataset.attrs)
        n_features = dataset.n_features
    else:
        path = os.fspath(dataset)
        group, attrs, n_features, _, _ = _open_checked(path, None)
    bits = group["bits"]
    has_labels = "labels" in group
    stored = int(bits.nbytes_stored()) + (int(group["labels"].nbytes_stored()) if has_labels else 0)
    n_samples = int(bits.shape[0])
    chunk_rows = int(bits.chunks[0])
    shape = attrs.get("image_shape")
    names = read_feature_names(group, path, n_features)
    return {
        "kind": "dataset",
        "path": path,
        "n_samples": n_samples,
        "n_features": n_features,
        "image_shape": list(shape) if shape else None,
        "binarization": dict(attrs.get("binarization", {})),
        "labels": has_labels,
        "chunk_rows": min(chunk_rows, n_samples) if n_samples else chunk_rows,
        "n_chunks": -(-n_samples // chunk_rows),
        "bytes_stored": stored,
        "bytes_packed": n_samples * n_packed_bytes(n_features),
        "bytes_unpacked": n_samples * n_features,
        "source": attrs.get("source"),
        "density": attrs.get("density"),
        "n_ones": attrs.get("n_ones"),
        "named_features": 0 if names is None else len(names),
        "first_feature_names": [] if names is None else names[:NAMES_SHOWN].tolist(),
    }
