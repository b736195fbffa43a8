"""Reading images and labels from IDX files (gzipped or not) and .npy files, and writing IDX."""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from numpy.typing import NDArray

from bmm_dask.errors import DataError, SettingsError, setting

_IDX_TYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
GZIP_MAGIC = b"\x1f\x8b"
_NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class ImageSource:
    """An array of N samples on disk (IDX, gzipped IDX or .npy), read a block of rows at a time.

    Attributes
    ----------
    path : Path
        The file.
    kind : {"idx", "npy"}
        Its format.
    shape : tuple of int
        (n_samples, *sample_shape) as the file declares it.
    dtype : numpy dtype
        Type of the values, as the file declares it.
    compressed : bool, default=False
        Whether the file is gzip-compressed (IDX only).
    offset : int, default=0
        Bytes of header before the values (uncompressed, for gzip).
    """

    path: Path
    kind: Literal["idx", "npy"]
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    compressed: bool = False
    offset: int = 0

    @property
    def n_samples(self) -> int:
        """Number of samples (the first dimension)."""
        return self.shape[0]

    @property
    def n_features(self) -> int:
        """Values per sample: the product of the other dimensions."""
        return math.prod(self.shape[1:])

    @property
    def image_shape(self) -> list[int] | None:
        """The shape of a sample when it has more than one dimension, else None."""
        return list(self.shape[1:]) if len(self.shape) > 2 else None

    def describe(self) -> str:
        """The shape and type in words, for messages: ``"60000 x 28 x 28 uint8"``."""
        dims = " x ".join(str(n) for n in self.shape)
        return f"{dims} {self.dtype.name}"

    def blocks(self, block_rows: int, digest: Any = None) -> Iterator[tuple[int, NDArray[Any]]]:
        """Read the samples a block of rows at a time, in order.

        ``digest``, a hashlib object, is fed the file's bytes (uncompressed for gzip) as they
        are read, so the checksum costs no second pass.

        Parameters
        ----------
        block_rows : int
            Rows per block (the last block may have fewer).
        digest : hashlib hash object, default=None
            Fed the file's bytes as they are read.

        Yields
        ------
        start : int
            Index of the block's first row.
        block : ndarray of shape (n_rows, n_features)
            The rows, of the file's type.

        Raises
        ------
        DataError
            If an IDX file turns out truncated, longer than its header declares, or a corrupt
            gzip stream.
        """
        if self.kind == "npy":
            yield from self._npy_blocks(block_rows, digest)
        else:
            yield from self._idx_blocks(block_rows, digest)

    def _idx_blocks(self, block_rows: int, digest: Any) -> Iterator[tuple[int, NDArray[Any]]]:
        row_bytes = self.n_features * self.dtype.itemsize
        try:
            with open_maybe_gzip(self.path, self.compressed) as f:
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
def open_maybe_gzip(path: Path, compressed: bool) -> Iterator[IO[bytes]]:
    """Open a file for reading bytes, through gzip when it is compressed.

    Parameters
    ----------
    path : Path
        The file.
    compressed : bool
        Whether it is gzip-compressed.

    Yields
    ------
    file object
        Its (uncompressed) bytes, closed on exit.
    """
    if compressed:
        with gzip.open(path, "rb") as f:
            yield f  # type: ignore[misc]
    else:
        with open(path, "rb") as f:
            yield f


def open_source(path: str | os.PathLike[str]) -> ImageSource:
    """Read the header of an IDX file (raw or gzip) or a ``.npy`` file and check it against its size.

    Parameters
    ----------
    path : str or path-like
        The file.

    Returns
    -------
    ImageSource
        The file's shape and type, ready to be read in blocks.

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
    compressed = magic.startswith(GZIP_MAGIC)
    try:
        with open_maybe_gzip(path, compressed) as f:
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


def check_values(source: ImageSource, block: NDArray[Any], start: int, method: str) -> None:
    """Refuse NaN, values outside 0..255 (for ``nonzero``, below 0), and (for ``none``) values
    other than 0 and 1.

    Parameters
    ----------
    source : ImageSource
        The file the block comes from, for messages.
    block : ndarray of shape (n_rows, n_features)
        The values of some rows.
    start : int
        Index of the block's first row, for messages.
    method : str
        The binarisation method (``"threshold"``, ``"stochastic"``, ``"none"`` or
        ``"nonzero"``, which takes any count of at least 0).

    Raises
    ------
    DataError
        If the block holds a value the method cannot take.
    """
    kind = block.dtype.kind
    rows = f"rows {start}..{start + len(block) - 1}"
    if kind == "b":
        return
    if kind == "f" and np.isnan(block).any():
        row = start + int(np.flatnonzero(np.isnan(block).any(axis=1))[0])
        scale = " in 0..255" if method in ("threshold", "stochastic") else ""
        raise DataError(f"{source.path}: NaN in row {row}; values must be numbers{scale}")
    if block.dtype == np.uint8 and method != "none":
        return
    low, high = block.min(), block.max()
    if method == "nonzero":
        if low < 0:
            row = int(np.flatnonzero((block < 0).any(axis=1))[0])
            raise DataError(
                f"{source.path}: value {block[row][block[row] < 0][0]} in row {start + row} is "
                "negative; counts and 0/1 values cannot be negative"
            )
    elif method == "none":
        if not np.isin(block, (0, 1)).all():
            raise DataError(
                f"{source.path}: {setting('--binarize none')} needs values 0 and 1 only; {rows} hold others "
                f"(between {low} and {high})"
            )
    elif low < 0 or high > 255:
        outside = ((block < 0) | (block > 255)).any(axis=1)
        row = int(np.flatnonzero(outside)[0])
        bad = block[row][(block[row] < 0) | (block[row] > 255)][0]
        raise DataError(
            f"{source.path}: value {bad} in row {start + row} is outside 0..255 (pixels are 0..255)"
        )


def open_labels(path: str | os.PathLike[str], n_samples: int) -> ImageSource:
    """Open a file of labels, one integer per sample, and check it against the images.

    Parameters
    ----------
    path : str or path-like
        An IDX or .npy file of one dimension.
    n_samples : int
        Number of images the labels go with.

    Returns
    -------
    ImageSource
        The labels' file.

    Raises
    ------
    DataError
        As :func:`open_source`, or if the file has more than one dimension, holds no
        integers, or holds another number of labels than ``n_samples``.
    """
    labels = open_source(path)
    if len(labels.shape) != 1:
        raise DataError(
            f"{labels.path}: a label file has one dimension; this one declares {labels.describe()}"
        )
    if labels.dtype.kind not in "iu":
        raise DataError(f"{labels.path}: labels must be integers; found {labels.dtype.name}")
    if labels.n_samples != n_samples:
        raise DataError(
            f"{labels.path}: holds {labels.n_samples} labels but the data holds {n_samples} rows"
        )
    return labels


def source_attrs(source: ImageSource, digest: Any) -> dict[str, Any]:
    """What a dataset records of a source file it was made from.

    Parameters
    ----------
    source : ImageSource
        The file.
    digest : hashlib hash object
        An MD5 fed the file's bytes (see :meth:`ImageSource.blocks`).

    Returns
    -------
    dict
        ``file`` (its name), ``format``, ``md5`` and ``md5_of`` (``"file"``, or
        ``"uncompressed bytes"`` for gzip).
    """
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

    Parameters
    ----------
    path : str or path-like
        The file to write.
    array : ndarray
        Values of a type IDX holds (unsigned or signed bytes, int16, int32, float32, float64),
        of 1 to 255 dimensions.
    block_rows : int, default=8192
        Rows written at a time.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    SettingsError
        If IDX has no type code for the array's type, or the number of dimensions is out of
        range.
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
