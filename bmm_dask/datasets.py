"""Data in: IDX and .npy readers, binarisation, ingest to Zarr, MNIST fetch and packaged copy, synthetic data."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.resources
import logging
import math
import os
import shutil
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import dask
import dask.array as da
import numpy as np
from numpy.typing import NDArray

from bmm_dask.errors import DataError, FetchError, SettingsError
from bmm_dask.io import (
    ZSTD_LEVEL,
    Dataset,
    DatasetWriter,
    atomic_file,
    atomic_output,
    check_output,
    open_dataset,
    parse_chunk_rows,
)
from bmm_dask.kernels import n_packed_bytes, pack_bits

__all__ = [
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "Binarization",
    "ImageSource",
    "data_home",
    "fetch_mnist",
    "ingest",
    "ingest_mnist",
    "open_source",
    "packaged_mnist_path",
    "synth",
    "write_idx",
]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called with (rows just finished, rows in all) as work goes on."""

# --------------------------------------------------------------------------- binarisation


def rng_block_rows(n_features: int) -> int:
    """Rows drawn from one random stream: about 2**20 values, a power of two, set by n_features alone.

    Random bits are drawn in blocks of rows that depend on the row index only, never on the
    chunking, so a seed gives the same bits whatever the chunks and whoever computes them.

    >>> rng_block_rows(784), rng_block_rows(64), rng_block_rows(5_000_000)
    (1024, 16384, 1)
    """
    return 1 << max(0, (max(1, (1 << 20) // n_features)).bit_length() - 1)


def _block_rngs(
    start: int, stop: int, rows_a_block: int, key: Sequence[int]
) -> Iterator[tuple[np.random.Generator, slice, slice]]:
    """Random streams covering rows ``start:stop``: (generator, rows of its block, rows of the range)."""
    for block in range(start // rows_a_block, -(-stop // rows_a_block)):
        first = block * rows_a_block
        lo, hi = max(start, first), min(stop, first + rows_a_block)
        rng = np.random.default_rng([*key, block])
        yield rng, slice(lo - first, hi - first), slice(lo - start, hi - start)


@dataclass(frozen=True)
class Binarization:
    """How grey levels (0..255) become bits.

    ``threshold``: a pixel is 1 when it is at least ``threshold`` (128 in the notebook).
    ``stochastic``: a pixel is 1 with probability pixel / 255, drawn from ``seed``; the draws are
    keyed by row, so the bits do not depend on the chunking.
    ``none``: the values are bits already (bool, or 0 and 1).
    """

    method: Literal["threshold", "stochastic", "none"] = "threshold"
    threshold: float = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("threshold", "stochastic", "none"):
            raise SettingsError(
                f"binarisation must be 'threshold', 'stochastic' or 'none'; got {self.method!r}"
            )
        if self.method == "threshold" and not (0 < self.threshold <= 255):
            raise SettingsError(f"threshold must be in (0, 255]; got {self.threshold}")
        if self.method == "stochastic" and not (isinstance(self.seed, int) and self.seed >= 0):
            raise SettingsError(f"seed must be a non-negative integer; got {self.seed!r}")

    def to_attrs(self) -> dict[str, Any]:
        if self.method == "threshold":
            t = self.threshold
            return {"method": "threshold", "threshold": int(t) if float(t).is_integer() else t}
        if self.method == "stochastic":
            return {"method": "stochastic", "seed": self.seed}
        return {"method": "none"}

    def apply(self, values: NDArray[Any], start: int) -> NDArray[np.bool_]:
        """Bits of rows ``start : start + len(values)`` of shape (rows, n_features)."""
        if self.method == "none":
            return values.astype(bool, copy=False)
        if self.method == "threshold":
            return values >= self.threshold
        n_rows, n_features = values.shape
        bits = np.empty(values.shape, dtype=bool)
        rows_a_block = rng_block_rows(n_features)
        for rng, block_rows, rows in _block_rngs(
            start, start + n_rows, rows_a_block, (self.seed, 2)
        ):
            uniform = rng.random((rows_a_block, n_features), dtype=np.float32)[block_rows]
            np.less(uniform * np.float32(255), values[rows], out=bits[rows])
        return bits


# --------------------------------------------------------------------------- sources

_IDX_TYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_GZIP_MAGIC = b"\x1f\x8b"
_NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class ImageSource:
    """An array of N samples on disk (IDX, gzipped IDX or .npy), read a block of rows at a time.

    Attributes
    ----------
    path : Path
    kind : "idx" or "npy"
    shape : tuple
        (n_samples, *sample_shape) as the file declares it.
    dtype : numpy dtype
    """

    path: Path
    kind: Literal["idx", "npy"]
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    compressed: bool = False
    offset: int = 0

    @property
    def n_samples(self) -> int:
        return self.shape[0]

    @property
    def n_features(self) -> int:
        return math.prod(self.shape[1:])

    @property
    def image_shape(self) -> list[int] | None:
        return list(self.shape[1:]) if len(self.shape) > 2 else None

    def describe(self) -> str:
        dims = " x ".join(str(n) for n in self.shape)
        return f"{dims} {self.dtype.name}"

    def blocks(self, block_rows: int, digest: Any = None) -> Iterator[tuple[int, NDArray[Any]]]:
        """Yield (first row, block of shape (rows, n_features)) in order.

        ``digest``, a hashlib object, is fed the file's bytes (uncompressed for gzip) as they
        are read, so the checksum costs no second pass.
        """
        if self.kind == "npy":
            yield from self._npy_blocks(block_rows, digest)
        else:
            yield from self._idx_blocks(block_rows, digest)

    def _idx_blocks(self, block_rows: int, digest: Any) -> Iterator[tuple[int, NDArray[Any]]]:
        row_bytes = self.n_features * self.dtype.itemsize
        try:
            with _open_maybe_gzip(self.path, self.compressed) as f:
                header = f.read(self.offset)
                if digest is not None:
                    digest.update(header)
                for start in range(0, self.n_samples, block_rows):
                    rows = min(block_rows, self.n_samples - start)
                    buf = f.read(rows * row_bytes)
                    if len(buf) < rows * row_bytes:
                        done = start + len(buf) // row_bytes
                        raise DataError(
                            f"{self.path}: truncated: the header declares {self.n_samples} samples "
                            f"but the data ends after {done}"
                        )
                    if digest is not None:
                        digest.update(buf)
                    block = np.frombuffer(buf, dtype=self.dtype).reshape(rows, self.n_features)
                    yield start, block
                if f.read(1):
                    raise DataError(
                        f"{self.path}: wrong dimensions: data goes on past the {self.describe()} "
                        "the header declares"
                    )
        except (EOFError, zlib.error, gzip.BadGzipFile) as err:
            raise DataError(f"{self.path}: corrupt or truncated gzip stream: {err}") from err

    def _npy_blocks(self, block_rows: int, digest: Any) -> Iterator[tuple[int, NDArray[Any]]]:
        if digest is not None:
            with open(self.path, "rb") as f:
                for piece in iter(lambda: f.read(1 << 22), b""):
                    digest.update(piece)
        array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        for start in range(0, self.n_samples, block_rows):
            block = np.asarray(array[start : start + block_rows])
            yield start, block.reshape(len(block), self.n_features)


@contextlib.contextmanager
def _open_maybe_gzip(path: Path, compressed: bool) -> Iterator[IO[bytes]]:
    if compressed:
        with gzip.open(path, "rb") as f:
            yield f  # type: ignore[misc]
    else:
        with open(path, "rb") as f:
            yield f


def open_source(path: str | os.PathLike[str]) -> ImageSource:
    """Read the header of an IDX file (raw or gzip) or a ``.npy`` file and check it against its size.

    Raises
    ------
    DataError
        A missing file, a wrong magic number, an unknown type code, a dimension of zero, or a
        size that does not match the header (truncated, or wrong dimensions).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected an IDX or .npy file")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror}") from err
    if magic.startswith(_NPY_MAGIC):
        return _open_npy(path)
    compressed = magic.startswith(_GZIP_MAGIC)
    try:
        with _open_maybe_gzip(path, compressed) as f:
            head = f.read(4)
            if compressed and _NPY_MAGIC.startswith(head) and head:
                raise DataError(
                    f"{path}: a gzip-compressed .npy file; .npy files are read uncompressed "
                    f"(memory-mapped): gunzip it first"
                )
            if len(head) < 4:
                raise DataError(
                    f"{path}: truncated: {len(head)} bytes, too short for an IDX header"
                )
            if head[0] != 0 or head[1] != 0:
                raise DataError(
                    f"{path}: wrong magic number {head.hex(' ')}: an IDX file starts with "
                    "00 00, its type code and its number of dimensions (a .npy file starts "
                    "with \\x93NUMPY)"
                )
            type_code, ndim = head[2], head[3]
            if type_code not in _IDX_TYPES:
                raise DataError(f"{path}: unknown IDX type code 0x{type_code:02x}")
            if ndim == 0:
                raise DataError(f"{path}: wrong dimensions: the header declares no dimensions")
            dims_bytes = f.read(4 * ndim)
            if len(dims_bytes) < 4 * ndim:
                raise DataError(f"{path}: truncated inside the header")
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: corrupt or truncated gzip stream: {err}") from err
    shape = struct.unpack(f">{ndim}i", dims_bytes)
    if any(n <= 0 for n in shape):
        raise DataError(
            f"{path}: wrong dimensions {' x '.join(map(str, shape))}: each must be positive"
        )
    dtype = np.dtype(_IDX_TYPES[type_code])
    offset = 4 + 4 * ndim
    expected = offset + math.prod(shape) * dtype.itemsize
    source = ImageSource(path, "idx", tuple(shape), dtype, compressed, offset)
    if compressed:
        # The gzip trailer holds the uncompressed size mod 2**32: a cheap check before any work.
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            isize = struct.unpack("<I", f.read(4))[0]
        if isize != expected % 2**32:
            # The trailer of a cut-short file is whatever bytes it ends with: read the stream to
            # say what is wrong (only on this error path).
            size, whole = _gzip_length(path)
            if not whole:
                raise DataError(
                    f"{path}: truncated: the gzip stream is cut short after {size} bytes of the "
                    f"{expected} that the header's {source.describe()} needs"
                )
            problem = "truncated" if size < expected else "wrong dimensions"
            raise DataError(
                f"{path}: {problem}: the header declares {source.describe()} ({expected} bytes) "
                f"but the gzip stream holds {size} bytes"
            )
    else:
        size = path.stat().st_size
        if size < expected:
            raise DataError(
                f"{path}: truncated: the header declares {source.describe()} ({expected} bytes) "
                f"but the file has {size} bytes"
            )
        if size > expected:
            raise DataError(
                f"{path}: wrong dimensions: the header declares {source.describe()} ({expected} "
                f"bytes) but the file has {size} bytes"
            )
    return source


def _gzip_length(path: Path) -> tuple[int, bool]:
    """Uncompressed bytes of a gzip file, and whether its stream ends properly."""
    size = 0
    try:
        with gzip.open(path, "rb") as f:
            for piece in iter(lambda: f.read(1 << 22), b""):
                size += len(piece)
    except (EOFError, zlib.error, gzip.BadGzipFile):
        return size, False
    return size, True


def _open_npy(path: Path) -> ImageSource:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read as .npy: {err}") from err
    if array.ndim < 1 or array.shape[0] == 0 or 0 in array.shape:
        raise DataError(
            f"{path}: wrong dimensions {array.shape}: expected N samples of at least one value"
        )
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: values of type {array.dtype} cannot be pixels or bits")
    offset = int(array.offset) if hasattr(array, "offset") else 0
    return ImageSource(path, "npy", tuple(array.shape), array.dtype, False, offset)


def _check_values(source: ImageSource, block: NDArray[Any], start: int, method: str) -> None:
    """Refuse NaN, values outside 0..255, and (for ``none``) values other than 0 and 1."""
    kind = block.dtype.kind
    rows = f"rows {start}..{start + len(block) - 1}"
    if kind == "b":
        return
    if kind == "f" and np.isnan(block).any():
        row = start + int(np.flatnonzero(np.isnan(block).any(axis=1))[0])
        raise DataError(f"{source.path}: NaN in row {row}; values must be numbers in 0..255")
    if block.dtype == np.uint8 and method != "none":
        return
    low, high = block.min(), block.max()
    if method == "none":
        if not np.isin(block, (0, 1)).all():
            raise DataError(
                f"{source.path}: --binarize none needs values 0 and 1 only; {rows} hold others "
                f"(between {low} and {high})"
            )
    elif low < 0 or high > 255:
        outside = ((block < 0) | (block > 255)).any(axis=1)
        row = int(np.flatnonzero(outside)[0])
        bad = block[row][(block[row] < 0) | (block[row] > 255)][0]
        raise DataError(
            f"{source.path}: value {bad} in row {start + row} is outside 0..255 (pixels are 0..255)"
        )


def _open_labels(path: str | os.PathLike[str], n_samples: int) -> ImageSource:
    labels = open_source(path)
    if len(labels.shape) != 1:
        raise DataError(
            f"{labels.path}: a label file has one dimension; this one declares {labels.describe()}"
        )
    if labels.dtype.kind not in "iu":
        raise DataError(f"{labels.path}: labels must be integers; found {labels.dtype.name}")
    if labels.n_samples != n_samples:
        raise DataError(
            f"{labels.path}: holds {labels.n_samples} labels but the images hold {n_samples} samples"
        )
    return labels


def _source_attrs(source: ImageSource, digest: Any) -> dict[str, Any]:
    md5_of = "uncompressed bytes" if source.compressed else "file"
    return {
        "file": source.path.name,
        "format": source.kind,
        "md5": digest.hexdigest(),
        "md5_of": md5_of,
    }


_IDX_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_TYPES.items()}


def write_idx(path: str | os.PathLike[str], array: NDArray[Any], *, block_rows: int = 8192) -> Path:
    """Write an array as an IDX file (gzip when the name ends in ``.gz``), a block of rows at a time.

    The inverse of the reader; handy for tests, benchmarks and converting other data. ``array``
    may be a memory map larger than memory.
    """
    path = Path(path)
    dtype = np.dtype(array.dtype).newbyteorder("=")
    if dtype not in _IDX_CODES:
        raise SettingsError(f"IDX has no type code for {array.dtype}")
    if array.ndim < 1 or array.ndim > 255:
        raise SettingsError(f"IDX holds 1 to 255 dimensions; got {array.ndim}")
    header = bytes([0, 0, _IDX_CODES[dtype], array.ndim]) + struct.pack(
        f">{array.ndim}i", *array.shape
    )
    opener: Callable[..., IO[bytes]] = gzip.open if path.suffix == ".gz" else open  # type: ignore[assignment]
    big_endian = np.dtype(_IDX_TYPES[_IDX_CODES[dtype]])
    with opener(path, "wb") as f:
        f.write(header)
        for start in range(0, array.shape[0], block_rows):
            f.write(
                np.ascontiguousarray(array[start : start + block_rows], dtype=big_endian).tobytes()
            )
    return path


# --------------------------------------------------------------------------- ingest


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
    source : path
        IDX (``*-idx3-ubyte``, raw or ``.gz``) or ``.npy`` of shape (n_samples, ...) with values
        in 0..255, or bool / 0-1 values with ``Binarization("none")``.
    out : path
        The dataset group to write (a folder, by convention ``*.zarr``).
    labels : path, optional
        IDX or ``.npy`` integer labels, one per sample.
    binarization : Binarization, default threshold 128 (``none`` for a bool source)
    chunk_rows : int, optional
        Rows a chunk; by default about 1 MiB of packed rows.
    overwrite : bool
        Replace ``out`` if it exists.
    progress : callable, optional
        Called with (rows written, rows in all) after each chunk.
    zstd_level : int, default 3
        Compression level of the chunks.

    Returns
    -------
    Path of the dataset written.
    """
    images = open_source(source)
    if len(images.shape) < 2:
        raise DataError(
            f"{images.path}: a 1-dimensional array of {images.n_samples} values; expected N "
            "samples of D values (N x D, or N x H x W images); reshape it to (N, 1) if each "
            "value is a sample of one feature"
        )
    label_source = _open_labels(labels, images.n_samples) if labels is not None else None
    if binarization is None:
        binarization = Binarization("none" if images.dtype.kind == "b" else "threshold")
    rows = parse_chunk_rows(chunk_rows, images.n_features)
    attrs = {
        "image_shape": images.image_shape,
        "binarization": binarization.to_attrs(),
    }
    with atomic_output(out, overwrite=overwrite, inputs=[source, labels]) as tmp:
        _write_source(tmp, images, label_source, binarization, rows, attrs, progress, zstd_level)
    return Path(out)


def _write_source(
    path: Path,
    images: ImageSource,
    labels: ImageSource | None,
    binarization: Binarization,
    chunk_rows: int,
    attrs: dict[str, Any],
    progress: Progress | None,
    zstd_level: int = ZSTD_LEVEL,
) -> None:
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
        _check_values(images, block, start, binarization.method)
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
                "make every bit 0; pass --binarize none for data that is binary already"
            )
        raise DataError(
            f"{images.path}: every value lies between 0 and {highest:g}, so threshold "
            f"{binarization.threshold:g} would make every bit 0; for values scaled to [0, 1] pass "
            "--threshold 0.5, or scale them to 0..255"
        )
    source = {"images": _source_attrs(images, image_digest)}
    if labels is not None:
        source["labels"] = _source_attrs(labels, label_digest)
    writer.update_attrs({"source": source})


# --------------------------------------------------------------------------- MNIST

#: The four MNIST files: md5 and size of the *uncompressed* bytes.
MNIST_FILES: dict[str, tuple[str, int]] = {
    "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb", 47_040_016),
    "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624", 60_008),
    "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", 7_840_016),
    "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", 10_008),
}
MNIST_SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: Public mirrors of the MNIST files, tried in order (``BMM_DASK_MNIST_MIRRORS`` replaces them:
#: comma-separated base URLs).
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)


def data_home() -> Path:
    """Where fetched data is cached: ``$BMM_DASK_DATA``, else ``~/.cache/bmm-dask``."""
    env = os.environ.get("BMM_DASK_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bmm-dask"


def mnist_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    return Path(directory) if directory is not None else data_home() / "mnist"


def _find(directory: Path, name: str) -> Path | None:
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def _md5_uncompressed(path: Path) -> tuple[str, int]:
    """md5 and length of a file's bytes, after gunzip when it is gzip."""
    with open(path, "rb") as f:
        compressed = f.read(2) == _GZIP_MAGIC
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    with _open_maybe_gzip(path, compressed) as f:
        for piece in iter(lambda: f.read(1 << 22), b""):
            digest.update(piece)
            size += len(piece)
    return digest.hexdigest(), size


def _verify(path: Path, md5: str, size: int) -> str | None:
    """Why ``path`` is not the expected file, or None when it is."""
    try:
        got_md5, got_size = _md5_uncompressed(path)
    except (OSError, EOFError, zlib.error) as err:
        return f"unreadable ({err})"
    if got_size != size:
        return f"{got_size} bytes where {size} were expected"
    if got_md5 != md5:
        return f"md5 {got_md5} where {md5} was expected"
    return None


def _mirrors() -> tuple[str, ...]:
    env = os.environ.get("BMM_DASK_MNIST_MIRRORS")
    if env:
        return tuple(url.strip() for url in env.split(",") if url.strip())
    return MNIST_MIRRORS


def fetch_mnist(
    directory: str | os.PathLike[str] | None = None,
    *,
    from_dir: str | os.PathLike[str] | None = None,
    mirrors: Sequence[str] | None = None,
    files: dict[str, tuple[str, int]] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download the four MNIST files (or copy them from ``from_dir``) and verify their checksums.

    Files already in ``directory`` that pass the check are kept. A download that fails or does
    not match moves on to the next mirror. Each file is written under a temporary name and
    renamed once verified, so the folder never holds a partial file.

    Parameters
    ----------
    directory : path, optional
        Where the files go; by default ``data_home() / "mnist"``.
    from_dir : path, optional
        Take the files from this folder (``name.gz`` or ``name``) instead of the network.
    mirrors : sequence of str, optional
        Base URLs; by default ``BMM_DASK_MNIST_MIRRORS`` or :data:`MNIST_MIRRORS`.
    files : dict, optional
        Name -> (md5, size) of the uncompressed bytes; by default :data:`MNIST_FILES`.
    timeout : float
        Seconds to wait for a mirror to answer.

    Returns
    -------
    The folder holding the verified files.
    """
    target = mnist_dir(directory)
    files = dict(MNIST_FILES if files is None else files)
    mirrors = tuple(_mirrors() if mirrors is None else mirrors)
    if from_dir is not None and not Path(from_dir).is_dir():
        raise DataError(f"{from_dir}: no such folder")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FetchError(f"{target}: cannot create the folder: {err.strerror}") from err
    for name, (md5, size) in files.items():
        present = _find(target, name)
        if present is not None and _verify(present, md5, size) is None:
            logger.info("%s: present and verified", present)
            continue
        if from_dir is not None:
            found = _find(Path(from_dir), name)
            if found is None:
                raise DataError(f"{from_dir}: has no {name} or {name}.gz")
            problem = _verify(found, md5, size)
            if problem is not None:
                raise DataError(f"{found}: not the MNIST file {name}: {problem}")
            atomic_file(target / found.name, lambda tmp, src=found: shutil.copyfile(src, tmp))
            logger.info("%s: copied from %s", target / found.name, found)
            continue
        _download(target, f"{name}.gz", md5, size, mirrors, timeout)
    return target


def _download(
    target: Path, filename: str, md5: str, size: int, mirrors: Sequence[str], timeout: float
) -> None:
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        logger.info("downloading %s", url)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=target)
        tmp = Path(tmp_name)
        try:
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(url, timeout=timeout) as response,
            ):
                shutil.copyfileobj(response, out, 1 << 20)
            problem = _verify(tmp, md5, size)
            if problem is None:
                tmp.chmod(0o644)
                os.replace(tmp, target / filename)
                logger.info("%s: verified", target / filename)
                return
            failures.append(f"{url}: {problem}")
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            failures.append(f"{url}: {reason}")
        finally:
            tmp.unlink(missing_ok=True)
        logger.warning("%s", failures[-1])
    raise FetchError(
        f"{target / filename}: could not download it: " + "; ".join(failures or ["no mirrors"])
    )


def cached_mnist(directory: str | os.PathLike[str] | None = None) -> dict[str, Path] | None:
    """The four MNIST files in the cache, verified, or None when any is missing or wrong."""
    folder = mnist_dir(directory)
    found = {}
    for name, (md5, size) in MNIST_FILES.items():
        path = _find(folder, name)
        if path is None:
            return None
        problem = _verify(path, md5, size)
        if problem is not None:
            logger.warning("%s: ignored: %s", path, problem)
            return None
        found[name] = path
    return found


def packaged_mnist_path() -> Path:
    """The MNIST copy inside the package: a zipped Zarr store with ``train`` and ``test`` datasets."""
    return Path(str(importlib.resources.files("bmm_dask") / "data" / "mnist.zarr.zip"))


def ingest_mnist(
    out: str | os.PathLike[str],
    *,
    binarization: Binarization | None = None,
    chunk_rows: int | None = None,
    overwrite: bool = False,
    directory: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> Path:
    """Write MNIST as ``out/train`` (60,000 images) and ``out/test`` (10,000), with labels.

    From the fetched IDX files when the cache holds them (any binarisation), else from the copy
    inside the package (binarised at 128), offline.
    """
    binarization = binarization or Binarization()
    inputs = [mnist_dir(directory), packaged_mnist_path()]
    check_output(out, overwrite=overwrite, inputs=inputs)
    files = cached_mnist(directory)
    if files is None and binarization != Binarization():
        raise SettingsError(
            f"the MNIST inside the package is binarised at threshold 128; for "
            f"{binarization.to_attrs()} run 'bmm-dask fetch mnist' first (or with --from DIR)"
        )
    with atomic_output(out, overwrite=overwrite, inputs=inputs) as tmp:
        import zarr

        zarr.open_group(zarr.storage.LocalStore(tmp), mode="w").attrs["datasets"] = list(
            MNIST_SPLITS
        )
        for split, (images_name, labels_name) in MNIST_SPLITS.items():
            if files is not None:
                images = open_source(files[images_name])
                labels = _open_labels(files[labels_name], images.n_samples)
                rows = parse_chunk_rows(chunk_rows, images.n_features)
                attrs = {
                    "image_shape": images.image_shape,
                    "binarization": binarization.to_attrs(),
                    "name": f"MNIST {split}",
                }
                _write_source(tmp / split, images, labels, binarization, rows, attrs, progress)
            else:
                _copy_dataset(
                    open_dataset(f"{packaged_mnist_path()}/{split}"),
                    tmp / split,
                    chunk_rows,
                    progress,
                )
    return Path(out)


def _copy_dataset(
    dataset: Dataset, path: Path, chunk_rows: int | None, progress: Progress | None
) -> None:
    rows = parse_chunk_rows(chunk_rows, dataset.n_features)
    attrs = {k: v for k, v in dataset.attrs.items() if k not in ("format", "n_features")}
    attrs["source"] = {**attrs.get("source", {}), "copied_from": "packaged copy in bmm_dask"}
    writer = DatasetWriter.create(
        path,
        n_samples=dataset.n_samples,
        n_features=dataset.n_features,
        chunk_rows=rows,
        labels_dtype=dataset.labels.dtype if dataset.labels is not None else None,
        attrs=attrs,
    )
    bits_array = dataset.group["bits"]
    labels_array = dataset.group["labels"] if dataset.labels is not None else None
    for start in range(0, dataset.n_samples, rows):
        stop = min(start + rows, dataset.n_samples)
        labels = labels_array[start:stop] if labels_array is not None else None
        writer.write(start, bits_array[start:stop], labels)
        if progress is not None:
            progress(stop - start, dataset.n_samples)


# --------------------------------------------------------------------------- synthetic data


def synth_parameters(
    n_features: int, n_components: int, seed: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The mixture that ``synth`` draws from: means (K, D) on a 1/256 grid, weights (K).

    Means follow Beta(0.5, 0.5) (mostly near 0 or 1, like pen strokes), rounded to k / 256 with
    k in 1..255; weights follow a Dirichlet(5) so no component is vanishingly rare.
    """
    rng = np.random.default_rng([seed, 0])
    weights = rng.dirichlet(np.full(n_components, 5.0))
    means = rng.beta(0.5, 0.5, size=(n_components, n_features))
    return _on_grid(means), weights


def _on_grid(means: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.clip(np.rint(np.asarray(means, dtype=np.float64) * 256), 1, 255) / 256


def _synth_rows(
    start: int, stop: int, levels: NDArray[np.uint8], weights: NDArray[np.float64], seed: int
) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """Rows ``start:stop`` of the synthetic data: bits (rows, D) and components (rows)."""
    n_components, n_features = levels.shape
    rows_a_block = rng_block_rows(n_features)
    bits = np.empty((stop - start, n_features), dtype=bool)
    components = np.empty(stop - start, dtype=np.int64)
    for rng, block_rows, rows in _block_rngs(start, stop, rows_a_block, (seed, 1)):
        z = rng.choice(n_components, size=rows_a_block, p=weights)[block_rows]
        noise = np.frombuffer(rng.bytes(rows_a_block * n_features), dtype=np.uint8)
        noise = noise.reshape(rows_a_block, n_features)[block_rows]
        np.less(noise, levels[z], out=bits[rows])
        components[rows] = z
    return bits, components


def _synth_bits_block(
    levels: NDArray[np.uint8], weights: NDArray[np.float64], seed: int, block_info: Any = None
) -> NDArray[np.uint8]:
    start, stop = block_info[None]["array-location"][0]
    return pack_bits(_synth_rows(start, stop, levels, weights, seed)[0])


def _synth_labels_block(
    levels: NDArray[np.uint8],
    weights: NDArray[np.float64],
    seed: int,
    dtype: np.dtype[Any],
    block_info: Any = None,
) -> NDArray[Any]:
    start, stop = block_info[None]["array-location"][0]
    n_components = len(weights)
    rows_a_block = rng_block_rows(levels.shape[1])
    out = np.empty(stop - start, dtype=dtype)
    for rng, block_rows, rows in _block_rngs(start, stop, rows_a_block, (seed, 1)):
        out[rows] = rng.choice(n_components, size=rows_a_block, p=weights)[block_rows]
    return out


def _check_synth_memory(n_features: int, n_components: int, chunk_rows: int) -> None:
    """Refuse sizes whose mixture and chunks in flight cannot fit in this machine's memory."""
    from bmm_dask.memory import check_fits

    # The means are drawn in float64 and put on the grid (three such arrays at once); each
    # chunk being drawn holds a block of random bytes, the rows as bool, and their gathered
    # levels; Dask draws one chunk per core.
    cores = os.cpu_count() or 1
    per_chunk = (rng_block_rows(n_features) + 3 * chunk_rows) * n_features
    need = 25 * n_components * n_features + cores * per_chunk
    check_fits(
        need,
        f"--k {n_components} means of --d {n_features:,} features, with a chunk of "
        f"{chunk_rows:,} row{'s' if chunk_rows > 1 else ''} drawn on each of {cores} cores,",
    )


def synth(
    out: str | os.PathLike[str],
    *,
    n_samples: int,
    n_features: int,
    n_components: int,
    seed: int = 0,
    means: NDArray[np.float64] | None = None,
    weights: NDArray[np.float64] | None = None,
    chunk_rows: int | None = None,
    image_shape: Sequence[int] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write rows drawn from a known Bernoulli mixture, chunk by chunk in parallel with Dask.

    The true means (rounded to multiples of 1/256) and weights are stored with the data as
    ``true_means`` and ``true_weights``, and the component of each row as ``labels``. The rows
    depend on ``seed`` and the row index only: any chunking or scheduler gives the same data.
    """
    for name, value, least in (
        ("n", n_samples, 1),
        ("d", n_features, 1),
        ("k", n_components, 1),
        ("seed", seed, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
            raise SettingsError(
                f"--{name} must be a whole number of at least {least}; got {value!r}"
            )
    _check_synth_memory(n_features, n_components, parse_chunk_rows(chunk_rows, n_features))
    if means is None or weights is None:
        default_means, default_weights = synth_parameters(n_features, n_components, seed)
        means = default_means if means is None else means
        weights = default_weights if weights is None else weights
    means = _on_grid(means)
    weights = np.asarray(weights, dtype=np.float64)
    if means.shape != (n_components, n_features) or weights.shape != (n_components,):
        raise SettingsError(
            f"means must have shape ({n_components}, {n_features}) and weights ({n_components},); "
            f"got {means.shape} and {weights.shape}"
        )
    if (weights < 0).any() or not np.isclose(weights.sum(), 1.0):
        raise SettingsError("weights must be non-negative and sum to 1")
    if image_shape is not None and math.prod(image_shape) != n_features:
        raise SettingsError(f"image shape {tuple(image_shape)} does not hold {n_features} features")
    rows = parse_chunk_rows(chunk_rows, n_features)
    levels = np.rint(means * 256).astype(np.uint8)
    labels_dtype = np.min_scalar_type(n_components - 1)
    row_chunks = da.core.normalize_chunks((rows,), (n_samples,))[0]
    token = dask.base.tokenize(levels, weights, seed, row_chunks)
    bits = da.map_blocks(
        _synth_bits_block,
        levels,
        weights,
        seed,
        chunks=(row_chunks, (n_packed_bytes(n_features),)),
        dtype=np.uint8,
        meta=np.empty((0, 0), dtype=np.uint8),
        name=f"bmm-synth-bits-{token}",
    )
    labels = da.map_blocks(
        _synth_labels_block,
        levels,
        weights,
        seed,
        labels_dtype,
        chunks=(row_chunks,),
        dtype=labels_dtype,
        meta=np.empty((0,), dtype=labels_dtype),
        name=f"bmm-synth-labels-{token}",
    )
    attrs = {
        "image_shape": list(image_shape) if image_shape is not None else None,
        "binarization": {"method": "none"},
        "source": {"synthetic": {"n_components": n_components, "seed": seed}},
    }
    with atomic_output(out, overwrite=overwrite) as tmp:
        writer = DatasetWriter.create(
            tmp,
            n_samples=n_samples,
            n_features=n_features,
            chunk_rows=rows,
            labels_dtype=labels_dtype,
            attrs=attrs,
        )
        writer.group.create_array("true_means", data=means)
        writer.group.create_array("true_weights", data=weights)
        assert writer.labels is not None
        da.store([bits, labels], [writer.bits, writer.labels], lock=False)
    return Path(out)
