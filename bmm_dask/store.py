"""Zarr layouts for binarised datasets, and outputs written atomically (temporary sibling, then rename)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr
import zarr.errors
from dask.base import tokenize
from numpy.typing import NDArray
from zarr.codecs import ZstdCodec
from zarr.core.sync import sync

from bmm_dask.errors import DataError, OutputError, SettingsError
from bmm_dask.kernels import n_packed_bytes, unpack_bits

__all__ = [
    "CHUNKS_STORED",
    "CHUNK_BYTES",
    "DATASET_FORMAT",
    "Dataset",
    "DatasetWriter",
    "atomic_file",
    "atomic_output",
    "default_chunk_rows",
    "describe_dataset",
    "describe_model",
    "describe_path",
    "open_dataset",
    "output_lock",
    "parse_chunk_rows",
    "read_checkpoint",
    "read_model",
    "write_checkpoint",
    "write_model",
]

logger = logging.getLogger(__name__)

#: What a dataset group's ``format`` attribute holds; bumped when the layout changes.
DATASET_FORMAT = {"name": "bmm_dask.dataset", "version": 1}

#: The dataset attribute in which the writer records how many chunks it stored of each array
#: (``{"bits": n, "labels": n}``). Zarr leaves out chunks that are all fill value, so a chunk lost
#: from a store written that way reads as rows of zeros; the writer stores every chunk, and this
#: record tells a reader that a missing one is damage.
CHUNKS_STORED = "chunks_stored"

#: Uncompressed bytes of packed rows a chunk aims at (1 MiB: about 10,000 MNIST images).
CHUNK_BYTES = 1 << 20

#: zstd level for new datasets: level 3 stores MNIST at about 28 bytes an image, and writes
#: 60,000 images in about 50 ms; level 19 saves a further 18 % at 30 times the time.
ZSTD_LEVEL = 3


def default_chunk_rows(n_features: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Rows in a chunk of about ``chunk_bytes`` packed bytes, a multiple of 1024 when that large.

    >>> default_chunk_rows(784), default_chunk_rows(64), default_chunk_rows(10**7)
    (10240, 131072, 1)
    """
    rows = max(1, chunk_bytes // n_packed_bytes(n_features))
    return rows - rows % 1024 if rows >= 1024 else rows


def parse_chunk_rows(chunk_rows: int | None, n_features: int) -> int:
    """Check a requested number of rows a chunk, or choose one from the row size."""
    if chunk_rows is None:
        return default_chunk_rows(n_features)
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int | np.integer):
        raise SettingsError(f"chunk rows must be a whole number; got {chunk_rows!r}")
    if chunk_rows < 1:
        raise SettingsError(f"chunk rows must be at least 1; got {chunk_rows}")
    return int(chunk_rows)


# --------------------------------------------------------------------------- atomic outputs


def _is_url(path: str | os.PathLike[str]) -> bool:
    return "://" in str(path)


def _local_input(path: str | os.PathLike[str]) -> Path | None:
    """The file or folder on this machine that an input path reads (a zip for ``x.zip/train``)."""
    text = os.fspath(path)
    if _is_url(text):
        return None
    zip_file, sep, _ = text.partition(".zip/")
    return Path(zip_file + ".zip" if sep else text).resolve()


def check_not_input(
    target: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str] | None]
) -> None:
    """Refuse an output that is an input, holds one, or lies inside one (after symlinks).

    Replacing such an output (``--overwrite``) would destroy the data being read; writing inside
    one would change it. The current folder and the folders above it are refused as outputs
    too: replacing them would take everything in them.

    Raises
    ------
    OutputError
    """
    out = Path(target).resolve()
    cwd = Path.cwd().resolve()
    if out == cwd or out in cwd.parents:
        raise OutputError(
            f"{target}: is the current folder or holds it; write to a new folder inside it"
        )
    for given in inputs:
        if given is None:
            continue
        source = _local_input(given)
        if source is None:
            continue
        if out == source:
            raise OutputError(f"{target}: is an input of this command; choose another output")
        if out in source.parents:
            raise OutputError(
                f"{target}: holds {given}, an input of this command; choose another output"
            )
        if source in out.parents:
            raise OutputError(
                f"{target}: lies inside {given}, an input of this command; choose another output"
            )


def check_output(
    target: str | os.PathLike[str],
    *,
    overwrite: bool,
    inputs: Sequence[str | os.PathLike[str] | None] = (),
) -> None:
    """Refuse an output that exists (unless ``overwrite``), that is or holds one of ``inputs``,
    or whose folder is missing or read-only.

    Raises
    ------
    OutputError
    """
    if _is_url(target):
        raise OutputError(f"{target}: outputs are written to a folder on this machine, not a URL")
    target = Path(target)
    check_not_input(target, inputs)
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise OutputError(f"{target}: exists already; pass --overwrite to replace it")
    parent = target.absolute().parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise OutputError(f"{target}: cannot write there: {parent} {what}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{target}: cannot write there: {parent} is not writable")


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike[str] | None] = (),
) -> Iterator[Path]:
    """Write a folder (a Zarr store) under a temporary sibling name, then rename it into place.

    The body writes into the yielded folder. If it raises, or the process is interrupted, the
    temporary folder is removed and ``path`` is untouched: an existing output is replaced only
    once the new one is complete (and only with ``overwrite``). The output's lock
    (:func:`output_lock`) is held throughout, so two commands never write one output at once,
    and an output that appears meanwhile is never replaced without ``overwrite``.

    Raises
    ------
    OutputError
        When ``path`` exists and ``overwrite`` is false, is or holds one of ``inputs``, or its
        parent folder is missing or cannot be written.
    """
    check_output(path, overwrite=overwrite, inputs=inputs)
    target = Path(path)
    parent = target.absolute().parent
    with output_lock(target):
        check_output(target, overwrite=overwrite, inputs=inputs)  # again, now that we hold it
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
        except OSError as err:
            raise OutputError(f"{target}: cannot write in {parent}: {err.strerror}") from err
        try:
            # mkdtemp makes a private (0700) folder; give the store the usual permissions.
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o777 & ~umask)
            yield tmp
            _replace(tmp, target, overwrite=overwrite)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def atomic_file(
    final: str | os.PathLike[str], write: Callable[[Path], Any], *, overwrite: bool = True
) -> Path:
    """Write a file under a temporary name in its folder (``write(tmp)``), then rename it into place.

    Without ``overwrite`` a file that exists at the moment of the rename is left alone and
    :class:`OutputError` raised.
    """
    final = Path(final)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=".part", dir=final.absolute().parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        tmp.chmod(0o644)
        if overwrite:
            os.replace(tmp, final)
        else:
            try:  # a hard link is created whole, and never over an existing name
                os.link(tmp, final)
            except FileExistsError:
                raise OutputError(
                    f"{final}: appeared while this command was writing it; pass --overwrite to replace it"
                ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return final


def _rename_noreplace(source: Path, target: Path) -> bool:
    """Rename ``source`` to ``target`` unless ``target`` exists, in one step (Linux renameat2).

    Returns False where the system cannot do it in one step (the caller then checks under its
    lock); raises FileExistsError when ``target`` exists.
    """
    libc = _libc()
    renameat2 = getattr(libc, "renameat2", None) if libc is not None else None
    if renameat2 is None:
        return False
    at_fdcwd, rename_noreplace = -100, 1
    result = renameat2(
        at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(target), rename_noreplace
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code == errno.EEXIST:
        raise FileExistsError(code, os.strerror(code), os.fspath(target))
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # not on this filesystem or kernel
        return False
    raise OSError(code, os.strerror(code), os.fspath(target))


@functools.cache
def _libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _replace(tmp: Path, target: Path, *, overwrite: bool) -> None:
    if not (target.exists() or target.is_symlink()):
        try:
            if _rename_noreplace(tmp, target):
                return
        except FileExistsError:
            pass  # another writer finished first: refused below, unless overwrite
        else:
            if not (target.exists() or target.is_symlink()):
                os.rename(tmp, target)
                return
    if not overwrite:
        raise OutputError(
            f"{target}: appeared while this command was writing it; pass --overwrite to replace it"
        )
    old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
    os.rename(target, old)
    os.rename(tmp, target)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


# --------------------------------------------------------------------------- writing


@dataclass
class DatasetWriter:
    """Arrays of a new dataset group, filled a block of rows at a time.

    Blocks should start on chunk boundaries (as :meth:`create` and the callers arrange), so that
    every chunk is written once, whole.
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
        """
        group = zarr.open_group(zarr.storage.LocalStore(path), mode="w")
        chunk_rows = min(chunk_rows, n_samples)
        n_chunks = -(-n_samples // chunk_rows)
        stored = {"bits": n_chunks, **({"labels": n_chunks} if labels_dtype is not None else {})}
        # The record comes last: attributes copied from another dataset must not replace it.
        group.attrs.update(
            {
                "format": DATASET_FORMAT,
                "n_features": int(n_features),
                **(attrs or {}),
                CHUNKS_STORED: stored,
            }
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
        return int(self.bits.chunks[0])

    def write(
        self, start: int, packed: NDArray[np.uint8], labels: NDArray[Any] | None = None
    ) -> None:
        """Write rows ``start : start + len(packed)`` of the bits (and labels)."""
        stop = start + len(packed)
        self.bits[start:stop] = packed
        if labels is not None:
            assert self.labels is not None
            self.labels[start:stop] = labels

    def update_attrs(self, attrs: Mapping[str, Any]) -> None:
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
    attrs : dict
        The group's attributes: ``image_shape``, ``binarization``, ``source``, ...
    """

    path: str
    bits: da.Array
    labels: da.Array | None
    n_features: int
    attrs: Mapping[str, Any] = field(repr=False)
    group: zarr.Group = field(repr=False, compare=False)

    @property
    def n_samples(self) -> int:
        return int(self.bits.shape[0])

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        shape = self.attrs.get("image_shape")
        return tuple(shape) if shape else None

    @property
    def binarization(self) -> dict[str, Any]:
        return dict(self.attrs.get("binarization", {}))

    @property
    def chunk_rows(self) -> int:
        return int(self.bits.chunks[0][0])

    def unpacked(self, dtype: np.typing.DTypeLike = np.uint8) -> da.Array:
        """The rows as 0/1 values, shape (n_samples, n_features), unpacked a chunk at a time."""
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
        """A small picklable function ``(start, stop) -> packed rows`` that reads the store
        (for tasks that read their own chunk; a read error or a missing chunk names the chunk)."""
        return functools.partial(
            _read_range,
            self.group["bits"],
            self.path,
            "bits",
            every_chunk_stored=CHUNKS_STORED in self.attrs,
        )

    def fingerprint(self) -> dict[str, Any]:
        """What a model records of the data it was fitted on."""
        path = self.path if _is_url(self.path) else os.path.abspath(self.path)
        return {
            "path": path,
            "n_samples": self.n_samples,
            "n_features": self.n_features,
            "binarization": self.binarization,
            "image_shape": list(self.image_shape) if self.image_shape else None,
        }

    def read_array(self, name: str) -> NDArray[Any]:
        """Read a small array stored beside the data (``true_means``, ``true_weights``)."""
        try:
            return np.asarray(self.group[name][...])
        except KeyError as err:
            raise DataError(f"{self.path}: has no array {name!r}") from err


def _open_group(path: str, storage_options: Mapping[str, Any] | None) -> zarr.Group:
    """Open a group read-only: a folder, a URL, or a group inside a zip (``store.zip/train``)."""
    inner = zip_file = None
    if _is_url(path):
        store: Any = path
    else:
        zip_file, sep, inner = path.partition(".zip/")
        zip_file += ".zip" if sep else ""
        if (sep or path.endswith(".zip")) and Path(zip_file).is_file():
            store = zarr.storage.ZipStore(zip_file if sep else path, mode="r")
        elif Path(path).exists():
            store = zarr.storage.LocalStore(path, read_only=True)
        else:
            raise DataError(f"{path}: no such file or folder")
    try:
        return zarr.open_group(store, mode="r", path=inner or None, storage_options=storage_options)
    except zipfile.BadZipFile as err:
        raise DataError(f"{zip_file or path}: not a zip file, or a damaged one ({err})") from err
    except (
        FileNotFoundError,
        zarr.errors.GroupNotFoundError,
        zarr.errors.NodeTypeValidationError,
    ) as err:
        raise DataError(f"{path}: not a Zarr group (is it a dataset written by bmm-dask?)") from err
    except (ValueError, TypeError, KeyError, OSError) as err:
        raise DataError(f"{path}: cannot read it as a Zarr group: {err}") from err


def _check_version(
    path: str,
    attrs: Mapping[str, Any],
    known: Mapping[str, Any],
    what: str,
    error: type[Exception],
) -> None:
    """Refuse a store of a format version newer than this bmm-dask reads (or not a version)."""
    if "format" not in attrs:  # a group made by hand, without our format record
        return
    version = (attrs.get("format") or {}).get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise error(f"{path}: its {what} format version is {version!r}; expected a whole number")
    if version > known["version"]:
        raise error(
            f"{path}: written in {what} format version {version}, newer than this bmm-dask "
            f"reads (up to {known['version']}); upgrade bmm-dask to read it"
        )


def _dataset_children(group: zarr.Group) -> list[str]:
    """Names of the groups below ``group`` that are datasets (as ``ingest mnist`` writes)."""
    return sorted(
        key for key, child in group.members() if isinstance(child, zarr.Group) and "bits" in child
    )


def _check_array(path: str, group: zarr.Group, name: str, ndim: int) -> zarr.Array:
    try:
        node = group[name]
    except KeyError:
        children = _dataset_children(group)
        if name == "bits" and children:
            raise DataError(
                f"{path}: holds the datasets {', '.join(children)}; name one, as in "
                f"{path.rstrip('/')}/{children[0]}"
            ) from None
        raise DataError(f"{path}: not a bmm-dask dataset: it has no {name!r} array") from None
    except Exception as err:  # a malformed zarr.json below the group
        raise DataError(f"{path}/{name}: cannot read its metadata: {err}") from err
    if not isinstance(node, zarr.Array) or node.ndim != ndim:
        raise DataError(f"{path}/{name}: expected a {ndim}-dimensional array, found {node}")
    return node


def open_dataset(
    path_or_url: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None
) -> Dataset:
    """Open a dataset group written by ``bmm-dask ingest`` or ``bmm-dask synth``.

    Parameters
    ----------
    path_or_url : str or path
        The group: a folder (``mnist.zarr/train``), a ``.zip`` of one, or a URL that zarr and
        fsspec can read.
    storage_options : dict, optional
        Passed to fsspec for URLs.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        When the path is missing or is not a dataset, with a message that says what it holds.
    """
    path = os.fspath(path_or_url)
    group = _open_group(path, storage_options)
    attrs = dict(group.attrs)
    bits_array = _check_array(path, group, "bits", 2)
    _check_version(path, attrs, DATASET_FORMAT, "dataset", DataError)
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
    arrays = {"bits": bits_array}
    if "labels" in group:
        arrays["labels"] = labels_array = _check_array(path, group, "labels", 1)
        if labels_array.shape[0] != bits_array.shape[0]:
            raise DataError(
                f"{path}/labels: has {labels_array.shape[0]} labels for {bits_array.shape[0]} rows"
            )
    checked = _check_chunks_stored(path, attrs, arrays)
    token = tokenize(path, attrs, bits_array.shape, bits_array.chunks, _mtime(path))
    bits = _read_array(bits_array, path, "bits", f"bmm-read-bits-{token}", checked)
    labels = None
    if "labels" in arrays:
        labels = _read_array(arrays["labels"], path, "labels", f"bmm-read-labels-{token}", checked)
    return Dataset(
        path=path, bits=bits, labels=labels, n_features=n_features, attrs=attrs, group=group
    )


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
    for name, array in arrays.items():
        recorded = record.get(name) if isinstance(record, dict) else None
        if recorded != array.nchunks:
            raise DataError(
                f"{path}: attribute {CHUNKS_STORED} records {recorded!r} chunks of {name}, but "
                f"{name} has {array.nchunks}: the attributes do not belong to these arrays; "
                "ingest it again"
            )
        if not _is_url(path) and array.nchunks_initialized < array.nchunks:
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
    if _is_url(path) and _is_fetch_error(err):
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
    block_info: Any = None,
) -> NDArray[Any]:
    """One chunk of rows (for map_blocks), or a DataError that names the array and the chunk."""
    start, stop = block_info[None]["array-location"][0]
    return _read_range(array, path, name, start, stop, every_chunk_stored=every_chunk_stored)


def _read_range(
    array: zarr.Array,
    path: str,
    name: str,
    start: int,
    stop: int,
    *,
    every_chunk_stored: bool = False,
) -> NDArray[Any]:
    """Rows ``start:stop``, or a DataError that names the array and the chunk.

    With ``every_chunk_stored`` (the store records that its writer stored every chunk), a chunk
    missing from the store is an error too, where Zarr would give rows of fill value.
    """
    try:
        values = np.asarray(array[start:stop])
    except Exception as err:
        rows = array.chunks[0]
        if stop - start > rows:  # several chunks: find the one that cannot be read
            for first in range(start - start % rows, stop, rows):
                _read_range(array, path, name, max(first, start), min(first + rows, stop))
        raise _unreadable(path, name, start // rows, start, stop, err) from err
    if every_chunk_stored:
        _check_read_chunks(array, path, name, start, values)
    return values


def _check_read_chunks(
    array: zarr.Array, path: str, name: str, start: int, values: NDArray[Any]
) -> None:
    """Refuse rows read from a chunk that is missing from the store.

    Zarr reads a missing chunk (a deleted file, an HTTP 404) as fill value, zeros. So only a
    chunk whose rows are all zeros is looked up: real data costs one scan of its bytes (0.2 ms
    for MNIST's 60,000 rows, which take 7 ms to read) and no request to the store.
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
    array: zarr.Array, path: str, name: str, key: str, every_chunk_stored: bool = False
) -> da.Array:
    """A Dask array over a Zarr array, a task a chunk, whose read errors name the chunk."""
    # A partial, so that Dask does not take the Zarr array for an array to map over.
    return da.map_blocks(
        functools.partial(_read_rows, array, path, name, every_chunk_stored),
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


def describe_dataset(dataset: Dataset) -> dict[str, Any]:
    """What ``bmm-dask info`` shows of a dataset, as plain values."""
    stored = int(dataset.group["bits"].nbytes_stored())
    if dataset.labels is not None:
        stored += int(dataset.group["labels"].nbytes_stored())
    packed = dataset.n_samples * n_packed_bytes(dataset.n_features)
    return {
        "kind": "dataset",
        "path": dataset.path,
        "n_samples": dataset.n_samples,
        "n_features": dataset.n_features,
        "image_shape": list(dataset.image_shape) if dataset.image_shape else None,
        "binarization": dataset.binarization,
        "labels": dataset.labels is not None,
        "chunk_rows": dataset.chunk_rows,
        "n_chunks": len(dataset.bits.chunks[0]),
        "bytes_stored": stored,
        "bytes_packed": packed,
        "bytes_unpacked": dataset.n_samples * dataset.n_features,
        "source": dataset.attrs.get("source"),
    }


def describe_path(path_or_url: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Describe a model, a dataset, or each dataset of a group that holds several (``mnist.zarr``)."""
    path = os.fspath(path_or_url)
    group = _open_group(path, None)
    kind = (group.attrs.get("format") or {}).get("name")
    if kind == MODEL_FORMAT["name"]:
        return [describe_model(path)]
    if kind == CHECKPOINT_FORMAT["name"]:
        _, state, attrs = read_checkpoint(path)
        return [
            {
                "kind": "checkpoint",
                "path": path,
                "start": state["run"] + 1,
                "iterations": len(state["history"]),
                "objective": state["history"][-1]["objective"] if state["history"] else None,
                "settings": attrs.get("settings"),
                "data": attrs.get("data"),
            }
        ]
    if "bits" in group:
        return [describe_dataset(open_dataset(path))]
    names = _dataset_children(group)
    if not names:
        raise DataError(f"{path}: a Zarr group, but neither a dataset nor a group of datasets")
    return [describe_dataset(open_dataset(f"{path.rstrip('/')}/{name}")) for name in names]


# --------------------------------------------------------------------------- models

#: What a model group's ``format`` attribute holds.
MODEL_FORMAT = {"name": "bmm_dask.model", "version": 1}


def write_model(
    path: str | os.PathLike[str],
    means: NDArray[np.float64],
    weights: NDArray[np.float64],
    attrs: Mapping[str, Any],
    *,
    overwrite: bool = False,
) -> Path:
    """Write a model group (``means`` (K, D) float64, ``weights`` (K,), attrs) atomically."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        group = zarr.open_group(zarr.storage.LocalStore(tmp), mode="w")
        group.attrs.update({"format": MODEL_FORMAT, **attrs})
        group.create_array(
            "means",
            data=np.asarray(means, dtype=np.float64),
            dimension_names=("component", "feature"),
        )
        group.create_array(
            "weights", data=np.asarray(weights, dtype=np.float64), dimension_names=("component",)
        )
    return Path(path)


def read_model(
    path: str | os.PathLike[str],
) -> tuple[NDArray[np.float64], NDArray[np.float64], dict[str, Any]]:
    """Read a model group: means (K, D), weights (K,) and its attributes, checked."""
    path = os.fspath(path)
    from bmm_dask.errors import ModelFileError

    try:
        group = _open_group(path, None)
    except DataError as err:
        raise ModelFileError(str(err)) from err
    attrs = dict(group.attrs)
    kind = (attrs.get("format") or {}).get("name")
    if kind == CHECKPOINT_FORMAT["name"]:
        raise ModelFileError(
            f"{path}: the checkpoint of an unfinished fit, not a model; 'bmm-dask fit ... --resume' finishes it"
        )
    if kind != MODEL_FORMAT["name"]:
        raise ModelFileError(f"{path}: not a bmm-dask model (no model format attribute)")
    _check_version(path, attrs, MODEL_FORMAT, "model", ModelFileError)
    try:
        means = np.asarray(group["means"][...], dtype=np.float64)
        weights = np.asarray(group["weights"][...], dtype=np.float64)
    except Exception as err:
        raise ModelFileError(
            f"{path}: cannot read the model's arrays (truncated or corrupt?): {err}"
        ) from err
    if means.ndim != 2 or weights.shape != (means.shape[0],):
        raise ModelFileError(
            f"{path}: means {means.shape} and weights {weights.shape} do not fit together"
        )
    if not (
        np.all((means > 0) & (means < 1)) and np.all(weights >= 0) and np.isclose(weights.sum(), 1)
    ):
        raise ModelFileError(f"{path}: means must lie in (0, 1) and weights sum to 1")
    return means, weights, attrs


def describe_model(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``bmm-dask info`` shows of a model, as plain values."""
    means, weights, attrs = read_model(path)
    return {
        "kind": "model",
        "path": os.fspath(path),
        "n_components": int(means.shape[0]),
        "n_features": int(means.shape[1]),
        "weights": weights.tolist(),
        **{k: v for k, v in attrs.items() if k not in ("format", "history")},
        "n_history": len(attrs.get("history", [])),
    }


# --------------------------------------------------------------------------- checkpoints and locks

#: What the ``format`` attribute of an unfinished fit's store holds.
CHECKPOINT_FORMAT = {"name": "bmm_dask.checkpoint", "version": 1}
CHECKPOINT_FILE = "checkpoint.npz"


def write_checkpoint(
    path: str | os.PathLike[str],
    arrays: Mapping[str, NDArray[Any]],
    state: Mapping[str, Any],
    attrs: Mapping[str, Any],
) -> None:
    """Save a fit's state in ``path``: a Zarr group marked unfinished, holding ``checkpoint.npz``.

    The first checkpoint creates the store (atomically, replacing what was there); later ones
    replace ``checkpoint.npz`` alone, by a rename, so a kill at any moment leaves the previous
    checkpoint or the new one, never a mix.
    """
    target = Path(path)

    def write_npz(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, state=np.array(json.dumps(dict(state))), **dict(arrays))

    if (target / CHECKPOINT_FILE).is_file():
        atomic_file(target / CHECKPOINT_FILE, write_npz)
        return
    with atomic_output(target, overwrite=True) as tmp:
        group = zarr.open_group(zarr.storage.LocalStore(tmp), mode="w")
        group.attrs.update({"format": CHECKPOINT_FORMAT, **attrs})
        write_npz(tmp / CHECKPOINT_FILE)


def read_checkpoint(
    path: str | os.PathLike[str],
) -> tuple[dict[str, NDArray[Any]], dict[str, Any], dict[str, Any]]:
    """The arrays, state and attributes a checkpoint holds."""
    from bmm_dask.errors import ModelFileError

    group = _open_group(os.fspath(path), None)
    attrs = dict(group.attrs)
    if (attrs.get("format") or {}).get("name") != CHECKPOINT_FORMAT["name"]:
        raise ModelFileError(f"{path}: not the checkpoint of an unfinished fit")
    _check_version(os.fspath(path), attrs, CHECKPOINT_FORMAT, "checkpoint", ModelFileError)
    try:
        with np.load(Path(path) / CHECKPOINT_FILE, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k != "state"}
            state = json.loads(str(npz["state"]))
    except (OSError, ValueError, KeyError) as err:
        raise ModelFileError(
            f"{path}/{CHECKPOINT_FILE}: cannot read the checkpoint: {err}"
        ) from err
    return arrays, state, attrs


#: Locks this process holds, by path, with how many times each is held (a fit holds its output's
#: lock and saves the model through atomic_output, which takes it again).
_HELD_LOCKS: dict[str, int] = {}

#: An empty or unreadable lock younger than this may be one being written by another process
#: (locks of older versions were written after they were created); older ones are stale.
UNREADABLE_LOCK_SECONDS = 10.0


@contextlib.contextmanager
def output_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``PATH.lock`` while a command writes ``path``; refuse when another live process does.

    A lock left by a process that no longer runs (killed, say) on this machine is taken over, and
    so is an empty or unreadable one more than a few seconds old. The lock is re-entrant within
    a process.

    Raises
    ------
    OutputError
        When another process holds the lock, or it cannot be created.
    """
    import socket

    lock = Path(f"{os.fspath(path).rstrip('/')}.lock")
    key = os.path.abspath(lock)
    if key in _HELD_LOCKS:
        _HELD_LOCKS[key] += 1
        try:
            yield
        finally:
            _HELD_LOCKS[key] -= 1
        return
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(3):
        try:
            _create_whole(lock, json.dumps(me))
            break
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder is None or (
                holder.get("host") == me["host"] and not _alive(holder.get("pid"))
            ):
                lock.unlink(missing_ok=True)  # stale: its process is gone, or it was never written
                continue
            if not holder:
                raise OutputError(
                    f"{path}: another bmm-dask command is starting to write it (lock {lock}); "
                    "wait for it, or remove the lock if no such command runs"
                ) from None
            raise OutputError(
                f"{path}: another bmm-dask command is writing it (process {holder.get('pid')} on "
                f"{holder.get('host')}, lock {lock}); wait for it, or remove the lock if it is stale"
            ) from None
        except OSError as err:
            raise OutputError(f"{lock}: cannot create the lock: {err.strerror}") from err
    else:
        raise OutputError(f"{lock}: cannot take the lock: other commands keep taking it")
    _HELD_LOCKS[key] = 1
    try:
        yield
    finally:
        del _HELD_LOCKS[key]
        lock.unlink(missing_ok=True)


def _create_whole(path: Path, text: str) -> None:
    """Create ``path`` holding ``text``, in one step: FileExistsError when it exists."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp_name, 0o644)
        os.link(tmp_name, path)  # never over an existing name, and never seen half-written
    finally:
        os.unlink(tmp_name)


def _lock_holder(lock: Path) -> dict[str, Any] | None:
    """Who holds a lock: {"pid", "host"}; {} when it cannot be told yet; None when it is stale."""
    try:
        holder = json.loads(lock.read_text())
        if isinstance(holder, dict) and isinstance(holder.get("pid"), int):
            return holder
    except FileNotFoundError:
        return None  # released meanwhile: try again
    except (OSError, ValueError):
        pass
    try:
        age = time.time() - lock.stat().st_mtime
    except OSError:
        return None
    return None if age > UNREADABLE_LOCK_SECONDS else {}


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
