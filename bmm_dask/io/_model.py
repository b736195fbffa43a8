"""The model store: a fitted mixture's means, weights and attributes in a Zarr group."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numpy.typing import NDArray

from bmm_dask.errors import DataError, setting
from bmm_dask.io._checkpoint import CHECKPOINT_FORMAT
from bmm_dask.io._dataset import read_feature_names, write_feature_names
from bmm_dask.io._output import atomic_output, is_url
from bmm_dask.io._zarr import check_version, format_name, new_group, open_group

#: What a model group's ``format`` attribute holds.
MODEL_FORMAT = {"name": "bmm_dask.model", "version": 1}


def write_model(
    path: str | os.PathLike[str],
    means: NDArray[np.float64],
    weights: NDArray[np.float64],
    attrs: Mapping[str, Any],
    *,
    overwrite: bool = False,
    feature_names: Sequence[str] | None = None,
) -> Path:
    """Write a model group (``means``, ``weights``, ``feature_names`` and attributes) atomically.

    Parameters
    ----------
    path : str or path-like
        The group to write (a local folder).
    means : ndarray of shape (n_components, n_features)
        Bernoulli means, stored as float64.
    weights : ndarray of shape (n_components,)
        Mixing weights, stored as float64.
    attrs : mapping
        Attributes of the group (settings, history, the data's fingerprint, ...).
    overwrite : bool, default=False
        Replace ``path`` if it exists.
    feature_names : sequence of str, default=None
        The features' names (``feature_names_in_``), stored as a dataset stores them; None
        stores none.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OutputError
        If ``path`` exists and ``overwrite`` is false, or cannot be written.
    DataError
        If there are names, but not one string per feature.
    """
    with atomic_output(path, overwrite=overwrite, urls=True) as tmp:
        group = new_group(tmp, MODEL_FORMAT, **attrs)
        means_array = group.create_array(
            "means",
            data=np.asarray(means, dtype=np.float64),
            dimension_names=("component", "feature"),
        )
        group.create_array(
            "weights", data=np.asarray(weights, dtype=np.float64), dimension_names=("component",)
        )
        if feature_names is not None:  # stored as a dataset's, read by one reader
            write_feature_names(group, feature_names, means_array.shape[1])
    return Path(path)


def _open_model(path: str) -> tuple[zarr.Group, dict[str, Any]]:
    """The model group at ``path`` and its attributes, checked to be a model's."""
    from bmm_dask.errors import ModelFileError

    try:
        group = open_group(path, None)
    except DataError as err:
        raise ModelFileError(str(err)) from err
    attrs = dict(group.attrs)
    kind = format_name(os.fspath(path), attrs, ModelFileError)
    if kind == CHECKPOINT_FORMAT["name"]:
        raise ModelFileError(
            f"{path}: the checkpoint of an unfinished fit, not a model; resuming the fit ({setting('--resume')}) finishes it"
        )
    if kind != MODEL_FORMAT["name"]:
        raise ModelFileError(f"{path}: not a bmm-dask model (no model format attribute)")
    check_version(path, attrs, MODEL_FORMAT, "model", ModelFileError)
    _check_model_attrs(path, attrs)
    return group, attrs


def _is_shape(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in value
    )


#: What each attribute of a model that bmm-dask reads back must be: a test, and its words.
MODEL_ATTRS: dict[str, tuple[Any, str]] = {
    "settings": (lambda v: isinstance(v, dict), "an object of the settings"),
    "history": (
        lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v),
        "a list of one object per iteration or pass",
    ),
    "data": (lambda v: v is None or isinstance(v, dict), "an object (the data's fingerprint)"),
    "n_iter": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "converged": (lambda v: isinstance(v, bool), "true or false"),
    "lower_bound": (
        lambda v: v is None or (isinstance(v, int | float) and not isinstance(v, bool)),
        "a number",
    ),
}


def _check_model_attrs(path: str, attrs: dict[str, Any]) -> None:
    """Refuse a model whose attributes are not of the types bmm-dask writes (a hand edit)."""
    from bmm_dask.errors import ModelFileError

    def refuse(name: str, what: str, value: Any) -> ModelFileError:
        text = repr(value)
        text = text if len(text) <= 60 else text[:57] + "..."
        return ModelFileError(f"{path}: attribute {name} should be {what}; found {text}")

    for name, (good, what) in MODEL_ATTRS.items():
        if name in attrs and not good(attrs[name]):
            raise refuse(name, what, attrs[name])
    data = attrs.get("data") or {}
    shape = data.get("image_shape")
    if shape is not None and not _is_shape(shape):
        raise refuse("data.image_shape", "a list of positive whole numbers", shape)
    if not isinstance(data.get("path", ""), str):
        raise refuse("data.path", "a path", data["path"])


def read_model(
    path: str | os.PathLike[str],
) -> tuple[NDArray[np.float64], NDArray[np.float64], dict[str, Any]]:
    """Read a model group: means, weights and its attributes, checked.

    Parameters
    ----------
    path : str or path-like
        The group written by :func:`write_model`.

    Returns
    -------
    means : ndarray of shape (n_components, n_features)
    weights : ndarray of shape (n_components,)
    attrs : dict
        The group's attributes.

    Raises
    ------
    ModelFileError
        If ``path`` is missing, not a model (a checkpoint, say), of a newer format, unreadable,
        or holds means outside (0, 1) or weights that do not sum to 1.
    """
    means, weights, attrs, _ = _read_model(os.fspath(path), names=False)
    return means, weights, attrs


def read_model_with_names(
    path: str | os.PathLike[str],
) -> tuple[NDArray[np.float64], NDArray[np.float64], dict[str, Any], NDArray[np.object_] | None]:
    """:func:`read_model`, and the features' names stored with the model (None if it was
    fitted without names), from one opening of the group.

    Raises
    ------
    ModelFileError
        As :func:`read_model`, and if the stored names cannot be read or are not one string
        per feature.
    """
    return _read_model(os.fspath(path), names=True)


def _read_model(
    path: str, names: bool
) -> tuple[NDArray[np.float64], NDArray[np.float64], dict[str, Any], NDArray[np.object_] | None]:
    from bmm_dask.errors import ModelFileError

    group, attrs = _open_model(path)
    try:
        arrays = {name: group[name] for name in ("means", "weights")}
        for name, array in arrays.items():
            # a missing chunk reads as the fill value (0, or whatever the metadata says),
            # which would be taken for means; a model's chunks are never all fill value
            if not is_url(path) and array.nchunks_initialized < array.nchunks:
                raise ModelFileError(
                    f"{path}/{name}: {array.nchunks - array.nchunks_initialized} of its "
                    f"{array.nchunks} chunks are missing from the store; restore the model "
                    "from a good copy, or fit again"
                )
        means = np.asarray(arrays["means"][...], dtype=np.float64)
        weights = np.asarray(arrays["weights"][...], dtype=np.float64)
    except ModelFileError:
        raise
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
    feature_names = None
    if names:
        try:
            feature_names = read_feature_names(group, path, means.shape[1])
        except DataError as err:
            raise ModelFileError(str(err)) from err
    return means, weights, attrs, feature_names


#: How many of a model's feature names ``describe_model`` shows.
FEATURE_NAMES_SHOWN = 8


def describe_model(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``bmm-dask info`` shows of a model, as plain values.

    Parameters
    ----------
    path : str or path-like
        The model group.

    Returns
    -------
    dict
        ``kind`` ("model"), ``path``, ``n_components``, ``n_features``, ``weights``, the
        group's attributes but its format and history, ``n_history``, and
        ``feature_names``: whether the model has its features' names, with
        ``first_feature_names``, the first few of them (or None).

    Raises
    ------
    ModelFileError
        As :func:`read_model`.
    """
    means, weights, attrs, names = read_model_with_names(path)
    return {
        "kind": "model",
        "path": os.fspath(path),
        "n_components": int(means.shape[0]),
        "n_features": int(means.shape[1]),
        "weights": weights.tolist(),
        **{k: v for k, v in attrs.items() if k not in ("format", "history")},
        "n_history": len(attrs.get("history", [])),
        "feature_names": names is not None,
        "first_feature_names": None if names is None else names[:FEATURE_NAMES_SHOWN].tolist(),
    }
