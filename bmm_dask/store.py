"""Zarr layouts for binarised datasets, and outputs written atomically (temporary sibling, then rename)."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
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

from bmm_dask.errors import DataError, OutputError, SettingsError
from bmm_dask.kernels import n_packed_bytes, unpack_bits

__all__ = [
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


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Write a folder (a Zarr store) under a temporary sibling name, then rename it into place.

    The body writes into the yielded folder. If it raises, or the process is interrupted, the
    temporary folder is removed and ``path`` is untouched: an existing output is replaced only
    once the new one is complete (and only with ``overwrite``).

    Raises
    ------
    OutputError
        When ``path`` exists and ``overwrite`` is false, or its parent folder is missing or
        cannot be written.
    """
    if _is_url(path):
        raise OutputError(f"{path}: outputs are written to a local folder, not a URL")
    target = Path(path)
    check_output(target, overwrite=overwrite)
    parent = target.absolute().parent
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
        _replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_file(final: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Write a file under a temporary name in its folder (``write(tmp)``), then rename it into place."""
    final = Path(final)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=".part", dir=final.absolute().parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        tmp.chmod(0o644)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def check_output(target: Path, *, overwrite: bool) -> None:
    """Refuse an output that exists (unless ``overwrite``) or whose folder is missing."""
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise OutputError(f"{target}: exists already; pass --overwrite to replace it")
    parent = target.absolute().parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise OutputError(f"{target}: cannot write there: {parent} {what}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{target}: cannot write there: {parent} is not writable")


def _replace(tmp: Path, target: Path) -> None:
    if not (target.exists() or target.is_symlink()):
        os.rename(tmp, target)
        return
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
        """Create the group at ``path`` (a folder that may exist and be empty)."""
        group = zarr.open_group(zarr.storage.LocalStore(path), mode="w")
        group.attrs.update(
            {"format": DATASET_FORMAT, "n_features": int(n_features), **(attrs or {})}
        )
        chunk_rows = min(chunk_rows, n_samples)
        compressor = ZstdCodec(level=zstd_level)
        bits = group.create_array(
            "bits",
            shape=(n_samples, n_packed_bytes(n_features)),
            chunks=(chunk_rows, n_packed_bytes(n_features)),
            dtype="uint8",
            compressors=compressor,
            fill_value=0,
            dimension_names=("sample", "packed_feature"),
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
        (for tasks that read their own chunk; a read error names the chunk)."""
        return functools.partial(_read_range, self.group["bits"], self.path, "bits")

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
    inner = None
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
    except (
        FileNotFoundError,
        zarr.errors.GroupNotFoundError,
        zarr.errors.NodeTypeValidationError,
    ) as err:
        raise DataError(f"{path}: not a Zarr group (is it a dataset written by bmm-dask?)") from err
    except (ValueError, TypeError, KeyError, OSError) as err:
        raise DataError(f"{path}: cannot read it as a Zarr group: {err}") from err


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
    token = tokenize(path, attrs, bits_array.shape, bits_array.chunks, _mtime(path))
    bits = _read_array(bits_array, path, "bits", f"bmm-read-bits-{token}")
    labels = None
    if "labels" in group:
        labels_array = _check_array(path, group, "labels", 1)
        if labels_array.shape[0] != bits_array.shape[0]:
            raise DataError(
                f"{path}/labels: has {labels_array.shape[0]} labels for {bits_array.shape[0]} rows"
            )
        labels = _read_array(labels_array, path, "labels", f"bmm-read-labels-{token}")
    return Dataset(
        path=path, bits=bits, labels=labels, n_features=n_features, attrs=attrs, group=group
    )


def _read_rows(array: zarr.Array, path: str, name: str, block_info: Any = None) -> NDArray[Any]:
    """One chunk of rows (for map_blocks), or a DataError that names the array and the chunk."""
    start, stop = block_info[None]["array-location"][0]
    return _read_range(array, path, name, start, stop)


def _read_range(array: zarr.Array, path: str, name: str, start: int, stop: int) -> NDArray[Any]:
    """Rows ``start:stop``, or a DataError that names the array and the chunk."""
    try:
        return np.asarray(array[start:stop])
    except Exception as err:
        rows = array.chunks[0]
        if stop - start > rows:  # several chunks: find the one that cannot be read
            for first in range(start - start % rows, stop, rows):
                _read_range(array, path, name, max(first, start), min(first + rows, stop))
        chunk = start // rows
        raise DataError(
            f"{path}/{name}: chunk {chunk} (rows {start}..{stop - 1}) cannot be read: "
            f"{' '.join(str(err).split()) or type(err).__name__}; the store is damaged, ingest it again"
        ) from err


def _read_array(array: zarr.Array, path: str, name: str, key: str) -> da.Array:
    """A Dask array over a Zarr array, a task a chunk, whose read errors name the chunk."""
    # A partial, so that Dask does not take the Zarr array for an array to map over.
    return da.map_blocks(
        functools.partial(_read_rows, array, path, name),
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
    try:
        with np.load(Path(path) / CHECKPOINT_FILE, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k != "state"}
            state = json.loads(str(npz["state"]))
    except (OSError, ValueError, KeyError) as err:
        raise ModelFileError(
            f"{path}/{CHECKPOINT_FILE}: cannot read the checkpoint: {err}"
        ) from err
    return arrays, state, attrs


@contextlib.contextmanager
def output_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``PATH.lock`` while a command writes ``path``; refuse when another live process does.

    A lock left by a process that no longer runs (killed, say) on this machine is taken over.
    """
    import socket

    lock = Path(f"{os.fspath(path).rstrip('/')}.lock")
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
            if holder.get("host") == me["host"] and not _alive(holder.get("pid")):
                lock.unlink(missing_ok=True)  # stale: its process is gone
                continue
            raise OutputError(
                f"{path}: another fit is writing it (process {holder.get('pid')} on "
                f"{holder.get('host')}, lock {lock}); wait for it, or remove the lock if it is stale"
            ) from None
        except OSError as err:
            raise OutputError(f"{lock}: cannot create the lock: {err.strerror}") from err
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


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
