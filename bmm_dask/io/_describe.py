"""What ``bmm-dask info`` shows of whatever a path holds: a model, a checkpoint, datasets,
predictions, or the folder of a selection of K."""

from __future__ import annotations

import os
from typing import Any

from bmm_dask.errors import DataError
from bmm_dask.io._checkpoint import CHECKPOINT_FORMAT, read_checkpoint
from bmm_dask.io._dataset import dataset_children, describe_dataset, has_member
from bmm_dask.io._model import MODEL_FORMAT, describe_model
from bmm_dask.io._output import is_url
from bmm_dask.io._predictions import PREDICTIONS_FORMAT
from bmm_dask.io._zarr import format_name, open_group


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
        ``iterations``, ``objective``, ``settings`` and ``data``), or of predictions
        (``n_samples``, ``n_components``, ``responsibilities``, ``model``, ``data``) or a
        selection's folder (``n_components`` chosen, ``criterion``, ``n_train``, ``n_heldout``
        and ``candidates``, the best start of each K).

    Raises
    ------
    DataError
        If the path is not a Zarr group, or holds neither a model, a checkpoint nor datasets.
    ModelFileError
        If a model or checkpoint cannot be read.
    """
    path = os.fspath(path_or_url)
    if not is_url(path):
        from bmm_dask.selection import read_selection

        selection = read_selection(path)
        if selection is not None:
            return [_selection(path, selection)]
    group = open_group(path, None)
    kind = format_name(path, dict(group.attrs), DataError)
    if kind == PREDICTIONS_FORMAT["name"]:
        record = group.attrs.get("chunks_stored")
        for name, count in record.items() if isinstance(record, dict) else ():
            if has_member(group, path, name) and not is_url(path):
                stored = group[name].nchunks_initialized
                if stored < count:
                    raise DataError(
                        f"{path}/{name}: {count - stored} of its {count} chunks are missing "
                        "from the store; predict again"
                    )
        data = group.attrs.get("data") or {}
        return [
            {
                "kind": "predictions",
                "path": path,
                "n_samples": int(group["labels"].shape[0]) if "labels" in group else None,
                "n_components": group.attrs.get("n_components"),
                "responsibilities": "resp" in group,
                "model": group.attrs.get("model"),
                "data": data.get("path") if isinstance(data, dict) else None,
            }
        ]
    if kind == MODEL_FORMAT["name"]:
        return [describe_model(path)]
    if kind == CHECKPOINT_FORMAT["name"]:
        _, state, attrs = read_checkpoint(path)
        return [
            {
                "kind": "checkpoint",
                "path": path,
                "start": state["run"] + 1,
                "iterations": sum(1 for r in state["history"] if "pass" not in r),
                "passes": sum(1 for r in state["history"] if "pass" in r)
                + len((state.get("stepwise") or {}).get("history") or []),
                # the last record: of the passes in the snapshot, else of the phases finished
                "objective": next(
                    (
                        r.get("objective")
                        for r in reversed(
                            [
                                *state["history"],
                                *((state.get("stepwise") or {}).get("history") or []),
                            ]
                        )
                    ),
                    None,
                ),
                # in a stepwise pass: which, and its last step saved
                "in_pass": (
                    (state["stepwise"].get("pass"), state["stepwise"].get("step"))
                    if state.get("stepwise")
                    else None
                ),
                "settings": attrs.get("settings"),
                "data": attrs.get("data"),
            }
        ]
    if has_member(group, path, "bits"):
        return [describe_dataset(path)]
    names = dataset_children(group)
    if not names:
        raise DataError(
            f"{path}: a Zarr group, but none that bmm-dask writes (a dataset or a group of "
            "them, a model, a checkpoint, predictions)"
        )
    return [describe_dataset(f"{path.rstrip('/')}/{name}") for name in names]


def _selection(path: str, selection: dict[str, Any]) -> dict[str, Any]:
    """What ``info`` shows of a selection's folder: the choice, and each K's best start."""
    best = [
        row for row in selection["candidates"] if isinstance(row, dict) and row.get("best_start")
    ]
    return {
        "kind": "selection",
        "path": path,
        "n_components": selection["n_components"],
        "criterion": selection["criterion"],
        "n_train": selection.get("n_train"),
        "n_heldout": selection.get("n_heldout"),
        "candidates": [
            {
                k: row.get(k)
                for k in (
                    "n_components",
                    "heldout_loglik",
                    "bic",
                    "n_iter",
                    "n_passes",
                    "converged",
                )
            }
            for row in best
        ],
    }
