"""MNIST: fetching the four files (checked by md5), the local cache, and the copy that ships
with the package."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

from bmm_dask.datasets._binarise import Binarization
from bmm_dask.datasets._formats import ImageRows
from bmm_dask.datasets._ingest import Progress, write_rows
from bmm_dask.datasets._sources import GZIP_MAGIC, open_labels, open_maybe_gzip, open_source
from bmm_dask.errors import DataError, FetchError, SettingsError
from bmm_dask.io import (
    Dataset,
    DatasetWriter,
    atomic_file,
    atomic_output,
    check_output,
    open_dataset,
    parse_chunk_rows,
)

logger = logging.getLogger(__name__)

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
    """Where fetched data is cached: ``$BMM_DASK_DATA``, else ``~/.cache/bmm-dask``.

    Returns
    -------
    Path
        The folder (which may not exist yet).
    """
    env = os.environ.get("BMM_DASK_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bmm-dask"


def mnist_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """The folder of the MNIST files.

    Parameters
    ----------
    directory : str or path-like, default=None
        The folder; None means ``data_home() / "mnist"``.

    Returns
    -------
    Path
        The folder (which may not exist yet).
    """
    return Path(directory) if directory is not None else data_home() / "mnist"


def _find(directory: Path, name: str) -> Path | None:
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def _md5_uncompressed(path: Path) -> tuple[str, int]:
    """md5 and length of a file's bytes, after gunzip when it is gzip."""
    with open(path, "rb") as f:
        compressed = f.read(2) == GZIP_MAGIC
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    with open_maybe_gzip(path, compressed) as f:
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
    directory : str or path-like, default=None
        Where the files go; None means ``data_home() / "mnist"``.
    from_dir : str or path-like, default=None
        Take the files from this folder (``name.gz`` or ``name``) instead of the network.
    mirrors : sequence of str, default=None
        Base URLs; None means ``BMM_DASK_MNIST_MIRRORS`` or :data:`MNIST_MIRRORS`.
    files : dict, default=None
        Name -> (md5, size) of the uncompressed bytes; None means :data:`MNIST_FILES`.
    timeout : float, default=60.0
        Seconds to wait for a mirror to answer.

    Returns
    -------
    Path
        The folder holding the verified files.

    Raises
    ------
    DataError
        If ``from_dir`` is not a folder, lacks a file, or holds one that fails its check.
    FetchError
        If the folder cannot be created, or a file fails to download, or its check, from
        every mirror.
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
    """The four MNIST files in the cache, verified, or None when any is missing or wrong.

    Parameters
    ----------
    directory : str or path-like, default=None
        The cache folder; None means ``data_home() / "mnist"``.

    Returns
    -------
    dict or None
        The path of each file (``name.gz`` or ``name``), by name, or None.
    """
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
    """The MNIST copy inside the package: a zipped Zarr store with ``train`` and ``test`` datasets.

    Returns
    -------
    Path
        The path of ``mnist.zarr.zip``.
    """
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

    Parameters
    ----------
    out : str or path-like
        The group to write (a local folder).
    binarization : Binarization, default=None
        How grey levels become bits; None means threshold 128.
    chunk_rows : int, default=None
        Rows per chunk; None means about 1 MiB of packed rows.
    overwrite : bool, default=False
        Replace ``out`` if it exists.
    directory : str or path-like, default=None
        The cache of fetched files; None means ``data_home() / "mnist"``.
    progress : callable, default=None
        Called with (rows written, rows in all) after each chunk.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    SettingsError
        If the cache lacks the files and ``binarization`` is not the packaged copy's, or
        ``chunk_rows`` is out of range.
    OutputError
        If ``out`` exists and ``overwrite`` is false, is or holds an input, or cannot be
        written.
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
                labels = open_labels(files[labels_name], images.n_samples)
                rows = parse_chunk_rows(chunk_rows, images.n_features, n_samples=images.n_samples)
                # the test images get their own draws, not the training images' of their rows
                split_binarization = dataclasses.replace(
                    binarization, stream=list(MNIST_SPLITS).index(split)
                )
                attrs = {
                    "image_shape": images.image_shape,
                    "binarization": split_binarization.to_attrs(),
                    "name": f"MNIST {split}",
                }
                write_rows(
                    tmp / split,
                    ImageRows(images),
                    labels,
                    split_binarization,
                    rows,
                    attrs,
                    progress,
                )
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
    rows = parse_chunk_rows(chunk_rows, dataset.n_features, n_samples=dataset.n_samples)
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
