"""The checkpoint of an unfinished fit: the state to resume from, saved so a kill at any moment
leaves a usable one."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bmm_dask.errors import setting
from bmm_dask.io._output import atomic_file, atomic_output, exists, is_url, join
from bmm_dask.io._zarr import check_version, format_name, new_group, open_group

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

    Parameters
    ----------
    path : str or path-like
        The store (the fit's output folder, or a URL).
    arrays : mapping of str to ndarray
        The state's arrays (means, weights, ...).
    state : mapping
        The rest of the state, as JSON values.
    attrs : mapping
        Attributes of the store (settings, the data's fingerprint), written with the first
        checkpoint.

    Raises
    ------
    OutputError
        If the store cannot be written.
    """

    def write_npz(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, state=np.array(json.dumps(dict(state))), **dict(arrays))

    if exists(join(path, CHECKPOINT_FILE)):
        atomic_file(join(path, CHECKPOINT_FILE), write_npz)
        return
    with atomic_output(path, overwrite=True, urls=True) as tmp:
        new_group(tmp, CHECKPOINT_FORMAT, **attrs)
        write_npz(tmp / CHECKPOINT_FILE)


def read_checkpoint(
    path: str | os.PathLike[str],
) -> tuple[dict[str, NDArray[Any]], dict[str, Any], dict[str, Any]]:
    """The arrays, state and attributes a checkpoint holds.

    Parameters
    ----------
    path : str or path-like
        The store written by :func:`write_checkpoint`.

    Returns
    -------
    arrays : dict of str to ndarray
    state : dict
    attrs : dict
        The store's attributes.

    Raises
    ------
    DataError
        If ``path`` does not exist or is not a Zarr group.
    ModelFileError
        If the group is not a checkpoint, is of a newer format, or its ``checkpoint.npz``
        cannot be read.
    """
    from bmm_dask.errors import ModelFileError

    group = open_group(os.fspath(path), None)
    attrs = dict(group.attrs)
    if format_name(os.fspath(path), attrs, ModelFileError) != CHECKPOINT_FORMAT["name"]:
        raise ModelFileError(f"{path}: not the checkpoint of an unfinished fit")
    check_version(os.fspath(path), attrs, CHECKPOINT_FORMAT, "checkpoint", ModelFileError)
    try:
        with np.load(_open(join(path, CHECKPOINT_FILE)), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k != "state"}
            state = json.loads(str(npz["state"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        # np.load takes an empty or cut file for a pickle (EOFError, "pickled data")
        reason = " ".join(str(err).split()) or "it is empty"
        if "pickled" in reason or isinstance(err, EOFError | zipfile.BadZipFile):
            reason = "it is empty, cut short, or not a checkpoint's file"
        raise ModelFileError(
            f"{path}/{CHECKPOINT_FILE}: cannot read the checkpoint ({reason}); fit afresh with "
            f"{setting('--overwrite')}"
        ) from err
    _check_state(os.fspath(path), arrays, state)
    return arrays, state, attrs


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_state(path: str, arrays: Mapping[str, NDArray[Any]], state: Any) -> None:
    """Refuse a checkpoint whose state is not what a fit writes (a hand edit, damage): every
    problem named by its field, before a fit goes on from it."""
    from bmm_dask.errors import ModelFileError

    where = f"{path}/{CHECKPOINT_FILE}"

    def refuse(field: str, what: str) -> ModelFileError:
        return ModelFileError(f"{where}: {field} {what}; the checkpoint is damaged, fit afresh")

    if not isinstance(state, dict):
        raise refuse("its state", "should be an object")
    if not _whole(state.get("run")):
        raise refuse("run", "should be a whole number from 0")
    history = state.get("history")
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise refuse("history", "should be a list of one object per iteration or pass")
    if not isinstance(state.get("rng_state"), dict):
        raise refuse("rng_state", "is missing (the random generator's state)")
    for name in ("best", "stepwise"):
        if state.get(name) is not None and not isinstance(state[name], dict):
            raise refuse(name, "should be an object")
    for name, array in arrays.items():
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise refuse(name, "holds values that are not finite numbers")
    means, weights = arrays.get("means"), arrays.get("weights")
    if (means is None) != (weights is None) or (
        means is not None
        and (means.ndim != 2 or weights is None or weights.shape != (means.shape[0],))
    ):
        raise refuse("means and weights", "do not fit together")
    stepwise = state.get("stepwise") or {}
    for name in ("step", "position", "n_seen", "pass"):
        if name in stepwise and not _whole(stepwise[name]):
            raise refuse(f"stepwise {name}", "should be a whole number from 0")


def _open(path: str) -> Any:
    """A file to read, on this machine or at a URL (read whole: a checkpoint is small)."""
    if not is_url(path):
        return path
    import io

    import fsspec

    with fsspec.open(path, "rb") as f:
        return io.BytesIO(f.read())
