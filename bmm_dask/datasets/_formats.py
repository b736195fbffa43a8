"""Readers of rows in many formats (svmlight, Matrix Market, SciPy .npz, Parquet, CSV, HDF5, Zarr,
and the IDX and .npy images of ``_sources``), each read a block of rows at a time."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import itertools
import os
import re
import tempfile
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from bmm_dask.datasets._binarise import Binarization
from bmm_dask.datasets._sources import (
    GZIP_MAGIC,
    ImageSource,
    check_values,
    open_maybe_gzip,
    open_source,
    source_attrs,
)
from bmm_dask.errors import DataError, DependencyError, SettingsError, setting

#: What a file's name says of its format (after a ``.gz``, for the text formats).
SUFFIXES: dict[str, str] = {
    ".svm": "svmlight",
    ".svmlight": "svmlight",
    ".libsvm": "svmlight",
    ".mtx": "matrix-market",
    ".npz": "npz",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
    ".tab": "csv",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".he5": "hdf5",
    ".npy": "npy",
}

#: Each format in words, for messages.
FORMAT_NAMES: dict[str, str] = {
    "svmlight": "svmlight / LIBSVM",
    "matrix-market": "Matrix Market",
    "npz": "a SciPy sparse .npz",
    "parquet": "Parquet",
    "csv": "CSV",
    "hdf5": "HDF5",
    "zarr": "a Zarr array",
    "npy": ".npy",
    "idx": "IDX",
}

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
_MATRIX_MARKET_MAGIC = b"%%MatrixMarket"
# A line of svmlight: a label (or labels, comma-separated), maybe qid:N, then index:value pairs.
_SVMLIGHT_LINE = re.compile(rb"^\s*[-+.\w]+(,[-+.\w]+)*(\s+qid:\S+)?(\s+\d+:\S+)*\s*(#.*)?$")


@dataclass
class RowBlock:
    """A block of consecutive rows, as a reader yields them.

    Attributes
    ----------
    start : int
        Index of the block's first row in the whole source.
    X : ndarray or scipy.sparse.csr_array of shape (n_rows, n_features)
        The rows' values: 0/1, booleans, counts or grey levels.
    labels : ndarray of shape (n_rows,) or None
        The rows' labels, where the source carries them (svmlight's targets, a label column).
    lines : ndarray of shape (n_rows,) or None
        The line of the file each row came from (1 for the first), for text formats, so that
        messages can name it.
    """

    start: int
    X: Any
    labels: NDArray[Any] | None = None
    lines: NDArray[np.int64] | None = None


class RowSource:
    """Rows in a file of some format, read a block of rows at a time: what every reader offers.

    A reader is opened (by :func:`open_rows`) with whatever first pass its format needs to learn
    the number of rows and features; :meth:`blocks` then reads the rows in order, in blocks of
    the size asked, each a dense array or a SciPy CSR array, so memory is bounded by a block
    (and what each reader's docstring adds).

    Attributes
    ----------
    path : Path
        The file (or folder, for Zarr) read.
    kind : str
        The format, one of :data:`FORMAT_NAMES`.
    n_samples : int
        Number of rows N.
    n_features : int
        Number of features D.
    feature_names : list of str or None
        The features' names where the source has them (column names, items).
    labels_dtype : numpy dtype or None
        The type of the labels the blocks carry, or None when they carry none.
    image_shape : list of int or None
        The shape of a row as an image, for arrays of more than two dimensions.
    counts : bool
        Whether the values are counts (sparse and table formats), binarised by ``nonzero`` by
        default; otherwise as .npy is: ``none`` for booleans, else threshold 128.
    dtype : numpy dtype
        The type of the values, as the source declares it.
    role : str
        The entry under which the dataset's ``source`` attribute records the file.
    """

    kind = ""
    role = "data"
    counts = True

    def __init__(
        self,
        path: Path,
        n_samples: int,
        n_features: int,
        *,
        dtype: np.dtype[Any] | None = None,
        feature_names: list[str] | None = None,
        labels_dtype: np.dtype[Any] | None = None,
        image_shape: list[int] | None = None,
    ) -> None:
        self.path = path
        self.n_samples = n_samples
        self.n_features = n_features
        self.dtype = np.dtype(np.float64) if dtype is None else np.dtype(dtype)
        self.feature_names = feature_names
        self.labels_dtype = labels_dtype
        self.image_shape = image_shape

    def default_binarization(self) -> Binarization:
        """How the values become bits unless the user says otherwise.

        Returns
        -------
        Binarization
            ``nonzero`` for counts; ``none`` for booleans; else threshold 128.
        """
        if self.counts:
            return Binarization("nonzero")
        return Binarization("none" if self.dtype.kind == "b" else "threshold")

    def blocks(self, block_rows: int, scratch: Path | None = None) -> Iterator[RowBlock]:
        """Read the rows in order, ``block_rows`` at a time (the last block may have fewer).

        Parameters
        ----------
        block_rows : int
            Rows per block.
        scratch : Path, default=None
            A folder where a reader may keep temporary files (Matrix Market does); None means
            the system's temporary folder.

        Yields
        ------
        RowBlock
            The next block of rows.

        Raises
        ------
        DataError
            If the file turns out malformed as it is read.
        """
        raise NotImplementedError

    @property
    def shown(self) -> str:
        """The source as messages name it: the file (and, in an HDF5 file, the dataset)."""
        return str(self.path)

    def where(self, block: RowBlock, row: int, column: int) -> str:
        """Where a value lies, in the words of the format, for messages: ``"row 5, column 3"``.

        Parameters
        ----------
        block : RowBlock
            The block that holds the value.
        row : int
            The value's row, counted from the block's first.
        column : int
            The value's feature (0 for the first).

        Returns
        -------
        str
        """
        return f"row {block.start + row}, column {column}"

    def check(self, block: RowBlock, binarization: Binarization) -> None:
        """Refuse NaN, infinities, and values the binarisation cannot take, naming the first.

        ``nonzero`` takes numbers of at least 0, ``none`` only 0 and 1, ``threshold`` and
        ``stochastic`` grey levels in 0..255.

        Parameters
        ----------
        block : RowBlock
            The rows (a dense array or a CSR array).
        binarization : Binarization
            How they will become bits.

        Raises
        ------
        DataError
            Naming the file, the place (:meth:`where`) and the value.
        """
        X = block.X
        dense = isinstance(X, np.ndarray)
        values = X if dense else X.data
        if values.dtype.kind == "b" or values.size == 0:
            return
        if values.dtype.kind not in "iuf":
            raise DataError(f"{self.shown}: values of type {values.dtype} cannot be counts or bits")
        method = binarization.method
        bad: NDArray[np.bool_] | None = None
        if values.dtype.kind == "f":
            finite = np.isfinite(values)
            if not finite.all():
                bad = ~finite
        if bad is None:
            if method == "nonzero":
                bad = values < 0
            elif method == "none":
                bad = (values != 0) & (values != 1)
            elif values.dtype != np.uint8:
                bad = (values < 0) | (values > 255)
            else:
                return
            if not bad.any():
                return
        first = int(np.argmax(bad.ravel()))
        value = values.ravel()[first]
        if dense:
            row, column = divmod(first, values.shape[1])
        else:
            row = int(np.searchsorted(X.indptr, first, side="right")) - 1
            column = int(X.indices[first])
        if np.isnan(value):
            problem = "NaN (not a number)"
        elif np.isinf(value):
            problem = f"{value:g}, an infinite value"
        elif method == "nonzero":
            problem = f"negative value {value:g}; counts and 0/1 values cannot be negative"
        elif method == "none":
            problem = f"value {value:g}; {setting('--binarize none')} takes values 0 and 1 only"
        else:
            problem = (
                f"value {value:g} is outside 0..255 (grey levels); for counts pass "
                f"{setting('--binarize nonzero')}"
            )
        raise DataError(f"{self.shown}: {self.where(block, row, column)}: {problem}")

    def record(self) -> dict[str, Any]:
        """What the dataset's ``source`` attribute records of the file, once it has been read.

        Returns
        -------
        dict
            ``file`` (its name), ``format``, ``md5`` and ``md5_of``, and what the format adds.
        """
        return {
            "file": self.path.name,
            "format": self.kind,
            "md5": file_md5(self.path),
            "md5_of": "file",
        }


def file_md5(path: Path) -> str:
    """The MD5 of a file's bytes, read 4 MiB at a time.

    Parameters
    ----------
    path : Path
        The file.

    Returns
    -------
    str
        The hex digest.
    """
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 22), b""):
            digest.update(piece)
    return digest.hexdigest()


def _needs(module: str, extra: str, path: Path, what: str) -> Any:
    """Import an optional package, or say in one line how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise DependencyError(
            f"{path}: reading {what} needs {module.partition('.')[0]}: "
            f"pip install 'bmm-dask[{extra}]'"
        ) from err


def _csr(data: Any, indices: Any, indptr: Any, shape: tuple[int, int]) -> Any:
    import scipy.sparse

    return scipy.sparse.csr_array((data, indices, indptr), shape=shape)


# --------------------------------------------------------------------------- IDX and .npy


class ImageRows(RowSource):
    """IDX or .npy images as rows: :class:`~bmm_dask.datasets.ImageSource` behind the readers'
    interface, with its own checks and messages, and the checksum of the (uncompressed) file."""

    role = "images"
    counts = False

    def __init__(self, images: ImageSource) -> None:
        if len(images.shape) < 2:
            raise DataError(
                f"{images.path}: a 1-dimensional array of {images.n_samples} values; expected N "
                "samples of D values (N x D, or N x H x W images); reshape it to (N, 1) if each "
                "value is a sample of one feature"
            )
        super().__init__(
            images.path,
            images.n_samples,
            images.n_features,
            dtype=images.dtype,
            image_shape=images.image_shape,
        )
        self.images = images
        self.kind = images.kind
        self._digest = hashlib.md5(usedforsecurity=False)

    def blocks(self, block_rows: int, scratch: Path | None = None) -> Iterator[RowBlock]:
        """Read the images a block of rows at a time, each flattened to a row (see :class:`RowSource`)."""
        self._digest = hashlib.md5(usedforsecurity=False)
        for start, block in self.images.blocks(block_rows, self._digest):
            yield RowBlock(start, block)

    def check(self, block: RowBlock, binarization: Binarization) -> None:
        """Refuse NaN and values out of range, as :func:`~bmm_dask.datasets._sources.check_values`."""
        check_values(self.images, block.X, block.start, binarization.method)

    def record(self) -> dict[str, Any]:
        """The file's name, format and the MD5 of its (uncompressed) bytes, fed as it was read."""
        return source_attrs(self.images, self._digest)


# --------------------------------------------------------------------------- svmlight


def _svmlight_lines(
    path: Path, compressed: bool, batch_rows: int
) -> Iterator[tuple[list[bytes], NDArray[np.int64]]]:
    """The lines of an svmlight file that hold a row, ``batch_rows`` at a time, with their numbers.

    A line holds a row when something is left of it before a ``#`` (as scikit-learn's reader
    decides), so blank lines and comments are skipped and every row keeps its line number. The
    lines come without their comments.
    """
    lines: list[bytes] = []
    numbers: list[int] = []
    try:
        with open_maybe_gzip(path, compressed) as f:
            for number, line in enumerate(f, 1):
                body = line.partition(b"#")[0]
                if not body.strip():
                    continue
                # without its comment, whose words are no indices
                lines.append(body.rstrip() + b"\n")
                numbers.append(number)
                if len(lines) == batch_rows:
                    yield lines, np.array(numbers, dtype=np.int64)
                    lines, numbers = [], []
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: corrupt or truncated gzip stream: {err}") from err
    if lines:
        yield lines, np.array(numbers, dtype=np.int64)


#: A feature index in svmlight text: digits after a space and before a colon (``qid:`` is not).
_SVMLIGHT_INDEX = re.compile(rb"\s(\d+):")


def _indices_of(lines: list[bytes]) -> NDArray[np.int64]:
    """Every feature index written in some svmlight lines, in order, without parsing the values."""
    return np.array(_SVMLIGHT_INDEX.findall(b"".join(lines)), dtype=np.int64)


def _svmlight_problem(err: Exception) -> str:
    """scikit-learn's complaint about a line, in words that say what to fix."""
    text = str(err)
    if "sorted and unique" in text:
        return "feature indices must increase along a line, each at most once"
    if "Invalid index" in text:
        return f"a negative feature index ({text.split()[2]})"
    # scikit-learn's other complaints quote its parser ("could not convert string to float:
    # b'x'", "need more than 1 value to unpack"): say what the line should look like instead
    quoted = re.search(r"b'([^']*)'", text)
    found = f" ({quoted.group(1)!r} is not a number)" if quoted else ""
    return f"not 'label index:value index:value ...'{found}"


class SvmlightRows(RowSource):
    """Rows of an svmlight / LIBSVM file (``label index:value ...``, a line a row), gzipped or not.

    Lines are parsed by scikit-learn's ``load_svmlight_file``, a block of lines at a time. A
    first, quicker pass (a regular expression, no parsing of values) finds the number of rows,
    the highest feature index, whether index 0 occurs (then the indices count from 0, else from
    1, unless ``zero_based`` says) and whether every target is a whole number (then the targets
    are kept as labels); a line that scikit-learn cannot read is named by the second. Memory
    holds one block of lines and its rows; the first pass keeps only counts.

    Parameters
    ----------
    path : Path
        The file.
    compressed : bool
        Whether it is gzip-compressed.
    n_features : int, default=None
        Number of features; None means the highest index (plus one when counting from 0).
    zero_based : bool, default=None
        Whether feature indices count from 0; None means: when some index is 0.
    named : bool, default=False
        Whether ``n_features`` is the number of feature names given: then, with
        ``zero_based`` None, a file whose indices fit the names whether they count from 0 or
        from 1 is refused, as a wrong guess would misname every feature.
    """

    kind = "svmlight"
    #: Lines a block of the first pass.
    SCAN_ROWS = 1 << 15

    def __init__(
        self,
        path: Path,
        compressed: bool,
        *,
        n_features: int | None = None,
        zero_based: bool | None = None,
        named: bool = False,
    ) -> None:
        self.compressed = compressed
        super().__init__(path, 0, 0)
        n_samples, highest, has_zero = 0, -1, False
        integer_targets = True
        for lines, numbers in _svmlight_lines(path, compressed, self.SCAN_ROWS):
            n_samples += len(numbers)
            indices = _indices_of(lines)
            if indices.size:
                highest = max(highest, int(indices.max()))
                has_zero = has_zero or bool(indices.min() == 0)
            targets = self._targets(lines, numbers)
            integer_targets = integer_targets and bool(
                np.all(np.isfinite(targets) & (targets == np.round(targets)))
                and np.all(np.abs(targets) < 2**53)
            )
        if n_samples == 0:
            raise DataError(f"{path}: no rows: every line is blank or a comment")
        guessed = zero_based is None
        if zero_based is None:
            if named and not has_zero and n_features is not None and 0 <= highest < n_features:
                # 1-based and 0-based both fit the names: guessing wrong gives every feature
                # the next one's name, unnoticed
                raise DataError(
                    f"{path}: no feature index is 0 and the highest, {highest}, fits the "
                    f"{n_features:,} feature names whether indices count from 0 or from 1; "
                    f"pass {setting('--zero-based')} (as scikit-learn's dump_svmlight_file "
                    f"writes) or {setting('--one-based')} (as LIBSVM's tools write)"
                )
            zero_based = has_zero
        elif not zero_based and has_zero:
            line = self._first_line_with(lambda indices: indices == 0)
            raise DataError(
                f"{path}: line {line}: feature index 0 but indices are 1-based; pass "
                f"{setting('--zero-based')} if they count from 0"
            )
        self.zero_based = zero_based
        widest = max(0, highest + (1 if zero_based else 0))
        if n_features is None:
            if widest == 0:
                raise DataError(
                    f"{path}: no line holds a feature (index:value), so the number of features "
                    f"is unknown; give it with {setting('--n-features')}"
                )
            n_features = widest
        elif widest > n_features:
            line = self._first_line_with(lambda indices: indices == highest)
            why = ""
            if guessed and zero_based:
                first = self._first_line_with(lambda indices: indices == 0)
                why = f" (indices count from 0: line {first} holds index 0)"
            raise DataError(
                f"{path}: line {line}: feature index {highest} is beyond the {n_features:,} "
                f"features given{why}"
            )
        self.n_samples, self.n_features = n_samples, n_features
        self.labels_dtype = np.dtype(np.int64) if integer_targets else None

    def _targets(self, lines: list[bytes], numbers: NDArray[np.int64]) -> NDArray[np.float64]:
        """The first number of each line; a line whose first word is not a number is named."""
        words = [line.split(None, 1)[0] for line in lines]
        try:
            return np.array(words, dtype=np.float64)
        except ValueError:
            for word, number in zip(words, numbers, strict=True):
                try:
                    float(word)
                except ValueError:
                    raise DataError(
                        f"{self.path}: line {number}: the target {word.decode(errors='replace')!r} "
                        "is not a number (a line is 'target index:value ...'; several targets "
                        "a line are not read)"
                    ) from None
            raise

    def _first_line_with(self, found: Any) -> int:
        """The number of the first line with an index for which ``found`` holds (on the way to
        an error: a pass of its own)."""
        for lines, numbers in _svmlight_lines(self.path, self.compressed, self.SCAN_ROWS):
            for line, number in zip(lines, numbers, strict=True):
                if found(_indices_of([line])).any():
                    return int(number)
        return 0

    def _parse(self, lines: list[bytes], numbers: NDArray[np.int64]) -> tuple[Any, NDArray[Any]]:
        """Rows (CSR, indices as written) and targets of some lines; a bad line is named."""
        from sklearn.datasets import load_svmlight_file

        try:
            X, y = load_svmlight_file(io.BytesIO(b"".join(lines)), zero_based=True)
        except (ValueError, OverflowError) as err:
            for line, number in zip(lines, numbers, strict=True):
                try:
                    load_svmlight_file(io.BytesIO(line), zero_based=True)
                except (ValueError, OverflowError) as line_err:
                    problem = _svmlight_problem(line_err)
                    raise DataError(f"{self.path}: line {number}: {problem}") from line_err
            raise DataError(f"{self.path}: lines {numbers[0]}..{numbers[-1]}: {err}") from err
        if X.shape[0] != len(lines):  # our idea of which lines hold rows is scikit-learn's
            raise DataError(
                f"{self.path}: lines {numbers[0]}..{numbers[-1]} hold {X.shape[0]} rows, not "
                f"{len(lines)}"
            )
        return X, y

    def blocks(self, block_rows: int, scratch: Path | None = None) -> Iterator[RowBlock]:
        """Parse the file a block of lines at a time (see :class:`RowSource`)."""
        start = 0
        for lines, numbers in _svmlight_lines(self.path, self.compressed, block_rows):
            X, y = self._parse(lines, numbers)
            indices = X.indices if self.zero_based else X.indices - 1
            if X.nnz and indices.max() >= self.n_features:
                raise DataError(f"{self.path}: changed while being read; ingest it again")
            rows = _csr(X.data, indices, X.indptr, (len(lines), self.n_features))
            labels = y.astype(np.int64) if self.labels_dtype is not None else None
            yield RowBlock(start, rows, labels, numbers)
            start += len(lines)

    def where(self, block: RowBlock, row: int, column: int) -> str:
        """The line, and the feature index as the file writes it."""
        assert block.lines is not None
        return f"line {block.lines[row]}, feature index {column + (0 if self.zero_based else 1)}"

    def record(self) -> dict[str, Any]:
        """As :meth:`RowSource.record`, with ``zero_based`` and whether the targets became labels."""
        return {
            **super().record(),
            "zero_based": self.zero_based,
            "targets": "labels" if self.labels_dtype is not None else "not whole numbers: dropped",
        }


# --------------------------------------------------------------------------- Matrix Market

#: One entry of a Matrix Market file in a scratch file: its row within its chunk, column, value.
_ENTRY = np.dtype([("row", "<i8"), ("column", "<i8"), ("value", "<f8")])


class MatrixMarketRows(RowSource):
    """Rows of a Matrix Market coordinate file (``.mtx``, ``.mtx.gz``): real, integer or pattern
    values, general or symmetric.

    The header is read by ``scipy.io.mminfo``. The entries of a coordinate file may come in any
    order, so :meth:`blocks` first reads them ``TEXT_BLOCK`` bytes of lines at a time (parsed by
    ``numpy.loadtxt``), checks them (a bad line is named) and appends each to a scratch file for
    its chunk of rows; then reads each chunk's entries back, in order, and yields them as rows
    (duplicate entries are summed). Memory is bounded by one block of text and its entries plus
    the entries of one chunk of rows, 24 bytes each, whatever the size of the file; the scratch
    files take 24 bytes of disk an entry (twice that for the mirrored entries of a symmetric
    file) until the rows are written.

    Parameters
    ----------
    path : Path
        The file.
    compressed : bool
        Whether it is gzip-compressed.
    """

    kind = "matrix-market"
    #: Bytes of entry lines parsed at a time (about 500,000 entries of small counts).
    TEXT_BLOCK = 8 << 20

    def __init__(self, path: Path, compressed: bool) -> None:
        import scipy.io

        try:
            n_rows, n_columns, entries, layout, field, symmetry = scipy.io.mminfo(str(path))
        except (ValueError, OSError, EOFError, zlib.error, RuntimeError) as err:
            raise DataError(f"{path}: not a readable Matrix Market file: {err}") from err
        if layout != "coordinate":
            raise DataError(
                f"{path}: a dense Matrix Market array, stored column by column; only coordinate "
                "files are read by rows: save it with numpy.save as .npy instead"
            )
        if field not in ("real", "integer", "pattern", "double"):
            raise DataError(
                f"{path}: {field} values; expected real, integer or pattern (counts or ones)"
            )
        if symmetry not in ("general", "symmetric"):
            raise DataError(
                f"{path}: a {symmetry} matrix holds negative values; expected general or "
                "symmetric (counts or ones)"
            )
        if n_rows < 1 or n_columns < 1:
            raise DataError(
                f"{path}: wrong dimensions {n_rows} x {n_columns}: each must be positive"
            )
        super().__init__(path, int(n_rows), int(n_columns))
        self.compressed = compressed
        self.entries, self.field, self.symmetry = int(entries), field, symmetry
        self.width = 2 if field == "pattern" else 3  # row, column and (unless pattern) value

    def _entry_texts(self) -> Iterator[tuple[bytes, int]]:
        """Runs of whole entry lines after the header and the size line, about ``TEXT_BLOCK``
        bytes each, with the number of each run's first line."""
        try:
            with open_maybe_gzip(self.path, self.compressed) as f:
                first = 1
                for line in f:  # comments, then the size line
                    first += 1
                    if not line.startswith(b"%") and line.strip():
                        break
                rest = b""
                for piece in iter(lambda: f.read(self.TEXT_BLOCK), b""):
                    text = rest + piece
                    cut = text.rfind(b"\n") + 1
                    if cut:
                        yield text[:cut], first
                        first += text.count(b"\n", 0, cut)
                    rest = text[cut:]
                if rest.strip():
                    yield rest + b"\n", first
        except (EOFError, zlib.error, gzip.BadGzipFile) as err:
            raise DataError(f"{self.path}: corrupt or truncated gzip stream: {err}") from err

    def _entry_lines(self, text: bytes, first: int) -> Iterator[tuple[int, list[bytes]]]:
        """The entry lines of a run as words, with their numbers (blank lines and comments left
        out): the slow way, to name a bad line."""
        for number, line in enumerate(text.split(b"\n"), first):
            words = line.partition(b"%")[0].split()
            if words:
                yield number, words

    def _parse(self, text: bytes, first: int) -> NDArray[np.float64]:
        """The entries of a run of lines, an array of shape (n, 2 or 3); a bad line is named."""
        try:
            with warnings.catch_warnings():  # a run of blank lines is no entries, not a warning
                warnings.simplefilter("ignore", UserWarning)
                entries = np.loadtxt(io.BytesIO(text), dtype=np.float64, ndmin=2, comments="%")
        except ValueError:
            entries = None
        if entries is not None and (len(entries) == 0 or entries.shape[1] == self.width):
            return entries
        for number, words in self._entry_lines(text, first):
            if len(words) != self.width:
                raise DataError(
                    f"{self.path}: line {number}: expected {self.width} numbers (row, column"
                    f"{', value' if self.width == 3 else ''}); found {len(words)}"
                )
            for word in words:
                try:
                    float(word)
                except ValueError:
                    raise DataError(
                        f"{self.path}: line {number}: {word.decode(errors='replace')!r} is not "
                        "a number"
                    ) from None
        raise DataError(f"{self.path}: lines from {first} cannot be read as entries")

    def _check_entries(self, entries: NDArray[np.float64], text: bytes, first: int) -> None:
        """Refuse indices outside the header's dimensions or not whole, and values below 0."""

        def line_of(i: int) -> int:
            return next(itertools.islice(self._entry_lines(text, first), i, None))[0]

        for axis, name, size in ((0, "row", self.n_samples), (1, "column", self.n_features)):
            index = entries[:, axis]
            bad = (index < 1) | (index > size) | (index != np.floor(index))
            if bad.any():
                i = int(np.argmax(bad))
                raise DataError(
                    f"{self.path}: line {line_of(i)}: {name} {index[i]:g} is not in 1..{size:,} "
                    f"(the header declares {self.n_samples:,} x {self.n_features:,})"
                )
        if self.width == 3:
            values = entries[:, 2]
            bad = ~(values >= 0) | np.isinf(values)  # NaN too
            if bad.any():
                i = int(np.argmax(bad))
                value = values[i]
                problem = (
                    "NaN (not a number)"
                    if np.isnan(value)
                    else "an infinite value"
                    if np.isinf(value)
                    else f"negative value {value:g}; counts and 0/1 values cannot be negative"
                )
                raise DataError(f"{self.path}: line {line_of(i)}: {problem}")

    def _bucket(self, folder: Path, block_rows: int) -> None:
        """Read every entry and append it to the scratch file of its chunk of rows."""
        seen = 0
        for text, first in self._entry_texts():
            entries = self._parse(text, first)
            self._check_entries(entries, text, first)
            seen += len(entries)
            rows = entries[:, 0].astype(np.int64) - 1
            columns = entries[:, 1].astype(np.int64) - 1
            values = entries[:, 2] if self.width == 3 else np.ones(len(entries))
            if self.symmetry == "symmetric":  # the file holds one triangle; mirror the rest
                off = rows != columns
                rows, columns = np.r_[rows, columns[off]], np.r_[columns, rows[off]]
                values = np.r_[values, values[off]]
            chunk = rows // block_rows
            order = np.argsort(chunk, kind="stable")
            record = np.empty(len(order), dtype=_ENTRY)
            record["row"] = (rows - chunk * block_rows)[order]
            record["column"] = columns[order]
            record["value"] = values[order]
            chunks, starts = np.unique(chunk[order], return_index=True)
            for k, lo, hi in zip(chunks, starts, [*starts[1:], len(order)], strict=True):
                with open(folder / f"{k}.entries", "ab") as f:
                    record[lo:hi].tofile(f)
        if seen != self.entries:
            raise DataError(
                f"{self.path}: the header declares {self.entries:,} entries but the file holds "
                f"{seen:,}"
            )

    def blocks(self, block_rows: int, scratch: Path | None = None) -> Iterator[RowBlock]:
        """Sort the entries into scratch files by chunk of rows, then read each as a block of
        rows (see :class:`RowSource`)."""
        import scipy.sparse

        with tempfile.TemporaryDirectory(prefix=".bmm-dask-mtx-", dir=scratch) as name:
            folder = Path(name)
            self._bucket(folder, block_rows)
            for chunk, start in enumerate(range(0, self.n_samples, block_rows)):
                n_rows = min(block_rows, self.n_samples - start)
                bucket = folder / f"{chunk}.entries"
                entries = np.fromfile(bucket, dtype=_ENTRY) if bucket.exists() else []
                bucket.unlink(missing_ok=True)
                entries = np.asarray(entries, dtype=_ENTRY)
                rows = scipy.sparse.coo_array(
                    (entries["value"], (entries["row"], entries["column"])),
                    shape=(n_rows, self.n_features),
                ).tocsr()  # sums duplicate entries
                yield RowBlock(start, rows)

    def where(self, block: RowBlock, row: int, column: int) -> str:
        """The row and column as the file counts them (from 1)."""
        return f"row {block.start + row + 1}, column {column + 1}"

    def record(self) -> dict[str, Any]:
        """As :meth:`RowSource.record`, with the field and the symmetry."""
        return {**super().record(), "field": self.field, "symmetry": self.symmetry}


# --------------------------------------------------------------------------- SciPy .npz


class SparseNpzRows(RowSource):
    """Rows of a SciPy sparse matrix saved by ``scipy.sparse.save_npz`` (any of its layouts).

    The file is a zip of whole arrays with no way to read some rows alone, so the matrix is
    loaded whole, as CSR: memory holds all of it (about 12 bytes a stored value) while the rows
    are written a block at a time.

    Parameters
    ----------
    path : Path
        The file.
    """

    kind = "npz"

    def __init__(self, path: Path) -> None:
        import scipy.sparse

        try:
            matrix = scipy.sparse.load_npz(path)
        except Exception as err:  # a zip of other arrays, not a zip, truncated
            raise DataError(
                f"{path}: not a SciPy sparse matrix (as scipy.sparse.save_npz writes): "
                f"{_npz_holds(path) or err}; save dense arrays with numpy.save as .npy"
            ) from err
        if matrix.ndim != 2 or 0 in matrix.shape:
            raise DataError(f"{path}: wrong dimensions {matrix.shape}: expected N rows of D values")
        if matrix.dtype.kind not in "biuf":
            raise DataError(f"{path}: values of type {matrix.dtype} cannot be counts or bits")
        self.matrix = scipy.sparse.csr_array(matrix)
        super().__init__(path, matrix.shape[0], matrix.shape[1], dtype=matrix.dtype)

    def blocks(self, block_rows: int, scratch: Path | None = None) -> Iterator[RowBlock]:
        """Slices of rows of the loaded matrix (see :class:`RowSource`)."""
        for start in range(0, self.n_samples, block_rows):
            yield RowBlock(start, self.matrix[start : start + block_rows])


def _npz_holds(path: Path) -> str | None:
    """What a .npz that is not a sparse matrix holds, in words, or None if it is not a .npz."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return f"it holds the arrays {', '.join(archive.files)}"
    except Exception:
        return None


# --------------------------------------------------------------------------- HDF5 and Zarr


class _ArrayRows(RowSource):
    """A dense array of two or more dimensions, read by blocks of rows (HDF5, Zarr).

    The checksum is the MD5 of the values, row by row, as little-endian numbers of the array's
    type, fed as they are read: the same values give the same checksum whatever the file's
    chunks, compression or other contents. Memory holds one block of rows.
    """

    counts = False

    def _open_shape(self, shape: tuple[int, ...], dtype: np.dtype[Any], name: str) -> None:
        """Check the array's shape and type (``name`` names it in messages) and take its sizes."""
        if len(shape) < 2:
            raise DataError(
                f"{name}: a {len(shape)}-dimensional array of shape {shape}; expected N samples of "
                "D values (N x D, or N x H x W images)"
            )
        if 0 in shape:
            raise DataError(f"{name}: wrong dimensions {shape}: each must be positive")
        if dtype.kind not in "biuf":
            raise DataError(f"{name}: values of type {dtype} cannot be pixels, counts or bits")
        n_features = int(np.prod(shape[1:]))
        image_shape = list(shape[1:]) if len(shape) > 2 else None
        RowSource.__init__(
            self, self.path, shape[0], n_features, dtype=dtype, image_shape=image_shape
        )
        self._digest = hashlib.md5(usedforsecurity=False)

    def _read(self, start: int, stop: int) -> NDArray[Any]:
        raise NotImplementedError

    def blocks(self, block_rows: int, scratch: Path | None = None) -> Iterator[RowBlock]:
        """Read the array a block of rows at a time, each flattened to a row (see :class:`RowSource`)."""
        self._digest = hashlib.md5(usedforsecurity=False)
        little = self.dtype.newbyteorder("<")
        for start in range(0, self.n_samples, block_rows):
            stop = min(start + block_rows, self.n_samples)
            block = np.asarray(self._read(start, stop)).reshape(stop - start, self.n_features)
            self._digest.update(np.ascontiguousarray(block, dtype=little).tobytes())
            yield RowBlock(start, block)

    def _values_record(self) -> dict[str, Any]:
        return {
            "format": self.kind,
            "md5": self._digest.hexdigest(),
            "md5_of": f"values, row by row, as {self.dtype.name}"
            + (" little-endian" if self.dtype.itemsize > 1 else ""),
        }


class Hdf5Rows(_ArrayRows):
    """Rows of a dense dataset in an HDF5 file (``file.h5:/path/to/dataset``), read with h5py a
    block of rows at a time; memory holds one block.

    Parameters
    ----------
    path : Path
        The HDF5 file.
    dataset : str or None
        The dataset's path in the file; None means the file's only dataset of two or more
        dimensions.
    """

    kind = "hdf5"

    def __init__(self, path: Path, dataset: str | None) -> None:
        h5py = _needs("h5py", "hdf5", path, "HDF5")
        self.path = path
        try:
            with h5py.File(path, "r") as f:
                found: list[str] = []
                f.visititems(
                    lambda name, node: (
                        found.append("/" + name) if isinstance(node, h5py.Dataset) else None
                    )
                )
                if dataset is None:
                    wide = [name for name in found if f[name].ndim >= 2]
                    if len(wide) != 1:
                        listed = ", ".join(found[:10]) or "no datasets"
                        raise DataError(
                            f"{path}: holds {listed}; name the dataset to read, as in "
                            f"{path}:{wide[0] if wide else '/data'}"
                        )
                    dataset = wide[0]
                node = f.get(dataset)
                if not isinstance(node, h5py.Dataset):
                    what = "a group, not a dataset" if node is not None else "no such dataset"
                    listed = ", ".join(found[:10]) or "no datasets"
                    raise DataError(f"{path}:{dataset}: {what} (the file holds {listed})")
                shape, dtype = tuple(node.shape or ()), node.dtype
        except OSError as err:
            raise DataError(f"{path}: cannot read as HDF5: {err}") from err
        self.dataset = dataset
        self._open_shape(shape, dtype, f"{path}:{dataset}")
        self._file: Any = None

    def blocks(self, block_rows: int, scratch: Path | None = None) -> Iterator[RowBlock]:
        """Read the dataset a block of rows at a time (see :class:`RowSource`)."""
        import h5py

        with h5py.File(self.path, "r") as self._file:
            yield from super().blocks(block_rows)

    def _read(self, start: int, stop: int) -> NDArray[Any]:
        try:
            return np.asarray(self._file[self.dataset][start:stop])
        except (OSError, ValueError) as err:
            raise DataError(
                f"{self.path}:{self.dataset}: rows {start}..{stop - 1} cannot be read: {err}"
            ) from err

    @property
    def shown(self) -> str:
        """The file and the dataset in it, as ``file.h5:/path`` names them."""
        return f"{self.path}:{self.dataset}"

    def record(self) -> dict[str, Any]:
        """The file's name, the dataset's path, and the MD5 of its values."""
        return {"file": self.path.name, "dataset": self.dataset, **self._values_record()}


class ZarrRows(_ArrayRows):
    """Rows of a Zarr array (a folder, format 2 or 3), read a block of rows at a time; memory
    holds one block.

    Parameters
    ----------
    path : Path
        The array's folder.
    """

    kind = "zarr"

    def __init__(self, path: Path) -> None:
        import zarr

        self.path = path
        try:
            node = zarr.open(store=str(path), mode="r")
        except Exception as err:
            raise DataError(f"{path}: cannot read as a Zarr array: {err}") from err
        if isinstance(node, zarr.Group):
            arrays = sorted(name for name, _ in node.arrays())
            if "bits" in arrays and "n_features" in node.attrs:
                raise DataError(f"{path}: a bmm-dask dataset already; fit it as it is")
            listed = ", ".join(arrays[:10]) or "no arrays"
            example = f"{path}/{arrays[0]}" if arrays else f"{path}/NAME"
            raise DataError(
                f"{path}: a Zarr group, not an array (it holds {listed}); name an array, as in "
                f"{example}"
            )
        self.array = node
        self._open_shape(tuple(node.shape), np.dtype(node.dtype), str(path))

    def _read(self, start: int, stop: int) -> NDArray[Any]:
        try:
            return np.asarray(self.array[start:stop])
        except Exception as err:
            raise DataError(f"{self.path}: rows {start}..{stop - 1} cannot be read: {err}") from err

    def record(self) -> dict[str, Any]:
        """The array's folder name and the MD5 of its values."""
        return {"file": self.path.name, **self._values_record()}


# --------------------------------------------------------------------------- tables


def split_items(cell: str, separator: str | None) -> list[str]:
    """The items of a basket cell: split at ``separator`` (None: any whitespace), each stripped,
    empty ones dropped.

    Parameters
    ----------
    cell : str
        The cell, as ``"milk bread eggs"`` or ``"milk, bread"``.
    separator : str or None
        What separates the items.

    Returns
    -------
    list of str

    >>> split_items("milk  bread eggs", None), split_items("milk, bread,", ",")
    (['milk', 'bread', 'eggs'], ['milk', 'bread'])
    """
    if separator is None:
        return cell.split()
    return [item for item in (part.strip() for part in cell.split(separator)) if item]


class _TableRows(RowSource):
    """What CSV and Parquet share: columns of values, or one column of items per row (baskets)."""

    def _layout(
        self,
        header: Sequence[str],
        columns: Sequence[str] | None,
        label_column: str | None,
        items: str | None,
        drop_columns: Sequence[str] | None = None,
    ) -> tuple[list[str], int | None, int | None]:
        """The feature columns, and the label and items columns' places; unknown names refused."""
        places = {name: i for i, name in enumerate(header)}
        for flag, names in (
            ("--columns", columns or ()),
            ("--label-column", [label_column] if label_column else []),
            ("--items", [items] if items else []),
            ("--drop-columns", drop_columns or ()),
        ):
            for name in names:
                if name not in places:
                    shown = ", ".join(repr(h) for h in header[:12])
                    raise DataError(
                        f"{self.path}: no column {name!r} (for {setting(flag)}); it has {shown}"
                        + (", ..." if len(header) > 12 else "")
                    )
        if columns is not None and items is not None:
            raise SettingsError(
                f"{setting('--columns')} and {setting('--items')} do not go together: a table "
                "has feature columns or one column of items"
            )
        if columns is not None and drop_columns is not None:
            raise SettingsError(
                f"{setting('--columns')} and {setting('--drop-columns')} do not go together: "
                "name the feature columns, or the columns that are not features"
            )
        label = places[label_column] if label_column else None
        if items is not None:
            return [], label, places[items]
        dropped = {label_column, *(drop_columns or ())}
        chosen = list(columns) if columns is not None else [h for h in header if h not in dropped]
        if not chosen:
            raise DataError(f"{self.path}: no feature columns besides those left out")
        return chosen, label, None

    def _vocabulary_of(self, seen: set[Any], given: Sequence[str] | None) -> list[str]:
        """The features of a basket table: the names given, or every item seen, sorted."""
        if given is not None:
            return list(given)
        if not seen:
            raise DataError(f"{self.path}: no row holds an item, so there are no features")
        return [str(item) for item in sorted(seen)]

    def where(self, block: RowBlock, row: int, column: int) -> str:
        """The line (CSV) or row (Parquet), and the column or item by name."""
        place = (
            f"line {block.lines[row]}" if block.lines is not None else f"row {block.start + row}"
        )
        assert self.feature_names is not None
        name = self.feature_names[column]
        return f"{place}, {'item' if self.baskets else 'column'} {name!r}"


def _csv_text(path: Path, compressed: bool) -> IO[str]:
    """A CSV file opened as text for the csv module (UTF-8, a byte-order mark dropped)."""
    if compressed:
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


class CsvRows(_TableRows):
    """Rows of a CSV or TSV file with a header row (``.csv``, ``.tsv``, gzipped or not), read
    with Python's csv module a block of rows at a time.

    Two layouts. Columns: each column a feature (its header the name) holding 0/1, true/false
    or counts; ``label_column`` names a column of integer labels, ``columns`` chooses the
    features (default: every column but the labels and those in ``drop_columns``, such as an
    id). Baskets: ``items`` names one column whose
    cell lists a row's items, separated by whitespace (or ``item_separator``); the features are
    the items seen, sorted, unless a vocabulary is given (then an item outside it is an error).
    A first pass counts the rows, checks that each has the header's number of cells, and
    gathers the items. Memory holds one block of rows as text and values, and the vocabulary.

    Parameters
    ----------
    path : Path
        The file.
    compressed : bool
        Whether it is gzip-compressed.
    columns, label_column, items, item_separator, drop_columns
        The layout, as above.
    vocabulary : sequence of str, default=None
        For baskets: the items, in the order of the features.
    """

    kind = "csv"

    def __init__(
        self,
        path: Path,
        compressed: bool,
        *,
        columns: Sequence[str] | None = None,
        label_column: str | None = None,
        items: str | None = None,
        item_separator: str | None = None,
        vocabulary: Sequence[str] | None = None,
        drop_columns: Sequence[str] | None = None,
    ) -> None:
        super().__init__(path, 0, 0)
        self.compressed = compressed
        self.delimiter = "\t" if ".tsv" in path.suffixes or ".tab" in path.suffixes else ","
        self.item_separator = item_separator
        # A basket of thousands of items is one long cell; the csv module refuses cells over
        # 128 KiB unless told (a setting of the module, for the whole process).
        csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
        header: list[str] | None = None
        n_samples = 0
        seen: set[str] = set()
        for number, row in self._rows():
            if header is None:
                header = row
                feature_columns, self.label_place, self.items_place = self._layout(
                    header, columns, label_column, items, drop_columns
                )
                duplicated = [h for h in set(header) if header.count(h) > 1]
                if duplicated:
                    raise DataError(
                        f"{path}: line {number}: column {duplicated[0]!r} appears twice in the header"
                    )
                continue
            n_samples += 1
            if self.items_place is not None and vocabulary is None:
                seen.update(split_items(row[self.items_place], item_separator))
        if header is None:
            raise DataError(f"{path}: empty: expected a header row and rows")
        if n_samples == 0:
            raise DataError(f"{path}: a header but no rows")
        self.header = header
        self.baskets = self.items_place is not None
        if self.baskets:
            names = self._vocabulary_of(seen, vocabulary)
            self.index = {name: i for i, name in enumerate(names)}
        else:
            names = feature_columns
            self.feature_places = [header.index(name) for name in names]
        self.n_samples, self.n_features, self.feature_names = n_samples, len(names), names
        self.labels_dtype = np.dtype(np.int64) if self.label_place is not None else None

    def _rows(self) -> Iterator[tuple[int, list[str]]]:
        """Each non-blank row with the line it ends on; rows of another width are refused."""
        width = None
        try:
            with _csv_text(self.path, self.compressed) as f:
                reader = csv.reader(f, delimiter=self.delimiter)
                for row in reader:
                    if not row:
                        continue
                    if width is None:
                        width = len(row)
                    elif len(row) != width:
                        raise DataError(
                            f"{self.path}: line {reader.line_num}: {len(row)} cells; the header "
                            f"has {width} columns"
                        )
                    yield reader.line_num, row
        except csv.Error as err:
            raise DataError(f"{self.path}: line {reader.line_num}: {err}") from err
        except UnicodeDecodeError as err:
            raise DataError(f"{self.path}: not UTF-8 text: {err}") from err
        except (EOFError, zlib.error, gzip.BadGzipFile) as err:
            raise DataError(f"{self.path}: corrupt or truncated gzip stream: {err}") from err

    def blocks(self, block_rows: int, scratch: Path | None = None) -> Iterator[RowBlock]:
        """Read the rows a block at a time (see :class:`RowSource`)."""
        rows = self._rows()
        next(rows)  # the header
        start = 0
        while True:
            batch = list(itertools.islice(rows, block_rows))
            if not batch:
                return
            lines = np.array([number for number, _ in batch], dtype=np.int64)
            cells = [row for _, row in batch]
            labels = None
            if self.label_place is not None:
                labels = self._labels([row[self.label_place] for row in cells], lines)
            if self.baskets:
                assert self.items_place is not None
                X = self._basket_rows([row[self.items_place] for row in cells], lines)
            else:
                X = self._values(np.array(cells, dtype=str)[:, self.feature_places], lines)
            yield RowBlock(start, X, labels, lines)
            start += len(batch)

    def _values(self, cells: NDArray[np.str_], lines: NDArray[np.int64]) -> NDArray[np.float64]:
        """Cells of numbers or true/false as numbers; a cell that is neither is named."""
        try:
            return cells.astype(np.float64)
        except ValueError:
            pass
        lowered = np.char.lower(np.char.strip(cells))
        words = np.where(lowered == "true", "1", np.where(lowered == "false", "0", cells))
        try:
            return words.astype(np.float64)
        except ValueError:
            for (row, column), cell in np.ndenumerate(words):
                try:
                    float(cell)
                except ValueError:
                    name = self.feature_names[column] if self.feature_names else column
                    what = "an empty cell" if not cell.strip() else f"{str(cell)!r} is not a number"
                    raise DataError(
                        f"{self.path}: line {lines[row]}, column {name!r}: {what} (expected "
                        "0/1, true/false or a count)"
                    ) from None
            raise

    def _labels(self, cells: list[str], lines: NDArray[np.int64]) -> NDArray[np.int64]:
        try:
            return np.array(cells, dtype=str).astype(np.int64)
        except ValueError:
            for cell, line in zip(cells, lines, strict=True):
                try:
                    int(cell)
                except ValueError:
                    raise DataError(
                        f"{self.path}: line {line}, column {self.header[self.label_place]!r}: "  # type: ignore[index]
                        f"label {cell!r} is not a whole number"
                    ) from None
            raise

    def _basket_rows(self, cells: list[str], lines: NDArray[np.int64]) -> Any:
        baskets = [split_items(cell, self.item_separator) for cell in cells]
        indptr = np.zeros(len(baskets) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in baskets], out=indptr[1:])
        try:
            indices = np.fromiter(
                (self.index[item] for basket in baskets for item in basket),
                dtype=np.int64,
                count=int(indptr[-1]),
            )
        except KeyError as err:
            row = next(i for i, b in enumerate(baskets) if any(x not in self.index for x in b))
            raise DataError(
                f"{self.path}: line {lines[row]}: item {err.args[0]!r} is not among the "
                f"{self.n_features:,} feature names given"
            ) from None
        data = np.ones(len(indices), dtype=np.float64)
        X = _csr(data, indices, indptr, (len(baskets), self.n_features))
        X.sum_duplicates()  # an item listed twice counts 2
        return X

    def record(self) -> dict[str, Any]:
        """As :meth:`RowSource.record`, with the layout (``columns`` or ``items``)."""
        layout: dict[str, Any] = {"layout": "items" if self.baskets else "columns"}
        if self.baskets:
            layout["items"] = self.header[self.items_place]  # type: ignore[index]
        if self.label_place is not None:
            layout["label_column"] = self.header[self.label_place]
        return {**super().record(), **layout}


class ParquetRows(_TableRows):
    """Rows of a Parquet file, read with pyarrow a batch of rows at a time.

    Two layouts, as :class:`CsvRows`: columns of booleans, integers or floats (0/1 or counts),
    or one column of items per row: a list column (found alone when it is the only feature
    column, or named by ``items``), or a string column named by ``items`` whose cells list the
    items separated by whitespace (or ``item_separator``). The vocabulary of a basket table is
    every item seen, sorted (numbers as numbers), found by a first pass over that column.
    Memory holds one block of rows (and the vocabulary).

    Parameters
    ----------
    path : Path
        The file.
    columns, label_column, items, item_separator, vocabulary, drop_columns
        As :class:`CsvRows`.
    """

    kind = "parquet"

    def __init__(
        self,
        path: Path,
        *,
        columns: Sequence[str] | None = None,
        label_column: str | None = None,
        items: str | None = None,
        item_separator: str | None = None,
        vocabulary: Sequence[str] | None = None,
        drop_columns: Sequence[str] | None = None,
    ) -> None:
        pa = _needs("pyarrow", "parquet", path, "Parquet")
        pq = _needs("pyarrow.parquet", "parquet", path, "Parquet")
        super().__init__(path, 0, 0)
        self.item_separator = item_separator
        try:
            self.file = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"{path}: cannot read as Parquet: {err}") from err
        schema = self.file.schema_arrow
        header = list(schema.names)
        features, label_place, items_place = self._layout(
            header, columns, label_column, items, drop_columns
        )
        types = pa.types
        if items_place is None and len(features) == 1 and _is_list(schema.field(features[0]).type):
            items_place, features = header.index(features[0]), []
        self.label_column = header[label_place] if label_place is not None else None
        self.items_column = header[items_place] if items_place is not None else None
        self.baskets = items_place is not None
        if self.label_column is not None:
            kind = schema.field(self.label_column).type
            if not types.is_integer(kind):
                raise DataError(
                    f"{path}: column {self.label_column!r} holds {kind}; labels must be integers"
                )
        if self.baskets:
            kind = schema.field(self.items_column).type
            item_kind = kind.value_type if _is_list(kind) else kind
            if not (types.is_string(item_kind) or types.is_large_string(item_kind)) and not (
                _is_list(kind) and types.is_integer(item_kind)
            ):
                raise DataError(
                    f"{path}: column {self.items_column!r} holds {kind}; a column of items holds "
                    "lists of strings or integers, or strings of items separated by spaces"
                )
            seen: set[Any] = set()
            if vocabulary is None:
                for start, batch in self._batches(1 << 16, [self.items_column]):
                    _, flat = self._items(batch.column(0), start)
                    seen.update(pa.compute.unique(flat).to_pylist())
            names = self._vocabulary_of(seen, vocabulary)
            self.lookup = pa.array(names if vocabulary is not None else sorted(seen))
            self.given_names = vocabulary is not None
        else:
            for name in features:
                kind = schema.field(name).type
                if not (
                    types.is_boolean(kind) or types.is_integer(kind) or types.is_floating(kind)
                ):
                    raise DataError(
                        f"{path}: column {name!r} holds {kind}; feature columns hold 0/1, "
                        f"booleans or counts (choose them with {setting('--columns')}, or name "
                        f"the labels with {setting('--label-column')})"
                    )
            names = features
        self.n_samples = self.file.metadata.num_rows
        if self.n_samples == 0:
            raise DataError(f"{path}: no rows")
        self.n_features, self.feature_names = len(names), names
        self.labels_dtype = np.dtype(np.int64) if self.label_column is not None else None

    def _batches(self, block_rows: int, columns: list[str]) -> Iterator[tuple[int, Any]]:
        """Tables of exactly ``block_rows`` rows (the last may have fewer), whatever the file's
        row groups, with the index of their first row."""
        import pyarrow as pa

        pending: list[Any] = []
        n_pending, start = 0, 0
        try:
            for batch in self.file.iter_batches(batch_size=block_rows, columns=columns):
                pending.append(batch)
                n_pending += batch.num_rows
                while n_pending >= block_rows:
                    table = pa.Table.from_batches(pending)
                    yield start, table.slice(0, block_rows)
                    rest = table.slice(block_rows)
                    pending, n_pending = rest.to_batches(), rest.num_rows
                    start += block_rows
            if n_pending:
                yield start, pa.Table.from_batches(pending)
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"{self.path}: rows from {start} cannot be read: {err}") from err

    def _first_null(self, column: Any, start: int, what: str) -> None:
        if column.null_count:
            import pyarrow.compute as pc

            row = start + int(np.argmax(pc.is_null(column).to_numpy(zero_copy_only=False)))
            raise DataError(f"{self.path}: row {row}, column {what!r}: a missing value")

    def _items(self, column: Any, start: int) -> tuple[NDArray[np.int64], Any]:
        """The items of a block's rows: the number in each row and all of them in order."""
        import pyarrow as pa
        import pyarrow.compute as pc

        self._first_null(column, start, self.items_column)
        if _is_list(column.type):
            lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
            flat = pc.list_flatten(column)
            if flat.null_count:
                at = int(np.argmax(pc.is_null(flat).to_numpy(zero_copy_only=False)))
                row = start + int(np.searchsorted(np.cumsum(lengths), at, side="right"))
                raise DataError(
                    f"{self.path}: row {row}, column {self.items_column!r}: a missing item"
                )
        else:
            baskets = [split_items(cell, self.item_separator) for cell in column.to_pylist()]
            lengths = np.array([len(b) for b in baskets], dtype=np.int64)
            flat = pa.array(list(itertools.chain.from_iterable(baskets)), type=pa.string())
        return lengths.astype(np.int64), flat

    def blocks(self, block_rows: int, scratch: Path | None = None) -> Iterator[RowBlock]:
        """Read the rows a block at a time (see :class:`RowSource`)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        wanted = [self.label_column] if self.label_column is not None else []
        wanted += [self.items_column] if self.baskets else list(self.feature_names or [])
        for start, table in self._batches(block_rows, wanted):
            labels = None
            if self.label_column is not None:
                column = table.column(self.label_column)
                self._first_null(column, start, self.label_column)
                labels = column.to_numpy().astype(np.int64)
            if self.baskets:
                lengths, flat = self._items(table.column(self.items_column), start)
                if self.given_names:
                    flat = pc.cast(flat, pa.string())
                found = pc.index_in(flat, value_set=self.lookup)
                if found.null_count:
                    at = int(np.argmax(pc.is_null(found).to_numpy(zero_copy_only=False)))
                    row = start + int(np.searchsorted(np.cumsum(lengths), at, side="right"))
                    raise DataError(
                        f"{self.path}: row {row}: item {flat[at].as_py()!r} is not among the "
                        f"{self.n_features:,} feature names given"
                    )
                indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
                np.cumsum(lengths, out=indptr[1:])
                indices = found.to_numpy(zero_copy_only=False).astype(np.int64)
                X = _csr(np.ones(len(indices)), indices, indptr, (len(lengths), self.n_features))
                X.sum_duplicates()  # an item listed twice counts 2
            else:
                values = []
                for name in self.feature_names or []:
                    column = table.column(name)
                    self._first_null(column, start, name)
                    values.append(column.to_numpy())
                X = np.column_stack(values)
            yield RowBlock(start, X, labels)

    def record(self) -> dict[str, Any]:
        """As :meth:`RowSource.record`, with the layout (``columns`` or ``items``)."""
        layout: dict[str, Any] = {"layout": "items" if self.baskets else "columns"}
        if self.baskets:
            layout["items"] = self.items_column
        if self.label_column is not None:
            layout["label_column"] = self.label_column
        return {**super().record(), **layout}


def _is_list(kind: Any) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    )


# --------------------------------------------------------------------------- which reader


def _looks_like_svmlight(head: bytes) -> bool:
    """Whether the first lines of a text hold svmlight rows (a label and index:value pairs)."""
    rows = [line for line in head.splitlines()[:-1] if line.partition(b"#")[0].strip()][:5]
    return (
        bool(rows)
        and all(_SVMLIGHT_LINE.match(line) for line in rows)
        and any(b":" in line.partition(b"#")[0] for line in rows)
    )


def detect_format(source: str | os.PathLike[str]) -> tuple[str, Path, str | None]:
    """Which format a source is in: by its name, else by its first bytes.

    Parameters
    ----------
    source : str or path-like
        A file; a Zarr array's folder; or ``file.h5:/path/to/dataset``.

    Returns
    -------
    kind : str
        One of :data:`FORMAT_NAMES`.
    path : Path
        The file or folder to read.
    inner : str or None
        The dataset's path inside an HDF5 file, when given.

    Raises
    ------
    DataError
        If the source is missing, or a folder that is not a Zarr array.
    """
    text = os.fspath(source)
    path = Path(text)
    if not path.exists():
        head, colon, inner = text.rpartition(":")
        if colon and head and inner and Path(head).is_file():
            return "hdf5", Path(head), inner
        if colon and head and inner.startswith("/"):  # file.h5:/dataset, the file missing
            raise DataError(f"{head}: no such file")
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        if any((path / name).exists() for name in ("zarr.json", ".zarray", ".zgroup")):
            return "zarr", path, None
        raise DataError(
            f"{path}: is a folder, and not a Zarr array; expected a data file, a Zarr array or "
            "file.h5:/dataset"
        )
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in SUFFIXES:
        return SUFFIXES[suffixes[-1]], path, None
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
        if head.startswith(GZIP_MAGIC):
            with gzip.open(path, "rb") as f:
                head = f.read(4096)
    except (OSError, EOFError, zlib.error) as err:
        if isinstance(err, PermissionError):
            raise DataError(f"{path}: cannot read: {err.strerror}") from err
        return "idx", path, None  # the IDX reader says what is wrong
    if head.startswith(b"PAR1"):
        return "parquet", path, None
    if head.startswith(_HDF5_MAGIC):
        return "hdf5", path, None
    if head.startswith(_MATRIX_MARKET_MAGIC):
        return "matrix-market", path, None
    if head.startswith(_ZIP_MAGIC):
        return "npz", path, None
    if _looks_like_svmlight(head):
        return "svmlight", path, None
    return "idx", path, None  # IDX or .npy: the images' reader tells them apart


#: The options of each format, by their flags, and what they are for, for messages.
_OPTIONS_FOR = {
    "--n-features": ({"svmlight"}, "svmlight files"),
    "--zero-based": ({"svmlight"}, "svmlight files"),
    "--columns": ({"csv", "parquet"}, "CSV and Parquet files"),
    "--label-column": ({"csv", "parquet"}, "CSV and Parquet files"),
    "--items": ({"csv", "parquet"}, "CSV and Parquet files"),
    "--item-separator": ({"csv", "parquet"}, "CSV and Parquet files"),
    "--drop-columns": ({"csv", "parquet"}, "CSV and Parquet files"),
}


def open_rows(
    source: str | os.PathLike[str],
    *,
    feature_names: Sequence[str] | None = None,
    n_features: int | None = None,
    zero_based: bool | None = None,
    columns: Sequence[str] | None = None,
    label_column: str | None = None,
    items: str | None = None,
    item_separator: str | None = None,
    drop_columns: Sequence[str] | None = None,
) -> RowSource:
    """Open rows of data in any format that ``ingest`` reads, ready to be read in blocks.

    The format is told by the name (``.svm``, ``.svmlight``, ``.libsvm``, ``.mtx``, ``.npz``,
    ``.parquet``, ``.csv``, ``.tsv``, ``.h5``, ``.npy``; the text formats also ``.gz``), else by
    the first bytes (IDX, .npy, Parquet, HDF5, Matrix Market, zip, svmlight lines). A folder is
    a Zarr array; ``file.h5:/path`` a dataset in an HDF5 file.

    Parameters
    ----------
    source : str or path-like
        The file, folder or HDF5 dataset.
    feature_names : sequence of str, default=None
        Names given for the features. For svmlight they set the number of features; for a
        table of items they are the vocabulary (the items, in the order of the features).
        Other formats ignore them here (the caller checks their number).
    n_features : int, default=None
        svmlight only: the number of features (default: the highest index).
    zero_based : bool, default=None
        svmlight only: whether indices count from 0 (default: when some index is 0).
    columns : sequence of str, default=None
        CSV and Parquet: the feature columns (default: all but the label column).
    label_column : str, default=None
        CSV and Parquet: the column of integer labels.
    items : str, default=None
        CSV and Parquet: the column that lists each row's items (the basket layout).
    item_separator : str, default=None
        CSV and Parquet: what separates the items in a cell of text (default: whitespace).
    drop_columns : sequence of str, default=None
        CSV and Parquet: columns that are not features (an id, a name), left out.

    Returns
    -------
    RowSource
        The reader, its numbers of rows and features known.

    Raises
    ------
    DataError
        If the source is missing, malformed, or does not hold what the options name.
    SettingsError
        If an option does not suit the format.
    DependencyError
        If the format needs a package that is not installed (pyarrow, h5py).
    """
    kind, path, inner = detect_format(source)
    given = {
        "--n-features": n_features,
        "--zero-based": zero_based,
        "--columns": columns,
        "--label-column": label_column,
        "--items": items,
        "--item-separator": item_separator,
        "--drop-columns": drop_columns,
    }
    for flag, value in given.items():
        formats, which = _OPTIONS_FOR[flag]
        if value is not None and kind not in formats:
            raise SettingsError(
                f"{setting(flag)} is for {which}; {path} is read as {FORMAT_NAMES[kind]}"
            )
    if item_separator is not None and items is None and kind == "csv":
        raise SettingsError(f"{setting('--item-separator')} goes with {setting('--items')}")
    compressed = _is_gzip(path) if kind in ("svmlight", "matrix-market", "csv") else False
    if kind == "svmlight":
        if feature_names is not None:
            if n_features is not None and n_features != len(feature_names):
                raise SettingsError(
                    f"{len(feature_names):,} feature names but {setting('--n-features')} "
                    f"{n_features:,}"
                )
            n_features = len(feature_names)
        return SvmlightRows(
            path,
            compressed,
            n_features=n_features,
            zero_based=zero_based,
            named=feature_names is not None,
        )
    if kind == "matrix-market":
        return MatrixMarketRows(path, compressed)
    if kind == "npz":
        return SparseNpzRows(path)
    table = {
        "columns": columns,
        "label_column": label_column,
        "items": items,
        "item_separator": item_separator,
        "drop_columns": drop_columns,
    }
    if kind == "csv":
        return CsvRows(path, compressed, vocabulary=feature_names if items else None, **table)
    if kind == "parquet":
        return ParquetRows(path, vocabulary=feature_names, **table)
    if kind == "hdf5":
        return Hdf5Rows(path, inner)
    if kind == "zarr":
        return ZarrRows(path)
    return ImageRows(open_source(path))


def _is_gzip(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(2) == GZIP_MAGIC
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror}") from err


def read_names(path: str | os.PathLike[str]) -> list[str]:
    """Read a file of feature names: UTF-8 text, one name a line (a vocabulary, column names).

    Each name is stripped of the spaces around it; a last empty line is not a name.

    Parameters
    ----------
    path : str or path-like
        The file.

    Returns
    -------
    list of str
        The names, in order.

    Raises
    ------
    DataError
        If the file is missing or not UTF-8, holds no names, an empty name, or a name twice.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as err:
        raise DataError(f"{path}: no such file") from err
    except IsADirectoryError as err:
        raise DataError(f"{path}: is a folder; expected a text file of names") from err
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text: {err}") from err
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror}") from err
    lines = text.split("\n")
    if lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    if not names:
        raise DataError(f"{path}: empty; expected one feature name a line")
    first: dict[str, int] = {}
    for number, name in enumerate(names, 1):
        if not name:
            raise DataError(f"{path}: line {number}: an empty name")
        if name in first:
            raise DataError(
                f"{path}: line {number}: {name!r} again (first on line {first[name]}); each "
                "feature needs a name of its own"
            )
        first[name] = number
    return names
