"""What ``bmm-dask info`` shows of whatever a path holds: a model, a checkpoint or datasets."""

from __future__ import annotations

import os
from typing import Any

from bmm_dask.errors import DataError
from bmm_dask.io._checkpoint import CHECKPOINT_FORMAT, read_checkpoint
from bmm_dask.io._dataset import dataset_children, describe_dataset
from bmm_dask.io._model import MODEL_FORMAT, describe_model
from bmm_dask.io._zarr import open_group


def describe_path(path_or_url: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Describe a model, a dataset, or each dataset of a group that holds several (``mnist.zarr``).

    Parameters
    ----------
    path_or_url : str or path-like
        The store.

    Returns
    -------
    list of dict
        One description per model, checkpoint or dataset (see :func:`describe_model` and
        :func:`describe_dataset`; a checkpoint gives ``kind``, ``path``, ``start``,
        ``iterations``, ``objective``, ``settings`` and ``data``).

    Raises
    ------
    DataError
        If the path is not a Zarr group, or holds neither a model, a checkpoint nor datasets.
    ModelFileError
        If a model or checkpoint cannot be read.
    """
    path = os.fspath(path_or_url)
    group = open_group(path, None)
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
        return [describe_dataset(path)]
    names = dataset_children(group)
    if not names:
        raise DataError(f"{path}: a Zarr group, but neither a dataset nor a group of datasets")
    return [describe_dataset(f"{path.rstrip('/')}/{name}") for name in names]
