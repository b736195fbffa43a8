"""Opening Zarr groups read-only and checking the format record bmm-dask writes in each."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zarr
import zarr.errors

from bmm_dask.errors import DataError
from bmm_dask.io._output import is_url


def open_group(path: str, storage_options: Mapping[str, Any] | None) -> zarr.Group:
    """Open a group read-only: a folder, a URL, or a group inside a zip (``store.zip/train``).

    Parameters
    ----------
    path : str
        The group's folder, zip (with the path inside it after ``.zip/``) or URL.
    storage_options : mapping or None
        Passed to fsspec for URLs.

    Returns
    -------
    zarr.Group
        The group, read-only.

    Raises
    ------
    DataError
        If the path does not exist, is a damaged zip, or is not a readable Zarr group.
    """
    inner = zip_file = None
    if is_url(path):
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


def format_name(path: str, attrs: Mapping[str, Any], error: type[Exception]) -> str | None:
    """The store's kind, from its ``format`` attribute (None where it has none).

    Parameters
    ----------
    path : str
        The store, for messages.
    attrs : mapping
        The store's attributes.
    error : type of Exception
        The error to raise.

    Raises
    ------
    error
        If ``format`` is there but not an object with a name (a hand-edited store).
    """
    record = attrs.get("format")
    if record is None:
        return None
    if not isinstance(record, Mapping) or not isinstance(record.get("name"), str):
        raise error(
            f"{path}: attribute format should be an object with a name and a version; found "
            f"{_short(record)}"
        )
    return record["name"]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_version(
    path: str,
    attrs: Mapping[str, Any],
    known: Mapping[str, Any],
    what: str,
    error: type[Exception],
) -> None:
    """Refuse a store of a format version newer than this bmm-dask reads (or not a version).

    A group without a ``format`` attribute (made by hand) passes.

    Parameters
    ----------
    path : str
        The store, for messages.
    attrs : mapping
        The store's attributes.
    known : mapping
        The format record this bmm-dask writes, with the newest ``version`` it reads.
    what : str
        What the store is, for messages (``"dataset"``, ``"model"``, ...).
    error : type of Exception
        The error to raise (:class:`DataError` or :class:`ModelFileError`).

    Raises
    ------
    error
        If the version is not a whole number of at least 1, or is newer than ``known``'s.
    """
    if "format" not in attrs:  # a group made by hand, without our format record
        return
    format_name(path, attrs, error)
    version = attrs["format"].get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise error(f"{path}: its {what} format version is {version!r}; expected a whole number")
    if version > known["version"]:
        raise error(
            f"{path}: written in {what} format version {version}, newer than this bmm-dask "
            f"reads (up to {known['version']}); upgrade bmm-dask to read it"
        )


def new_group(path: str | os.PathLike[str], format: Mapping[str, Any], **attrs: Any) -> zarr.Group:
    """Create an empty group in the local folder ``path`` with its format record and ``attrs``.

    Parameters
    ----------
    path : str or path-like
        A folder that may exist and be empty (the temporary sibling of an output).
    format : mapping
        The ``{"name": ..., "version": ...}`` record readers check with :func:`check_version`.
    **attrs
        Further attributes. They cannot replace the format record.

    Returns
    -------
    zarr.Group
        The new group, open for writing.
    """
    group = zarr.open_group(zarr.storage.LocalStore(path), mode="w")
    attrs.pop("format", None)
    group.attrs.update({"format": dict(format), **attrs})
    return group
